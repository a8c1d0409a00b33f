#!/usr/bin/env bash
# queue_bench.sh: the queue benchmark of issue 4, in one run. Measures, each
# for SECONDS_PER_RUN (default 5), with bin/queue_bench:
#   1. a three-node dsyncd cluster over HTTP (clients round-robin over the
#      nodes, each on its own topic): enqueue/s and enqueue+consume+ack
#      cycles/s with 1 and 32 clients;
#   2. a bare civetweb server (http_ceiling) at 32 clients: the HTTP ceiling,
#      and dsync enqueue/s at 32 clients against it (target >= 0.7), with
#      the clients spread over the nodes as above (two thirds of the calls
#      forwarded to their topic's owner) and routed: each client's topic
#      owned by the node it talks to (QUEUE_BENCH_ROUTE=owner), what a
#      client that follows /queue/state's placement gets;
#   3. raw Redis doing the same work with the reliable-queue pattern (LPUSH;
#      LPUSH, LMOVE to an in-flight list, LREM), 1 and 32 connections;
#   4. one in-process node through the library (no HTTP), cycles/s with 1 and
#      32 threads, against raw Redis cycles at 32 (target >= 1.0), in PAIRS
#      (default 3) back-to-back pairs of runs, raw Redis then the library:
#      the ratio reported is the median of the pairs' ratios, as this
#      machine's speed drifts between runs;
#   5. the resident size of an in-process node with MEMORY_MESSAGES (default
#      1,000,000) 16-byte messages waiting (at most MEMORY_MAX_SECONDS, 120).
#
# dsync keeps the queue in its own redis-server (the store), every answer
# after its records' write (pipelined flushes, one in flight); the
# reference Redis is another redis-server. Both run with appendonly yes and
# appendfsync $REDIS_APPENDFSYNC (everysec by default: Redis answers before
# the fsync and may lose about a second of writes on power loss; always
# fsyncs first). STORE=file measures dsync on each owner's local
# append-only file instead (fsynced before every answer, group commit).
#
# Every server listens on 127.0.0.1 on free ports, from fresh dirs under one
# mktemp dir; every process started here is stopped by PID on exit and the
# dir removed. redis-server is installed with apt-get when missing and run as
# root. Exits non-zero when a measurement could not be made.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/lib.sh

bench_name=queue_bench
secs=${SECONDS_PER_RUN:-5}
need_pairs 3
http_threads=${DSYNC_HTTP_THREADS:-64}
mem_messages=${MEMORY_MESSAGES:-1000000}
mem_max_secs=${MEMORY_MAX_SECONDS:-120}
bench=bin/queue_bench
dsyncd=bin/dsyncd
ready_timeout=30

need_bins "$bench" "$dsyncd"
need_server redis-server redis-server redis-server
make_tmp queue-bench

ceiling=bin/http_ceiling
# Nine consecutive free ports: dsyncd HTTP +0..2 and peers +3..5,
# http_ceiling +6, the reference Redis +7, dsync's store +8.
store=${STORE:-redis}
fsync_policy=${REDIS_APPENDFSYNC:-everysec}
need_ports 9
ceiling_port=$((base + 6))
redis_port=$((base + 7))
store_port=$((base + 8))

# ---- servers -----------------------------------------------------------------
dsync_redis_url=""
if [ "$store" = redis ]; then
    mkdir -p "$tmp/store"
    redis-server --bind 127.0.0.1 --port "$store_port" --dir "$tmp/store" --save '' \
        --appendonly yes --appendfsync "$fsync_policy" --daemonize no \
        --logfile "$tmp/store.log" >/dev/null 2>&1 &
    pids+=($!)
    store_pid=$!
    for _ in $(seq 100); do # before the nodes: they connect at start
        [ "$(redis-cli -h 127.0.0.1 -p "$store_port" ping 2>/dev/null)" = PONG ] && break
        sleep 0.1
    done
    dsync_redis_url=redis://127.0.0.1:$store_port
