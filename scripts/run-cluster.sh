#!/usr/bin/env bash
# Runs libdsync in the foreground: one dsyncd on 127.0.0.1:8081 (HTTP) and
# 127.0.0.1:9081 (peers), data in ./data/node1. Ctrl-C stops it.
# Variables already in the environment or in ./.env win over these defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

export DSYNC_NODE_ID=${DSYNC_NODE_ID:-1}
export DSYNC_HTTP_ADDR=${DSYNC_HTTP_ADDR:-127.0.0.1:8081}
export DSYNC_PEER_ADDR=${DSYNC_PEER_ADDR:-127.0.0.1:9081}
export DSYNC_DATA_DIR=${DSYNC_DATA_DIR:-./data/node1}
mkdir -p "$DSYNC_DATA_DIR"

echo "libdsync: node $DSYNC_NODE_ID serving http://$DSYNC_HTTP_ADDR (Ctrl-C stops it)"
echo "  try: curl -s http://$DSYNC_HTTP_ADDR/health"
exec bin/dsyncd
