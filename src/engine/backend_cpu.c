/* backend_cpu.c — the CLIP forward pass on the CPU (spec §A), fp32 storage.
 *
 * Large products go through OpenBLAS sgemm (fp32, like PyTorch). The small reductions where
 * float rounding would add error of our own — LayerNorm moments, softmax sums, activations,
 * the final norm — are done in double and rounded once, so our total error stays at or below
 * PyTorch's own fp32 error against the fp64 golden.
 *
 * Threads: our OpenMP loops and OpenBLAS (Debian's OpenMP build) share one thread pool and
 * never nest: an sgemm called inside a parallel region runs single-threaded, and the big
 * sgemm calls run outside any region with the caller's thread count. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "util.h"

/* Items per internal chunk: bounds the workspace for any batch size. */
#define VISION_CHUNK 64
#define TEXT_CHUNK 256

typedef struct seq {
    int row0; /* first row in the packed activations */
    int len;  /* rows (tokens) */
} seq;

typedef struct trace_ctx {
    const clip_encode_options *opt;
    const char *prefix; /* "vision" or "text" */
    int item0;          /* global index of the chunk's first item */
} trace_ctx;

static void trace_rows(const trace_ctx *t, const char *name, const seq *seqs, int nseq,
                       const float *data, int cols) {
    if (!t->opt || !t->opt->trace) return;
    char full[128];
    snprintf(full, sizeof full, "%s.%s", t->prefix, name);
    for (int s = 0; s < nseq; s++)
        t->opt->trace(t->opt->trace_user, full, t->item0 + s,
                      data + (size_t)seqs[s].row0 * (size_t)cols, seqs[s].len, cols);
}

/* y[rows, out] = x[rows, in] · w[out, in]^T  (biases are added by the elementwise pass that
 * follows, fl(acc + b) exactly as sgemm with beta = 1 on a bias-filled C would give).
 *
 * Threads split the product themselves (rows when there are many, else output columns) and
 * each calls OpenBLAS single-threaded: no spinning/yielding inside sgemm on a busy machine, and
 * each element is the same K-ordered dot product whatever the split, so results do not depend
 * on the thread count. */
static void linear(const float *x, int rows, int in, const float *w, int out, float *y) {
    int nt = 1;
#ifdef _OPENMP
    nt = omp_in_parallel() ? 1 : omp_get_max_threads();
#endif
    int by_rows = rows >= 64 * nt;
    int parts = nt;
    if (!by_rows && out < 64 * nt) parts = 1;
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
    for (int p = 0; p < parts; p++) {
        if (by_rows) {
            int r0 = (int)((long long)rows * p / parts), r1 = (int)((long long)rows * (p + 1) / parts);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, out, in, 1.0f,
                        x + (size_t)r0 * in, in, w, in, 0.0f, y + (size_t)r0 * out, out);
        } else {
            /* column blocks aligned to 16 floats keep the kernel on its fast path */
            int c0 = (int)((long long)out * p / parts) & ~15, c1 = p + 1 == parts ? out
                         : (int)((long long)out * (p + 1) / parts) & ~15;
            if (c1 > c0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, c1 - c0, in, 1.0f, x, in,
                            w + (size_t)c0 * in, in, 0.0f, y + c0, out);
        }
    }
}

/* y = (y + b) * scale, row-wise bias (scale 1 is exact). */
static void bias_scale(float *y, const float *b, int rows, int cols, float scale) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * cols;
#pragma omp simd
        for (int c = 0; c < cols; c++) yr[c] = (yr[c] + b[c]) * scale;
    }
}

/* h = h + (y + b): the residual add of a biased projection, in HF's rounding order. */
static void residual_bias(float *h, const float *y, const float *b, int rows, int cols) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *hr = h + (size_t)r * cols;
        const float *yr = y + (size_t)r * cols;
#pragma omp simd
        for (int c = 0; c < cols; c++) hr[c] = hr[c] + (yr[c] + b[c]);
    }
}

static void layernorm(const float *x, float *y, int rows, int d, const float *g, const float *b,
                      double eps) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        /* two-pass moments in double (spec §A.3); the simd reductions only reorder exact-ish
         * double sums of float inputs */
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
        for (int i = 0; i < d; i++) yr[i] = (float)(((double)xr[i] - mu) * rstd * g[i] + b[i]);
    }
}

