#!/usr/bin/env python3
"""Checks docs/api_spec.yaml against itself, the route table and live dsyncd nodes.

    python3 tests/api/test_api_spec.py        # from the top of the tree, after `make`

1. The spec is valid OpenAPI 3.0 (openapi-spec-validator when installed; otherwise
   the official OpenAPI 3.0 JSON Schema, tests/api/openapi-3.0.schema.json, with
   jsonschema: Debian 12 packages jsonschema but not openapi-spec-validator), every
   $ref resolves, every example matches its schema, and the spec documents exactly
   the routes of server/main.c.
2. Four real dsyncd processes on free 127.0.0.1 ports (binary from $DSYNCD, default
   bin/dsyncd): "lone" (no DSYNC_PEERS, fault injection on, 4 KiB body limit, dead
   letters after 2 deliveries), "solo" (DSYNC_PEERS naming only itself) and
   "joiner" (DSYNC_JOIN=1), so that membership changes really commit, and
   "leaderless" (DSYNC_PEERS naming an absent second member: no quorum, so every
   write is 503 with Retry-After). Every endpoint and every
   status a single machine can provoke is exercised; each answer's status, content
   type, required headers (Allow, Retry-After) and body are checked against what
   the spec declares for that path, method and status, and each request body
   against the spec's request schema (accepted when the server accepts it,
   rejected when the server answers 400 invalid_field).

One PASS/FAIL line per check; exit status 1 when any check fails. Bounded: about
10 s normally, 55 s at most. Needs python3-yaml and python3-jsonschema; run as root
without them, it installs them with apt-get.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SPEC_PATH = Path(os.environ.get("DSYNC_API_SPEC", ROOT / "docs" / "api_spec.yaml"))
META_SCHEMA = HERE / "openapi-3.0.schema.json"
DEBIAN_PKGS = ["python3-yaml", "python3-jsonschema"]
SYSTEM_PY = "/usr/bin/python3"
TOTAL_BUDGET_S = 55
MAX_BODY = 4096


# ---- dependencies ----------------------------------------------------------------


def _have_deps(python):
    return subprocess.run([python, "-c", "import yaml, jsonschema"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=30).returncode == 0


def load_deps():
    try:
        import jsonschema  # noqa: F401
        import yaml  # noqa: F401
        return
    except ImportError as e:
        missing = str(e)
    if os.environ.get("DSYNC_API_TEST_REEXEC") != "1" and os.path.exists(SYSTEM_PY):
        env = dict(os.environ, DSYNC_API_TEST_REEXEC="1")
        same = os.path.realpath(sys.executable) == os.path.realpath(SYSTEM_PY)
        if not same and _have_deps(SYSTEM_PY):
            os.execve(SYSTEM_PY, [SYSTEM_PY] + sys.argv, env)
        if os.geteuid() == 0 and shutil.which("apt-get"):
            print(f"installing {' '.join(DEBIAN_PKGS)} ({missing})", flush=True)
            rc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + DEBIAN_PKGS,
                                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                                timeout=600).returncode
            if rc == 0 and _have_deps(SYSTEM_PY):
                os.execve(SYSTEM_PY, [SYSTEM_PY] + sys.argv, env)
    print(f"FAIL dependencies: {missing}; install with: apt-get install -y {' '.join(DEBIAN_PKGS)}")
    sys.exit(2)


load_deps()
import jsonschema  # noqa: E402
import yaml  # noqa: E402

# ---- reporting -------------------------------------------------------------------

FAILURES = []
N_CHECKS = 0


def check(name, ok, detail=""):
    global N_CHECKS
    N_CHECKS += 1
    if ok:
        print(f"PASS {name}", flush=True)
    else:
        FAILURES.append(f"{name}: {detail}")
        print(f"FAIL {name}: {detail}", flush=True)
    return ok


# ---- the spec --------------------------------------------------------------------

SPEC = None
SEEN = set()  # (path, method, status) observed live


def resolve(ref):
    if not ref.startswith("#/"):
        raise ValueError(f"external $ref {ref}")
    node = SPEC
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def deref(node):
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(node["$ref"])
    return node


_DROP = {"example", "examples", "nullable", "discriminator", "readOnly", "writeOnly", "xml",
         "externalDocs", "deprecated", "format", "description", "default"}


def to_jsonschema(node):
    """An OpenAPI 3.0 Schema Object as a draft-04 JSON Schema: $refs inlined,
    nullable turned into a null alternative, OpenAPI-only keywords dropped."""
    if isinstance(node, list):
        return [to_jsonschema(x) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return to_jsonschema(resolve(node["$ref"]))
    out = {}
    for k, v in node.items():
        if k in _DROP:
            continue
        if k == "properties":
            out[k] = {p: to_jsonschema(s) for p, s in v.items()}
        elif k in ("items", "additionalProperties", "not", "allOf", "oneOf", "anyOf"):
            out[k] = to_jsonschema(v)
        else:
            out[k] = v
    if node.get("nullable") and ("type" in out or "enum" in out):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


def schema_errors(schema, value):
    js = to_jsonschema(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"[:300]
            for e in jsonschema.Draft4Validator(js).iter_errors(value)]


def operation(path, method):
    return SPEC["paths"].get(path, {}).get(method.lower())


def request_schema(path, method):
    op = operation(path, method)
    rb = deref(op.get("requestBody")) if op else None
    if not rb:
        return None
    return rb["content"]["application/json"]["schema"]


def walk_refs(node, where, bad):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                try:
                    resolve(v)
                except (KeyError, ValueError, TypeError):
                    bad.append(f"{where}: {v}")
            else:
                walk_refs(v, f"{where}/{k}", bad)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk_refs(v, f"{where}/{i}", bad)


def media_examples(media):
    if "example" in media:
        yield "example", media["example"]
    for name, ex in (media.get("examples") or {}).items():
        yield name, deref(ex).get("value")


def check_spec():
    global SPEC
    try:
        with open(SPEC_PATH) as f:
            SPEC = yaml.safe_load(f)
    except Exception as e:  # noqa: BLE001
        check("spec: docs/api_spec.yaml parses as YAML", False, repr(e))
        return False
    check("spec: docs/api_spec.yaml parses as YAML", isinstance(SPEC, dict), "not a mapping")
    check("spec: declares OpenAPI 3.0.x", str(SPEC.get("openapi", "")).startswith("3.0."),
          f"openapi: {SPEC.get('openapi')!r}")
    try:
        import openapi_spec_validator as osv
    except ImportError:
        osv = None
    if osv is not None:
        fn = getattr(osv, "validate", None) or getattr(osv, "validate_spec")
        try:
            fn(SPEC)
            check("spec: valid OpenAPI 3.0 (openapi-spec-validator)", True)
        except Exception as e:  # noqa: BLE001
            check("spec: valid OpenAPI 3.0 (openapi-spec-validator)", False, str(e)[:800])
    else:
        with open(META_SCHEMA) as f:
            meta = json.load(f)
        errs = sorted(jsonschema.Draft4Validator(meta).iter_errors(SPEC), key=str)
        check("spec: valid against the OpenAPI 3.0 JSON Schema (openapi-spec-validator is not "
              "installed)", not errs, "; ".join(e.message[:200] for e in errs[:5]))
    bad = []
    walk_refs(SPEC, "#", bad)
    check("spec: every $ref resolves", not bad, ", ".join(bad[:10]))

    # Every example matches its schema; every schema converts.
    problems = []
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            rb = deref(op.get("requestBody")) or {}
            for ctype, media in (rb.get("content") or {}).items():
                for name, value in media_examples(media):
                    for e in schema_errors(media["schema"], value):
                        problems.append(f"{method.upper()} {path} request {name}: {e}")
            for status, resp in op["responses"].items():
                resp = deref(resp)
                for ctype, media in (resp.get("content") or {}).items():
                    for name, value in media_examples(media):
                        for e in schema_errors(media.get("schema", {}), value):
                            problems.append(f"{method.upper()} {path} {status} {name}: {e}")
    for name, resp in SPEC["components"].get("responses", {}).items():
        for ctype, media in (resp.get("content") or {}).items():
            for ex_name, value in media_examples(media):
                for e in schema_errors(media["schema"], value):
                    problems.append(f"components/responses/{name} {ex_name}: {e}")
    check("spec: every example matches its schema", not problems, "; ".join(problems[:8]))

    # The spec documents exactly the routes dsyncd serves.
    main_c = ROOT / "server" / "main.c"
    if main_c.exists():
        routes = set(re.findall(r'\{\s*"(/[^"]*)"\s*,\s*"([A-Z]+)"', main_c.read_text()))
        documented = {(p, m.upper()) for p, item in SPEC["paths"].items() for m in item
                      if m in ("get", "post", "put", "delete", "patch", "head", "options")}
        check("spec: documents exactly the routes of server/main.c",
              routes == documented and routes,
              f"undocumented {sorted(routes - documented)}, not served {sorted(documented - routes)}")
    return True


# ---- HTTP ------------------------------------------------------------------------


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"{self.status} {self.raw[:300]!r}"


def request(port, method, path, body=None, raw=None, timeout=15):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return Resp(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def raw_exchange(port, data, chunks=(), timeout=10):
    """Sends raw bytes (then optional chunks, stopping when the peer closes) and
    parses the one response that comes back before the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        for c in chunks:
            try:
                s.sendall(c)
            except OSError:
                break
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = s.recv(65536)
            if not got:
                break
            buf += got
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:] if ":" in ln]
        length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        while len(rest) < length:
            got = s.recv(65536)
            if not got:
                break
            rest += got
        return Resp(status, headers, rest[:length])
    finally:
        s.close()