fi
start_dsync_cluster 3 "$base" $((base + 3))
"$ceiling" "127.0.0.1:$ceiling_port" "$http_threads" >"$tmp/ceiling.log" 2>&1 &
pids+=($!)
ceiling_pid=$!
mkdir -p "$tmp/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$tmp/redis" --save '' \
    --appendonly yes --appendfsync "$fsync_policy" --daemonize no --logfile "$tmp/redis.log" \
    >/dev/null 2>&1 &
pids+=($!)
redis_pid=$!

# ---- readiness (bounded) -------------------------------------------------------
ceiling_ready() {
    alive "$ceiling_pid" || return 2
    curl -sf -m 2 -d '{}' "http://127.0.0.1:$ceiling_port/queue/enqueue" >/dev/null
}
# A leader, and (with Redis) every node placing topics on a view of all three.
dsyncq_ready() {
    local rc=0 i
    dsync_ready || rc=$?
    [ "$rc" = 0 ] || return "$rc"
    [ "$store" = redis ] || return 0
    alive "$store_pid" || return 2
    for ((i = 1; i <= 3; i++)); do
        curl -sf -m 2 "http://127.0.0.1:${dsync_http[i]}/queue/state" |
            grep -q '"owners": *\[[0-9]*, *[0-9]*, *[0-9]*\]' || return 1
    done
}
wait_ready "$ready_timeout" dsyncq ceiling redis
ready[dsync]=${ready[dsyncq]}
for s in dsync ceiling redis; do
    [ "${ready[$s]}" = 1 ] && continue
    echo "queue_bench: $s did not become ready within ${ready_timeout}s (or exited); skipping it." \
        "Last log lines:" >&2
    case $s in
    dsync) for i in 1 2 3; do tail -n 5 "$tmp/dsync$i.log" | sed "s/^/  dsyncd$i: /" >&2; done ;;
    ceiling) tail -n 5 "$tmp/ceiling.log" | sed 's/^/  http_ceiling: /' >&2 ;;
    redis) tail -n 5 "$tmp/redis.log" | sed 's/^/  redis: /' >&2 ;;
    esac
done

echo "queue_bench: ${secs}s per run, $(nproc) CPUs, $($dsyncd --version 2>&1 | head -1)," \
    "$(redis-server --version | cut -d' ' -f1-3)"
if [ "$store" = redis ]; then
    echo "queue_bench: dsync keeps the queue in its own redis-server; both Redis servers:" \
        "appendonly yes, appendfsync $fsync_policy."
else
    echo "queue_bench: dsync keeps the queue in each owner's local append-only file, fsynced" \
        "before every answer (group commit). Reference Redis: appendonly yes, appendfsync $fsync_policy."
fi

# ---- measurements ----------------------------------------------------------------
redis_ep="127.0.0.1:$redis_port"
for wl in enqueue cycle; do
    for c in 1 32; do measure "dsync $wl $c" "${ready[dsync]}" http "$wl" "$c" "$secs" "$dsync_eps"; done
done
QUEUE_BENCH_ROUTE=owner measure "dsync enqueue 32 routed" "${ready[dsync]}" http enqueue 32 "$secs" \
    "$dsync_eps"
measure "ceiling post 32" "${ready[ceiling]}" http post 32 "$secs" "127.0.0.1:$ceiling_port"
for wl in enqueue cycle; do
    for c in 1 32; do measure "redis $wl $c" "${ready[redis]}" redis "$wl" "$c" "$secs" "$redis_ep"; done
done
# The servers are idle from here on; the in-process node gets its own dirs.
lib_cycles() { # KEY CLIENTS
    rm -rf "${tmp:?}/lib"
    [ "$store" = redis ] && redis-cli -h 127.0.0.1 -p "$store_port" flushall >/dev/null
    DSYNC_REDIS_URL=$dsync_redis_url measure "$1" 1 lib cycle "$2" "$secs" "$tmp/lib"
}
lib_cycles "lib cycle 1" 1
pair_ratios=()
for ((p = 1; p <= pairs; p++)); do
    redis-cli -h 127.0.0.1 -p "$redis_port" flushall >/dev/null
    measure "pair redis $p" "${ready[redis]}" redis cycle 32 "$secs" "$redis_ep"
    lib_cycles "pair lib $p" 32
    pair_ratios+=("$(ratio "$(cell "pair lib $p" ops/s)" "$(cell "pair redis $p" ops/s)")")
