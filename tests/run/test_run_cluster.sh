#!/usr/bin/env bash
# test_run_cluster.sh: scripts/run-cluster.sh, what `make run` runs, as a
# new user meets it: three nodes (local queue files, no Redis) on free
# consecutive loopback ports and a temp data dir; the script must say
# "ready" within 30 s, after which every node answers a cache PUT and a
# lock acquire at once (200, not 503); then SIGINT to its process group,
# as Ctrl-C sends, must stop every process within 15 s.
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
cleanup() {
    [ -n "$group" ] && kill -KILL -- "-$group" 2>/dev/null
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
setsid env REDIS=0 DATA_ROOT="$tmp/data" BASE_HTTP_PORT="$base" BASE_PEER_PORT=$((base + 3)) \
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

kill -INT -- "-$group" 2>/dev/null
all_gone() {
    local _
    for _ in $(seq 150); do
        pgrep -g "$group" >/dev/null || return 0
        sleep 0.1
    done
    pgrep -ag "$group"
    return 1
}
check "Ctrl-C (SIGINT to the group) stops every process within 15 s" all_gone
group=""
said_stopping() { grep -q '^libdsync: stopping 3 process(es)' "$out"; }
check "run-cluster.sh says it stops the three nodes" said_stopping
[ "$failed" -gt 0 ] && sed 's/^/    run.out: /' "$out" | tail -n 30
print_totals "run-cluster"
