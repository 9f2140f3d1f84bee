#!/usr/bin/env bash
# Generates the Go gRPC stubs from proto/ (protoc, with protoc-gen-go and protoc-gen-go-grpc
# from the Go module proxy) into ./tallypb and runs main.go against GRPC_ADDR.
set -euo pipefail
cd "$(dirname "$0")"
export GOBIN="$PWD/.bin"
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 >&2
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2 >&2
mkdir -p tallypb
m="Mtally/v1/counter.proto=tally.example/counter/tallypb,Mtally/v1/namespace.proto=tally.example/counter/tallypb"
PATH="$GOBIN:$PATH" protoc -I../../proto --go_out=tallypb --go_opt=paths=source_relative,"$m" \
  --go-grpc_out=tallypb --go-grpc_opt=paths=source_relative,"$m" \
  tally/v1/counter.proto tally/v1/namespace.proto
# paths=source_relative keeps proto/'s folders; the package is one folder.
mv tallypb/tally/v1/*.go tallypb/ && rm -r tallypb/tally
go run . "$@"