def expect(name, resp, path, method, status, code=None, pred=None, req=None, req_valid=None):
    """Checks one live answer against the spec: status, content type, required
    headers, body schema; optionally the error code, a predicate on the body, and
    whether the spec's request schema accepts the request body that was sent."""
    problems = []
    if resp is None:
        return check(name, False, "no response")
    path = path.split("?", 1)[0]  # the spec's paths carry no query
    if resp.status != status:
        problems.append(f"status {resp.status}, expected {status}")
    op = operation(path, method)
    if op is None and path in SPEC["paths"]:
        # A method the path does not take (405): the path's one operation documents it.
        method, op = next(iter(SPEC["paths"][path].items()))
    spec_resp = None
    if op is None:
        # Not a documented operation (unknown path): errors use the Error schema.
        spec_resp = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    else:
        spec_resp = deref(op["responses"].get(str(resp.status)))
        if spec_resp is None:
            problems.append(f"status {resp.status} is not documented for {method} {path}")
        else:
            SEEN.add((path, method.lower(), str(resp.status)))
    if spec_resp is not None:
        content = spec_resp.get("content") or {}
        ctype = resp.headers.get("content-type", "")
        base = ctype.split(";")[0].strip().lower()
        if content and base not in content:
            problems.append(f"Content-Type {ctype!r}, spec has {list(content)}")
        elif content:
            media = content[base]
            if base == "application/json":
                if resp.json is None and resp.raw.strip() != b"null":
                    problems.append(f"body is not JSON: {resp.raw[:200]!r}")
                else:
                    problems += schema_errors(media.get("schema", {}), resp.json)
            else:
                try:
                    text = resp.raw.decode("utf-8")
                    problems += schema_errors(media.get("schema", {}), text)
                except UnicodeDecodeError:
                    problems.append("body is not UTF-8")
        for hname, h in (spec_resp.get("headers") or {}).items():
            h = deref(h)
            value = resp.headers.get(hname.lower())
            if value is None:
                if h.get("required"):
                    problems.append(f"header {hname} missing")
                continue
            hs = deref(h.get("schema", {}))
            v = value
            if hs.get("type") == "integer":
                try:
                    v = int(value)
                except ValueError:
                    problems.append(f"header {hname}: {value!r} is not an integer")
                    continue
            problems += [f"header {hname}: {e}" for e in schema_errors(h.get("schema", {}), v)]
    if code is not None:
        got = (resp.json or {}).get("error", {}).get("code") if isinstance(resp.json, dict) else None
        if got != code:
            problems.append(f"error code {got!r}, expected {code!r}")
    if pred is not None and not problems:
        try:
            msg = pred(resp.json if resp.json is not None else resp.raw)
        except Exception as e:  # noqa: BLE001
            msg = f"check raised {e!r}"
        if msg:
            problems.append(msg)
    if req_valid is not None:
        rs = request_schema(path, method)
        if rs is not None:
            errs = schema_errors(rs, req)
            if req_valid and errs:
                problems.append(f"spec's request schema rejects this accepted request: {errs[0]}")
            if not req_valid and not errs:
                problems.append("spec's request schema accepts this refused request")
    detail = "; ".join(problems[:6])
    if problems:
        detail += f" (response: {resp!r})"
    return check(name, not problems, detail)


