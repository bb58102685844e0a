"""embed a file of sentences (one a line) into a .npy array"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

from sbert.cli.common import DEVICE_HELP, MODEL_HELP, device_for, on_terminal
from sbert.folders import DEFAULT_MODEL
from sbert.options import option


@dataclass
class Options:
    input: str | None = option("UTF-8 text file, one sentence a line", required=True)
    output: str | None = option("where to write the float32 [N, H] .npy", required=True)
    model: str = option(MODEL_HELP, DEFAULT_MODEL)
    batch_size: int = option("sentences per batch", 32, minimum=1)
    normalize: bool = option("L2-normalise the vectors", False)
    device: str | None = option(DEVICE_HELP)


def run(o: Options) -> None:
    import numpy as np

    from sbert.data.readers import read_sentences
    from sbert.fileio import atomic_write_bytes, check_output_file
    from sbert.inference.encoder import check_finite
    from sbert.inference.load import load

    sentences = read_sentences(o.input)
    check_output_file(o.output, [o.input, o.model])  # before encoding, not after
    model = load(o.model)
    vectors = model.encode(
        sentences,
        batch_size=o.batch_size,
        normalize=o.normalize,
        device=device_for(model, o.device),
        show_progress_bar=on_terminal(),
    )
    check_finite(vectors, model, "line")  # a file of NaN vectors is worse than none
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write_bytes(Path(o.output), buffer.getvalue())
    # On stderr: the output may be /dev/stdout, the array streamed into a pipe.
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {o.output}",
          file=sys.stderr)  # fmt: skip
