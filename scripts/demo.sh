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

echo
echo "== warm migration on the bed: a running VM, simulated vCenter + stand-in"
# The bed's command (tests/bed/vcenter.py) prints the parameters to give
# vddkpy and keeps them in bed.env; it stops when this script ends.
bed="$demo/bed"
copy="$demo/migrated"
mkdir -p "$copy"
PYTHONPATH="$here/tests" /usr/bin/python3 -m bed.vcenter start "$bed" \
    --size 67108864 > "$demo/bed.out" 2>&1 &
bed_pid=$!
trap 'kill $bed_pid 2>/dev/null; wait $bed_pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    [ -s "$bed/bed.env" ] && break
    kill -0 $bed_pid 2>/dev/null || { cat "$demo/bed.out"; exit 1; }
    sleep 0.1
done
cat "$demo/bed.out"
. "$bed/bed.env"
export FAKEVDDK_CONFIG
eval "set -- $BED_PARAMS"
sync() { (cd "$here" && /usr/bin/python3 -m vddkpy.sync "$@" --to "$copy" --progress=none); }
guest() { PYTHONPATH="$here/tests" /usr/bin/python3 -m bed.vcenter write "$bed" "$@"; }
echo "== full sync while the VM runs"
sync "$@"
echo "== the guest writes; two delta syncs"
guest 4096 "first change"
guest 50000000 "second change, far away"
sync "$@"
guest 123457 "third change, unaligned"
sync "$@"
echo "== the VM is shut down; the final sync"
guest 67108000 "last words before shutdown"
PYTHONPATH="$here/tests" /usr/bin/python3 -m bed.vcenter stop-vm "$bed"
sync "$@" --final
cmp "$copy/vm.raw" "$BED_DATA"
echo "== $copy/vm.raw is the VM's disk, byte for byte"
