#!/usr/bin/env bash
# Starts (or stops) memcached from Debian's package on loopback, for running Tally with
# `--cache memcached://127.0.0.1:11211` by hand or in the benchmarks.
#
#   bash scripts/memcached.sh start   # installs the package if missing (needs root), starts on 127.0.0.1:11211
#   bash scripts/memcached.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD/target/memcached"
PORT=${MEMCACHED_PORT:-11211}

stop() {
  if [ -f "$ROOT/memcached.pid" ]; then
    kill "$(cat "$ROOT/memcached.pid")" 2>/dev/null || true
    rm -f "$ROOT/memcached.pid"
  fi
}

start() {
  if ! command -v memcached >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached
  fi
  stop
  mkdir -p "$ROOT"
  # 256 MiB of items, 1024 connections, loopback only, no UDP.
  memcached -l 127.0.0.1 -p "$PORT" -U 0 -m 256 -c 1024 -u "$(id -un)" -P "$ROOT/memcached.pid" -d
  for _ in $(seq 1 50); do
    if printf 'version\r\n' | timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT; cat >&3; head -1 <&3" 2>/dev/null | grep -q VERSION; then
      echo "memcached is up on 127.0.0.1:$PORT"
      return 0
    fi
    sleep 0.1
  done
  echo "memcached did not answer on 127.0.0.1:$PORT"; exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop"; exit 2 ;;
esac
