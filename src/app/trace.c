/* trace.c — `clipeval trace` (see trace.h).
 *
 * The engine reports its intermediates through clip_encode_options.trace, one call per tensor
 * and item, as [rows, cols] float32 blocks. This file only reshapes them into the golden/debug
 * layout: the stacked hidden_states [L+1, N, H], patch_conv as the Conv2d output [D, g, g],
 * attention probabilities [heads, N, N] and 1-D pooled/projected vectors; and adds the inputs
 * (pixel values, token ids, attention mask, pool index) so the folder is self-contained. */
#include "trace.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clip.h"
#include "json.h"
#include "npy.h"
#include "trace_names.h"
#include "util.h"

static const char *trace_help =
    "usage: clipeval trace --model DIR|ID INPUT... --out DIR [--device cpu|cuda|auto]\n"
    "                      [--precision fp32|bf16|fp16] [--threads N] [--exif-transpose] "
    "[--force]\n"
    "Runs one image and/or one text through the model and writes every intermediate tensor as\n"
    "DIR/<name>.npy plus DIR/manifest.json, with the names, shapes and conventions of\n"
    "golden/debug (Hugging Face CLIPModel, batch dimension dropped): vision.patch_conv,\n"
    "vision.embeddings, vision.pre_layrnorm, vision.hidden_states [L+1,N,H], per layer K\n"
    "vision.layerK.{layer_norm1,q_proj,k_proj,v_proj,attn_probs,attn_context,out_proj,\n"
    "layer_norm2,fc1,fc2}, vision.pooled_cls_pre_ln, vision.pooled, image_features,\n"
    "image_embeds; the text equivalents with text.input_ids, text.attention_mask,\n"
    "text.final_layer_norm, text.pool_index, text.pooled, text_features, text_embeds; and the\n"
    "input vision.pixel_values. Compare two such folders with `clipeval compare`.\n"
    "INPUT: at most one image input and at most one text input:\n"
    "  --image FILE           decoded and preprocessed like CLIPImageProcessor (the model's\n"
    "                         preprocessor_config.json)\n"
    "  --pixel-values P.npy   float32 [3,S,S] or [1,3,S,S]; [N,3,S,S] with --image-index K\n"
    "  --text \"...\"           tokenized with the model's tokenizer, truncated and padded to 77\n"
    "                         like CLIPProcessor(padding=\"max_length\", truncation=True)\n"
    "  --input-ids IDS.npy    int64/int32 [L] or [1,L]; [N,L] with --text-index K\n"
    "Text tensors have one row per position of the (padded) sequence; rows after the pooled\n"
    "token see only the causal mask here (HF also masks padded keys), so only the real tokens'\n"
    "rows are comparable: `clipeval compare` compares those.\n"
    "--threads N: CPU threads (default 1: one input is little work and the time goes to\n"
    "writing the files; other counts agree to float rounding, not bit for bit).\n"
    "--force replaces the *.npy files and manifest.json of a previous trace in DIR.\n";

/* ------------------------------------------------------------------ collecting */

typedef struct rec {
    char name[96];
    int rows, cols;
    float *data;
} rec;

struct trace_recorder {
    rec *v;
    size_t n, cap;
    int failed;
    char why[256];
};

trace_recorder *trace_recorder_new(void) { return calloc(1, sizeof(trace_recorder)); }

void trace_recorder_free(trace_recorder *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) free(c->v[i].data);
    free(c->v);
    free(c);
}

/* The trace callback cannot return an error, so a failure is recorded and reported by
 * trace_write_folder. */
