/* trace_names.c — see trace_names.h. The table below is golden/debug/README.md in code form. */
#include "trace_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tensors inside encoder layer K, in forward order (step = index). */
static const struct {
    const char *sub;
    trace_kind kind;
    const char *desc;
} layer_parts[] = {
    {"layer_norm1", TK_ROWS, "layer_norm1 output [N, H]"},
    {"q_proj", TK_ROWS_HEADS,
     "q_proj(x) BEFORE the 1/sqrt(head_dim) scaling [N, H] (HF scales q after the projection)"},
    {"k_proj", TK_ROWS_HEADS, "k_proj(x) [N, H]"},
    {"v_proj", TK_ROWS_HEADS, "v_proj(x) [N, H]"},
    {"attn_probs", TK_PROBS,
     "softmax attention probabilities [heads, N, N] (query x key), masks applied"},
    {"attn_context", TK_ROWS_HEADS,
     "attention context, heads concatenated (head h in columns h*head_dim..), input of out_proj"},
    {"out_proj", TK_ROWS, "out_proj output (before the residual add) [N, H]"},
    {"layer_norm2", TK_ROWS, "layer_norm2 output (input = x + attn) [N, H]"},
    {"fc1", TK_ROWS, "fc1 output (before the activation) [N, I]"},
    {"fc2", TK_ROWS, "fc2(act(fc1)) output (before the residual add) [N, H]"},
};
#define N_LAYER_PARTS (sizeof layer_parts / sizeof layer_parts[0])

/* Tensors of a tower outside the layers. */
static const struct {
    trace_tower tower;
    const char *name;
    trace_kind kind;
    int layer, step, exact;
    const char *desc;
} named[] = {
    {TRACE_VISION, "vision.pixel_values", TK_PIXELS, TRACE_LAYER_PRE, 0, 0,
     "pixel_values: the preprocessed image [C, S, S] (the input)"},
    {TRACE_VISION, "vision.patch_conv", TK_PATCH, TRACE_LAYER_PRE, 2, 0,
     "patch_embedding Conv2d output (stride=kernel=patch, no bias) [Hv, S/P, S/P]"},
    {TRACE_VISION, "vision.embeddings", TK_ROWS, TRACE_LAYER_PRE, 3, 0,
     "CLIPVisionEmbeddings output = [class_embedding; patches flattened row-major] + "
     "position_embedding [N, Hv]; input of pre_layrnorm"},
    {TRACE_VISION, "vision.pre_layrnorm", TK_ROWS, TRACE_LAYER_PRE, 4, 0,
     "pre_layrnorm output [N, Hv] (equals hidden_states[0])"},
    {TRACE_VISION, "vision.hidden_states", TK_STACK, TRACE_LAYER_PRE, 5, 0,
     "output_hidden_states: [0] = pre_layrnorm output, [i] = output of encoder layer i-1 "
     "(residual stream); [-1] = last_hidden_state (NOT post-layernormed)"},
    {TRACE_VISION, "vision.pooled_cls_pre_ln", TK_VEC, TRACE_LAYER_POST, 0, 0,
     "CLS row of last_hidden_state, input of post_layernorm"},
    {TRACE_VISION, "vision.pooled", TK_VEC, TRACE_LAYER_POST, 2, 0,
     "post_layernorm(CLS) = pooler_output [Hv]"},
    {TRACE_VISION, "image_features", TK_VEC, TRACE_LAYER_POST, 3, 0,
     "visual_projection(pooled) [D] (get_image_features, unnormalised)"},
    {TRACE_VISION, "image_embeds", TK_VEC, TRACE_LAYER_POST, 4, 0,
     "image_features / norm2(image_features)"},
    {TRACE_TEXT, "text.input_ids", TK_IDS, TRACE_LAYER_PRE, 0, 1, "input_ids used [L]"},
    {TRACE_TEXT, "text.attention_mask", TK_IDS, TRACE_LAYER_PRE, 1, 1,
     "attention_mask used [L] (1 = real token)"},
    {TRACE_TEXT, "text.hidden_states", TK_STACK, TRACE_LAYER_PRE, 5, 0,
     "output_hidden_states [layers+1, L, Ht]; [0] = embeddings = token_embedding[ids] + "
     "position_embedding; [-1] = encoder output before final_layer_norm; rows past the real "
     "tokens are padding, never pooled"},
    {TRACE_TEXT, "text.final_layer_norm", TK_ROWS, TRACE_LAYER_POST, 0, 0,
     "final_layer_norm(hidden_states[-1]) = last_hidden_state [L, Ht]"},
    {TRACE_TEXT, "text.pool_index", TK_POOL_INDEX, TRACE_LAYER_POST, 1, 1,
     "the pooled position: argmax(input_ids) (legacy eos_token_id == 2) or the first EOS"},
    {TRACE_TEXT, "text.pooled", TK_VEC, TRACE_LAYER_POST, 2, 0,
     "last_hidden_state[pool_index] [Ht]"},
    {TRACE_TEXT, "text_features", TK_VEC, TRACE_LAYER_POST, 3, 0,
     "text_projection(pooled) [D] (get_text_features, unnormalised)"},
    {TRACE_TEXT, "text_embeds", TK_VEC, TRACE_LAYER_POST, 4, 0,
     "text_features / norm2(text_features)"},
};
#define N_NAMED (sizeof named / sizeof named[0])

/* "layer12.fc1" -> 12 and the part after the dot; -1 when `s` is not of that form. */
static int parse_layer(const char *s, const char **sub) {
    if (strncmp(s, "layer", 5) != 0) return -1;
    const char *p = s + 5;
    long v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 7) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (!digits || *p != '.' || (digits > 1 && s[5] == '0')) return -1;
    *sub = p + 1;
    return (int)v;
}

