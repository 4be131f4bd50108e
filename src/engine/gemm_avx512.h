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

/* The kernel entry (gemm_isa.micro) of an AVX-512 kernel file: rows in pieces of 12/8/4/2/1,
 * each by that file's micro_R (R rows in registers), every piece computing its rows the same
 * way. T: the packed element type (float, or uint32_t bf16 pairs). */
#define GEMM512_ENTRY(TARGET, T)                                                                   \
    TARGET static void micro(int K, const void *Av, size_t a_block, const void *Bv, float *C,    \
                             size_t ldc, int mr, int nr, const float *bias) {                     \
        const T *A = Av, *B = Bv;                                                                  \
        __mmask16 m0, m1;                                                                          \
        gemm512_masks(nr, &m0, &m1);                                                               \
        int r = 0;                                                                                 \
        for (; mr - r >= 12; r += 12)                                                              \
            micro_12(K, A + r, a_block, B, C + (size_t)r * ldc, ldc, m0, m1, bias);                \
        if (mr - r >= 8) {                                                                         \
            micro_8(K, A + r, a_block, B, C + (size_t)r * ldc, ldc, m0, m1, bias);                 \
            r += 8;                                                                                \
        }                                                                                          \
        if (mr - r >= 4) {                                                                         \
            micro_4(K, A + r, a_block, B, C + (size_t)r * ldc, ldc, m0, m1, bias);                 \
            r += 4;                                                                                \
        }                                                                                          \
        if (mr - r >= 2) {                                                                         \
            micro_2(K, A + r, a_block, B, C + (size_t)r * ldc, ldc, m0, m1, bias);                 \
            r += 2;                                                                                \
        }                                                                                          \
        if (mr - r >= 1) micro_1(K, A + r, a_block, B, C + (size_t)r * ldc, ldc, m0, m1, bias);    \
    }

#endif
