#!/usr/bin/env bash
# Turnstile text mode against redis-server under the real redis-benchmark, in one run.
#
#   TURNSTILE_ADDR=127.0.0.1:7379 scripts/redis-benchmark-compare.sh
#
# Turnstile:  ACQUIRE key:__rand_int__ REENTRANT TTL 1000 WAIT 0
# Redis:      SET key:__rand_int__ x NX PX 1000        (a redis-server this script starts)
# with 1 and 50 connections, without and with pipelining (-P 16), -r 100000, a fixed -n.
# Prints requests/s per row with the ratio Turnstile/Redis, and the exact commands.
#
# Environment:
#   TURNSTILE_ADDR  the Turnstile server, host:port (default 127.0.0.1:7379); it must be
#                   running already (this script says how to start it if not)
#   TURNSTILE_PID   its PID, to pin it to SERVER_CPU (default: found with ss, if possible)
#   SERVER_CPU      the core of both servers (default 0)
#   CLIENT_CPU      the core of redis-benchmark (default 1)
#   REQUESTS        -n of every run (default 200000)
#   REDIS_PORT      the port of the redis-server this script starts (default 6399)
#
# redis-server and redis-benchmark come from Debian's packages (installed with apt-get by
# loadgen/peers.sh if missing). redis-benchmark sends CONFIG GET at start-up; Turnstile may
# answer it with an error, which redis-benchmark tolerates with a warning.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TURNSTILE_ADDR="${TURNSTILE_ADDR:-127.0.0.1:7379}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
REQUESTS="${REQUESTS:-200000}"
REDIS_PORT="${REDIS_PORT:-6399}"

T_HOST="${TURNSTILE_ADDR%:*}"
T_PORT="${TURNSTILE_ADDR##*:}"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

"$ROOT/loadgen/peers.sh" install redis

if ! port_open "$T_HOST" "$T_PORT"; then
    cat >&2 <<EOF
No Turnstile server answers at $TURNSTILE_ADDR. Start one pinned to CPU $SERVER_CPU, e.g.:

    cargo build --release
    taskset -c $SERVER_CPU ./target/release/turnstile serve --port $T_PORT &

then run this script again (TURNSTILE_ADDR=host:port to point it elsewhere).
EOF
    exit 1
fi

# Pin the Turnstile server (all its threads) to the server core, when we know its PID.
if [ -z "${TURNSTILE_PID:-}" ]; then
    TURNSTILE_PID=$(ss -Htlnp "sport = :$T_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
fi
if [ -n "${TURNSTILE_PID:-}" ]; then
    taskset -a -p -c "$SERVER_CPU" "$TURNSTILE_PID" >/dev/null
    echo "pinned Turnstile (pid $TURNSTILE_PID) to CPU $SERVER_CPU" >&2
else
    echo "could not find Turnstile's PID: it is not pinned (set TURNSTILE_PID)" >&2
fi

if port_open 127.0.0.1 "$REDIS_PORT"; then
    echo "port $REDIS_PORT is taken: set REDIS_PORT to a free port" >&2
    exit 1
fi
DATA=$(mktemp -d /tmp/redis-benchmark-compare.XXXXXX)
taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DATA" \
    --save '' --appendonly no --daemonize no >"$DATA/redis.log" 2>&1 &
REDIS_PID=$!
cleanup() {
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    port_open 127.0.0.1 "$REDIS_PORT" && break
    sleep 0.1
done
port_open 127.0.0.1 "$REDIS_PORT" || { echo "redis-server did not start:" >&2; cat "$DATA/redis.log" >&2; exit 1; }
echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') pid $REDIS_PID on 127.0.0.1:$REDIS_PORT, CPU $SERVER_CPU" >&2

# bench HOST PORT CONNS PIPELINE COMMAND... : prints requests/s.
bench() {
    local host=$1 port=$2 conns=$3 pipeline=$4
    shift 4
    local cmd=(taskset -c "$CLIENT_CPU" redis-benchmark -h "$host" -p "$port" -c "$conns" -n "$REQUESTS"
        -r 100000 -P "$pipeline" --csv "$@")
    echo "${cmd[*]}" >>"$DATA/commands"
    # The CSV's last line is the run: "COMMAND","rps",...; warnings go to stderr.
    "${cmd[@]}" 2>/dev/null | tail -n 1 | cut -d, -f2 | tr -d '"'
}

ROWS=()
for conns in 1 50; do
    for pipeline in 1 16; do
        echo "running: $conns connection(s), pipeline $pipeline" >&2
        t=$(bench "$T_HOST" "$T_PORT" "$conns" "$pipeline" ACQUIRE key:__rand_int__ REENTRANT TTL 1000 WAIT 0)
        r=$(bench 127.0.0.1 "$REDIS_PORT" "$conns" "$pipeline" SET key:__rand_int__ x NX PX 1000)
        ROWS+=("$conns $pipeline $t $r")
    done
done

echo
printf '%-12s %-9s %16s %16s %16s\n' connections pipeline 'turnstile req/s' 'redis req/s' 'turnstile/redis'
for row in "${ROWS[@]}"; do
    read -r conns pipeline t r <<<"$row"
    ratio=$(awk -v t="$t" -v r="$r" 'BEGIN { if (r > 0) printf "%.2fx", t / r; else print "-" }')
    printf '%-12s %-9s %16s %16s %16s\n' "$conns" "$pipeline" "$t" "$r" "$ratio"
done
echo
echo "commands run (-n $REQUESTS; servers on CPU $SERVER_CPU, redis-benchmark on CPU $CLIENT_CPU):"
sed 's/^/  /' "$DATA/commands"
