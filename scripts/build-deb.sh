#!/usr/bin/env bash
# Build the Debian package nbdkit-plugin-vddkpy from this checkout:
#   scripts/build-deb.sh            -> build/nbdkit-plugin-vddkpy_VERSION_amd64.deb
# It installs the vddkpy package for every Python 3 of the system
# (/usr/lib/python3/dist-packages), the plugin scripts nbdkit runs as
# "vddk" and "vddkpy", the vddkpy command (and vddkpy-thumbprint, the old
# spelling of vddkpy thumbprint) and the
# manual page nbdkit-vddk-plugin(1) rendered from doc/nbdkit-vddk-plugin.md.
# Only Debian's own tools (dpkg-deb, pandoc) are used; they are installed
# from the Debian archive if missing.  Architecture amd64: VDDK exists only
# for x86-64, and nbdkit's plugin directory is a multiarch path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

scripts/apt-install-missing.sh dpkg-dev pandoc python3 python3-cffi gzip

package=nbdkit-plugin-vddkpy
plugindir=/usr/lib/x86_64-linux-gnu/nbdkit/plugins     # Debian's, amd64
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' vddkpy/__init__.py)
[ -n "$version" ] || { echo "build-deb.sh: no __version__ in vddkpy/__init__.py" >&2; exit 1; }
# A reproducible date: the last commit's, when there is one.
date=$(git log -1 --format=%cD 2>/dev/null || date -R)
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH=$epoch

mkdir -p build
root=$(mktemp -d "$here/build/deb.XXXXXX")
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
install -d -m 755 "$root/DEBIAN" "$root/usr/bin" "$root$plugindir" \
    "$root/usr/share/man/man1" "$root/usr/share/doc/$package"

# The Python package, with its cffi module generated afresh from abi.py.
find vddkpy -name '*.py' ! -name '_vddk_cffi.py' ! -path '*/__pycache__/*' | while read -r f; do
    install -D -m 644 "$f" "$root/usr/lib/python3/dist-packages/$f"
done
python3 -m vddkpy.vddk.ffibuild "$root/usr/lib/python3/dist-packages/vddkpy/vddk"

# The plugin scripts, from the same template the installer uses.
for name in vddk vddkpy; do
    python3 -c 'import sys; from vddkpy.install.launchers import package_script
sys.stdout.write(package_script(sys.argv[1]))' "$name" \
        > "$root$plugindir/nbdkit-$name-plugin"
    chmod 755 "$root$plugindir/nbdkit-$name-plugin"
done

# The commands, from the same module.
for command in vddkpy:vddkpy.__main__ vddkpy-thumbprint:vddkpy.thumbprint; do
    python3 -c 'import sys; from vddkpy.install.launchers import package_command
sys.stdout.write(package_command(*sys.argv[1:]))' "${command%%:*}" "${command#*:}" \
        > "$root/usr/bin/${command%%:*}"
    chmod 755 "$root/usr/bin/${command%%:*}"
done

# The manual page, and the names it also answers to.
# pandoc 2.17 (Debian 12) sets code in fonts C, CB and V, which groff 1.23
# (Debian 13) has not for terminals and warns about: examples in R, inline
# code in B.
pandoc --standalone --to man -M footer="vddkpy $version" \
    -M date="$(date -u -d "@$epoch" +%Y-%m-%d)" doc/nbdkit-vddk-plugin.md \
    | sed -e 's/\\f\[\(CB\|V\)\]/\\f[B]/g' -e 's/\\f\[C\]/\\f[R]/g' \
    > "$root/usr/share/man/man1/nbdkit-vddk-plugin.1"
gzip -9n "$root/usr/share/man/man1/nbdkit-vddk-plugin.1"
for alias in nbdkit-vddkpy-plugin vddkpy vddkpy-thumbprint; do
    ln -s nbdkit-vddk-plugin.1.gz "$root/usr/share/man/man1/$alias.1.gz"
done

# Documentation Debian requires: copyright, changelog (a native package).
{
    sed -n '1,/^@LICENSE@$/p' packaging/copyright | sed '$d'
    sed -e 's/^$/./' -e 's/^/ /' LICENSE
} > "$root/usr/share/doc/$package/copyright"
printf '%s (%s) unstable; urgency=medium\n\n  * Built from the vddkpy repository (see its README.md).\n\n -- %s  %s\n' \
    "$package" "$version" \
    "$(sed -n 's/^Maintainer: //p' packaging/control.in)" "$date" \
    | gzip -9n > "$root/usr/share/doc/$package/changelog.gz"

# Control files.  (The marks of vddkpy's scripts, from where they are made.)
marks=$(python3 -c 'from vddkpy.install.launchers import MARKER, PACKAGE_MARKER
from vddkpy.install.installer import RECORD_NAME
for key, value in (("MARKER", MARKER), ("PACKAGE_MARKER", PACKAGE_MARKER),
                   ("RECORD_NAME", RECORD_NAME)):
    print("s|@%s@|%s|" % (key, value))')
for script in preinst postinst prerm; do
    sed -e "s|@PLUGINDIR@|$plugindir|" -e "$marks" "packaging/$script" > "$root/DEBIAN/$script"
    chmod 755 "$root/DEBIAN/$script"
done
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" \
    packaging/control.in > "$root/DEBIAN/control"
(cd "$root" && find usr -type f -printf '%P\n' | sort | while read -r f; do
     md5sum "usr/$f"; done) > "$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
find "$root" -exec touch -h -d "@$epoch" {} +

deb="build/${package}_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
