# libdsync build. Plain make, incremental and parallel-safe.
#
#   make              lib/libdsync.a, lib/libdsync.so (+ soname links), bin/dsyncd, the examples
#   make test         installs missing Debian packages (as root), builds, runs every test
#   make test-asan    the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make run          three nodes on 127.0.0.1:8081-8083 (and a Redis) in the foreground
#   make run-node N=2 node 2 of that cluster again, after it exited
#   make bench        the benchmarks (see benchmarks/)
#   make test-packaging  installs into a temporary prefix, builds the examples with pkg-config
#   make test-docker  docker-compose config, then the compose cluster as plain processes
#   make test-load    a few seconds of the Locust scenarios against three nodes
#   make docs         renders docs/diagrams/*.dot to docs/img/*.svg (graphviz)
#   make test-examples   runs every example against a real three-node cluster
#   make install PREFIX=/usr/local   (DESTDIR honoured; make uninstall removes the same files)
#
# Variants build into their own tree: SAN=1 puts everything under build/asan.

CC      ?= cc
PREFIX  ?= /usr/local
SAN     ?=
SIM_SEEDS ?= 300
V ?= 0
Q := $(if $(filter 1,$(V)),,@)

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wno-unused-parameter
CSTD    := -std=c11 -D_GNU_SOURCE
DEPFLAGS = -MMD -MP
OPT     ?= -O2 -g

# The version comes from the header that states it: the soname and dsync.pc follow it.
VERSION       := $(shell sed -n 's/.*DSYNC_VERSION_STRING "\(.*\)".*/\1/p' include/dsync/version.h)
VERSION_MAJOR := $(firstword $(subst ., ,$(VERSION)))
SONAME        := libdsync.so.$(VERSION_MAJOR)

ifeq ($(SAN),1)
BUILD   := build/asan
OPT     := -O1 -g -fno-omit-frame-pointer
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
LIBA    := $(BUILD)/libdsync.a
LIBDIR_OUT := $(BUILD)
BIN     := $(BUILD)/bin
SHARED  :=
else
BUILD   := build/release
SANFLAGS :=
LIBA    := lib/libdsync.a
LIBDIR_OUT := lib
BIN     := bin
SHARED   = $(LIBSO)
endif
# The shared library: the file, the soname link the loader follows, the link -ldsync finds.
LIBSO_REAL   := $(LIBDIR_OUT)/libdsync.so.$(VERSION)
LIBSO_SONAME := $(LIBDIR_OUT)/$(SONAME)
LIBSO        := $(LIBDIR_OUT)/libdsync.so

CPPFLAGS := -Iinclude -Ilib
CFLAGS  := $(CSTD) $(OPT) $(WARN) $(SANFLAGS) -pthread
LDFLAGS := $(SANFLAGS) -pthread
LIBS    := -ljansson -lhiredis -lm
# What the library itself needs (jansson for the client's JSON, hiredis for the Redis
# store); dsync.pc's Libs.private says the same.
SO_LIBS := -ljansson -lhiredis -lm

