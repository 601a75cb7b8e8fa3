#!/usr/bin/env python3
"""Smoke test of Turnstile's text mode with redis-py, as users run it.

Usage: redis_py_smoke.py HOST PORT

Runs the same checks twice against a started server: with redis-py's default settings
(`redis.Redis(host, port)`) and with `protocol=3` (the client sends HELLO 3 and reads
RESP3). Checks PING, ACQUIRE / INSPECT / RELEASE, a try-lock returning None, a WAIT that
runs out, NOTHELD, an unknown command that leaves the connection usable, and HELLO.
Exits 0 when everything matched, 1 on any mismatch (each one printed), 2 on bad usage.
"""

import sys
import uuid

import redis

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", flush=True)


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def fields(reply, label):
    """INSPECT / HELLO reply as a dict: RESP3 gives a dict, RESP2 a flat list of pairs."""
    if isinstance(reply, dict):
        return {text(k): v for k, v in reply.items()}
    check(isinstance(reply, list) and len(reply) % 2 == 0, f"{label}: flat pairs, got {reply!r}")
    return {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}


def field_names(reply):
    if isinstance(reply, dict):
        return [text(k) for k in reply.keys()]
    return [text(k) for k in reply[::2]]


def run(host, port, protocol):
    label = "default" if protocol is None else f"protocol={protocol}"
    kwargs = {} if protocol is None else {"protocol": protocol}
    holder = redis.Redis(host=host, port=port, socket_timeout=10, **kwargs)
    other = redis.Redis(host=host, port=port, socket_timeout=10, **kwargs)
    key = f"smoke:{label}:{uuid.uuid4().hex}"

    check(holder.ping() is True, f"{label}: PING -> PONG")
    # redis-py maps every PING reply through `== "PONG"`; read this one off the connection.
    try:
        conn = holder.connection_pool.get_connection()
    except TypeError:  # redis-py < 6 wants a command name
        conn = holder.connection_pool.get_connection("PING")
    try:
        conn.send_command("PING", "hello")
        echoed = conn.read_response()
    finally:
        holder.connection_pool.release(conn)
    check(echoed == b"hello", f"{label}: PING message, got {echoed!r}")

    token = holder.execute_command("ACQUIRE", key, "TTL", 10000)
    check(isinstance(token, int) and token > 0, f"{label}: ACQUIRE gives a token, got {token!r}")
    session = holder.execute_command("CLIENT", "ID")

    raw = other.execute_command("INSPECT", key)
    check(
        field_names(raw) == ["kind", "limit", "fencing", "holders", "waiters"],
        f"{label}: INSPECT field order, got {raw!r}",
    )
    info = fields(raw, f"{label}: INSPECT")
    check(text(info.get("kind")) == "lock", f"{label}: kind lock, got {info!r}")
    check(info.get("limit") == 0, f"{label}: limit 0, got {info!r}")
    check(info.get("fencing") == token, f"{label}: fencing is the token, got {info!r}")
    holders = info.get("holders") or []
    check(len(holders) == 1, f"{label}: one holder, got {holders!r}")
    if len(holders) == 1:
        h = holders[0]
        check(len(h) == 6, f"{label}: holder tuple of 6, got {h!r}")
        check(h[0] == session, f"{label}: holder is the session {session}, got {h!r}")
        check(text(h[1]) == "exclusive", f"{label}: mode exclusive, got {h!r}")
        check(h[2] == token, f"{label}: holder token, got {h!r}")
        check(0 < h[5] <= 10000, f"{label}: ttl_ms within the lease, got {h!r}")
    check(info.get("waiters") == [], f"{label}: no waiters, got {info!r}")

    busy = other.execute_command("ACQUIRE", key, "WAIT", 0)
    check(busy is None, f"{label}: try-lock while held -> None, got {busy!r}")
    busy = other.execute_command("ACQUIRE", key, "WAIT", 100)
    check(busy is None, f"{label}: WAIT 100 runs out -> None, got {busy!r}")

    check(holder.execute_command("RELEASE", key) == 1, f"{label}: RELEASE -> 1")
    try:
        holder.execute_command("RELEASE", key)
        check(False, f"{label}: a second RELEASE must fail")
    except redis.exceptions.ResponseError as e:
        check(str(e).startswith("NOTHELD"), f"{label}: NOTHELD, got {e!r}")
    check(other.execute_command("INSPECT", key) == [], f"{label}: INSPECT of a free key -> []")

    token2 = other.execute_command("ACQUIRE", key, "WAIT", 0)
    check(isinstance(token2, int) and token2 > token, f"{label}: next token larger, got {token2!r}")
    check(other.execute_command("RELEASE", key) == 1, f"{label}: RELEASE by the new holder")

    try:
        holder.execute_command("NOSUCHCOMMAND", "x")
        check(False, f"{label}: an unknown command must fail")
    except redis.exceptions.ResponseError as e:
        check("unknown command" in str(e), f"{label}: unknown command error, got {e!r}")
    check(holder.ping() is True, f"{label}: connection usable after an error")

    hello = holder.execute_command("HELLO", 3 if protocol == 3 else 2)
    if protocol == 3:
        check(isinstance(hello, dict), f"{label}: HELLO 3 is a map, got {hello!r}")
    hf = fields(hello, f"{label}: HELLO")
    check(text(hf.get("server")) == "turnstile", f"{label}: HELLO server, got {hello!r}")
    check(hf.get("proto") == (3 if protocol == 3 else 2), f"{label}: HELLO proto, got {hello!r}")
    check(hf.get("id") == session, f"{label}: HELLO id is the session, got {hello!r}")
    check(text(hf.get("mode")) in ("standalone", "cluster"), f"{label}: HELLO mode, got {hello!r}")
    check(text(hf.get("role")) in ("leader", "follower"), f"{label}: HELLO role, got {hello!r}")
    check("version" in hf, f"{label}: HELLO version, got {hello!r}")

    holder.close()
    other.close()


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, port = sys.argv[1], int(sys.argv[2])
    for protocol in (None, 3):
        try:
            run(host, port, protocol)
        except Exception as e:  # a crash is a mismatch too
            FAILURES.append(f"protocol={protocol}: {type(e).__name__}: {e}")
            print(f"FAIL: protocol={protocol}: {type(e).__name__}: {e}", flush=True)
    if FAILURES:
        print(f"redis-py smoke: {len(FAILURES)} mismatch(es)", flush=True)
        return 1
    print(f"redis-py smoke: OK (redis-py {redis.__version__})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
