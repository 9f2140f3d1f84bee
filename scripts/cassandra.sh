#!/usr/bin/env bash
# Starts (or stops) a real single-node Apache Cassandra 5.0 on loopback, from the
# cassandra-all jars on Maven Central, for the Cassandra backend's tests.
#
#   bash scripts/cassandra.sh start   # downloads the jars once, starts, waits for CQL on 127.0.0.1:9042
#   bash scripts/cassandra.sh stop
#   bash scripts/cassandra.sh restart # kill -9, then starts it again on its data (a fault for `tally check`)
#
# CASSANDRA_PORT (CQL, 9042) and CASSANDRA_STORAGE_PORT (17000) move the node's ports.
#
# CASSANDRA_COMMITLOG_SYNC=periodic trades the per-write commit-log sync for Cassandra's
# default 10 s sync (for benchmarks that compare the two; the tests use the durable default).
# Everything lives under target/cassandra/ (jars, config, data, logs). Needs OpenJDK 17 and mvn.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD/target/cassandra"
LIB="$ROOT/lib"
PORT=${CASSANDRA_PORT:-9042}
STORAGE_PORT=${CASSANDRA_STORAGE_PORT:-17000}
SYNC=${CASSANDRA_COMMITLOG_SYNC:-batch}
SYNC_PERIOD=""
if [ "$SYNC" = periodic ]; then SYNC_PERIOD="commitlog_sync_period: 10000ms"; fi
JAVA_HOME=${CASSANDRA_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}

stop() {
  if [ -f "$ROOT/cassandra.pid" ]; then
    pid=$(cat "$ROOT/cassandra.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$ROOT/cassandra.pid"
  fi
}

start() {
  "$JAVA_HOME/bin/java" -version 2>&1 | grep -q '"17' || { echo "need OpenJDK 17 at $JAVA_HOME"; exit 1; }
  if [ ! -f "$LIB/cassandra-all-5.0.8.jar" ]; then
    echo "downloading cassandra-all 5.0.8 and its dependencies from Maven Central"
    mvn -B -q -f scripts/cassandra/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB"
  fi
  stop
  rm -rf "$ROOT/data" "$ROOT/logs"
  launch
}

# Writes the configuration and starts the node on whatever data is there.
launch() {
  mkdir -p "$ROOT/conf" "$ROOT/data" "$ROOT/logs"
  : > "$ROOT/logs/stdout.log"
  cat > "$ROOT/conf/cassandra.yaml" <<YAML
cluster_name: tally-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
native_transport_port: $PORT
start_native_transport: true
data_file_directories: [ $ROOT/data/data ]
commitlog_directory: $ROOT/data/commitlog
saved_caches_directory: $ROOT/data/saved_caches
hints_directory: $ROOT/data/hints
cdc_raw_directory: $ROOT/data/cdc_raw
# Every acknowledged write is in the synced commit log: Tally acknowledges adds only after
# the store does, so the store must not acknowledge what a crash can lose.
commitlog_sync: $SYNC
$SYNC_PERIOD# Paxos v2 needs fewer round trips per lightweight transaction (Tally's idempotent inserts).
paxos_variant: v2
# Tally sends an event only if it can land before its commit deadline; the store options'
# write_timeout must be at least these bounds (see crates/tally-store-cassandra).
write_request_timeout: 1000ms
cas_contention_timeout: 1000ms
concurrent_reads: 16
concurrent_writes: 16
concurrent_counter_writes: 2
concurrent_materialized_view_writes: 2
concurrent_compactors: 1
memtable_flush_writers: 1
memtable_heap_space: 128MiB
key_cache_size: 16MiB
counter_cache_size: 8MiB
index_summary_capacity: 16MiB
file_cache_size: 64MiB
auto_snapshot: false
incremental_backups: false
disk_access_mode: standard
YAML
  cat > "$ROOT/conf/logback.xml" <<'XML'
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <filter class="ch.qos.logback.classic.filter.ThresholdFilter"><level>INFO</level></filter>
    <encoder><pattern>%-5level %date{ISO8601} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/><appender-ref ref="STDOUT"/></root>
</configuration>
XML
  opens=""
  for o in java.base/java.lang java.base/java.lang.module java.base/java.lang.reflect java.base/java.io \
           java.base/java.net java.base/java.nio java.base/java.util java.base/jdk.internal.loader \
           java.base/jdk.internal.ref java.base/jdk.internal.reflect java.base/jdk.internal.math \
           java.base/jdk.internal.module java.base/jdk.internal.util.jar java.base/sun.nio.ch \
           jdk.management/com.sun.management.internal jdk.compiler/com.sun.tools.javac; do
    opens="$opens --add-opens $o=ALL-UNNAMED"
  done
  exports=""
  for e in java.base/jdk.internal.misc java.base/jdk.internal.ref java.base/sun.nio.ch java.base/java.lang.ref \
           java.management.rmi/com.sun.jmx.remote.internal.rmi java.management/com.sun.jmx.remote.security \
           java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.rmi/sun.rmi.transport.tcp java.sql/java.sql \
           jdk.unsupported/sun.misc jdk.attach/sun.tools.attach jdk.compiler/com.sun.tools.javac.file; do
    exports="$exports --add-exports $e=ALL-UNNAMED"
  done
  # shellcheck disable=SC2086
  "$JAVA_HOME/bin/java" -Xms1g -Xmx1g -XX:+UseG1GC -ea -Xss256k -XX:+PerfDisableSharedMem \
    -XX:+ExitOnOutOfMemoryError -Djava.net.preferIPv4Stack=true -Djdk.attach.allowAttachSelf=true \
    $opens $exports \
    -Dio.netty.tryReflectionSetAccessible=true \
    -javaagent:"$LIB/jamm-0.4.0.jar" \
    -Dcassandra.config="file://$ROOT/conf/cassandra.yaml" -Dcassandra-foreground=yes \
    -Dlogback.configurationFile="$ROOT/conf/logback.xml" -Dcassandra.logdir="$ROOT/logs" \
    -Dcassandra.storagedir="$ROOT/data" -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.available_processors=2 \
    -cp "$LIB/*" org.apache.cassandra.service.CassandraDaemon > "$ROOT/logs/stdout.log" 2>&1 &
  echo $! > "$ROOT/cassandra.pid"
  pid=$(cat "$ROOT/cassandra.pid")
  for i in $(seq 1 180); do
    if grep -q "Startup complete" "$ROOT/logs/stdout.log"; then
      echo "cassandra is up on 127.0.0.1:$PORT after ${i}s (pid $pid)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null || grep -qE "Exception encountered during startup|Failed to bind port" "$ROOT/logs/stdout.log"; then
      echo "cassandra failed to start:"; tail -40 "$ROOT/logs/stdout.log"; stop; exit 1
    fi
    sleep 1
  done
  echo "cassandra did not start within 180 s:"; tail -40 "$ROOT/logs/stdout.log"; stop; exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart)
    if [ -f "$ROOT/cassandra.pid" ]; then
      pid=$(cat "$ROOT/cassandra.pid")
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    launch ;;
  *) echo "usage: $0 start|stop|restart"; exit 2 ;;
esac
