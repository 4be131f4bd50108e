/* gemm_avx2.c — the AVX2+FMA fp32 micro-kernel: 6 rows x 16 columns (two ymm per row, 12
 * accumulators), for CPUs without AVX-512. Same recipe as every kernel (gemm.h), so the same
 * bits as the AVX-512 and portable kernels. */
#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TAVX2 __attribute__((target("avx2,fma")))
#define MR 6
#define NR 16

void gemm_pack_a_f32(const float *x, size_t ldx, int mr, int k0, int kc, void *A, int MR_);

TAVX2 static inline void store_row(float *c, __m256 v0, __m256 v1, __m256i m0, __m256i m1,
                                   int first, const float *bias) {
    if (!first) {
        v0 = _mm256_add_ps(_mm256_maskload_ps(c, m0), v0);
        v1 = _mm256_add_ps(_mm256_maskload_ps(c + 8, m1), v1);
    }
    if (bias) {
        v0 = _mm256_add_ps(v0, _mm256_maskload_ps(bias, m0));
        v1 = _mm256_add_ps(v1, _mm256_maskload_ps(bias + 8, m1));
    }
    _mm256_maskstore_ps(c, m0, v0);
    _mm256_maskstore_ps(c + 8, m1, v1);
}

#define MICRO2(R)                                                                                  \
    TAVX2 static void micro_##R(int K, const float *A, size_t a_block, const float *B, float *C,  \
                                size_t ldc, __m256i m0, __m256i m1, const float *bias) {           \
        for (int k0 = 0; k0 < K; k0 += GEMM_KC, A += a_block) {                                    \
            int kc = K - k0 < GEMM_KC ? K - k0 : GEMM_KC;                                          \
            const float *Bk = B + (size_t)k0 * NR;                                                 \
            __m256 c0[R], c1[R];                                                                   \
            _Pragma("GCC unroll 6") for (int i = 0; i < R; i++) {                                  \
                c0[i] = _mm256_setzero_ps();                                                       \
                c1[i] = _mm256_setzero_ps();                                                       \
            }                                                                                      \
            for (int k = 0; k < kc; k++) {                                                         \
                __m256 b0 = _mm256_loadu_ps(Bk + (size_t)k * NR);                                  \
                __m256 b1 = _mm256_loadu_ps(Bk + (size_t)k * NR + 8);                              \
                const float *a = A + (size_t)k * MR;                                               \
                _Pragma("GCC unroll 6") for (int i = 0; i < R; i++) {                              \
                    __m256 ai = _mm256_broadcast_ss(a + i);                                        \
                    c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);                                        \
                    c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);                                        \
                }                                                                                  \
            }                                                                                      \
            const float *bk = k0 + GEMM_KC >= K ? bias : NULL;                                     \
            _Pragma("GCC unroll 6") for (int i = 0; i < R; i++)                                    \
                store_row(C + (size_t)i * ldc, c0[i], c1[i], m0, m1, k0 == 0, bk);                 \
        }                                                                                          \
    }

MICRO2(6)
MICRO2(4)
MICRO2(2)
MICRO2(1)

TAVX2 static __m256i lane_mask(int n) { /* lanes < n set */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

TAVX2 static void micro(int K, const void *Av, size_t a_block, const void *Bv, float *C,
                        size_t ldc, int mr, int nr, const float *bias) {
    const float *A = Av, *B = Bv;
    __m256i m0 = lane_mask(nr), m1 = lane_mask(nr - 8);
    int r = 0;
    for (; mr - r >= 6; r += 6) micro_6(K, A + r, a_block, B, C + (size_t)r * ldc, ldc, m0, m1, bias);
    if (mr - r >= 4) { micro_4(K, A + r, a_block, B, C + (size_t)r * ldc, ldc, m0, m1, bias); r += 4; }
    if (mr - r >= 2) { micro_2(K, A + r, a_block, B, C + (size_t)r * ldc, ldc, m0, m1, bias); r += 2; }
    if (mr - r >= 1) micro_1(K, A + r, a_block, B, C + (size_t)r * ldc, ldc, m0, m1, bias);
}

const gemm_isa *gemm_isa_avx2(void) {
    static const gemm_isa isa = {MR, NR, GEMM_KC, 0, micro, gemm_pack_a_f32};
    return &isa;
}
#endif
