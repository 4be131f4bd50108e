/* gemm_avx512.c — the AVX-512F fp32 micro-kernel: 12 rows x 32 columns (two zmm per row, 24
 * accumulators). Only these functions use AVX-512 (target attributes); gemm.c calls them after
 * CPUID said yes. The recipe is gemm.h's: one fma chain per lane in k order. */
#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "gemm_avx512.h"

#define MR 12
#define NR 32

void gemm_pack_a_f32(const float *x, size_t ldx, int mr, int k0, int kc, void *A, int MR_);

/* R rows: R is a constant in each instance, so the accumulators live in registers. */
#define MICRO512(R)                                                                                \
    T512 static void micro_##R(int kc, const float *A, int as, const float *B, float *C,          \
                               size_t ldc, __mmask16 m0, __mmask16 m1, int first,                  \
                               const float *bias) {                                                \
        __m512 c0[R], c1[R];                                                                       \
        _Pragma("GCC unroll 12") for (int i = 0; i < R; i++) {                                     \
            c0[i] = _mm512_setzero_ps();                                                           \
            c1[i] = _mm512_setzero_ps();                                                           \
        }                                                                                          \
        for (int k = 0; k < kc; k++) {                                                             \
            __m512 b0 = _mm512_loadu_ps(B + (size_t)k * NR);                                       \
            __m512 b1 = _mm512_loadu_ps(B + (size_t)k * NR + 16);                                  \
            const float *a = A + (size_t)k * as;                                                   \
            _Pragma("GCC unroll 12") for (int i = 0; i < R; i++) {                                 \
                __m512 ai = _mm512_set1_ps(a[i]);                                                  \
                c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);                                            \
                c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);                                            \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 12") for (int i = 0; i < R; i++)                                       \
            gemm512_store_row(C + (size_t)i * ldc, c0[i], c1[i], m0, m1, first, bias);                     \
    }

MICRO512(12)
MICRO512(8)
MICRO512(4)
MICRO512(2)
MICRO512(1)

T512 static void micro(int kc, const void *Av, int as, const void *Bv, float *C, size_t ldc,
                       int mr, int nr, int first, const float *bias) {
    const float *A = Av, *B = Bv;
    __mmask16 m0, m1;
    gemm512_masks(nr, &m0, &m1);
    /* rows in pieces of 12/8/4/2/1: every piece computes its rows the same way */
    int r = 0;
    for (; mr - r >= 12; r += 12) micro_12(kc, A + r, as, B, C + (size_t)r * ldc, ldc, m0, m1, first, bias);
    if (mr - r >= 8) { micro_8(kc, A + r, as, B, C + (size_t)r * ldc, ldc, m0, m1, first, bias); r += 8; }
    if (mr - r >= 4) { micro_4(kc, A + r, as, B, C + (size_t)r * ldc, ldc, m0, m1, first, bias); r += 4; }
    if (mr - r >= 2) { micro_2(kc, A + r, as, B, C + (size_t)r * ldc, ldc, m0, m1, first, bias); r += 2; }
    if (mr - r >= 1) micro_1(kc, A + r, as, B, C + (size_t)r * ldc, ldc, m0, m1, first, bias);
}

const gemm_isa *gemm_isa_avx512(void) {
    static const gemm_isa isa = {MR, NR, 0, micro, gemm_pack_a_f32};
    return &isa;
}
#endif
