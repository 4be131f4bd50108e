/* runtime.c — what the CPU side runs on: the BLAS library and its kernel family, thread counts,
 * CPUID features; and the warning for a BLAS that picked kernels far below the CPU. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "clip.h"
#include "cpu.h"
#include "util.h"

#ifndef CLIP_NO_OPENBLAS
/* OpenBLAS's own entry points (no standard header declares them everywhere). */
char *openblas_get_corename(void);
char *openblas_get_config(void);
int openblas_get_num_threads(void);
#endif

int clip_blas_advice(const char *core, int avx2, int fma, int avx512f, int avx512bf16, char *buf,
                     size_t cap) {
    if (!buf || cap == 0) return 0;
    buf[0] = '\0';
    if (!core || !*core) return 0;
    /* OpenBLAS x86 kernel families older than AVX2 (param.h): what DYNAMIC_ARCH falls back to
     * when it does not recognise a CPU (a masked or too new model). */
    static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                          "Atom", "Sandybridge", "Barcelona", "Bobcat",
                                          "Bulldozer", "Piledriver", "Steamroller", "Excavator",
                                          "Katmai", "Coppermine", "Northwood", "Opteron",
                                          "Opteron_SSE3", "Banias", "generic", "unknown"};
    int old = 0;
    for (size_t i = 0; i < sizeof generic / sizeof generic[0] && !old; i++)
        old = !strcasecmp(core, generic[i]);
    if (!old || !(avx2 && fma)) return 0;
    const char *want = avx512f ? (avx512bf16 ? "Cooperlake" : "SkylakeX") : "Haswell";
    int n = snprintf(buf, cap,
                     "OpenBLAS uses its generic '%s' kernels, but this CPU has %s: matrix products "
                     "run 2-4x slower than they could. Fix: export OPENBLAS_CORETYPE=%s",
                     core, avx512f ? "AVX-512" : "AVX2+FMA", want);
    return n < 0 ? 0 : (n >= (int)cap ? (int)cap - 1 : n);
}

void clip_runtime_info_get(clip_runtime_info *out) {
    memset(out, 0, sizeof *out);
#ifdef CLIP_NO_OPENBLAS
    const char *core = "none", *cfg = "none";
#else
    const char *core = openblas_get_corename();
    const char *cfg = openblas_get_config();
#endif
    /* "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64": the first two words */
    int words = 0;
    size_t n = 0;
    for (const char *p = cfg ? cfg : "OpenBLAS"; *p && n + 1 < sizeof out->blas; p++) {
        if (*p == ' ' && ++words == 2) break;
        out->blas[n++] = *p;
    }
    out->blas[n] = '\0';
    snprintf(out->blas_core, sizeof out->blas_core, "%s", core ? core : "unknown");
#ifdef CLIP_NO_OPENBLAS
    out->blas_threads = 0;
#else
    out->blas_threads = openblas_get_num_threads();
#endif
#ifdef _OPENMP
    out->omp_threads = omp_get_max_threads();
#else
    out->omp_threads = 1;
#endif
    out->cores = clip_num_cores();
    clip_cpu_features f = clip_cpu_detect();
    out->avx2 = f.avx2;
    out->fma = f.fma;
    out->avx512f = f.avx512f;
    out->avx512bf16 = f.avx512bf16;
    clip_blas_advice(out->blas_core, f.avx2, f.fma, f.avx512f, f.avx512bf16, out->warning,
                     sizeof out->warning);
}