def call(node, name, method, path, body, status, code=None, pred=None, req_valid=True, raw=None):
    """One request + expect(); returns the response."""
    try:
        resp = request(node.port, method, path, body=body, raw=raw)
    except Exception as e:  # noqa: BLE001
        check(name, False, f"request failed: {e!r}")
        return None
    expect(name, resp, path, method, status, code=code, pred=pred,
           req=body, req_valid=req_valid if raw is None and body is not None else None)
    return resp


# ---- nodes -----------------------------------------------------------------------


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Node:
    def __init__(self, name, binary, tmp, http_port, peer_port, env):
        self.name, self.port = name, http_port
        self.dir = Path(tmp) / name
        self.dir.mkdir()
        self.log_path = Path(tmp) / f"{name}.log"
        e = {k: v for k, v in os.environ.items() if not k.startswith("DSYNC_")}
        e.update({"DSYNC_NODE_ID": "1", "DSYNC_HTTP_ADDR": f"127.0.0.1:{http_port}",
                  "DSYNC_PEER_ADDR": f"127.0.0.1:{peer_port}", "DSYNC_DATA_DIR": str(self.dir / "data"),
                  "DSYNC_REDIS_URL": "", "DSYNC_PEERS": "", "DSYNC_HTTP_THREADS": "8"})
        e.update(env)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "--env", os.devnull], cwd=self.dir, env=e,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, want_ok, timeout=10):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode}"
            try:
                r = request(self.port, "GET", "/health", timeout=2)
                last = r
                if r.status == 200 and (not want_ok or (r.json or {}).get("status") == "ok"):
                    return None
            except OSError:
                pass
            time.sleep(0.05)
        return f"not ready after {timeout} s (last answer {last!r})"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # by PID
            try:
                self.proc.wait(timeout=15)  # ASan's exit checks are slow on a busy box
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def log_tail(self, n=15):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Background:
    """Runs one request in a thread (blocking acquire, long poll)."""

    def __init__(self, node, method, path, body):
        self.resp, self.err, self.elapsed = None, None, None
        self.t = threading.Thread(target=self._run, args=(node, method, path, body), daemon=True)
        self.t.start()

    def _run(self, node, method, path, body):
        t0 = time.monotonic()
        try:
            self.resp = request(node.port, method, path, body=body)
        except Exception as e:  # noqa: BLE001
            self.err = e
        self.elapsed = time.monotonic() - t0

    def join(self, timeout=10):
        self.t.join(timeout)
        return self.resp


# ---- scenarios -------------------------------------------------------------------


def state_summary(node):
    r = request(node.port, "GET", "/locks/state")
    if r.status != 200 or not isinstance(r.json, dict):
        return None
    return [(lk.get("key"), lk.get("mode"),
             [(h.get("client_id"), h.get("mode"), h.get("fencing_token")) for h in lk.get("holders", [])],
             [(w.get("client_id"), w.get("mode"), w.get("upgrade")) for w in lk.get("waiters", [])])
            for lk in r.json.get("locks", [])]


def lock_of(state_json, key):
    for lk in state_json.get("locks", []):
        if lk["key"] == key:
            return lk
    return None


