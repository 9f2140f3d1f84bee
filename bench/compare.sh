#!/usr/bin/env bash
# Runs Tally's benchmarks against its peers on this machine, in one go, and prints each
# figure and ratio. Every server is on loopback; every load is bounded.
#
#   bash bench/compare.sh            # full run (about 12 minutes on 2 cores)
#   QUICK=1 bash bench/compare.sh    # smaller counts, for a smoke run
#   SERVER_CPUS=0-1 CLIENT_CPUS=2-15 REDIS_BENCH_THREADS=6 bash bench/compare.sh
#                                    # on a bigger machine: servers on 2 cores, clients apart
#
# Needs: a release build (done here), redis-server and redis-tools (apt-get install
# redis-server redis-tools), curl. The figures go to stdout; raw outputs to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$(mktemp -d /tmp/tally-bench.XXXXXX)}
N=${N:-200000}              # requests per redis-benchmark run
GRPC_SECONDS=${GRPC_SECONDS:-15}
BIG_COUNTER_EVENTS=${BIG_COUNTER_EVENTS:-1000000}
ACTIVE_COUNTERS=${ACTIVE_COUNTERS:-1000000}
SUSTAINED_SECONDS=${SUSTAINED_SECONDS:-60}
if [ -n "${QUICK:-}" ]; then N=20000; GRPC_SECONDS=3; BIG_COUNTER_EVENTS=20000; ACTIVE_COUNTERS=20000; SUSTAINED_SECONDS=20; fi
CLIENTS=50
PIPELINE=16
# With more cores than two, pin as the speed targets ask: SERVER_CPUS and CLIENT_CPUS are
# taskset lists (say 0-1 and 2-15) for every server and every load generator, and
# REDIS_BENCH_THREADS gives redis-benchmark that many threads. Unset, nothing is pinned.
SERVER=(env) CLIENT=(env) RB_THREADS=()
if [ -n "${SERVER_CPUS:-}" ]; then SERVER=(taskset -c "$SERVER_CPUS"); fi
if [ -n "${CLIENT_CPUS:-}" ]; then CLIENT=(taskset -c "$CLIENT_CPUS"); fi
if [ -n "${REDIS_BENCH_THREADS:-}" ]; then RB_THREADS=(--threads "$REDIS_BENCH_THREADS"); fi
echo "raw output in $OUT"

cargo build --release --quiet
# The gRPC floor of section 2 and the RESP floor of section 1, with the binary's features
# (TLS), so nothing builds twice.
cargo build --release --quiet -p tally-server --features tls --example grpc_floor --example resp_floor
TALLY=target/release/tally
REDIS_PORT=6391
T_HTTP=127.0.0.1:17080 T_GRPC=127.0.0.1:17090 T_RESP_PORT=17379 FLOOR_PORT=17091 RESP_FLOOR_PORT=17092

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; kill -CONT "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open"; exit 1; }

# rps from `redis-benchmark -q --csv`-free output: the number before "requests per second".
rps() { grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1; }

bench_redis_like() { # $1 port, $2 label -> prints "label random hot single50 single500"
  local port=$1 label=$2 random hot single50 single500
  # One redis-benchmark load against $port, its output kept; prints its requests per second.
  load() { "${CLIENT[@]}" redis-benchmark "${RB_THREADS[@]}" -p "$port" -n "$N" -q "$@" 2>&1 | tee -a "$OUT/$label.txt" | rps; }
  random=$(load -c $CLIENTS -P $PIPELINE -r 100000 INCRBY counter:__rand_int__ 1)
  hot=$(load -c $CLIENTS -P $PIPELINE INCRBY counter:hot 1)
  single50=$(load -c 50 -P 1 -r 100000 INCRBY counter:__rand_int__ 1)
  single500=$(load -c 500 -P 1 -r 100000 INCRBY counter:__rand_int__ 1)
  echo "$label $random $hot $single50 $single500"
}

