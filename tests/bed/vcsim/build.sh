#!/usr/bin/env bash
# Builds tests/bed/vcsim/build/vcsim (govmomi's simulator with this
# directory's extensions) from Debian's golang-github-vmware-govmomi-dev
# source with golang-go, in GOPATH mode: no network, no module download.
# Does nothing when the binary is newer than every source file and was
# built by the same Go and govmomi.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$here/build
binary=$build/vcsim
gocode=/usr/share/gocode
toolchain="$(go version) govmomi $(dpkg-query -W -f='${Version}' \
    golang-github-vmware-govmomi-dev 2>/dev/null || echo unknown)"

if [ -x "$binary" ] && [ "$(cat "$build/toolchain" 2>/dev/null)" = "$toolchain" ] &&
   [ -z "$(find "$here"/*.go "$here/build.sh" -newer "$binary")" ]; then
    exit 0
fi
mkdir -p "$build/gocache" "$build/gopath"
cd "$here"
GO111MODULE=off GOPATH="$build/gopath:$gocode" GOCACHE="$build/gocache" \
    GOFLAGS= GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 \
    go build -ldflags="-s -w" -o "$binary.$$" .   # no debug symbols: a smaller, faster link
mv -f "$binary.$$" "$binary"   # a running test never sees half a binary
echo "$toolchain" > "$build/toolchain"