def scenario_locks(a):
    ACQ, REL, ST = "/locks/acquire", "/locks/release", "/locks/state"
    tokens = []

    def granted(body):
        if body.get("status") != "granted":
            return f"status {body.get('status')!r}"
        if tokens and body["fencing_token"] <= tokens[-1]:
            return f"fencing token {body['fencing_token']} not above {tokens[-1]}"
        tokens.append(body["fencing_token"])
        return None

    def waiting(pos):
        return lambda b: None if b.get("position") == pos else f"position {b.get('position')}, expected {pos}"

    call(a, "acquire S: 200 granted", "POST", ACQ, {"key": "res", "client_id": "c1", "mode": "S"}, 200,
         pred=lambda b: granted(b) or (None if b["lease_ms"] <= 30000 else "lease over the default"))
    call(a, "acquire S by a second reader: 200 granted", "POST", ACQ,
         {"key": "res", "client_id": "c2", "mode": "S", "ttl_ms": 20000}, 200, pred=granted)
    call(a, "acquire X behind readers: 202 waiting", "POST", ACQ,
         {"key": "res", "client_id": "w", "mode": "X"}, 202, pred=waiting(1))
    call(a, "acquire S behind a waiting writer: 202 waiting (FIFO)", "POST", ACQ,
         {"key": "res", "client_id": "r3", "mode": "S"}, 202, pred=waiting(2))
    call(a, "acquire the other mode while waiting: 409 conflict", "POST", ACQ,
         {"key": "res", "client_id": "w", "mode": "S"}, 409, code="conflict")

    def state_ok(b):
        lk = lock_of(b, "res")
        if not lk:
            return "no lock 'res'"
        if [h["client_id"] for h in lk["holders"]] != ["c1", "c2"] or lk["mode"] != "S":
            return f"holders {lk['holders']}"
        if [w["client_id"] for w in lk["waiters"]] != ["w", "r3"]:
            return f"waiters {lk['waiters']}"
        if {"waiter": "w", "holder": "c1", "key": "res"} not in b["wait_for"]:
            return f"wait_for {b['wait_for']}"
        return None

    call(a, "locks/state: 200 holders, waiters in order, wait-for edges", "GET", ST, None, 200,
         pred=state_ok)
    call(a, "release a hold: 200 released", "POST", REL, {"key": "res", "client_id": "c1"}, 200,
         pred=lambda b: None if b["was_waiting"] is False else "was_waiting should be false")
    call(a, "release a waiting request: 200 withdrawn", "POST", REL, {"key": "res", "client_id": "r3"}, 200,
         pred=lambda b: None if b["was_waiting"] is True else "was_waiting should be true")

    bg = Background(a, "POST", ACQ, {"key": "res", "client_id": "w", "mode": "X", "wait_ms": 5000})
    time.sleep(0.3)
    call(a, "release the last reader: 200", "POST", REL, {"key": "res", "client_id": "c2"}, 200)
    r = bg.join(10)
    expect("blocking acquire (wait_ms) granted when the lock frees: 200", r, ACQ, "POST", 200,
           pred=granted, req={"key": "res", "client_id": "w", "mode": "X", "wait_ms": 5000}, req_valid=True)
    last = tokens[-1] if tokens else None
    call(a, "acquire again: 200 renews, same fencing token", "POST", ACQ,
         {"key": "res", "client_id": "w", "mode": "X"}, 200,
         pred=lambda b: None if b["fencing_token"] == last else f"token {b['fencing_token']} != {last}")

    t0 = time.monotonic()
    call(a, "blocking acquire whose wait_ms runs out: 202 waiting", "POST", ACQ,
         {"key": "res", "client_id": "q", "mode": "X", "wait_ms": 300}, 202,
         pred=lambda b: waiting(1)(b) or (None if time.monotonic() - t0 >= 0.25 else "answered before wait_ms"))
    bg = Background(a, "POST", ACQ, {"key": "res", "client_id": "q", "mode": "X", "wait_ms": 5000})
    time.sleep(0.3)
    call(a, "withdraw a request another call blocks on: 200", "POST", REL,
         {"key": "res", "client_id": "q"}, 200,
         pred=lambda b: None if b["was_waiting"] is True else "was_waiting should be true")
    expect("blocking acquire whose request is withdrawn: 404 not_found", bg.join(10), ACQ, "POST", 404,
           code="not_found")
    call(a, "release: 200", "POST", REL, {"key": "res", "client_id": "w"}, 200)

    # Deadlock: the acquire closing the cycle is refused and leaves no trace.
    call(a, "deadlock setup: A holds a", "POST", ACQ, {"key": "a", "client_id": "A", "mode": "X"}, 200, pred=granted)
    call(a, "deadlock setup: B holds b", "POST", ACQ, {"key": "b", "client_id": "B", "mode": "X"}, 200, pred=granted)
    call(a, "deadlock setup: A waits for b", "POST", ACQ, {"key": "b", "client_id": "A", "mode": "X"}, 202)
    call(a, "acquire closing a wait-for cycle: 409 deadlock", "POST", ACQ,
         {"key": "a", "client_id": "B", "mode": "X"}, 409,
         pred=lambda b: None if b.get("status") == "deadlock" and b.get("cycle") == ["B", "A"]
         else f"expected deadlock with cycle [B, A], got {b}")
    call(a, "locks/state after a deadlock: no trace of the refused request", "GET", ST, None, 200,
         pred=lambda b: None if lock_of(b, "a")["waiters"] == [] else f"waiters {lock_of(b, 'a')['waiters']}")
    for cl, key in (("A", "b"), ("A", "a"), ("B", "b")):
        call(a, f"release {cl} on {key}: 200", "POST", REL, {"key": key, "client_id": cl}, 200)

    # Upgrade S -> X.
    call(a, "acquire S (upgrade setup)", "POST", ACQ, {"key": "up", "client_id": "U", "mode": "S"}, 200, pred=granted)
    call(a, "upgrade S to X as the only holder: 200 with a new token", "POST", ACQ,
         {"key": "up", "client_id": "U", "mode": "X"}, 200, pred=granted)
    call(a, "acquire S (second upgrade setup, V1)", "POST", ACQ, {"key": "up2", "client_id": "V1", "mode": "S"}, 200)
    call(a, "acquire S (second upgrade setup, V2)", "POST", ACQ, {"key": "up2", "client_id": "V2", "mode": "S"}, 200)
    call(a, "upgrade with another reader: 202 waiting", "POST", ACQ,
         {"key": "up2", "client_id": "V1", "mode": "X"}, 202)
    call(a, "locks/state shows the upgrade", "GET", ST, None, 200,
         pred=lambda b: None if lock_of(b, "up2")["waiters"][:1] and lock_of(b, "up2")["waiters"][0]["upgrade"] is True
         else f"waiters {lock_of(b, 'up2')['waiters']}")

    # Leases end by themselves.
    call(a, "acquire with ttl_ms: 200 lease_ms within ttl", "POST", ACQ,
         {"key": "lease", "client_id": "L", "mode": "X", "ttl_ms": 200}, 200,
         pred=lambda b: None if 0 <= b["lease_ms"] <= 200 else f"lease_ms {b['lease_ms']}")
    time.sleep(0.6)
    call(a, "lease ran out: the lock is gone from locks/state", "GET", ST, None, 200,
         pred=lambda b: None if lock_of(b, "lease") is None else f"still there: {lock_of(b, 'lease')}")
    call(a, "release a lock not held: 404 not_found", "POST", REL, {"key": "zz", "client_id": "nobody"}, 404,
         code="not_found")
    call(a, "release a lapsed lease: 404 not_found", "POST", REL, {"key": "lease", "client_id": "L"}, 404,
         code="not_found")

    # Bad input: 400, and nothing changes.
    before = state_summary(a)
    bad_json = [("malformed JSON", b"{"), ("not JSON", b"key=a"), ("an array", b"[]"), ("a string", b'"x"'),
                ("empty body", b""), ("duplicate key", b'{"key":"k","client_id":"c","mode":"S","mode":"X"}')]
    for label, raw in bad_json:
        call(a, f"acquire with {label}: 400 invalid_json", "POST", ACQ, None, 400, code="invalid_json", raw=raw)
    call(a, "acquire with a \\u0000 in a string: 400 invalid_json that says NUL, not jansson's flag", "POST",
         ACQ, None, 400, code="invalid_json", raw=b'{"key":"a\\u0000b","client_id":"c","mode":"S"}',
         pred=lambda b: None if "must not contain NUL" in b["error"]["message"]
         and "JSON_ALLOW_NUL" not in b["error"]["message"] else f"body {b}")
    base = {"key": "k", "client_id": "c", "mode": "S"}
    bad_fields = [
        ("no key", {"client_id": "c", "mode": "S"}, True),
        ("key not a string", dict(base, key=1), True),
        ("empty key", dict(base, key=""), True),
        ("key of 257 bytes", dict(base, key="k" * 257), True),
        ("no client_id", {"key": "k", "mode": "S"}, True),
        ("client_id of 129 bytes", dict(base, client_id="c" * 129), True),
        ("client_id null", dict(base, client_id=None), True),
        ("no mode", {"key": "k", "client_id": "c"}, True),
        ("mode 's'", dict(base, mode="s"), True),
        ("mode 'SX'", dict(base, mode="SX"), True),
        ("ttl_ms 0", dict(base, ttl_ms=0), True),
        ("ttl_ms -1", dict(base, ttl_ms=-1), True),
        ("ttl_ms a string", dict(base, ttl_ms="5"), True),
        ("ttl_ms 1.5", dict(base, ttl_ms=1.5), True),
        ("wait_ms true", dict(base, wait_ms=True), True),
        ("ttl_ms over DSYNC_LOCK_MAX_TTL_MS", dict(base, ttl_ms=3600001), None),
        ("wait_ms over DSYNC_LOCK_MAX_WAIT_MS", dict(base, wait_ms=60001), None),
    ]
    for label, body, schema_rejects in bad_fields:
        call(a, f"acquire with {label}: 400 invalid_field", "POST", ACQ, body, 400, code="invalid_field",
             req_valid=None if schema_rejects is None else False)
    call(a, "release with no client_id: 400 invalid_field", "POST", REL, {"key": "k"}, 400,
         code="invalid_field", req_valid=False)
    call(a, "release with key null: 400 invalid_field", "POST", REL, {"key": None, "client_id": "c"}, 400,
         code="invalid_field", req_valid=False)
    after = state_summary(a)
    check("bad requests change no lock state", before is not None and before == after, f"{before} -> {after}")


