#!/usr/bin/env bash
# Rebuilds every example's .wasm reproducibly from source:
#
#   examples/build.sh            rewrite examples/NAME/NAME.wasm and examples/GOVERSION
#   examples/build.sh DIR        write DIR/NAME.wasm instead (used by the reproducibility test)
#
# Same Go version + same source = same bytes: -trimpath drops local paths,
# -buildvcs=false keeps the commit hash out (otherwise every commit would
# change every module), -buildid= empties the build ID, and the environment that
# the linker records in the build info is pinned.
set -euo pipefail
cd "$(dirname "$0")"
examples=(wordcount sha256sum linreg psi-sum shamir hostcall hospital fedlogreg)
out="${1:-}"
if [ -n "$out" ]; then
	mkdir -p "$out"
	out="$(cd "$out" && pwd)"
fi
export GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOFLAGS= GOWASM= GOEXPERIMENT=
for e in "${examples[@]}"; do
	if [ -n "$out" ]; then
		dst="$out/$e.wasm"
	else
		dst="$e/$e.wasm"
	fi
	# Build beside the destination and rename, so a failed build never
	# leaves a truncated module behind.
	go build -trimpath -buildvcs=false -ldflags=-buildid= -o "$dst.tmp" "./$e"
	mv "$dst.tmp" "$dst"
done
if [ -z "$out" ]; then
	go env GOVERSION > GOVERSION.tmp && mv GOVERSION.tmp GOVERSION
fi
if [ -z "$out" ]; then
	# The example policies pin psi-sum's hash: refresh them with the module.
	(cd .. && env -u GOOS -u GOARCH go test ./policy -run TestExamplePolicies -update-examples >/dev/null)
fi