/* e^x in float for x in [-87, 88.3], within about 1 ulp (Cephes expf: Cody-Waite reduction and
 * a degree-6 polynomial), written without calls or branches so that the loops using it
 * vectorise. The activations are float32 in PyTorch too (vectorised Sleef expf, 1 ulp). */
static inline float exp_f32(float x) {
    /* clamp to [-87, 88.3] with bit masks: a ?: or fminf here stops GCC from vectorising
     * without -ffast-math; NaN stays NaN */
    union {
        float f;
        int32_t i;
    } ux = {x}, lo = {-87.0f}, hi = {88.3f};
    int32_t mlo = -(int32_t)(x < -87.0f), mhi = -(int32_t)(x > 88.3f);
    ux.i = (ux.i & ~mlo) | (lo.i & mlo);
    ux.i = (ux.i & ~mhi) | (hi.i & mhi);
    x = ux.f;
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick: exact for |n| < 2^22 */
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale = {((int32_t)n + 127) << 23};
    return p * scale.f;
}

/* x = act(x + b) row-wise. */
static void bias_activation(float *x, const float *bias, int rows, int cols, clip_act act) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * cols;
        switch (act) {
        case CLIP_ACT_QUICK_GELU:
            /* x * sigmoid(1.702 x), 1.702 as the float constant HF uses (1.7020000219...) */
#pragma omp simd
            for (int c = 0; c < cols; c++) {
                float v = xr[c] + bias[c];
                xr[c] = v / (1.0f + exp_f32(-1.702f * v));
            }
            break;
        case CLIP_ACT_GELU:
            for (int c = 0; c < cols; c++) {
                double v = (float)(xr[c] + bias[c]);
                xr[c] = (float)(0.5 * v * (1.0 + erf(v * 0.70710678118654752440)));
            }
            break;
        case CLIP_ACT_GELU_TANH:
            for (int c = 0; c < cols; c++) {
                double v = (float)(xr[c] + bias[c]);
                xr[c] = (float)(0.5 * v *
                                (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v))));
            }
            break;
        }
    }
}

/* Workspace of one chunk, sized for `rows` tokens. */
typedef struct work {
    float *h, *a, *q, *k, *v, *ctx, *f;
    float *scores; /* per thread: max_len * max_len */
    double *expbuf; /* per thread: max_len softmax numerators */
    float *zero;    /* tracing only: a zero bias, for passes whose bias was added already */
    float *probs;  /* tracing only: heads * max_len * max_len per sequence */
    int max_len, nthreads;
} work;

static void work_free(work *w) {
    free(w->h);
    free(w->a);
    free(w->q);
    free(w->k);
    free(w->v);
    free(w->ctx);
    free(w->f);
    free(w->scores);
    free(w->expbuf);
    free(w->zero);
    free(w->probs);
    memset(w, 0, sizeof *w);
}

static clip_status work_alloc(work *w, int rows, int d, int mlp, int max_len, int heads,
                              int tracing, clip_error *err) {
    memset(w, 0, sizeof *w);
    w->nthreads = clip_num_cores();
    w->max_len = max_len;
    size_t rd = (size_t)rows * d, rf = (size_t)rows * mlp, ss = (size_t)max_len * max_len;
    w->h = malloc(rd * sizeof(float));
    w->a = malloc(rd * sizeof(float));
    w->q = malloc(rd * sizeof(float));
    w->k = malloc(rd * sizeof(float));
    w->v = malloc(rd * sizeof(float));
    w->ctx = malloc(rd * sizeof(float));
    w->f = malloc(rf * sizeof(float));
    w->scores = malloc(ss * (size_t)w->nthreads * sizeof(float));
    w->expbuf = malloc((size_t)max_len * (size_t)w->nthreads * sizeof(double));
    if (tracing) {
        w->probs = calloc(ss * (size_t)heads, sizeof(float));
        w->zero = calloc((size_t)(mlp > d ? mlp : d), sizeof(float));
    }
    if (!w->h || !w->a || !w->q || !w->k || !w->v || !w->ctx || !w->f || !w->scores || !w->expbuf ||
        (tracing && (!w->probs || !w->zero))) {
        work_free(w);
        return clip_fail(err, CLIP_ERR_NOMEM,
                         "cannot allocate the forward-pass workspace (%d tokens x %d)", rows, mlp);
    }
    return CLIP_OK;
}

