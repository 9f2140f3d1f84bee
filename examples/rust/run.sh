#!/usr/bin/env bash
# Builds and runs crates/tally-client/examples/counter.rs against GRPC_ADDR and RESP_ADDR.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
cargo run --quiet --locked -p tally-client --example counter -- "$@"
