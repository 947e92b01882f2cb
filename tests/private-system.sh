#!/usr/bin/env bash
# Run a command (the test suite) where installing plugins cannot change this
# machine: in a private mount namespace, nbdkit's plugin directory,
# /usr/local and /usr/lib/python3/dist-packages are overlays whose writes
# land in a temporary directory, and a vddk plugin the machine already has
# is hidden.  The mounts and the scratch directory go away with the command,
# and two runs at once each have their own.  Needs root (CI runs as root).
set -euo pipefail

nbdkit=${NBDKIT:-nbdkit}

if [ "${VDDKPY_PRIVATE_SYSTEM_INSIDE:-}" != 1 ]; then
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/vddkpy-private.XXXXXX")
    status=0
    VDDKPY_PRIVATE_SYSTEM_INSIDE=1 VDDKPY_PRIVATE_SYSTEM=$scratch \
        unshare --mount --propagation private -- "$0" "$@" || status=$?
    rm -rf "$scratch"
    exit "$status"
fi

plugindir=$("$nbdkit" --dump-config | sed -n 's/^plugindir=//p')
for dir in "$plugindir" /usr/local /usr/lib/python3/dist-packages; do
    [ -d "$dir" ] || continue
    layer="$VDDKPY_PRIVATE_SYSTEM/layers/$(echo "$dir" | tr / _)"
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay \
        -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
# Only in this namespace: the overlay records the removal, the file stays.
rm -f "$plugindir"/nbdkit-vddk-plugin "$plugindir"/nbdkit-vddk-plugin.so
exec "$@"
