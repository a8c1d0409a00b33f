#!/usr/bin/env bash
# test_compose.sh: docker/docker-compose.yml, checked and then run without Docker.
#
# No Docker engine runs on the build machines, so the compose cluster is run
# the way its containers would run it, as plain processes:
#   1. `docker-compose config` accepts docker/docker-compose.yml with
#      .env.example as its env file (docker-compose from Debian, installed
#      here as root when missing, like scripts/deps.sh does);
#   2. every variable `dsyncd --help` lists is in .env.example and in
#      docs/deployment_guide.md, .env.example holds no DSYNC_ name dsyncd
#      would refuse, and docker/Dockerfile.node's runtime stage installs every
#      Debian package whose libraries the built dsyncd loads (ldd);
#   3. compose_nodes.py checks the compose model (Redis with appendonly yes,
#      a redis-cli ping healthcheck and a volume; node1..3 on host ports
#      8081..8083, after Redis is healthy, each with its data volume, every
#      variable set, shared ones equal to .env.example) and writes each
#      node's environment with host names and ports mapped to free
#      127.0.0.1 ports and data directories in a temp dir;
#   4. a real redis-server (appendonly yes) and the three nodes start with
#      exactly those environments (`--env /dev/null`: nothing else), and
#      /health is polled until one leader is agreed on (bounded);
#   5. docker/healthcheck.sh (the image's HEALTHCHECK) passes on each node
#      and fails on a closed port;
#   6. seed_scenarios.py runs DESIGN.md's lock and queue seed scenarios
#      through different nodes;
#   7. everything is stopped by PID with SIGTERM: each must exit 0 within
#      15 s, and a write to Redis must be in its append-only file.
#
# Prints PASS/FAIL per check and cmocka-style totals (scripts/run-tests.sh
# counts them). Takes about 5 s. Skipped under SAN=1 by the Makefile: it
# would only re-run the same scenarios the integration tests run there.
# Usage: tests/docker/test_compose.sh    (after make; DSYNCD=path picks the binary)
# shellcheck disable=SC2317  # the check functions below run through check()
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
dsyncd=${DSYNCD:-$top/bin/dsyncd}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsync-compose.XXXXXX")
compose_file=$top/docker/docker-compose.yml
py=/usr/bin/python3
[ -x "$py" ] || py=python3
# shellcheck source=tests/lib/checks.sh
source "$top/tests/lib/checks.sh"

