#!/usr/bin/env bash
# tests/gpu_check.sh — the one script to run on a GPU machine for the CUDA backend:
#   1. the machine (nvidia-smi, toolkit, which build dependencies are present);
#   2. `make CUDA=1` (in build/cuda, so objects built without CUDA are never reused);
#   3. tests/gpu_check.c, linked against that libclip.a — or, when the full build cannot be
#      made here (OpenBLAS, Criterion, libpng... missing and no apt), against an engine-only
#      library built by hand (without OpenBLAS the CPU comparison is skipped: golden only);
#   4. the ViT-B/32 synthetic model is generated (build/models/vitb32-synth, ~2 s);
#   5. gpu_check: CUDA vs fp64 golden, CUDA vs CPU, batch invariance, errors, threads,
#      throughput; then the Criterion suite's cuda/* tests when Criterion is installed.
# Run from anywhere:  bash tests/gpu_check.sh
# Shared data: $CLIPEVAL_SHARED, else ../shared, else ./shared (a folder holding golden/).
# Output: stdout, and $OUT/gpu_report.txt when OUT is set. Needs no network; ~3-4 minutes.
# Switches for trying the fallbacks: GPU_CHECK_ENGINE_ONLY=1 (no make), GPU_CHECK_NO_BLAS=1.
# The `timeout`s and the elapsed() checks below ration the device machine's time budget (a step
# that would overrun it is cut or skipped, and says so); they order nothing and no result
# depends on them.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
T0=$(date +%s)
JOBS=16

elapsed() { echo $(($(date +%s) - T0)); }
section() { printf '\n==== %s  [%ss]\n' "$*" "$(elapsed)"; }

main() {
    section "machine"
    date -u
    uname -srm
    echo "cores: $(nproc)"
    git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/commit: /'
    git -C "$ROOT" --no-optional-locks status --short 2>/dev/null | sed 's/^/  /' | head -30
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi
        nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
    else
        echo "nvidia-smi not found"
    fi

    # shared data
    SHARED=""
    for c in "${CLIPEVAL_SHARED:-}" ../shared ./shared /work/shared; do
        if [ -n "$c" ] && [ -d "$c/golden" ]; then SHARED=$(cd "$c" && pwd); break; fi
    done
    if [ -z "$SHARED" ]; then
        echo "FATAL: shared data not found (set CLIPEVAL_SHARED to the folder holding golden/)"
        return 2
    fi
    echo "shared data: $SHARED"

    # toolchain and dependencies
    CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
    NVCC="$CUDA_HOME/bin/nvcc"
    [ -x "$NVCC" ] || NVCC=$(command -v nvcc || true)
    if [ -z "$NVCC" ]; then echo "FATAL: nvcc not found"; return 2; fi
    CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$NVCC")")")
    "$NVCC" --version | tail -n 2
    CC=$(command -v gcc || command -v cc || true)
    if [ -z "$CC" ]; then echo "FATAL: no C compiler"; return 2; fi
    "$CC" --version | head -n 1
    CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
    case "$CAP" in [0-9][0-9]|[0-9][0-9][0-9]) ;; *) CAP=90 ;; esac
    tmpd=$(mktemp -d)
    links() { # links(code, flags...): does a tiny program compile and link with these flags?
        local code=$1; shift
        printf '%s\n' "$code" >"$tmpd/t.c"
        "$CC" "$tmpd/t.c" -o "$tmpd/t" "$@" >/dev/null 2>&1
    }
    BLAS_CFLAGS=$(pkg-config --cflags openblas 2>/dev/null || true)
    BLAS_LIBS=$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
    HAVE_BLAS=0
    # shellcheck disable=SC2086
    links '#include <cblas.h>
int main(void){float a=1,b=1,c=0;cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,1,1,1,1.0f,&a,1,&b,1,0.0f,&c,1);return c!=1;}' \
        $BLAS_CFLAGS $BLAS_LIBS -fopenmp && HAVE_BLAS=1
    HAVE_CRITERION=0
    links '#include <criterion/criterion.h>
