#!/usr/bin/env bash
# Runs a three-node libdsync cluster in the foreground: nodes 1, 2, 3 with
# HTTP on 127.0.0.1:8081-8083 and the peer transport on 127.0.0.1:9081-9083,
# data in ./data/node1..3. Ctrl-C stops all three.
#
# A node that exits (killed, say, to watch the others elect a new leader)
# leaves the rest running; ONLY=I runs node I alone with the same settings,
# to start it again from another terminal (make run-node N=I), against the
# Redis the first one started (give it the same REDIS=0 or DSYNC_REDIS_URL
# as the first run, if it had one; Ctrl-C on the first run stops that
# Redis too). NODES=1 runs a single node instead. Shared settings
# (DSYNC_LOG_LEVEL, DSYNC_LOCK_DEFAULT_TTL_MS, ...) come from the
# environment or ./.env, which dsyncd reads itself; the per-node addresses
# and ids are set here.
#
# The queue's store: a redis-server started here on 127.0.0.1:$REDIS_PORT
# (6390 by default) with appendonly yes and appendfsync $REDIS_APPENDFSYNC
# (always by default: nothing acknowledged is lost even on power loss;
# everysec is faster and can lose about the last second then), its AOF in
# ./data/redis. DSYNC_REDIS_URL set in the environment uses that Redis
# instead; REDIS=0 uses each node's local queue file.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${NODES:-3}
only=${ONLY:-}
if [ -n "$only" ] && ! { [[ "$only" =~ ^[0-9]+$ ]] && [ "$only" -ge 1 ] && [ "$only" -le "$nodes" ]; }; then
    echo "run-cluster: ONLY must be a node from 1 to $nodes, not '$only'" >&2
    exit 2
fi
base_http=${BASE_HTTP_PORT:-8081}
base_peer=${BASE_PEER_PORT:-9081}
data=${DATA_ROOT:-./data}

peers=""
for i in $(seq 1 "$nodes"); do
    peers+="${peers:+,}$i=127.0.0.1:$((base_peer + i - 1))"
done
[ "$nodes" -eq 1 ] && peers=""

pids=()    # every process started here
running=() # those of them that have not exited (yet)
declare -A name # what each of them is, by pid
redis_url=${DSYNC_REDIS_URL:-}
redis_port=${REDIS_PORT:-6390}
if [ -z "$redis_url" ] && [ "${REDIS:-1}" = 1 ] && [ -n "$only" ]; then
    redis_url=redis://127.0.0.1:$redis_port # the one the cluster's run started
elif [ -z "$redis_url" ] && [ "${REDIS:-1}" = 1 ]; then
    mkdir -p "$data/redis"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes \
        --appendfsync "${REDIS_APPENDFSYNC:-always}" --dir "$data/redis" \
        --logfile redis.log --daemonize no &
    pids+=($!)
    running+=($!)
    name[$!]=redis-server
    redis_url=redis://127.0.0.1:$redis_port
    for _ in $(seq 100); do # until it answers (its AOF loaded), 10 s at most
        [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break
        sleep 0.1
    done
fi

# shellcheck disable=SC2317 # run by the traps
stop() {
    trap - INT TERM EXIT
    [ "${#running[@]}" = 0 ] && return
    echo
    echo "libdsync: stopping ${#running[@]} process(es)"
    kill "${running[@]}" 2>/dev/null || true
    wait "${running[@]}" 2>/dev/null || true
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

for i in $(seq "${only:-1}" "${only:-$nodes}"); do
    mkdir -p "$data/node$i"
    DSYNC_NODE_ID=$i \
        DSYNC_HTTP_ADDR=127.0.0.1:$((base_http + i - 1)) \
        DSYNC_PEER_ADDR=127.0.0.1:$((base_peer + i - 1)) \
        DSYNC_PEERS=$peers \
        DSYNC_DATA_DIR=$data/node$i \
        DSYNC_REDIS_URL=$redis_url \
        bin/dsyncd &
    pids+=($!)
    running+=($!)
    name[$!]="node $i"
    node_pid[i]=$!
done

if [ -n "$only" ]; then
    echo "libdsync: node $only on http://127.0.0.1:$((base_http + only - 1)) (Ctrl-C stops it)"
    status=0
    wait "${pids[@]}" || status=$?
    running=()
    exit "$status"
fi
echo "libdsync: $nodes node(s) on http://127.0.0.1:$base_http..$((base_http + nodes - 1)) (Ctrl-C stops them)"
echo "  queue store: ${redis_url:-a local file in the data directory of each node}"
for i in $(seq 1 "$nodes"); do
    echo "  node $i: pid ${node_pid[i]}, http://127.0.0.1:$((base_http + i - 1))"
done
# Until every node knows a leader and serves the cache (15 s at most, and
# not past a node that exited): before that, calls answer 503 (retry).
node_ready() { # HTTP port
    local code
    curl -sf -m 1 "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"status":"ok"' || return 1
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$1/cache/get?key=probe" 2>/dev/null)
    [ "$code" = 404 ]
}
ready=0
for _ in $(seq 150); do
    up=0
    for i in $(seq 1 "$nodes"); do
        node_ready $((base_http + i - 1)) && up=$((up + 1))
    done
    [ "$up" = "$nodes" ] && ready=1 && break
    alive=1
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || alive=0; done
    [ "$alive" = 1 ] || break
    sleep 0.1
done
if [ "$ready" = 1 ]; then
    leader=$(curl -s -m 1 "http://127.0.0.1:$base_http/health" | grep -o '"leader_id":[0-9]*' | cut -d: -f2)
    echo "  ready: every node answers (leader: node ${leader:-?})"
else
    echo "  not ready yet: calls answer 503 until a leader is elected (see the log)"
fi
echo "  try: curl -s http://127.0.0.1:$base_http/health"
echo "       curl -s -XPOST http://127.0.0.1:$((base_http + nodes - 1))/locks/acquire -d '{\"key\":\"k\",\"client_id\":\"me\",\"mode\":\"X\"}'"
# A process that exits is reported and the others keep running (killing
# the leader is how one watches a failover); Ctrl-C stops the rest. The
# script ends when none is left. (wait -p needs bash 5.1: an older bash
# stops everything when the first process exits, as this script once did.)
if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501)); then
    status=0
    wait -n "${pids[@]}" || status=$?
    exit "$status"
fi
status=0
while [ "${#running[@]}" -gt 0 ]; do
    gone=""
    rc=0
    wait -n -p gone "${running[@]}" || rc=$?
    [ -n "$gone" ] || break
    [ "$rc" = 0 ] || status=$rc
    left=()
    for p in "${running[@]}"; do [ "$p" = "$gone" ] || left+=("$p"); done
    running=("${left[@]}")
    what=${name[$gone]:-process $gone}
    echo "libdsync: $what exited (status $rc); ${#running[@]} process(es) still running"
    if [[ "$what" == node* ]]; then
        echo "  start it again from another terminal: make run-node N=${what#node }"
    fi
done
exit "$status"
