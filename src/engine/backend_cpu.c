/* backend_cpu.c — the forward pass's operations on the CPU (forward.h), fp32 storage.
 *
 * Matrix products go through gemm.c (our kernels: one fixed summation recipe, so the bits of a
 * row never depend on its batch or the thread count). Attention is computed here per sequence
 * and head with the same property: every score and context value is one chain in a fixed order.
 * The small reductions where float rounding would add error of our own — LayerNorm moments,
 * softmax sums, the final norm — are done in double and rounded once, so our total error stays
 * at or below PyTorch's own fp32 error against the fp64 golden.
 *
 * Threads: each operation runs one OpenMP parallel loop with the model's thread count (passed
 * explicitly, never through the caller's OpenMP settings); work is cut along rows, sequences
 * or heads, never along a sum. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "cpu.h"
#include "forward.h"
#include "gemm.h"
#include "util.h"

/* Items per chunk: bounds the work buffers whatever the batch. */
#define VISION_CHUNK 64
#define TEXT_CHUNK 256

/* Work buffers of finished calls, kept for the next ones: a ViT-B/32 chunk needs ~250 MiB, and
 * fresh memory costs a page fault and a zeroed page per 4 KiB on every call. */
#define WS_POOL 4
typedef struct ws_block {
    float *mem;
    size_t floats;
} ws_block;

typedef struct cpu_state {
    gemm_kernel kernel;
    int nthreads;
    pthread_mutex_t ws_mu;
    int ws_mu_ok;
    ws_block ws[WS_POOL]; /* idle buffers (mem NULL: empty slot) */
    gemm_weights *gemms; /* every packed product of the model */
    size_t ngemms;
    fwd_layer *layers;   /* vision layers, then text layers */
    fwd_tower vision, text;
} cpu_state;

struct att_scratch;

/* The backend context of one encode call. */
typedef struct cpu_be {
    int nt; /* threads */
    void (*attend)(const float *, size_t, int, int, int, int, int, float, int, float *, float *,
                   struct att_scratch *);
    void (*quick_gelu)(float *, int);
} cpu_be;

/* ------------------------------------------------------------------ element-wise operations */

static clip_status op_linear(void *be, const fwd_linear *w, const float *x, int rows, float *y,
                             size_t ldy, clip_error *err) {
    const cpu_be *b = be;
    (void)b; /* only the OpenMP pragmas read it */
    return gemm_run((const gemm_weights *)w->impl, x, rows, (size_t)w->in, y, ldy, b->nt, err);
}

static clip_status op_layernorm(void *be, const float *x, float *y, int rows, int d, fwd_norm n,
                                double eps, clip_error *err) {
    (void)err;
    const cpu_be *b = be;
    (void)b; /* only the OpenMP pragmas read it */
#pragma omp parallel for schedule(static) num_threads(b->nt) if (rows > 1)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        /* two-pass moments in double (spec §A.3); the simd reductions only reorder exact-ish
         * double sums of float inputs, the same way for every row */
        double mu = 0.0, var = 0.0;
#pragma omp simd reduction(+ : mu)
        for (int i = 0; i < d; i++) mu += xr[i];
        mu /= d;
#pragma omp simd reduction(+ : var)
        for (int i = 0; i < d; i++) {
            double c = xr[i] - mu;
            var += c * c;
        }
        var /= d;
        double rstd = 1.0 / sqrt(var + eps);
#pragma omp simd
        for (int i = 0; i < d; i++) yr[i] = (float)(((double)xr[i] - mu) * rstd * n.w[i] + n.b[i]);
    }
    return CLIP_OK;
}

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define ALWAYS_INLINE inline
#endif

#define CLIP_EXP_F32_QUALIFIERS static ALWAYS_INLINE
#include "exp_f32.h"

#define EW_BLOCK 4096 /* element-wise work per task */

/* x * sigmoid(1.702 x), 1.702 as the float constant HF uses (1.7020000219...). Built for
 * AVX-512, AVX2 and the baseline and picked by CPUID (cpu_be_make): element-wise IEEE
 * operations without contraction, so every build gives the same bits. */
static ALWAYS_INLINE void quick_gelu(float *v, int m) {
#pragma omp simd
    for (int c = 0; c < m; c++) v[c] = v[c] / (1.0f + exp_f32(-1.702f * v[c]));
}
static void quick_gelu_base(float *v, int m) { quick_gelu(v, m); }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx512f"))) static void quick_gelu_avx512(float *v, int m) {
    quick_gelu(v, m);
}
__attribute__((target("avx2"))) static void quick_gelu_avx2(float *v, int m) { quick_gelu(v, m); }
#endif