def scenario_queue(a):
    ENQ, CON, ACK = "/queue/enqueue", "/queue/consume", "/queue/ack"
    msgs = [{"task": "resize", "id": 7}, "text", None, [1, 2.5, {"x": True}]]
    ids = []
    for i, m in enumerate(msgs):
        r = call(a, f"enqueue message {i + 1} ({type(m).__name__}): 200 with its id", "POST", ENQ,
                 {"topic": "jobs", "message": m}, 200,
                 pred=lambda b, i=i: None if b["id"] == i + 1 and b["topic"] == "jobs" else f"body {b}")
        ids.append(r.json["id"] if r is not None and r.json else None)
    r = call(a, "consume max 10: 200 with every message, in order, values intact", "POST", CON,
             {"topic": "jobs", "consumer_id": "w1", "max": 10, "visibility_ms": 30000}, 200,
             pred=lambda b: None if [m["message"] for m in b["messages"]] == msgs
             and [m["id"] for m in b["messages"]] == ids and all(m["deliveries"] == 1 for m in b["messages"])
             else f"messages {b['messages']}")
    receipts = [m["receipt"] for m in (r.json or {}).get("messages", [])] if r is not None else []
    call(a, "consume with none ready: 200 empty list", "POST", CON, {"topic": "jobs", "consumer_id": "w1"}, 200,
         pred=lambda b: None if b["messages"] == [] else f"messages {b['messages']}")
    for i, rc in enumerate(receipts):
        call(a, f"ack message {i + 1}: 200 acked", "POST", ACK, {"topic": "jobs", "receipt": rc}, 200)
    if receipts:
        call(a, "ack again: 404 not_found", "POST", ACK, {"topic": "jobs", "receipt": receipts[0]}, 404,
             code="not_found")
    call(a, "ack a malformed receipt: 404 not_found", "POST", ACK, {"topic": "jobs", "receipt": "zz"}, 404,
         code="not_found")
    call(a, "ack an unknown receipt: 404 not_found", "POST", ACK,
         {"topic": "jobs", "receipt": "00000000000000090000000000000000"}, 404, code="not_found")

    bg = Background(a, "POST", CON, {"topic": "lp", "consumer_id": "w2", "wait_ms": 5000})
    time.sleep(0.3)
    call(a, "enqueue to a long-polled topic: 200", "POST", ENQ, {"topic": "lp", "message": "wake"}, 200)
    r = bg.join(10)
    expect("long poll (wait_ms) answered when a message arrives: 200", r, CON, "POST", 200,
           pred=lambda b: None if [m["message"] for m in b["messages"]] == ["wake"] and bg.elapsed < 4
           else f"messages {b['messages']} after {bg.elapsed:.2f} s",
           req={"topic": "lp", "consumer_id": "w2", "wait_ms": 5000}, req_valid=True)

    # Visibility, redelivery, dead letter (DSYNC_QUEUE_MAX_DELIVERIES=2 on this node).
    call(a, "enqueue (dead-letter setup): 200", "POST", ENQ, {"topic": "dl", "message": {"n": 1}}, 200)
    r1 = call(a, "consume with visibility_ms 100: 200 deliveries 1", "POST", CON,
              {"topic": "dl", "consumer_id": "w3", "visibility_ms": 100}, 200,
              pred=lambda b: None if [m["deliveries"] for m in b["messages"]] == [1] else f"{b['messages']}")
    time.sleep(0.3)
    call(a, "unacked message comes back: 200 deliveries 2", "POST", CON,
         {"topic": "dl", "consumer_id": "w3", "visibility_ms": 100}, 200,
         pred=lambda b: None if [m["deliveries"] for m in b["messages"]] == [2] else f"{b['messages']}")
    if r1 is not None and r1.json and r1.json["messages"]:
        call(a, "ack with an earlier delivery's receipt: 404 not_found", "POST", ACK,
             {"topic": "dl", "receipt": r1.json["messages"][0]["receipt"]}, 404, code="not_found")
    time.sleep(0.3)
    call(a, "after max deliveries the topic is empty: 200 []", "POST", CON,
         {"topic": "dl", "consumer_id": "w3"}, 200,
         pred=lambda b: None if b["messages"] == [] else f"{b['messages']}")
    r = call(a, "consume the dead-letter topic: 200 with origin_id, origin_deliveries", "POST", CON,
             {"topic": "dl.dlq", "consumer_id": "w3", "max": 5}, 200,
             pred=lambda b: None if len(b["messages"]) == 1 and b["messages"][0]["origin_deliveries"] == 2
             and b["messages"][0]["origin_id"] == 1 and b["messages"][0]["message"] == {"n": 1}
             else f"{b['messages']}")
    if r is not None and r.json and r.json["messages"]:
        call(a, "ack a dead letter: 200", "POST", ACK,
             {"topic": "dl.dlq", "receipt": r.json["messages"][0]["receipt"]}, 200)

    bad = [
        (ENQ, "enqueue with no message", {"topic": "t"}, True),
        (ENQ, "enqueue with no topic", {"message": 1}, True),
        (ENQ, "enqueue with topic not a string", {"topic": 5, "message": 1}, True),
        (ENQ, "enqueue with a control character in topic", {"topic": "a\u0001b", "message": 1}, True),
        (ENQ, "enqueue with topic of 201 bytes", {"topic": "t" * 201, "message": 1}, True),
        (ENQ, "enqueue to dead letters' dead letters (t.dlq.dlq)", {"topic": "t.dlq.dlq", "message": 1}, None),
        (CON, "consume with no consumer_id", {"topic": "t"}, True),
        (CON, "consume with a control character in consumer_id", {"topic": "t", "consumer_id": "a\u0001"}, True),
        (CON, "consume with max 0", {"topic": "t", "consumer_id": "c", "max": 0}, True),
        (CON, "consume with max 101", {"topic": "t", "consumer_id": "c", "max": 101}, True),
        (CON, "consume with visibility_ms 0", {"topic": "t", "consumer_id": "c", "visibility_ms": 0}, True),
        (CON, "consume with visibility_ms over 12 h", {"topic": "t", "consumer_id": "c", "visibility_ms": 43200001}, True),
        (CON, "consume with wait_ms over DSYNC_QUEUE_MAX_WAIT_MS", {"topic": "t", "consumer_id": "c", "wait_ms": 20001}, None),
        (ACK, "ack with no receipt", {"topic": "t"}, True),
        (ACK, "ack with receipt of 65 bytes", {"topic": "t", "receipt": "0" * 65}, True),
        (ACK, "ack with a control character in topic", {"topic": "a\u0001", "receipt": "0" * 32}, True),
    ]
    for path, label, body, schema_rejects in bad:
        call(a, f"{label}: 400 invalid_field", "POST", path, body, 400, code="invalid_field",
             req_valid=None if schema_rejects is None else False)
    call(a, "enqueue with malformed JSON: 400 invalid_json", "POST", ENQ, None, 400, code="invalid_json",
         raw=b'{"topic":')

    PUT, GET = "/cache/put", "/cache/get"
    call(a, "cache get of an absent key: 404 not_found", "GET", GET + "?key=nothing", None, 404,
         code="not_found")
    call(a, "cache put: 200 stored, state M", "POST", PUT, {"key": "colour", "value": "red"}, 200,
         pred=lambda b: None if b == {"status": "stored", "key": "colour", "state": "M"} else f"body {b}")
    call(a, "cache get after the put: 200 with the value", "GET", GET + "?key=colour", None, 200,
         pred=lambda b: None if b["value"] == "red" and b["state"] == "M" else f"body {b}")
    call(a, "cache put with a ttl and a UTF-8 value: 200", "POST", PUT,
         {"key": "k\u00e9", "value": "\u00fcber", "ttl_ms": 60000}, 200)
    call(a, "cache get of a percent-encoded UTF-8 key: 200", "GET", GET + "?key=k%C3%A9", None, 200,
         pred=lambda b: None if b["value"] == "\u00fcber" and b["key"] == "k\u00e9" else f"body {b}")
    for label, body in [("no key", {"value": "v"}), ("value not a string", {"key": "k", "value": 5}),
                        ("no value", {"key": "k"}), ("key of 256 bytes", {"key": "k" * 256, "value": "v"}),
                        ("ttl_ms 0", {"key": "k", "value": "v", "ttl_ms": 0})]:
        call(a, f"cache put with {label}: 400 invalid_field", "POST", PUT, body, 400, code="invalid_field",
             req_valid=False)
    call(a, "cache put with no value: the message says it is required", "POST", PUT, {"key": "k"}, 400,
         code="invalid_field", req_valid=False,
         pred=lambda b: None if "\"value\" is required" in b["error"]["message"] else f"body {b}")
    call(a, "cache get with no key: 400 invalid_field", "GET", GET, None, 400, code="invalid_field")
    call(a, "cache get with a key of 256 bytes: 400 invalid_field", "GET", GET + "?key=" + "k" * 256, None, 400,
         code="invalid_field")
    call(a, "cache get with a non-UTF-8 key: 400 invalid_field", "GET", GET + "?key=%FF", None, 400,
         code="invalid_field")
    call(a, "bad cache puts changed nothing: 200 red", "GET", GET + "?key=colour", None, 200,
         pred=lambda b: None if b["value"] == "red" else f"body {b}")

    ST = "/queue/state"
    call(a, "queue state: 200, the local file store, this node the only owner, jobs held", "GET", ST, None,
         200, pred=lambda b: None if b["store"] == "file" and b["owners"] == [b["node_id"]]
         and any(t["topic"] == "jobs" and t["depth"] == 0 for t in b["topics"]) else f"body {b}")
    call(a, "queue state of a topic: 200 with its owner", "GET", ST + "?topic=jobs", None, 200,
         pred=lambda b: None if b["topic"] == "jobs" and b["owner"] == b["node_id"] else f"body {b}")
    call(a, "queue state with an empty topic: 400 invalid_field", "GET", ST + "?topic=", None, 400,
         code="invalid_field")
    call(a, "queue state with a control character in topic: 400 invalid_field", "GET", ST + "?topic=a%01b",
         None, 400, code="invalid_field")


