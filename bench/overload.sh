#!/usr/bin/env bash
# Overload: the counter doors flooded (RESP with 2,000 clients, HTTP adds with 2,000 in flight)
# while /healthz is probed ten times a second on the HTTP door and on the ops listener.
# Prints the probes' latency on each, what the floods got (acknowledged, refused by code), the
# open connections and the server's peak RSS.
#
#   bash bench/overload.sh        # about a minute; OUT=dir keeps the raw outputs
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
SECONDS_LOADED=${SECONDS_LOADED:-25}
echo "raw output in $OUT"
cargo build --release --quiet
T=target/release/tally
ulimit -n "$(ulimit -Hn)"
$T serve --data-dir "$OUT/data" --http 127.0.0.1:18080 --grpc 127.0.0.1:18090 --resp 127.0.0.1:18379 \
  --ops 127.0.0.1:18081 > "$OUT/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/18081) 2>/dev/null && break; sleep 0.1; done
curl -sf -X PUT 127.0.0.1:18080/v1/namespaces/counter > /dev/null

redis-benchmark -p 18379 -c 2000 -n 100000000 -r 100000 -q INCRBY counter:__rand_int__ 1 > "$OUT/resp.txt" 2>&1 &
RB=$!
$T bench --protocol http --addr 127.0.0.1:18080 --namespace counter --connections 200 --concurrency 2000 \
  --keys 100000 --duration "${SECONDS_LOADED}s" --mix add=100 --tokens --json > "$OUT/http.json" 2>&1 &
HB=$!
sleep 5
probe() { # $1 address: 10 probes a second, each its own connection
  for _ in $(seq 1 $(( (SECONDS_LOADED - 10) * 10 ))); do
    curl -s -o /dev/null -w '%{time_total} %{http_code}\n' --max-time 30 "http://$1/healthz" || echo "30 000"
    sleep 0.1
  done
}
probe 127.0.0.1:18080 > "$OUT/health-http.txt" &
P1=$!
probe 127.0.0.1:18081 > "$OUT/health-ops.txt" &
P2=$!
sleep 5
metrics=$(curl -s 127.0.0.1:18081/metrics)
wait $P1 $P2
wait $HB || true
kill $RB 2>/dev/null || true
wait $RB 2>/dev/null || true

summary() { # $1 file of "seconds code" lines
  sort -n "$1" | awk '{ t[NR] = $1 * 1000; if ($2 != 200) bad++ } END {
    p99 = int(NR * 0.99) + 1; if (p99 > NR) p99 = NR
    printf "%d probes, p50 %.1f ms, p99 %.1f ms, max %.1f ms, not 200: %d\n", NR, t[int(NR * 0.5) + 1], t[p99], t[NR], bad + 0 }'
}
echo "== /healthz while the counter doors are flooded"
echo "on the HTTP door:     $(summary "$OUT/health-http.txt")"
echo "on the ops listener:  $(summary "$OUT/health-ops.txt")"
echo "== what the floods got"
echo "HTTP adds: $(grep -o '"ok":[0-9]*' "$OUT/http.json") acknowledged, errors $(grep -o '"errors":{[^}]*}' "$OUT/http.json")"
echo "RESP INCRBY: $(tr '\r' '\n' < "$OUT/resp.txt" | grep -o 'rps=[0-9.]* (overall: [0-9.]*)' | tail -1 | grep -o 'overall: [0-9.]*' | cut -d' ' -f2) requests/s on average until stopped"
echo "open connections (during the flood): $(echo "$metrics" | grep '^tally_connections' | tr '\n' ' ')"
echo "shed (RESOURCE_EXHAUSTED): $(echo "$metrics" | grep -E '^tally_requests_total.*RESOURCE_EXHAUSTED' | awk '{ s += $2 } END { print s + 0 }')"
echo "server peak RSS: $(grep VmHWM /proc/$PID/status | awk '{ print $2 / 1024 " MB" }')"
