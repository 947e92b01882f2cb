#!/usr/bin/env bash
# Install vddkpy as nbdkit's "vddk" plugin (or --name NAME); --uninstall
# removes what it wrote (listed in vddkpy-install.record in nbdkit's plugin
# directory).  Uses the Python that nbdkit embeds.  The Debian package
# (scripts/build-deb.sh) is the other way; it replaces what this installed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
exec /usr/bin/python3 -m vddkpy.install "$@"
