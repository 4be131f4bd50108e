/* config.c — config.json of a CLIPModel: hyper-parameters, validation, the tensor list. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "model_internal.h"
#include "util.h"

/* Upper bounds that no real CLIP comes near (ViT-bigG: width 1664, 48 layers, mlp 8192) but
 * that keep a hostile config from asking for absurd allocations before the weights are read. */
#define MAX_WIDTH 16384
#define MAX_LAYERS 512
#define MAX_MLP 262144
#define MAX_VOCAB 16777216
#define MAX_CONTEXT 65536
#define MAX_IMAGE 16384

static clip_status get_int_field(const json_value *obj, const char *key, int def, int min, int max,
                                 const char *what, const char *section, int *out, clip_error *err) {
    long long v;
    int r = json_get_int(obj, key, &v);
    if (r == 0) {
        *out = def;
        return CLIP_OK;
    }
    if (r < 0)
        return clip_fail(err, CLIP_ERR_CONFIG, "%s: %s%s must be an integer", what, section, key);
    if (v < min || v > max)
        return clip_fail(err, CLIP_ERR_CONFIG, "%s: %s%s = %lld is out of range [%d, %d]", what,
                         section, key, v, min, max);
    *out = (int)v;
    return CLIP_OK;
}

static clip_status parse_act(const json_value *obj, const char *what, const char *section,
                             clip_act *out, clip_error *err) {
    const char *s = "quick_gelu";
    int r = json_get_string(obj, "hidden_act", &s);
    if (r < 0) return clip_fail(err, CLIP_ERR_CONFIG, "%s: %shidden_act must be a string", what, section);
    if (!strcmp(s, "quick_gelu"))
        *out = CLIP_ACT_QUICK_GELU;
    else if (!strcmp(s, "gelu"))
        *out = CLIP_ACT_GELU;
    else if (!strcmp(s, "gelu_new") || !strcmp(s, "gelu_pytorch_tanh"))
        *out = CLIP_ACT_GELU_TANH;
    else
        return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                         "%s: %shidden_act '%.64s' is not supported (quick_gelu, gelu, gelu_new)",
                         what, section, s);
    return CLIP_OK;
}

static clip_status parse_tower(const json_value *obj, int is_vision, const char *what,
                               clip_tower_config *t, clip_error *err) {
    const char *sec = is_vision ? "vision_config." : "text_config.";
    /* Defaults are transformers' CLIPVisionConfig / CLIPTextConfig defaults. */
    clip_status st;
    if ((st = get_int_field(obj, "hidden_size", is_vision ? 768 : 512, 1, MAX_WIDTH, what, sec,
                            &t->width, err)) ||
        (st = get_int_field(obj, "num_hidden_layers", 12, 1, MAX_LAYERS, what, sec, &t->layers,
                            err)) ||
        (st = get_int_field(obj, "num_attention_heads", is_vision ? 12 : 8, 1, MAX_WIDTH, what,
                            sec, &t->heads, err)) ||
        (st = get_int_field(obj, "intermediate_size", is_vision ? 3072 : 2048, 1, MAX_MLP, what,
                            sec, &t->mlp, err)) ||
        (st = parse_act(obj, what, sec, &t->act, err)))
        return st;
    if (t->width % t->heads)
        return clip_fail(err, CLIP_ERR_CONFIG,
                         "%s: %snum_attention_heads = %d does not divide hidden_size = %d", what, sec,
                         t->heads, t->width);
    double eps = 1e-5;
    int r = json_get_number(obj, "layer_norm_eps", &eps);
    if (r < 0 || !(eps > 0 && eps < 1))
        return clip_fail(err, CLIP_ERR_CONFIG, "%s: %slayer_norm_eps must be a number in (0, 1)",
                         what, sec);
    t->eps = eps;
    return CLIP_OK;
}

