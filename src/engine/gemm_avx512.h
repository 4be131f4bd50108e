/* gemm_avx512.h — what the two AVX-512 micro-kernels (fp32 in gemm_avx512.c, bf16 in
 * gemm_bf16.c) share: the end of a tile, C row (+)= accumulators (+ bias). Only for files that
 * compile x86-64 intrinsics. */
#ifndef CLIP_GEMM_AVX512_H
#define CLIP_GEMM_AVX512_H

#include <immintrin.h>
#include <stddef.h>

#define T512 __attribute__((target("avx512f")))

/* C row (+)= acc0|acc1, then + bias; only the columns set in the masks are touched. */
T512 static inline void gemm512_store_row(float *c, __m512 v0, __m512 v1, __mmask16 m0,
                                          __mmask16 m1, int first, const float *bias) {
    if (!first) {
        v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), v0);
        v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), v1);
    }
    if (bias) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, bias));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, bias + 16));
    }
    _mm512_mask_storeu_ps(c, m0, v0);
    _mm512_mask_storeu_ps(c + 16, m1, v1);
}

/* The masks of the first nr of 32 columns. */
static inline void gemm512_masks(int nr, __mmask16 *m0, __mmask16 *m1) {
    *m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
    *m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
}

#endif
