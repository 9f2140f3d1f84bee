#!/usr/bin/env bash
# Throughput and latency of Tally on the Cassandra store with the memcached cache: one
# Cassandra node and one memcached on this machine, one `tally serve`, `tally bench` as client.
#
#   bash bench/cassandra.sh                          # about 6 minutes
#   CASSANDRA_COMMITLOG_SYNC=periodic bash bench/cassandra.sh   # Cassandra's default 10 s sync
#
# Starts Cassandra (scripts/cassandra.sh, fresh data) and memcached (scripts/memcached.sh) and
# stops them at the end. The JVM needs a few runs to warm up: the first WARMUP runs are
# printed but are not the figures. Raw outputs go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$(mktemp -d /tmp/tally-cassandra-bench.XXXXXX)}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
WARMUP=${WARMUP:-3}
T_HTTP=127.0.0.1:18080 T_GRPC=127.0.0.1:18090 T_RESP=127.0.0.1:18379
mkdir -p "$OUT"
echo "raw output in $OUT"

cargo build --release --quiet
cargo build --release --quiet -p tally-store-cassandra --example insert_ceiling
TALLY=target/release/tally
bash scripts/cassandra.sh start
MEMCACHED_PORT=11299 bash scripts/memcached.sh start
cleanup() {
  kill "${TALLY_PID:-}" 2>/dev/null || true
  MEMCACHED_PORT=11299 bash scripts/memcached.sh stop
  bash scripts/cassandra.sh stop
}
trap cleanup EXIT

$TALLY serve --store "cassandra://127.0.0.1:${CASSANDRA_PORT:-9042}/bench" --cache memcached://127.0.0.1:11299 \
  --data-dir "$OUT/data" --http $T_HTTP --grpc $T_GRPC --resp $T_RESP > "$OUT/serve.log" 2>&1 &
TALLY_PID=$!
for _ in $(seq 1 100); do curl -sf "http://$T_HTTP/readyz" >/dev/null && break; sleep 0.2; done
curl -sf -X PUT "http://$T_HTTP/v1/namespaces/bench" -H 'content-type: application/json' \
  -d '{"counter_type":"eventual"}' >/dev/null

run() { # label, then tally bench arguments
  local label=$1; shift
  $TALLY bench --protocol grpc --addr $T_GRPC --connections 8 --keys 100000 --duration "${SECONDS_PER_RUN}s" \
    --quiet "$@" | tee "$OUT/$label.txt" | sed "s/^/$label: /"
}

for i in $(seq 1 "$WARMUP"); do run "warmup-$i" --concurrency 256 --mix add=100 --tokens; done
echo "== figures"
run add-256 --concurrency 256 --mix add=100 --tokens
run add-32 --concurrency 32 --mix add=100 --tokens
# Without client tokens the server makes them, and an append takes no token.
run add-256-server-tokens --concurrency 256 --mix add=100
run get-64 --concurrency 64 --mix get=100
# The node's ceiling through the same driver, in the same run: plain single-row inserts, and
# single-row lightweight transactions (what taking a client's token is).
echo "== the node's ceiling (insert_ceiling example, 256 in flight)"
target/release/examples/insert_ceiling "127.0.0.1:${CASSANDRA_PORT:-9042}" 256 "$SECONDS_PER_RUN" | tee "$OUT/ceiling.txt"