start_redis() { # $1 dir, rest: redis-server args
  local dir=$1; shift
  "${SERVER[@]}" redis-server --port $REDIS_PORT --dir "$dir" --daemonize no --save "" "$@" > "$dir/redis.log" 2>&1 &
  pids+=($!)
  wait_port $REDIS_PORT
}

start_example() { # $1 example name, $2 port, rest: its options; starts target/release/examples/$1 there; sets EXAMPLE_PID
  local example=$1 port=$2; shift 2
  "${SERVER[@]}" "target/release/examples/$example" "127.0.0.1:$port" "$@" 2>> "$OUT/$example.log" &
  EXAMPLE_PID=$!
  pids+=($EXAMPLE_PID)
  wait_port "$port"
}

stop_example() { kill $EXAMPLE_PID; wait $EXAMPLE_PID 2>/dev/null || true; }

floor_bench() { # $1 what it answers, $2 output file, rest: tally bench arguments
  # One load against the gRPC floor (see section 2), started on $FLOOR_PORT and stopped after.
  local what=$1 file=$2; shift 2
  start_example grpc_floor $FLOOR_PORT
  echo "gRPC floor ($what answered without the engine)${FLOOR_NOTE:-}:"
  "${CLIENT[@]}" $TALLY bench --protocol grpc --addr 127.0.0.1:$FLOOR_PORT "$@" --quiet | tee "$OUT/$file"
  stop_example
}

floor_bench_tally_stopped() { # as floor_bench, with Tally stopped meanwhile (and resumed)
  kill -STOP $TALLY_PID
  floor_bench "$@"
  kill -CONT $TALLY_PID
}

start_tally() { # $1 data dir
  "${SERVER[@]}" $TALLY serve --data-dir "$1" --http $T_HTTP --grpc $T_GRPC --resp 127.0.0.1:$T_RESP_PORT > "$1.log" 2>&1 &
  TALLY_PID=$!
  pids+=($TALLY_PID)
  wait_port $T_RESP_PORT
  wait_port ${T_GRPC##*:}
}

echo "== 1. INCRBY through redis-benchmark (-n $N -c $CLIENTS -P $PIPELINE), random keys and one hot key"
mkdir -p "$OUT/redis-aof" "$OUT/redis-mem"
start_redis "$OUT/redis-aof" --appendonly yes --appendfsync always
read -r _ aof_random aof_hot aof_s50 aof_s500 < <(bench_redis_like $REDIS_PORT redis-aof-always)
redis-cli -p $REDIS_PORT shutdown nosave > /dev/null 2>&1 || true; sleep 0.5
start_redis "$OUT/redis-mem" --appendonly no
read -r _ mem_random mem_hot mem_s50 mem_s500 < <(bench_redis_like $REDIS_PORT redis-no-persistence)
redis-cli -p $REDIS_PORT shutdown nosave > /dev/null 2>&1 || true; sleep 0.5
start_tally "$OUT/tally-resp"
curl -sf -X PUT "$T_HTTP/v1/namespaces/counter" > /dev/null
read -r _ tally_random tally_hot tally_s50 tally_s500 < <(bench_redis_like $T_RESP_PORT tally-eventual-durable)
kill $TALLY_PID; wait $TALLY_PID 2>/dev/null || true
# The RESP floor: Tally's framing, replies, runtime and connection loop, with counts in memory
# and no engine (crates/tally-server/examples/resp_floor.rs): what this door allows here.
start_example resp_floor $RESP_FLOOR_PORT
read -r _ floor_random floor_hot floor_s50 floor_s500 < <(bench_redis_like $RESP_FLOOR_PORT resp-floor)
stop_example
# The same door made durable the simplest way: each read's adds appended to a file that one
# thread syncs for all connections, each answer after its sync (as redis-server's `always`).
start_example resp_floor $RESP_FLOOR_PORT --log "$OUT/resp-floor.aof"
read -r _ logged_random logged_hot logged_s50 logged_s500 < <(bench_redis_like $RESP_FLOOR_PORT resp-floor-logged)
stop_example
# Each server's four figures, in the order bench_redis_like prints them.
aof=("$aof_random" "$aof_hot" "$aof_s50" "$aof_s500")
mem=("$mem_random" "$mem_hot" "$mem_s50" "$mem_s500")
tally=("$tally_random" "$tally_hot" "$tally_s50" "$tally_s500")
floor=("$floor_random" "$floor_hot" "$floor_s50" "$floor_s500")
logged=("$logged_random" "$logged_hot" "$logged_s50" "$logged_s500")
row() { printf '%-34s %14s %14s %14s %14s\n' "$@"; }
row "" "-P16 random/s" "-P16 hot/s" "-P1 c50/s" "-P1 c500/s"
row "redis appendfsync always" "${aof[@]}"
row "redis no persistence" "${mem[@]}"
row "tally eventual (durable)" "${tally[@]}"
row "RESP floor (no engine, no disk)" "${floor[@]}"
row "RESP floor, log synced (no engine)" "${logged[@]}"
# One line of ratios: $1 what over what, then the four figures of each.
ratios() {
  awk -v what="$1" -v a="$2" -v b="$3" -v c="$4" -v d="$5" -v e="$6" -v f="$7" -v g="$8" -v h="$9" 'BEGIN {
    printf "ratio %-31s %.2f random, %.2f hot, %.2f -P1 c50, %.2f -P1 c500\n", what, a/e, b/f, c/g, d/h }'
}
ratios "tally / redis-always:" "${tally[@]}" "${aof[@]}"
ratios "tally / redis-no-persistence:" "${tally[@]}" "${mem[@]}"
ratios "RESP floor / redis-always:" "${floor[@]}" "${aof[@]}"
ratios "tally / RESP floor:" "${tally[@]}" "${floor[@]}"
ratios "logged floor / redis-always:" "${logged[@]}" "${aof[@]}"
ratios "tally / logged floor:" "${tally[@]}" "${logged[@]}"

