#!/usr/bin/env bash
# Peers as real services, for loadgen to measure Turnstile against on the same machine.
#
#   loadgen/peers.sh start     install what is missing, start every peer on loopback
#   loadgen/peers.sh stop      stop exactly the processes `start` started (by PID)
#   loadgen/peers.sh status    which peers run, with their PIDs and addresses
#   loadgen/peers.sh install [redis|etcd|etcd-build|all]
#                              only install Debian's packages (etcd-build: protoc and
#                              libprotobuf-dev, to build loadgen with `--features etcd`)
#
# Peers (all on 127.0.0.1, data in a temporary folder removed by `stop`):
#   redis        redis-server in memory            127.0.0.1:6379  (--save '' --appendonly no)
#   redis-fsync  redis-server, appendfsync always  127.0.0.1:6380
#   etcd         etcd (Debian's etcd-server, 3.4)  127.0.0.1:2379 client, 127.0.0.1:2380 peer
#   etcd-cluster three etcd members, one cluster  127.0.0.1:2381/2383/2385 client,
#                (processes etcd-c1..etcd-c3)      127.0.0.1:2382/2384/2386 peer;
#                loadgen: --etcd-cluster 127.0.0.1:2381,127.0.0.1:2383,127.0.0.1:2385
#
# Environment:
#   PEERS_CPU    pin every peer to this CPU with taskset (e.g. PEERS_CPU=0); unset: not pinned
#   PEERS_STATE  state folder with the PIDs and the data folder (default /tmp/turnstile-peers)
#   PEERS        which peers `start` starts (default "redis redis-fsync etcd etcd-cluster")
#
# Everything comes from Debian's packages through apt-get; nothing is installed by hand.
set -euo pipefail

STATE="${PEERS_STATE:-/tmp/turnstile-peers}"
PEERS="${PEERS:-redis redis-fsync etcd etcd-cluster}"
# Every process `start` may start, with its client port.
PROCS="redis:6379 redis-fsync:6380 etcd:2379 etcd-c1:2381 etcd-c2:2383 etcd-c3:2385"

log() { printf 'peers: %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
    # apt_install PACKAGE... : install the packages that are not installed yet.
    local missing=()
    local p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        "${sudo[@]}" apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

install() {
    case "${1:-all}" in
        redis) apt_install redis-server redis-tools ;;
        etcd) apt_install etcd-server ;;
        etcd-build) apt_install protobuf-compiler libprotobuf-dev ;;
        all) apt_install redis-server redis-tools etcd-server protobuf-compiler libprotobuf-dev ;;
        *) log "unknown package set: $1 (redis, etcd, etcd-build, all)"; exit 2 ;;
    esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pin() {
    if [ -n "${PEERS_CPU:-}" ]; then
        echo taskset -c "$PEERS_CPU"
    fi
}

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

wait_port() {
    # wait_port NAME PORT : up to 10 s for the peer to listen.
    local i
    for i in $(seq 1 100); do
        port_open "$2" && return 0
        if ! alive "$1"; then
            log "$1 exited during start-up; its log: $STATE/$1.log"
            tail -n 20 "$STATE/$1.log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    log "$1 did not listen on port $2 within 10 s; its log: $STATE/$1.log"
    return 1
}

wait_healthy() {
    # wait_healthy NAME PORT : up to 20 s for an etcd member to answer GET /health with
    # "health":"true" (it has a leader and a quorum).
    local i reply
    for i in $(seq 1 200); do
        reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$2" &&
            printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
            timeout 2 cat <&3) 2>/dev/null || true)
        case "$reply" in *'"health":"true"'*) return 0 ;; esac
        if ! alive "$1"; then
            log "$1 exited during start-up; its log: $STATE/$1.log"
            tail -n 20 "$STATE/$1.log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    log "$1 was not healthy within 20 s; its log: $STATE/$1.log"
    return 1
}

