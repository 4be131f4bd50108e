# clipeval — build, test, benchmark.
#
#   make            build/clipeval (CLI) and build/libclip.a (library, header src/clip.h)
#   make test       Criterion suite against ../shared/golden (installs Debian packages if missing)
#   make demo       score the DataFlow example with `clipeval score`
#   make bench      speed figures (model, tokenizer, image pipeline, scorer)
#   make asan       the test suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan       the thread test under ThreadSanitizer
#   make fuzz       libFuzzer targets (clang) in build/fuzz/
#   make CUDA=1     also build the CUDA backend (src/backend_cuda.cu, needs nvcc)

BUILD   ?= build
CC      ?= cc
ifeq ($(origin CC),default)
CC      := cc
endif
NVCC    ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) nvcc)
CUDA    ?= 0
PKGS    := openblas libpng libjpeg libwebp libwebpdemux libutf8proc zlib

OPENBLAS_LIBDIR := $(shell pkg-config --variable=libdir openblas 2>/dev/null)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror
# clang reports `omp simd` loops it could not vectorise (always, under sanitizers): a hint only.
WARN    += $(if $(findstring clang,$(CC)),-Wno-pass-failed)
CSTD    := -std=c99 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
OPT     ?= -O2
# Exactness first: no FMA contraction, no fast-math (spec §C.6 and §D #20).
OPENMP  ?= -fopenmp
CFLAGS_ALL = $(CSTD) $(OPT) -g $(WARN) -ffp-contract=off -fno-fast-math $(OPENMP) \
             -Isrc -Ithird_party $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lgif $(OPENMP) -lpthread -lm \
             $(if $(OPENBLAS_LIBDIR),-Wl$(comma)-rpath$(comma)$(OPENBLAS_LIBDIR)) $(EXTRA_LDFLAGS)
comma := ,

LIB_SRC  := $(filter-out src/cli.c,$(wildcard src/*.c))
LIB_OBJ  := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRC))
TEST_SRC := $(wildcard tests/test_*.c)
# tests/tsan_threads.c is its own program (make tsan)
TEST_OBJ := $(patsubst tests/%.c,$(BUILD)/obj/tests/%.o,$(TEST_SRC))
DEPS     := $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/obj/cli.d $(wildcard $(BUILD)/obj/bench/*.d)

ifeq ($(CUDA),1)
CUDA_HOME   ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CFLAGS_ALL  += -DCLIP_WITH_CUDA
LIB_OBJ     += $(BUILD)/obj/backend_cuda.o
LDLIBS_ALL  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
NVCCFLAGS   ?= -O2 -std=c++17 -Isrc -Xcompiler -Wall,-Wextra,-Werror,-ffp-contract=off \
               -fmad=false -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
               -gencode arch=compute_90,code=compute_90
endif

SHARED  ?= $(firstword $(CLIPEVAL_SHARED) $(wildcard ../shared) $(wildcard /work/shared))
SYNTH_B32 := $(BUILD)/models/vitb32-synth/model.safetensors

.DEFAULT_GOAL := all
.PHONY: all test asan tsan bench demo fuzz deps clean print-shared
print-shared:
	@echo $(abspath $(SHARED))
all: $(BUILD)/clipeval $(BUILD)/libclip.a

deps:
	@bash .ci/deps

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

# Tests build command lines and paths with snprintf into fixed buffers; a truncation there can
# only make a test fail, so GCC's speculative truncation warning is off for tests only.
TEST_WFLAGS = $(if $(findstring clang,$(CC)),,-Wno-format-truncation)
$(BUILD)/obj/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(TEST_WFLAGS) -Itests -MMD -MP -c $< -o $@

$(BUILD)/obj/backend_cuda.o: src/backend_cuda.cu src/clip.h src/backend.h src/model_internal.h \
                              src/safetensors.h src/util.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libclip.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/clipeval: $(BUILD)/obj/cli.o $(BUILD)/libclip.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/test_clip: $(TEST_OBJ) $(BUILD)/libclip.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ -lcriterion $(LDLIBS_ALL)

BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_OBJ := $(patsubst tests/bench/%.c,$(BUILD)/obj/bench/%.o,$(BENCH_SRC))
$(BUILD)/bench_clip: $(BENCH_OBJ) $(BUILD)/libclip.a
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

test: deps
	@$(MAKE) --no-print-directory $(BUILD)/test_clip $(BUILD)/clipeval
	@if [ -n "$(SHARED)" ]; then $(MAKE) --no-print-directory $(SYNTH_B32); fi
	$(TEST_ENV) OMP_NUM_THREADS=1 $(BUILD)/test_clip $(CRITERION_ARGS)

# Sanitizer builds live in their own folders; the test data and synthetic model are shared.
asan: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/asan OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" $(BUILD)/asan/test_clip $(BUILD)/asan/clipeval
	@if [ -n "$(SHARED)" ]; then $(MAKE) --no-print-directory $(SYNTH_B32); fi
	$(TEST_ENV) CLIPEVAL_BUILD=$(abspath $(BUILD)/asan) OMP_NUM_THREADS=1 \
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

$(BUILD)/tsan_threads: $(BUILD)/obj/tests/tsan_threads.o $(BUILD)/libclip.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

bench: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench_clip $(BUILD)/clipeval
	@$(MAKE) --no-print-directory $(SYNTH_B32)
	$(TEST_ENV) $(BUILD)/bench_clip

demo: deps
	@$(MAKE) --no-print-directory $(BUILD)/clipeval
	@bash .ci/demo "$(abspath $(BUILD))" "$(SHARED)"

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
fuzz: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/fuzzlib CC=clang OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" \
	  $(BUILD)/fuzzlib/libclip.a
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/fuzzlib/libclip.a
	@mkdir -p $(dir $@)
	clang $(CSTD) -O1 -g -Wall -Wextra -Werror -ffp-contract=off -fopenmp -Isrc -Ithird_party $(PKG_CFLAGS) \
	  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -o $@ $< \
	  $(BUILD)/fuzzlib/libclip.a $(PKG_LIBS) -lgif -lpthread -lm \
	  $(if $(OPENBLAS_LIBDIR),-Wl$(comma)-rpath$(comma)$(OPENBLAS_LIBDIR))

clean:
	rm -rf $(BUILD)

-include $(DEPS)
