#!/usr/bin/env bash
# Set up everything (idempotent), then run the whole test suite with the
# Python that nbdkit embeds, so the tests use the same cffi and libnbd.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
cd "$here"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" tests
