#!/usr/bin/env bash
# Acceptance check of the Debian package, run as root INSIDE a fresh Debian
# 11, 12 or 13 system that has never seen this repository (e.g. a debootstrap
# chroot, see scripts/chroot.sh):
#
#   check-deb.sh nbdkit-plugin-vddkpy_VERSION_amd64.deb libvixDiskLib.so
#
# (the second file is the VDDK stand-in, tests/bed/standin/build/libvixDiskLib.so,
# standing in for VMware's library).  It installs the package with apt,
# which must pull in the dependencies, then checks `nbdkit vddk
# --dump-plugin`, `man -w`, a byte-for-byte copy of a disk with nbdcopy,
# `vddkpy check` of that disk (every step ok),
# that it refuses to replace a file of the user's in nbdkit's plugin
# directory, what happens next to a C vddk plugin, and that remove and
# purge leave no file behind.  Every failure is printed; the exit status is 1 if any.
set -uo pipefail

if [ $# -ne 2 ] || [ "$(id -u)" -ne 0 ]; then
    echo "usage (as root, inside the system to check): $0 DEB STANDIN_SO" >&2
    exit 2
fi
deb=$(realpath "$1")
standin=$(realpath "$2")
package=$(dpkg-deb -f "$deb" Package)
work=$(mktemp -d /tmp/check-deb.XXXXXX)
failures=0
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

fail() { echo "check-deb: FAILED: $*" >&2; failures=$((failures + 1)); }
ok() { echo "check-deb: ok: $*"; }
apt_get() { apt-get -y -q -o Dpkg::Use-Pty=0 "$@" > "$work/apt.log" 2>&1 \
                || { cat "$work/apt.log" >&2; return 1; }; }

# Everything on the system, except what changes by itself.
file_list() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run \
        -o -path /tmp -o -path /var/tmp -o -path /var/cache -o -path /var/log \
        -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /root \) -prune \
        -o -print | sort
}

plugindir() { nbdkit --dump-config | sed -n 's/^plugindir=//p'; }

check_serving() {       # LABEL
    local libdir=$work/vmware-vix-disklib-distrib
    mkdir -p "$libdir/lib64"
    cp "$standin" "$libdir/lib64/libvixDiskLib.so.8"
    head -c $((8 * 1024 * 1024)) /dev/urandom > "$work/disk.raw"
    rm -f "$work/out.raw"
    if (cd "$work" && nbdkit -U - vddk libdir="$libdir" file="$work/disk.raw" \
            --run 'nbdcopy "$uri" out.raw') 2> "$work/serve.err" \
        && cmp -s "$work/disk.raw" "$work/out.raw"; then
        ok "$1: nbdkit vddk copied an 8 MiB disk byte for byte"
    else
        fail "$1: copy through nbdkit vddk: $(tail -3 "$work/serve.err")"
    fi
    if vddkpy check libdir="$libdir" file="$work/disk.raw" > "$work/preflight.out" 2>&1 \
        && grep -q '^ok   install: ' "$work/preflight.out" \
        && grep -q '^ok   disk: ' "$work/preflight.out"; then
        ok "$1: vddkpy check: every step ok"
    else
        fail "$1: vddkpy check: $(cat "$work/preflight.out")"
    fi
}

check_installed() {     # LABEL
    local dump
    if dump=$(nbdkit vddk --dump-plugin 2>&1) \
            && grep -q '^vddk_default_libdir=' <<< "$dump"; then
        ok "$1: nbdkit vddk --dump-plugin"
    else
        fail "$1: nbdkit vddk --dump-plugin: $dump"
    fi
    # The package's cffi module, generated on the build machine, loads with
    # this system's cffi (no parsing of the declarations at every start).
    if nbdkit -v vddk --dump-plugin 2>&1 | grep 'vddkpy: vddkpy/_vddk_cffi'; then
        fail "$1: the package's generated cffi module is not used"
    else
        ok "$1: the package's generated cffi module is used"
    fi
    if man -w nbdkit-vddk-plugin > "$work/man.out" 2>&1; then
        ok "$1: man -w finds $(cat "$work/man.out")"
    else
        fail "$1: man -w nbdkit-vddk-plugin: $(cat "$work/man.out")"
    fi
    if vddkpy status > "$work/check.out" 2>&1; then
        ok "$1: $(cat "$work/check.out")"
    else
        fail "$1: vddkpy status: $(cat "$work/check.out")"
    fi
    check_serving "$1"
}

owned_leftovers() {     # FILE-LIST-OF-THE-PACKAGE
    local path
    while read -r path; do
        [ -e "$path" ] && [ ! -d "$path" ] && echo "$path"
    done < "$1"
    [ -e /usr/lib/python3/dist-packages/vddkpy ] \
        && echo /usr/lib/python3/dist-packages/vddkpy
    ls /var/lib/dpkg/info/"$package".* 2>/dev/null
}