static clip_status op_activation(void *be, float *x, size_t n, clip_act act, clip_error *err) {
    (void)err;
    const cpu_be *b = be;
    (void)b; /* only the OpenMP pragmas read it */
    long long blocks = (long long)((n + EW_BLOCK - 1) / EW_BLOCK);
#pragma omp parallel for schedule(static) num_threads(b->nt) if (blocks > 1)
    for (long long blk = 0; blk < blocks; blk++) {
        size_t i0 = (size_t)blk * EW_BLOCK, i1 = i0 + EW_BLOCK < n ? i0 + EW_BLOCK : n;
        float *v = x + i0;
        int m = (int)(i1 - i0);
        switch (act) {
        case CLIP_ACT_QUICK_GELU:
            b->quick_gelu(v, m);
            break;
        case CLIP_ACT_GELU:
            for (int c = 0; c < m; c++) {
                double u = v[c];
                v[c] = (float)(0.5 * u * (1.0 + erf(u * 0.70710678118654752440)));
            }
            break;
        case CLIP_ACT_GELU_TANH:
            for (int c = 0; c < m; c++) {
                double u = v[c];
                v[c] = (float)(0.5 * u *
                               (1.0 + tanh(0.79788456080286535588 * (u + 0.044715 * u * u * u))));
            }
            break;
        }
    }
    return CLIP_OK;
}

static clip_status op_residual(void *be, float *h, const float *y, size_t n, clip_error *err) {
    (void)err;
    const cpu_be *b = be;
    (void)b; /* only the OpenMP pragmas read it */
    long long blocks = (long long)((n + EW_BLOCK - 1) / EW_BLOCK);
#pragma omp parallel for schedule(static) num_threads(b->nt) if (blocks > 1)
    for (long long blk = 0; blk < blocks; blk++) {
        size_t i0 = (size_t)blk * EW_BLOCK, i1 = i0 + EW_BLOCK < n ? i0 + EW_BLOCK : n;
#pragma omp simd
        for (size_t i = i0; i < i1; i++) h[i] = h[i] + y[i];
    }
    return CLIP_OK;
}

/* ------------------------------------------------------------------ attention */

#define ATT_LANES 16 /* keys (or context columns) handled together: one AVX-512 vector */

#define ATT_ROWS 4 /* query rows scored together: four independent chains per key vector */

/* Per thread: ATT_ROWS q rows scaled [ATT_ROWS][Dh], keys transposed [Dh][Lp], ATT_ROWS rows of
 * scores [ATT_ROWS][Lp], one row's exponentials [Lp] (double). */
typedef struct att_scratch {
    float *qs, *kt, *sc;
    double *ex;
} att_scratch;

/* One (sequence, head): ctx[i] = sum_j p_ij v_j, p_i = softmax_j(fl(q_i * scale) . k_j) over the
 * visible keys. Every score is one chain over c in order, every context value one chain over j
 * in order, whatever L: a row's result depends only on the rows it attends to. The chains are
 * short and each step waits on the last, so the loops run several independent ones side by
 * side (ATT_ROWS query rows for the scores, four column blocks for the context); that changes
 * how many run at once, never the order within one. */

/* the accumulators of the side-by-side chains must be registers, not a stack array */
#if defined(__GNUC__) && !defined(__clang__)
#define ATT_UNROLL _Pragma("GCC unroll 4")
#elif defined(__clang__)
#define ATT_UNROLL _Pragma("unroll")
#else
#define ATT_UNROLL
#endif

/* Scores of R query rows (R a constant in each call) against keys [j0, j0 + ATT_LANES). */
static ALWAYS_INLINE void att_scores(int R, const float *qs, int dh, const float *kt, int Lp,
                                     int j0, float *sc) {
    float acc[ATT_ROWS][ATT_LANES];
    ATT_UNROLL for (int r = 0; r < R; r++)
        for (int jj = 0; jj < ATT_LANES; jj++) acc[r][jj] = 0.0f;
    for (int c = 0; c < dh; c++) {
        const float *kc = kt + (size_t)c * Lp + j0;
        ATT_UNROLL for (int r = 0; r < R; r++) {
            const float qc = qs[(size_t)r * dh + c];
#pragma omp simd
            for (int jj = 0; jj < ATT_LANES; jj++) acc[r][jj] = acc[r][jj] + qc * kc[jj];
        }
    }
    for (int r = 0; r < R; r++) memcpy(sc + (size_t)r * Lp + j0, acc[r], sizeof acc[r]);
}

