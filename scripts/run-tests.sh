#!/usr/bin/env bash
# Runs test binaries one after another and sums up: each is a cmocka program
# whose exit status is the number of its failed tests.
# Usage: run-tests.sh LABEL BINARY...
set -u
label=$1; shift
passed=0; failed=0; failed_names=()
for t in "$@"; do
    name=$(basename "$t")
    echo "=== $label: $name"
    start=$(date +%s)
    if "$t"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1)); failed_names+=("$name")
    fi
    echo "=== $label: $name done in $(( $(date +%s) - start ))s"
done
[ $failed -gt 0 ] && echo "$label failures: ${failed_names[*]}"
echo "$label: $passed passed, $failed failed"
[ $failed -eq 0 ]