def scenario_http(a):
    """405, 404, 413 and the framing errors, on every path where they apply."""
    for path, item in SPEC["paths"].items():
        for method in item:
            allowed = method.upper()
            for wrong in (["POST", "DELETE"] if allowed == "GET" else ["GET", "PUT", "PATCH"]):
                r = request(a.port, wrong, path)
                expect(f"{wrong} {path}: 405 with Allow: {allowed}", r, path, wrong, 405,
                       code="method_not_allowed",
                       pred=lambda _, r=r, al=allowed: None if r.headers.get("allow") == al
                       else f"Allow {r.headers.get('allow')!r}")
    r = request(a.port, "GET", "/no/such/endpoint")
    expect("unknown path: 404 not_found (Error body)", r, "/no/such/endpoint", "GET", 404, code="not_found")

    big = json.dumps({"pad": "x" * (MAX_BODY + 100)}).encode()
    for path, item in SPEC["paths"].items():
        if "post" not in item:
            continue
        try:
            r = request(a.port, "POST", path, raw=big)
        except OSError as e:
            check(f"POST {path} over DSYNC_MAX_BODY_BYTES: 413", False, repr(e))
            continue
        expect(f"POST {path} over DSYNC_MAX_BODY_BYTES: 413 payload_too_large", r, path, "POST", 413,
               code="payload_too_large",
               pred=lambda b, r=r: None if r.headers.get("connection", "").lower() == "close" else "connection not closed")
    P = "/locks/acquire"
    r = raw_exchange(a.port, f"POST {P} HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n".encode())
    expect("declared Content-Length over the limit: 413 before reading", r, P, "POST", 413, code="payload_too_large")
    r = raw_exchange(a.port, f"POST {P} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
                     chunks=[b"3e8\r\n" + b" " * 1000 + b"\r\n"] * 8 + [b"0\r\n\r\n"])
    expect("a chunked body: 411 length_required", r, P, "POST", 411, code="length_required")
    body = b'{"key":"k","client_id":"c","mode":"S"}'
    r = raw_exchange(a.port, f"POST {P} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    expect("two Content-Length headers: 400 invalid_request", r, P, "POST", 400, code="invalid_request")
    r = raw_exchange(a.port, f"POST {P} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                             f"Transfer-Encoding: chunked\r\n\r\n".encode() + body)
    expect("Content-Length with Transfer-Encoding: 400 invalid_request", r, P, "POST", 400, code="invalid_request")

    s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    try:
        s.sendall(f"POST {P} HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n".encode() + body)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            got = s.recv(65536)
            if not got:
                break
            data += got
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    r = Resp(int(lines[0].split()[1]) if lines and lines[0] else 0,
             [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:] if ":" in ln], rest)
    expect("body shorter than Content-Length: 400 invalid_request", r, P, "POST", 400, code="invalid_request")


PROM_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                         r'(-?[0-9.eE+-]+|NaN|[+-]Inf)( -?[0-9]+)?$')


