#!/usr/bin/env bash
# Installs what the test suite uses besides Rust: redis-server and redis-tools (the cli
# crate's tests talk to a real Redis; benchmarks use redis-benchmark) and redis-py (the
# smoke test of a real Redis client library). Idempotent; quiet when all is present.
set -euo pipefail
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian starts a redis-server service on install; tests start their own.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server >/dev/null 2>&1 || true; fi
fi
if ! python3 -c 'import redis' >/dev/null 2>&1; then
  python3 -m pip install -q 'redis>=5' >/dev/null
fi
