#!/usr/bin/env bash
# Install vddkpy as nbdkit's "vddk" plugin (or --name NAME); --uninstall
# removes it.  Uses the Python that nbdkit embeds.  The Debian package
# (scripts/build-deb.sh) is the recorded, removable way to install.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
exec /usr/bin/python3 -m vddkpy.install "$@"