static trace_tower tower_of(const char *name) {
    if (!strncmp(name, "vision.", 7) || !strncmp(name, "image_", 6)) return TRACE_VISION;
    if (!strncmp(name, "text.", 5) || !strncmp(name, "text_", 5)) return TRACE_TEXT;
    return TRACE_OTHER;
}

void trace_name_parse(const char *name, trace_name *out) {
    memset(out, 0, sizeof *out);
    out->tower = tower_of(name);
    out->kind = TK_OTHER;
    out->layer = TRACE_LAYER_UNKNOWN;
    for (size_t i = 0; i < N_NAMED; i++)
        if (!strcmp(name, named[i].name)) {
            out->kind = named[i].kind;
            out->layer = named[i].layer;
            out->step = named[i].step;
            out->exact = named[i].exact;
            return;
        }
    if (out->tower == TRACE_OTHER) return;
    const char *dot = strchr(name, '.'), *sub;
    if (!dot) return;
    int layer = parse_layer(dot + 1, &sub);
    if (layer < 0) return;
    out->layer = layer;
    out->step = (int)N_LAYER_PARTS + 1; /* unknown part: after hidden_states[layer + 1] */
    for (size_t i = 0; i < N_LAYER_PARTS; i++)
        if (!strcmp(sub, layer_parts[i].sub)) {
            out->kind = layer_parts[i].kind;
            out->step = (int)i;
        }
}

void trace_name_stack_point(trace_tower tower, int k, trace_name *out) {
    memset(out, 0, sizeof *out);
    out->tower = tower;
    out->kind = TK_STACK;
    out->layer = k == 0 ? TRACE_LAYER_PRE : k - 1;
    out->step = k == 0 ? 5 : TRACE_STEP_HIDDEN;
}

void trace_point_label(const char *name, int k, char *buf, size_t cap) {
    if (k < 0)
        snprintf(buf, cap, "%s", name);
    else
        snprintf(buf, cap, "%s[%d]", name, k);
}

int trace_point_inputs(const char *name, int k, int stack_len, char out[2][128]) {
    trace_name tn;
    trace_name_parse(name, &tn);
    const char *P = tn.tower == TRACE_VISION ? "vision" : "text";
    char last[32];
    if (stack_len > 0)
        snprintf(last, sizeof last, "%d", stack_len - 1);
    else
        snprintf(last, sizeof last, "last");
    if (tn.tower == TRACE_OTHER) return 0;
    if (tn.kind == TK_STACK && k >= 0) {
        if (k == 0) {
            snprintf(out[0], 128, "%s", tn.tower == TRACE_VISION ? "vision.pre_layrnorm"
                                                                  : "text.input_ids");
            return 1;
        }
        snprintf(out[0], 128, "%s.layer%d.fc2", P, k - 1);
        snprintf(out[1], 128, "%s.hidden_states[%d]", P, k - 1);
        return 2;
    }
    if (tn.layer >= 0 && tn.layer < TRACE_LAYER_POST) {
        int K = tn.layer;
        static const char *const from[N_LAYER_PARTS][2] = {
            {"hidden_states", NULL},  {"layer_norm1", NULL},  {"layer_norm1", NULL},
            {"layer_norm1", NULL},    {"q_proj", "k_proj"},   {"attn_probs", "v_proj"},
            {"attn_context", NULL},   {"out_proj", "hidden_states"},
            {"layer_norm2", NULL},    {"fc1", NULL},
        };
        if (tn.step >= (int)N_LAYER_PARTS) return 0;
        int n = 0;
        for (int j = 0; j < 2 && from[tn.step][j]; j++, n++) {
            if (!strcmp(from[tn.step][j], "hidden_states"))
                snprintf(out[n], 128, "%s.hidden_states[%d]", P, K);
            else
                snprintf(out[n], 128, "%s.layer%d.%s", P, K, from[tn.step][j]);
        }
        return n;
    }
    static const char *const pairs[][3] = {
        {"vision.patch_conv", "vision.pixel_values", NULL},
        {"vision.embeddings", "vision.patch_conv", NULL},
        {"vision.pre_layrnorm", "vision.embeddings", NULL},
        {"vision.pooled_cls_pre_ln", "vision.hidden_states[*]", NULL},
        {"vision.pooled", "vision.pooled_cls_pre_ln", NULL},
        {"image_features", "vision.pooled", NULL},
        {"image_embeds", "image_features", NULL},
        {"text.final_layer_norm", "text.hidden_states[*]", NULL},
        {"text.pool_index", "text.input_ids", NULL},
        {"text.pooled", "text.final_layer_norm", "text.pool_index"},
        {"text_features", "text.pooled", NULL},
        {"text_embeds", "text_features", NULL},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (strcmp(name, pairs[i][0]) != 0) continue;
        int n = 0;
        for (int j = 1; j < 3 && pairs[i][j]; j++, n++) {
            const char *star = strstr(pairs[i][j], "[*]");
            if (star)
                snprintf(out[n], 128, "%.*s[%s]", (int)(star - pairs[i][j]), pairs[i][j], last);
            else
                snprintf(out[n], 128, "%s", pairs[i][j]);
        }
        return n;
    }
    return 0;
}

const char *trace_name_description(const char *name) {
    for (size_t i = 0; i < N_NAMED; i++)
        if (!strcmp(name, named[i].name)) return named[i].desc;
    trace_name tn;
    trace_name_parse(name, &tn);
    if (tn.layer >= 0 && tn.layer < TRACE_LAYER_POST && tn.step < (int)N_LAYER_PARTS)
        return layer_parts[tn.step].desc;
    return "a tensor outside the golden/debug naming convention";
}