echo "== 2. gRPC AddCount (durable) and GetCount with tally bench"
# The floor first: the same load against a server on the same gRPC stack whose AddCount
# answers at once (crates/tally-server/examples/grpc_floor.rs), so the figure below reads
# against what the protocol alone allows on this machine.
floor_bench AddCount grpc-floor-add.txt --connections 8 --concurrency 512 --keys 100000 \
  --duration ${GRPC_SECONDS}s --mix add=100 --tokens
echo "Tally:"
start_tally "$OUT/tally-grpc"
curl -sf -X PUT "$T_HTTP/v1/namespaces/bench" > /dev/null
"${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --connections 8 --concurrency 512 --keys 100000 \
  --duration ${GRPC_SECONDS}s --mix add=100 --tokens --quiet | tee "$OUT/grpc-add.txt"
max_get=$("${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --connections 8 --concurrency 256 --keys 100000 \
  --duration ${GRPC_SECONDS}s --mix get=100 --json | tee "$OUT/grpc-get-max.json" | grep -o '"throughput_per_s":[0-9.]*' | cut -d: -f2)
echo "GetCount maximum: $max_get/s"
half=$(awk -v m="$max_get" 'BEGIN { printf "%d", m/2 }')
echo "GetCount at half that load ($half/s):"
"${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --connections 8 --concurrency 64 --keys 100000 \
  --duration ${GRPC_SECONDS}s --mix get=100 --rate "$half" --quiet | tee "$OUT/grpc-get-half.txt"
# The same paced load against the floor, with Tally stopped meanwhile: what latency the
# shared cores leave a server that does nothing.
FLOOR_NOTE=" at the same load" floor_bench_tally_stopped GetCount grpc-floor-get-half.txt --connections 8 --concurrency 64 \
  --keys 100000 --duration ${GRPC_SECONDS}s --mix get=100 --rate "$half"
# AddCount's latency at half its maximum (the rate above), paced as GetCount's, then the floor's.
half_add=$(grep -o '[0-9]* ops/s' "$OUT/grpc-add.txt" | head -1 | awk '{ printf "%d", $1 / 2 }')
echo "AddCount at half its maximum ($half_add/s):"
"${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --connections 8 --concurrency 64 --keys 100000 \
  --duration ${GRPC_SECONDS}s --mix add=100 --tokens --rate "$half_add" --quiet | tee "$OUT/grpc-add-half.txt"
FLOOR_NOTE=" at the same load" floor_bench_tally_stopped AddCount grpc-floor-add-half.txt --connections 8 --concurrency 64 \
  --keys 100000 --duration ${GRPC_SECONDS}s --mix add=100 --tokens --rate "$half_add"

echo "== 2a. BatchAddCount: 100 adds with tokens per request, 100,000 keys"
"${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --connections 8 --concurrency 32 --keys 100000 --batch 100 \
  --duration ${GRPC_SECONDS}s --mix add=100 --tokens --quiet | tee "$OUT/grpc-batch-add.txt"
# The same batches against the floor, with Tally stopped meanwhile: what decoding, answering
# and the shared cores leave for the engine's work per add.
floor_bench_tally_stopped BatchAddCount grpc-floor-batch-add.txt --connections 8 --concurrency 32 --keys 100000 \
  --batch 100 --duration ${GRPC_SECONDS}s --mix add=100 --tokens

echo "== 2b. gRPC AddCount with ghz, a load generator that is not ours"
GHZ=$(command -v ghz || true)
if [ -z "$GHZ" ] && command -v go > /dev/null; then
  GOBIN="$OUT/bin" go install github.com/bojand/ghz/cmd/ghz@${GHZ_VERSION:-v0.93.0} > "$OUT/ghz-install.txt" 2>&1 && GHZ="$OUT/bin/ghz"
fi
if [ -n "$GHZ" ]; then
  "${CLIENT[@]}" "$GHZ" --insecure --call tally.v1.CounterService.AddCount -c 256 -z ${GRPC_SECONDS}s \
    -d '{"namespace":"bench","counter_name":"g{{.RequestNumber}}","delta":1,"idempotency_token":{"token":"{{.UUID}}","generation_time":"{{.Timestamp}}"}}' \
    $T_GRPC | tee "$OUT/ghz-add.txt" | grep -E "Requests/sec|Average|50 %|99 %|\[OK\]|Error"
else
  echo "ghz not available (go install failed; see $OUT/ghz-install.txt)"
fi

echo "== 3. Convergence lag: last acknowledged add of a burst until GetCount is exact (eventual, defaults)"
curl -sf -X PUT "$T_HTTP/v1/namespaces/lag" > /dev/null
"${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --namespace lag --keys 1 --requests 20000 --concurrency 256 --quiet > /dev/null
t0=$(date +%s.%N)
while [ "$($TALLY get lag k0 --addr http://$T_GRPC --json | grep -o '"count":[0-9]*' | cut -d: -f2)" != "20000" ]; do sleep 0.05; done
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "converged %.2f s after the last acknowledged add\n", b-a }'
kill $TALLY_PID; wait $TALLY_PID 2>/dev/null || true

