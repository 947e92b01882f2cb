#!/usr/bin/env bash
# Set up everything (idempotent), then run the whole test suite with the
# Python that nbdkit embeds, so the tests use the same cffi and libnbd.
# The suite runs in a private mount namespace (tests/bed/private-system.sh):
# what its tests install into nbdkit's plugin directory or Python's
# package directories never reaches this machine.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
cd "$here"
exec tests/bed/private-system.sh /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" tests