void trace_record(void *user, const char *name, int item, const float *data, int rows,
                  int cols) {
    trace_recorder *c = user;
    if (item != 0 || c->failed) return;
    size_t count;
    if (rows <= 0 || cols <= 0 || strlen(name) >= sizeof c->v[0].name ||
        !clip_mul_size((size_t)rows, (size_t)cols, &count)) {
        c->failed = 1;
        snprintf(c->why, sizeof c->why, "the engine traced '%.96s' as %d x %d values", name, rows,
                 cols);
        return;
    }
    rec *r = NULL;
    for (size_t i = 0; i < c->n; i++) /* a repeated name replaces the earlier block */
        if (!strcmp(c->v[i].name, name)) r = &c->v[i];
    if (!r) {
        if (c->n == c->cap) {
            size_t ncap = c->cap ? c->cap * 2 : 64;
            rec *nv = realloc(c->v, sizeof(rec) * ncap);
            if (!nv) {
                c->failed = 1;
                snprintf(c->why, sizeof c->why, "out of memory tracing %.96s", name);
                return;
            }
            c->v = nv;
            c->cap = ncap;
        }
        r = &c->v[c->n++];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "%s", name);
    }
    free(r->data);
    r->data = malloc(sizeof(float) * count);
    if (!r->data) {
        c->failed = 1;
        snprintf(c->why, sizeof c->why, "out of memory tracing %.96s (%zu floats)", name, count);
        return;
    }
    memcpy(r->data, data, sizeof(float) * count);
    r->rows = rows;
    r->cols = cols;
}

/* ------------------------------------------------------------------ output tensors */

typedef struct out_tensor {
    char name[96];
    npy_dtype dtype;
    int ndim;
    size_t shape[4];
    void *data; /* owned */
    trace_name pos;
} out_tensor;

typedef struct out_list {
    out_tensor *v;
    size_t n, cap;
} out_list;

/* Appends a tensor, taking ownership of `data` (freed here on failure). */
static int out_add(out_list *l, const char *name, npy_dtype dtype, int ndim, const size_t *shape,
                   void *data) {
    if (!data) return 0;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        out_tensor *nv = realloc(l->v, sizeof(out_tensor) * ncap);
        if (!nv) {
            free(data);
            return 0;
        }
        l->v = nv;
        l->cap = ncap;
    }
    out_tensor *t = &l->v[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    trace_name_parse(name, &t->pos);
    return 1;
}

static void out_free(out_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i].data);
    free(l->v);
}

static int forward_order(const void *pa, const void *pb) {
    const out_tensor *a = pa, *b = pb;
    if (a->pos.tower != b->pos.tower) return a->pos.tower < b->pos.tower ? -1 : 1;
    if (a->pos.layer != b->pos.layer) return a->pos.layer < b->pos.layer ? -1 : 1;
    if (a->pos.step != b->pos.step) return a->pos.step < b->pos.step ? -1 : 1;
    return strcmp(a->name, b->name);
}

static void *dup_floats(const float *src, size_t n) {
    float *d = malloc(sizeof(float) * (n ? n : 1));
    if (d) memcpy(d, src, sizeof(float) * n);
    return d;
}

/* "vision.hidden_states.K" blocks -> one [K, rows, cols] tensor. */
static clip_status stack_hidden(const trace_recorder *c, const char *tower, out_list *l,
                                clip_error *err) {
    char prefix[64];
    int plen = snprintf(prefix, sizeof prefix, "%s.hidden_states.", tower);
    int n = 0, rows = 0, cols = 0;
    for (size_t i = 0; i < c->n; i++)
        if (!strncmp(c->v[i].name, prefix, (size_t)plen)) {
            if (n == 0) {
                rows = c->v[i].rows;
                cols = c->v[i].cols;
            }
            n++;
        }
    if (n == 0) return CLIP_OK;
    size_t per = (size_t)rows * (size_t)cols;
    float *d = clip_malloc(sizeof(float) * per * (size_t)n, "stacked hidden states", err);
    if (!d) return CLIP_ERR_NOMEM;
    for (int k = 0; k < n; k++) {
        char want[96];
        snprintf(want, sizeof want, "%s%d", prefix, k);
        const rec *r = NULL;
        for (size_t i = 0; i < c->n; i++)
            if (!strcmp(c->v[i].name, want)) r = &c->v[i];
        if (!r || r->rows != rows || r->cols != cols) {
            free(d);
            return clip_fail(err, CLIP_ERR_FORMAT,
                             "the engine traced %d %s.hidden_states blocks, but %s is %s", n,
                             tower, want, r ? "of another shape" : "missing");
        }
        memcpy(d + per * (size_t)k, r->data, sizeof(float) * per);
    }
    char name[96];
    snprintf(name, sizeof name, "%s.hidden_states", tower);
    size_t shape[3] = {(size_t)n, (size_t)rows, (size_t)cols};
    if (!out_add(l, name, NPY_F32, 3, shape, d))
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory listing the traced tensors");
    return CLIP_OK;
}

