#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: system packages, Python
# packages for the interpreter nbdkit embeds, and the VDDK stand-in build.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

apt_packages=(nbdkit nbdkit-plugin-python libnbd-bin python3-libnbd python3-cffi
              python3-pytest python3-hypothesis qemu-utils gcc make zlib1g-dev
              openssl python3-pexpect fdisk dosfstools mtools locales
              pandoc lintian dpkg-dev groff-base python3-venv)
"$here/scripts/apt-install-missing.sh" "${apt_packages[@]}"

make -s -C "$here/tests/standin"