/* Multi-head attention over each sequence: w->ctx = softmax(q k^T + mask) v per head.
 * q is already scaled. Causal: key j visible to query i iff j <= i. */
static void attention(work *w, const seq *seqs, int nseq, int d, int heads, int causal,
                      const trace_ctx *t, const char *probs_name) {
    int hd = d / heads;
    int tracing = probs_name && w->probs;
    /* When tracing, sequences are processed one at a time so that probs holds one item. */
    int s_begin = 0, s_step = tracing ? 1 : nseq;
    for (; s_begin < nseq; s_begin += s_step) {
        int pairs = (tracing ? 1 : nseq) * heads;
#pragma omp parallel for schedule(dynamic, 1)
        for (int pi = 0; pi < pairs; pi++) {
            const seq *s = &seqs[s_begin + pi / heads];
            int h = pi % heads, L = s->len;
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            float *sc = w->scores + (size_t)tid * w->max_len * w->max_len;
            double *ex = w->expbuf + (size_t)tid * w->max_len;
            const float *Q = w->q + (size_t)s->row0 * d + (size_t)h * hd;
            const float *K = w->k + (size_t)s->row0 * d + (size_t)h * hd;
            const float *V = w->v + (size_t)s->row0 * d + (size_t)h * hd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, hd, 1.0f, Q, d, K, d, 0.0f,
                        sc, L);
            for (int i = 0; i < L; i++) {
                float *row = sc + (size_t)i * L;
                int nvis = causal ? i + 1 : L;
                float mx = row[0];
                for (int j = 1; j < nvis; j++)
                    if (row[j] > mx) mx = row[j];
                double sum = 0.0;
                for (int j = 0; j < nvis; j++) {
                    ex[j] = exp((double)row[j] - (double)mx);
                    sum += ex[j];
                }
                double inv = 1.0 / sum;
                for (int j = 0; j < nvis; j++) row[j] = (float)(ex[j] * inv);
                for (int j = nvis; j < L; j++) row[j] = 0.0f; /* masked keys weigh exactly 0 */
            }
            if (tracing)
                memcpy(w->probs + (size_t)h * L * L, sc, sizeof(float) * (size_t)L * L);
            float *C = w->ctx + (size_t)s->row0 * d + (size_t)h * hd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, hd, L, 1.0f, sc, L, V, d, 0.0f,
                        C, d);
        }
        if (tracing) {
            const seq *s = &seqs[s_begin];
            char full[128];
            snprintf(full, sizeof full, "%s.%s", t->prefix, probs_name);
            t->opt->trace(t->opt->trace_user, full, t->item0 + s_begin, w->probs, heads * s->len,
                          s->len);
        }
    }
}

