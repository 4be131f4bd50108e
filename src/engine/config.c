/* config.c — config.json of a CLIPModel: hyper-parameters and their validation. */
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