/* Every engine block except the hidden states, in the golden layout. */
static clip_status convert_blocks(const trace_recorder *c, const clip_model_info *info,
                                  out_list *l, clip_error *err) {
    int g = info->patch_size > 0 ? info->image_size / info->patch_size : 0;
    for (size_t i = 0; i < c->n; i++) {
        const rec *r = &c->v[i];
        if (strstr(r->name, ".hidden_states.")) continue;
        trace_name tn;
        trace_name_parse(r->name, &tn);
        size_t rows = (size_t)r->rows, cols = (size_t)r->cols, count = rows * cols;
        int ok;
        if (tn.kind == TK_PATCH && g > 0 && rows == (size_t)g * g) {
            /* ours: one row per patch [g*g, D]; HF: the Conv2d output [D, g, g] */
            float *d = malloc(sizeof(float) * count);
            if (d)
                for (size_t p = 0; p < rows; p++)
                    for (size_t k = 0; k < cols; k++) d[k * rows + p] = r->data[p * cols + k];
            size_t shape[3] = {cols, (size_t)g, (size_t)g};
            ok = out_add(l, r->name, NPY_F32, 3, shape, d);
        } else if (tn.kind == TK_PROBS && rows % cols == 0) {
            size_t shape[3] = {rows / cols, cols, cols}; /* [heads * N, N] -> [heads, N, N] */
            ok = out_add(l, r->name, NPY_F32, 3, shape, dup_floats(r->data, count));
        } else if (tn.kind == TK_VEC && rows == 1) {
            size_t shape[1] = {cols};
            ok = out_add(l, r->name, NPY_F32, 1, shape, dup_floats(r->data, count));
        } else {
            size_t shape[2] = {rows, cols};
            ok = out_add(l, r->name, NPY_F32, 2, shape, dup_floats(r->data, count));
        }
        if (!ok) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory converting %s", r->name);
    }
    return CLIP_OK;
}

/* ------------------------------------------------------------------ inputs */

static int fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "clipeval: error: ");
    fprintf(stderr, fmt, a, b ? b : "");
    fputc('\n', stderr);
    return 1;
}

/* Parses a non-negative int; -1 on error. */
static int parse_index(const char *s) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > (1L << 30)) return -1;
    return (int)v;
}

/* One image of a pixel_values file: [C,S,S], [1,C,S,S], or [N,C,S,S] with index. */
static int load_pixel_values(const char *path, int index, const clip_model_info *info,
                             float *out) {
    npy_array a;
    clip_error e = {0};
    if (npy_load(path, &a, &e)) return fail("%s%s", e.msg, NULL);
    size_t C = (size_t)info->num_channels, S = (size_t)info->image_size, per = C * S * S;
    size_t n = 0;
    if (a.ndim == 3 && a.shape[0] == C && a.shape[1] == S && a.shape[2] == S)
        n = 1;
    else if (a.ndim == 4 && a.shape[1] == C && a.shape[2] == S && a.shape[3] == S)
        n = a.shape[0];
    int rc = 0;
    if (n == 0 || (a.dtype != NPY_F32 && a.dtype != NPY_F64)) {
        fprintf(stderr,
                "clipeval: error: %s: expected float32 pixel values [%zu,%zu,%zu] or "
                "[N,%zu,%zu,%zu] for this model (got %s, %d dims)\n",
                path, C, S, S, C, S, S, npy_dtype_name(a.dtype), a.ndim);
        rc = 1;
    } else if (index < 0 && n > 1) {
        fprintf(stderr, "clipeval: error: %s holds %zu images: choose one with --image-index K\n",
                path, n);
        rc = 1;
    } else if (index >= 0 && (size_t)index >= n) {
        fprintf(stderr, "clipeval: error: --image-index %d: %s holds %zu image%s\n", index, path,
                n, n == 1 ? "" : "s");
        rc = 1;
    } else {
        size_t off = per * (size_t)(index < 0 ? 0 : index);
        for (size_t i = 0; i < per; i++)
            out[i] = a.dtype == NPY_F32 ? ((const float *)a.data)[off + i]
                                        : (float)((const double *)a.data)[off + i];
    }
    npy_free(&a);
    return rc;
}