spawn() {
    # spawn NAME PORT CMD... : start CMD in the background, record its PID.
    local name=$1 port=$2
    shift 2
    if alive "$name"; then
        log "$name already runs (pid $(cat "$STATE/$name.pid"))"
        return 0
    fi
    if port_open "$port"; then
        log "port $port is taken by a process this script did not start: not starting $name"
        return 1
    fi
    # nohup and taskset exec the command: $! is the server's own PID.
    # shellcheck disable=SC2046
    nohup $(pin) "$@" >"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
    wait_port "$name" "$port"
    log "$name started: pid $(cat "$STATE/$name.pid"), 127.0.0.1:$port${PEERS_CPU:+, cpu $PEERS_CPU}"
}

start() {
    mkdir -p "$STATE"
    if [ ! -f "$STATE/datadir" ] || [ ! -d "$(cat "$STATE/datadir")" ]; then
        mktemp -d /tmp/turnstile-peers-data.XXXXXX >"$STATE/datadir"
    fi
    local data
    data=$(cat "$STATE/datadir")
    local p
    for p in $PEERS; do
        case "$p" in
            redis)
                install redis
                mkdir -p "$data/redis"
                spawn redis 6379 redis-server --bind 127.0.0.1 --port 6379 --dir "$data/redis" \
                    --save '' --appendonly no --daemonize no --protected-mode yes
                ;;
            redis-fsync)
                install redis
                mkdir -p "$data/redis-fsync"
                spawn redis-fsync 6380 redis-server --bind 127.0.0.1 --port 6380 --dir "$data/redis-fsync" \
                    --save '' --appendonly yes --appendfsync always --daemonize no --protected-mode yes
                ;;
            etcd)
                install etcd
                install etcd-build # to build loadgen --features etcd
                mkdir -p "$data/etcd"
                spawn etcd 2379 etcd --name loadgen --data-dir "$data/etcd/data" \
                    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
                    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
                    --initial-cluster loadgen=http://127.0.0.1:2380 --initial-cluster-state new \
                    --log-level warn
                ;;
            etcd-cluster)
                install etcd
                install etcd-build
                local m initial=""
                for m in 1 2 3; do
                    initial+="${initial:+,}etcd-c$m=http://127.0.0.1:$((2380 + 2 * m))"
                done
                mkdir -p "$data/etcd-cluster"
                for m in 1 2 3; do
                    # Each member binds its client port at once but serves only once the
                    # cluster has a quorum: start all three, then wait for health.
                    spawn "etcd-c$m" $((2379 + 2 * m)) etcd --name "etcd-c$m" \
                        --data-dir "$data/etcd-cluster/c$m" \
                        --listen-client-urls "http://127.0.0.1:$((2379 + 2 * m))" \
                        --advertise-client-urls "http://127.0.0.1:$((2379 + 2 * m))" \
                        --listen-peer-urls "http://127.0.0.1:$((2380 + 2 * m))" \
                        --initial-advertise-peer-urls "http://127.0.0.1:$((2380 + 2 * m))" \
                        --initial-cluster "$initial" --initial-cluster-token loadgen-etcd-cluster \
                        --initial-cluster-state new --log-level warn
                done
                for m in 1 2 3; do
                    wait_healthy "etcd-c$m" $((2379 + 2 * m))
                done
                ;;
            *) log "unknown peer: $p (redis, redis-fsync, etcd, etcd-cluster)"; exit 2 ;;
        esac
    done
    status
}

stop() {
    local p pid i
    for p in $PROCS; do
        p=${p%%:*}
        [ -f "$STATE/$p.pid" ] || continue
        pid=$(cat "$STATE/$p.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for i in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                log "$p (pid $pid) did not stop in 5 s: kill -9"
                kill -9 "$pid" 2>/dev/null || true
            fi
            log "$p stopped (pid $pid)"
        fi
        rm -f "$STATE/$p.pid"
    done
    if [ -f "$STATE/datadir" ]; then
        local data
        data=$(cat "$STATE/datadir")
        case "$data" in
            /tmp/turnstile-peers-data.*) rm -rf "$data" ;;
        esac
        rm -f "$STATE/datadir"
    fi
}

status() {
    local p port
    for p in $PROCS; do
        port=${p##*:}
        p=${p%%:*}
        if alive "$p"; then
            printf '%-12s running  pid %-8s 127.0.0.1:%s\n' "$p" "$(cat "$STATE/$p.pid")" "$port"
        else
            printf '%-12s stopped\n' "$p"
        fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    install) install "${2:-all}" ;;
    *)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 2
        ;;
esac
