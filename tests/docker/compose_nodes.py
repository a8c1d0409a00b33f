#!/usr/bin/env python3
"""compose_nodes.py: the docker-compose cluster, read as plain processes would run it.

    compose_nodes.py CONFIG.yml ENV_EXAMPLE HELP.txt OUTDIR REDIS_PORT HTTP1,HTTP2,HTTP3 PEER1,PEER2,PEER3

CONFIG.yml is the output of `docker-compose -f docker/docker-compose.yml
--env-file .env.example config`, HELP.txt the output of `dsyncd --help`. Checks
what the compose file promises (Redis with appendonly yes, a redis-cli ping
healthcheck and a volume; node1..3 on host ports 8081..8083, started once Redis
is healthy, each with its own data volume; every dsyncd variable set; the
shared ones equal to .env.example), then writes OUTDIR/nodeN.env: each node's
environment with the container host names and ports mapped to 127.0.0.1 and
the given free ports, and its data directory under OUTDIR. Prints one
PASS/FAIL line per check; exits 1 when any failed.

Part of tests/docker/test_compose.sh.
"""
import os
import re
import sys

import yaml

from checks import check, failed


def env_file(path):
    out = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def main():
    config, example, help_txt, outdir, redis_port, http_ports, peer_ports = sys.argv[1:8]
    http_ports = [int(p) for p in http_ports.split(",")]
    peer_ports = [int(p) for p in peer_ports.split(",")]
    cfg = yaml.safe_load(open(config, encoding="utf-8"))
    example_env = env_file(example)
    help_vars = re.findall(r"^\s+(DSYNC_[A-Z0-9_]+)\s", open(help_txt, encoding="utf-8").read(), re.M)
    services = cfg.get("services", {})

    # ---- Redis -------------------------------------------------------------------
    redis = services.get("redis", {})
    cmd = redis.get("command") or []
    cmd = cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
    check("compose: a redis service from a redis:7 image", str(redis.get("image", "")).startswith("redis:7"),
          redis.get("image"))
    check("compose: redis runs with appendonly yes",
          "--appendonly" in cmd and cmd[cmd.index("--appendonly") + 1:][:1] == ["yes"], cmd)
    test = (redis.get("healthcheck") or {}).get("test") or []
    check("compose: redis healthcheck is redis-cli ping", "redis-cli" in " ".join(test) and "ping" in test, test)
    vols = [str(v) for v in redis.get("volumes") or []]
    named = set((cfg.get("volumes") or {}).keys())
    check("compose: redis keeps /data in a named volume",
          any(v.split(":")[0] in named and ":/data" in v for v in vols), vols)

    # ---- the nodes -------------------------------------------------------------------
    node_names = sorted(n for n in services if re.fullmatch(r"node\d+", n))
    check("compose: services node1, node2, node3", node_names == ["node1", "node2", "node3"], node_names)
    if node_names != ["node1", "node2", "node3"]:
        return 1
    # Container host name -> node index, for the address mapping.
    host_index = {}
    for i, name in enumerate(node_names):
        host_index[name] = i
        host_index[services[name].get("hostname", name)] = i
    redis_hosts = {"redis", redis.get("hostname", "redis")}
    shared = [v for v in help_vars if v not in
              ("DSYNC_NODE_ID", "DSYNC_HTTP_ADDR", "DSYNC_PEER_ADDR", "DSYNC_PEERS", "DSYNC_DATA_DIR",
               "DSYNC_REDIS_URL", "DSYNC_JOIN")]

    def map_addr(addr, what):
        host, _, port = addr.rpartition(":")
        if host in host_index:
            return f"127.0.0.1:{peer_ports[host_index[host]]}"
        raise ValueError(f"{what}: unknown host in {addr}")

    for i, name in enumerate(node_names):
        svc = services[name]
        env = {k: ("" if v is None else str(v)) for k, v in (svc.get("environment") or {}).items()}
        missing = [v for v in help_vars if v not in env]
        check(f"compose: {name} sets every variable of dsyncd --help", not missing, f"missing {missing}")
        unknown = [k for k in env if k.startswith("DSYNC_") and k not in help_vars]
        check(f"compose: {name} sets no variable dsyncd does not know", not unknown, unknown)
        differ = {k: (env.get(k), example_env.get(k)) for k in shared if env.get(k) != example_env.get(k)}
        check(f"compose: {name} passes the shared settings of the env file through", not differ,
              f"compose vs .env.example: {differ}")
        check(f"compose: {name} has DSYNC_NODE_ID {i + 1}", env.get("DSYNC_NODE_ID") == str(i + 1),
              env.get("DSYNC_NODE_ID"))
        ports = [str(p) for p in svc.get("ports") or []]
        want = f"{8081 + i}:{env.get('DSYNC_HTTP_ADDR', '').rpartition(':')[2]}"
        check(f"compose: {name} publishes its HTTP port on host port {8081 + i}",
              any(p.split("/")[0].endswith(want) for p in ports), f"ports {ports}, want *{want}")
        dep = (svc.get("depends_on") or {})
        cond = dep.get("redis", {}).get("condition") if isinstance(dep, dict) else None
        check(f"compose: {name} starts once redis is healthy", cond == "service_healthy", dep)
        data = env.get("DSYNC_DATA_DIR", "")
        vols = [str(v) for v in svc.get("volumes") or []]
        check(f"compose: {name} keeps DSYNC_DATA_DIR ({data}) in a named volume of its own",
              any(v.split(":")[0] in named and v.split(":")[1] == data and v.split(":")[0].startswith(name)
                  for v in vols), vols)

        # The same node as a plain process on loopback.
        try:
            run = dict(env)
            run["DSYNC_HTTP_ADDR"] = f"127.0.0.1:{http_ports[i]}"
            run["DSYNC_PEER_ADDR"] = map_addr(env["DSYNC_PEER_ADDR"], "DSYNC_PEER_ADDR")
            peers = []
            for item in env["DSYNC_PEERS"].split(","):
                pid, _, addr = item.partition("=")
                peers.append(f"{pid}={map_addr(addr, 'DSYNC_PEERS')}")
            run["DSYNC_PEERS"] = ",".join(peers)
            url = re.fullmatch(r"redis://([^:/]+):(\d+)(/\d+)?", env.get("DSYNC_REDIS_URL", ""))
            ok = bool(url) and url.group(1) in redis_hosts
            check(f"compose: {name} uses the redis service as DSYNC_REDIS_URL", ok, env.get("DSYNC_REDIS_URL"))
            if ok:
                run["DSYNC_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}{url.group(3) or ''}"
            run["DSYNC_DATA_DIR"] = os.path.join(outdir, name)
            os.makedirs(run["DSYNC_DATA_DIR"], exist_ok=True)
        except (KeyError, ValueError) as e:
            check(f"compose: {name}'s addresses map to loopback", False, repr(e))
            continue
        with open(os.path.join(outdir, f"{name}.env"), "w", encoding="utf-8") as f:
            for k in sorted(run):
                f.write(f"{k}={run[k]}\n")
    return 1 if failed() else 0


if __name__ == "__main__":
    sys.exit(main())
