#!/usr/bin/python3
"""Entry point of the benchmark: the package scripts/benchmark/ (see its
__init__.py; `scripts/bench.py --help` lists the cases and options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
