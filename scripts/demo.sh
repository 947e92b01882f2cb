#!/usr/bin/env bash
# The main job on the built-in default: the plugin asks VDDK (here the
# stand-in) to create a real VMDK (monolithicSparse) and fills it with
# nbdcopy; qemu-img, which has its own VMDK driver, checks the file; the
# data comes back out through VDDK; nbdinfo shows what a client sees.
# Idempotent: everything lives in ./demo.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"

demo="$here/demo"
libdir="$demo/vmware-vix-disklib-distrib"
rm -rf "$demo"
mkdir -p "$libdir/lib64"
cp "$here/tests/bed/standin/build/libvixDiskLib.so" "$libdir/lib64/libvixDiskLib.so.8"

disk="$demo/disk.vmdk"
# 32 MiB of data followed by 32 MiB of hole.
head -c 32M /dev/urandom > "$demo/input.raw"
truncate -s 64M "$demo/input.raw"

plugin="$here/plugin/plugin.py"
echo "== create disk.vmdk (64M, monolithic-sparse) and copy input.raw in"
nbdkit -U - python "$plugin" libdir="$libdir" file="$disk" \
    create=true create-type=monolithic-sparse create-size=64M \
    --run "nbdcopy '$demo/input.raw' \"\$uri\""
echo "== qemu-img's view of the VMDK"
qemu-img info "$disk"
qemu-img check "$disk"
qemu-img compare -f raw -F vmdk "$demo/input.raw" "$disk"
echo "== nbdinfo"
nbdkit -r -U - python "$plugin" libdir="$libdir" file="$disk" \
    --run 'nbdinfo "$uri"'
echo "== copy back out through VDDK"
nbdkit -r -U - python "$plugin" libdir="$libdir" file="$disk" \
    --run "nbdcopy \"\$uri\" '$demo/output.raw'"
cmp "$demo/input.raw" "$demo/output.raw"
echo "== the data read back through VDDK matches what was written"
echo "== allocation map (from the VMDK's grain tables)"
nbdkit -r -U - python "$plugin" libdir="$libdir" file="$disk" \
    --run 'nbdinfo --map "$uri"'
