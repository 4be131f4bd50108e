/* model_internal.h — what the loader, the synthetic-weight generator and the backends share:
 * the hyper-parameters read from config.json, the list of tensors a config implies, and the
 * loaded weights. Not part of the public API. */
#ifndef CLIP_MODEL_INTERNAL_H
#define CLIP_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "clip.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clip_act {
    CLIP_ACT_QUICK_GELU, /* x * sigmoid(1.702 x) — every OpenAI checkpoint */
    CLIP_ACT_GELU,       /* exact erf GELU (HF "gelu") */
    CLIP_ACT_GELU_TANH   /* tanh approximation (HF "gelu_new", "gelu_pytorch_tanh") */
} clip_act;

typedef struct clip_tower_config {
    int width, layers, heads, mlp;
    clip_act act;
    double eps;
} clip_tower_config;

typedef struct clip_config {
    clip_tower_config vision, text;
    int image_size, patch_size, num_channels;
    int vocab_size, context_length;
    int eos_token_id;
    int embed_dim;
} clip_config;

/* Reads config.json (a CLIPModel config; HF defaults for absent fields) and validates it:
 * positive sizes, heads dividing widths, sane upper bounds. `what` names the file. */
clip_status clip_config_parse(const char *json, size_t len, const char *what, clip_config *cfg,
                              clip_error *err);
clip_status clip_config_load(const char *path, clip_config *cfg, clip_error *err);

/* The tensors of a CLIPModel state dict for this config, sorted by name (clip_config_tensors). */
clip_status clip_tensor_table(const clip_config *cfg, clip_tensor_info **specs, size_t *n,
                              clip_error *err);

/* Visits every tensor of the table (tensors.c) in table order. With weights w, dest is where
 * the loader stores the tensor's data (NULL for tensors it keeps nowhere, such as logit_scale);
 * optional: the loader accepts its absence. */
struct clip_weights;
typedef clip_status (*clip_tensor_visit)(void *user, const clip_tensor_info *spec,
                                         const float **dest, int optional, clip_error *err);
clip_status clip_tensor_walk(const clip_config *cfg, struct clip_weights *w,
                             clip_tensor_visit fn, void *user, clip_error *err);

/* Weights of one encoder layer; all [out, in] row-major, as HF stores them. */
typedef struct clip_layer_weights {
    const float *ln1_w, *ln1_b;
    const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
    const float *ln2_w, *ln2_b;
    const float *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} clip_layer_weights;

typedef struct clip_weights {
    /* vision */
    const float *class_emb;  /* [Dv] */
    const float *patch_w;    /* [Dv, C*P*P] */
    const float *vpos;       /* [positions, Dv] */
    const float *pre_ln_w, *pre_ln_b, *post_ln_w, *post_ln_b;
    const float *vproj;      /* [E, Dv] */
    clip_layer_weights *vlayers;
    /* text */
    const float *tok_emb;    /* [vocab, Dt] */
    const float *tpos;       /* [context, Dt] */
    const float *final_ln_w, *final_ln_b;
    const float *tproj;      /* [E, Dt] */
    clip_layer_weights *tlayers;
    float logit_scale;
} clip_weights;

struct clip_model {
    clip_config cfg;
    clip_model_info info;
    clip_weights w;
    st_file file;          /* the mapped safetensors file; F32 tensors point into it */
    float **owned;         /* tensors converted at load (F16/BF16/F64, unaligned F32) */
    size_t n_owned;
    int n_threads;         /* 0 = all cores */
    clip_precision precision;
    clip_device device;    /* the backend in use: CPU or CUDA */
    void *cpu;             /* backend_cpu state (packed weights) when device == CPU */
    void *cuda;            /* backend_cuda state when device == CUDA */
    clip_cpu_kernel cpu_kernel; /* asked for (options) */
    char dir[4096];
    char device_name[160];
};

/* Pooling position of one row (spec §A.6): legacy argmax when eos_token_id == 2, else the
 * first eos_token_id (0 when absent). */
int clip_pool_index(const clip_config *cfg, const int32_t *ids, int len);


#ifdef __cplusplus
}
#endif
#endif
