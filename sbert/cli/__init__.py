"""The `sbert` command line: train, evaluate and use Sentence-BERT models.

Each command is one small module of this package: its docstring is its help, its options are
one typed dataclass `Options` (sbert/options.py turns the fields into flags and config-file
keys), and `run(options)` does the work. Only torch-free modules are imported to build the
parser: a command imports what it needs when it runs, so that an ONNX export is served without
torch.

This is the only place that turns exceptions into exit codes: a known problem prints one line
on stderr and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from sbert.errors import SbertError
from sbert.fileio import check_output_file
from sbert.options import add_flags, from_args

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process ended by SIGPIPE
# Command -> its module in this package.
COMMANDS = {
    "encode": "encode",
    "similarity": "similarity",
    "export": "export",
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "embed": "embed",
    "index": "index",
    "search": "search",
    "evaluate-retrieval": "retrieval",
    "serve": "serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbert", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sbert {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"sbert.cli.{module_name}")
        summary, _, details = module.__doc__.strip().partition("\n\n")
        p = sub.add_parser(name, help=summary, description=details or summary)
        add_flags(p, module.Options)
        p.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    args = build_parser().parse_args(argv)
    module = args.module
    try:
        parse = getattr(module, "parse", None)  # train reads [[stages]] beside its flags
        options = parse(args) if parse else from_args(module.Options, args)
        if args.config and getattr(options, "output", None):  # never written over the config
            check_output_file(options.output, [args.config])
        module.run(options)
        sys.stdout.flush()  # here, not at exit: a reader that left is then caught below
    except (SbertError, OSError) as e:  # OSError: a full disk, a missing output folder
        if isinstance(e, BrokenPipeError) and e.filename is None:
            # The reader of our stdout (head, jq) left: no error of ours. What is still
            # buffered goes nowhere rather than failing again at exit. (A named output's
            # broken pipe, a FIFO's, is said below as any failed write is.)
            with contextlib.suppress(OSError, ValueError):  # a stdout without a descriptor
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        print(f"sbert {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModuleNotFoundError as e:  # e.g. a serving machine without one of its packages
        package = (e.name or "?").split(".")[0]
        print(
            f"sbert {args.command}: error: needs the Python package {package!r}, which is not "
            f"installed (pip install -r requirements.txt; to run an export without torch: "
            f"requirements-serve.txt)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"sbert {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def version() -> str:
    """The installed package's version (pip install -e . installs a source tree too)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("sbert")
    except PackageNotFoundError:
        return "unknown (not installed)"


def one_line(error: Exception) -> str:
    """The message on one line: some causes we quote (torch's) span several."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())
