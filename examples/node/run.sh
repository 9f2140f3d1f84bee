#!/usr/bin/env bash
# Installs the locked dependencies (npm ci) and runs counter.js against GRPC_ADDR and RESP_ADDR.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error >&2
node counter.js "$@"
