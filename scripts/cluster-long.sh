#!/usr/bin/env bash
# The long cluster run: builds the release server and runs the ignored `long_run` test of
# tests/cluster_failover.rs: one three-node cluster (real processes, raft links through
# the test's proxies) under concurrent lock traffic, with leader kills (SIGKILL, then a
# restart on the same data directory), partitions that isolate the leader (links cut,
# black-holed, cut one way, or slowed down) and leader pauses (SIGSTOP/SIGCONT) in a
# random order. Every acknowledged grant goes into one history, checked at the end
# (mutual exclusion, token order, no token twice, no hold lost early); after every
# failure the new leader must serve within 20 s and show every hold that cannot have
# ended; at the end every node must have applied the same log and agree on every key.
#
# Usage: scripts/cluster-long.sh [kills] [partitions] [pauses]     (default 100 20 10)
#
# Honours CARGO_TARGET_DIR, CARGO_BUILD_JOBS and the test's own variables:
# TURNSTILE_CLUSTER_CLIENTS (8), TURNSTILE_CLUSTER_SEED (random, printed),
# TURNSTILE_CLUSTER_ELECTION_MS and TURNSTILE_CLUSTER_HEARTBEAT_MS (here the server's
# defaults, 200 and 100, so the long run measures the failover users get; the CI tests
# use 400 and 100, slower but steadier under debug builds),
# TURNSTILE_CLUSTER_KEEP (keep the data dirs and node logs even on success).
# On failure the test prints every violation and keeps the data dirs and node logs under
# the system temp dir (the path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."

kills="${1:-100}"
partitions="${2:-20}"
pauses="${3:-10}"
for n in "$kills" "$partitions" "$pauses"; do
  case "$n" in
    '' | *[!0-9]*) echo "usage: $0 [kills] [partitions] [pauses]" >&2; exit 2 ;;
  esac
done

echo "== building (release)"
cargo test --release --test cluster_failover --no-run

echo "== long run: $kills kills, $partitions partitions, $pauses pauses"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
start=$(date +%s)
set +e
export TURNSTILE_CLUSTER_ELECTION_MS="${TURNSTILE_CLUSTER_ELECTION_MS:-200}"
export TURNSTILE_CLUSTER_HEARTBEAT_MS="${TURNSTILE_CLUSTER_HEARTBEAT_MS:-100}"
echo "== timing: heartbeat ${TURNSTILE_CLUSTER_HEARTBEAT_MS} ms, election timeout ${TURNSTILE_CLUSTER_ELECTION_MS} ms"
TURNSTILE_CLUSTER_KILLS="$kills" TURNSTILE_CLUSTER_PARTITIONS="$partitions" \
  TURNSTILE_CLUSTER_PAUSES="$pauses" \
  cargo test --release --test cluster_failover -- --ignored --exact long_run \
  --nocapture --test-threads 1 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - start ))

echo
echo "== summary"
echo "result:      $([ "$status" -eq 0 ] && echo PASSED || echo "FAILED (exit $status)")"
echo "elapsed:     ${elapsed}s"
grep -m1 -o 'seed [0-9]*' "$out" | sed 's/^seed /seed:        /' || true
summary=$(grep '^SUMMARY ' "$out" | tail -n 1 || true)
if [ -n "$summary" ]; then
  field() { printf '%s\n' "$summary" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  echo "failures:    $(field kills) leader kills, $(field partitions) partitions, $(field pauses) pauses"
  echo "clients:     $(field acquires_sent) ACQUIREs sent; acknowledged: $(field grants_acknowledged) grants, $(field releases_acknowledged) releases, $(field renewals_acknowledged) renewals"
  echo "             $(field wait_timeouts) WAIT timeouts, $(field redirects) NOTLEADER redirects, $(field unknown_acquires) ACQUIREs with an unknown outcome ($(field uncertain) -ERR UNCERTAIN), $(field other_errors) other errors"
  echo "checks:      history: $(field holds_checked) holds on $(field keys_checked) keys, $(field pairs_checked) ordered pairs (mutual exclusion, token order, no token twice)"
  echo "             INSPECT on the new leader: $(field inspect_rounds) rounds ($(field inspect_rounds_skipped) skipped: leader changed), $(field holds_confirmed) live holds confirmed"
  echo "             survivor locks found on the new leader: $(field survivors_confirmed) ($(field survivors_skipped) skipped)"
  echo "             cut-off leader granted nothing: $(field cutoff_checks) checks; nodes agree at the end: $(field convergence_checks)"
  echo "failover:    after a kill (to the first grant on the new leader): p50 $(field failover_kill_p50_ms) ms, p99 $(field failover_kill_p99_ms) ms, max $(field failover_kill_max_ms) ms"
  echo "             after any failure: p50 $(field failover_all_p50_ms) ms, p99 $(field failover_all_p99_ms) ms, max $(field failover_all_max_ms) ms"
  echo "violations:  $(field violations)"
else
  echo "no SUMMARY line: the test stopped early; what failed is printed above"
  grep -E 'VIOLATION|panicked' "$out" | head -n 20 || true
fi
exit "$status"
