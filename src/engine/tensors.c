/* tensors.c — the one table of a CLIPModel state dict: every tensor's name, shape rule, role and
 * where the loader puts it. clip_config_tensors (and so `clipeval synth` and the manifest
 * checks) and the loader (model.c) both walk this table, so they cannot disagree. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util.h"

/* Shape symbols, resolved against a config (and the tower of the row). */
typedef enum dim {
    X_NONE,
    X_D,     /* the tower's width */
    X_F,     /* the tower's MLP width */
    X_E,     /* projection_dim */
    X_VOCAB, /* vocab_size */
    X_CTX,   /* max_position_embeddings */
    X_VPOS,  /* (image_size / patch_size)^2 + 1 */
    X_C,     /* num_channels */
    X_P,     /* patch_size */
    X_KP     /* C * P * P: inputs of one patch */
} dim;

#define NO_FIELD ((size_t)-1)

typedef struct tensor_rule {
    const char *name;  /* full name, or the suffix after "<tower>_model.encoder.layers.<l>." */
    char tower;        /* 'v' or 't': whose width D and F are */
    int per_layer;
    clip_tensor_role role;
    int ndim;
    dim shape[4];
    dim fan_in;        /* LINEAR only */
    size_t field;      /* offsetof in clip_weights (top) or clip_layer_weights (per layer) */
    int optional;      /* the loader reads it when present */
} tensor_rule;

#define W(f) offsetof(clip_weights, f)
#define LW(f) offsetof(clip_layer_weights, f)

static const tensor_rule top_rules[] = {
    {"vision_model.embeddings.class_embedding", 'v', 0, CLIP_TENSOR_EMBEDDING, 1, {X_D}, X_NONE,
     W(class_emb), 0},
    {"vision_model.embeddings.patch_embedding.weight", 'v', 0, CLIP_TENSOR_LINEAR, 4,
     {X_D, X_C, X_P, X_P}, X_KP, W(patch_w), 0},
    {"vision_model.embeddings.position_embedding.weight", 'v', 0, CLIP_TENSOR_EMBEDDING, 2,
     {X_VPOS, X_D}, X_NONE, W(vpos), 0},
    {"vision_model.pre_layrnorm.weight", 'v', 0, CLIP_TENSOR_NORM, 1, {X_D}, X_NONE, W(pre_ln_w), 0},
    {"vision_model.pre_layrnorm.bias", 'v', 0, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE, W(pre_ln_b), 0},
    {"vision_model.post_layernorm.weight", 'v', 0, CLIP_TENSOR_NORM, 1, {X_D}, X_NONE,
     W(post_ln_w), 0},
    {"vision_model.post_layernorm.bias", 'v', 0, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE, W(post_ln_b),
     0},
    {"visual_projection.weight", 'v', 0, CLIP_TENSOR_LINEAR, 2, {X_E, X_D}, X_D, W(vproj), 0},
    {"text_model.embeddings.token_embedding.weight", 't', 0, CLIP_TENSOR_EMBEDDING, 2,
     {X_VOCAB, X_D}, X_NONE, W(tok_emb), 0},
    {"text_model.embeddings.position_embedding.weight", 't', 0, CLIP_TENSOR_EMBEDDING, 2,
     {X_CTX, X_D}, X_NONE, W(tpos), 0},
    {"text_model.final_layer_norm.weight", 't', 0, CLIP_TENSOR_NORM, 1, {X_D}, X_NONE,
     W(final_ln_w), 0},
    {"text_model.final_layer_norm.bias", 't', 0, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE,
     W(final_ln_b), 0},
    {"text_projection.weight", 't', 0, CLIP_TENSOR_LINEAR, 2, {X_E, X_D}, X_D, W(tproj), 0},
    /* not needed to encode; synth writes it and the loader keeps it for clip_model_info */
    {"logit_scale", 't', 0, CLIP_TENSOR_SCALAR, 0, {X_NONE}, X_NONE, NO_FIELD, 1},
};

static const tensor_rule layer_rules[] = {
    {"self_attn.q_proj.weight", 0, 1, CLIP_TENSOR_LINEAR, 2, {X_D, X_D}, X_D, LW(q_w), 0},
    {"self_attn.q_proj.bias", 0, 1, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE, LW(q_b), 0},
    {"self_attn.k_proj.weight", 0, 1, CLIP_TENSOR_LINEAR, 2, {X_D, X_D}, X_D, LW(k_w), 0},
    {"self_attn.k_proj.bias", 0, 1, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE, LW(k_b), 0},
    {"self_attn.v_proj.weight", 0, 1, CLIP_TENSOR_LINEAR, 2, {X_D, X_D}, X_D, LW(v_w), 0},
    {"self_attn.v_proj.bias", 0, 1, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE, LW(v_b), 0},
    {"self_attn.out_proj.weight", 0, 1, CLIP_TENSOR_LINEAR, 2, {X_D, X_D}, X_D, LW(o_w), 0},
    {"self_attn.out_proj.bias", 0, 1, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE, LW(o_b), 0},
    {"layer_norm1.weight", 0, 1, CLIP_TENSOR_NORM, 1, {X_D}, X_NONE, LW(ln1_w), 0},
    {"layer_norm1.bias", 0, 1, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE, LW(ln1_b), 0},
    {"layer_norm2.weight", 0, 1, CLIP_TENSOR_NORM, 1, {X_D}, X_NONE, LW(ln2_w), 0},
    {"layer_norm2.bias", 0, 1, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE, LW(ln2_b), 0},
    {"mlp.fc1.weight", 0, 1, CLIP_TENSOR_LINEAR, 2, {X_F, X_D}, X_D, LW(fc1_w), 0},
    {"mlp.fc1.bias", 0, 1, CLIP_TENSOR_BIAS, 1, {X_F}, X_NONE, LW(fc1_b), 0},
    {"mlp.fc2.weight", 0, 1, CLIP_TENSOR_LINEAR, 2, {X_D, X_F}, X_F, LW(fc2_w), 0},
    {"mlp.fc2.bias", 0, 1, CLIP_TENSOR_BIAS, 1, {X_D}, X_NONE, LW(fc2_b), 0},
};

