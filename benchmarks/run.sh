#!/usr/bin/env bash
# make bench: lock acquire+release cycles through the library on one node,
# durable (fsync before every answer, group commit) and memory-only, with 1
# and 32 concurrent clients; then, over HTTP, a three-node dsyncd cluster
# against a three-node etcd cluster (cluster_bench.sh), the queue
# (queue_bench.sh) and the cache (cache_bench.sh: against Redis, memcached
# and a bare civetweb ceiling). Each run is bounded by SECONDS_PER_RUN
# (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECONDS_PER_RUN:-5}
dir=$(mktemp -d /tmp/dsync-bench-XXXXXX)
trap 'rm -rf "$dir"' EXIT
for store in fsync memory; do
    for threads in 1 32; do
        rm -rf "$dir/data"
        target=$([ "$store" = fsync ] && echo "$dir/data" || echo -)
        bin/lock_bench "$threads" "$secs" "$target" distinct
    done
    rm -rf "$dir/data"
    bin/lock_bench 32 "$secs" "$([ "$store" = fsync ] && echo "$dir/data" || echo -)" contended
done
# Over HTTP: a three-node dsyncd cluster against a three-node etcd cluster.
benchmarks/cluster_bench.sh
benchmarks/queue_bench.sh
benchmarks/cache_bench.sh
