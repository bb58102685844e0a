"""The `sbert` command line: encode, similarity, export, train, evaluate.

This is the only place that turns exceptions into exit codes: a known problem prints one line
on stderr and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import SbertError

EXIT_BAD_INPUT = 2


def cmd_encode(args: argparse.Namespace) -> None:
    import numpy as np

    from .data import read_sentences
    from .fileio import atomic_write_bytes
    from .model import SentenceBert
    from .train import pick_device

    sentences = read_sentences(args.input)
    output = Path(args.output)
    if not output.parent.is_dir():  # before encoding; else the error names a temporary file
        raise SbertError(f"{output}: output folder {output.parent} not found")
    model = SentenceBert.from_pretrained(args.model)
    vectors = model.encode(
        sentences,
        batch_size=args.batch_size,
        normalize=args.normalize,
        device=pick_device(args.device),
        show_progress_bar=len(sentences) > 1000,
    )
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write_bytes(output, buffer.getvalue())
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {args.output}")


def cmd_similarity(args: argparse.Namespace) -> None:
    from .model import SentenceBert
    from .train import pick_device

    model = SentenceBert.from_pretrained(args.model)
    u, v = model.encode([args.first, args.second], normalize=True, device=pick_device(args.device))
    print(f"{float(u @ v):.4f}")


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export

    record = export(args.model, args.out, args.quantize)
    print(f"wrote {args.out}: {record['graph']} ({record['dim']}-dim sentence vectors)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="embed a file of sentences (one a line) into a .npy array")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or packaged name")
    p.add_argument("--input", required=True, help="UTF-8 text file, one sentence a line")
    p.add_argument("--output", required=True, help="where to write the float32 [N, H] .npy")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)"
    )
    p.set_defaults(run=cmd_encode)

    p = sub.add_parser("similarity", help="print the cosine similarity of two sentences")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or packaged name")
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--device", default=None)
    p.set_defaults(run=cmd_similarity)

    p = sub.add_parser("export", help="write an ONNX folder that runs without torch")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or packaged name")
    p.add_argument("--out", required=True, help="the folder to write (replaced if an export)")
    p.add_argument("--quantize", default=None, help="int8: also an int8 graph, used by default")
    p.set_defaults(run=cmd_export)

    from .train import add_train_parsers

    add_train_parsers(sub)
    return parser


def one_line(error: Exception) -> str:
    """The message on one line: some causes we quote (torch's) span several."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except SbertError as e:
        print(f"sbert {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # a full disk, a missing output folder: say so, no traceback
        print(f"sbert {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"sbert {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