LIB_SRC    := $(sort $(wildcard lib/*/*.c))
SERVER_SRC := $(sort $(wildcard server/*.c))
EX_SRC     := $(sort $(wildcard examples/*.c))
BENCH_SRC  := $(sort $(wildcard benchmarks/*.c))
BENCH_COMMON_SRC := $(sort $(wildcard benchmarks/common/*.c))
UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
INTEG_SRC  := $(sort $(wildcard tests/integration/test_*.c))
INTEG_LIB  := $(filter-out $(INTEG_SRC),$(sort $(wildcard tests/integration/*.c)))
PERF_SRC   := $(sort $(wildcard tests/performance/*.c))

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB_PIC_OBJ := $(LIB_SRC:%.c=$(BUILD)/pic/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
INTEG_LIB_OBJ := $(INTEG_LIB:%.c=$(BUILD)/%.o)
BENCH_COMMON_OBJ := $(BENCH_COMMON_SRC:%.c=$(BUILD)/%.o)

DSYNCD     := $(BIN)/dsyncd
EXAMPLES   := $(EX_SRC:examples/%.c=$(BIN)/%)
BENCHES    := $(BENCH_SRC:benchmarks/%.c=$(BIN)/%)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
INTEG_BIN  := $(INTEG_SRC:tests/integration/%.c=$(BUILD)/tests/%)

.SECONDARY:


.PHONY: all lib test check test-unit test-integration test-packaging test-examples test-asan \
        test-valgrind run run-node bench install uninstall clean deps format test-docker \
        test-load docs docs-tools

all: $(LIBA) $(SHARED) $(DSYNCD) $(EXAMPLES) $(BENCHES)

lib: $(LIBA) $(SHARED)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

# The shared library has its own position-independent objects; everything in
# the tree links the static one. (The shorter stem makes this rule win over
# $(BUILD)/%.o for build/.../pic/.)
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $< (PIC)"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC $(DEPFLAGS) -c $< -o $@

# Only the public API (every public symbol starts dsync_) is exported; raft_,
# lk_, ut_... stay inside, so they cannot clash with the embedder's symbols.
$(BUILD)/pic/libdsync.map:
	@mkdir -p $(dir $@)
	$(Q)printf '{\n  global: dsync_*;\n  local: *;\n};\n' > $@

$(LIBSO_REAL): $(LIB_PIC_OBJ) $(BUILD)/pic/libdsync.map
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=$(BUILD)/pic/libdsync.map \
	    -Wl,--no-undefined $(LDFLAGS) -o $@ $(LIB_PIC_OBJ) $(SO_LIBS)

$(LIBSO_SONAME): $(LIBSO_REAL)
	$(Q)ln -sfn $(notdir $<) $@

$(LIBSO): $(LIBSO_SONAME)
	$(Q)ln -sfn $(notdir $<) $@

$(DSYNCD): $(SERVER_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(SERVER_OBJ) $(LIBA) -lcivetweb $(LIBS)

# The bare civetweb server that measures this machine's HTTP ceiling.
$(BIN)/http_ceiling: $(BUILD)/benchmarks/http_ceiling.o
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< -lcivetweb

# Every other benchmark links the helpers in benchmarks/common/ (not programs themselves).
$(BIN)/%: $(BUILD)/benchmarks/%.o $(BENCH_COMMON_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(BENCH_COMMON_OBJ) $(LIBA) $(LIBS)

$(BIN)/%: $(BUILD)/examples/%.o $(LIBA)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(LIBA) $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIBA)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(LIBA) -lcmocka $(LIBS)

# test_redis_log starts its redis-server with the integration harness.
$(BUILD)/tests/test_redis_log: $(BUILD)/tests/unit/test_redis_log.o $(INTEG_LIB_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(INTEG_LIB_OBJ) $(LIBA) -lcmocka $(LIBS)

$(BUILD)/tests/test_integ_%: $(BUILD)/tests/integration/test_integ_%.o $(INTEG_LIB_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(INTEG_LIB_OBJ) $(LIBA) -lcmocka $(LIBS)

# ---- tests ---------------------------------------------------------------

# The entry point a new user runs: dependencies first, then the whole suite.
test:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory check

# The packaging test (make install into a temporary prefix, the examples and
# the headers built with pkg-config alone, make uninstall) checks files and
# flags, not memory: the sanitizer run (SAN=1, make test-asan) leaves it out,
# and so does make test-valgrind, which runs only the unit tests.
PACKAGING_TEST := $(if $(filter 1,$(SAN)),,tests/packaging/test_install.sh)

# docs/api_spec.yaml validated, and checked against live answers of dsyncd.
API_TEST := tests/api/test_api_spec.py

# docker/docker-compose.yml validated and its three nodes run as plain
# processes with the seed scenarios; the Locust scenarios' smoke run. They
# check files and scenarios, not memory: SAN=1 leaves them out.
DOCKER_TEST := $(if $(filter 1,$(SAN)),,tests/docker/test_compose.sh)
LOAD_TEST := $(if $(filter 1,$(SAN)),,tests/load/test_locust_smoke.sh)
# What make run runs (scripts/run-cluster.sh), as a new user meets it; it
# runs bin/dsyncd, so SAN=1 leaves it out.
RUN_TEST := $(if $(filter 1,$(SAN)),,tests/run/test_run_cluster.sh)

# Every test binary in one run, so one closing line sums up the suite.
check: $(UNIT_BIN) $(INTEG_BIN) $(DSYNCD) $(EXAMPLES) $(SHARED)
	@DSYNC_SIM_SEEDS=$(SIM_SEEDS) DSYNCD=$(abspath $(DSYNCD)) DSYNC_BIN=$(abspath $(BIN)) \
	    scripts/run-tests.sh tests $(UNIT_BIN) $(INTEG_BIN) $(API_TEST) $(PACKAGING_TEST) \
	    $(DOCKER_TEST) $(LOAD_TEST) $(RUN_TEST)

test-packaging: $(LIBA) $(LIBSO)
	@scripts/run-tests.sh packaging tests/packaging/test_install.sh

test-docker: $(DSYNCD)
	@DSYNCD=$(abspath $(DSYNCD)) scripts/run-tests.sh docker tests/docker/test_compose.sh

test-load: $(DSYNCD)
	@DSYNCD=$(abspath $(DSYNCD)) scripts/run-tests.sh load tests/load/test_locust_smoke.sh

# The examples run against a real three-node dsyncd cluster and their output
# checked (tests/integration/test_integ_examples.c; make check runs it too).
test-examples: $(BUILD)/tests/test_integ_examples $(DSYNCD) $(EXAMPLES)
	@DSYNCD=$(abspath $(DSYNCD)) DSYNC_BIN=$(abspath $(BIN)) \
	    scripts/run-tests.sh examples $(BUILD)/tests/test_integ_examples

test-unit: $(UNIT_BIN)
	@DSYNC_SIM_SEEDS=$(SIM_SEEDS) scripts/run-tests.sh unit $(UNIT_BIN)

test-integration: $(INTEG_BIN) $(DSYNCD) $(EXAMPLES)
	@DSYNCD=$(abspath $(DSYNCD)) DSYNC_BIN=$(abspath $(BIN)) \
	    scripts/run-tests.sh integration $(INTEG_BIN)

test-asan:
	@scripts/deps.sh
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(MAKE) --no-print-directory SAN=1 check

# Unit tests under valgrind's memcheck (fewer simulation seeds: it is ~30x slower).
test-valgrind: $(UNIT_BIN)
	@DSYNC_SIM_SEEDS=20 VALGRIND="valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99" \
	    scripts/run-tests.sh valgrind $(UNIT_BIN)

# ---- running -------------------------------------------------------------

run:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory all
	@scripts/run-cluster.sh

# Node N of make run's cluster, started again (from another terminal) after
# it exited; make run keeps the others running meanwhile.
run-node:
	@test -n "$(N)" || { echo "usage: make run-node N=1|2|3" >&2; exit 2; }
	@ONLY=$(N) scripts/run-cluster.sh

bench:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory all
	@benchmarks/run.sh

# ---- docs ----------------------------------------------------------------

# The diagrams of docs/architecture.md: docs/diagrams/*.dot rendered to
# docs/img/*.svg, which are committed (make -B docs renders all again).
DIAGRAMS := $(patsubst docs/diagrams/%.dot,docs/img/%.svg,$(wildcard docs/diagrams/*.dot))

docs: $(DIAGRAMS)

# graphviz installed when missing (as root), before the first diagram.
docs-tools:
	@command -v dot >/dev/null 2>&1 || scripts/deps.sh graphviz

docs/img/%.svg: docs/diagrams/%.dot | docs-tools
	@mkdir -p $(dir $@)
	@echo "  DOT     $<"
	$(Q)dot -Tsvg $< -o $@

# ---- install -------------------------------------------------------------

# The public headers only (include/dsync.h, include/dsync/*.h), both libraries
# and dsync.pc. uninstall removes exactly these files, and include/dsync/ when
# that leaves it empty.
INST_INC := $(DESTDIR)$(PREFIX)/include
INST_LIB := $(DESTDIR)$(PREFIX)/lib
PUBLIC_HEADERS := $(notdir $(wildcard include/dsync/*.h))

install: $(LIBA) $(LIBSO)
	install -d $(INST_INC)/dsync $(INST_LIB)/pkgconfig
	install -m 644 include/dsync.h $(INST_INC)/
	install -m 644 $(addprefix include/dsync/,$(PUBLIC_HEADERS)) $(INST_INC)/dsync/
	install -m 644 $(LIBA) $(INST_LIB)/libdsync.a
	install -m 755 $(LIBSO_REAL) $(INST_LIB)/
	ln -sfn $(notdir $(LIBSO_REAL)) $(INST_LIB)/$(SONAME)
	ln -sfn $(SONAME) $(INST_LIB)/libdsync.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    pkgconfig/dsync.pc.in > $(INST_LIB)/pkgconfig/dsync.pc

uninstall:
	rm -f $(INST_INC)/dsync.h $(addprefix $(INST_INC)/dsync/,$(PUBLIC_HEADERS)) \
	      $(INST_LIB)/libdsync.a $(INST_LIB)/$(notdir $(LIBSO_REAL)) $(INST_LIB)/$(SONAME) \
	      $(INST_LIB)/libdsync.so $(INST_LIB)/pkgconfig/dsync.pc
	rmdir $(INST_INC)/dsync 2>/dev/null || true

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build bin lib/libdsync.a lib/libdsync.so lib/libdsync.so.*

-include $(shell find build -name '*.d' 2>/dev/null)