static ALWAYS_INLINE void attend(const float *qkv, size_t ld, int row0, int L, int d, int h, int dh, float scale,
                   int causal, float *att, float *probs, att_scratch *w) {
    const float *Q = qkv + (size_t)row0 * ld + (size_t)h * dh;
    const float *K = Q + d, *V = Q + 2 * (size_t)d;
    int Lp = (L + ATT_LANES - 1) / ATT_LANES * ATT_LANES;
    for (int c = 0; c < dh; c++) {
        float *kc = w->kt + (size_t)c * Lp;
        for (int j = 0; j < L; j++) kc[j] = K[(size_t)j * ld + c];
        for (int j = L; j < Lp; j++) kc[j] = 0.0f;
    }
    for (int i0 = 0; i0 < L; i0 += ATT_ROWS) {
        int R = L - i0 < ATT_ROWS ? L - i0 : ATT_ROWS;
        /* scores for the keys any of the R rows sees (a row's extra ones are never read) */
        int nvis_max = causal ? i0 + R : L;
        for (int r = 0; r < R; r++) {
            const float *qi = Q + (size_t)(i0 + r) * ld;
            for (int c = 0; c < dh; c++) w->qs[(size_t)r * dh + c] = qi[c] * scale; /* HF: q_proj(x) * scale */
        }
        for (int j0 = 0; j0 < nvis_max; j0 += ATT_LANES) {
            if (R == ATT_ROWS)
                att_scores(ATT_ROWS, w->qs, dh, w->kt, Lp, j0, w->sc);
            else
                for (int r = 0; r < R; r++)
                    att_scores(1, w->qs + (size_t)r * dh, dh, w->kt, Lp, j0, w->sc + (size_t)r * Lp);
        }
        for (int r = 0; r < R; r++) {
            int i = i0 + r, nvis = causal ? i + 1 : L;
            float *sc = w->sc + (size_t)r * Lp;
            float mx = sc[0];
            for (int j = 1; j < nvis; j++)
                if (sc[j] > mx) mx = sc[j];
            double sum = 0.0;
            for (int j = 0; j < nvis; j++) {
                w->ex[j] = exp((double)sc[j] - (double)mx);
                sum += w->ex[j];
            }
            double inv = 1.0 / sum;
            for (int j = 0; j < nvis; j++) sc[j] = (float)(w->ex[j] * inv);
            if (probs) {
                float *pr = probs + ((size_t)h * L + i) * L;
                memcpy(pr, sc, sizeof(float) * (size_t)nvis);
                for (int j = nvis; j < L; j++) pr[j] = 0.0f; /* masked keys weigh exactly 0 */
            }
            float *out = att + (size_t)(row0 + i) * d + (size_t)h * dh;
            int c0 = 0;
            for (; dh - c0 >= 4 * ATT_LANES; c0 += 4 * ATT_LANES) {
                float acc[4][ATT_LANES] = {{0}};
                for (int j = 0; j < nvis; j++) {
                    const float p = sc[j], *vj = V + (size_t)j * ld + c0;
                    ATT_UNROLL for (int q = 0; q < 4; q++) {
#pragma omp simd
                        for (int cc = 0; cc < ATT_LANES; cc++)
                            acc[q][cc] = acc[q][cc] + p * vj[q * ATT_LANES + cc];
                    }
                }
                memcpy(out + c0, acc, sizeof acc);
            }
            for (; c0 < dh; c0 += ATT_LANES) {
                int cw = dh - c0 < ATT_LANES ? dh - c0 : ATT_LANES;
                float acc[ATT_LANES] = {0};
                for (int j = 0; j < nvis; j++) {
                    const float p = sc[j], *vj = V + (size_t)j * ld + c0;
                    for (int cc = 0; cc < cw; cc++) acc[cc] = acc[cc] + p * vj[cc];
                }
                memcpy(out + c0, acc, sizeof(float) * (size_t)cw);
            }
        }
    }
}