echo "== 4. GetCount latency: a counter with 10 events against one with $BIG_COUNTER_EVENTS events; disk per event"
start_tally "$OUT/tally-deep"
curl -sf -X PUT "$T_HTTP/v1/namespaces/depth" > /dev/null
"${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --namespace depth --keys 1 --requests 10 --concurrency 1 --quiet > /dev/null
curl -sf -X PUT "$T_HTTP/v1/namespaces/deep" > /dev/null
"${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --namespace deep --keys 1 --requests "$BIG_COUNTER_EVENTS" \
  --connections 8 --concurrency 512 --quiet | tee "$OUT/deep-load.txt"
sleep 9  # let the rollups fold both counters (accept_limit + clock_skew + coalesce = 7 s)
for ns in depth deep; do
  echo "$ns:"; "${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --namespace $ns --keys 1 --mix get=100 \
    --concurrency 4 --duration 5s --quiet | tee "$OUT/get-$ns.txt"
done
kill $TALLY_PID; wait $TALLY_PID 2>/dev/null || true
$TALLY compact --data-dir "$OUT/tally-deep" | tee "$OUT/compact-deep.txt"
# Tables only: the write-ahead journal's active file holds whatever was written since it last
# passed 64 MB, which says when the run stopped, not what an event costs.
bytes=$(du -sb "$OUT/tally-deep/keyspaces" | cut -f1)
journal=$(cat "$OUT"/tally-deep/*.jnl 2>/dev/null | wc -c)
awk -v b="$bytes" -v j="$journal" -v n="$BIG_COUNTER_EVENTS" 'BEGIN { printf "tables after compaction: %d bytes (du) for %d events: %.1f bytes per event (and %d bytes of write-ahead journal)\n", b, n, b/n, j }'

echo "== 5. Memory and disk with $ACTIVE_COUNTERS distinct active counters"
start_tally "$OUT/tally-wide"
curl -sf -X PUT "$T_HTTP/v1/namespaces/wide" > /dev/null
rss0=$(ps -o rss= -p $TALLY_PID)
"${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --namespace wide --keys "$ACTIVE_COUNTERS" \
  --requests "$ACTIVE_COUNTERS" --connections 8 --concurrency 512 --quiet | tee "$OUT/wide-load.txt"
sleep 12  # the rollups of every counter run, filling checkpoints and caches
rss1=$(ps -o rss= -p $TALLY_PID)
echo "server RSS: ${rss0} KiB idle, ${rss1} KiB after writing to $ACTIVE_COUNTERS counters and rolling them up"
kill $TALLY_PID; wait $TALLY_PID 2>/dev/null || true
$TALLY compact --data-dir "$OUT/tally-wide" | tee "$OUT/compact-wide.txt"
bytes=$(du -sb "$OUT/tally-wide/keyspaces" | cut -f1)
journal=$(cat "$OUT"/tally-wide/*.jnl 2>/dev/null | wc -c)
awk -v b="$bytes" -v j="$journal" -v n="$ACTIVE_COUNTERS" 'BEGIN { printf "tables after compaction: %d bytes for %d counters of one event: %.1f bytes per counter (and %d bytes of write-ahead journal)\n", b, n, b/n, j }'

echo "== 6. Sustained: ${SUSTAINED_SECONDS} s of gRPC AddCount with tokens at the maximum rate over $ACTIVE_COUNTERS uniform keys, in 10 s rounds"
start_tally "$OUT/tally-sustained"
curl -sf -X PUT "$T_HTTP/v1/namespaces/steady" > /dev/null
rounds=$((SUSTAINED_SECONDS / 10)); first=""; last=""
for i in $(seq 1 $rounds); do
  r=$("${CLIENT[@]}" $TALLY bench --protocol grpc --addr $T_GRPC --namespace steady --connections 8 --concurrency 512 \
    --keys "$ACTIVE_COUNTERS" --duration 10s --mix add=100 --tokens --json | tee -a "$OUT/sustained.json" \
    | grep -o '"throughput_per_s":[0-9.]*' | cut -d: -f2)
  echo "round $i: $r adds/s, server RSS $(ps -o rss= -p $TALLY_PID) KiB"
  [ -z "$first" ] && first=$r; last=$r
done
awk -v f="$first" -v l="$last" 'BEGIN { printf "last round / first round: %.2f\n", l/f }'
kill $TALLY_PID; wait $TALLY_PID 2>/dev/null || true
