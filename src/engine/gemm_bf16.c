/* gemm_bf16.c — the bf16 micro-kernel (`--precision bf16` on the CPU): 12 rows x 32 columns of
 * VDPBF16PS. Weights are bf16 from gemm_pack (half the bytes of fp32); activations are rounded to
 * bf16 (nearest even) as they are packed; products are summed in fp32: each lane runs one
 * dpbf16 chain over pairs of k, K blocks added in order, so the bits still do not depend on the
 * batch or the thread count. Only what feeds a matrix product is bf16: LayerNorm, softmax,
 * the residual stream and the final normalisation stay fp32 (backend_cpu.c). */
#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "gemm_avx512.h"

#define TBF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define MR 12
#define NR 32

/* gemm_f32_to_bf16 on 16 floats at once, the same integer steps (so the same bits): nearest
 * even by adding 0x7FFF plus the lowest kept bit, a NaN kept quiet. */
TBF16 static inline __m256i bf16_of_16(const float *x) {
    __m512i u = _mm512_loadu_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    __mmask16 exp_ones = _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7F800000)),
                                                 _mm512_set1_epi32(0x7F800000));
    __mmask16 nan = _mm512_mask_test_epi32_mask(exp_ones, u, _mm512_set1_epi32(0x7FFFFF));
    __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q));
}

/* A[kp][i] = (bf16 x[i][k0+2kp]) | (bf16 x[i][k0+2kp+1]) << 16; zeros past mr rows / kc. A row
 * is converted 16 values at a time into a line of pairs, then the line goes down A's column. */
TBF16 static void pack_a_bf16(const float *x, size_t ldx, int mr, int k0, int kc, void *Av,
                              int mr_max) {
    uint32_t *A = Av;
    int kp_n = (kc + 1) / 2;
    uint16_t h[GEMM_KC_BF16 + 2];
    for (int i = 0; i < mr_max; i++) {
        if (i >= mr) {
            for (int kp = 0; kp < kp_n; kp++) A[(size_t)kp * mr_max + i] = 0;
            continue;
        }
        const float *xr = x + (size_t)i * ldx + k0;
        int k = 0;
        for (; k + 16 <= kc; k += 16) _mm256_storeu_si256((__m256i *)(void *)(h + k), bf16_of_16(xr + k));
        for (; k < kc; k++) h[k] = gemm_f32_to_bf16(xr[k]);
        h[kc] = 0; /* the pair of an odd last k */
        for (int kp = 0; kp < kp_n; kp++)
            A[(size_t)kp * mr_max + i] = (uint32_t)h[2 * kp] | (uint32_t)h[2 * kp + 1] << 16;
    }
}

#define MICROBF(R)                                                                                 \
    TBF16 static void micro_##R(int K, const uint32_t *A, size_t a_block, const uint32_t *B,      \
                                float *C, size_t ldc, __mmask16 m0, __mmask16 m1,                  \
                                const float *bias) {                                               \
        for (int k0 = 0; k0 < K; k0 += GEMM_KC_BF16, A += a_block) {                                    \
            int kp_n = ((K - k0 < GEMM_KC_BF16 ? K - k0 : GEMM_KC_BF16) + 1) / 2;                            \
            const uint32_t *Bk = B + (size_t)(k0 / 2) * NR;                                        \
            __m512 c0[R], c1[R];                                                                   \
            _Pragma("GCC unroll 12") for (int i = 0; i < R; i++) {                                 \
                c0[i] = _mm512_setzero_ps();                                                       \
                c1[i] = _mm512_setzero_ps();                                                       \
            }                                                                                      \
            for (int kp = 0; kp < kp_n; kp++) {                                                    \
                __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bk + (size_t)kp * NR);                  \
                __m512bh b1 = (__m512bh)_mm512_loadu_si512(Bk + (size_t)kp * NR + 16);             \
                const uint32_t *a = A + (size_t)kp * MR;                                           \
                _Pragma("GCC unroll 12") for (int i = 0; i < R; i++) {                             \
                    __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i]);                          \
                    c0[i] = _mm512_dpbf16_ps(c0[i], ai, b0);                                       \
                    c1[i] = _mm512_dpbf16_ps(c1[i], ai, b1);                                       \
                }                                                                                  \
            }                                                                                      \
            const float *bk = k0 + GEMM_KC_BF16 >= K ? bias : NULL;                                     \
            _Pragma("GCC unroll 12") for (int i = 0; i < R; i++)                                   \
                gemm512_store_row(C + (size_t)i * ldc, c0[i], c1[i], m0, m1, k0 == 0, bk);         \
        }                                                                                          \
    }

MICROBF(12)
MICROBF(8)
MICROBF(4)
MICROBF(2)
MICROBF(1)

GEMM512_ENTRY(TBF16, uint32_t)

const gemm_isa *gemm_isa_avx512_bf16(void) {
    static const gemm_isa isa = {MR, NR, GEMM_KC_BF16, 1, micro, pack_a_bf16};
    return &isa;
}
#endif