clip_status clip_config_parse(const char *text, size_t len, const char *what, clip_config *cfg,
                              clip_error *err) {
    memset(cfg, 0, sizeof *cfg);
    json_doc *doc;
    clip_status st = json_parse(text, len, what, 64, &doc, err);
    if (st) return st;
    const json_value *root = json_doc_root(doc);
    const json_value *vc = json_get(root, "vision_config");
    const json_value *tc = json_get(root, "text_config");
    static const json_value empty = {.type = JSON_OBJECT};
    if (root->type != JSON_OBJECT) {
        st = clip_fail(err, CLIP_ERR_CONFIG, "%s: not a JSON object", what);
        goto done;
    }
    const char *mt = NULL;
    if (json_get_string(root, "model_type", &mt) == 1 && strcmp(mt, "clip") != 0) {
        st = clip_fail(err, CLIP_ERR_UNSUPPORTED,
                       "%s: model_type '%.64s' is not a CLIP model (expected \"clip\")", what, mt);
        goto done;
    }
    if ((vc && vc->type != JSON_OBJECT && vc->type != JSON_NULL) ||
        (tc && tc->type != JSON_OBJECT && tc->type != JSON_NULL)) {
        st = clip_fail(err, CLIP_ERR_CONFIG, "%s: vision_config/text_config must be objects", what);
        goto done;
    }
    if (!vc || vc->type == JSON_NULL) vc = &empty;
    if (!tc || tc->type == JSON_NULL) tc = &empty;
    if ((st = parse_tower(vc, 1, what, &cfg->vision, err)) ||
        (st = parse_tower(tc, 0, what, &cfg->text, err)) ||
        (st = get_int_field(vc, "image_size", 224, 1, MAX_IMAGE, what, "vision_config.",
                            &cfg->image_size, err)) ||
        (st = get_int_field(vc, "patch_size", 32, 1, MAX_IMAGE, what, "vision_config.",
                            &cfg->patch_size, err)) ||
        (st = get_int_field(vc, "num_channels", 3, 3, 3, what, "vision_config.",
                            &cfg->num_channels, err)) ||
        (st = get_int_field(tc, "vocab_size", 49408, 1, MAX_VOCAB, what, "text_config.",
                            &cfg->vocab_size, err)) ||
        (st = get_int_field(tc, "max_position_embeddings", 77, 1, MAX_CONTEXT, what,
                            "text_config.", &cfg->context_length, err)) ||
        (st = get_int_field(tc, "eos_token_id", 49407, -1, MAX_VOCAB, what, "text_config.",
                            &cfg->eos_token_id, err)) ||
        (st = get_int_field(root, "projection_dim", 512, 1, MAX_WIDTH, what, "",
                            &cfg->embed_dim, err)))
        goto done;
    if (cfg->image_size % cfg->patch_size) {
        /* HF's conv silently drops the remainder; refuse rather than guess. */
        st = clip_fail(err, CLIP_ERR_CONFIG,
                       "%s: vision_config.image_size = %d is not a multiple of patch_size = %d", what,
                       cfg->image_size, cfg->patch_size);
        goto done;
    }
    int grid = cfg->image_size / cfg->patch_size;
    if ((long long)grid * grid + 1 > MAX_CONTEXT) {
        st = clip_fail(err, CLIP_ERR_CONFIG, "%s: %d x %d patches is too many positions", what, grid,
                       grid);
        goto done;
    }
done:
    json_doc_free(doc);
    return st;
}

clip_status clip_config_load(const char *path, clip_config *cfg, clip_error *err) {
    char *text;
    size_t len;
    clip_status st = clip_read_file(path, 16u << 20, &text, &len, err);
    if (st) return st;
    st = clip_config_parse(text, len, path, cfg, err);
    free(text);
    return st;
}

static int spec_cmp(const void *a, const void *b) {
    return strcmp(((const clip_tensor_info *)a)->name, ((const clip_tensor_info *)b)->name);
}

typedef struct spec_list {
    clip_tensor_info *v;
    size_t n, cap;
} spec_list;

static void add_spec(spec_list *l, clip_tensor_role kind, int64_t fan_in, int ndim, int64_t d0,
                     int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...) CLIP_PRINTF(9, 10);

