#!/usr/bin/env bash
# test_install.sh: libdsync the way a program outside this tree sees it.
#
# Installs into a temporary prefix with `make install PREFIX=...`, checks the
# installed files (public headers only, the shared library's soname and
# exports, dsync.pc), builds every examples/*.c and the header checks in this
# directory with nothing but `pkg-config --cflags --libs dsync` (shared, then
# `--static` against libdsync.a), runs them, checks DESTDIR staging, and
# finally runs `make uninstall` and checks that only empty directories remain.
#
# Prints a PASS/FAIL line per check and cmocka-style totals, so that
# scripts/run-tests.sh counts it with the test binaries (make check).
# Exits non-zero on any failure. Every step runs under a timeout.
# Usage: tests/packaging/test_install.sh        (from anywhere; needs cc, c++, pkg-config)
# shellcheck disable=SC2317  # the check functions below run through check()
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsync-packaging.XXXXXX")
prefix=$tmp/prefix
# shellcheck source=tests/lib/checks.sh
source "$top/tests/lib/checks.sh"
mkdir -p "$tmp/shared" "$tmp/static" "$tmp/aside"

version=$(sed -n 's/.*DSYNC_VERSION_STRING "\(.*\)".*/\1/p' "$top/include/dsync/version.h")
major=${version%%.*}
CC=${CC:-cc}
CXX=${CXX:-g++}

finish() {
    print_totals packaging
    exit
}
# make in the top of the tree, as its own top-level run (not a part of the
# make check that may have started us: no inherited jobserver or variables).
mk() { timeout -k 10 600 env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$top" --no-print-directory "$@"; }

# Every file install is expected to put under a prefix, relative to it.
expected_files() {
    {
        echo include/dsync.h
        for h in "$top"/include/dsync/*.h; do echo "include/dsync/${h##*/}"; done
        printf '%s\n' lib/libdsync.a lib/libdsync.so "lib/libdsync.so.$major" \
            "lib/libdsync.so.$version" lib/pkgconfig/dsync.pc
    } | sort
}
files_under() { (cd "$1" && find . ! -type d | sed 's|^\./||' | sort); }
same_files() { diff <(expected_files) <(files_under "$1"); }
nothing_but_dirs() {
    local left
    left=$(cd "$1" && find . ! -type d)
    [ -z "$left" ] || { echo "left behind:"; echo "$left"; return 1; }
}

# ---- install -----------------------------------------------------------------

check "make install PREFIX=<tmp>" mk install PREFIX="$prefix"
[ -f "$prefix/lib/pkgconfig/dsync.pc" ] || finish
check "installed files are exactly the public headers, both libraries and dsync.pc" \
    same_files "$prefix"

# Public headers include only standard C headers and each other.
headers_self_contained() {
    local h inc bad=0
    for h in "$prefix/include/dsync.h" "$prefix"/include/dsync/*.h; do
        while read -r inc; do
            case $inc in
            '<'*)
                case ${inc:1:-1} in
                assert.h | complex.h | ctype.h | errno.h | fenv.h | float.h | inttypes.h | \
                    iso646.h | limits.h | locale.h | math.h | setjmp.h | signal.h | stdalign.h | \
                    stdarg.h | stdatomic.h | stdbool.h | stddef.h | stdint.h | stdio.h | stdlib.h | \
                    stdnoreturn.h | string.h | tgmath.h | threads.h | time.h | uchar.h | wchar.h | \
                    wctype.h | dsync.h | dsync/*.h) ;;
                *) echo "$h includes $inc"; bad=1 ;;
                esac ;;
            '"'*)
                inc=${inc:1:-1}
                [ -f "$(dirname "$h")/$inc" ] || [ -f "$prefix/include/$inc" ] ||
                    { echo "$h includes \"$inc\", not installed"; bad=1; } ;;
            esac
        done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*\([<"][^>"]*[>"]\).*/\1/p' "$h")
    done
    return "$bad"
}
check "installed headers include only the C library and each other" headers_self_contained

so_is_versioned() {
    [ "$(readlink "$prefix/lib/libdsync.so")" = "libdsync.so.$major" ] &&
        [ "$(readlink "$prefix/lib/libdsync.so.$major")" = "libdsync.so.$version" ] &&
        readelf -d "$prefix/lib/libdsync.so.$version" | grep -q "SONAME.*\[libdsync.so.$major\]"
}
check "libdsync.so -> libdsync.so.$major -> libdsync.so.$version, soname libdsync.so.$major" \
    so_is_versioned
