#!/usr/bin/env bash
# Installs what the tests drive, on Debian or Ubuntu, where it is missing: curl, redis-tools
# (redis-cli, redis-benchmark), memcached, systemd (`systemd-analyze verify` checks the unit
# in deploy/), strace (a test counts the syncs behind acknowledged adds), Maven and OpenJDK 17
# (for the Cassandra test node), protoc, Node.js and a JDK (the client examples in
# examples/), Chromium (a headless browser loads the dashboard at /ui), and the Python clients grpcio, grpcio-tools and redis-py. Go 1.26 or newer (the
# Go example's go.mod) must be installed already: Debian's is older. scripts/test.sh runs it
# first, so `bash scripts/test.sh` works on a fresh machine; it changes nothing where all of
# it is present. Without root it prints the command to run instead of failing halfway.
set -euo pipefail

missing=()
command -v curl >/dev/null || missing+=(curl)
{ command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null; } || missing+=(redis-tools)
command -v memcached >/dev/null || missing+=(memcached)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v strace >/dev/null || missing+=(strace)
command -v mvn >/dev/null || missing+=(maven)
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
{ command -v node >/dev/null && command -v npm >/dev/null; } || missing+=(nodejs npm)
command -v chromium >/dev/null || missing+=(chromium)
[ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ] || [ -x /usr/lib/jvm/java-17-openjdk-arm64/bin/java ] \
  || missing+=(openjdk-17-jre-headless)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "setup: the tests need ${missing[*]}; install them with:"
    echo "  sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
fi

if ! go version 2>/dev/null | grep -Eq 'go1\.(2[6-9]|[3-9][0-9])'; then
  echo "setup: the Go client example needs Go 1.26 or newer (https://go.dev/dl/); found: $(go version 2>&1 || true)"
  exit 1
fi

python_packages=("grpcio==1.85.3" "grpcio-tools==1.85.1" "redis==8.1.0")
if ! python3 -c "import grpc, grpc_tools, redis" 2>/dev/null; then
  echo "setup: installing ${python_packages[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${python_packages[@]}" \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${python_packages[@]}"
fi
