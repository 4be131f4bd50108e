# clipeval — build, test, benchmark.
#
#   make            build/clipeval (CLI), build/libclip.a and build/libclip.so (the engine, header
#                   src/engine/include/clip.h)
#   make install    PREFIX=/usr/local: clip.h, both libraries, clip.pc (pkg-config) and the CLI
#   make test       Criterion suite against ../shared/golden (installs Debian packages if missing),
#                   then the `clipeval serve` end-to-end tests (tests/serve/test_serve.py)
#   make test-process  the process/signal tests alone (CI repeats them; PIN=`taskset -c 0` pins)
#   make demo       score the DataFlow example with `clipeval score`, then `clipeval filter`
#   make bench      speed figures (model, tokenizer, image pipeline, scorer, then bench-serve)
#   make bench-serve  `clipeval serve` under load: requests/s, p50/p99, vs offline embed
#   make bench-peers clipeval fp32 / bf16 next to ONNX Runtime fp32 (tests/bench/peers.sh)
#   make asan       the test suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan       the thread test under ThreadSanitizer
#   make fuzz       libFuzzer targets (clang) in build/fuzz/
#   make python-test    the Python package's tests alone (pytest; part of make test)
#   make python-install the Python package (python/) into Debian's python, PY_PREFIX=/usr
#                   (Debian's pip maps it to /usr/local/lib/python3.X/dist-packages)
#   make bench-python   Dask 1 vs 2 workers and the Python overhead vs the CLI (part of make bench)
#   make CUDA=1     also build the CUDA backend (src/backend_cuda.cu, needs nvcc)

BUILD   ?= build
CC      ?= cc
ifeq ($(origin CC),default)
CC      := cc
endif
NVCC    ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) nvcc)
CUDA    ?= 0
VERSION := $(shell sed -n 's/^\#define CLIP_VERSION "\(.*\)"/\1/p' src/engine/include/clip.h)
PKGS    := openblas libpng libjpeg libwebp libwebpdemux libutf8proc zlib

OPENBLAS_LIBDIR := $(shell pkg-config --variable=libdir openblas 2>/dev/null)
# libmicrohttpd: only the application's HTTP server (`clipeval serve`) uses it, never libclip.
MHD_CFLAGS := $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
MHD_LIBS   := $(or $(shell pkg-config --libs libmicrohttpd 2>/dev/null),-lmicrohttpd)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror
# clang reports `omp simd` loops it could not vectorise (always, under sanitizers): a hint only.
WARN    += $(if $(findstring clang,$(CC)),-Wno-pass-failed)
CSTD    := -std=c99 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
OPT     ?= -O2
# Exactness first: no FMA contraction, no fast-math (spec §C.6 and §D #20).
OPENMP  ?= -fopenmp
# Where each part may look: the engine sees its own headers; the application sees only the
# public clip.h and the common helpers (src/common), never the engine's internals.
INC_PUBLIC := -Isrc/engine/include -Isrc/common
INC_ENGINE := $(INC_PUBLIC) -Isrc/engine -Ithird_party
INC_APP    := $(INC_PUBLIC) -Isrc/app
INC_TESTS  := $(INC_ENGINE) -Isrc/app -Itests -Itests/bench
CFLAGS_BASE = $(CSTD) $(OPT) -g $(WARN) -ffp-contract=off -fno-fast-math $(OPENMP) $(PKG_CFLAGS) \
              $(EXTRA_CFLAGS)
# The library: position-independent (it goes into libclip.so too), and only the functions
# marked CLIP_API in clip.h are visible outside it.
CFLAGS_LIB  = $(CFLAGS_BASE) -fPIC -fvisibility=hidden $(INC_ENGINE)
CFLAGS_APP  = $(CFLAGS_BASE) $(INC_APP) $(MHD_CFLAGS)
CFLAGS_ALL  = $(CFLAGS_BASE) $(INC_TESTS)
LDLIBS_ALL = $(PKG_LIBS) -lgif $(OPENMP) -lpthread -lm \
             $(if $(OPENBLAS_LIBDIR),-Wl$(comma)-rpath$(comma)$(OPENBLAS_LIBDIR)) $(EXTRA_LDFLAGS)
