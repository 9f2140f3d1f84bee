#!/usr/bin/env bash
# Runs the whole test suite, the README's test command.
#
#   bash scripts/test.sh [cargo test arguments…]
#
# Starts a single-node Cassandra (scripts/cassandra.sh) for the Cassandra suites, unless
# TALLY_TEST_CASSANDRA already names a node, and stops it afterwards. The memcached tests
# start their own memcached processes (Debian's `memcached` package) on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests drive (redis-tools, memcached, Java and Maven, the Python clients), installed
# where missing.
bash scripts/setup.sh
started=""
stop_cassandra() { if [ -n "$started" ]; then bash scripts/cassandra.sh stop; fi; }
trap stop_cassandra EXIT
if [ -z "${TALLY_TEST_CASSANDRA:-}" ]; then
  bash scripts/cassandra.sh start
  started=1
  export TALLY_TEST_CASSANDRA=127.0.0.1:${CASSANDRA_PORT:-9042}
  # The checker's test pauses and restarts this node (kill -9, then start on its data).
  export TALLY_TEST_CASSANDRA_PID_FILE="$PWD/target/cassandra/cassandra.pid"
  export TALLY_TEST_CASSANDRA_RESTART="bash $PWD/scripts/cassandra.sh restart"
fi
cargo test --workspace --locked "$@"

# The README's install command, in the debug profile (so that it reuses the build above) and
# into target/ rather than ~/.cargo/bin; the installed binary must run.
cargo install --path crates/tally --locked --debug --root target/install-check --force --quiet
target/install-check/bin/tally --version