only_public_exports() {
    local others
    others=$(nm -D --defined-only "$prefix/lib/libdsync.so.$version" | awk '{print $NF}' |
        grep -v '^dsync_')
    [ -z "$others" ] || { echo "exported besides dsync_*:"; echo "$others"; return 1; }
}
check "libdsync.so exports only dsync_* symbols" only_public_exports

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
pc_version() { [ "$(pkg-config --modversion dsync)" = "$version" ]; }
check "pkg-config --modversion dsync is $version" pc_version
cflags_libs=$(pkg-config --cflags --libs dsync) || cflags_libs=
static_cflags_libs=$(pkg-config --static --cflags --libs dsync) || static_cflags_libs=
echo "    pkg-config --cflags --libs dsync:          $cflags_libs"
echo "    pkg-config --static --cflags --libs dsync: $static_cflags_libs"

# ---- the headers from C99, C11 and C++ ---------------------------------------

if ! command -v "$CXX" >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "    installing g++ for the C++ header check"
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends g++ \
        >/dev/null 2>&1
fi

# compile_run DESCRIPTION OUTPUT COMMAND...: builds OUTPUT, then runs it on the installed .so.
compile_run() {
    local what=$1 out=$2
    shift 2
    check "$what: compiles" timeout 120 "$@" -o "$out"
    [ -x "$out" ] && check "$what: runs, dsync_version() = DSYNC_VERSION_STRING" \
        env LD_LIBRARY_PATH="$prefix/lib" timeout 30 "$out"
}
# Flags as given: pkg-config's output is a list of words.
# shellcheck disable=SC2086
{
    strict="-pedantic -Wall -Wextra -Werror"
    compile_run "header_check.c as C99" "$tmp/shared/hc99" \
        "$CC" -std=c99 $strict "$here/header_check.c" $cflags_libs
    compile_run "header_check.c as C11" "$tmp/shared/hc11" \
        "$CC" -std=c11 $strict "$here/header_check.c" $cflags_libs
    if command -v "$CXX" >/dev/null 2>&1; then
        compile_run "header_check.cpp as C++11" "$tmp/shared/hcxx" \
            "$CXX" -std=c++11 $strict "$here/header_check.cpp" $cflags_libs
    else
        fail "no C++ compiler ($CXX) for the C++ header check"
    fi

    # Each header on its own, in each language.
    alone() {
        local h std
        for h in dsync.h $(cd "$prefix/include" && ls dsync/*.h); do
            for std in c99 c11; do
                printf '#include <%s>\n' "$h" |
                    "$CC" -std=$std $strict -fsyntax-only $cflags_libs -x c - || return 1
            done
            if command -v "$CXX" >/dev/null 2>&1; then
                printf '#include <%s>\n' "$h" |
                    "$CXX" -std=c++11 $strict -fsyntax-only $cflags_libs -x c++ - || return 1
            fi
        done
    }
    check "each installed header compiles on its own (C99, C11, C++11)" alone
}

# ---- the examples, shared --------------------------------------------------------

# run_example NAME BINARY LIBRARY_PATH: an example that needs no cluster runs
# to completion and its output is checked (lock_demo opens a memory-only node
# inside itself, embedded_cluster three nodes); any other example talks to a
# running cluster and only has to load and start here (--help; the examples
# against a cluster are tests/integration/test_integ_examples.c).
run_example() {
    local name=$1 bin=$2 status out
    case $name in
    lock_demo)
        out=$(LD_LIBRARY_PATH=$3 timeout -k 5 30 "$bin" </dev/null 2>&1)
        status=$?
        echo "$out"
        [ "$status" -eq 0 ] && grep -q 'granted, fencing token' <<<"$out" &&
            grep -q 'deadlock, cycle:' <<<"$out"
        ;;
    embedded_cluster)
        # Three nodes inside the program on free loopback ports; no dsyncd.
        out=$(LD_LIBRARY_PATH=$3 TMPDIR=$tmp timeout -k 5 60 "$bin" </dev/null 2>&1)
        status=$?
        echo "$out"
        [ "$status" -eq 0 ] && grep -q '^result: ok$' <<<"$out"
        ;;
    *)
        LD_LIBRARY_PATH=$3 timeout -k 5 10 "$bin" --help </dev/null 2>&1
        status=$?
        echo "(exit $status)"
        # 124: still running when the timeout stopped it, so it started;
        # 126/127: not loadable; above 128: killed by a signal.
        [ "$status" -le 124 ]
        ;;
    esac
}
needs_libdsync_so() { readelf -d "$1" | grep -q "NEEDED.*\[libdsync.so.$major\]"; }
no_libdsync_so() { ! readelf -d "$1" | grep -q 'NEEDED.*libdsync'; }

examples=("$top"/examples/*.c)
[ -e "${examples[0]}" ] || { fail "no examples in examples/"; examples=(); }
for ex in "${examples[@]}"; do
    name=$(basename "$ex" .c)
    # shellcheck disable=SC2086
    check "example $name (shared): cc $name.c \$(pkg-config --cflags --libs dsync)" \
        timeout 120 "$CC" -o "$tmp/shared/$name" "$ex" $cflags_libs
    [ -x "$tmp/shared/$name" ] || continue
    check "example $name (shared): needs libdsync.so.$major" needs_libdsync_so "$tmp/shared/$name"
    check "example $name (shared): runs" run_example "$name" "$tmp/shared/$name" "$prefix/lib"
done

# ---- the examples, static ----------------------------------------------------------

# With the shared library set aside, -ldsync can only find libdsync.a: the
# link then succeeds only if Libs.private names everything libdsync.a needs.
mv "$prefix"/lib/libdsync.so* "$tmp/aside/"
for ex in "${examples[@]}"; do
    name=$(basename "$ex" .c)
    # shellcheck disable=SC2086
    check "example $name (static): cc $name.c \$(pkg-config --static --cflags --libs dsync)" \
        timeout 120 "$CC" -o "$tmp/static/$name" "$ex" $static_cflags_libs
    [ -x "$tmp/static/$name" ] || continue
    check "example $name (static): no libdsync.so needed" no_libdsync_so "$tmp/static/$name"
    check "example $name (static): runs" run_example "$name" "$tmp/static/$name" ""
done
# shellcheck disable=SC2086
check "header_check.c (static, C11): compiles" timeout 120 "$CC" -std=c11 \
    -pedantic -Wall -Wextra -Werror -o "$tmp/static/hc11" "$here/header_check.c" $static_cflags_libs
[ -x "$tmp/static/hc11" ] && check "header_check.c (static, C11): runs" timeout 30 "$tmp/static/hc11"
# The examples may not reach every object in libdsync.a (hiredis is only used
# by the Redis store); linking all of it checks that Libs.private is complete.
whole=${static_cflags_libs/-ldsync/-Wl,--whole-archive -ldsync -Wl,--no-whole-archive}
# shellcheck disable=SC2086
check "all of libdsync.a links with pkg-config --static's Libs.private" timeout 120 "$CC" \
    -o "$tmp/static/whole" "$here/header_check.c" $whole
mv "$tmp/aside"/libdsync.so* "$prefix/lib/"

# ---- DESTDIR -------------------------------------------------------------------------

stage=$tmp/stage
check "make install DESTDIR=<tmp> PREFIX=/opt/dsync" mk install DESTDIR="$stage" PREFIX=/opt/dsync
staged_ok() {
    same_files "$stage/opt/dsync" &&
        grep -qx 'prefix=/opt/dsync' "$stage/opt/dsync/lib/pkgconfig/dsync.pc"
}
check "DESTDIR install: the same files under DESTDIR/PREFIX, dsync.pc names PREFIX" staged_ok
check "make uninstall DESTDIR=<tmp> PREFIX=/opt/dsync" mk uninstall DESTDIR="$stage" PREFIX=/opt/dsync
check "DESTDIR uninstall leaves only empty directories" nothing_but_dirs "$stage"

# ---- uninstall -----------------------------------------------------------------------

check "make uninstall PREFIX=<tmp>" mk uninstall PREFIX="$prefix"
check "uninstall leaves only empty directories under the prefix" nothing_but_dirs "$prefix"

finish