finish() {
    print_totals "docker compose"
    exit
}
node_log_tails() {
    local f
    for f in "$tmp"/*.log; do
        [ "$f" = "$log" ] && continue
        echo "--- $(basename "$f") (last lines)"
        tail -n 15 "$f"
    done
}

# need COMMAND PACKAGE: installs PACKAGE as root when COMMAND is missing.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "    installing $2"
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "$2" \
            >/dev/null 2>&1
    fi
    command -v "$1" >/dev/null 2>&1
}
check "docker-compose is installed (Debian's docker-compose)" need docker-compose docker-compose
check "redis-server is installed" need redis-server redis-server
check "python3-yaml is installed" "$py" -c 'import yaml'
if [ ! -x "$dsyncd" ]; then
    fail "dsyncd binary exists ($dsyncd; run make)"
    finish
fi

# ---- 1. docker-compose config ---------------------------------------------------

compose_config() {
    timeout 60 docker-compose -f "$compose_file" --env-file "$top/.env.example" config >"$tmp/config.yml"
}
check "docker-compose -f docker/docker-compose.yml --env-file .env.example config" compose_config
[ -s "$tmp/config.yml" ] || finish

# ---- 2. the variables, the image's libraries ----------------------------------------

"$dsyncd" --help >"$tmp/help.txt"
help_vars=$(sed -n 's/^ *\(DSYNC_[A-Z0-9_]*\) .*/\1/p' "$tmp/help.txt" | sort -u)
[ -n "$help_vars" ] || fail "dsyncd --help lists DSYNC_ variables"
# names_in FILE: every DSYNC_ name FILE mentions.
names_in() { grep -o 'DSYNC_[A-Z0-9_]*[A-Z0-9]' "$1" | sort -u; }
covers() {
    local missing
    missing=$(comm -23 <(echo "$help_vars") <(names_in "$1"))
    [ -z "$missing" ] || { echo "not mentioned in $1:"; echo "$missing"; return 1; }
}
check "every variable of dsyncd --help is in .env.example" covers "$top/.env.example"
check "every variable of dsyncd --help is in docs/deployment_guide.md" covers "$top/docs/deployment_guide.md"
only_known() {
    local unknown
    unknown=$(comm -13 <(echo "$help_vars") <(sed -n 's/^\(DSYNC_[A-Z0-9_]*\)=.*/\1/p' "$1" | sort -u))
    [ -z "$unknown" ] || { echo "dsyncd would refuse to start with these in .env:"; echo "$unknown"; return 1; }
}
check ".env.example sets no DSYNC_ name dsyncd does not know" only_known "$top/.env.example"

# The packages named in the runtime stage (after the last FROM) of Dockerfile.node.
runtime_pkgs() {
    local f=$top/docker/Dockerfile.node
    awk -v last="$(grep -c '^FROM ' "$f")" '/^FROM /{n++} n == last' "$f" |
        sed -n '/apt-get install/,/rm -rf/p' | tr -s ' \t\134' '\n' | grep -E '^lib[a-z0-9.+-]+$' | sort -u
}
libs_covered() {
    local want have missing lib path pkg
    have=$(runtime_pkgs)
    [ -n "$have" ] || { echo "no runtime packages found in Dockerfile.node"; return 1; }
    echo "runtime stage installs: $(echo "$have" | tr '\n' ' ')"
    want=""
    while read -r lib path; do
        case $lib in libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | linux-vdso*) continue ;; esac
        pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)
        [ -n "$pkg" ] || pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)
        echo "$lib -> ${pkg:-?}"
        want+="${pkg:-$lib}"$'\n'
    done < <(ldd "$dsyncd" | awk '$2 == "=>" {print $1, $3}')
    missing=$(comm -23 <(echo -n "$want" | sort -u) <(echo "$have"))
    [ -z "$missing" ] || { echo "dsyncd loads libraries from packages the runtime stage lacks:"; echo "$missing"; return 1; }
}
if [[ $dsyncd == *asan* ]]; then
    pass "(the image's library check needs a release build: skipped for $dsyncd)"
else
    check "Dockerfile.node's runtime stage installs every package dsyncd's libraries come from" libs_covered
fi

# ---- 3. the compose model as plain processes --------------------------------------------

ports=$("$py" "$top/tests/lib/free_ports.py" 7) || { fail "found free ports"; finish; }
read -r redis_port h1 h2 h3 p1 p2 p3 <<<"$ports"
http_ports=("$h1" "$h2" "$h3")

"$py" "$here/compose_nodes.py" "$tmp/config.yml" "$top/.env.example" "$tmp/help.txt" "$tmp" \
    "$redis_port" "$h1,$h2,$h3" "$p1,$p2,$p3" >"$tmp/model.out" 2>&1
cat "$tmp/model.out"
count_lines "$tmp/model.out"
grep -q '^Traceback' "$tmp/model.out" && fail "compose_nodes.py ran to the end"
for i in 1 2 3; do [ -s "$tmp/node$i.env" ] || { fail "node$i's environment was written"; finish; }; done

# ---- 4. Redis and the three nodes ------------------------------------------------------

# deadline_loop SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds or time is up.
deadline_loop() {
    local end=$((SECONDS + $1))
    shift
    while ((SECONDS < end)); do
        "$@" && return 0
        sleep 0.1
    done
    "$@"
}
mkdir -p "$tmp/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$tmp/redis" --appendonly yes \
    --save '' --daemonize no --logfile "$tmp/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
