#!/usr/bin/env bash
# The main job on the built-in default: the VDDK stand-in serves a demo
# disk through the plugin; data goes in and out with nbdcopy; nbdinfo
# shows what the client sees.  Idempotent: everything lives in ./demo.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"

demo="$here/demo"
libdir="$demo/vmware-vix-disklib-distrib"
rm -rf "$demo"
mkdir -p "$libdir/lib64"
cp "$here/tests/standin/build/libvixDiskLib.so" "$libdir/lib64/libvixDiskLib.so.8"

disk="$demo/disk.raw"
truncate -s 64M "$disk"
head -c 32M /dev/urandom > "$demo/input.raw"

plugin="$here/plugin/plugin.py"
echo "== nbdinfo"
nbdkit -U - python "$plugin" libdir="$libdir" file="$disk" \
    --run 'nbdinfo "$uri"'
echo "== copy in (nbdcopy input.raw -> disk) and back out"
nbdkit -U - python "$plugin" libdir="$libdir" file="$disk" \
    --run "nbdcopy '$demo/input.raw' \"\$uri\" && nbdcopy \"\$uri\" '$demo/output.raw'"
cmp -n $((32 * 1024 * 1024)) "$demo/input.raw" "$demo/output.raw"
echo "== the data read back through VDDK matches what was written"
echo "== allocation map (read-only)"
nbdkit -r -U - python "$plugin" libdir="$libdir" file="$disk" \
    --run 'nbdinfo --map "$uri"'