/* The pre-LN encoder (spec §A.4) over packed sequences in w->h. */
static void encoder(work *w, const seq *seqs, int nseq, int rows, const clip_tower_config *tc,
                    const clip_layer_weights *layers, int causal, const trace_ctx *t) {
    int d = tc->width, heads = tc->heads, mlp = tc->mlp;
    float scale = (float)(1.0 / sqrt((double)(d / heads)));
    int tracing = t->opt && t->opt->trace;
    char name[96];
#define TRACE(fmt, data, cols)                                                                     \
    do {                                                                                           \
        if (tracing) {                                                                             \
            snprintf(name, sizeof name, fmt, l);                                                   \
            trace_rows(t, name, seqs, nseq, data, cols);                                           \
        }                                                                                          \
    } while (0)
    for (int l = 0; l < tc->layers; l++) {
        const clip_layer_weights *L = &layers[l];
        layernorm(w->h, w->a, rows, d, L->ln1_w, L->ln1_b, tc->eps);
        TRACE("layer%d.layer_norm1", w->a, d);
        linear(w->a, rows, d, L->q_w, d, w->q);
        linear(w->a, rows, d, L->k_w, d, w->k);
        linear(w->a, rows, d, L->v_w, d, w->v);
        /* HF eager scales q after the biased projection: (a Wq^T + bq) * head_dim^-0.5 */
        if (tracing) { /* q_proj is traced before the scaling: same two roundings, split */
            bias_scale(w->q, L->q_b, rows, d, 1.0f);
            TRACE("layer%d.q_proj", w->q, d);
        }
        bias_scale(w->q, tracing ? w->zero : L->q_b, rows, d, scale);
        bias_scale(w->k, L->k_b, rows, d, 1.0f);
        bias_scale(w->v, L->v_b, rows, d, 1.0f);
        TRACE("layer%d.k_proj", w->k, d);
        TRACE("layer%d.v_proj", w->v, d);
        snprintf(name, sizeof name, "layer%d.attn_probs", l);
        attention(w, seqs, nseq, d, heads, causal, t, tracing ? name : NULL);
        TRACE("layer%d.attn_context", w->ctx, d);
        linear(w->ctx, rows, d, L->o_w, d, w->a);
        if (tracing) { /* the traced out_proj includes its bias; the residual then adds 0 */
            bias_scale(w->a, L->o_b, rows, d, 1.0f);
            TRACE("layer%d.out_proj", w->a, d);
        }
        residual_bias(w->h, w->a, tracing ? w->zero : L->o_b, rows, d);
        layernorm(w->h, w->a, rows, d, L->ln2_w, L->ln2_b, tc->eps);
        TRACE("layer%d.layer_norm2", w->a, d);
        linear(w->a, rows, d, L->fc1_w, mlp, w->f);
        if (tracing) {
            bias_scale(w->f, L->fc1_b, rows, mlp, 1.0f);
            TRACE("layer%d.fc1", w->f, mlp);
        }
        bias_activation(w->f, tracing ? w->zero : L->fc1_b, rows, mlp, tc->act);
        linear(w->f, rows, mlp, L->fc2_w, d, w->a);
        if (tracing) {
            bias_scale(w->a, L->fc2_b, rows, d, 1.0f);
            TRACE("layer%d.fc2", w->a, d);
        }
        residual_bias(w->h, w->a, tracing ? w->zero : L->fc2_b, rows, d);
        if (tracing) {
            snprintf(name, sizeof name, "hidden_states.%d", l + 1);
            trace_rows(t, name, seqs, nseq, w->h, d);
        }
    }
#undef TRACE
}

/* pooled [n, d] -> out [n, E]: projection, then L2 normalisation unless features are asked. */
static void project(const float *pooled, int n, int d, const float *proj, int E, int features,
                    float *out, const trace_ctx *t, const char *feat_name, const char *emb_name) {
    linear(pooled, n, d, proj, E, out);
    if (t->opt && t->opt->trace)
        for (int i = 0; i < n; i++)
            t->opt->trace(t->opt->trace_user, feat_name, t->item0 + i, out + (size_t)i * E, 1, E);
    if (features) return;
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * E;
        double ss = 0.0;
        for (int j = 0; j < E; j++) ss += (double)o[j] * o[j];
        double nrm = sqrt(ss); /* no epsilon, as HF: a zero vector gives NaN there too */
        for (int j = 0; j < E; j++) o[j] = (float)(o[j] / nrm);
        if (t->opt && t->opt->trace) t->opt->trace(t->opt->trace_user, emb_name, t->item0 + i, o, 1, E);
    }
}

typedef struct thread_scope {
    int saved;
} thread_scope;

/* Applies the model's thread count to this calling thread only (OpenMP ICVs are per thread). */
static thread_scope threads_enter(const clip_model *m) {
    thread_scope s = {0};
#ifdef _OPENMP
    s.saved = omp_get_max_threads();
    if (m->n_threads > 0) omp_set_num_threads(m->n_threads);
#else
    (void)m;
#endif
    return s;
}

static void threads_leave(thread_scope s) {
#ifdef _OPENMP
    omp_set_num_threads(s.saved);
#else
    (void)s;
#endif
}

