# tests/lib/checks.sh: what the shell tests share (sourced by bash, after
# the caller set $tmp to its own mktemp dir): PASS/FAIL lines with totals in
# cmocka's words (scripts/run-tests.sh counts those), a quiet check runner
# that shows a failing command's output, and processes started in the
# background (their PIDs in pids) killed on exit along with $tmp.
# shellcheck shell=bash
# shellcheck disable=SC2154 # tmp and node_pid come from the caller

log=$tmp/check.log
passed=0
failed=0
pids=()

pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

# check DESCRIPTION COMMAND...: runs the command quietly; on failure shows
# the last lines of its output.
check() {
    local what=$1
    shift
    if "$@" >"$log" 2>&1; then
        pass "$what"
    else
        fail "$what"
        tail -n 40 "$log" | sed 's/^/    /'
    fi
}

# count_lines FILE: adds the PASS/FAIL lines a helper printed to the totals.
count_lines() {
    passed=$((passed + $(grep -c '^PASS: ' "$1")))
    failed=$((failed + $(grep -c '^FAIL: ' "$1")))
}

# print_totals LABEL: the closing lines; returns nonzero when a check failed.
print_totals() {
    echo "[==========] $1: $((passed + failed)) check(s) run."
    echo "[  PASSED  ] $passed test(s)."
    [ "$failed" -gt 0 ] && echo "[  FAILED  ] $failed test(s), listed above."
    [ "$failed" -eq 0 ]
}

# cluster_ready PORT...: 0 when every node (their PIDs in node_pid[1..],
# HTTP on these ports) answers /health, exactly one says it leads and all
# name it; 1 while not yet; 2 when a node has exited.
cluster_ready() {
    local i=0 port body leaders=0 ids=""
    for port in "$@"; do
        i=$((i + 1))
        kill -0 "${node_pid[i]}" 2>/dev/null || { echo "node$i exited"; return 2; }
        body=$(curl -sf -m 2 "http://127.0.0.1:$port/health") || return 1
        grep -q '"role": *"leader"' <<<"$body" && leaders=$((leaders + 1))
        ids+="$(sed -n 's/.*"leader_id": *\([0-9]*\).*/\1/p' <<<"$body") "
    done
    [ "$leaders" = 1 ] && [ "$(tr ' ' '\n' <<<"$ids" | sed '/^$/d' | sort -u | wc -l)" = 1 ]
}

# wait_cluster PORT...: cluster_ready every 0.1 s, for 20 s at most.
wait_cluster() {
    local end=$((SECONDS + 20)) rc
    while ((SECONDS < end)); do
        cluster_ready "$@"
        rc=$?
        [ "$rc" = 0 ] && return 0
        [ "$rc" = 2 ] && return 1
        sleep 0.1
    done
    return 1
}

checks_cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap checks_cleanup EXIT
trap 'exit 130' INT TERM