def scenario_node(a):
    call(a, "health: 200 ok, leader of itself", "GET", "/health", None, 200,
         pred=lambda b: None if b["status"] == "ok" and b["role"] == "leader" and b["leader_id"] == 1
         and b["node_id"] == 1 and b["peers"] == [] and b["member"] is True else f"{b}")
    r = request(a.port, "GET", "/metrics")

    def metrics_ok(raw):
        text = raw.decode() if isinstance(raw, bytes) else json.dumps(raw)
        bad = [ln for ln in text.splitlines() if ln and not ln.startswith("# HELP ")
               and not ln.startswith("# TYPE ") and not PROM_SAMPLE.match(ln)]
        if bad:
            return f"not Prometheus text: {bad[:3]}"
        need = ['locks_acquire_total{mode="X",result="deadlock"} ', 'queue_enqueued_total{topic="jobs"} ',
                'http_requests_total{method="POST",path="/locks/acquire",code="409"} ']
        missing = [n for n in need if not any(ln.startswith(n) and float(ln.split()[-1]) >= 1
                                             for ln in text.splitlines())]
        return f"missing series {missing}" if missing else None

    expect("metrics: 200 Prometheus text", r, "/metrics", "GET", 200, pred=lambda _: metrics_ok(r.raw))
    check("metrics: Content-Type names version=0.0.4",
          "version=0.0.4" in r.headers.get("content-type", ""), r.headers.get("content-type"))

    F, M = "/admin/faults", "/admin/members"
    call(a, "faults: drop_peers [3]: 200", "POST", F, {"drop_peers": [3]}, 200,
         pred=lambda b: None if b["drop_peers"] == [3] else f"{b}")
    call(a, "faults: drop_peers [] heals: 200", "POST", F, {"drop_peers": []}, 200,
         pred=lambda b: None if b["drop_peers"] == [] else f"{b}")
    call(a, "faults: queue_fsync_delay_ms 0 heals: 200", "POST", F, {"queue_fsync_delay_ms": 0}, 200,
         pred=lambda b: None if b["queue_fsync_delay_ms"] == 0 and "drop_peers" not in b else f"{b}")
    for label, body in [("drop_peers not an array", {"drop_peers": "x"}), ("neither field", {}),
                        ("id 0", {"drop_peers": [0]}), ("id a string", {"drop_peers": ["1"]}),
                        ("17 ids", {"drop_peers": list(range(1, 18))}),
                        ("a delay as a string", {"queue_fsync_delay_ms": "1s"}),
                        ("a delay over 60000", {"queue_fsync_delay_ms": 60001}),
                        ("a good delay beside bad ids", {"queue_fsync_delay_ms": 5, "drop_peers": [0]})]:
        call(a, f"faults with {label}: 400 invalid_field", "POST", F, body, 400, code="invalid_field",
             req_valid=False)
    call(a, "members on a lone node (no DSYNC_PEERS): remove: 400 invalid_field", "POST", M,
         {"action": "remove", "id": 2}, 400, code="invalid_field", req_valid=True)
    call(a, "members on a lone node: add: 400 invalid_field", "POST", M,
         {"action": "add", "id": 2, "peer_addr": "127.0.0.1:1"}, 400, code="invalid_field", req_valid=True)
    for label, body in [("action 'drop'", {"action": "drop", "id": 2}), ("id 0", {"action": "remove", "id": 0}),
                        ("no id", {"action": "remove"}), ("id over 2^32-1", {"action": "remove", "id": 2 ** 32}),
                        ("add without peer_addr", {"action": "add", "id": 2})]:
        call(a, f"members with {label}: 400 invalid_field", "POST", M, body, 400, code="invalid_field",
             req_valid=False)