redis_up() { [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]; }
check "redis-server (appendonly yes) answers PING on 127.0.0.1:$redis_port" deadline_loop 10 redis_up
aof_on() { timeout 2 redis-cli -h 127.0.0.1 -p "$redis_port" config get appendonly | grep -qx yes; }
check "redis-server runs with appendonly yes" aof_on

node_pid=()
for i in 1 2 3; do
    mapfile -t vars <"$tmp/node$i.env"
    env -i PATH=/usr/bin:/bin "${vars[@]}" "$dsyncd" --env /dev/null >"$tmp/node$i.log" 2>&1 &
    node_pid[i]=$!
    pids+=($!)
done

start=$SECONDS
if check "the three nodes agree on one leader (polled /health, 20 s at most)" \
    wait_cluster "${http_ports[@]}"; then
    echo "    ready after $((SECONDS - start)) s"
else
    node_log_tails
    finish
fi

# ---- 5. the image's HEALTHCHECK ----------------------------------------------------------

for i in 1 2 3; do
    check "docker/healthcheck.sh passes on node$i (DSYNC_HTTP_ADDR)" \
        env DSYNC_HTTP_ADDR="127.0.0.1:${http_ports[i - 1]}" timeout 5 "$top/docker/healthcheck.sh"
done
closed_fails() { ! timeout 5 "$top/docker/healthcheck.sh" "127.0.0.1:$redis_port" && \
    ! timeout 5 "$top/docker/healthcheck.sh" "127.0.0.1:1"; }
check "docker/healthcheck.sh fails on a port that is not dsyncd (Redis, a closed port)" closed_fails

# ---- 6. the seed scenarios -------------------------------------------------------------

timeout -k 5 60 "$py" "$here/seed_scenarios.py" "http://127.0.0.1:$h1" "http://127.0.0.1:$h2" \
    "http://127.0.0.1:$h3" >"$tmp/scenarios.out" 2>&1
sc_rc=$?
cat "$tmp/scenarios.out"
count_lines "$tmp/scenarios.out"
[ "$sc_rc" -eq 0 ] || [ "$(grep -c '^FAIL: ' "$tmp/scenarios.out")" -gt 0 ] ||
    fail "seed_scenarios.py exited $sc_rc without naming a failure"

# ---- 7. stop by PID ----------------------------------------------------------------------

# A write for Redis to log (the nodes do not use Redis for the queue yet).
redis_write() { [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$redis_port" set dsync:compose-test ok)" = OK ]; }
check "redis-server takes a write" redis_write

# stop NAME=PID...: SIGTERM to all at once, 15 s for all to exit, then each
# exit status must be 0.
stop() {
    local item name pid end=$((SECONDS + 15)) rc alive
    for item in "$@"; do
        name=${item%%=*} pid=${item#*=}
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
        else
            wait "$pid"
            fail "$name was still running before the stop (it exited with $?)"
        fi
    done
    while ((SECONDS < end)); do
        alive=0
        for item in "$@"; do kill -0 "${item#*=}" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for item in "$@"; do
        name=${item%%=*} pid=${item#*=}
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid"
            wait "$pid" 2>/dev/null
            fail "$name exits within 15 s of SIGTERM"
            continue
        fi
        wait "$pid"
        rc=$?
        if [ "$rc" -eq 0 ]; then pass "$name exits 0 on SIGTERM"; else fail "$name exits 0 on SIGTERM (exit $rc)"; fi
    done
}
stop node1="${node_pid[1]}" node2="${node_pid[2]}" node3="${node_pid[3]}"
stop redis-server="$redis_pid"
aof_written() { grep -rqs 'dsync:compose-test' "$tmp/redis"; }
check "redis-server logged the write in its append-only file" aof_written
[ "$failed" -gt 0 ] && node_log_tails
finish
