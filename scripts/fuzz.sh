#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (coverage-guided, libFuzzer through cargo fuzz).
#
#   bash scripts/fuzz.sh              # 30 s per target (what CI runs)
#   FUZZ_SECONDS=3600 bash scripts/fuzz.sh resp_parser   # a long run of one target
#
# Needs the nightly toolchain and cargo-fuzz (installed here if missing). New inputs that
# reach new coverage are added to fuzz/corpus/<target>/; a crash stops the run with the input
# saved under fuzz/artifacts/<target>/ and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${FUZZ_SECONDS:-30}
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then TARGETS=(resp_parser http_request grpc_message); fi

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p target/fuzz-logs
for target in "${TARGETS[@]}"; do
  echo "== fuzz $target for ${SECONDS_PER_TARGET}s"
  log="target/fuzz-logs/$target.log"
  # -rss_limit_mb bounds memory per process; -timeout flags any single input that hangs.
  if ! cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 > "$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz target $target failed; the input is under fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added" "$log" || true
done
