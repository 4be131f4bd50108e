/* forward.c — the CLIP forward pass (spec §A, shapes in forward.h's legend), once for every
 * backend. Each step is one backend operation; in between, the observer hands the named
 * intermediate to the caller's trace callback. Observing only reads: a traced run computes
 * every value exactly as an untraced one.
 *
 * Rounding order follows HF's eager CLIP: a projection is fl(x W^T + b); q is scaled after its
 * bias, fl(q * Dh^-0.5); residual adds are fl(h + fl(x W^T + b)); the activation acts on the
 * biased fc1 output. */
#include <stdio.h>
#include <string.h>

#include "forward.h"
#include "util.h"

int fwd_tracing(const fwd_ctx *c) { return c->opt && c->opt->trace; }

/* ------------------------------------------------------------------ the observer */

/* Reports rows [row0[s], row0[s] + len[s]) of a [R, ld] buffer, the first `cols` columns of
 * each row from column `col0`, for every sequence s, under "<prefix>.<name>" (or just `name`
 * when prefix is NULL). */
static clip_status observe(const fwd_ctx *c, const char *prefix, const char *name,
                           const fwd_seqs *s, const float *data, size_t ld, size_t col0,
                           int cols, clip_error *err) {
    if (!fwd_tracing(c)) return CLIP_OK;
    char full[128];
    if (prefix)
        snprintf(full, sizeof full, "%s.%s", prefix, name);
    else
        snprintf(full, sizeof full, "%s", name);
    const float *h = c->ops->to_host(c->be, data, (size_t)s->rows * ld, c->host, err);
    if (!h) return err ? err->code : CLIP_ERR_DEVICE;
    for (int i = 0; i < s->n; i++) {
        const float *rows = h + (size_t)s->row0[i] * ld + col0;
        if (ld == (size_t)cols) {
            c->opt->trace(c->opt->trace_user, full, c->item0 + i, rows, s->len[i], cols);
            continue;
        }
        /* a strided view (q, k, v inside qkv): one row at a time, each a 1-row report would
         * split the tensor, so gather the rows into the scratch first */
        for (int r = 0; r < s->len[i]; r++) {
            memcpy(c->host2 + (size_t)r * cols, rows + (size_t)r * ld, sizeof(float) * (size_t)cols);
        }
        c->opt->trace(c->opt->trace_user, full, c->item0 + i, c->host2, s->len[i], cols);
    }
    return CLIP_OK;
}

/* One row per item: [B, width] buffers. */
static clip_status observe_items(const fwd_ctx *c, const char *name, int n, const float *data,
                                 int width, clip_error *err) {
    if (!fwd_tracing(c)) return CLIP_OK;
    const float *h = c->ops->to_host(c->be, data, (size_t)n * width, c->host, err);
    if (!h) return err ? err->code : CLIP_ERR_DEVICE;
    for (int i = 0; i < n; i++)
        c->opt->trace(c->opt->trace_user, name, c->item0 + i, h + (size_t)i * width, 1, width);
    return CLIP_OK;
}

/* ------------------------------------------------------------------ the encoder */

#define TRY(call)                                                                                  \
    do {                                                                                           \
        clip_status st_ = (call);                                                                  \
        if (st_) return st_;                                                                       \
    } while (0)

/* The pre-LN transformer (spec §A.4) over the packed sequences in b->h. */
static clip_status encoder(const fwd_ctx *c, const fwd_tower *w, const char *tower,
                           const fwd_seqs *s, int causal, fwd_buffers *b, clip_error *err) {
    const fwd_ops *op = c->ops;
    void *be = c->be;
    int D = w->cfg->width, H = w->cfg->heads, F = w->cfg->mlp, R = s->rows;
    double eps = w->cfg->eps;
    size_t RD = (size_t)R * D;
    char name[64];
#define SEE(fmt, data, ld, col0, cols)                                                             \
    do {                                                                                           \
        snprintf(name, sizeof name, fmt, l);                                                       \
        TRY(observe(c, tower, name, s, data, ld, col0, cols, err));                               \
    } while (0)
    for (int l = 0; l < w->cfg->layers; l++) {
        const fwd_layer *L = &w->layers[l];
        /* attention block */
        TRY(op->layernorm(be, b->h, b->x, R, D, L->ln1, eps, err));
        SEE("layer%d.layer_norm1", b->x, D, 0, D);
        TRY(op->linear(be, &L->qkv, b->x, R, b->qkv, 3 * (size_t)D, err));
        SEE("layer%d.q_proj", b->qkv, 3 * (size_t)D, 0, D);
        SEE("layer%d.k_proj", b->qkv, 3 * (size_t)D, D, D);
        SEE("layer%d.v_proj", b->qkv, 3 * (size_t)D, 2 * (size_t)D, D);
        if (fwd_tracing(c) && b->probs) {
            /* one sequence at a time, so that its probabilities can be reported */
            snprintf(name, sizeof name, "%s.layer%d.attn_probs", tower, l);
            for (int i = 0; i < s->n; i++) {
                fwd_seqs one = *s;
                one.n = 1;
                one.row0 = s->row0 + i;
                one.len = s->len + i;
                one.pool = s->pool ? s->pool + i : NULL;
                one.max_len = s->len[i];
                one.dev = NULL; /* a backend with device tables builds its own for one */
                TRY(op->attention(be, &one, b->qkv, D, H, causal, b->att, b->probs, err));
                int Lq = s->len[i];
                const float *p = op->to_host(be, b->probs, (size_t)H * Lq * Lq, c->host, err);
                if (!p) return err ? err->code : CLIP_ERR_DEVICE;
                c->opt->trace(c->opt->trace_user, name, c->item0 + i, p, H * Lq, Lq);
            }
        } else {
            TRY(op->attention(be, s, b->qkv, D, H, causal, b->att, NULL, err));
        }
        SEE("layer%d.attn_context", b->att, D, 0, D);
        TRY(op->linear(be, &L->o, b->att, R, b->y, D, err));
        SEE("layer%d.out_proj", b->y, D, 0, D);
        TRY(op->residual(be, b->h, b->y, RD, err));
        /* MLP block */
        TRY(op->layernorm(be, b->h, b->x, R, D, L->ln2, eps, err));
        SEE("layer%d.layer_norm2", b->x, D, 0, D);
        TRY(op->linear(be, &L->fc1, b->x, R, b->f, F, err));
        SEE("layer%d.fc1", b->f, F, 0, F);
        TRY(op->activation(be, b->f, (size_t)R * F, w->cfg->act, err));
        TRY(op->linear(be, &L->fc2, b->f, R, b->y, D, err));
        SEE("layer%d.fc2", b->y, D, 0, D);
        TRY(op->residual(be, b->h, b->y, RD, err));
        snprintf(name, sizeof name, "hidden_states.%d", l + 1);
        TRY(observe(c, tower, name, s, b->h, D, 0, D, err));
    }
#undef SEE
    return CLIP_OK;
}

