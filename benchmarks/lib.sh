# benchmarks/lib.sh: the shell parts the *_bench.sh scripts share, sourced
# by each (bash, after set -euo pipefail and the cd to the
# repository): checks for the binaries and servers they need, one mktemp dir
# with every started process stopped by PID on exit, free loopback ports, a
# dsyncd cluster started from fresh data dirs, and bounded readiness checks
# (a cluster is ready when all its nodes agree on one leader), and the
# table helpers: measure, cell, ratio.
#
# The caller sets bench_name (the prefix of its messages) before calling
# these, dsyncd and http_threads before start_dsync_cluster, redis_pid and
# redis_port before redis_ready, and bench (the measuring program) before
# measure.

# shellcheck shell=bash
# shellcheck disable=SC2154 # bench_name, dsyncd, http_threads, bench, redis_* come from the caller

pids=()           # every process started here, stopped by cleanup
declare -A ready  # ready[name]=1 once wait_ready saw name_ready succeed
declare -A result # result[key]: the measuring program's line for key (measure)
failed=0          # 1 once a measure got no line

# need_bins BIN...: exits 2 unless each is an executable (built by make).
need_bins() {
    local b
    for b in "$@"; do
        if [ ! -x "$b" ]; then
            echo "$bench_name: $b is missing; run make first" >&2
            exit 2
        fi
    done
}

# need_server COMMAND PACKAGE SERVICE: installs PACKAGE with apt-get (as root)
# when COMMAND is missing, and stops the SERVICE the package may start on its
# default port: the benchmark runs its own. Exits 2 when it cannot install.
need_server() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "$bench_name: $1 is missing; install it with: sudo apt-get install $2" >&2
        exit 2
    fi
    echo "Installing $2"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$2" >/dev/null
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$3" >/dev/null 2>&1 || true; fi
}