static int64_t resolve(const clip_config *c, char tower, dim d) {
    const clip_tower_config *t = tower == 'v' ? &c->vision : &c->text;
    int64_t g = c->image_size / c->patch_size;
    switch (d) {
    case X_NONE: return 0;
    case X_D: return t->width;
    case X_F: return t->mlp;
    case X_E: return c->embed_dim;
    case X_VOCAB: return c->vocab_size;
    case X_CTX: return c->context_length;
    case X_VPOS: return g * g + 1;
    case X_C: return c->num_channels;
    case X_P: return c->patch_size;
    case X_KP: return (int64_t)c->num_channels * c->patch_size * c->patch_size;
    }
    return 0;
}

static void fill(clip_tensor_info *s, const clip_config *c, const tensor_rule *r, char tower) {
    s->ndim = r->ndim;
    for (int i = 0; i < 4; i++) s->shape[i] = i < r->ndim ? resolve(c, tower, r->shape[i]) : 0;
    s->role = r->role;
    s->fan_in = resolve(c, tower, r->fan_in);
}

clip_status clip_tensor_walk(const clip_config *c, clip_weights *w, clip_tensor_visit fn,
                             void *user, clip_error *err) {
    clip_tensor_info s;
    for (size_t i = 0; i < sizeof top_rules / sizeof top_rules[0]; i++) {
        const tensor_rule *r = &top_rules[i];
        memset(&s, 0, sizeof s);
        snprintf(s.name, sizeof s.name, "%s", r->name);
        fill(&s, c, r, r->tower);
        const float **dest = w && r->field != NO_FIELD ? (const float **)((char *)w + r->field) : NULL;
        clip_status st = fn(user, &s, dest, r->optional, err);
        if (st) return st;
    }
    for (int tw = 0; tw < 2; tw++) {
        char tower = tw ? 't' : 'v';
        const clip_tower_config *t = tw ? &c->text : &c->vision;
        clip_layer_weights *layers = w ? (tw ? w->tlayers : w->vlayers) : NULL;
        for (int l = 0; l < t->layers; l++)
            for (size_t i = 0; i < sizeof layer_rules / sizeof layer_rules[0]; i++) {
                const tensor_rule *r = &layer_rules[i];
                memset(&s, 0, sizeof s);
                snprintf(s.name, sizeof s.name, "%s_model.encoder.layers.%d.%s",
                         tw ? "text" : "vision", l, r->name);
                fill(&s, c, r, tower);
                const float **dest = layers ? (const float **)((char *)&layers[l] + r->field) : NULL;
                clip_status st = fn(user, &s, dest, r->optional, err);
                if (st) return st;
            }
    }
    return CLIP_OK;
}

typedef struct collect {
    clip_tensor_info *v;
    size_t n, cap;
} collect;

static clip_status collect_one(void *user, const clip_tensor_info *s, const float **dest,
                               int optional, clip_error *err) {
    (void)dest;
    (void)optional;
    collect *c = user;
    if (c->n == c->cap) return clip_fail(err, CLIP_ERR_ARG, "internal: tensor table overflow");
    c->v[c->n++] = *s;
    return CLIP_OK;
}

static int info_cmp(const void *a, const void *b) {
    return strcmp(((const clip_tensor_info *)a)->name, ((const clip_tensor_info *)b)->name);
}

clip_status clip_tensor_table(const clip_config *cfg, clip_tensor_info **specs, size_t *n,
                              clip_error *err) {
    size_t nl = sizeof layer_rules / sizeof layer_rules[0];
    size_t total = sizeof top_rules / sizeof top_rules[0] +
                   nl * ((size_t)cfg->vision.layers + (size_t)cfg->text.layers);
    collect c = {calloc(total, sizeof(clip_tensor_info)), 0, total};
    if (!c.v) return clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate the tensor list");
    clip_status st = clip_tensor_walk(cfg, NULL, collect_one, &c, err);
    if (st) {
        free(c.v);
        return st;
    }
    qsort(c.v, c.n, sizeof *c.v, info_cmp);
    *specs = c.v;
    *n = c.n;
    return CLIP_OK;
}
