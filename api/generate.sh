#!/usr/bin/env bash
# Regenerates the Go code for api/cloister/v1 from its .proto files.
# Needs protoc (Debian protobuf-compiler) and the two plugins:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
# The generated code is committed: rerun this after editing a .proto file
# and commit both.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$(go env GOPATH)/bin:$PATH"
protoc -I . \
	--go_out=. --go_opt=paths=source_relative \
	--connect-go_out=. --connect-go_opt=paths=source_relative \
	cloister/v1/*.proto
