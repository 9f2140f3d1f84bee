#!/usr/bin/env bash
# Generates the gRPC stubs from proto/ and runs counter.py against GRPC_ADDR and RESP_ADDR.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
python3 -m grpc_tools.protoc -I"$here/../../proto" --python_out="$gen" --grpc_python_out="$gen" \
  tally/v1/counter.proto tally/v1/namespace.proto
PYTHONPATH="$gen" python3 "$here/counter.py" "$@"
