#!/usr/bin/env bash
# queue_cpu.sh: where an HTTP enqueue's CPU goes, on ONE dsyncd node with its
# Redis, against the bare civetweb ceiling (the evidence behind issue 4's
# HTTP target; benchmarks/README.md, "Queue"). Runs PAIRS (default 2)
# alternating pairs of `queue_bench http enqueue 32` against the node and
# `queue_bench http post 32` against http_ceiling, SECONDS_PER_RUN (default 5)
# each, and reads each server's CPU time (user + system, /proc/PID/stat)
# around every run. Prints per pair the two rates, their ratio, and the
# microseconds of CPU per call that dsyncd, Redis and the ceiling spent;
# the client's is at most what the ceiling run leaves of the machine (idle
# time and other processes count in it too).
#
# Redis runs with appendonly yes, appendfsync everysec, as in queue_bench.sh.
# Every server listens on 127.0.0.1 on free ports from a fresh mktemp dir and
# is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/lib.sh

bench_name=queue_cpu
secs=${SECONDS_PER_RUN:-5}
need_pairs 2
http_threads=${DSYNC_HTTP_THREADS:-64}
bench=bin/queue_bench
dsyncd=bin/dsyncd
ceiling=bin/http_ceiling
need_bins "$bench" "$dsyncd" "$ceiling"
need_server redis-server redis-server redis-server
make_tmp queue-cpu

# Four consecutive free ports: dsyncd HTTP +0, its peer port +1, Redis +2,
# the ceiling +3.
need_ports 4
redis_port=$((base + 2))
ceiling_port=$((base + 3))
mkdir -p "$tmp/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$tmp/redis" --save '' \
    --appendonly yes --appendfsync everysec >"$tmp/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
"$ceiling" "127.0.0.1:$ceiling_port" "$http_threads" >"$tmp/ceiling.log" 2>&1 &
ceiling_pid=$!
pids+=("$ceiling_pid")
dsync_redis_url=redis://127.0.0.1:$redis_port
start_dsync_cluster 1 "$base" $((base + 1))

ceiling_ready() {
    alive "$ceiling_pid" || return 2
    curl -s -o /dev/null -m 1 "http://127.0.0.1:$ceiling_port/" || return 1
}
wait_ready 30 redis dsync ceiling
for s in redis dsync ceiling; do
    [ "${ready[$s]}" = 1 ] || {
        echo "queue_cpu: $s did not become ready within 30 s" >&2
        exit 1
    }
done

ticks_per_s=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system, in ticks
# us_per_call TICKS CALLS: microseconds of CPU per call.
us_per_call() { awk -v t="$1" -v c="$2" -v hz="$ticks_per_s" 'BEGIN { if (c > 0) printf "%.1f", t / hz * 1e6 / c; else print "-" }'; }

echo "queue_cpu: ${secs}s per run, $(nproc) CPUs, one dsyncd node with Redis (everysec) against bare civetweb"
printf '%-5s | %12s %12s %7s | %14s %12s %14s %12s\n' pair "enqueue/s" "ceiling/s" ratio \
    "dsyncd us/call" "redis us/call" "ceiling us/call" "client <= us/call"
for ((p = 1; p <= pairs; p++)); do
    d0=$(cpu "${dsync_pid[1]}")
    r0=$(cpu "$redis_pid")
    measure "enqueue $p" 1 http enqueue 32 "$secs" "127.0.0.1:$base" >/dev/null
    d1=$(cpu "${dsync_pid[1]}")
    r1=$(cpu "$redis_pid")
    c0=$(cpu "$ceiling_pid")
    measure "ceiling $p" 1 http post 32 "$secs" "127.0.0.1:$ceiling_port" >/dev/null
    c1=$(cpu "$ceiling_pid")
    en=$(cell "enqueue $p" ops)
    cn=$(cell "ceiling $p" ops)
    # The client gets what the ceiling run leaves of all CPUs' time.
    client_ticks=$(awk -v s="$secs" -v n="$(nproc)" -v hz="$ticks_per_s" -v c=$((c1 - c0)) \
        'BEGIN { print s * n * hz - c }')
    printf '%-5s | %12s %12s %7s | %14s %12s %14s %12s\n' "$p" "$(cell "enqueue $p" ops/s)" \
        "$(cell "ceiling $p" ops/s)" "$(ratio "$(cell "enqueue $p" ops/s)" "$(cell "ceiling $p" ops/s)" x)" \
        "$(us_per_call $((d1 - d0)) "$en")" "$(us_per_call $((r1 - r0)) "$en")" \
        "$(us_per_call $((c1 - c0)) "$cn")" "$(us_per_call "$client_ticks" "$cn")"
done
if [ -s "$tmp/bench.err" ]; then sed 's/^/  /' "$tmp/bench.err" >&2; fi
[ "$failed" = 0 ]
