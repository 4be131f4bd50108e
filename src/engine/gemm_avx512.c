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
    T512 static void micro_##R(int K, const float *A, size_t a_block, const float *B, float *C,   \
                               size_t ldc, __mmask16 m0, __mmask16 m1, const float *bias) {        \
        for (int k0 = 0; k0 < K; k0 += GEMM_KC, A += a_block) {                                    \
            int kc = K - k0 < GEMM_KC ? K - k0 : GEMM_KC;                                          \
            const float *Bk = B + (size_t)k0 * NR;                                                 \
            __m512 c0[R], c1[R];                                                                   \
            _Pragma("GCC unroll 12") for (int i = 0; i < R; i++) {                                 \
                c0[i] = _mm512_setzero_ps();                                                       \
                c1[i] = _mm512_setzero_ps();                                                       \
            }                                                                                      \
            for (int k = 0; k < kc; k++) {                                                         \
                __m512 b0 = _mm512_loadu_ps(Bk + (size_t)k * NR);                                  \
                __m512 b1 = _mm512_loadu_ps(Bk + (size_t)k * NR + 16);                             \
                const float *a = A + (size_t)k * MR;                                               \
                _Pragma("GCC unroll 12") for (int i = 0; i < R; i++) {                             \
                    __m512 ai = _mm512_set1_ps(a[i]);                                              \
                    c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);                                        \
                    c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);                                        \
                }                                                                                  \
            }                                                                                      \
            const float *bk = k0 + GEMM_KC >= K ? bias : NULL;                                     \
            _Pragma("GCC unroll 12") for (int i = 0; i < R; i++)                                   \
                gemm512_store_row(C + (size_t)i * ldc, c0[i], c1[i], m0, m1, k0 == 0, bk);         \
        }                                                                                          \
    }

MICRO512(12)
MICRO512(8)
MICRO512(4)
MICRO512(2)
MICRO512(1)

GEMM512_ENTRY(T512, float)

const gemm_isa *gemm_isa_avx512(void) {
    static const gemm_isa isa = {MR, NR, GEMM_KC, 0, micro, gemm_pack_a_f32};
    return &isa;
}
#endif
