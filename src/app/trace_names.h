/* trace_names.h — the tensor names of a trace folder (golden/debug/README.md, from HF's
 * CLIPModel): what each name holds, where it sits in the forward pass, what it is computed
 * from. `clipeval trace` writes these names; `clipeval compare` orders and explains by them. */
#ifndef CLIPEVAL_TRACE_NAMES_H
#define CLIPEVAL_TRACE_NAMES_H

#include <stddef.h>

typedef enum trace_tower { TRACE_VISION = 0, TRACE_TEXT = 1, TRACE_OTHER = 2 } trace_tower;

/* The layout family of a name; compare normalises layouts per family. */
typedef enum trace_kind {
    TK_PIXELS,     /* vision.pixel_values [3, S, S] (an input) */
    TK_IDS,        /* text.input_ids, text.attention_mask [L] (inputs, exact) */
    TK_POOL_INDEX, /* text.pool_index [1] (exact) */
    TK_PATCH,      /* vision.patch_conv [D, g, g] */
    TK_ROWS,       /* [N, C]: one row per token */
    TK_ROWS_HEADS, /* q_proj, k_proj, v_proj, attn_context: [N, H], may come split into heads */
    TK_PROBS,      /* attn_probs [heads, N, N] */
    TK_STACK,      /* hidden_states [layers + 1, N, H] */
    TK_VEC,        /* pooled, features, embeds [C] */
    TK_OTHER       /* a name outside the convention: compared as it is */
} trace_kind;

/* Forward-pass position: (tower, layer, step) orders every tensor; stacked hidden_states[k]
 * sit at (layer k-1, TRACE_STEP_HIDDEN), hidden_states[0] before layer 0. */
#define TRACE_LAYER_PRE (-1)
#define TRACE_LAYER_POST (1 << 20)
#define TRACE_LAYER_UNKNOWN (1 << 21)
#define TRACE_STEP_HIDDEN 10

typedef struct trace_name {
    trace_tower tower;
    trace_kind kind;
    int layer;   /* TRACE_LAYER_PRE, 0.., TRACE_LAYER_POST, TRACE_LAYER_UNKNOWN */
    int step;    /* order within the layer */
    int exact;   /* integers that must match exactly (ids, mask, pool index) */
} trace_name;

/* Classifies a name ("vision.layer5.fc1", "text.hidden_states", "image_embeds"...). Every
 * string gets an answer: names outside the convention are TK_OTHER, ordered last. */
void trace_name_parse(const char *name, trace_name *out);

/* The position of element k of a stacked hidden_states tensor of `tower`. */
void trace_name_stack_point(trace_tower tower, int k, trace_name *out);

/* Writes "vision.hidden_states[6]" style labels, for a stacked index (k >= 0) or the name. */
void trace_point_label(const char *name, int k, char *buf, size_t cap);

/* What the tensor at (name, stacked index k or -1) is computed from, as up to 2 point labels in
 * the form trace_point_label writes ("vision.layer5.layer_norm2", "text.hidden_states[3]").
 * `stack_len` is the number of stacked hidden states of that tower (0 when unknown; needed for
 * the tensors after the last layer). Returns how many were written (0 for inputs). */
int trace_point_inputs(const char *name, int k, int stack_len, char out[2][128]);

/* One line saying what `name` holds (the golden/debug/README.md description). */
const char *trace_name_description(const char *name);

#endif
