#!/usr/bin/env bash
# The platform matrix: runs the named stages (default: all, in order), each
# to the end even when an earlier one failed, prints how long each took and
# exits non-zero if any failed.
#
#   debian12   the README's test command on this machine (Debian 12)
#   debian13   the README's two commands (scripts/demo.sh, scripts/test.sh)
#              on a clone of this checkout's committed state, in a fresh
#              Debian 13 (trixie) chroot made by scripts/chroot.sh (as root)
#   debian11   the same in a fresh Debian 11 (bullseye) chroot: nbdkit
#              1.24 (no after_fork, cleanup or block_size callbacks),
#              Python 3.9, libnbd 1.6 (Ubuntu 22.04 has the same nbdkit)
#   debian12_fresh   the same in a fresh Debian 12 (bookworm) chroot
#   deb_bookworm, deb_trixie, deb_bullseye   the Debian package
#              (scripts/build-deb.sh) checked by scripts/check-deb.sh in
#              fresh chroots
#
# A new stage is a function stage_NAME plus its name in all_stages.  Each
# stage is stopped after $VDDKPY_STAGE_LIMIT (default 20m): tests end by
# themselves, this only keeps a broken run from holding CI for good.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
limit=${VDDKPY_STAGE_LIMIT:-20m}

all_stages=(debian12 debian13 debian11 debian12_fresh deb_bookworm deb_trixie
            deb_bullseye)

stage_debian12() {
    timeout "$limit" "$here/scripts/test.sh"
}

# The README's commands inside a fresh system, as a new user would run them.
readme_commands_in() {       # readme_commands_in SUITE
    timeout "$limit" "$here/scripts/chroot.sh" "$1" --clone "$here" /root/vddkpy -- \
        sh -c 'cd /root/vddkpy || exit 1
               status=0
               scripts/demo.sh || status=1
               # A vddk plugin the user installed before the tests must
               # still be installed and working after them.
               scripts/install-plugin.sh || status=1
               scripts/test.sh || status=1
               '"$installed_plugin_still_serves"' || status=1
               exit $status'
}

# After demo.sh: the installed `nbdkit vddk` copies demo.sh's VMDK out.
installed_plugin_still_serves='nbdkit vddk --dump-plugin >/dev/null &&
    nbdkit -r -U - vddk libdir=$PWD/demo/vmware-vix-disklib-distrib \
        file=$PWD/demo/disk.vmdk --run "nbdcopy \"\$uri\" /tmp/out.raw" &&
    cmp /tmp/out.raw demo/input.raw &&
    echo "the vddk plugin installed before the tests still serves"'


stage_debian13() {
    readme_commands_in trixie
}

stage_debian11() {
    readme_commands_in bullseye
}

# What setup.sh installs is complete on a fresh Debian 12 too.
stage_debian12_fresh() {
    readme_commands_in bookworm
}

# The Debian package is built here once, then installed and checked in a
# fresh system of each suite with the stand-in as VDDK.
deb=""
deb_check_in() {       # deb_check_in SUITE [STANDIN]
    local standin=${2:-$here/tests/bed/standin/build/libvixDiskLib.so}
    if [ -z "$deb" ]; then
        "$here/scripts/build-deb.sh" && make -s -C "$here/tests/bed/standin" || return 1
        deb=$(ls -t "$here"/build/nbdkit-plugin-vddkpy_*.deb | head -1)
    fi
    timeout "$limit" "$here/scripts/chroot.sh" "$1" \
        --copy "$here/scripts/check-deb.sh" /root/check/check-deb.sh \
        --copy "$deb" "/root/check/${deb##*/}" \
        --copy "$standin" /root/check/libvixDiskLib.so -- \
        /root/check/check-deb.sh "/root/check/${deb##*/}" /root/check/libvixDiskLib.so
}

# The stand-in built in a fresh system of SUITE, for a suite whose C
# library is older than this machine's (a library built here needs
# GLIBC_2.33 symbols that Debian 11's glibc 2.31 lacks, as real VDDK
# is built for the oldest glibc it supports).  Prints its path.
standin_built_in() {   # standin_built_in SUITE
    local out=$here/build/standin-$1
    mkdir -p "$out"
    timeout "$limit" "$here/scripts/chroot.sh" "$1" \
        --copy "$here/tests/bed/standin" /root/standin -- sh -c '
            export DEBIAN_FRONTEND=noninteractive
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
                  gcc libc6-dev make zlib1g-dev &&
              rm -rf /root/standin/build && make -s -C /root/standin; } >&2 &&
            cat /root/standin/build/libvixDiskLib.so' > "$out/libvixDiskLib.so.new" \
        && mv "$out/libvixDiskLib.so.new" "$out/libvixDiskLib.so" \
        && echo "$out/libvixDiskLib.so"
}

stage_deb_bookworm() { deb_check_in bookworm; }
stage_deb_trixie() { deb_check_in trixie; }
stage_deb_bullseye() {
    local standin
    standin=$(standin_built_in bullseye) && deb_check_in bullseye "$standin"
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=("${all_stages[@]}")
for stage in "${stages[@]}"; do
    declare -F "stage_$stage" >/dev/null || { echo "ci-matrix.sh: no stage $stage (have: ${all_stages[*]})" >&2; exit 2; }
done

summary=(); failed=0
for stage in "${stages[@]}"; do
    echo "=== stage $stage: start $(date -u +%H:%M:%S)"
    start=$SECONDS
    "stage_$stage"; status=$?
    took=$((SECONDS - start))
    result=passed; [ $status -eq 0 ] || { result="FAILED (exit $status)"; failed=1; }
    summary+=("$(printf '%-15s %-18s %3dm%02ds' "$stage" "$result" $((took / 60)) $((took % 60)))")
    echo "=== stage $stage: $result after ${took}s"
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $failed
