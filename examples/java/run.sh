#!/usr/bin/env bash
# Builds the example (stubs generated from proto/ by Maven) and runs it against GRPC_ADDR.
set -euo pipefail
cd "$(dirname "$0")"
# Build output goes to stderr, so that stdout is what the example prints.
mvn -B -q compile dependency:build-classpath -Dmdep.outputFile=target/classpath.txt >&2
java -cp "target/classes:$(cat target/classpath.txt)" example.TallyExample "$@"