static void add_spec(spec_list *l, clip_tensor_role kind, int64_t fan_in, int ndim, int64_t d0,
                     int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...) {
    if (l->n == l->cap) return; /* sized exactly in advance */
    clip_tensor_info *s = &l->v[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->role = kind;
    s->fan_in = fan_in;
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->shape[2] = d2;
    s->shape[3] = d3;
}

static void add_layers(spec_list *l, const char *tower, const clip_tower_config *t) {
    int64_t H = t->width, I = t->mlp;
    static const char *proj[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int i = 0; i < t->layers; i++) {
        const char *p = tower;
        for (int k = 0; k < 4; k++) {
            add_spec(l, CLIP_TENSOR_LINEAR, H, 2, H, H, 0, 0, "%s.encoder.layers.%d.self_attn.%s.weight",
                     p, i, proj[k]);
            add_spec(l, CLIP_TENSOR_BIAS, 0, 1, H, 0, 0, 0, "%s.encoder.layers.%d.self_attn.%s.bias", p,
                     i, proj[k]);
        }
        for (int k = 1; k <= 2; k++) {
            add_spec(l, CLIP_TENSOR_NORM, 0, 1, H, 0, 0, 0, "%s.encoder.layers.%d.layer_norm%d.weight", p,
                     i, k);
            add_spec(l, CLIP_TENSOR_BIAS, 0, 1, H, 0, 0, 0, "%s.encoder.layers.%d.layer_norm%d.bias", p,
                     i, k);
        }
        add_spec(l, CLIP_TENSOR_LINEAR, H, 2, I, H, 0, 0, "%s.encoder.layers.%d.mlp.fc1.weight", p, i);
        add_spec(l, CLIP_TENSOR_BIAS, 0, 1, I, 0, 0, 0, "%s.encoder.layers.%d.mlp.fc1.bias", p, i);
        add_spec(l, CLIP_TENSOR_LINEAR, I, 2, H, I, 0, 0, "%s.encoder.layers.%d.mlp.fc2.weight", p, i);
        add_spec(l, CLIP_TENSOR_BIAS, 0, 1, H, 0, 0, 0, "%s.encoder.layers.%d.mlp.fc2.bias", p, i);
    }
}

clip_status clip_tensor_table(const clip_config *cfg, clip_tensor_info **specs, size_t *n,
                              clip_error *err) {
    size_t total = 14 + 16 * (size_t)cfg->vision.layers + 16 * (size_t)cfg->text.layers;
    spec_list l = {calloc(total, sizeof(clip_tensor_info)), 0, total};
    if (!l.v) return clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate the tensor list");
    int64_t Dv = cfg->vision.width, Dt = cfg->text.width, E = cfg->embed_dim;
    int64_t P = cfg->patch_size, C = cfg->num_channels;
    int64_t grid = cfg->image_size / cfg->patch_size;
    add_spec(&l, CLIP_TENSOR_EMBEDDING, 0, 2, cfg->vocab_size, Dt, 0, 0,
             "text_model.embeddings.token_embedding.weight");
    add_spec(&l, CLIP_TENSOR_EMBEDDING, 0, 2, cfg->context_length, Dt, 0, 0,
             "text_model.embeddings.position_embedding.weight");
    add_layers(&l, "text_model", &cfg->text);
    add_spec(&l, CLIP_TENSOR_NORM, 0, 1, Dt, 0, 0, 0, "text_model.final_layer_norm.weight");
    add_spec(&l, CLIP_TENSOR_BIAS, 0, 1, Dt, 0, 0, 0, "text_model.final_layer_norm.bias");
    add_spec(&l, CLIP_TENSOR_EMBEDDING, 0, 1, Dv, 0, 0, 0, "vision_model.embeddings.class_embedding");
    add_spec(&l, CLIP_TENSOR_LINEAR, C * P * P, 4, Dv, C, P, P,
             "vision_model.embeddings.patch_embedding.weight");
    add_spec(&l, CLIP_TENSOR_EMBEDDING, 0, 2, grid * grid + 1, Dv, 0, 0,
             "vision_model.embeddings.position_embedding.weight");
    add_spec(&l, CLIP_TENSOR_NORM, 0, 1, Dv, 0, 0, 0, "vision_model.pre_layrnorm.weight");
    add_spec(&l, CLIP_TENSOR_BIAS, 0, 1, Dv, 0, 0, 0, "vision_model.pre_layrnorm.bias");
    add_layers(&l, "vision_model", &cfg->vision);
    add_spec(&l, CLIP_TENSOR_NORM, 0, 1, Dv, 0, 0, 0, "vision_model.post_layernorm.weight");
    add_spec(&l, CLIP_TENSOR_BIAS, 0, 1, Dv, 0, 0, 0, "vision_model.post_layernorm.bias");
    add_spec(&l, CLIP_TENSOR_LINEAR, Dv, 2, E, Dv, 0, 0, "visual_projection.weight");
    add_spec(&l, CLIP_TENSOR_LINEAR, Dt, 2, E, Dt, 0, 0, "text_projection.weight");
    add_spec(&l, CLIP_TENSOR_SCALAR, 0, 0, 0, 0, 0, 0, "logit_scale");
    qsort(l.v, l.n, sizeof *l.v, spec_cmp);
    *specs = l.v;
    *n = l.n;
    return CLIP_OK;
}

int clip_pool_index(const clip_config *cfg, const int32_t *ids, int len) {
    if (len <= 0) return 0;
    int best = 0;
    if (cfg->eos_token_id == 2) {
        /* Legacy rule: argmax, first index on ties (torch.argmax semantics). */
        for (int i = 1; i < len; i++)
            if (ids[i] > ids[best]) best = i;
        return best;
    }
    for (int i = 0; i < len; i++)
        if (ids[i] == cfg->eos_token_id) return i;
    return 0;
}

clip_status clip_config_tensors(const char *config_path, clip_tensor_info **out, size_t *n,
                                clip_error *err) {
    if (!config_path || !out || !n) return clip_fail(err, CLIP_ERR_ARG, "clip_config_tensors: NULL argument");
    *out = NULL;
    *n = 0;
    clip_config cfg;
    clip_status st = clip_config_load(config_path, &cfg, err);
    return st ? st : clip_tensor_table(&cfg, out, n, err);
}

void clip_free(void *p) { free(p); }
