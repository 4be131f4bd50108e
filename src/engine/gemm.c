/* gemm.c — packing, blocking and threading of the CPU matrix products (see gemm.h for the
 * recipe every kernel follows), the portable kernel, and the OpenBLAS path.
 *
 * Loop nest of one product (GotoBLAS/BLIS order):
 *   task (a block of GEMM_MC rows x a range of weight panels)   <- threads take tasks
 *     K block of GEMM_KC (GEMM_KC_BF16)                        <- the fixed summation blocks
 *       pack the task's rows of x for this K block (A, in L2)
 *       weight panel p (B: [kc][NR], in L1)
 *         MR-row micro-tiles of A -> C tile of y
 * Which task or thread computes an element never changes how it is computed. */
#ifndef CLIP_NO_OPENBLAS
#include <cblas.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu.h"
#include "gemm.h"
#include "util.h"

#define GEMM_MC 96 /* rows per task: a multiple of every MR (12, 6, 4) */

const char *gemm_kernel_name(gemm_kernel k) {
    switch (k) {
    case GEMM_PORTABLE: return "portable";
    case GEMM_AVX2: return "avx2";
    case GEMM_AVX512: return "avx512";
    case GEMM_AVX512_BF16: return "avx512-bf16";
    case GEMM_OPENBLAS: return "openblas";
    }
    return "unknown";
}

static const gemm_isa *isa_of(gemm_kernel k) {
    switch (k) {
    case GEMM_PORTABLE: return gemm_isa_portable();
    case GEMM_AVX2: return gemm_isa_avx2();
    case GEMM_AVX512: return gemm_isa_avx512();
    case GEMM_AVX512_BF16: return gemm_isa_avx512_bf16();
    case GEMM_OPENBLAS: return NULL;
    }
    return NULL;
}

int gemm_kernel_usable(gemm_kernel k) {
    clip_cpu_features f = clip_cpu_detect();
    switch (k) {
    case GEMM_PORTABLE: return 1;
#ifdef CLIP_NO_OPENBLAS
    case GEMM_OPENBLAS: return 0;
#else
    case GEMM_OPENBLAS: return 1;
#endif
    case GEMM_AVX2: return isa_of(k) && f.avx2 && f.fma;
    case GEMM_AVX512: return isa_of(k) && f.avx512f;
    case GEMM_AVX512_BF16: return isa_of(k) && f.avx512f && f.avx512bw && f.avx512bf16;
    }
    return 0;
}

gemm_kernel gemm_kernel_best_fp32(void) {
    if (gemm_kernel_usable(GEMM_AVX512)) return GEMM_AVX512;
    if (gemm_kernel_usable(GEMM_AVX2)) return GEMM_AVX2;
    /* Without FMA instructions fmaf is a library call: OpenBLAS is the only fast choice. */
    return gemm_kernel_usable(GEMM_OPENBLAS) ? GEMM_OPENBLAS : GEMM_PORTABLE;
}

/* ------------------------------------------------------------------ portable kernel */

#define P_MR 4
#define P_NR 16

static void micro_portable(int K, const void *Av, size_t a_block, const void *Bv, float *C,
                           size_t ldc, int mr, int nr, const float *bias) {
    const float *A = Av, *B = Bv;
    for (int k0 = 0; k0 < K; k0 += GEMM_KC, A += a_block) {
        int kc = K - k0 < GEMM_KC ? K - k0 : GEMM_KC, last = k0 + GEMM_KC >= K;
        const float *Bk = B + (size_t)k0 * P_NR;
        float acc[P_MR][P_NR];
        memset(acc, 0, sizeof acc);
        for (int k = 0; k < kc; k++) {
            const float *b = Bk + (size_t)k * P_NR;
            for (int i = 0; i < mr; i++) {
                float a = A[(size_t)k * P_MR + i];
                for (int j = 0; j < P_NR; j++) acc[i][j] = fmaf(a, b[j], acc[i][j]);
            }
        }
        for (int i = 0; i < mr; i++) {
            float *c = C + (size_t)i * ldc;
            for (int j = 0; j < nr; j++) {
                float v = k0 == 0 ? acc[i][j] : c[j] + acc[i][j];
                c[j] = last && bias ? v + bias[j] : v;
            }
        }
    }
}

/* A block: A[k][i] = x[i][k0 + k] for i < mr, 0 for the rows up to MR. */
static void pack_a_f32(const float *x, size_t ldx, int mr, int k0, int kc, void *Av, int MR) {
    float *A = Av;
    for (int i = 0; i < MR; i++) {
        const float *xr = x + (size_t)i * ldx + k0;
        if (i < mr)
            for (int k = 0; k < kc; k++) A[(size_t)k * MR + i] = xr[k];
        else
            for (int k = 0; k < kc; k++) A[(size_t)k * MR + i] = 0.0f;
    }
}