/* attend()'s loops vectorise across keys and across context columns. On x86-64 they are also
 * built for AVX-512 and AVX2 (the body inlined into each wrapper) and picked by CPUID; every
 * lane runs the same multiply-then-add chain (no contraction), so the three give the same bits.
 * A plain call rather than an ifunc: ifunc resolvers run before sanitizer runtimes start. */
static void attend_base(const float *qkv, size_t ld, int row0, int L, int d, int h, int dh,
                        float scale, int causal, float *att, float *probs, att_scratch *w) {
    attend(qkv, ld, row0, L, d, h, dh, scale, causal, att, probs, w);
}
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx512f"))) static void attend_avx512(
    const float *qkv, size_t ld, int row0, int L, int d, int h, int dh, float scale, int causal,
    float *att, float *probs, att_scratch *w) {
    attend(qkv, ld, row0, L, d, h, dh, scale, causal, att, probs, w);
}
__attribute__((target("avx2"))) static void attend_avx2(const float *qkv, size_t ld, int row0,
                                                        int L, int d, int h, int dh, float scale,
                                                        int causal, float *att, float *probs,
                                                        att_scratch *w) {
    attend(qkv, ld, row0, L, d, h, dh, scale, causal, att, probs, w);
}
#endif

/* The context of one encode call: the AVX-512, AVX2 or baseline builds of attend() and
 * quick_gelu(), by CPUID. */
static cpu_be cpu_be_make(int nthreads) {
    cpu_be be = {nthreads, attend_base, quick_gelu_base};
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    clip_cpu_features f = clip_cpu_detect();
    if (f.avx512f) {
        be.attend = attend_avx512;
        be.quick_gelu = quick_gelu_avx512;
    } else if (f.avx2) {
        be.attend = attend_avx2;
        be.quick_gelu = quick_gelu_avx2;
    }
#endif
    return be;
}

static clip_status op_attention(void *be, const fwd_seqs *s, const float *qkv, int d, int heads,
                                int causal, float *att, float *probs, clip_error *err) {
    const cpu_be *b = be;
    (void)b; /* only the OpenMP pragmas read it */
    int dh = d / heads, pairs = s->n * heads, nt = b->nt < pairs ? b->nt : pairs;
    int Lp = (s->max_len + ATT_LANES - 1) / ATT_LANES * ATT_LANES;
    float scale = (float)(1.0 / sqrt((double)dh));
    size_t per = (size_t)ATT_ROWS * dh + (size_t)dh * Lp + (size_t)ATT_ROWS * Lp +
                 2 * (size_t)Lp; /* floats */
    float *mem = malloc(per * sizeof(float) * (size_t)(nt > 0 ? nt : 1));
    if (!mem) return clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate the attention workspace");
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1)
    for (int pi = 0; pi < pairs; pi++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *m = mem + per * (size_t)tid;
        float *kt = m + (size_t)ATT_ROWS * dh, *sc = kt + (size_t)dh * Lp;
        att_scratch w = {m, kt, sc, NULL};
        w.ex = (double *)(void *)(sc + (size_t)ATT_ROWS * Lp); /* 8-byte aligned: Lp, 16 | Lp */
        int si = pi / heads, h = pi % heads;
        b->attend(qkv, 3 * (size_t)d, s->row0[si], s->len[si], d, h, dh, scale, causal, att,
                  probs, &w);
    }
    free(mem);
    return CLIP_OK;
}

/* ------------------------------------------------------------------ embeddings, pooling */

static clip_status op_im2col(void *be, const float *pixels, int n, int C, int S, int P,
                             float *cols, clip_error *err) {
    (void)err;
    const cpu_be *b = be;
    (void)b; /* only the OpenMP pragmas read it */
    int g = S / P, np = g * g;
    size_t K = (size_t)C * P * P;
    long long npatch = (long long)n * np;
#pragma omp parallel for schedule(static) num_threads(b->nt) if (npatch > 64)
    for (long long r = 0; r < npatch; r++) {
        int bi = (int)(r / np), pi = (int)(r % np), py = pi / g, px = pi % g;
        float *dst = cols + (size_t)r * K;
        for (int ch = 0; ch < C; ch++)
            for (int ky = 0; ky < P; ky++) {
                const float *src = pixels + (((size_t)bi * C + ch) * S + (size_t)py * P + ky) * S +
                                   (size_t)px * P;
                memcpy(dst + ((size_t)ch * P + ky) * P, src, sizeof(float) * (size_t)P);
            }
    }
    return CLIP_OK;
}

