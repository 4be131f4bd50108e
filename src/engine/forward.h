/* forward.h — the CLIP forward pass (spec §A), written once (forward.c) over a small set of
 * backend operations. backend_cpu.c and backend_cuda.cu each provide the operations, the
 * weights in their own form and the work buffers in their own memory; forward.c says what
 * happens in which order, and tells an observer (the trace callback) every named intermediate.
 *
 * Dimension legend (llm.c style), used in every shape comment below:
 *   B   items of a chunk (images or texts)
 *   S   image size, P patch size, C channels, G = S / P, Np = G * G patches, Kp = C * P * P
 *   T   tokens of an image: Np + 1 (CLS first)
 *   L   tokens of one text: pool + 1 (the causal mask makes later tokens irrelevant)
 *   R   rows of a chunk: the tokens of all its items, packed one sequence after another
 *   D   width of a tower, H heads, Dh = D / H
 *   F   MLP width (intermediate_size)
 *   E   projection width (projection_dim)
 */
#ifndef CLIP_FORWARD_H
#define CLIP_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "model_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A Linear layer in a backend's own form (CPU: packed gemm_weights, CUDA: device pointers). */
typedef struct fwd_linear {
    const void *impl;
    int in, out;
} fwd_linear;

/* A LayerNorm's weight and bias [D], in backend memory. */
typedef struct fwd_norm {
    const float *w, *b;
} fwd_norm;

typedef struct fwd_layer {
    fwd_norm ln1, ln2;
    fwd_linear qkv; /* q, k and v side by side: [3D, D], bias [3D] */
    fwd_linear o;   /* [D, D] */
    fwd_linear fc1; /* [F, D] */
    fwd_linear fc2; /* [D, F] */
} fwd_layer;

/* One tower's weights in backend memory. */
typedef struct fwd_tower {
    const clip_tower_config *cfg;
    const fwd_layer *layers;
    fwd_norm final_ln;   /* post_layernorm (vision) / final_layer_norm (text) */
    fwd_linear proj;     /* visual_projection / text_projection: [E, D], no bias */
    /* vision only */
    fwd_linear patch;    /* the patch convolution as a product: [D, Kp] */
    const float *cls;    /* [D] */
    const float *pos;    /* [T, D] (vision) / [context, D] (text) */
    fwd_norm pre_ln;
    /* text only */
    const float *tok;    /* [vocab, D] */
} fwd_tower;

/* The sequences of a chunk. Sequence s occupies rows [row0[s], row0[s] + len[s]) of every
 * [R, .] buffer and is pooled at row row0[s] + pool[s]. Host arrays; `dev` is the backend's copy
 * (CUDA: device tables) or NULL. Text rows also carry their token ids (ids[r], host). */
typedef struct fwd_seqs {
    int n, rows, max_len;
    const int *row0, *len, *pool;
    const int32_t *ids;  /* text: [R] token id of each row; vision: NULL */
    const void *dev;
} fwd_seqs;

/* Work buffers of one chunk, in backend memory. */
typedef struct fwd_buffers {
    float *h;      /* [R, D]  the residual stream */
    float *x;      /* [R, D]  a LayerNorm's output: the input of the next product */
    float *qkv;    /* [R, 3D] q | k | v */
    float *att;    /* [R, D]  attention context */
    float *y;      /* [R, D]  a projection's output before the residual add; [B*Np, D] patches */
    float *f;      /* [R, F]  MLP hidden; vision: the im2col patches [B*Np, Kp] first */
    float *pooled; /* [B, D]  the pooled rows, before the final LayerNorm */
    float *out;    /* [B, E]  features, then embeddings */
    float *probs;  /* [H, L, L] attention probabilities of one sequence (tracing only) */
} fwd_buffers;

typedef struct fwd_ops {
    /* y[r][0..out) (row stride ldy) = x[r][0..in) . W^T + b for r < rows (x row stride in). */
    clip_status (*linear)(void *be, const fwd_linear *w, const float *x, int rows, float *y,
                          size_t ldy, clip_error *err);
    /* y = LayerNorm(x) row-wise over d; x and y may be the same buffer. */
    clip_status (*layernorm)(void *be, const float *x, float *y, int rows, int d, fwd_norm n,
                             double eps, clip_error *err);
    /* att = softmax((q * Dh^-0.5) k^T + mask) v per head and sequence; qkv [R, 3D]. causal: key
     * j visible to query i iff j <= i. probs (one sequence only, or NULL): [H, L, L] out. */
    clip_status (*attention)(void *be, const fwd_seqs *s, const float *qkv, int d, int heads,
                             int causal, float *att, float *probs, clip_error *err);
    /* x = act(x) elementwise over n values */
    clip_status (*activation)(void *be, float *x, size_t n, clip_act act, clip_error *err);
    /* h += y over n values */
    clip_status (*residual)(void *be, float *h, const float *y, size_t n, clip_error *err);
    /* cols[(b, py, px)][(c, ky, kx)] = pixels[b][c][py*P+ky][px*P+kx] (the conv weight's order) */
    clip_status (*im2col)(void *be, const float *pixels, int n, int C, int S, int P, float *cols,
                          clip_error *err);
    /* h[b][0] = cls + pos[0]; h[b][t] = patches[b][t-1] + pos[t] */
    clip_status (*vision_embed)(void *be, const float *patches, const float *cls,
                                const float *pos, int n, int T, int D, float *h, clip_error *err);
    /* h[r] = tok[ids[r]] + pos[position of r in its sequence] */
    clip_status (*text_embed)(void *be, const fwd_seqs *s, const float *tok, const float *pos,
                              int D, float *h, clip_error *err);
    /* dst[s] = src[row0[s] + pool[s]] for every sequence, rows of D floats */
    clip_status (*gather)(void *be, const fwd_seqs *s, const float *src, int D, float *dst,
                          clip_error *err);
    /* each of the n rows of x divided by its L2 norm (no epsilon, as HF) */
    clip_status (*l2norm)(void *be, float *x, int n, int E, clip_error *err);
    /* n floats of backend memory as host memory (CPU: x itself; CUDA: a copy in scratch, which
     * holds n floats). Used by the observer only. */
    const float *(*to_host)(void *be, const float *x, size_t n, float *scratch, clip_error *err);
} fwd_ops;

/* One encode call: the backend, the caller's options, and where the observer writes. */
typedef struct fwd_ctx {
    const fwd_ops *ops;
    void *be;
    const clip_config *cfg;
    const clip_encode_options *opt; /* trace callback and flags (may be NULL) */
    int item0;                      /* global index of the chunk's first item (for the trace) */
    float *host;                    /* tracing on a device: host scratch of R * max(3D, F) */
    float *host2;                   /* tracing: scratch for strided rows, max(3D, F) floats */
} fwd_ctx;

/* 1 when the caller asked for intermediates. */
int fwd_tracing(const fwd_ctx *c);

/* Images: pixels [B, C, S, S] in backend memory -> b->out [B, E]. seqs: B sequences of T rows. */
clip_status fwd_vision(const fwd_ctx *c, const fwd_tower *w, const fwd_seqs *seqs,
                       const float *pixels, fwd_buffers *b, clip_error *err);
/* Texts: seqs (with ids) -> b->out [B, E]. */
clip_status fwd_text(const fwd_ctx *c, const fwd_tower *w, const fwd_seqs *seqs, fwd_buffers *b,
                     clip_error *err);

#ifdef __cplusplus
}
#endif
#endif
