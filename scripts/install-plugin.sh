#!/usr/bin/env bash
# The old spelling of `python3 -m vddkpy install` (and, with --uninstall,
# of `python3 -m vddkpy uninstall`) from this checkout: runs it, then names
# it.  Installs vddkpy as nbdkit's "vddk" plugin (or --name NAME) for the
# Python that nbdkit embeds; the Debian package (scripts/build-deb.sh) is
# the other way, and replaces what this installed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
command=install
old=scripts/install-plugin.sh
for arg in "$@"; do
    [ "$arg" != --uninstall ] || { command=uninstall; old="$old --uninstall"; }
done
args=()
for arg in "$@"; do     # (--force meant nothing with --uninstall)
    case $command:$arg in
        *:--uninstall|uninstall:--force) ;;
        *) args+=("$arg") ;;
    esac
done
status=0
/usr/bin/python3 -m vddkpy "$command" ${args[@]+"${args[@]}"} || status=$?
echo "vddkpy: note: '$old' is now 'python3 -m vddkpy $command'" >&2
exit "$status"
