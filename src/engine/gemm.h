/* gemm.h — the CPU's matrix products y[M, N] = x[M, K] · W[N, K]^T + b, for every Linear layer.
 *
 * Why our own kernels rather than OpenBLAS sgemm for these products: the oracle promises the
 * same bits for the same input whatever the batch and the thread count, and OpenBLAS cannot keep
 * that promise. Its Haswell kernels compute a row differently depending on its place in a
 * 12-row panel (lanes 0-5 and 6-11 round differently) and in the ragged tail, so an image's
 * embedding changed with the images around it. Here every element is computed by one fixed
 * recipe, whatever kernel, ISA, tile position or thread computes it:
 *
 *   y[i][j] = fl( S_last + b[j] ),  S_0 = P_0,  S_t = fl(S_{t-1} + P_t),
 *   P_t = fma(x[i][k_end-1], W[j][k_end-1], ... fma(x[i][k_0], W[j][k_0], 0))
 *
 * over fixed K blocks t of GEMM_KC columns (GEMM_KC_BF16 for bf16). Each P_t is one chain of fused multiply-adds in k
 * order (a SIMD lane per output column, so every lane runs the same chain), and the blocks are
 * summed in order. The AVX-512, AVX2 and portable (fmaf) kernels therefore give identical bits,
 * and a row's result depends on nothing but that row.
 *
 * Weights are packed once at load (gemm_pack) into panels of NR output columns laid out
 * k-major ([K][NR]), so a kernel streams them with unit stride; activations are packed per call
 * in MR-row blocks ([K][MR]). Several weights with the same K can be packed side by side
 * (q, k, v -> one [3D, D] product). bf16 (gemm_bf16.c) follows the same plan with pairs of k.
 */
#ifndef CLIP_GEMM_H
#define CLIP_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "clip.h"

/* K block. Short chains summed block by block are more accurate than one long chain: with 48,
 * every golden embedding error is below the previous OpenBLAS build's (vitb32 image_features
 * 1.45e-6 vs 2.47e-6); 256 was faster by a few percent but less accurate than OpenBLAS on
 * three of the eight. Even, for the bf16 pairs. */
#define GEMM_KC 48
/* The bf16 kernel's K block: its error is the bf16 rounding of the inputs, which the block
 * length does not change, and its blocks are twice as short in instructions, so a block's C
 * update costs twice as much: 192 is 13-19% faster than 48 on Zen 5. A multiple of GEMM_KC. */
#define GEMM_KC_BF16 192
#define GEMM_KC_MAX GEMM_KC_BF16

typedef enum gemm_kernel {
    GEMM_PORTABLE = 0, /* C99 fmaf: any CPU (slow where fma is not an instruction) */
    GEMM_AVX2,         /* AVX2 + FMA, 6 x 16 tiles */
    GEMM_AVX512,       /* AVX-512F, 12 x 32 tiles */
    GEMM_AVX512_BF16,  /* bf16 weights and activations, fp32 accumulation (AVX512-BF16) */
    GEMM_OPENBLAS      /* cblas_sgemm on the unpacked weights: fast everywhere, but its bits
                        * depend on the batch (see above) */
} gemm_kernel;

const char *gemm_kernel_name(gemm_kernel k);
/* 1 when this CPU can run kernel k. */
int gemm_kernel_usable(gemm_kernel k);
/* The fp32 kernel for this CPU: AVX-512, else AVX2, else OpenBLAS. */
gemm_kernel gemm_kernel_best_fp32(void);

/* One Linear layer (or several side by side), ready for gemm_run. */
typedef struct gemm_weights {
    gemm_kernel kernel;
    int in, out;          /* K and N */
    int mr, nr;           /* tile of the kernel */
    size_t panel_stride;  /* elements of one packed panel: K (rounded) * nr */
    void *packed;         /* float (or uint32 bf16 pairs) panels; NULL for OpenBLAS */
    float *bias;          /* [out], owned (concatenated when packed side by side) */
    const float *w;       /* OpenBLAS only: the caller's [out][in] weights (single part) */
} gemm_weights;

/* Packs nparts weights w[p] ([outs[p]][in], row-major as HF stores Linear weights) with biases
 * b[p] ([outs[p]], or NULL for none) into one [sum outs, in] product for `kernel`. */
clip_status gemm_pack(gemm_kernel kernel, int nparts, const float *const *w,
                      const float *const *b, const int *outs, int in, gemm_weights *out,
                      clip_error *err);
void gemm_free(gemm_weights *g);

/* y[rows][0..out) (row stride ldy) = x[rows][0..in) (row stride ldx) · W^T + b, on up to
 * nthreads OpenMP threads (1 inside a parallel region). Work is cut along rows and output
 * columns only, never along K. The packed copy of x it works from is allocated per call (about
 * the size of x). */
clip_status gemm_run(const gemm_weights *g, const float *x, int rows, size_t ldx, float *y,
                     size_t ldy, int nthreads, clip_error *err);

/* ------------------------------------------------------------------ kernels (internal) */

/* A micro-kernel: one C tile over the whole of K. C[0..mr)[0..nr) = the K blocks' products
 * A_t · B_t summed in order (each block's chain starting from zero), then + bias. A: the tile's
 * rows in the first K block, packed [kc][MR]; each next block starts a_block elements further.
 * B: the weight panel, packed [K][NR] (pairs of k for bf16). nr < NR stores only nr columns.
 * Looping over the blocks inside the kernel keeps a call's set-up out of every block. */
typedef void (*gemm_micro_fn)(int K, const void *A, size_t a_block, const void *B, float *C,
                              size_t ldc, int mr, int nr, const float *bias);

typedef struct gemm_isa {
    int mr, nr;
    int kc;               /* the K block of the kernel's recipe: GEMM_KC, or GEMM_KC_BF16 */
    int k_pairs;          /* 1 for bf16: A and B hold pairs of k (uint32 each) */
    gemm_micro_fn micro;
    /* packs rows [r0, r0+mr) x cols [k0, k0+kc) of x into an A block ([kc or kc/2][MR]) */
    void (*pack_a)(const float *x, size_t ldx, int mr, int k0, int kc, void *A, int MR);
} gemm_isa;

/* fp32 -> bf16, round to nearest even (what VCVTNEPS2BF16 does); NaN stays a quiet NaN. Weights
 * and activations are rounded by this one function. */
uint16_t gemm_f32_to_bf16(float f);

const gemm_isa *gemm_isa_portable(void);
const gemm_isa *gemm_isa_avx2(void);   /* NULL when not compiled for x86-64 */
const gemm_isa *gemm_isa_avx512(void);
const gemm_isa *gemm_isa_avx512_bf16(void);

#endif
