# ndingest -- streaming NDJSON-to-CSV ingest server.
# `make run` and `make test` install what is missing (scripts/install-deps.sh) first.

CC      ?= cc
CFLAGS  ?= -O2 -g -fno-omit-frame-pointer
WARN    := -Wall -Wextra -Werror
CPPFLAGS += -D_GNU_SOURCE
PYTHON  ?= /usr/bin/python3
BUILD   ?= build
BIN     ?= ndingest
PREFIX  ?= /usr/local
DESTDIR ?=

# llhttp: a system library where pkg-config knows it, else Debian 12's node-llhttp sources.
ifeq ($(shell pkg-config --exists libllhttp 2>/dev/null && echo yes),yes)
LLHTTP_CFLAGS := $(shell pkg-config --cflags libllhttp)
LLHTTP_LIBS   := $(shell pkg-config --libs libllhttp)
LLHTTP_SRC    :=
else
LLHTTP_CFLAGS := -I/usr/share/include/llhttp
LLHTTP_LIBS   :=
LLHTTP_SRC    := $(wildcard /usr/share/llhttp/*.c)
endif

# libpq: delivery into PostgreSQL (src/delivery/postgres.c).
PQ_CFLAGS := $(shell pkg-config --cflags libpq 2>/dev/null || echo -I$$(pg_config --includedir))
LIBS     := -levent -lz -lcurl -lpq -lxxhash $(LLHTTP_LIBS)

# The sources in two lists. SERVER_SRC is what only `serve` needs (sockets, libevent, HTTP,
# workers, their counters): named here, one by one. CORE_SRC is every other file but
# main.c: the ingest pipeline (decode, lines and the body's fingerprint, JSON engine with its
# per-ISA json_*.c, CSV, the day's file) and `convert`; it links with zlib and libxxhash
# alone, which is what the fuzz target needs. So a new file is core unless it is added to
# SERVER_SRC; one that wants libevent and is not gets caught by `make fuzz`.
SRC        := $(wildcard src/*.c) $(wildcard src/delivery/*.c)
# Delivery (src/delivery/: the day files into a database) talks to it through libcurl: a
# server-side part, like the sockets.
SERVER_SRC := $(addprefix src/,server.c worker.c http.c http_strict.c metrics.c net.c auth.c catalog.c \
              access_log.c route.c pressure.c idempotency.c) $(wildcard src/delivery/*.c)
CORE_SRC   := $(filter-out src/main.c $(SERVER_SRC),$(SRC))
LIBOBJ   := $(CORE_SRC:src/%.c=$(BUILD)/obj/%.o) $(SERVER_SRC:src/%.c=$(BUILD)/obj/%.o)
OBJ      := $(BUILD)/obj/main.o $(LIBOBJ)
LLOBJ    := $(LLHTTP_SRC:/usr/share/llhttp/%.c=$(BUILD)/llhttp/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_OBJ := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# Each compile writes the headers its file includes (-MMD) with an empty rule per header
# (-MP, so a deleted header does not stop the build) into a .d beside the object.
DEPFLAGS := -MMD -MP

.PHONY: all deps run test unit integration tools data clean asan memcheck lint install install-service fuzz fuzz-ingest fuzz-http profile callgrind bench
all: $(BIN)

$(BIN): $(OBJ) $(LLOBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/obj/%.o: src/%.c | $(BUILD)/obj
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(CPPFLAGS) $(DEPFLAGS) $(CFLAGS) $(WARN) $(LLHTTP_CFLAGS) $(PQ_CFLAGS) -c -o $@ $<

# Third-party code: built with our flags but not held to our warning set.
$(BUILD)/llhttp/%.o: /usr/share/llhttp/%.c | $(BUILD)/llhttp
	$(CC) $(CFLAGS) $(LLHTTP_CFLAGS) -c -o $@ $<

$(UNIT_OBJ): $(BUILD)/tests/%.o: tests/unit/%.c | $(BUILD)/tests
	$(CC) -std=c11 $(CPPFLAGS) $(DEPFLAGS) $(CFLAGS) $(WARN) -Isrc $(LLHTTP_CFLAGS) $(PQ_CFLAGS) -c -o $@ $<

$(UNIT_BIN): $(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIBOBJ) $(LLOBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka

# Test drivers (tests/tools/): built for the integration tests, never installed.
# postgres_probe drives src/delivery/postgres.c against the harness's PostgreSQL;
# bench_ingest runs the ingest pipeline over a file in memory (scripts/bench-engine --yardsticks).
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/%)
$(TOOL_BIN): $(BUILD)/tests/%: tests/tools/%.c $(LIBOBJ) $(LLOBJ) | $(BUILD)/tests
	$(CC) -std=c11 $(CPPFLAGS) $(DEPFLAGS) $(CFLAGS) $(WARN) -Isrc $(LLHTTP_CFLAGS) $(PQ_CFLAGS) \
		$(LDFLAGS) -o $@ $< $(LIBOBJ) $(LLOBJ) $(LIBS)
tools: $(TOOL_BIN)

-include $(OBJ:.o=.d) $(UNIT_OBJ:.o=.d) $(TOOL_BIN:=.d)

$(BUILD)/obj $(BUILD)/llhttp $(BUILD)/tests:
	mkdir -p $@

deps:
	scripts/install-deps.sh

# The classic benchmark body (1,600 lines) and a large file for throughput runs.
data: data/nyc_taxi.ndjson data/nyc_taxi_large.ndjson
data/nyc_taxi.ndjson: scripts/gen-taxi
	@mkdir -p data
	$(PYTHON) scripts/gen-taxi --lines 1600 --seed 1 > $@.tmp && mv $@.tmp $@
data/nyc_taxi_large.ndjson: scripts/gen-taxi
	@mkdir -p data
	$(PYTHON) scripts/gen-taxi --lines 300000 --seed 2 > $@.tmp && mv $@.tmp $@

run: deps
	$(MAKE) $(BIN) data/nyc_taxi.ndjson
	./ndingest

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: $(BIN) data/nyc_taxi.ndjson tools
	NDINGEST_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q -rs tests/integration

test: deps
	$(MAKE) $(BIN) data/nyc_taxi.ndjson
	$(MAKE) unit
	$(MAKE) integration

# The whole suite against an ASan+UBSan build (separate objects and binary).
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
asan: deps
	$(MAKE) BUILD=build/asan BIN=build/asan/ndingest CFLAGS="$(ASAN_FLAGS)" LDFLAGS="$(ASAN_FLAGS)" \
		build/asan/ndingest data/nyc_taxi.ndjson
	NDINGEST_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		$(MAKE) BUILD=build/asan BIN=build/asan/ndingest CFLAGS="$(ASAN_FLAGS)" LDFLAGS="$(ASAN_FLAGS)" unit integration

# libFuzzer: fuzz_ingest over the line framer and the JSON engine, seeded with the
# conformance corpus; fuzz_http over the HTTP layer (llhttp, our callbacks, the routes,
# ingest) through a bufferevent pair, seeded with tests/fuzz/http-seeds. Each runs for
# FUZZ_SECONDS (so `make fuzz FUZZ_SECONDS=60` costs two minutes); fuzz_http's inputs stay
# below 64 KiB so that a body's rows reach the file only at its end (its oracle, in the file).
FUZZ_SECONDS ?= 600
FUZZ_FLAGS := -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
fuzz: fuzz-ingest fuzz-http
fuzz-ingest: deps
	mkdir -p build/fuzz fuzz-out/corpus
	clang -std=c11 $(CPPFLAGS) $(FUZZ_FLAGS) -Isrc -o build/fuzz/fuzz_ingest tests/fuzz/fuzz_ingest.c \
		$(CORE_SRC) -lz -lxxhash
	build/fuzz/fuzz_ingest -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 \
		fuzz-out/corpus tests/json tests/fuzz/seeds
fuzz-http: deps
	mkdir -p build/fuzz fuzz-out/http-corpus
	clang -std=c11 $(CPPFLAGS) $(FUZZ_FLAGS) -Isrc $(LLHTTP_CFLAGS) $(PQ_CFLAGS) -o build/fuzz/fuzz_http \
		tests/fuzz/fuzz_http.c $(CORE_SRC) $(SERVER_SRC) $(LLHTTP_SRC) $(LIBS)
	build/fuzz/fuzz_http -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
		fuzz-out/http-corpus tests/fuzz/http-seeds

# Integration tests against --workers 0 servers under valgrind memcheck (scripts/memcheck);
# tests needing several workers or measuring RSS are skipped with a reason (conftest).
MEMCHECK_TESTS ?= tests/integration/test_http.py tests/integration/test_format.py
memcheck: $(BIN) data/nyc_taxi.ndjson
	NDINGEST_BIN=$(abspath $(BIN)) PYTHON=$(PYTHON) scripts/memcheck $(MEMCHECK_TESTS)

lint:
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,performance,portability \
		--inline-suppr --suppressions-list=.cppcheck-suppressions -Isrc src
	clang-tidy --quiet $(SRC) -- -std=c11 $(CPPFLAGS) $(LLHTTP_CFLAGS) $(PQ_CFLAGS)

install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ndingest
	install -m 644 doc/ndingest.1 $(DESTDIR)$(PREFIX)/share/man/man1/ndingest.1
	install -m 755 scripts/ndingest-check $(DESTDIR)$(PREFIX)/bin/ndingest-check

install-service: install
	install -D -m 644 scripts/ndingest.service $(DESTDIR)/etc/systemd/system/ndingest.service
	install -D -m 644 scripts/ndingest.logrotate $(DESTDIR)/etc/logrotate.d/ndingest

clean:
	rm -rf $(BUILD) $(BIN)

# Profiles into reports/ (see doc/profiling.md): perf on a --workers 0 server under wrk and
# on convert; callgrind instruction counts of both.
profile: $(BIN) data
	scripts/profile perf
callgrind: $(BIN) data
	scripts/profile callgrind

bench: $(BIN) data
	scripts/bench
