#!/usr/bin/env bash
# Rebuilds piee/operators/operators.wasm reproducibly from source (same Go
# version, same bytes; see examples/build.sh for the flags), and records
# the Go version in GOVERSION. A test checks the committed module is what
# the source builds to.
#
#   piee/operators/build.sh        rewrite operators.wasm and GOVERSION
#   piee/operators/build.sh DIR    write DIR/operators.wasm instead
set -euo pipefail
cd "$(dirname "$0")"
dst=operators.wasm
if [ -n "${1:-}" ]; then
	mkdir -p "$1"
	dst="$(cd "$1" && pwd)/operators.wasm"
fi
export GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOFLAGS= GOWASM= GOEXPERIMENT=
go build -trimpath -buildvcs=false -ldflags=-buildid= -o "$dst.tmp" .
mv "$dst.tmp" "$dst"
if [ -z "${1:-}" ]; then
	go env GOVERSION > GOVERSION.tmp && mv GOVERSION.tmp GOVERSION
fi
