# libdsync build. Plain make, incremental and parallel-safe.
#
#   make              lib/libdsync.a, bin/dsyncd, the examples
#   make test         installs missing Debian packages (as root), builds, runs every test
#   make test-asan    the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make run          a node on 127.0.0.1:8081 in the foreground
#   make bench        the benchmarks (see benchmarks/)
#   make install PREFIX=/usr/local
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

ifeq ($(SAN),1)
BUILD   := build/asan
OPT     := -O1 -g -fno-omit-frame-pointer
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
LIBA    := $(BUILD)/libdsync.a
BIN     := $(BUILD)/bin
else
BUILD   := build/release
SANFLAGS :=
LIBA    := lib/libdsync.a
BIN     := bin
endif

CPPFLAGS := -Iinclude -Ilib
CFLAGS  := $(CSTD) $(OPT) $(WARN) $(SANFLAGS) -pthread
LDFLAGS := $(SANFLAGS) -pthread
LIBS    := -ljansson -lhiredis -lm

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
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
INTEG_LIB_OBJ := $(INTEG_LIB:%.c=$(BUILD)/%.o)
BENCH_COMMON_OBJ := $(BENCH_COMMON_SRC:%.c=$(BUILD)/%.o)

DSYNCD     := $(BIN)/dsyncd
EXAMPLES   := $(EX_SRC:examples/%.c=$(BIN)/%)
BENCHES    := $(BENCH_SRC:benchmarks/%.c=$(BIN)/%)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
INTEG_BIN  := $(INTEG_SRC:tests/integration/%.c=$(BUILD)/tests/%)

.SECONDARY:


.PHONY: all lib test check test-unit test-integration test-asan test-valgrind run run-cluster bench \
        install uninstall clean deps format

all: $(LIBA) $(DSYNCD) $(EXAMPLES) $(BENCHES)

lib: $(LIBA)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

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

$(BUILD)/tests/test_integ_%: $(BUILD)/tests/integration/test_integ_%.o $(INTEG_LIB_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(INTEG_LIB_OBJ) $(LIBA) -lcmocka $(LIBS)

# ---- tests ---------------------------------------------------------------

# The entry point a new user runs: dependencies first, then the whole suite.
test:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory check

# Every test binary in one run, so one closing line sums up the suite.
check: $(UNIT_BIN) $(INTEG_BIN) $(DSYNCD) $(EXAMPLES)
	@DSYNC_SIM_SEEDS=$(SIM_SEEDS) DSYNCD=$(abspath $(DSYNCD)) DSYNC_BIN=$(abspath $(BIN)) \
	    scripts/run-tests.sh tests $(UNIT_BIN) $(INTEG_BIN)

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

bench:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory all
	@benchmarks/run.sh

# ---- install -------------------------------------------------------------

install: $(LIBA)
	install -d $(DESTDIR)$(PREFIX)/include/dsync $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/dsync.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/dsync/*.h $(DESTDIR)$(PREFIX)/include/dsync/
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(shell sed -n 's/.*DSYNC_VERSION_STRING "\(.*\)"/\1/p' include/dsync/version.h)|' \
	    pkgconfig/dsync.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/dsync.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/dsync.h $(DESTDIR)$(PREFIX)/lib/libdsync.a \
	      $(DESTDIR)$(PREFIX)/lib/pkgconfig/dsync.pc
	rm -rf $(DESTDIR)$(PREFIX)/include/dsync

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build bin lib/libdsync.a

-include $(shell find build -name '*.d' 2>/dev/null)
