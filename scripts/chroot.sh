#!/usr/bin/env bash
# Run a command in a fresh, minimal Debian system (a chroot), as root:
#
#   scripts/chroot.sh [--refresh] SUITE [--clone REPO DEST] [--copy SRC DEST]... -- COMMAND...
#
# SUITE is a Debian suite (bullseye, bookworm, trixie).  --clone puts a `git clone` of
# REPO (what is committed there, as a fresh clone would have it) at DEST in
# the chroot; --copy copies a host file or directory to DEST.  The exit status
# is COMMAND's.
#
# Every run starts from a pristine `debootstrap --variant=minbase` system that
# has never seen the project: the debootstrap result is cached as a tarball,
# $VDDKPY_CHROOT_CACHE/debootstrap-SUITE.tar (default /var/cache/vddkpy,
# outside any checkout so fresh clones in CI reuse it), rebuilt when older
# than 7 days or with --refresh, and extracted anew each run.  Downloaded
# .deb files are kept there too (apt-SUITE/) and offered to the next run's
# apt, so a re-run does not download again but still installs everything.
#
# The mounts (/proc, /sys, /dev, /dev/pts, a fresh /dev/shm) live in a private
# mount namespace and are unmounted on every exit (error, ctrl-C); processes
# left inside the chroot are killed first; then the system is deleted.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
mirror=http://deb.debian.org/debian
cache=${VDDKPY_CHROOT_CACHE:-/var/cache/vddkpy}
max_age_days=7

usage() {
    echo "usage: $0 [--refresh] SUITE [--clone REPO DEST] [--copy SRC DEST]... -- COMMAND..." >&2
    exit 2
}

die() { echo "chroot.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mount)"

# Mounts made from here on stay in a namespace of our own: they cannot leak
# to the host (nor propagate back into its /dev), and vanish with us.
if [ -z "${VDDKPY_CHROOT_NS:-}" ]; then
    VDDKPY_CHROOT_NS=1 exec unshare --mount --propagation private -- "$0" "$@"
fi

refresh=false
if [ "${1:-}" = --refresh ]; then refresh=true; shift; fi
[ $# -ge 1 ] || usage
suite=$1; shift
case $suite in *[!a-z]*|"") die "bad suite name: $suite" ;; esac

clones=(); copies=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    case $1 in
        --clone) [ $# -ge 3 ] || usage; clones+=("$2" "$3"); shift 3 ;;
        --copy)  [ $# -ge 3 ] || usage; copies+=("$2" "$3"); shift 3 ;;
        *) usage ;;
    esac
done
[ "${1:-}" = -- ] && [ $# -ge 2 ] || usage
shift

# The tarball of a fresh minbase system, made at most once at a time.
ensure_base_tarball() {
    local tarball=$cache/debootstrap-$suite.tar
    mkdir -p "$cache"
    exec 9>"$cache/debootstrap-$suite.lock"
    flock 9
    if $refresh || [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +$max_age_days)" ]; then
        "$here/scripts/apt-install-missing.sh" debootstrap >&2
        staging=$(mktemp -d "$cache/debootstrap-$suite.XXXXXX")
        trap 'rm -rf --one-file-system "$staging"' EXIT     # this subshell's
        echo "chroot.sh: debootstrap $suite (cached in $tarball)" >&2
        if ! debootstrap --variant=minbase "$suite" "$staging/root" "$mirror" \
                > "$staging/log" 2>&1; then
            tail -20 "$staging/log" >&2
            die "debootstrap $suite failed"
        fi
        rm -f "$staging/root"/var/cache/apt/archives/*.deb   # as on an installed system
        tar -C "$staging/root" -cf "$tarball.new" .
        mv "$tarball.new" "$tarball"
    fi
    exec 9>&-
    echo "$tarball"
}

root=""
mounted=()

mount_in_root() {      # mount_in_root TARGET MOUNT-ARGS...
    local target=$root$1; shift
    mount "$@" "$target"
    mounted+=("$target")
}

# Processes started inside (a daemonised nbdkit, say) would keep files busy.
kill_leftovers() {
    local signal pid
    for signal in TERM KILL; do
        for pid in $(ls /proc | grep -E '^[0-9]+$'); do
            [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ] && kill -"$signal" "$pid" 2>/dev/null
        done
        [ $signal = TERM ] && sleep 1
    done
    return 0
}

keep_downloaded_debs() {
    local archives=$root/var/cache/apt/archives
    ls "$archives"/*.deb >/dev/null 2>&1 || return 0
    mkdir -p "$cache/apt-$suite"
    flock "$cache/debootstrap-$suite.lock" cp -n "$archives"/*.deb "$cache/apt-$suite/" 2>/dev/null || true
}

cleanup() {
    local status=$? i
    trap - EXIT INT TERM HUP
    [ -n "$root" ] || exit $status
    kill_leftovers
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
    done
    if grep -qF " $root" /proc/self/mountinfo; then
        echo "chroot.sh: mounts left under $root; not deleting it" >&2
        exit 1
    fi
    keep_downloaded_debs
    rm -rf --one-file-system "$root"
    exit $status
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

tarball=$(ensure_base_tarball)
root=$(mktemp -d "/var/tmp/vddkpy-chroot-$suite.XXXXXX")
tar -C "$root" -xf "$tarball"

# The root a mount point of its own, as on a real system: `unshare
# --propagation` (the test suite's private namespace) fails otherwise.
mount_in_root / --bind "$root"
mount_in_root /proc -t proc proc
mount_in_root /sys --bind /sys
mount_in_root /dev --bind /dev
mount_in_root /dev/pts --bind /dev/pts
mount_in_root /dev/shm -t tmpfs -o mode=1777 tmpfs

# What any installed Debian machine has: name resolution, localhost, and
# the suite's point-release updates and security fixes next to the
# release (debootstrap writes the release alone; the archive serves all
# three for bullseye as oldoldstable, bookworm and trixie alike).
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s-security %s-security main\n' \
    "$mirror" "$suite" "$mirror" "$suite" "$mirror" "$suite" > "$root/etc/apt/sources.list"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
# No daemons started by package installs inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
if [ -d "$cache/apt-$suite" ]; then
    cp -l "$cache/apt-$suite"/*.deb "$root/var/cache/apt/archives/" 2>/dev/null || true
fi

for ((i = 0; i < ${#clones[@]}; i += 2)); do
    git clone --quiet --no-hardlinks "${clones[i]}" "$root${clones[i+1]}"
done
for ((i = 0; i < ${#copies[@]}; i += 2)); do
    mkdir -p "$(dirname "$root${copies[i+1]}")"
    cp -a -H "${copies[i]}" "$root${copies[i+1]}"
done

# In the background so that a signal (ctrl-C, timeout) interrupts `wait`
# and cleans up at once; SIGINT and SIGQUIT at their defaults, as for a
# command typed at a terminal (bash ignores both in a background command).
chroot "$root" /usr/bin/env -i --default-signal=INT,QUIT HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
    ${no_proxy:+no_proxy=$no_proxy} \
    /bin/sh -c 'cd "$HOME" && exec "$@"' sh "$@" <&0 &
set +e
wait $!
exit $?