static clip_status vision_chunk(const clip_model *m, const float *pixels, int n, int item0,
                                const clip_encode_options *opt, float *out, clip_error *err) {
    const clip_config *c = &m->cfg;
    const clip_weights *W = &m->w;
    int D = c->vision.width, P = c->patch_size, S = c->image_size, g = S / P, np = g * g;
    int T = np + 1, C = c->num_channels, K = C * P * P;
    int rows = n * T;
    trace_ctx t = {opt, "vision", item0};
    int tracing = opt && opt->trace;
    work w;
    clip_status st = work_alloc(&w, rows, D, c->vision.mlp > K ? c->vision.mlp : K, T,
                                c->vision.heads, tracing, err);
    if (st) return st;
    seq *seqs = malloc(sizeof(seq) * (size_t)n);
    if (!seqs) {
        work_free(&w);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate sequence table");
    }
    for (int b = 0; b < n; b++) {
        seqs[b].row0 = b * T;
        seqs[b].len = T;
    }
    /* Patch embedding = one GEMM over im2col rows (b, py, px) x (c, ky, kx), the order of
     * the conv weight [D, C, P, P]. w.f is big enough: n*np rows of K floats. */
    float *cols = w.f;
    long long npatch = (long long)n * np;
#pragma omp parallel for schedule(static)
    for (long long r = 0; r < npatch; r++) {
        int b = (int)(r / np), pi = (int)(r % np), py = pi / g, px = pi % g;
        float *dst = cols + (size_t)r * K;
        for (int ch = 0; ch < C; ch++)
            for (int ky = 0; ky < P; ky++) {
                const float *src =
                    pixels + (((size_t)b * C + ch) * S + (size_t)py * P + ky) * S + (size_t)px * P;
                memcpy(dst + ((size_t)ch * P + ky) * P, src, sizeof(float) * (size_t)P);
            }
    }
    linear(cols, (int)npatch, K, W->patch_w, D, w.a);
    if (tracing)
        for (int b = 0; b < n; b++)
            opt->trace(opt->trace_user, "vision.patch_conv", item0 + b, w.a + (size_t)b * np * D, np,
                       D);
    for (int b = 0; b < n; b++) {
        float *h = w.h + (size_t)b * T * D;
        for (int i = 0; i < D; i++) h[i] = W->class_emb[i] + W->vpos[i];
        for (int p = 0; p < np; p++) {
            const float *e = w.a + ((size_t)b * np + p) * D;
            const float *pos = W->vpos + (size_t)(p + 1) * D;
            float *hp = h + (size_t)(p + 1) * D;
            for (int i = 0; i < D; i++) hp[i] = e[i] + pos[i];
        }
    }
    trace_rows(&t, "embeddings", seqs, n, w.h, D);
    layernorm(w.h, w.h, rows, D, W->pre_ln_w, W->pre_ln_b, c->vision.eps);
    trace_rows(&t, "pre_layrnorm", seqs, n, w.h, D);
    trace_rows(&t, "hidden_states.0", seqs, n, w.h, D);
    encoder(&w, seqs, n, rows, &c->vision, W->vlayers, 0, &t);
    /* post_layernorm on the CLS rows only. */
    float *cls = w.a, *pooled = w.q;
    for (int b = 0; b < n; b++)
        memcpy(cls + (size_t)b * D, w.h + (size_t)b * T * D, sizeof(float) * (size_t)D);
    if (tracing)
        for (int b = 0; b < n; b++)
            opt->trace(opt->trace_user, "vision.pooled_cls_pre_ln", item0 + b, cls + (size_t)b * D,
                       1, D);
    layernorm(cls, pooled, n, D, W->post_ln_w, W->post_ln_b, c->vision.eps);
    if (tracing)
        for (int b = 0; b < n; b++)
            opt->trace(opt->trace_user, "vision.pooled", item0 + b, pooled + (size_t)b * D, 1, D);
    project(pooled, n, D, W->vproj, c->embed_dim, opt && (opt->flags & CLIP_EMBED_FEATURES), out,
            &t, "image_features", "image_embeds");
    free(seqs);
    work_free(&w);
    return CLIP_OK;
}

