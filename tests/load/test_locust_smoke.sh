#!/usr/bin/env bash
# test_locust_smoke.sh: benchmarks/load_test_scenarios.py works against a real cluster.
#
# Starts three dsyncd nodes on free 127.0.0.1 ports with fresh data dirs in a
# temp dir, waits (bounded, polling /health) until they agree on a leader,
# then runs the Locust scenarios headless for a few seconds
# (DSYNC_LOCUST_SECONDS, default 4) with 6 users spread over the three nodes,
# the way the file's header says to run them. Passes when Locust exits 0,
# printed its "dsync-locust:" totals, made more than zero requests, had zero
# failures (a fencing token going backwards or a refused ack counts as one)
# and touched locks and the queue; then stops the nodes by PID and checks
# that each exits 0. Cache traffic is part of the mix (a stale read fails).
#
# Prints PASS/FAIL per check and cmocka-style totals (scripts/run-tests.sh
# counts them). About 10 s; Locust's import alone takes about a second.
# Skipped under SAN=1 by the Makefile (a smoke test of the scenario file, not
# of memory). Installs python3-locust as root when it is missing.
# Usage: tests/load/test_locust_smoke.sh   (after make; DSYNCD=path picks the binary)
# shellcheck disable=SC2317  # the check functions below run through check()
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
dsyncd=${DSYNCD:-$top/bin/dsyncd}
secs=${DSYNC_LOCUST_SECONDS:-4}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsync-locust.XXXXXX")
py=/usr/bin/python3
[ -x "$py" ] || py=python3
# shellcheck source=tests/lib/checks.sh
source "$top/tests/lib/checks.sh"

finish() {
    if [ "$failed" -gt 0 ]; then
        for f in "$tmp"/node*.log; do
            [ -f "$f" ] && { echo "--- $(basename "$f") (last lines)"; tail -n 10 "$f"; }
        done
    fi
    print_totals "locust smoke"
    exit
}

have_locust() { command -v locust >/dev/null 2>&1 && "$py" -c 'import locust' 2>/dev/null; }
install_locust() {
    have_locust && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing python3-locust"
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
            python3-locust >/dev/null 2>&1
    fi
    have_locust
}
check "Locust is installed (Debian's python3-locust)" install_locust
[ -x "$dsyncd" ] || fail "dsyncd binary exists ($dsyncd; run make)"
[ "$failed" -eq 0 ] || finish

# ---- a fresh three-node cluster ---------------------------------------------------

read -r h1 h2 h3 p1 p2 p3 < <("$py" "$top/tests/lib/free_ports.py" 6)
http=("$h1" "$h2" "$h3")
peers="1=127.0.0.1:$p1,2=127.0.0.1:$p2,3=127.0.0.1:$p3"
peer=("$p1" "$p2" "$p3")
node_pid=()
for i in 1 2 3; do
    mkdir -p "$tmp/data$i"
    env -i PATH=/usr/bin:/bin DSYNC_NODE_ID="$i" DSYNC_HTTP_ADDR="127.0.0.1:${http[i - 1]}" \
        DSYNC_PEER_ADDR="127.0.0.1:${peer[i - 1]}" DSYNC_PEERS="$peers" DSYNC_DATA_DIR="$tmp/data$i" \
        DSYNC_LOG_LEVEL=warn DSYNC_HTTP_THREADS=32 "$dsyncd" --env /dev/null >"$tmp/node$i.log" 2>&1 &
    node_pid[i]=$!
    pids+=($!)
done
check "three nodes on free ports agree on one leader (polled /health, 20 s at most)" \
    wait_cluster "${http[@]}"
[ "$failed" -eq 0 ] || finish

# ---- Locust, headless and bounded ----------------------------------------------------

start=$SECONDS
(cd "$top" && DSYNC_LOCUST_HOSTS="http://127.0.0.1:$h1,http://127.0.0.1:$h2,http://127.0.0.1:$h3" \
    timeout -k 5 $((secs + 40)) locust -f benchmarks/load_test_scenarios.py --headless -u 6 -r 6 \
    -t "${secs}s" --stop-timeout 5 --only-summary --loglevel WARNING) >"$tmp/locust.out" 2>&1
locust_rc=$?
echo "    locust ran for $((SECONDS - start)) s (exit $locust_rc):"
sed 's/^/    /' "$tmp/locust.out" | tail -n 40
summary=$(grep -m1 '^dsync-locust: requests=' "$tmp/locust.out")
requests=$(sed -n 's/.* requests=\([0-9]*\) .*/\1/p' <<<"$summary")
failures=$(sed -n 's/.* failures=\([0-9]*\) .*/\1/p' <<<"$summary")
if [ "$locust_rc" -eq 0 ]; then pass "locust exits 0"; else fail "locust exits 0 (exit $locust_rc)"; fi
if [ -n "$summary" ]; then pass "locust printed the dsync-locust totals"; else fail "locust printed the dsync-locust totals"; fi
if [ "${requests:-0}" -gt 0 ]; then pass "requests made: $requests"; else fail "requests made: ${requests:-none}"; fi
if [ -n "$failures" ] && [ "$failures" -eq 0 ]; then pass "no failed request"; else fail "failed requests: ${failures:-unknown}"; fi
for name in "/locks/acquire X" "/locks/release" "/queue/enqueue" "/queue/consume" "/queue/ack" \
    "/cache/put" "/cache/get"; do
    if grep -q "^dsync-locust:   [A-Z]* $name: [1-9]" "$tmp/locust.out"; then
        pass "scenario traffic reached $name"
    else
        fail "scenario traffic reached $name"
    fi
done

# ---- stop by PID --------------------------------------------------------------------

for i in 1 2 3; do kill -TERM "${node_pid[i]}" 2>/dev/null; done
end=$((SECONDS + 15))
for i in 1 2 3; do
    while kill -0 "${node_pid[i]}" 2>/dev/null && ((SECONDS < end)); do sleep 0.1; done
    if kill -0 "${node_pid[i]}" 2>/dev/null; then
        fail "node$i exits within 15 s of SIGTERM"
        continue
    fi
    wait "${node_pid[i]}"
    rc=$?
    if [ "$rc" -eq 0 ]; then pass "node$i exits 0 on SIGTERM"; else fail "node$i exits 0 on SIGTERM (exit $rc)"; fi
done
finish