Test(a,b){}' -lcriterion && HAVE_CRITERION=1
    HAVE_MAKE=0
    command -v make >/dev/null && HAVE_MAKE=1
    [ "${GPU_CHECK_ENGINE_ONLY:-0}" = 1 ] && HAVE_MAKE=0
    [ "${GPU_CHECK_NO_BLAS:-0}" = 1 ] && HAVE_BLAS=0 && HAVE_MAKE=0
    echo "nvcc: $NVCC   sm_$CAP   make: $HAVE_MAKE   OpenBLAS: $HAVE_BLAS   Criterion: $HAVE_CRITERION"
    rm -rf "$tmpd"

    # 2. the real build
    section "make CUDA=1 BUILD=build/cuda -j$JOBS"
    rm -rf build/cuda build/gpu-core
    mkdir -p build/cuda
    MAKE_RC=skipped
    if [ "$HAVE_MAKE" = 1 ]; then
        timeout 300 make CUDA=1 BUILD=build/cuda -j"$JOBS" all >build/cuda/make.log 2>&1
        MAKE_RC=$?
        if [ "$MAKE_RC" = 0 ]; then
            echo "make CUDA=1: ok (build/cuda/clipeval, build/cuda/libclip.a)"
        else
            echo "make CUDA=1 failed (rc $MAKE_RC; a missing library is expected on a bare box):"
            grep -E 'error|Error|No such file' build/cuda/make.log | head -n 15
        fi
        grep -E 'warning' build/cuda/make.log | head -n 5
    else
        echo "make not installed (or a fallback was asked for): skipped"
    fi

    # 3. gpu_check, against the full library or an engine-only one
    section "build tests/gpu_check"
    GC_CFLAGS="-std=c99 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -O2 -g -Wall -Wextra
               -ffp-contract=off -fno-fast-math -fopenmp -DCLIP_WITH_CUDA -Isrc/engine/include -Isrc/common
               -Isrc/engine -Isrc/app -Itests -Itests/bench"
    GC_LIBS="-fopenmp -L$CUDA_HOME/lib64 -Wl,-rpath,$CUDA_HOME/lib64 -lcublas -lcudart -lstdc++ -lpthread -lm"
    NO_CPU=""
    if [ "$MAKE_RC" = 0 ] && [ -f build/cuda/libclip.a ]; then
        LIB=build/cuda/libclip.a
        echo "using build/cuda/libclip.a (make CUDA=1)"
    else
        # Only the engine: no image decoders, tokenizer or CLI, so no third-party headers.
        mkdir -p build/gpu-core
        srcs="common/util common/json app/npy engine/safetensors engine/config app/synth engine/model
              engine/tensors engine/forward engine/backend_cpu engine/gemm engine/gemm_avx2
              engine/gemm_avx512 engine/gemm_bf16 engine/cpu engine/runtime"
        # Without OpenBLAS the CPU backend still runs, on our own kernels only.
        if [ "$HAVE_BLAS" != 1 ]; then NO_CPU=-DCLIP_NO_OPENBLAS; BLAS_CFLAGS=""; fi
        echo "engine-only library: $(echo $srcs) + backend_cuda (sm_$CAP)${NO_CPU:+; no OpenBLAS}"
        ok=1
        for f in $srcs; do
            # shellcheck disable=SC2086
            "$CC" $GC_CFLAGS $BLAS_CFLAGS $NO_CPU -c "src/$f.c" -o "build/gpu-core/${f##*/}.o" || ok=0 &
        done
        "$NVCC" -O2 -std=c++17 -Isrc/engine/include -Isrc/common -Isrc/engine -Xcompiler -Wall,-Wextra,-ffp-contract=off -fmad=false -allow-unsupported-compiler \
            -gencode "arch=compute_$CAP,code=sm_$CAP" -c src/engine/backend_cuda.cu -o build/gpu-core/backend_cuda.o || ok=0
        wait
        for f in $srcs backend_cuda; do [ -f "build/gpu-core/${f##*/}.o" ] || ok=0; done
        if [ "$ok" != 1 ]; then echo "FATAL: the engine does not compile"; return 1; fi
        rm -f build/gpu-core/libcore.a
        ar rcs build/gpu-core/libcore.a build/gpu-core/*.o
        LIB=build/gpu-core/libcore.a
    fi
    mkdir -p build/gpu-core
    [ -n "$NO_CPU" ] || GC_LIBS="$BLAS_LIBS $GC_LIBS"
    # shellcheck disable=SC2086
    if ! "$CC" $GC_CFLAGS $BLAS_CFLAGS $NO_CPU -o build/gpu-core/gpu_check tests/gpu_check.c \
            tests/bench/bench_cuda.c "$LIB" $GC_LIBS; then
        echo "FATAL: gpu_check does not link"
        return 1
    fi
    echo "built build/gpu-core/gpu_check"

    # 4. the synthetic ViT-B/32 weights
    section "synthetic model"
    SYNTH="$ROOT/build/models"
    export CLIPEVAL_SHARED="$SHARED" CLIPEVAL_SYNTH_DIR="$SYNTH"
    if [ -f "$SYNTH/vitb32-synth/model.safetensors" ] && [ -f "$SYNTH/vitb32-synth/config.json" ]; then
        echo "present: $SYNTH/vitb32-synth"
    elif [ -x build/cuda/clipeval ]; then
        build/cuda/clipeval synth --config "$SHARED/golden/models/vitb32-synth/config.json" \
            --seed "$(cat "$SHARED/golden/models/vitb32-synth/seed.txt")" \
            --out "$SYNTH/vitb32-synth/model.safetensors" || return 1
    else
        build/gpu-core/gpu_check --synth-only || return 1
    fi
    ls -l "$SYNTH/vitb32-synth/model.safetensors"

    # 5. checks
    section "gpu_check (accuracy, then throughput)"
    timeout 360 build/gpu-core/gpu_check 2>&1 | tee build/gpu-core/gpu_check.log
    GC_RC=${PIPESTATUS[0]}
    echo "gpu_check exit status: $GC_RC"

    # 6. the peer, side by side (GPU_CHECK_PEER=1): HF transformers on the same weights, and
    #    `clipeval score` end to end on a COCO-like table in fp32 and bf16
    PEER_RC=skipped
    if [ "${GPU_CHECK_PEER:-0}" = 1 ] && [ "$GC_RC" != 77 ]; then
        section "peer: HF transformers (shared/bench/gpu/hf_peer.py) and clipeval score"
        PEER="$ROOT/build/gpu-peer"
        mkdir -p "$PEER/model" "$PEER/out"
        ln -sf "$SYNTH/vitb32-synth/model.safetensors" "$SYNTH/vitb32-synth/config.json" "$PEER/model/"
        for f in vocab.json merges.txt tokenizer.json tokenizer_config.json special_tokens_map.json \
                 preprocessor_config.json; do ln -sf "$SHARED/models/clip-vit-base-patch32/$f" "$PEER/model/"; done
        PY=$(command -v python3)
        if "$PY" -c 'import torch, transformers, PIL' 2>/dev/null; then
            [ -f "$PEER/rows/rows.jsonl" ] ||
                timeout 300 "$PY" "$SHARED/bench/gpu/gen_rows.py" "$PEER/rows" "${PEER_IMAGES:-500}" 10 \
                    "$SHARED/golden/tokenizer/texts.jsonl" >/dev/null
            timeout "${PEER_TIMEOUT:-300}" "$PY" "$SHARED/bench/gpu/hf_peer.py" "$PEER/model" "$SHARED" \
                "$PEER/rows/rows.jsonl" "$PEER/out" 2>&1 | tail -n 40
            PEER_RC=${PIPESTATUS[0]}
        else
            echo "torch/transformers/Pillow not importable: HF peer skipped"
        fi
        if [ -x build/cuda/clipeval ] && [ -f "$PEER/rows/rows.jsonl" ]; then
            for prec in fp32 bf16 fp16; do
                t0=$(date +%s.%N)
                ( cd "$PEER/rows" && timeout 300 "$ROOT/build/cuda/clipeval" score --input rows.jsonl \
                    --output "$PEER/out/scored_$prec.jsonl" --image-key image --text-key caption \
                    --model "$PEER/model" --device cuda --precision "$prec" --quiet ) &&
                    awk -v t0="$t0" -v t1="$(date +%s.%N)" -v n="$(wc -l <"$PEER/rows/rows.jsonl")" -v p="$prec" \
                        'BEGIN { printf "clipeval score --device cuda --precision %s: %d rows in %.2f s = %.0f rows/s\n", p, n, t1 - t0, n / (t1 - t0) }'
            done
        fi
    fi

    CR_RC=skipped
    if [ "$HAVE_CRITERION" = 1 ] && [ "$MAKE_RC" = 0 ]; then
        if [ "$(elapsed)" -gt 330 ]; then
            section "Criterion cuda/* tests: skipped (time)"
        else
            section "Criterion cuda/* tests"
            if timeout 150 make CUDA=1 BUILD=build/cuda -j"$JOBS" build/cuda/test_clip >build/cuda/make-tests.log 2>&1; then
                CLIPEVAL_BUILD="$ROOT/build/cuda" timeout 200 build/cuda/test_clip --filter 'cuda/*' \
                    --jobs 1 --verbose 2>&1 | grep -v 'Test is disabled' | grep -v '^\[====\] Running'
                CR_RC=${PIPESTATUS[0]}
            else
                echo "test_clip does not build:"
                grep -E 'error|Error' build/cuda/make-tests.log | head -n 10
                CR_RC=build-failed
            fi
        fi
    fi

    if [ -n "${OUT:-}" ]; then # the full logs come back with the report
        cp build/cuda/make.log "$OUT/make-cuda.log" 2>/dev/null
        cp build/cuda/make-tests.log "$OUT/make-tests.log" 2>/dev/null
    fi
    section "summary"
    echo "make CUDA=1:          $MAKE_RC"
    echo "gpu_check:            $GC_RC  (0 pass, 1 a check failed, 77 no GPU)"
    grep -E '^gpu_check:|^  FAIL|^  SKIP' build/gpu-core/gpu_check.log
    echo "criterion cuda/*:     $CR_RC"
    echo "peer (HF):            ${PEER_RC:-skipped}"
    echo "elapsed:              $(elapsed) s"
    [ "$GC_RC" = 0 ] && { [ "$CR_RC" = 0 ] || [ "$CR_RC" = skipped ]; }
}

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    main 2>&1 | tee "$OUT/gpu_report.txt"
    exit "${PIPESTATUS[0]}"
fi
main
