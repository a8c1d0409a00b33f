#!/usr/bin/env bash
# cluster_bench.sh: lock acquire+release cycles per second on a three-node
# dsyncd cluster against a three-node etcd cluster, both on loopback, in the
# same run, through the same HTTP client (bin/http_lock_bench).
#
# Usage: benchmarks/cluster_bench.sh        (after make; make bench runs it too)
#   SECONDS_PER_RUN=5     length of each measurement
#   WARMUP_SECONDS=1      the same workload untimed before each measurement
#   DSYNC_BENCH_NODES=3   dsyncd cluster size; 1 runs a single dsyncd node
#   DSYNC_HTTP_THREADS=64 civetweb workers per dsyncd node (a keep-alive client
#                         holds one worker, and a blocked acquire holds one too)
#
# Three workloads, each against dsyncd (all HTTP endpoints) and etcd (all
# client endpoints), clients spread round-robin: 1 client on its own key,
# 32 clients each on its own key, 32 clients on one shared key. The table
# gives cycles/s, p50 and p99 of a whole cycle, and the ratio dsync/etcd.
#
# Durability is equal: dsyncd fsyncs each lock change to its log on a
# majority before answering, and etcd runs with its default fsync (no
# --unsafe-no-fsync), which does the same for its Raft log. Both clusters run
# from fresh data dirs under one mktemp dir, listen on 127.0.0.1 only, on free
# ports; every process started here is stopped by PID on exit and the dir removed.
#
# etcd comes from Debian's etcd-server package (installed here when missing
# and run as root). Exits non-zero if either cluster never becomes ready; the
# other system is still measured and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/lib.sh

bench_name=cluster_bench
secs=${SECONDS_PER_RUN:-5}
warmup=${WARMUP_SECONDS:-1}
nodes=${DSYNC_BENCH_NODES:-3}
http_threads=${DSYNC_HTTP_THREADS:-64}
bench=bin/http_lock_bench
dsyncd=bin/dsyncd
ready_timeout=30

case $nodes in 1 | 3) ;; *)
    echo "cluster_bench: DSYNC_BENCH_NODES must be 1 or 3" >&2
    exit 2
    ;;
esac
need_bins "$bench" "$dsyncd"
need_server etcd etcd-server etcd
make_tmp cluster-bench

# Twelve consecutive free ports: etcd clients +0..2 and peers +3..5,
# dsyncd HTTP +6..8 and peers +9..11.
need_ports 12
for i in 1 2 3; do
    etcd_client[i]=$((base + i - 1))
    etcd_peer[i]=$((base + 2 + i))
done

# ---- etcd ------------------------------------------------------------------
etcd_cluster=""
etcd_eps=""
for i in 1 2 3; do
    etcd_cluster+="${etcd_cluster:+,}e$i=http://127.0.0.1:${etcd_peer[i]}"
    etcd_eps+="${etcd_eps:+,}127.0.0.1:${etcd_client[i]}"
done
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$tmp/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${etcd_client[i]}" \
        --advertise-client-urls "http://127.0.0.1:${etcd_client[i]}" \
        --listen-peer-urls "http://127.0.0.1:${etcd_peer[i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${etcd_peer[i]}" \
        --initial-cluster "$etcd_cluster" --initial-cluster-state new \
        --initial-cluster-token "dsync-bench-$$" --log-level warn \
        >"$tmp/etcd$i.log" 2>&1 &
    pids+=($!)
    etcd_pid[i]=$!
done

# ---- dsyncd ----------------------------------------------------------------
start_dsync_cluster "$nodes" $((base + 6)) $((base + 9))

# ---- readiness (bounded) ---------------------------------------------------
etcd_ready() {
    local i
    for i in 1 2 3; do
        alive "${etcd_pid[i]}" || return 2
        curl -sf -m 2 "http://127.0.0.1:${etcd_client[i]}/health" | grep -q '"health": *"true"' ||
            return 1
    done
}
wait_ready "$ready_timeout" etcd dsync

echo "cluster_bench: ${secs}s per run after ${warmup}s untimed, $(nproc) CPUs, $($dsyncd --version 2>&1 | head -1)," \
    "$(etcd --version | head -1)"
if [ "${ready[etcd]}" = 0 ]; then
    echo "cluster_bench: the etcd cluster did not become healthy within ${ready_timeout}s;" \
        "last log lines:" >&2
    for i in 1 2 3; do tail -n 5 "$tmp/etcd$i.log" | sed "s/^/  etcd$i: /" >&2; done
fi
if [ "${ready[dsync]}" = 0 ]; then
    echo "cluster_bench: the $nodes-node dsyncd cluster did not agree on one leader within" \
        "${ready_timeout}s (or a node exited); nodes that each lead alone are no cluster." \
        "Skipping dsyncd. Last log lines:" >&2
    for ((i = 1; i <= nodes; i++)); do
        alive "${dsync_pid[i]}" || echo "  dsyncd node $i exited" >&2
        tail -n 5 "$tmp/dsync$i.log" | sed "s/^/  dsyncd$i: /" >&2
        curl -s -m 2 "http://127.0.0.1:${dsync_http[i]}/health" 2>/dev/null |
            sed "s/^/  dsyncd$i \/health: /" >&2 || true
        echo >&2
    done
fi

# ---- measurements ------------------------------------------------------------
# The same workload for $warmup s first, untimed, on either system: the
# first seconds after a change of load (connections, server threads, the
# log's preallocation, TCP windows) measure the change, not the steady
# state; on this machine they cost dsyncd about a tenth.
warm() { # system clients mode endpoints
    [ "$warmup" = 0 ] || "$bench" "$1" "$2" "$warmup" "$3" "$4" >/dev/null 2>>"$tmp/bench.err" || true
}
workloads=("1 distinct" "32 distinct" "32 contended")
for wl in "${workloads[@]}"; do
    read -r clients mode <<<"$wl"
    for sys in dsync etcd; do
        eps_var=${sys}_eps
        [ "${ready[$sys]}" = 1 ] && warm "$sys" "$clients" "$mode" "${!eps_var}"
        measure "$sys $wl" "${ready[$sys]}" "$sys" "$clients" "$secs" "$mode" "${!eps_var}"
    done
done
if [ -s "$tmp/bench.err" ]; then sed 's/^/  /' "$tmp/bench.err" >&2; fi

echo
echo "Lock acquire+release cycles, $nodes-node dsyncd vs 3-node etcd, loopback, fsync on both"
printf '%-22s | %11s %8s %8s | %11s %8s %8s | %10s\n' "workload" "dsync c/s" "p50 ms" \
    "p99 ms" "etcd c/s" "p50 ms" "p99 ms" "dsync/etcd"
for wl in "${workloads[@]}"; do
    read -r clients mode <<<"$wl"
    d="dsync $wl"
    e="etcd $wl"
    dr=$(cell "$d" cycles/s)
    er=$(cell "$e" cycles/s)
    label="$clients client$([ "$clients" = 1 ] || echo s), $mode"
    printf '%-22s | %11s %8s %8s | %11s %8s %8s | %10s\n' "$label" "$dr" "$(cell "$d" p50_ms)" \
        "$(cell "$d" p99_ms)" "$er" "$(cell "$e" p50_ms)" "$(cell "$e" p99_ms)" "$(ratio "$dr" "$er" x)"
done

[ "${ready[dsync]}" = 1 ] && [ "${ready[etcd]}" = 1 ]
