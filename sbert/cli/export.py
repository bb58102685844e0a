"""write an ONNX folder that runs without torch"""

from __future__ import annotations

from dataclasses import dataclass

from sbert.folders import DEFAULT_MODEL
from sbert.options import option


@dataclass
class Options:
    out: str | None = option("the folder to write (replaced if an earlier export)", required=True)
    model: str = option("model folder or packaged name", DEFAULT_MODEL)
    quantize: str | None = option("int8: also an int8 graph, used by default")


def run(o: Options) -> None:
    from sbert.inference.export import export

    record = export(o.model, o.out, o.quantize)
    print(f"wrote {o.out}: {record['graph']} ({record['dim']}-dim sentence vectors)")
