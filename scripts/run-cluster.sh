#!/usr/bin/env bash
# Runs a three-node libdsync cluster in the foreground: nodes 1, 2, 3 with
# HTTP on 127.0.0.1:8081-8083 and the peer transport on 127.0.0.1:9081-9083,
# data in ./data/node1..3. Ctrl-C stops all three.
#
# NODES=1 runs a single node instead. Shared settings (DSYNC_LOG_LEVEL,
# DSYNC_LOCK_DEFAULT_TTL_MS, ...) come from the environment or ./.env, which
# dsyncd reads itself; the per-node addresses and ids are set here.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${NODES:-3}
base_http=${BASE_HTTP_PORT:-8081}
base_peer=${BASE_PEER_PORT:-9081}
data=${DATA_ROOT:-./data}

peers=""
for i in $(seq 1 "$nodes"); do
    peers+="${peers:+,}$i=127.0.0.1:$((base_peer + i - 1))"
done
[ "$nodes" -eq 1 ] && peers=""

pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "libdsync: stopping ${#pids[@]} node(s)"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

for i in $(seq 1 "$nodes"); do
    mkdir -p "$data/node$i"
    DSYNC_NODE_ID=$i \
        DSYNC_HTTP_ADDR=127.0.0.1:$((base_http + i - 1)) \
        DSYNC_PEER_ADDR=127.0.0.1:$((base_peer + i - 1)) \
        DSYNC_PEERS=$peers \
        DSYNC_DATA_DIR=$data/node$i \
        bin/dsyncd &
    pids+=($!)
done

echo "libdsync: $nodes node(s) on http://127.0.0.1:$base_http..$((base_http + nodes - 1)) (Ctrl-C stops them)"
echo "  try: curl -s http://127.0.0.1:$base_http/health"
echo "       curl -s -XPOST http://127.0.0.1:$((base_http + nodes - 1))/locks/acquire -d '{\"key\":\"k\",\"client_id\":\"me\",\"mode\":\"X\"}'"
# Stop everything as soon as any node exits.
status=0
wait -n "${pids[@]}" || status=$?
exit "$status"
