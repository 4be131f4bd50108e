/* runinfo.c — the CPU runtime, told to the user (see runinfo.h). */
#include "runinfo.h"

int runinfo_line(const clip_runtime_info *ri, char *buf, size_t cap) {
    char isa[64];
    snprintf(isa, sizeof isa, "%s%s%s%s", ri->avx2 ? " AVX2" : "", ri->fma ? " FMA" : "",
             ri->avx512f ? " AVX-512F" : "", ri->avx512bf16 ? " AVX512-BF16" : "");
    int n = snprintf(buf, cap, "%s, core %s, %d BLAS thread%s, %d OpenMP thread%s, %d core%s, CPU%s",
                     ri->blas, ri->blas_core, ri->blas_threads, ri->blas_threads == 1 ? "" : "s",
                     ri->omp_threads, ri->omp_threads == 1 ? "" : "s", ri->cores, ri->cores == 1 ? "" : "s",
                     isa[0] ? isa : " without AVX2");
    return n < 0 ? 0 : (n >= (int)cap ? (int)cap - 1 : n);
}

int runinfo_warn(const clip_runtime_info *ri, FILE *log) {
    if (!log || !ri->warning[0]) return 0;
    fprintf(log, "clipeval: warning: %s\n", ri->warning);
    return 1;
}
