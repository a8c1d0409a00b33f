#!/usr/bin/env bash
# Runs cmocka test binaries one after another and sums up their results.
# Each binary prints "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)...";
# a binary that dies before its summary counts as one failure.
# VALGRIND, when set, is a command prefix (make test-valgrind).
# Usage: run-tests.sh LABEL BINARY...
set -u
label=$1; shift
passed=0; failed=0; broken=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
    name=$(basename "$t")
    echo "=== $label: $name"
    start=$(date +%s)
    ${VALGRIND:-} "$t" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    if [ "$status" -ne 0 ] && [ -z "$f" ]; then failed=$((failed + 1)); fi
    [ "$status" -ne 0 ] && broken+=("$name")
    echo "=== $label: $name finished in $(( $(date +%s) - start ))s (exit $status)"
done
[ ${#broken[@]} -gt 0 ] && echo "$label: failing binaries: ${broken[*]}"
echo "$label: $passed passed, $failed failed"
[ ${#broken[@]} -eq 0 ]
