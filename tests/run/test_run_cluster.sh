#!/usr/bin/env bash
# test_run_cluster.sh: scripts/run-cluster.sh, what `make run` runs, as a
# new user meets it: three nodes (local queue files, no Redis) on free
# consecutive loopback ports and a temp data dir; the script must say
# "ready" within 30 s, after which every node answers a cache PUT and a
# lock acquire at once (200, not 503); a node killed with -9 is reported
# while the others serve on, and ONLY=2 starts it again into the cluster;
# then SIGINT to each process group, as Ctrl-C sends, must stop every
# process within 15 s.
# Usage: tests/run/test_run_cluster.sh    (after make: it runs bin/dsyncd)
# shellcheck disable=SC2317  # the check functions below run through check()
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsync-run.XXXXXX")
# shellcheck source=tests/lib/checks.sh
source "$top/tests/lib/checks.sh"
out=$tmp/run.out
group=""
group2=""
cleanup() {
    [ -n "$group" ] && kill -KILL -- "-$group" 2>/dev/null
    [ -n "$group2" ] && kill -KILL -- "-$group2" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# Six consecutive free ports (HTTP base..base+2, peers base+3..base+5).
base=$(python3 - <<'PY'
import random, socket
for _ in range(200):
    b = random.randint(20000, 60000)
    socks = []
    try:
        for p in range(b, b + 6):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(b); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
PY
)
[ -n "$base" ] || { fail "found six consecutive free ports"; print_totals "run-cluster"; exit 1; }

cd "$top" || exit 1
# In its own session, as a terminal's foreground job is, and with SIGINT
# not ignored: a shell ignores it in the jobs it starts in the background,
# and a script cannot trap a signal ignored when it started.
# (exec: $! must be the process that becomes the session's leader.)
in_session() {
    exec python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp("setsid", ["setsid"] + sys.argv[1:])' "$@"
}
in_session env REDIS=0 DATA_ROOT="$tmp/data" BASE_HTTP_PORT="$base" BASE_PEER_PORT=$((base + 3)) \
    scripts/run-cluster.sh >"$out" 2>&1 &
group=$!

said_ready() { grep -q '^  ready: every node answers (leader: node [123])' "$out"; }
for _ in $(seq 300); do
    said_ready && break
    kill -0 "$group" 2>/dev/null || break
    sleep 0.1
done
check "run-cluster.sh says ready, naming the leader, within 30 s" said_ready

answers_at_once() {
    local i port code
    for i in 0 1 2; do
        port=$((base + i))
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -XPOST "http://127.0.0.1:$port/cache/put" \
            -d "{\"key\":\"k$i\",\"value\":\"v\"}")
        [ "$code" = 200 ] || { echo "node $((i + 1)): cache put $code"; return 1; }
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -XPOST "http://127.0.0.1:$port/locks/acquire" \
            -d "{\"key\":\"l$i\",\"client_id\":\"c\",\"mode\":\"X\"}")
        [ "$code" = 200 ] || { echo "node $((i + 1)): lock acquire $code"; return 1; }
    done
}
check "once ready, every node answers a cache PUT and a lock acquire with 200" answers_at_once

# The README's failover: kill a node, the others keep serving, and
# ONLY=2 (make run-node N=2) starts it again into the same cluster.
node2=$(sed -n 's/^  node 2: pid \([0-9]*\),.*/\1/p' "$out")
said_pid() { [ -n "$node2" ] && tr '\0' '\n' <"/proc/$node2/environ" | grep -qx DSYNC_NODE_ID=2; }
check "run-cluster.sh names node 2's pid" said_pid
[ -n "$node2" ] && kill -KILL "$node2" 2>/dev/null
said_exited() {
    local _
    for _ in $(seq 100); do
        grep -q '^libdsync: node 2 exited (status 137); 2 process(es) still running' "$out" &&
            grep -q 'make run-node N=2' "$out" && return 0
        sleep 0.1
    done
    return 1
}
check "a node killed with -9 is reported with how to start it again" said_exited
others_serve() {
    local _ port code
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -XPOST "http://127.0.0.1:$base/locks/acquire" \
            -d '{"key":"after","client_id":"c","mode":"X"}')
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || { echo "node 1: lock acquire $code after node 2 died"; return 1; }
    port=$((base + 2))
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:$port/health")
    [ "$code" = 200 ] || { echo "node 3: health $code"; return 1; }
}
check "the other two keep serving (a lock on node 1 within 10 s)" others_serve
in_session env REDIS=0 ONLY=2 DATA_ROOT="$tmp/data" BASE_HTTP_PORT="$base" BASE_PEER_PORT=$((base + 3)) \
    scripts/run-cluster.sh >"$tmp/node2.out" 2>&1 &
group2=$!
back_in() {
    local _
    for _ in $(seq 150); do
        curl -sf -m 1 "http://127.0.0.1:$((base + 1))/locks/state" | grep -q '"after"' && return 0
        sleep 0.1
    done
    sed 's/^/    node2.out: /' "$tmp/node2.out" | tail -n 10
    return 1
}
check "ONLY=2 starts node 2 again, and it catches up (the lock taken meanwhile) within 15 s" back_in
# Ctrl-C, as a terminal sends it: SIGINT to the process group $1; every
# process in it must be gone within 15 s.
interrupt_and_wait() {
    local _
    kill -INT -- "-$1" 2>/dev/null
    for _ in $(seq 150); do
        pgrep -g "$1" >/dev/null || return 0
        sleep 0.1
    done
    pgrep -ag "$1"
    return 1
}
check "Ctrl-C stops the restarted node within 15 s" interrupt_and_wait "$group2"
group2=""
check "Ctrl-C (SIGINT to the group) stops every process within 15 s" interrupt_and_wait "$group"
group=""
said_stopping() { grep -q '^libdsync: stopping 2 process(es)' "$out"; }
check "run-cluster.sh says it stops the two nodes still running" said_stopping
[ "$failed" -gt 0 ] && sed "s/^/    run.out: /" "$out" | tail -n 8
print_totals "run-cluster"