static clip_status op_vision_embed(void *be, const float *patches, const float *cls,
                                   const float *pos, int n, int T, int D, float *h,
                                   clip_error *err) {
    (void)be;
    (void)err;
    for (int bi = 0; bi < n; bi++) {
        float *hb = h + (size_t)bi * T * D;
        for (int i = 0; i < D; i++) hb[i] = cls[i] + pos[i];
        for (int p = 1; p < T; p++) {
            const float *e = patches + ((size_t)bi * (T - 1) + (p - 1)) * D;
            const float *pp = pos + (size_t)p * D;
            float *hp = hb + (size_t)p * D;
            for (int i = 0; i < D; i++) hp[i] = e[i] + pp[i];
        }
    }
    return CLIP_OK;
}

static clip_status op_text_embed(void *be, const fwd_seqs *s, const float *tok, const float *pos,
                                 int D, float *h, clip_error *err) {
    (void)be;
    (void)err;
    for (int i = 0; i < s->n; i++)
        for (int p = 0; p < s->len[i]; p++) {
            int r = s->row0[i] + p;
            const float *te = tok + (size_t)s->ids[r] * D, *pe = pos + (size_t)p * D;
            float *hr = h + (size_t)r * D;
            for (int k = 0; k < D; k++) hr[k] = te[k] + pe[k];
        }
    return CLIP_OK;
}

static clip_status op_gather(void *be, const fwd_seqs *s, const float *src, int D, float *dst,
                             clip_error *err) {
    (void)be;
    (void)err;
    for (int i = 0; i < s->n; i++)
        memcpy(dst + (size_t)i * D, src + (size_t)(s->row0[i] + s->pool[i]) * D,
               sizeof(float) * (size_t)D);
    return CLIP_OK;
}

static clip_status op_l2norm(void *be, float *x, int n, int E, clip_error *err) {
    (void)be;
    (void)err;
    for (int i = 0; i < n; i++) {
        float *o = x + (size_t)i * E;
        double ss = 0.0;
        for (int j = 0; j < E; j++) ss += (double)o[j] * o[j];
        double nrm = sqrt(ss); /* no epsilon, as HF: a zero vector gives NaN there too */
        for (int j = 0; j < E; j++) o[j] = (float)(o[j] / nrm);
    }
    return CLIP_OK;
}

static const float *op_to_host(void *be, const float *x, size_t n, float *scratch,
                               clip_error *err) {
    (void)be;
    (void)n;
    (void)scratch;
    (void)err;
    return x;
}

static const fwd_ops cpu_ops = {op_linear,  op_layernorm, op_attention,   op_activation,
                                op_residual, op_im2col,   op_vision_embed, op_text_embed,
                                op_gather,  op_l2norm,    op_to_host};

/* ------------------------------------------------------------------ model state */

static gemm_kernel kernel_for(const clip_model *m, clip_error *err, clip_status *st) {
    *st = CLIP_OK;
    if (m->precision == CLIP_PRECISION_BF16) {
        if (gemm_kernel_usable(GEMM_AVX512_BF16)) return GEMM_AVX512_BF16;
        *st = clip_fail(err, CLIP_ERR_UNSUPPORTED,
                        "precision bf16 on the CPU needs AVX512-BF16 (Zen 4 and later, Sapphire "
                        "Rapids and later; CPUID 7.1:EAX bit 5), which this CPU does not report; "
                        "use --precision fp32");
        return GEMM_OPENBLAS;
    }
    if (m->precision != CLIP_PRECISION_FP32) {
        *st = clip_fail(err, CLIP_ERR_UNSUPPORTED, "precision %s is not available on the CPU "
                        "(fp32 or bf16)", clip_precision_name(m->precision));
        return GEMM_OPENBLAS;
    }
    gemm_kernel k;
    switch (m->cpu_kernel) {
    case CLIP_CPU_KERNEL_AVX512: k = GEMM_AVX512; break;
    case CLIP_CPU_KERNEL_AVX2: k = GEMM_AVX2; break;
    case CLIP_CPU_KERNEL_PORTABLE: k = GEMM_PORTABLE; break;
    case CLIP_CPU_KERNEL_OPENBLAS: k = GEMM_OPENBLAS; break;
    default: return gemm_kernel_best_fp32();
    }
    if (!gemm_kernel_usable(k))
        *st = clip_fail(err, CLIP_ERR_UNSUPPORTED, "the %s CPU kernel cannot run on this CPU",
                        gemm_kernel_name(k));
    return k;
}

