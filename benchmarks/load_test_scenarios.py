"""load_test_scenarios.py: Locust load scenarios for a dsyncd cluster.

One command, headless and bounded (from the top of the tree, `make run` going):

    locust -f benchmarks/load_test_scenarios.py --headless -u 30 -r 10 -t 60s --only-summary

Locust prints each request type's count, failures, latencies and requests/s
at the end; this file adds one line "dsync-locust: ..." with the totals, and
Locust exits 1 when any request failed. Needs Debian's python3-locust (2.12;
scripts/deps.sh installs it). tests/load/test_locust_smoke.sh runs it for a
few seconds against a fresh three-node cluster as part of `make test`.

Environment:
  DSYNC_LOCUST_HOSTS  comma-separated node URLs (default: the three `make run`
                      nodes, http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083);
                      every user picks its requests' nodes from all of them, so
                      followers forward to the leader and non-owners to the owner
  DSYNC_LOCUST_CACHE  0 leaves out the cache traffic (POST /cache/put,
                      GET /cache/get); on by default
  DSYNC_LOCUST_KEYS   lock keys shared by all users (default 8): contention
  DSYNC_LOCUST_TOPICS queue topics shared by all users (default 4)

What a user does, by weight:
  locks (4)  acquire X on a shared key (wait_ms 2000), check the fencing token,
             release. A grant must carry a fencing token larger than the
             token of every grant on that key released before the acquire was
             sent (tokens come from one replicated counter); a smaller one is
             a failure ("fencing token went backwards"). 202 (still waiting
             after wait_ms) is not a failure: the user withdraws with a release.
  S locks (1) acquire S on a shared key without waiting, release
  queue (4)  enqueue a message on a shared topic through one node, consume
             through another, ack every receipt through a third; an ack that
             is refused is a failure, an empty consume is not (other users
             took the messages)
  cache (3, unless DSYNC_LOCUST_CACHE=0)  put a value under the user's own
             key, then get it through another node: anything but the value
             just put is a failure (after a PUT returns no node may answer
             the old value)
"""
import itertools
import json
import os
import random
import threading
import uuid

from locust import HttpUser, events, task

HOSTS = [h.strip().rstrip("/") for h in os.environ.get(
    "DSYNC_LOCUST_HOSTS", "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083").split(",")
    if h.strip()]
CACHE = os.environ.get("DSYNC_LOCUST_CACHE", "1") == "1"
N_KEYS = int(os.environ.get("DSYNC_LOCUST_KEYS", "8"))
N_TOPICS = int(os.environ.get("DSYNC_LOCUST_TOPICS", "4"))
if not HOSTS:
    raise SystemExit("DSYNC_LOCUST_HOSTS names no node")
RUN = uuid.uuid4().hex[:8]  # keys and topics of this run only

# The largest fencing token of a grant released so far, per key (this process).
released_token = {}
released_lock = threading.Lock()
user_numbers = itertools.count()


def _json(resp):
    try:
        return resp.json()
    except ValueError:
        return None


class DsyncUser(HttpUser):
    host = HOSTS[0]

    def on_start(self):
        self.number = next(user_numbers)
        self.client_id = f"locust-{RUN}-{self.number}"
        self.cache_key = f"locust-{RUN}-{self.number}"
        self.cache_version = 0

    def node(self):
        return random.choice(HOSTS)

    def post(self, name, body, ok=(200,)):
        """POST through a random node; marks the request failed unless its status is in ok."""
        with self.client.post(f"{self.node()}{name}", data=json.dumps(body), name=name, catch_response=True,
                              headers={"Content-Type": "application/json"}) as r:
            if r.status_code in ok:
                r.success()
            else:
                r.failure(f"{r.status_code} {r.text[:200]}")
            return r.status_code, _json(r)

    # ---- locks -----------------------------------------------------------------

    def lock_cycle(self, mode, wait_ms):
        key = f"load-{RUN}-{random.randrange(N_KEYS)}"
        with released_lock:
            floor = released_token.get(key, 0)
        body = {"key": key, "client_id": self.client_id, "mode": mode, "ttl_ms": 10000}
        if wait_ms:
            body["wait_ms"] = wait_ms
        with self.client.post(f"{self.node()}/locks/acquire", data=json.dumps(body), name=f"/locks/acquire {mode}",
                              catch_response=True, headers={"Content-Type": "application/json"}) as r:
            b = _json(r) or {}
            token = b.get("fencing_token")
            if r.status_code == 200 and b.get("status") == "granted":
                if not isinstance(token, int) or token <= floor:
                    r.failure(f"fencing token went backwards on {key}: {token} after {floor}")
                else:
                    r.success()
            elif r.status_code == 202:
                r.success()  # still queued: withdraw below
                token = None
            else:
                r.failure(f"{r.status_code} {r.text[:200]}")
                token = None
        status, _ = self.post("/locks/release", {"key": key, "client_id": self.client_id})
        if status == 200 and token:
            with released_lock:
                released_token[key] = max(released_token.get(key, 0), token)

    @task(4)
    def exclusive_lock(self):
        self.lock_cycle("X", 2000)

    @task(1)
    def shared_lock(self):
        self.lock_cycle("S", 0)

    # ---- queue -----------------------------------------------------------------

    @task(4)
    def queue_cycle(self):
        topic = f"load-{RUN}-{random.randrange(N_TOPICS)}"
        self.post("/queue/enqueue", {"topic": topic, "message": {"from": self.client_id, "n": random.random()}})
        status, b = self.post("/queue/consume", {"topic": topic, "consumer_id": self.client_id, "max": 4,
                                                 "visibility_ms": 30000})
        for m in (b or {}).get("messages", []) if status == 200 else []:
            self.post("/queue/ack", {"topic": topic, "receipt": m.get("receipt")})

    # ---- cache (off with DSYNC_LOCUST_CACHE=0) ------------------------------------

    @(task(3) if CACHE else (lambda f: f))
    def cache_cycle(self):
        self.cache_version += 1
        value = f"{self.client_id}:{self.cache_version}"
        status, _ = self.post("/cache/put", {"key": self.cache_key, "value": value})
        if status != 200:
            return
        with self.client.get(f"{self.node()}/cache/get", params={"key": self.cache_key}, name="/cache/get",
                             catch_response=True) as r:
            b = _json(r) or {}
            if r.status_code != 200:
                r.failure(f"{r.status_code} {r.text[:200]}")
            elif b.get("value") != value:
                r.failure(f"stale read: {b.get('value')!r} after a PUT of {value!r} returned")
            else:
                r.success()


@events.quitting.add_listener
def _summary(environment, **_kw):
    """One line with the totals, for people and for tests/load/test_locust_smoke.sh."""
    total = environment.stats.total
    secs = max(total.last_request_timestamp - total.start_time, 1e-9) if total.num_requests else 0.0
    rps = total.num_requests / secs if secs else 0.0
    print(f"dsync-locust: requests={total.num_requests} failures={total.num_failures} "
          f"rps={rps:.1f} hosts={','.join(HOSTS)} cache={'on' if CACHE else 'off'}", flush=True)
    for name, entry in sorted(environment.stats.entries.items()):
        print(f"dsync-locust:   {name[1]} {name[0]}: {entry.num_requests} requests, {entry.num_failures} failures, "
              f"{entry.total_rps:.1f}/s, p50 {entry.get_response_time_percentile(0.5):.0f} ms, "
              f"p99 {entry.get_response_time_percentile(0.99):.0f} ms", flush=True)