def scenario_solo(b, joiner_peer_port):
    """DSYNC_PEERS naming only this node: membership answers for real, and a
    second process started with DSYNC_JOIN=1 can be added and removed."""
    M = "/admin/members"
    addr = f"127.0.0.1:{joiner_peer_port}"
    call(b, "members: add a joining node: 200 once committed", "POST", M,
         {"action": "add", "id": 2, "peer_addr": addr}, 200,
         pred=lambda r: None if r == {"status": "ok", "action": "add", "id": 2} else f"{r}")
    call(b, "health lists the new member", "GET", "/health", None, 200,
         pred=lambda r: None if [p["id"] for p in r["peers"]] == [2] else f"peers {r['peers']}")
    call(b, "members: remove it again: 200 once committed", "POST", M, {"action": "remove", "id": 2}, 200,
         pred=lambda r: None if r == {"status": "ok", "action": "remove", "id": 2} else f"{r}")
    call(b, "members: remove a non-member: 404 not_found", "POST", M, {"action": "remove", "id": 2}, 404,
         code="not_found")
    call(b, "members: add a member already in: 409 conflict", "POST", M,
         {"action": "add", "id": 1, "peer_addr": "127.0.0.1:1"}, 409, code="conflict")
    call(b, "members: remove the last member: 400 invalid_field", "POST", M, {"action": "remove", "id": 1}, 400,
         code="invalid_field", req_valid=True)
    call(b, "members: add with a bad peer_addr: 400 invalid_field", "POST", M,
         {"action": "add", "id": 2, "peer_addr": "no-port"}, 400, code="invalid_field", req_valid=True)
    call(b, "faults with DSYNC_FAULT_INJECTION=0: 404 not_found", "POST", "/admin/faults", {"drop_peers": []},
         404, code="not_found")


def scenario_leaderless(c):
    """Two members configured, one running: no leader, every write is 503."""
    call(c, "health without a leader: 200 degraded, peer never heard (null)", "GET", "/health", None, 200,
         pred=lambda b: None if b["status"] == "degraded" and b["leader_id"] == 0 and len(b["peers"]) == 1
         and b["peers"][0]["last_heard_ms"] is None and b["peers"][0]["reachable"] is False else f"{b}")
    receipt = "0000000000000001" + "0" * 16
    for method, path, body in [
            ("POST", "/locks/acquire", {"key": "k", "client_id": "c", "mode": "X"}),
            ("POST", "/locks/release", {"key": "k", "client_id": "c"}),
            ("GET", "/locks/state", None),
            ("POST", "/queue/enqueue", {"topic": "t", "message": 1}),
            ("POST", "/queue/consume", {"topic": "t", "consumer_id": "c"}),
            ("POST", "/queue/ack", {"topic": "t", "receipt": receipt}),
            ("POST", "/admin/members", {"action": "remove", "id": 2})]:
        call(c, f"{method} {path} without a leader: 503 unavailable + Retry-After", method, path, body, 503,
             code="unavailable")


def main():
    binary = os.path.abspath(os.environ.get("DSYNCD", str(ROOT / "bin" / "dsyncd")))
    if not check_spec():
        return 1

    def on_alarm(signum, frame):
        raise TimeoutError(f"over the {TOTAL_BUDGET_S} s budget")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TOTAL_BUDGET_S)
    tmp = tempfile.mkdtemp(prefix="dsync-api-")
    nodes = []
    try:
        if not check(f"dsyncd binary exists ({binary})", os.access(binary, os.X_OK), "build it with make"):
            raise SystemExit(1)
        ports = free_ports(9)
        a = Node("lone", binary, tmp, ports[0], ports[1],
                 {"DSYNC_FAULT_INJECTION": "1", "DSYNC_MAX_BODY_BYTES": str(MAX_BODY),
                  "DSYNC_QUEUE_MAX_DELIVERIES": "2"})
        nodes.append(a)
        b = Node("solo", binary, tmp, ports[2], ports[3],
                 {"DSYNC_PEERS": f"1=127.0.0.1:{ports[3]}", "DSYNC_FAULT_INJECTION": "0"})
        nodes.append(b)
        c = Node("leaderless", binary, tmp, ports[4], ports[5],
                 {"DSYNC_PEERS": f"1=127.0.0.1:{ports[5]},2=127.0.0.1:{ports[6]}"})
        nodes.append(c)
        d = Node("joiner", binary, tmp, ports[7], ports[8],
                 {"DSYNC_NODE_ID": "2", "DSYNC_JOIN": "1",
                  "DSYNC_PEERS": f"1=127.0.0.1:{ports[3]},2=127.0.0.1:{ports[8]}"})
        nodes.append(d)
        ready = [(n, n.wait_ready(want_ok=n in (a, b))) for n in nodes]
        for n, err in ready:
            check(f"node '{n.name}' serves /health", err is None, err)
        if any(err for _, err in ready):
            raise SystemExit(1)
        scenario_locks(a)
        scenario_queue(a)
        scenario_http(a)
        scenario_node(a)
        scenario_solo(b, ports[8])
        scenario_leaderless(c)
        for n in nodes:
            if check(f"node '{n.name}' still running after the tests", n.proc.poll() is None,
                     f"exited with {n.proc.returncode}"):
                rc = n.stop()
                check(f"node '{n.name}' exits with 0 on SIGTERM", rc == 0, f"exit status {rc}")
    except SystemExit:
        pass
    except Exception as e:  # noqa: BLE001
        check("test run completes", False, repr(e))
    finally:
        signal.alarm(0)
        for n in nodes:
            n.stop()
        if FAILURES:
            for n in nodes:
                print(f"--- log of node '{n.name}' (last lines)\n{n.log_tail()}")
        shutil.rmtree(tmp, ignore_errors=True)

    documented = {(p, m, s) for p, item in SPEC["paths"].items() for m, op in item.items()
                  for s in op["responses"]}
    not_seen = sorted(documented - SEEN)
    print(f"covered {len(SEEN)} of {len(documented)} documented responses; not provoked here: "
          + ", ".join(f"{m.upper()} {p} {s}" for p, m, s in not_seen))
    if FAILURES:
        print(f"FAILED: {len(FAILURES)} of {N_CHECKS} checks")
        for f in FAILURES:
            print(f"  - {f}")
        # The summary lines scripts/run-tests.sh counts (cmocka's format).
        print(f"[  PASSED  ] {N_CHECKS - len(FAILURES)} test(s).")
        print(f"[  FAILED  ] {len(FAILURES)} test(s), listed above.")
        return 1
    print(f"OK: {N_CHECKS} checks passed")
    print(f"[  PASSED  ] {N_CHECKS} test(s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