comma := ,

# The engine (libclip): src/engine + src/common. The application (libclipapp.a + the CLI):
# src/app, which links the engine.
LIB_SRC  := $(wildcard src/engine/*.c src/common/*.c)
LIB_OBJ  := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRC))
APP_SRC  := $(filter-out src/app/cli.c,$(wildcard src/app/*.c src/app/*/*.c))
APP_OBJ  := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(APP_SRC))
CLI_OBJ  := $(BUILD)/obj/app/cli.o
TEST_SRC := $(wildcard tests/test_*.c)
# tests/tsan_threads.c is its own program (make tsan)
TEST_OBJ := $(patsubst tests/%.c,$(BUILD)/obj/tests/%.o,$(TEST_SRC))
DEPS     := $(LIB_OBJ:.o=.d) $(APP_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(CLI_OBJ:.o=.d) \
            $(wildcard $(BUILD)/obj/bench/*.d)
SO_NAME  := libclip.so.0
SO_FILE  := libclip.so.0.2.0

ifeq ($(CUDA),1)
CUDA_HOME   ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CFLAGS_ALL  += -DCLIP_WITH_CUDA
LIB_OBJ     += $(BUILD)/obj/engine/backend_cuda.o
LDLIBS_ALL  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
NVCCFLAGS   ?= -O2 -std=c++17 $(INC_ENGINE) \
               -Xcompiler -Wall,-Wextra,-Werror,-ffp-contract=off,-fPIC,-fvisibility=hidden \
               -fmad=false -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
               -gencode arch=compute_90,code=compute_90
endif

SHARED  ?= $(firstword $(CLIPEVAL_SHARED) $(wildcard ../shared) $(wildcard /work/shared))
SYNTH_B32 := $(BUILD)/models/vitb32-synth/model.safetensors

.DEFAULT_GOAL := all
.PHONY: all test test-process asan tsan bench bench-serve bench-peers demo fuzz deps clean \
        print-shared install check-install python-test python-test-run python-install bench-python
print-shared:
	@echo $(abspath $(SHARED))
all: $(BUILD)/clipeval $(BUILD)/libclip.a $(BUILD)/libclip.so

deps:
	@bash .ci/deps

$(BUILD)/obj/engine/%.o: src/engine/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_LIB) -MMD -MP -c $< -o $@
$(BUILD)/obj/common/%.o: src/common/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_LIB) -MMD -MP -c $< -o $@
$(BUILD)/obj/app/%.o: src/app/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_APP) -MMD -MP -c $< -o $@

# Tests build command lines and paths with snprintf into fixed buffers; a truncation there can
# only make a test fail, so GCC's speculative truncation warning is off for tests only.
TEST_WFLAGS = $(if $(findstring clang,$(CC)),,-Wno-format-truncation)
$(BUILD)/obj/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(TEST_WFLAGS) -Itests -MMD -MP -c $< -o $@

$(BUILD)/obj/engine/backend_cuda.o: src/engine/backend_cuda.cu $(wildcard src/engine/*.h) \
                                     src/engine/include/clip.h src/common/util.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libclip.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library: soname libclip.so.0; only clip_* leaves it (tests/test_library checks).
$(BUILD)/$(SO_FILE): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SO_NAME) -Wl,--no-undefined -o $@ $^ $(LDLIBS_ALL)
$(BUILD)/libclip.so: $(BUILD)/$(SO_FILE)
	ln -sf $(SO_FILE) $(BUILD)/$(SO_NAME)
	ln -sf $(SO_FILE) $@

$(BUILD)/libclipapp.a: $(APP_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/clipeval: $(CLI_OBJ) $(BUILD)/libclipapp.a $(BUILD)/libclip.a
	$(CC) $(CFLAGS_APP) -o $@ $^ $(LDLIBS_ALL) $(MHD_LIBS)

$(BUILD)/test_clip: $(TEST_OBJ) $(BUILD)/libclipapp.a $(BUILD)/libclip.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ -lcriterion $(LDLIBS_ALL)

# peers.c is its own program (bench_peers, for make bench-peers); bench_util.c goes into both.
BENCH_SRC := $(filter-out tests/bench/peers.c,$(wildcard tests/bench/*.c))
BENCH_OBJ := $(patsubst tests/bench/%.c,$(BUILD)/obj/bench/%.o,$(BENCH_SRC))
$(BUILD)/bench_clip: $(BENCH_OBJ) $(BUILD)/libclipapp.a $(BUILD)/libclip.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/bench_peers: $(BUILD)/obj/bench/peers.o $(BUILD)/obj/bench/bench_util.o $(BUILD)/libclip.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/obj/bench/%.o: tests/bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(TEST_WFLAGS) -Itests -MMD -MP -c $< -o $@

# The 605 MB ViT-B/32 synthetic checkpoint is generated, never stored (SYNTH_WEIGHTS.md).
$(SYNTH_B32): $(BUILD)/clipeval
	@test -n "$(SHARED)" || { echo "shared data not found: set CLIPEVAL_SHARED"; exit 1; }
	$(BUILD)/clipeval synth --config $(SHARED)/golden/models/vitb32-synth/config.json \
	    --seed $$(cat $(SHARED)/golden/models/vitb32-synth/seed.txt) --out $@
	@# the real tokenizer and preprocessor files next to the synthetic weights: a full model folder
	@for f in vocab.json merges.txt tokenizer.json tokenizer_config.json special_tokens_map.json \
	          preprocessor_config.json; do \
	  ln -sf $(abspath $(SHARED))/models/clip-vit-base-patch32/$$f $(dir $@)$$f; done

# Tests read ../shared through CLIPEVAL_SHARED; the synthetic model through CLIPEVAL_SYNTH_DIR.
TEST_ENV = CLIPEVAL_SHARED=$(abspath $(SHARED)) CLIPEVAL_BUILD=$(abspath $(BUILD)) CLIPEVAL_SRC=$(CURDIR) \
           CLIPEVAL_SYNTH_DIR=$(abspath $(BUILD)/models)
CRITERION_ARGS ?= --jobs 2
# Debian's python (stdlib only) drives the end-to-end server tests.
PYTHON ?= /usr/bin/python3

test: deps
	@$(MAKE) --no-print-directory $(BUILD)/test_clip $(BUILD)/clipeval $(BUILD)/libclip.so \
	  $(BUILD)/bench_peers
	@if [ -n "$(SHARED)" ]; then $(MAKE) --no-print-directory $(SYNTH_B32); fi
	$(TEST_ENV) OMP_NUM_THREADS=1 $(BUILD)/test_clip $(CRITERION_ARGS)
	$(TEST_ENV) $(PYTHON) tests/serve/test_serve.py
	@$(MAKE) --no-print-directory python-test-run

# The Python package (python/clipeval) over build/libclip.so, with Debian's python and pytest.
PY_ENV   = $(TEST_ENV) CLIPEVAL_LIB=$(abspath $(BUILD)/libclip.so) PYTHONPATH=$(CURDIR)/python
PYTEST_ARGS ?= -q -rs
python-test: deps
	@$(MAKE) --no-print-directory $(BUILD)/clipeval $(BUILD)/libclip.so
	@if [ -n "$(SHARED)" ]; then $(MAKE) --no-print-directory $(SYNTH_B32); fi
	@$(MAKE) --no-print-directory python-test-run
python-test-run:
	$(PY_ENV) OMP_NUM_THREADS=1 $(PYTHON) -m pytest $(PYTEST_ARGS) -p no:cacheprovider tests/python

# One command into Debian's python: the wheel bundles build/libclip.so (python/setup.py).
# In a virtual environment: pip install --no-build-isolation ./python
PY_PREFIX ?= /usr
python-install: $(BUILD)/libclip.so
	CLIPEVAL_LIB=$(abspath $(BUILD)/libclip.so) $(PYTHON) -m pip install --no-build-isolation \
	  --no-deps --prefix $(PY_PREFIX) $(if $(DESTDIR),--root $(DESTDIR)) ./python

# The process/signal tests alone: CI runs them 10 times in a row, then once pinned to one core
# next to a busy loop (.ci/run), so a fast and a slow machine are both tried. PIN: a command
# prefix, e.g. PIN="taskset -c 0".
test-process:
	@$(MAKE) --no-print-directory $(BUILD)/test_clip $(BUILD)/clipeval
	$(TEST_ENV) OMP_NUM_THREADS=1 $(PIN) $(BUILD)/test_clip --filter 'process/*' $(CRITERION_ARGS)

# Sanitizer builds live in their own folders; the test data and synthetic model are shared.
asan: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/asan OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" $(BUILD)/asan/test_clip $(BUILD)/asan/clipeval \
	  $(BUILD)/asan/bench_peers $(BUILD)/asan/libclip.so
	@if [ -n "$(SHARED)" ]; then $(MAKE) --no-print-directory $(SYNTH_B32); fi
	$(TEST_ENV) CLIPEVAL_BUILD=$(abspath $(BUILD)/asan) CLIPEVAL_SANITIZER=asan OMP_NUM_THREADS=1 \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(BUILD)/asan/test_clip $(CRITERION_ARGS)

# ThreadSanitizer: our OpenMP is compiled out (libgomp is not instrumented, it would only
# report its own internals) and OpenBLAS runs single-threaded in each calling thread; the
# program below drives the C API from 4 threads (Criterion itself cannot start under TSan).
tsan: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/tsan OPT=-O1 CC=clang OPENMP= \
	  EXTRA_CFLAGS="-fsanitize=thread" EXTRA_LDFLAGS="-fsanitize=thread" $(BUILD)/tsan/tsan_threads
	$(TEST_ENV) OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1 \
	  $(BUILD)/tsan/tsan_threads

$(BUILD)/tsan_threads: $(BUILD)/obj/tests/tsan_threads.o $(BUILD)/libclipapp.a $(BUILD)/libclip.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

bench: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench_clip $(BUILD)/clipeval
	@$(MAKE) --no-print-directory $(SYNTH_B32)
	$(TEST_ENV) $(BUILD)/bench_clip
	@$(MAKE) --no-print-directory bench-python

# Python/Dask figures, as ratios measured in one run (tests/python/bench_python.py).
bench-python: deps
	@$(MAKE) --no-print-directory $(BUILD)/clipeval $(BUILD)/libclip.so $(SYNTH_B32)
	$(PY_ENV) $(PYTHON) tests/python/bench_python.py
	@$(MAKE) --no-print-directory bench-serve

# The server under load against the offline path, in one run (tests/serve/bench_serve.c).
# BENCH_SERVE_MODEL picks another model folder; BENCH_SERVE_ARGS e.g. --requests 128.
BENCH_SERVE_MODEL ?= $(BUILD)/models/vitb32-synth
BENCH_SERVE_ARGS  ?=
$(BUILD)/bench_serve: tests/serve/bench_serve.c $(BUILD)/libclipapp.a $(BUILD)/libclip.a
	$(CC) $(CFLAGS_ALL) $(TEST_WFLAGS) -o $@ $^ $(LDLIBS_ALL)
bench-serve: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench_serve $(BUILD)/clipeval
	@if [ "$(BENCH_SERVE_MODEL)" = "$(BUILD)/models/vitb32-synth" ]; then \
	  $(MAKE) --no-print-directory $(SYNTH_B32); fi
	$(TEST_ENV) $(BUILD)/bench_serve --model $(BENCH_SERVE_MODEL) $(BENCH_SERVE_ARGS)

# clipeval fp32, clipeval bf16 and ONNX Runtime fp32 side by side, in interleaved rounds. Not part
# of make test: it apt-installs python3-onnx and downloads the onnxruntime-node npm package into
# build/peers/node (README, Benchmarks).
bench-peers: deps
	@test -n "$(SHARED)" || { echo "shared data not found: set CLIPEVAL_SHARED"; exit 1; }
	@$(MAKE) --no-print-directory $(BUILD)/bench_peers $(BUILD)/clipeval
	@$(MAKE) --no-print-directory $(SYNTH_B32)
	CLIPEVAL_SHARED=$(abspath $(SHARED)) CLIPEVAL_BUILD=$(abspath $(BUILD)) \
	  bash tests/bench/peers.sh

demo: deps
	@$(MAKE) --no-print-directory $(BUILD)/clipeval
	@bash .ci/demo "$(abspath $(BUILD))" "$(SHARED)"

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
fuzz: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/fuzzlib CC=clang OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" \
	  $(BUILD)/fuzzlib/libclip.a $(BUILD)/fuzzlib/libclipapp.a
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/fuzzlib/libclip.a $(BUILD)/fuzzlib/libclipapp.a
	@mkdir -p $(dir $@)
	clang $(CSTD) -O1 -g -Wall -Wextra -Werror -ffp-contract=off -fopenmp $(INC_TESTS) $(PKG_CFLAGS) \
	  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -o $@ $< \
	  $(BUILD)/fuzzlib/libclipapp.a $(BUILD)/fuzzlib/libclip.a $(PKG_LIBS) -lgif -lpthread -lm \
	  $(if $(OPENBLAS_LIBDIR),-Wl$(comma)-rpath$(comma)$(OPENBLAS_LIBDIR))

# make install PREFIX=... [DESTDIR=...]: the public header, both libraries, clip.pc and the CLI.
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INSTALL_DIRS = $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PREFIX)/bin
install: all
	mkdir -p $(INSTALL_DIRS)
	install -m 644 src/engine/include/clip.h $(DESTDIR)$(PREFIX)/include/clip.h
	install -m 644 $(BUILD)/libclip.a $(DESTDIR)$(LIBDIR)/libclip.a
	install -m 755 $(BUILD)/$(SO_FILE) $(DESTDIR)$(LIBDIR)/$(SO_FILE)
	ln -sf $(SO_FILE) $(DESTDIR)$(LIBDIR)/$(SO_NAME)
	ln -sf $(SO_FILE) $(DESTDIR)$(LIBDIR)/libclip.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	  -e 's|@LIBS_PRIVATE@|-lgif -lgomp -lpthread -lm|' \
	  src/engine/clip.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/clip.pc
	install -m 755 $(BUILD)/clipeval $(DESTDIR)$(PREFIX)/bin/clipeval

# What a user of the library does: install into a fresh prefix, build examples/embed_cos.c with
# nothing but `pkg-config --cflags --libs clip`, run it on the synthetic model (CI runs this).
check-install: all
	@test -n "$(SHARED)" || { echo "shared data not found: set CLIPEVAL_SHARED"; exit 1; }
	@$(MAKE) --no-print-directory $(SYNTH_B32)
	rm -rf $(BUILD)/install && $(MAKE) --no-print-directory install PREFIX=$(abspath $(BUILD))/install
	PKG_CONFIG_PATH=$(abspath $(BUILD))/install/lib/pkgconfig sh -c '$(CC) -std=c99 -Wall -Wextra \
	  -Werror examples/embed_cos.c $$(pkg-config --cflags --libs clip) \
	  -Wl,-rpath,$(abspath $(BUILD))/install/lib -o $(BUILD)/embed_cos'
	$(BUILD)/embed_cos $(BUILD)/models/vitb32-synth $(SHARED)/data/dataflow_example/images/0.png \
	  "a photo of a cat"
	@echo "check-install: ok (installed into $(BUILD)/install, example built with pkg-config)"

clean:
	rm -rf $(BUILD)

-include $(DEPS)