/* The packed copy replaces the mapped F32 weights for the CPU: give their pages back so a model
 * does not sit in memory twice (the mapping stays valid; a later read faults the file in). */
static void release_pages(const clip_model *m, const float *w, size_t n) {
    const unsigned char *map = m->file.map, *p = (const unsigned char *)w;
    if (!map || p < map || p + n * sizeof(float) > map + m->file.map_len) return;
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)ps - 1) & ~((uintptr_t)ps - 1);
    uintptr_t e = ((uintptr_t)p + n * sizeof(float)) & ~((uintptr_t)ps - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_DONTNEED);
}

typedef struct packer {
    clip_model *m;
    cpu_state *s;
    clip_error *err;
} packer;

static clip_status pack(packer *p, fwd_linear *out, int nparts, const float *const *w,
                        const float *const *b, const int *outs, int in) {
    gemm_weights *g = &p->s->gemms[p->s->ngemms];
    clip_status st = gemm_pack(p->s->kernel, nparts, w, b, outs, in, g, p->err);
    if (st) return st;
    p->s->ngemms++;
    out->impl = g;
    out->in = in;
    out->out = g->out;
    if (g->packed) /* copied: the mapped originals are not read again on the CPU */
        for (int i = 0; i < nparts; i++) release_pages(p->m, w[i], (size_t)outs[i] * in);
    return CLIP_OK;
}

static clip_status pack_tower(packer *p, const clip_tower_config *tc,
                              const clip_layer_weights *lw, fwd_layer *layers) {
    int D = tc->width, F = tc->mlp;
    int qkv_out[3] = {D, D, D}, d_out[1] = {D}, f_out[1] = {F};
    for (int l = 0; l < tc->layers; l++) {
        const clip_layer_weights *L = &lw[l];
        fwd_layer *o = &layers[l];
        o->ln1 = (fwd_norm){L->ln1_w, L->ln1_b};
        o->ln2 = (fwd_norm){L->ln2_w, L->ln2_b};
        const float *qw[3] = {L->q_w, L->k_w, L->v_w}, *qb[3] = {L->q_b, L->k_b, L->v_b};
        clip_status st;
        if ((st = pack(p, &o->qkv, 3, qw, qb, qkv_out, D)) ||
            (st = pack(p, &o->o, 1, &L->o_w, &L->o_b, d_out, D)) ||
            (st = pack(p, &o->fc1, 1, &L->fc1_w, &L->fc1_b, f_out, D)) ||
            (st = pack(p, &o->fc2, 1, &L->fc2_w, &L->fc2_b, d_out, F)))
            return st;
    }
    return CLIP_OK;
}

void clip_cpu_free(clip_model *m) {
    cpu_state *s = m->cpu;
    if (!s) return;
    for (int i = 0; i < WS_POOL; i++) free(s->ws[i].mem);
    if (s->ws_mu_ok) pthread_mutex_destroy(&s->ws_mu);
    for (size_t i = 0; i < s->ngemms; i++) gemm_free(&s->gemms[i]);
    free(s->gemms);
    free(s->layers);
    free(s);
    m->cpu = NULL;
}

clip_status clip_cpu_init(clip_model *m, clip_error *err) {
    cpu_state *s = calloc(1, sizeof *s);
    if (!s) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    m->cpu = s;
    if (pthread_mutex_init(&s->ws_mu, NULL)) return clip_fail(err, CLIP_ERR_NOMEM, "cannot create a mutex");
    s->ws_mu_ok = 1;
    clip_status st;
    s->kernel = kernel_for(m, err, &st);
    if (st) return st;
    s->nthreads = m->n_threads > 0 ? m->n_threads : clip_num_cores();
    const clip_config *c = &m->cfg;
    const clip_weights *W = &m->w;
    int Lv = c->vision.layers, Lt = c->text.layers;
    s->gemms = calloc(4 * (size_t)(Lv + Lt) + 3, sizeof *s->gemms);
    s->layers = calloc((size_t)(Lv + Lt), sizeof *s->layers);
    if (!s->gemms || !s->layers) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    packer p = {m, s, err};
    fwd_tower *v = &s->vision, *t = &s->text;
    int Dv = c->vision.width, Dt = c->text.width, E = c->embed_dim;
    int Kp = c->num_channels * c->patch_size * c->patch_size;
    if ((st = pack_tower(&p, &c->vision, W->vlayers, s->layers)) ||
        (st = pack_tower(&p, &c->text, W->tlayers, s->layers + Lv)) ||
        (st = pack(&p, &v->patch, 1, &W->patch_w, NULL, &Dv, Kp)) ||
        (st = pack(&p, &v->proj, 1, &W->vproj, NULL, &E, Dv)) ||
        (st = pack(&p, &t->proj, 1, &W->tproj, NULL, &E, Dt)))
        return st;
    v->cfg = &c->vision;
    v->layers = s->layers;
    v->final_ln = (fwd_norm){W->post_ln_w, W->post_ln_b};
    v->cls = W->class_emb;
    v->pos = W->vpos;
    v->pre_ln = (fwd_norm){W->pre_ln_w, W->pre_ln_b};
    t->cfg = &c->text;
    t->layers = s->layers + Lv;
    t->final_ln = (fwd_norm){W->final_ln_w, W->final_ln_b};
    t->tok = W->tok_emb;
    t->pos = W->tpos;
    return CLIP_OK;
}