done
# The median pair (the lower middle one for an even count) stands for both.
mid=$(median_pair "${pair_ratios[@]}")
result[lib cycle 32]=${result[pair lib ${mid:-0}]:-}
rm -rf "${tmp:?}/lib" "$tmp/mem"
{ "$bench" memory "$mem_messages" 4 "$mem_max_secs" "$tmp/mem" 2>>"$tmp/bench.err" || true; } |
    sed -u 's/^/  /' | tee "$tmp/mem.out"
mem_line=$(grep '^  memory messages=' "$tmp/mem.out" | sed 's/^  //' || true)
[ -n "$mem_line" ] || failed=1
rm -rf "$tmp/mem"
if [ -s "$tmp/bench.err" ]; then sed 's/^/  /' "$tmp/bench.err" >&2; fi

# ---- table --------------------------------------------------------------------------
echo
echo "Queue: 3-node dsyncd over HTTP (store: $store) vs raw Redis ($fsync_policy), loopback"
printf '%-20s | %10s %8s %8s %6s | %10s %8s %8s %6s | %11s\n' "workload" "dsync op/s" "p50 ms" \
    "p99 ms" "errors" "redis op/s" "p50 ms" "p99 ms" "errors" "dsync/redis"
for wl in enqueue cycle; do
    for c in 1 32; do
        d="dsync $wl $c"
        r="redis $wl $c"
        printf '%-20s | %10s %8s %8s %6s | %10s %8s %8s %6s | %11s\n' \
            "$wl, $c client$([ "$c" = 1 ] || echo s)" "$(cell "$d" ops/s)" "$(cell "$d" p50_ms)" \
            "$(cell "$d" p99_ms)" "$(cell "$d" errors)" "$(cell "$r" ops/s)" "$(cell "$r" p50_ms)" \
            "$(cell "$r" p99_ms)" "$(cell "$r" errors)" "$(ratio "$(cell "$d" ops/s)" "$(cell "$r" ops/s)" x)"
    done
done
echo
ceil=$(cell "ceiling post 32" ops/s)
printf 'Bare civetweb ceiling, 32 clients:           %10s req/s  p99 %s ms\n' "$ceil" \
    "$(cell "ceiling post 32" p99_ms)"
printf 'dsync enqueue/s at 32 / ceiling:              %10s  (target >= 0.70x)\n' \
    "$(ratio "$(cell "dsync enqueue 32" ops/s)" "$ceil" x)"
printf '  routed to the owners (none forwarded):      %10s  (%s enqueue/s, p99 %s ms)\n' \
    "$(ratio "$(cell "dsync enqueue 32 routed" ops/s)" "$ceil" x)" \
    "$(cell "dsync enqueue 32 routed" ops/s)" "$(cell "dsync enqueue 32 routed" p99_ms)"
printf 'In-process library, 1 node, cycles/s:        %10s (1 thread)  %s (32 threads, p99 %s ms)\n' \
    "$(cell "lib cycle 1" ops/s)" "$(cell "lib cycle 32" ops/s)" "$(cell "lib cycle 32" p99_ms)"
printf 'In-process cycles at 32 / raw Redis at 32:   %10s  (target >= 1.00x; median of %s pairs: %s)\n' \
    "$(ratio "$(cell "pair lib ${mid:-0}" ops/s)" "$(cell "pair redis ${mid:-0}" ops/s)" x)" \
    "$pairs" "$(IFS=' '; echo "${pair_ratios[*]}")"
if [ -n "$mem_line" ]; then
    printf 'Memory, in-process node: %s messages waiting (%s/s), RSS %s MB -> %s MB, %s bytes/message%s\n' \
        "$(field "$mem_line" messages)" "$(field "$mem_line" enqueue/s)" \
        "$(field "$mem_line" rss_before_mb)" "$(field "$mem_line" rss_after_mb)" \
        "$(field "$mem_line" bytes_per_msg)" \
        "$([ "$(field "$mem_line" complete)" = yes ] || echo " (stopped at ${mem_max_secs}s)")"
else
    echo "Memory, in-process node: no result"
fi

[ "$failed" = 0 ]