/* One row of an input_ids file: [L], [1,L], or [N,L] with index. */
static int load_input_ids(const char *path, int index, const clip_model_info *info, int32_t *out,
                          int *len) {
    npy_array a;
    clip_error e = {0};
    if (npy_load(path, &a, &e)) return fail("%s%s", e.msg, NULL);
    int rc = 0;
    size_t L = a.ndim >= 1 ? a.shape[a.ndim - 1] : 0, n = a.ndim == 2 ? a.shape[0] : 1;
    if ((a.dtype != NPY_I64 && a.dtype != NPY_I32) || (a.ndim != 1 && a.ndim != 2) || L == 0 ||
        n == 0) {
        fprintf(stderr, "clipeval: error: %s: expected int64 or int32 token ids [L] or [N,L] "
                        "(got %s, %d dims)\n", path, npy_dtype_name(a.dtype), a.ndim);
        rc = 1;
    } else if (L > (size_t)info->context_length) {
        fprintf(stderr, "clipeval: error: %s: %zu positions, the model has %d "
                        "(max_position_embeddings)\n", path, L, info->context_length);
        rc = 1;
    } else if (index < 0 && n > 1) {
        fprintf(stderr, "clipeval: error: %s holds %zu texts: choose one with --text-index K\n",
                path, n);
        rc = 1;
    } else if (index >= 0 && (size_t)index >= n) {
        fprintf(stderr, "clipeval: error: --text-index %d: %s holds %zu text%s\n", index, path, n,
                n == 1 ? "" : "s");
        rc = 1;
    } else {
        size_t off = L * (size_t)(index < 0 ? 0 : index);
        for (size_t i = 0; i < L && !rc; i++) {
            long long v = a.dtype == NPY_I64 ? ((const int64_t *)a.data)[off + i]
                                             : ((const int32_t *)a.data)[off + i];
            if (v < 0 || v >= info->vocab_size) {
                fprintf(stderr, "clipeval: error: %s: token id %lld at position %zu is outside "
                                "the vocabulary [0, %d)\n", path, v, i, info->vocab_size);
                rc = 1;
            }
            out[i] = (int32_t)v;
        }
        *len = (int)L;
    }
    npy_free(&a);
    return rc;
}

/* ------------------------------------------------------------------ the folder */

static int is_trace_file(const char *n) {
    size_t l = strlen(n);
    return !strcmp(n, "manifest.json") || (l > 4 && !strcmp(n + l - 4, ".npy"));
}

/* Checks that DIR is absent or an empty folder; with `apply`, creates it, and with --force
 * first removes the files of an earlier trace (*.npy, manifest.json) and nothing else. The
 * check runs before the model is loaded, the changes only once the trace is ready. */
static int prepare_out_dir(const char *dir, int force, int apply) {
    clip_error e = {0};
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (apply && clip_mkdir_p(dir, &e)) return fail("%s%s", e.msg, NULL);
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) return fail("--out %s exists and is not a folder%s", dir, NULL);
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "clipeval: error: %s: cannot list: %s\n", dir, strerror(errno));
        return 1;
    }
    struct dirent *de;
    int rc = 0, others = 0;
    while (!rc && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (!force || !is_trace_file(de->d_name)) {
            others++;
            continue;
        }
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (apply && remove(p) != 0) {
            fprintf(stderr, "clipeval: error: %s: cannot remove: %s\n", p, strerror(errno));
            rc = 1;
        }
    }
    closedir(d);
    if (!rc && others && !force)
        rc = fail("--out %s is not empty (--force replaces the *.npy files and manifest.json of "
                  "an earlier trace)%s", dir, NULL);
    return rc;
}