# make_tmp NAME: sets tmp to a new dir /tmp/dsync-NAME-XXXXXX, removed on exit
# after every process in pids is stopped.
make_tmp() {
    tmp=$(mktemp -d "/tmp/dsync-$1-XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# SIGTERM to every started process, SIGKILL to those alive after 5 s, then
# reap them and remove the dir.
cleanup() {
    local p alive i
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}

# need_ports COUNT: sets base to the first of COUNT consecutive free
# loopback ports (pick_ports); exits 1 when it finds none.
need_ports() {
    base=$(pick_ports "$1") || {
        echo "$bench_name: found no free ports" >&2
        exit 1
    }
}

# need_pairs DEFAULT: sets pairs from PAIRS, or DEFAULT; exits 2 unless it
# is 1 to 99.
need_pairs() {
    pairs=${PAIRS:-$1}
    [[ "$pairs" =~ ^[1-9][0-9]?$ ]] || {
        echo "$bench_name: PAIRS must be 1 to 99, not '$pairs'" >&2
        exit 2
    }
}

# pick_ports COUNT: prints the first of COUNT consecutive ports that no TCP
# socket uses, from a random base; fails after 50 tries.
pick_ports() {
    local used base p free try
    for ((try = 0; try < 50; try++)); do
        used=$(ss -Htan | awk '{ n = split($4, a, ":"); print a[n] }' | sort -u)
        # Below the kernel's range for outgoing connections (32768 on), so
        # no connect takes one of them before its server binds it.
        base=$((10000 + RANDOM % 20000))
        free=1
        for ((p = base; p < base + $1; p++)); do
            if grep -qx "$p" <<<"$used"; then
                free=0
                break
            fi
        done
        if [ "$free" = 1 ]; then
            echo "$base"
            return 0
        fi
    done
    return 1
}

alive() { kill -0 "$1" 2>/dev/null; }

# start_dsync_cluster NODES HTTP_PORT PEER_PORT: starts NODES dsyncd nodes
# (the queue in Redis at $dsync_redis_url when the caller set it)
# (1 runs alone; more form one cluster) on 127.0.0.1, node i on HTTP port
# HTTP_PORT+i-1 and peer port PEER_PORT+i-1, data in $tmp/dsync/node$i, log
# in $tmp/dsync$i.log. Sets dsync_nodes, dsync_http[i], dsync_peer[i],
# dsync_pid[i] and dsync_eps (the HTTP endpoints, comma-separated).
start_dsync_cluster() {
    local i peers=""
    dsync_nodes=$1
    dsync_eps=""
    for ((i = 1; i <= dsync_nodes; i++)); do
        dsync_http[i]=$(($2 + i - 1))
        dsync_peer[i]=$(($3 + i - 1))
    done
    if [ "$dsync_nodes" -gt 1 ]; then
        for ((i = 1; i <= dsync_nodes; i++)); do peers+="${peers:+,}$i=127.0.0.1:${dsync_peer[i]}"; done
    fi
    for ((i = 1; i <= dsync_nodes; i++)); do
        dsync_eps+="${dsync_eps:+,}127.0.0.1:${dsync_http[i]}"
        mkdir -p "$tmp/dsync/node$i"
        env DSYNC_NODE_ID="$i" DSYNC_HTTP_ADDR="127.0.0.1:${dsync_http[i]}" \
            DSYNC_PEER_ADDR="127.0.0.1:${dsync_peer[i]}" DSYNC_PEERS="$peers" \
            DSYNC_DATA_DIR="$tmp/dsync/node$i" DSYNC_LOG_LEVEL=warn \
            DSYNC_HTTP_THREADS="$http_threads" DSYNC_REDIS_URL="${dsync_redis_url:-}" \
            "$dsyncd" --env /dev/null >"$tmp/dsync$i.log" 2>&1 &
        pids+=($!)
        dsync_pid[i]=$!
    done
}

# 0 when every node answers, exactly one says it leads, and all name that
# node as leader: nodes that each run alone (all "leader") are not a cluster.
# 1 while not yet, 2 when a node has exited.
dsync_ready() {
    local i body leaders=0 ids=""
    for ((i = 1; i <= dsync_nodes; i++)); do
        alive "${dsync_pid[i]}" || return 2
        body=$(curl -sf -m 2 "http://127.0.0.1:${dsync_http[i]}/health") || return 1
        grep -q '"role": *"leader"' <<<"$body" && leaders=$((leaders + 1))
        ids+="$(sed -n 's/.*"leader_id": *\([0-9]*\).*/\1/p' <<<"$body") "
    done
    [ "$leaders" = 1 ] && [ "$(tr ' ' '\n' <<<"$ids" | sed '/^$/d' | sort -u | wc -l)" = 1 ]
}

# wait_ready SECONDS NAME...: calls each NAME_ready (0 ready, 1 not yet, 2
# gave up, e.g. its process exited) every 0.2 s until each is ready or gave
# up, for at most SECONDS; sets ready[NAME] to 1 or 0.
wait_ready() {
    local timeout=$1 s rc pending end
    shift
    for s in "$@"; do ready[$s]=0; done
    end=$((SECONDS + timeout))
    while ((SECONDS < end)); do
        pending=0
        for s in "$@"; do
            [ "${ready[$s]}" = 1 ] && continue
            rc=0
            "${s}_ready" || rc=$?
            if [ "$rc" = 0 ]; then ready[$s]=1; elif [ "$rc" = 1 ]; then pending=1; fi
        done
        [ "$pending" = 0 ] && break
        sleep 0.2
    done
}

# field LINE NAME: the value of NAME=value in a benchmark's output line.
field() { tr ' ' '\n' <<<"$1" | sed -n "s|^$2=||p"; }

# A reference redis-server on $redis_port, started by the caller as $redis_pid.
redis_ready() {
    alive "$redis_pid" || return 2
    [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]
}

# measure KEY READY-FLAG ARGS...: runs "$bench" ARGS (when the flag is 1),
# keeps its line in result[KEY] (failed=1 when there is none) and prints it.
# shellcheck disable=SC2034 # failed is the caller's to read
measure() {
    local key=$1 flag=$2 line=""
    shift 2
    if [ "$flag" = 1 ]; then
        line=$("$bench" "$@" 2>>"$tmp/bench.err") || true
    fi
    [ -n "$line" ] || failed=1
    result[$key]=$line
    echo "  ${line:-$key: no result}"
}

# cell KEY FIELD: FIELD of result[KEY], or "-".
cell() {
    local v="" line=${result[$1]:-}
    [ -n "$line" ] && v=$(field "$line" "$2")
    echo "${v:--}"
}

# median_pair RATIO...: the position (from 1) of the median ratio, the
# lower middle one for an even count; ratios that are "-" left out; nothing
# when none is a number. This machine's speed drifts between runs minutes
# apart, so a target's ratio is taken from back-to-back pairs of dsync and
# its reference, and the median pair stands.
median_pair() {
    local i=0 r
    for r in "$@"; do
        i=$((i + 1))
        echo "$r $i"
    done | awk '$1 != "-"' | sort -n | awk '{ r[NR] = $2 } END { if (NR) print r[int((NR + 1) / 2)] }'
}

# paired NAME COUNT READY-A "ARGS-A" READY-B "ARGS-B": COUNT back-to-back
# pairs of measurements, A (dsync) then B (its reference), each line kept in
# result["NAME a P"] and result["NAME b P"]. Sets paired_ratio[NAME] to the
# median pair's A/B ratio of op/s ("-" when no pair gave one) and
# paired_all[NAME] to every pair's, in order. ARGS are split on blanks
# (none of the benchmarks' arguments holds one).
declare -A paired_ratio paired_all
# shellcheck disable=SC2034 # the callers read paired_ratio and paired_all
paired() {
    local name=$1 count=$2 p mid rs=()
    for ((p = 1; p <= count; p++)); do
        # shellcheck disable=SC2086 # split on purpose
        measure "$name a $p" "$3" $4
        # shellcheck disable=SC2086
        measure "$name b $p" "$5" $6
        rs+=("$(ratio "$(cell "$name a $p" ops/s)" "$(cell "$name b $p" ops/s)")")
    done
    mid=$(median_pair "${rs[@]}")
    paired_ratio[$name]=-
    [ -n "$mid" ] && paired_ratio[$name]=${rs[mid - 1]}
    paired_all[$name]="${rs[*]}"
}

# ratio A B [SUFFIX]: A / B to two decimals and SUFFIX, or "-" when either
# is missing or B is 0.
ratio() {
    awk -v a="$1" -v b="$2" -v x="${3:-}" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-";
                                                 else printf "%.2f%s\n", a / b, x }'
}
