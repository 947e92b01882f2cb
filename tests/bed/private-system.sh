#!/usr/bin/env bash
# Run a command (the test suite) where installing plugins cannot change this
# machine: in a private mount namespace, nbdkit's plugin directory,
# /usr/local and /usr/lib/python3/dist-packages are overlays whose writes
# land in a tmpfs, and a vddk plugin the machine already has is hidden.
# Two runs at once each have their own.  Needs root (CI runs as root).
#
# Nothing is left behind however the command ends (exit, ctrl-C, SIGTERM,
# SIGKILL): the script execs itself into the namespace and then into the
# command, so there is nothing to clean up outside it, and the overlays'
# writes are kept only on a tmpfs that no path reaches once the overlays
# are mounted; the mounts and the tmpfs go with the namespace's last
# process.  Works where / is not a mount point (a plain chroot): the root
# is bind-mounted onto one of its directories and entered, as
# scripts/chroot.sh does from outside.
set -euo pipefail

nbdkit=${NBDKIT:-nbdkit}
die() { echo "private-system.sh: $*" >&2; exit 1; }

# Where the root is bound when / is not a mount point (only in the
# namespace, and only until the chroot).
scratch=/tmp

case ${VDDKPY_PRIVATE_SYSTEM_STAGE:-} in
"")
    # (unshare's own --propagation private needs / to be a mount point.)
    VDDKPY_PRIVATE_SYSTEM_STAGE=namespace \
        exec unshare --mount --propagation unchanged -- "$0" "$@" ;;
namespace)
    if ! mountpoint -q /; then
        # Lookups never cross a mount made on / itself: bind the root onto
        # a directory of its own and enter that.  Not where that mount
        # would propagate to another namespace: beneath a shared mount, or
        # binding a shared one (a chroot on a shared mount; the bind has
        # reached the other namespace then: take it back).
        refuse="/ is not a mount point and its file system shares mounts"
        refuse+=" with another namespace; run in a chroot whose root is a"
        refuse+=" mount point (scripts/chroot.sh makes one)"
        if mountpoint -q "$scratch"; then
            case $(findmnt -n -o PROPAGATION "$scratch") in
                *shared*) die "$refuse" ;;
            esac
        fi
        mount --rbind / "$scratch"
        case $(findmnt -n -o PROPAGATION "$scratch" | tail -1) in
            *shared*) umount -l "$scratch"; die "$refuse" ;;
        esac
        VDDKPY_PRIVATE_SYSTEM_STAGE=root \
            exec chroot "$scratch" env --chdir="$PWD" "$0" "$@"
    fi ;;
root) ;;
*) die "unknown VDDKPY_PRIVATE_SYSTEM_STAGE" ;;
esac
unset VDDKPY_PRIVATE_SYSTEM_STAGE
mount --make-rprivate /

plugindir=$("$nbdkit" --dump-config | sed -n 's/^plugindir=//p')
dirs=()
for dir in "$plugindir" /usr/local /usr/lib/python3/dist-packages; do
    [ -d "$dir" ] || continue
    dirs+=("$dir")
done
# Where the tmpfs holding the overlays' writes is mounted while they are
# made: a directory that hides none of them (nbdkit may be installed
# anywhere, under /tmp too), and none of the few commands until the
# umount reads (a bare chroot may have no /run, /mnt or /srv).
layers=
for candidate in /tmp /run /mnt /var/tmp /media /srv /usr/share; do
    [ -d "$candidate" ] && [ ! -L "$candidate" ] || continue
    for dir in "${dirs[@]}"; do
        case $dir/ in "$candidate"/*) continue 2 ;; esac
    done
    layers=$candidate
    break
done
[ -n "$layers" ] || die "no directory to mount a tmpfs on outside ${dirs[*]}"
mount -t tmpfs -o mode=0700 vddkpy-private "$layers"
for dir in "${dirs[@]}"; do
    layer="$layers/$(echo "$dir" | tr / _)"
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay \
        -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
# The overlays keep the tmpfs; no path needs to reach it any more.
umount "$layers"
# Only in this namespace: the overlay records the removal, the file stays.
# (With a manual install, its record of what it wrote goes too.)
rm -f "$plugindir"/nbdkit-vddk-plugin "$plugindir"/nbdkit-vddk-plugin.so \
    "$plugindir"/vddkpy-install.record
export VDDKPY_PRIVATE_SYSTEM=1
exec "$@"
