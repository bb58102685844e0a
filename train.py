"""`python train.py` = `sbert train`: with no arguments, the demo (README; docs/index.md)."""

import sys

from sbert.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