const gemm_isa *gemm_isa_portable(void) {
    static const gemm_isa isa = {P_MR, P_NR, GEMM_KC, 0, micro_portable, pack_a_f32};
    return &isa;
}

/* The x86 kernels live in their own files, compiled with their instruction sets enabled per
 * function; elsewhere these are absent. */
#if !defined(__x86_64__)
const gemm_isa *gemm_isa_avx2(void) { return NULL; }
const gemm_isa *gemm_isa_avx512(void) { return NULL; }
const gemm_isa *gemm_isa_avx512_bf16(void) { return NULL; }
#endif

/* Exposed for the x86 files: the A packing is the same for every fp32 kernel. */
void gemm_pack_a_f32(const float *x, size_t ldx, int mr, int k0, int kc, void *A, int MR);
void gemm_pack_a_f32(const float *x, size_t ldx, int mr, int k0, int kc, void *A, int MR) {
    pack_a_f32(x, ldx, mr, k0, kc, A, MR);
}

/* ------------------------------------------------------------------ packing weights */

/* Packed weights are hundreds of MiB written once: on 2 MiB-aligned memory the kernel can back
 * them with huge pages (MADV_HUGEPAGE), 512x fewer page faults at load and fewer TLB misses in
 * the kernels. Plain malloc elsewhere. */
static void *alloc_panels(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= ((size_t)2 << 20)) {
        size_t huge = (size_t)2 << 20, rounded = (bytes + huge - 1) / huge * huge;
        void *p = NULL;
        if (posix_memalign(&p, huge, rounded) == 0) {
            (void)madvise(p, rounded, MADV_HUGEPAGE);
            return p;
        }
        return NULL;
    }
#endif
    return malloc(bytes);
}

uint16_t gemm_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFFu)) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFFu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

clip_status gemm_pack(gemm_kernel kernel, int nparts, const float *const *w,
                      const float *const *b, const int *outs, int in, gemm_weights *g,
                      clip_error *err) {
    memset(g, 0, sizeof *g);
    int out = 0;
    for (int p = 0; p < nparts; p++) out += outs[p];
    if (nparts < 1 || in < 1 || out < 1)
        return clip_fail(err, CLIP_ERR_ARG, "gemm_pack: empty product (%d parts, %d x %d)", nparts,
                         out, in);
    g->kernel = kernel;
    g->in = in;
    g->out = out;
    g->bias = calloc((size_t)out, sizeof(float));
    if (!g->bias) return clip_fail(err, CLIP_ERR_NOMEM, "gemm_pack: out of memory (bias)");
    for (int p = 0, o = 0; p < nparts; o += outs[p], p++)
        if (b && b[p]) memcpy(g->bias + o, b[p], sizeof(float) * (size_t)outs[p]);
    if (kernel == GEMM_OPENBLAS && !gemm_kernel_usable(kernel)) {
        gemm_free(g);
        return clip_fail(err, CLIP_ERR_UNSUPPORTED, "this build has no OpenBLAS");
    }
    if (kernel == GEMM_OPENBLAS) {
        if (nparts == 1) { /* sgemm reads the caller's weights in place */
            g->w = w[0];
            return CLIP_OK;
        }
        float *cat = malloc(sizeof(float) * (size_t)out * (size_t)in); /* parts stacked */
        if (!cat) {
            gemm_free(g);
            return clip_fail(err, CLIP_ERR_NOMEM, "gemm_pack: out of memory (%d x %d)", out, in);
        }
        for (int p = 0, o = 0; p < nparts; o += outs[p], p++)
            memcpy(cat + (size_t)o * in, w[p], sizeof(float) * (size_t)outs[p] * (size_t)in);
        g->packed = cat;
        g->w = cat;
        return CLIP_OK;
    }
    const gemm_isa *isa = isa_of(kernel);
    if (!isa || !gemm_kernel_usable(kernel)) {
        gemm_free(g);
        return clip_fail(err, CLIP_ERR_UNSUPPORTED, "the %s kernel cannot run on this CPU",
                         gemm_kernel_name(kernel));
    }
    g->mr = isa->mr;
    g->nr = isa->nr;
    int NR = isa->nr;
    size_t panels = ((size_t)out + NR - 1) / NR;
    size_t krows = isa->k_pairs ? ((size_t)in + 1) / 2 : (size_t)in; /* bf16: pairs of k */
    g->panel_stride = krows * NR;
    size_t total;
    if (!clip_mul_size(panels, g->panel_stride, &total) || !clip_mul_size(total, 4, &total)) {
        gemm_free(g);
        return clip_fail(err, CLIP_ERR_LIMIT, "gemm_pack: %d x %d weights are too large", out, in);
    }
    g->packed = alloc_panels(total);
    if (!g->packed) {
        gemm_free(g);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate %zu MiB of packed weights",
                         total >> 20);
    }
    /* Row j of the product comes from part p, row j - start(p). Panels are independent: packed
     * in parallel, each as a blocked transpose (KB columns of NR rows at a time) so that both
     * the rows read and the panel written stay in cache. */
    long long npanels = (long long)panels;