clip_status clip_cpu_encode_images(const clip_model *m, const float *pixels, int n,
                                   const clip_encode_options *opt, float *out, clip_error *err) {
    const clip_config *c = &m->cfg;
    size_t per_img = (size_t)c->num_channels * c->image_size * c->image_size;
    thread_scope ts = threads_enter(m);
    clip_status st = CLIP_OK;
    for (int i0 = 0; i0 < n && !st; i0 += VISION_CHUNK) {
        int nb = n - i0 < VISION_CHUNK ? n - i0 : VISION_CHUNK;
        st = vision_chunk(m, pixels + per_img * i0, nb, i0, opt,
                          out + (size_t)i0 * c->embed_dim, err);
    }
    threads_leave(ts);
    return st;
}

static clip_status text_chunk(const clip_model *m, const int32_t *ids, int n, int len,
                              const int *pool, int item0, const clip_encode_options *opt,
                              float *out, clip_error *err) {
    const clip_config *c = &m->cfg;
    const clip_weights *W = &m->w;
    int D = c->text.width;
    int tracing = opt && opt->trace;
    trace_ctx t = {opt, "text", item0};
    seq *seqs = malloc(sizeof(seq) * (size_t)n);
    if (!seqs) return clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate sequence table");
    /* Row i runs positions 0..pool[i] only: with the causal mask, later tokens cannot change
     * the pooled one. Tracing runs the full `len` so every hidden row can be compared. */
    int rows = 0, max_len = 1;
    for (int i = 0; i < n; i++) {
        seqs[i].row0 = rows;
        seqs[i].len = tracing ? len : pool[i] + 1;
        rows += seqs[i].len;
        if (seqs[i].len > max_len) max_len = seqs[i].len;
    }
    work w;
    clip_status st = work_alloc(&w, rows, D, c->text.mlp, max_len, c->text.heads, tracing, err);
    if (st) {
        free(seqs);
        return st;
    }
    for (int i = 0; i < n; i++)
        for (int p = 0; p < seqs[i].len; p++) {
            const float *te = W->tok_emb + (size_t)ids[(size_t)i * len + p] * D;
            const float *pe = W->tpos + (size_t)p * D;
            float *h = w.h + (size_t)(seqs[i].row0 + p) * D;
            for (int k = 0; k < D; k++) h[k] = te[k] + pe[k];
        }
    trace_rows(&t, "hidden_states.0", seqs, n, w.h, D);
    encoder(&w, seqs, n, rows, &c->text, W->tlayers, 1, &t);
    if (tracing) {
        layernorm(w.h, w.a, rows, D, W->final_ln_w, W->final_ln_b, c->text.eps);
        trace_rows(&t, "final_layer_norm", seqs, n, w.a, D);
    }
    float *pre = w.q, *pooled = w.k;
    for (int i = 0; i < n; i++)
        memcpy(pre + (size_t)i * D, w.h + (size_t)(seqs[i].row0 + pool[i]) * D,
               sizeof(float) * (size_t)D);
    layernorm(pre, pooled, n, D, W->final_ln_w, W->final_ln_b, c->text.eps);
    if (tracing)
        for (int i = 0; i < n; i++)
            opt->trace(opt->trace_user, "text.pooled", item0 + i, pooled + (size_t)i * D, 1, D);
    project(pooled, n, D, W->tproj, c->embed_dim, opt && (opt->flags & CLIP_EMBED_FEATURES), out,
            &t, "text_features", "text_embeds");
    work_free(&w);
    free(seqs);
    return CLIP_OK;
}

clip_status clip_cpu_encode_texts(const clip_model *m, const int32_t *ids, int n, int len,
                                  const int *pool, const clip_encode_options *opt, float *out,
                                  clip_error *err) {
    thread_scope ts = threads_enter(m);
    clip_status st = CLIP_OK;
    for (int i0 = 0; i0 < n && !st; i0 += TEXT_CHUNK) {
        int nb = n - i0 < TEXT_CHUNK ? n - i0 : TEXT_CHUNK;
        st = text_chunk(m, ids + (size_t)i0 * len, nb, len, pool + i0, i0, opt,
                        out + (size_t)i0 * m->cfg.embed_dim, err);
    }
    threads_leave(ts);
    return st;
}