const char *clip_cpu_kernel_name(const clip_model *m) {
    const cpu_state *s = m->cpu;
    return s ? gemm_kernel_name(s->kernel) : "";
}

/* A buffer of at least `floats` from the pool (the smallest that fits), else a new one. */
static float *ws_take(cpu_state *s, size_t floats) {
    float *mem = NULL;
    pthread_mutex_lock(&s->ws_mu);
    int best = -1;
    for (int i = 0; i < WS_POOL; i++)
        if (s->ws[i].mem && s->ws[i].floats >= floats &&
            (best < 0 || s->ws[i].floats < s->ws[best].floats))
            best = i;
    if (best >= 0) {
        mem = s->ws[best].mem;
        s->ws[best].mem = NULL;
    }
    pthread_mutex_unlock(&s->ws_mu);
    return mem ? mem : malloc(floats * sizeof(float));
}

/* Back to the pool; when it is full the smallest buffer goes. */
static void ws_give(cpu_state *s, float *mem, size_t floats) {
    pthread_mutex_lock(&s->ws_mu);
    int slot = -1;
    for (int i = 0; i < WS_POOL && slot < 0; i++)
        if (!s->ws[i].mem) slot = i;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < WS_POOL; i++)
            if (s->ws[i].floats < s->ws[slot].floats) slot = i;
        if (s->ws[slot].floats >= floats) { /* every pooled one is bigger: drop this one */
            pthread_mutex_unlock(&s->ws_mu);
            free(mem);
            return;
        }
        free(s->ws[slot].mem);
    }
    s->ws[slot].mem = mem;
    s->ws[slot].floats = floats;
    pthread_mutex_unlock(&s->ws_mu);
}

/* The work buffers of one chunk, in one allocation. */
typedef struct chunk_mem {
    fwd_buffers b;
    float *host2; /* tracing: strided rows gathered for the observer */
    float *mem;
    size_t floats;
} chunk_mem;

static clip_status chunk_alloc(cpu_state *s, chunk_mem *cm, int R, int B, int D, int F,
                               size_t f_min, int heads, int max_len, int tracing,
                               clip_error *err) {
    memset(cm, 0, sizeof *cm);
    size_t rd = (size_t)R * D, f = (size_t)R * F > f_min ? (size_t)R * F : f_min;
    size_t probs = tracing ? (size_t)heads * max_len * max_len : 0;
    size_t host2 = tracing ? (size_t)max_len * (3 * (size_t)D > (size_t)F ? 3 * (size_t)D : (size_t)F) : 0;
    size_t sizes[8] = {rd, rd, 3 * rd, rd, rd, f, (size_t)B * D, probs};
    size_t total = host2;
    for (int i = 0; i < 8; i++) total += sizes[i];
    cm->mem = ws_take(s, total);
    if (!cm->mem)
        return clip_fail(err, CLIP_ERR_NOMEM,
                         "cannot allocate the forward-pass workspace (%.0f MiB for %d tokens)",
                         (double)total * 4 / 1048576.0, R);
    cm->floats = total;
    float *p = cm->mem;
    float **slots[8] = {&cm->b.h, &cm->b.x, &cm->b.qkv, &cm->b.att, &cm->b.y, &cm->b.f,
                        &cm->b.pooled, &cm->b.probs};
    for (int i = 0; i < 8; i++) {
        *slots[i] = sizes[i] ? p : NULL;
        p += sizes[i];
    }
    cm->host2 = host2 ? p : NULL;
    return CLIP_OK;
}

