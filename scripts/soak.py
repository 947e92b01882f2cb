#!/usr/bin/python3
"""Soak the plugin for longer than CI does:

    scripts/soak.py --seconds 600 --clients 8

Builds the VDDK stand-in, serves a disk through it with latency injected,
and runs the soak of tests/bed/soak.py; exits 1 on any mismatch, lost write,
client error or threading-rule abort.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from bed.soak import soak  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    subprocess.run(["make", "-s", "-C", str(TESTS / "bed" / "standin")], check=True)
    with tempfile.TemporaryDirectory(prefix="vddkpy-soak-") as workdir:
        result = soak(Path(workdir), args.seconds, args.clients)
    print(result.summary())
    for error in result.client_errors:
        print(error)
    failed = (result.mismatches or result.lost_writes or result.client_errors
              or "threading violation" in result.stderr
              or "Traceback" in result.stderr)
    if failed:
        print(result.stderr[-4000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