/* The end of both towers: pooled rows -> final LayerNorm -> projection -> L2 norm. */
/* pre_name (or NULL) names the pooled rows before the LayerNorm. */
static clip_status pool_project(const fwd_ctx *c, const fwd_tower *w, const fwd_seqs *s,
                                const char *pre_name, const char *pooled_name,
                                const char *feat_name, const char *emb_name, fwd_buffers *b,
                                clip_error *err) {
    const fwd_ops *op = c->ops;
    int D = w->cfg->width, E = w->proj.out, n = s->n;
    TRY(op->gather(c->be, s, b->h, D, b->pooled, err));
    if (pre_name) TRY(observe_items(c, pre_name, n, b->pooled, D, err));
    TRY(op->layernorm(c->be, b->pooled, b->x, n, D, w->final_ln, w->cfg->eps, err));
    TRY(observe_items(c, pooled_name, n, b->x, D, err));
    TRY(op->linear(c->be, &w->proj, b->x, n, b->out, (size_t)E, err));
    TRY(observe_items(c, feat_name, n, b->out, E, err));
    if (c->opt && (c->opt->flags & CLIP_EMBED_FEATURES)) return CLIP_OK;
    TRY(op->l2norm(c->be, b->out, n, E, err));
    return observe_items(c, emb_name, n, b->out, E, err);
}

/* ------------------------------------------------------------------ the towers */

clip_status fwd_vision(const fwd_ctx *c, const fwd_tower *w, const fwd_seqs *s,
                       const float *pixels, fwd_buffers *b, clip_error *err) {
    const clip_config *cfg = c->cfg;
    const fwd_ops *op = c->ops;
    int B = s->n, D = w->cfg->width, S = cfg->image_size, P = cfg->patch_size;
    int G = S / P, Np = G * G, T = Np + 1;
    /* patch embedding: the convolution is one product over im2col rows */
    TRY(op->im2col(c->be, pixels, B, cfg->num_channels, S, P, b->f, err));
    TRY(op->linear(c->be, &w->patch, b->f, B * Np, b->y, D, err));
    if (fwd_tracing(c)) {
        int row0[1], len[1] = {Np};
        fwd_seqs patches = {1, Np, Np, row0, len, NULL, NULL, NULL};
        for (int i = 0; i < B; i++) { /* item i's patches are rows [i*Np, (i+1)*Np) */
            fwd_ctx one = *c;
            one.item0 = c->item0 + i;
            row0[0] = i * Np;
            patches.rows = (i + 1) * Np;
            TRY(observe(&one, NULL, "vision.patch_conv", &patches, b->y, D, 0, D, err));
        }
    }
    TRY(op->vision_embed(c->be, b->y, w->cls, w->pos, B, T, D, b->h, err));
    TRY(observe(c, "vision", "embeddings", s, b->h, D, 0, D, err));
    TRY(op->layernorm(c->be, b->h, b->h, s->rows, D, w->pre_ln, w->cfg->eps, err));
    TRY(observe(c, "vision", "pre_layrnorm", s, b->h, D, 0, D, err));
    TRY(observe(c, "vision", "hidden_states.0", s, b->h, D, 0, D, err));
    TRY(encoder(c, w, "vision", s, 0, b, err));
    return pool_project(c, w, s, "vision.pooled_cls_pre_ln", "vision.pooled", "image_features",
                        "image_embeds", b, err);
}

clip_status fwd_text(const fwd_ctx *c, const fwd_tower *w, const fwd_seqs *s, fwd_buffers *b,
                     clip_error *err) {
    const fwd_ops *op = c->ops;
    int D = w->cfg->width;
    TRY(op->text_embed(c->be, s, w->tok, w->pos, D, b->h, err));
    TRY(observe(c, "text", "hidden_states.0", s, b->h, D, 0, D, err));
    TRY(encoder(c, w, "text", s, 1, b, err));
    if (fwd_tracing(c)) { /* HF's last_hidden_state: the final LayerNorm over every row */
        TRY(op->layernorm(c->be, b->h, b->x, s->rows, D, w->final_ln, w->cfg->eps, err));
        TRY(observe(c, "text", "final_layer_norm", s, b->x, D, 0, D, err));
    }
    return pool_project(c, w, s, NULL, "text.pooled", "text_features", "text_embeds", b, err);
}
