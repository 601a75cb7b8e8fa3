#!/usr/bin/env bash
# A Turnstile cluster on loopback in one command (docs/cluster.md).
#
#   scripts/cluster.sh start [N]    start N nodes (default 3), wait for a leader, show status
#   scripts/cluster.sh status       each node: PID, client and raft address, role, leader
#   scripts/cluster.sh stop         stop exactly the PIDs `start` recorded, remove the data
#   scripts/cluster.sh kill ID      kill -9 node ID (a crash, by hand)
#   scripts/cluster.sh restart ID   start node ID again with its recorded command line
#
# Node i (1..N) listens for clients on 127.0.0.1:$((7400 + i)) and for its peers on
# 127.0.0.1:$((17400 + i)), keeps its data in $CLUSTER_STATE/data/n<i>, and every node
# gets the same --cluster list naming all N. The state folder holds, per node:
#   nodes         one line per node: ID CLIENT_ADDR RAFT_ADDR
#   n<i>.pid      the PID of the running server (kept current by `restart` and by
#                 `loadgen failover`, which reads this folder)
#   n<i>.cmd      its command line, NUL-separated (taskset included with CLUSTER_CPU)
#   n<i>.log      its stdout and stderr (appended across restarts)
#
# Environment:
#   TURNSTILE_BIN    the server binary (default ${CARGO_TARGET_DIR:-target}/release/turnstile,
#                    built with `cargo build --release --bin turnstile` when missing)
#   CLUSTER_CPU      pin every node to this CPU list with taskset (e.g. CLUSTER_CPU=0)
#   CLUSTER_STATE    the state folder (default /tmp/turnstile-cluster)
#   CLUSTER_PORT     client port of node 1 (default 7401); node i: CLUSTER_PORT + i - 1
#   CLUSTER_RAFT_PORT  raft port of node 1 (default 17401)
#   CLUSTER_ARGS     more `turnstile serve` flags for every node, e.g. "--log-level warn"
#   CLUSTER_KEEP     set to 1: `stop` keeps the data (the next `start` comes back with it)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${CLUSTER_STATE:-/tmp/turnstile-cluster}"
case "$STATE" in /*) ;; *) STATE="$PWD/$STATE" ;; esac # recorded command lines are absolute
PORT0="${CLUSTER_PORT:-7401}"
RAFT0="${CLUSTER_RAFT_PORT:-17401}"
BIND=127.0.0.1

log() { printf 'cluster: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$BIND/$1") 2>/dev/null; }

alive() {
    # alive ID : node ID's recorded PID runs (a zombie, killed but not yet reaped, does not).
    local pid
    [ -f "$STATE/n$1.pid" ] || return 1
    pid=$(cat "$STATE/n$1.pid")
    kill -0 "$pid" 2>/dev/null && ! awk '{ exit !($3 == "Z") }' "/proc/$pid/stat" 2>/dev/null
}

node_ids() { [ -f "$STATE/nodes" ] && awk '{ print $1 }' "$STATE/nodes"; }

client_port() { awk -v id="$1" '$1 == id { n = split($2, a, ":"); print a[n] }' "$STATE/nodes"; }

binary() {
    local bin="${TURNSTILE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/turnstile}"
    if [ ! -x "$bin" ]; then
        if [ -n "${TURNSTILE_BIN:-}" ]; then
            log "TURNSTILE_BIN=$bin is not an executable"
            exit 1
        fi
        log "building $bin (cargo build --release --bin turnstile)"
        (cd "$ROOT" && cargo build --release --bin turnstile >&2)
    fi
    # An absolute path: the recorded command line must work from any directory.
    echo "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
}

info_replication() {
    # info_replication PORT : prints the node's `INFO replication` text (RESP over
    # /dev/tcp: redis-cli need not be installed). Fails when the node does not answer.
    local port=$1 header len body
    exec 3<>"/dev/tcp/$BIND/$port" || return 1
    printf '*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n' >&3
    if ! IFS= read -r -t 2 header <&3; then
        exec 3<&-
        return 1
    fi
    header=${header%$'\r'}
    case "$header" in
        '$'[0-9]*)
            len=${header#\$}
            LC_ALL=C IFS= read -r -t 2 -N "$len" body <&3 || true
            ;;
        *) body="error: $header" ;;
    esac
    exec 3<&-
    printf '%s\n' "${body//$'\r'/}"
}

field() {
    # field NAME : the value of `NAME:value` in INFO text on stdin.
    awk -F: -v k="$1" '$1 == k { sub(/^[^:]*:/, ""); print; exit }'
}

spawn_node() {
    # spawn_node ID : start node ID with its recorded command line, record its PID.
    local id=$1 cmd=()
    mapfile -d '' cmd <"$STATE/n$id.cmd"
    # nohup and taskset exec the server: $! is the server's own PID.
    nohup "${cmd[@]}" >>"$STATE/n$id.log" 2>&1 </dev/null &
    echo $! >"$STATE/n$id.pid"
}

wait_listening() {
    # wait_listening ID : up to 20 s for node ID to accept connections.
    local id=$1 port i
    port=$(client_port "$id")
    for i in $(seq 1 200); do
        port_open "$port" && return 0
        if ! alive "$id"; then
            log "node $id exited during start-up; its log: $STATE/n$id.log"
            tail -n 20 "$STATE/n$id.log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    log "node $id did not listen on $BIND:$port within 20 s; its log: $STATE/n$id.log"
    return 1
}

start() {
    local n=${1:-3} i bin list="" running=()
    case "$n" in '' | *[!0-9]* | 0) log "start N: N is a positive number"; exit 2 ;; esac
    for i in $(node_ids || true); do
        alive "$i" && running+=("$i")
    done
    if [ "${#running[@]}" -gt 0 ]; then
        log "nodes ${running[*]} already run (scripts/cluster.sh stop first)"
        status
        return 0
    fi
    bin=$(binary)
    mkdir -p "$STATE/data"
    : >"$STATE/nodes"
    for i in $(seq 1 "$n"); do
        list+="${list:+,}$i=$BIND:$((RAFT0 + i - 1))/$BIND:$((PORT0 + i - 1))"
        echo "$i $BIND:$((PORT0 + i - 1)) $BIND:$((RAFT0 + i - 1))" >>"$STATE/nodes"
    done
    for i in $(seq 1 "$n"); do
        local port=$((PORT0 + i - 1)) raft=$((RAFT0 + i - 1)) cmd=()
        if port_open "$port" || port_open "$raft"; then
            log "port $port or $raft is taken by a process this script did not start"
            stop
            exit 1
        fi
        [ -n "${CLUSTER_CPU:-}" ] && cmd+=(taskset -c "$CLUSTER_CPU")
        cmd+=("$bin" serve --bind "$BIND" --port "$port" --data-dir "$STATE/data/n$i"
            --node-id "$i" --raft-addr "$BIND:$raft" --cluster "$list")
        # shellcheck disable=SC2206
        [ -n "${CLUSTER_ARGS:-}" ] && cmd+=($CLUSTER_ARGS)
        printf '%s\0' "${cmd[@]}" >"$STATE/n$i.cmd"
        spawn_node "$i"
    done
    for i in $(seq 1 "$n"); do
        if ! wait_listening "$i"; then
            stop
            exit 1
        fi
        log "node $i started: pid $(cat "$STATE/n$i.pid"), $BIND:$((PORT0 + i - 1))${CLUSTER_CPU:+, cpu $CLUSTER_CPU}"
    done
    wait_leader 20 || log "no leader after 20 s; logs: $STATE/n*.log"
    status
}

wait_leader() {
    # wait_leader SECONDS : until some node says role:leader.
    local i id
    for i in $(seq 1 $(($1 * 10))); do
        for id in $(node_ids); do
            alive "$id" || continue
            if [ "$(info_replication "$(client_port "$id")" 2>/dev/null | field role)" = leader ]; then
                return 0
            fi
        done
        sleep 0.1
    done
    return 1
}

status() {
    local id addr raft info role leader
    if [ ! -s "$STATE/nodes" ]; then
        echo "no cluster in $STATE"
        return 0
    fi
    while read -r id addr raft; do
        if ! alive "$id"; then
            printf 'node %-3s stopped                  %-16s raft %s\n' "$id" "$addr" "$raft"
            continue
        fi
        if info=$(info_replication "${addr##*:}" 2>/dev/null); then
            role=$(field role <<<"$info")
            leader=$(field leader_addr <<<"$info")
            printf 'node %-3s running  pid %-8s %-16s raft %-16s role %-10s leader %s\n' \
                "$id" "$(cat "$STATE/n$id.pid")" "$addr" "$raft" "${role:-?}" "${leader:--}"
        else
            printf 'node %-3s running  pid %-8s %-16s raft %-16s (no answer to INFO)\n' \
                "$id" "$(cat "$STATE/n$id.pid")" "$addr" "$raft"
        fi
    done <"$STATE/nodes"
}

stop_pid() {
    # stop_pid ID : SIGTERM node ID's recorded PID, SIGKILL after 10 s.
    local id=$1 pid i
    [ -f "$STATE/n$id.pid" ] || return 0
    pid=$(cat "$STATE/n$id.pid")
    if alive "$id"; then
        kill "$pid"
        for i in $(seq 1 100); do
            alive "$id" || break
            sleep 0.1
        done
        if alive "$id"; then
            log "node $id (pid $pid) did not stop in 10 s: kill -9"
            kill -9 "$pid" 2>/dev/null || true
        fi
        log "node $id stopped (pid $pid)"
    fi
    rm -f "$STATE/n$id.pid"
}

stop() {
    local id
    for id in $(node_ids || true); do
        stop_pid "$id"
    done
    if [ "${CLUSTER_KEEP:-0}" != 1 ] && [ -d "$STATE" ]; then
        rm -rf "$STATE/data" "$STATE/nodes" "$STATE"/n*.cmd "$STATE"/n*.log
        rmdir "$STATE" 2>/dev/null || true
    fi
}

known() {
    if ! [ -f "$STATE/n$1.cmd" ]; then
        log "no node $1 in $STATE"
        exit 2
    fi
}

case "${1:-}" in
    start) start "${2:-3}" ;;
    stop) stop ;;
    status) status ;;
    kill)
        known "${2:-}"
        if alive "$2"; then
            kill -9 "$(cat "$STATE/n$2.pid")"
            for _ in $(seq 1 50); do
                alive "$2" || break
                sleep 0.1
            done
            log "node $2 killed (pid $(cat "$STATE/n$2.pid"))"
        else
            log "node $2 is not running"
        fi
        ;;
    restart)
        known "${2:-}"
        if alive "$2"; then
            stop_pid "$2"
        fi
        spawn_node "$2"
        wait_listening "$2"
        log "node $2 started: pid $(cat "$STATE/n$2.pid")"
        ;;
    *)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 2
        ;;
esac
