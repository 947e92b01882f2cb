#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 11, 12 or 13 machine (scripts/ci-matrix.sh
# tests each): system packages, Python packages for the interpreter nbdkit
# embeds, the VDDK stand-in build, the vCenter simulator (tests/bed/vcsim), and
# vddkpy/vddk/_vddk_cffi.py (the cffi module generated from vddkpy/vddk/abi.py, which
# the tests and demo use from here).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

apt_packages=(nbdkit nbdkit-plugin-python libnbd-bin python3-libnbd python3-cffi
              python3-pytest python3-hypothesis qemu-utils gcc make zlib1g-dev
              openssl python3-pexpect fdisk dosfstools mtools locales
              pandoc lintian dpkg-dev groff-base python3-venv
              python3-setuptools python3-wheel   # test_pip_install_into_venv builds
                                                 # with them (3.13's venv has pip only)
              file    # Debian 13's nbdinfo runs `file` to describe the content
              git     # tests/install/test_packaging.py asks git which files are the source
              golang-go golang-github-vmware-govmomi-dev  # tests/bed/vcsim (vCenter simulator)
              python3-pyvmomi  # vSphere sessions (changed-since=) and the CBT tests
              python3-tqdm     # vddkpy sync: progress bar on a terminal
              fio)      # scripts/bench.py drives it, and hyperfine (below)
# hyperfine came in Debian 12: on Debian 11 the tests that need it skip.
if [ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" != bullseye ]; then
    apt_packages+=(hyperfine)
fi
"$here/scripts/apt-install-missing.sh" "${apt_packages[@]}"

make -s -C "$here/tests/bed/standin"
(cd "$here" && /usr/bin/python3 -m vddkpy.vddk.ffibuild)
# Byte-compiled now, so that no server started from this checkout compiles
# the package (not even one run with PYTHONDONTWRITEBYTECODE or by a user
# who cannot write here).
/usr/bin/python3 -m compileall -q "$here/vddkpy"
"$here/tests/bed/vcsim/build.sh"
