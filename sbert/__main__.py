import sys

from sbert.cli import main

sys.exit(main())