#pragma omp parallel for schedule(dynamic, 4) if (npanels > 8)
    for (long long pn = 0; pn < npanels; pn++) {
        const float *rows[64]; /* NR <= 64 */
        for (int jj = 0; jj < NR; jj++) {
            int j = (int)pn * NR + jj;
            rows[jj] = NULL;
            for (int p = 0, o = 0; p < nparts && !rows[jj]; o += outs[p], p++)
                if (j < o + outs[p]) rows[jj] = w[p] + (size_t)(j - o) * in;
        }
        enum { KB = 16 };
        if (isa->k_pairs) {
            uint32_t *P = (uint32_t *)g->packed + (size_t)pn * g->panel_stride;
            for (size_t kp0 = 0; kp0 < krows; kp0 += KB)
                for (int jj = 0; jj < NR; jj++) {
                    const float *row = rows[jj];
                    for (size_t kp = kp0; kp < kp0 + KB && kp < krows; kp++) {
                        size_t k = 2 * kp;
                        uint16_t lo = row ? gemm_f32_to_bf16(row[k]) : 0;
                        uint16_t hi = row && k + 1 < (size_t)in ? gemm_f32_to_bf16(row[k + 1]) : 0;
                        P[kp * NR + jj] = (uint32_t)lo | ((uint32_t)hi << 16);
                    }
                }
        } else {
            float *P = (float *)g->packed + (size_t)pn * g->panel_stride;
            for (int jj = 0; jj < NR; jj++)
                if (!rows[jj]) /* past the last output: zero columns */
                    for (size_t k = 0; k < krows; k++) P[k * NR + jj] = 0.0f;
            for (size_t k0 = 0; k0 < krows; k0 += KB) {
                size_t k1 = k0 + KB < krows ? k0 + KB : krows;
                for (int jj = 0; jj < NR; jj++) {
                    const float *row = rows[jj];
                    if (!row) continue;
                    for (size_t k = k0; k < k1; k++) P[k * NR + jj] = row[k];
                }
            }
        }
    }
    return CLIP_OK;
}

void gemm_free(gemm_weights *g) {
    if (!g) return;
    free(g->packed);
    free(g->bias);
    memset(g, 0, sizeof *g);
}

/* ------------------------------------------------------------------ running */

#ifdef CLIP_NO_OPENBLAS
static void openblas_run(const gemm_weights *g, const float *x, int rows, size_t ldx, float *y,
                         size_t ldy, int nthreads) {
    (void)g, (void)x, (void)rows, (void)ldx, (void)y, (void)ldy, (void)nthreads; /* unreachable */
}
#else
static void openblas_run(const gemm_weights *g, const float *x, int rows, size_t ldx, float *y,
                         size_t ldy, int nthreads) {
    /* Row blocks of 64 per thread, each one single-threaded sgemm; then the bias. */
    int parts = rows >= 64 * nthreads ? nthreads : 1;
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
    for (int p = 0; p < parts; p++) {
        int r0 = (int)((long long)rows * p / parts), r1 = (int)((long long)rows * (p + 1) / parts);
        if (r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, g->out, g->in, 1.0f,
                        x + (size_t)r0 * ldx, (int)ldx, g->w, g->in, 0.0f, y + (size_t)r0 * ldy,
                        (int)ldy);
        for (int r = r0; r < r1; r++) {
            float *yr = y + (size_t)r * ldy;
            for (int c = 0; c < g->out; c++) yr[c] = yr[c] + g->bias[c];
        }
    }
}
#endif

/* Rows of a packed K block that one MR-row tile may use: a tile's place in every block. */
static int tile_krows(const gemm_isa *isa) { return isa->k_pairs ? isa->kc / 2 : isa->kc; }