static void chunk_release(cpu_state *s, chunk_mem *cm) {
    if (cm->mem) ws_give(s, cm->mem, cm->floats);
    cm->mem = NULL;
}

clip_status clip_cpu_encode_images(const clip_model *m, const float *pixels, int n,
                                   const clip_encode_options *opt, float *out, clip_error *err) {
    cpu_state *s = m->cpu;
    const clip_config *c = &m->cfg;
    cpu_be be = cpu_be_make(s->nthreads);
    int S = c->image_size, P = c->patch_size, G = S / P, Np = G * G, T = Np + 1;
    int D = c->vision.width, E = c->embed_dim, Kp = c->num_channels * P * P;
    size_t pix = (size_t)c->num_channels * S * S;
    int tracing = opt && opt->trace;
    int row0[VISION_CHUNK], len[VISION_CHUNK], pool[VISION_CHUNK];
    clip_status st = CLIP_OK;
    for (int i0 = 0; i0 < n && !st; i0 += VISION_CHUNK) {
        int B = n - i0 < VISION_CHUNK ? n - i0 : VISION_CHUNK;
        for (int b = 0; b < B; b++) {
            row0[b] = b * T;
            len[b] = T;
            pool[b] = 0; /* CLS */
        }
        fwd_seqs seqs = {B, B * T, T, row0, len, pool, NULL, NULL};
        chunk_mem cm;
        st = chunk_alloc(s, &cm, B * T, B, D, c->vision.mlp, (size_t)B * Np * Kp, c->vision.heads, T,
                         tracing, err);
        if (st) break;
        cm.b.out = out + (size_t)i0 * E;
        fwd_ctx ctx = {&cpu_ops, &be, c, opt, i0, NULL, cm.host2};
        st = fwd_vision(&ctx, &s->vision, &seqs, pixels + pix * i0, &cm.b, err);
        chunk_release(s, &cm);
    }
    return st;
}

clip_status clip_cpu_encode_texts(const clip_model *m, const int32_t *ids, int n, int len,
                                  const int *pool, const clip_encode_options *opt, float *out,
                                  clip_error *err) {
    cpu_state *s = m->cpu;
    const clip_config *c = &m->cfg;
    cpu_be be = cpu_be_make(s->nthreads);
    int D = c->text.width, E = c->embed_dim;
    int tracing = opt && opt->trace;
    int *tab = malloc(sizeof(int) * 3 * TEXT_CHUNK);
    int32_t *rowids = malloc(sizeof(int32_t) * (size_t)TEXT_CHUNK * (size_t)len);
    if (!tab || !rowids) {
        free(tab);
        free(rowids);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate the token table");
    }
    int *row0 = tab, *lens = tab + TEXT_CHUNK, *pools = tab + 2 * TEXT_CHUNK;
    clip_status st = CLIP_OK;
    for (int i0 = 0; i0 < n && !st; i0 += TEXT_CHUNK) {
        int B = n - i0 < TEXT_CHUNK ? n - i0 : TEXT_CHUNK;
        /* Row i runs positions 0..pool only: with the causal mask, later tokens cannot change
         * the pooled one. A traced run computes all `len` positions (to report them); rows
         * 0..pool come out the same either way. */
        int rows = 0, max_len = 1;
        for (int i = 0; i < B; i++) {
            row0[i] = rows;
            lens[i] = tracing ? len : pool[i0 + i] + 1;
            pools[i] = pool[i0 + i];
            memcpy(rowids + rows, ids + (size_t)(i0 + i) * len, sizeof(int32_t) * (size_t)lens[i]);
            rows += lens[i];
            if (lens[i] > max_len) max_len = lens[i];
        }
        fwd_seqs seqs = {B, rows, max_len, row0, lens, pools, rowids, NULL};
        chunk_mem cm;
        st = chunk_alloc(s, &cm, rows, B, D, c->text.mlp, 0, c->text.heads, max_len, tracing, err);
        if (st) break;
        cm.b.out = out + (size_t)i0 * E;
        fwd_ctx ctx = {&cpu_ops, &be, c, opt, i0, NULL, cm.host2};
        st = fwd_text(&ctx, &s->text, &seqs, &cm.b, err);
        chunk_release(s, &cm);
    }
    free(tab);
    free(rowids);
    return st;
}
