"""write an ONNX folder that runs without torch"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sbert.folders import DEFAULT_MODEL
from sbert.options import option


@dataclass
class Options:
    out: str | None = option("the folder to write (replaced if an earlier export)", required=True)
    model: str = option("model folder or packaged name", DEFAULT_MODEL)
    quantize: str | None = option(
        "int8: also a static int8 graph (calibrated: see --calibration), used by default"
    )
    format: Literal["onnx", "openvino"] = option(
        "onnx (ONNX Runtime) or openvino (OpenVINO: bf16 where the CPU has it, static int8)",
        "onnx",
    )
    calibration: str | None = option(
        "sentences, one a line, whose first 300 calibrate --quantize int8 (default: STS-B train's)"
    )


def run(o: Options) -> None:
    from sbert.inference.export import export

    record = export(o.model, o.out, o.quantize, o.format, o.calibration)
    print(f"wrote {o.out}: {record['graph']} ({record['dim']}-dim sentence vectors)")