/* Packs K block kb of row block mb of x into A (at its place for that block). */
static void pack_block(const gemm_isa *isa, const float *x, size_t ldx, int rows, int mb, int kb,
                       int K, float *A) {
    int MR = isa->mr, r0 = mb * GEMM_MC, mrows = rows - r0 < GEMM_MC ? rows - r0 : GEMM_MC;
    int k0 = kb * isa->kc, kc = K - k0 < isa->kc ? K - k0 : isa->kc;
    for (int ib = 0; ib < mrows; ib += MR) {
        int mr = mrows - ib < MR ? mrows - ib : MR;
        isa->pack_a(x + (size_t)(r0 + ib) * ldx, ldx, mr, k0, kc,
                    A + (size_t)GEMM_MC * isa->kc * (size_t)kb + (size_t)ib * tile_krows(isa), MR);
    }
}

/* y rows [r0, r0 + mrows) x weight panels [p0, p1): a panel's tiles, each over all of K. */
static void tile_products(const gemm_weights *g, const gemm_isa *isa, const float *A,
                          size_t a_block, int r0, int mrows, int p0, int p1, float *y,
                          size_t ldy) {
    int MR = isa->mr, NR = isa->nr;
    for (int p = p0; p < p1; p++) {
        int nr = g->out - p * NR < NR ? g->out - p * NR : NR;
        const char *B = (const char *)g->packed + (size_t)p * g->panel_stride * 4;
        for (int ib = 0; ib < mrows; ib += MR) {
            int mr = mrows - ib < MR ? mrows - ib : MR;
            isa->micro(g->in, A + (size_t)ib * tile_krows(isa), a_block, B,
                       y + (size_t)(r0 + ib) * ldy + (size_t)p * NR, ldy, mr, nr,
                       g->bias + (size_t)p * NR);
        }
    }
}

clip_status gemm_run(const gemm_weights *g, const float *x, int rows, size_t ldx, float *y,
                     size_t ldy, int nthreads, clip_error *err) {
    if (rows <= 0) return CLIP_OK;
#ifdef _OPENMP
    if (omp_in_parallel()) nthreads = 1;
#else
    nthreads = 1;
#endif
    if (nthreads < 1) nthreads = 1;
    if (g->kernel == GEMM_OPENBLAS) {
        openblas_run(g, x, rows, ldx, y, ldy, nthreads);
        return CLIP_OK;
    }
    const gemm_isa *isa = isa_of(g->kernel);
    int NR = isa->nr, K = g->in;
    int mblocks = (rows + GEMM_MC - 1) / GEMM_MC;
    int panels = (g->out + NR - 1) / NR;
    /* Few row blocks (small batches): cut the output columns too, so every thread has work. */
    int nsplit = 1;
    while (mblocks * nsplit < 4 * nthreads && nsplit * 2 <= panels) nsplit *= 2;
    int ntasks = mblocks * nsplit;
    if (nthreads > ntasks) nthreads = ntasks;
    /* A row block of x is packed whole (every K block), so that a C tile stays in L1 while the
     * K blocks of one weight panel are summed into it. With one task per row block each thread
     * packs its own; when the columns are split, the row blocks are packed once, side by side,
     * before the products, rather than once per column range. */
    int kblocks = (K + isa->kc - 1) / isa->kc;
    size_t a_block = (size_t)GEMM_MC * isa->kc, a_floats = a_block * (size_t)kblocks;
    int shared_a = nsplit > 1;
    size_t nbufs = shared_a ? (size_t)mblocks : (size_t)nthreads;
    float *scratch = malloc(a_floats * nbufs * sizeof(float));
    if (!scratch)
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate the GEMM workspace (%d threads)",
                         nthreads);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        if (shared_a) {
#pragma omp for schedule(static)
            for (int t = 0; t < mblocks * kblocks; t++)
                pack_block(isa, x, ldx, rows, t / kblocks, t % kblocks, K,
                           scratch + a_floats * (size_t)(t / kblocks));
        }
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntasks; t++) {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            int mb = t / nsplit, ns = t % nsplit;
            int r0 = mb * GEMM_MC, mrows = rows - r0 < GEMM_MC ? rows - r0 : GEMM_MC;
            int p0 = (int)((long long)panels * ns / nsplit);
            int p1 = (int)((long long)panels * (ns + 1) / nsplit);
            float *A = scratch + a_floats * (size_t)(shared_a ? mb : tid);
            if (!shared_a)
                for (int kb = 0; kb < kblocks; kb++) pack_block(isa, x, ldx, rows, mb, kb, K, A);
            tile_products(g, isa, A, a_block, r0, mrows, p0, p1, y, ldy);
        }
    }
    free(scratch);
    return CLIP_OK;
}