echo "check-deb: $(. /etc/os-release && echo "$PRETTY_NAME"), $package $(dpkg-deb -f "$deb" Version)"
apt_get update || fail "apt-get update"
# Tools of the check itself, not of the package.
apt_get install --no-install-recommends man-db libnbd-bin || fail "installing man-db libnbd-bin"

# 1. apt install ./DEB pulls in the dependencies.
if apt_get install "$deb"; then ok "apt install $deb"; else fail "apt install $deb"; fi
for dep in nbdkit nbdkit-plugin-python python3 python3-cffi; do
    dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'ok installed' \
        || fail "dependency $dep was not installed"
done
check_installed "first install"
dpkg-query -L "$package" > "$work/package-files"
apt_get purge "$package" || fail "apt purge $package"
leftovers=$(owned_leftovers "$work/package-files")
[ -z "$leftovers" ] && ok "purge left none of the package's files" \
    || fail "left after purge: $leftovers"

# 2. A file no package owns where the package puts its script (a user's
#    own nbdkit-vddk-plugin): the install is refused in one line, the file
#    kept.
mine=$(plugindir)/nbdkit-vddk-plugin
printf '#!/bin/sh\necho mine\n' > "$mine"
if apt-get -y -q install "$deb" > "$work/refused.log" 2>&1; then
    fail "apt install replaced $mine, which no package owns"
elif grep -qF "nbdkit-plugin-vddkpy: $mine is not vddkpy's and no package owns it" "$work/refused.log" \
        && [ "$(cat "$mine")" = "$(printf '#!/bin/sh\necho mine')" ] \
        && ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q ' installed$'; then
    ok "apt install refuses to replace $mine (no package owns it) and keeps it"
else
    fail "refusing $mine: $(tail -5 "$work/refused.log")"
fi
rm -f "$mine"
file_list > "$work/files.before"

# 3. Next to a C vddk plugin: left in place, said so, still reachable; a
#    local diversion gives `nbdkit vddk` back to it.
c_plugin=$(plugindir)/nbdkit-vddk-plugin.so
cp "$(plugindir)/nbdkit-null-plugin.so" "$c_plugin"     # stands in for it
apt-get -y -q install "$deb" > "$work/install.log" 2>&1 || fail "reinstall"
if grep -q "nbdkit-vddk-plugin.so (a C vddk plugin) is left in place" "$work/install.log"; then
    ok "install says the C plugin is left in place and which one runs"
else
    fail "no notice about $c_plugin: $(tail -5 "$work/install.log")"
fi
check_installed "next to a C plugin"
script=$(plugindir)/nbdkit-vddk-plugin
dpkg-divert --local --rename --divert "$script.vddkpy" --add "$script" > /dev/null
# (Whole outputs first: a reader that stops early would break the pipe.)
c_dump=$(nbdkit vddk --dump-plugin 2>&1)
py_dump=$(nbdkit vddkpy --dump-plugin 2>&1)
if grep -q "^path=$c_plugin\$" <<< "$c_dump" \
        && grep -q '^vddk_default_libdir=' <<< "$py_dump"; then
    ok "after dpkg-divert, nbdkit vddk is the C plugin and nbdkit vddkpy is vddkpy"
else
    fail "dpkg-divert does not give nbdkit vddk to the C plugin"
fi
dpkg-divert --local --rename --remove "$script" > /dev/null
apt_get remove "$package" || fail "apt remove $package"
[ -e "$c_plugin" ] && ok "remove kept the C plugin" || fail "remove deleted $c_plugin"
rm -f "$c_plugin"
file_list > "$work/files.after-remove"
diff "$work/files.before" "$work/files.after-remove" > "$work/diff" \
    && ok "apt remove: file list as before the install" \
    || fail "apt remove changed the file list: $(cat "$work/diff")"
# apt knows a package from a file only while it is installed.
dpkg --purge "$package" > "$work/purge.log" 2>&1 \
    || fail "dpkg --purge $package: $(cat "$work/purge.log")"
file_list > "$work/files.after-purge"
diff "$work/files.before" "$work/files.after-purge" > "$work/diff" \
    && ok "apt purge: file list as before the install" \
    || fail "apt purge changed the file list: $(cat "$work/diff")"
[ -z "$(ls /var/lib/dpkg/info/"$package".* 2>/dev/null)" ] \
    || fail "dpkg still knows $package"

rm -rf "$work"
if [ "$failures" -ne 0 ]; then
    echo "check-deb: $failures check(s) FAILED" >&2
    exit 1
fi
echo "check-deb: all checks passed"