static void json_str(clip_buf *b, const char *s) { json_write_string(b, s, strlen(s), 0); }

static clip_status write_manifest(const char *dir, const clip_model_info *info,
                                  const out_list *l, const trace_inputs *in, int text_len,
                                  clip_error *err) {
    clip_buf b = {0};
    clip_buf_puts(&b, "{\n \"generator\": \"clipeval trace\",\n \"clipeval_version\": ");
    json_str(&b, clip_version());
    clip_buf_puts(&b, ",\n \"conventions\": \"golden/debug/README.md: Hugging Face CLIPModel names "
                      "and layouts, batch dimension dropped\",\n \"model\": ");
    json_str(&b, info->dir ? info->dir : "");
    clip_buf_puts(&b, ",\n \"device\": ");
    json_str(&b, info->device ? info->device : "");
    clip_buf_printf(&b, ",\n \"precision\": \"%s\",\n \"threads\": %d,\n \"dtype\": \"float32\","
                        "\n \"batch\": 1,\n", clip_precision_name(info->precision),
                    info->n_threads);
    clip_buf_printf(&b,
                    " \"config\": {\"vision\": {\"hidden_size\": %d, \"num_hidden_layers\": %d, "
                    "\"num_attention_heads\": %d, \"intermediate_size\": %d, \"image_size\": %d, "
                    "\"patch_size\": %d, \"num_channels\": %d}, \"text\": {\"hidden_size\": %d, "
                    "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
                    "\"intermediate_size\": %d, \"max_position_embeddings\": %d, \"vocab_size\": "
                    "%d, \"eos_token_id\": %d}, \"projection_dim\": %d},\n",
                    info->vision_width, info->vision_layers, info->vision_heads, info->vision_mlp,
                    info->image_size, info->patch_size, info->num_channels, info->text_width,
                    info->text_layers, info->text_heads, info->text_mlp, info->context_length,
                    info->vocab_size, info->eos_token_id, info->embed_dim);
    const char *keys[3] = {"image", "text", "input_ids"};
    const char *vals[3] = {in->image, in->text, in->input_ids};
    for (int i = 0; i < 3; i++)
        if (vals[i]) {
            clip_buf_printf(&b, " \"%s\": ", keys[i]);
            json_str(&b, vals[i]);
            clip_buf_puts(&b, ",\n");
        }
    if (in->ids) {
        clip_buf_printf(&b, " \"text_len\": %d,\n \"pool_index\": %d,\n \"attention_mask\": ",
                        text_len, in->pool);
        json_str(&b, in->mask_source ? in->mask_source : "given");
        clip_buf_puts(&b, ",\n \"text_rows\": \"one row per position; rows after pool_index run "
                          "under the causal mask only (HF also masks padded keys): compare rows "
                          "0..pool_index\",\n");
    }
    clip_buf_puts(&b, " \"files\": {");
    for (size_t i = 0; i < l->n; i++) {
        const out_tensor *t = &l->v[i];
        char fname[128];
        snprintf(fname, sizeof fname, "%s.npy", t->name);
        clip_buf_puts(&b, i ? ",\n  " : "\n  ");
        json_str(&b, fname);
        clip_buf_puts(&b, ": {\"shape\": [");
        for (int k = 0; k < t->ndim; k++) clip_buf_printf(&b, "%s%zu", k ? ", " : "", t->shape[k]);
        clip_buf_printf(&b, "], \"dtype\": \"%s\", \"description\": ",
                        t->dtype == NPY_F32 ? "float32" : "int64");
        json_str(&b, trace_name_description(t->name));
        clip_buf_puts(&b, "}");
    }
    clip_buf_puts(&b, "\n }\n}\n");
    char path[4400];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    clip_status st = CLIP_OK;
    FILE *f = b.oom ? NULL : fopen(path, "wb");
    if (b.oom) {
        st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory writing %s", path);
    } else if (!f || fwrite(b.data, 1, b.len, f) != b.len || fclose(f) != 0) {
        st = clip_fail(err, CLIP_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        if (f) remove(path);
    }
    clip_buf_free(&b);
    return st;
}

clip_status trace_write_folder(const trace_recorder *r, const trace_inputs *in,
                               const clip_model_info *info, const char *dir, size_t *n_files,
                               size_t *bytes, clip_error *err) {
    if (r->failed) return clip_fail(err, CLIP_ERR_FORMAT, "%s", r->why);
    out_list l = {0};
    int text_len = 0;
    clip_status st = CLIP_OK;
    if (in->pixels) {
        size_t per = (size_t)info->num_channels * info->image_size * info->image_size;
        size_t shape[3] = {(size_t)info->num_channels, (size_t)info->image_size,
                           (size_t)info->image_size};
        if (!out_add(&l, "vision.pixel_values", NPY_F32, 3, shape, dup_floats(in->pixels, per)))
            st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    if (!st && in->ids) {
        size_t L = (size_t)in->len, sl[1] = {L}, s1[1] = {1};
        int64_t *i64 = malloc(sizeof(int64_t) * (L ? L : 1));
        int64_t *m64 = malloc(sizeof(int64_t) * (L ? L : 1)), *p64 = malloc(sizeof(int64_t));
        if (i64 && m64 && p64) {
            for (size_t i = 0; i < L; i++) {
                i64[i] = in->ids[i];
                m64[i] = in->mask ? in->mask[i] : (int)i <= in->pool;
                text_len += m64[i] != 0;
            }
            p64[0] = in->pool;
        }
        /* pool_index is [1]: torch's argmax over [1, L] ids, as golden/debug stores it */
        int ok = out_add(&l, "text.input_ids", NPY_I64, 1, sl, i64);
        ok = out_add(&l, "text.attention_mask", NPY_I64, 1, sl, m64) && ok;
        ok = out_add(&l, "text.pool_index", NPY_I64, 1, s1, p64) && ok;
        if (!ok) st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    if (!st) st = stack_hidden(r, "vision", &l, err);
    if (!st) st = stack_hidden(r, "text", &l, err);
    if (!st) st = convert_blocks(r, info, &l, err);
    size_t total = 0;
    if (!st) {
        qsort(l.v, l.n, sizeof *l.v, forward_order);
        for (size_t i = 0; i < l.n && !st; i++) {
            out_tensor *t = &l.v[i];
            char path[4400];
            snprintf(path, sizeof path, "%s/%s.npy", dir, t->name);
            st = npy_save(path, t->dtype, t->ndim, t->shape, t->data, err);
            size_t cnt = 1;
            for (int k = 0; k < t->ndim; k++) cnt *= t->shape[k];
            total += cnt * (t->dtype == NPY_F32 ? 4 : 8);
        }
    }
    if (!st) st = write_manifest(dir, info, &l, in, text_len, err);
    if (n_files) *n_files = st ? 0 : l.n;
    if (bytes) *bytes = st ? 0 : total;
    out_free(&l);
    return st;
}

/* ------------------------------------------------------------------ the command */

typedef struct trace_args {
    const char *model, *image, *pixels, *text, *ids, *out;
    int image_index, text_index, threads, exif, force;
    clip_device device;
    clip_precision precision;
} trace_args;

static int usage(const char *fmt, const char *arg) {
    fprintf(stderr, "clipeval trace: ");
    fprintf(stderr, fmt, arg ? arg : "");
    fprintf(stderr, "\n(run `clipeval trace --help` for usage)\n");
    return 2;
}

static int parse_args(int argc, char **argv, trace_args *a) {
    memset(a, 0, sizeof *a);
    a->model = "openai/clip-vit-base-patch32";
    a->image_index = a->text_index = -1;
    a->threads = 1;
    a->device = CLIP_DEVICE_CPU;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL(name) (!strcmp(o, name) && v && ++i)
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(trace_help, stdout);
            return -1;
        } else if (VAL("--model")) {
            a->model = v;
        } else if (VAL("--image")) {
            a->image = v;
        } else if (VAL("--pixel-values")) {
            a->pixels = v;
        } else if (VAL("--text")) {
            a->text = v;
        } else if (VAL("--input-ids")) {
            a->ids = v;
        } else if (VAL("--out")) {
            a->out = v;
        } else if (VAL("--image-index")) {
            if ((a->image_index = parse_index(v)) < 0) return usage("bad --image-index '%s'", v);
        } else if (VAL("--text-index")) {
            if ((a->text_index = parse_index(v)) < 0) return usage("bad --text-index '%s'", v);
        } else if (VAL("--threads")) {
            if ((a->threads = parse_index(v)) < 1 || a->threads > 4096)
                return usage("bad --threads '%s'", v);
        } else if (VAL("--device")) {
            if (clip_device_parse(v, &a->device, NULL))
                return usage("bad --device '%s' (cpu, cuda or auto)", v);
        } else if (VAL("--precision")) {
            clip_error e = {0};
            if (clip_precision_parse(v, &a->precision, &e)) return usage("--precision: %s", e.msg);
        } else if (!strcmp(o, "--exif-transpose")) {
            a->exif = 1;
        } else if (!strcmp(o, "--force")) {
            a->force = 1;
        } else {
            return usage("unknown or incomplete option '%s'", o);
        }
#undef VAL
    }
    if (!a->out) return usage("--out DIR is required%s", "");
    if (a->image && a->pixels)
        return usage("give one image input: --image or --pixel-values%s", "");
    if (a->text && a->ids) return usage("give one text input: --text or --input-ids%s", "");
    if (!a->image && !a->pixels && !a->text && !a->ids)
        return usage("give an input: --image, --pixel-values, --text and/or --input-ids%s", "");
    if (a->image_index >= 0 && !a->pixels) return usage("--image-index needs --pixel-values%s", "");
    if (a->text_index >= 0 && !a->ids) return usage("--text-index needs --input-ids%s", "");
    return 0;
}

/* Tokenizes --text like CLIPProcessor(padding="max_length", truncation=True, max_length=77). */
static int tokenize_text(const clip_model_info *info, const char *text, int32_t *ids,
                         int32_t *mask, int *len) {
    clip_tokenizer *tok;
    clip_error e = {0};
    if (clip_tokenizer_load(info->dir, &tok, &e)) return fail("%s%s", e.msg, NULL);
    int L = clip_tokenizer_max_length(tok);
    if (L > info->context_length) L = info->context_length;
    size_t n = 0;
    clip_status st = clip_tokenize(tok, text, strlen(text), L, CLIP_TOK_TRUNCATE | CLIP_TOK_PAD,
                                   ids, mask, (size_t)L, &n, &e);
    clip_tokenizer_free(tok);
    if (st) return fail("--text: %s%s", e.msg, NULL);
    *len = (int)n;
    return 0;
}

int trace_command(int argc, char **argv) {
    trace_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    double t0 = clip_now();
    if (prepare_out_dir(a.out, a.force, 0)) return 1;
    clip_model_options mo;
    clip_model_options_init(&mo);
    mo.device = a.device;
    mo.n_threads = a.threads;
    mo.precision = a.precision;
    clip_model *m = NULL;
    clip_error e = {0};
    if (clip_model_load(a.model, &mo, &m, &e)) return fail("%s%s", e.msg, NULL);
    const clip_model_info *info = clip_model_get_info(m);
    size_t per = (size_t)info->num_channels * info->image_size * info->image_size;
    int ctx = info->context_length;
    float *pixels = NULL;
    int32_t *ids = NULL, *mask = NULL;
    float *emb = malloc(sizeof(float) * (size_t)info->embed_dim);
    trace_recorder *rec = trace_recorder_new();
    trace_inputs in = {0};
    char image_desc[4200] = "", ids_desc[4200] = "";
    clip_encode_options eo = {0, trace_record, rec};
    if (!emb || !rec) rc = fail("out of memory%s%s", "", NULL);
    /* the image */
    if (!rc && (a.image || a.pixels)) {
        if (!(pixels = malloc(sizeof(float) * per))) rc = fail("out of memory%s%s", "", NULL);
        if (!rc && a.image) {
            clip_image_config cfg;
            clip_decode_options d;
            clip_decode_options_init(&d);
            d.exif_transpose = a.exif;
            if (clip_image_config_load(info->dir, &cfg, &e))
                rc = fail("%s%s", e.msg, NULL);
            else if (cfg.crop_height != info->image_size || cfg.crop_width != info->image_size) {
                fprintf(stderr, "clipeval: error: %s: crop size %dx%d does not match the model's "
                                "image_size %d\n", info->dir, cfg.crop_width, cfg.crop_height,
                        info->image_size);
                rc = 1;
            } else if (clip_preprocess_file(a.image, &cfg, &d, pixels, &e)) {
                rc = fail("%s%s", e.msg, NULL);
            }
            snprintf(image_desc, sizeof image_desc, "%s", a.image);
        } else if (!rc) {
            rc = load_pixel_values(a.pixels, a.image_index, info, pixels);
            if (a.image_index >= 0)
                snprintf(image_desc, sizeof image_desc, "%s[%d]", a.pixels, a.image_index);
            else
                snprintf(image_desc, sizeof image_desc, "%s", a.pixels);
        }
        if (!rc && clip_encode_images(m, pixels, 1, &eo, emb, &e)) rc = fail("%s%s", e.msg, NULL);
        in.pixels = pixels;
        in.image = image_desc;
    }
    /* the text */
    if (!rc && (a.text || a.ids)) {
        ids = malloc(sizeof(int32_t) * (size_t)ctx);
        mask = malloc(sizeof(int32_t) * (size_t)ctx);
        if (!ids || !mask) rc = fail("out of memory%s%s", "", NULL);
        if (!rc && a.text) {
            rc = tokenize_text(info, a.text, ids, mask, &in.len);
            in.mask = mask;
            in.mask_source = "from the tokenizer";
            in.text = a.text;
        } else if (!rc) {
            rc = load_input_ids(a.ids, a.text_index, info, ids, &in.len);
            if (a.text_index >= 0)
                snprintf(ids_desc, sizeof ids_desc, "%s[%d]", a.ids, a.text_index);
            else
                snprintf(ids_desc, sizeof ids_desc, "%s", a.ids);
            /* HF's mask is 1 for the real tokens: BOS .. the pooled EOS */
            in.mask_source = "derived from the ids: 1 for positions 0..pool_index";
            in.input_ids = ids_desc;
        }
        if (!rc) {
            in.ids = ids;
            in.pool = clip_text_pool_index(m, ids, in.len);
            if (clip_encode_texts(m, ids, 1, in.len, &eo, emb, &e)) rc = fail("%s%s", e.msg, NULL);
        }
    }
    size_t n_files = 0, bytes = 0;
    if (!rc) rc = prepare_out_dir(a.out, a.force, 1);
    if (!rc && trace_write_folder(rec, &in, info, a.out, &n_files, &bytes, &e))
        rc = fail("%s%s", e.msg, NULL);
    if (!rc)
        fprintf(stderr, "clipeval trace: %zu tensors (%.1f MB) in %s, %.2f s (%s, %s)\n", n_files,
                (double)bytes / 1e6, a.out, clip_now() - t0, info->device,
                clip_precision_name(info->precision));
    trace_recorder_free(rec);
    free(pixels);
    free(ids);
    free(mask);
    free(emb);
    clip_model_free(m);
    return rc;
}
