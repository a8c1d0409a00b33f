#!/usr/bin/env python3
"""seed_scenarios.py: DESIGN.md's seed scenarios against a running three-node cluster.

    seed_scenarios.py http://127.0.0.1:P1 http://127.0.0.1:P2 http://127.0.0.1:P3

Locks: three S holders through three nodes, an X request queued behind them
(202) and an S request queued behind the X (FIFO), /locks/state showing holders,
waiters and wait-for edges, the X granted by itself once the readers leave,
with a fencing token above theirs; a deadlock refused with 409 and its cycle,
leaving no trace in the queues; a release of a lock not held is 404; a lease
that runs out grants a blocked waiter (wait_ms). Queue: enqueue through node 1,
consume through node 2, ack through node 3, nothing left, a second ack is 404.
Each request and answer crosses nodes, so followers forward to the leader and
non-owners to the topic's owner. One PASS/FAIL line per check; exit status 1
on any failure. Every request has a timeout; the whole run is bounded (~3 s).

Part of tests/docker/test_compose.sh.
"""
import json
import sys
import time
import urllib.error
import urllib.request

from checks import check, failed


def call(base, method, path, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"null")
        except ValueError:
            return e.code, raw.decode(errors="replace")


def acquire(base, key, client, mode, **extra):
    return call(base, "POST", "/locks/acquire", dict({"key": key, "client_id": client, "mode": mode}, **extra))


def release(base, key, client):
    return call(base, "POST", "/locks/release", {"key": key, "client_id": client})


def locks(nodes):
    n1, n2, n3 = nodes
    tokens = {}
    for client, node in (("c1", n1), ("c2", n2), ("c3", n3)):
        st, b = acquire(node, "res", client, "S")
        check(f"locks: {client} takes S on res through {node}: 200 granted",
              st == 200 and b.get("status") == "granted", f"{st} {b}")
        tokens[client] = b.get("fencing_token", 0) if isinstance(b, dict) else 0
    st, b = acquire(n2, "res", "w", "X")
    check("locks: writer w queues behind the readers: 202 waiting at position 1",
          st == 202 and b.get("status") == "waiting" and b.get("position") == 1, f"{st} {b}")
    st, b = acquire(n3, "res", "c4", "S")
    check("locks: a later reader c4 queues behind the writer (no starvation): 202 at position 2",
          st == 202 and b.get("status") == "waiting" and b.get("position") == 2, f"{st} {b}")
    st, b = call(n1, "GET", "/locks/state")
    text = json.dumps(b)
    check("locks: /locks/state through node 1 shows res with its holders and waiters",
          st == 200 and all(c in text for c in ("c1", "c2", "c3", "w", "c4")), f"{st} {text[:300]}")
    for client, node in (("c1", n3), ("c2", n1), ("c3", n2)):
        st, b = release(node, "res", client)
        check(f"locks: {client} releases through {node}: 200 released",
              st == 200 and b.get("status") == "released", f"{st} {b}")
    st, b = acquire(n1, "res", "w", "X")
    token_w = b.get("fencing_token", 0) if isinstance(b, dict) else 0
    check("locks: the writer was granted by itself; acquiring again answers 200 granted",
          st == 200 and b.get("status") == "granted", f"{st} {b}")
    check("locks: the writer's fencing token is larger than every reader's",
          token_w > max(tokens.values()), f"w {token_w}, readers {tokens}")
    st, b = acquire(n2, "res", "c4", "S")
    check("locks: c4 still waits while the writer holds X", st == 202, f"{st} {b}")
    release(n3, "res", "w")
    st, b = acquire(n2, "res", "c4", "S")
    check("locks: c4 granted once the writer leaves", st == 200 and b.get("status") == "granted", f"{st} {b}")
    release(n1, "res", "c4")

    # Deadlock: A holds a, B holds b, A waits for b, B asks for a.
    acquire(n1, "a", "A", "X")
    acquire(n2, "b", "B", "X")
    st, b = acquire(n3, "b", "A", "X")
    check("locks: A waits for b held by B: 202", st == 202, f"{st} {b}")
    st, b = acquire(n1, "a", "B", "X")
    check("locks: B asking for a closes a cycle: 409 deadlock naming A and B",
          st == 409 and b.get("status") == "deadlock" and sorted(b.get("cycle", [])) == ["A", "B"], f"{st} {b}")
    st, b = call(n2, "GET", "/locks/state")
    a_lock = [lk for lk in b.get("locks", []) if lk.get("key") == "a"] if isinstance(b, dict) else []
    check("locks: the refused request left no trace in a's wait queue",
          st == 200 and a_lock and "B" not in json.dumps(a_lock[0].get("waiters", [])), f"{st} {a_lock}")
    for key, client, node in (("b", "A", n2), ("a", "A", n3), ("b", "B", n1)):
        release(node, key, client)
    st, b = release(n2, "a", "nobody")
    check("locks: releasing a lock not held: 404", st == 404, f"{st} {b}")

    # A lease that runs out grants the next in line; y blocks up to 5 s.
    acquire(n1, "job", "x", "X", ttl_ms=500)
    t0 = time.monotonic()
    st, b = acquire(n2, "job", "y", "X", wait_ms=5000, ttl_ms=5000)
    waited = time.monotonic() - t0
    check("locks: x's 500 ms lease ends and y, blocked with wait_ms, is granted",
          st == 200 and b.get("status") == "granted" and waited < 4.5, f"{st} {b} after {waited:.2f} s")
    release(n2, "job", "y")


def queue(nodes):
    n1, n2, n3 = nodes
    msg = {"task": "resize", "id": 7}
    st, b = call(n1, "POST", "/queue/enqueue", {"topic": "jobs", "message": msg})
    check("queue: enqueue through node 1: 200 with an id", st == 200 and isinstance(b.get("id"), int), f"{st} {b}")
    mid = b.get("id") if isinstance(b, dict) else None
    st, b = call(n2, "POST", "/queue/consume",
                 {"topic": "jobs", "consumer_id": "w1", "max": 10, "visibility_ms": 30000})
    got = b.get("messages", []) if isinstance(b, dict) else []
    check("queue: consume through node 2 gets that message once, delivery 1",
          st == 200 and len(got) == 1 and got[0].get("id") == mid and got[0].get("message") == msg
          and got[0].get("deliveries") == 1, f"{st} {b}")
    receipt = got[0].get("receipt") if got else "0" * 32
    st, b = call(n3, "POST", "/queue/ack", {"topic": "jobs", "receipt": receipt})
    check("queue: ack through node 3: 200", st == 200, f"{st} {b}")
    st, b = call(n1, "POST", "/queue/consume", {"topic": "jobs", "consumer_id": "w2"})
    check("queue: nothing left to consume (through node 1)", st == 200 and b.get("messages") == [], f"{st} {b}")
    st, b = call(n2, "POST", "/queue/ack", {"topic": "jobs", "receipt": receipt})
    check("queue: a second ack of the same receipt: 404", st == 404, f"{st} {b}")


def main():
    nodes = [u.rstrip("/") for u in sys.argv[1:4]]
    try:
        locks(nodes)
        queue(nodes)
    except Exception as e:  # noqa: BLE001  (a refused connection, a timeout, a non-JSON body)
        check("seed scenarios run to the end", False, repr(e))
    return 1 if failed() else 0


if __name__ == "__main__":
    sys.exit(main())
