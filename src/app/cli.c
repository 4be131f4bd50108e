/* cli.c — the clipeval command line. Each subcommand is a thin layer over clip.h. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clip.h"
#include "json.h"
#include "npy.h"
#include "runinfo.h"
#include "scorer.h"
#include "serve.h"
#include "synth.h"
#include "compare.h"
#include "trace.h"
#include "util.h"

static int die(const clip_error *e) {
    fprintf(stderr, "clipeval: error: %s\n", e->msg);
    return 1;
}

static int usage_error(const char *cmd, const char *fmt, ...) CLIP_PRINTF(2, 3);
static int usage_error(const char *cmd, const char *fmt, ...) {
    fprintf(stderr, "clipeval %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(run `clipeval %s --help` for usage)\n", cmd);
    return 2;
}

/* Parses a non-negative int option value; -1 on error. */
static int parse_int(const char *s, int min, int max) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) return -1;
    return (int)v;
}

static int parse_device(const char *s, clip_device *d) { return clip_device_parse(s, d, NULL) == CLIP_OK; }

/* ------------------------------------------------------------------ synth */

static const char *synth_help =
    "usage: clipeval synth --config CONFIG.json [--seed SEED] --out DIR/model.safetensors\n"
    "Writes deterministic synthetic weights (golden/SYNTH_WEIGHTS.md) for a CLIP config, and a\n"
    "copy of the config as config.json next to them. SEED is decimal or 0x-hex (default 0x5EED).\n";

static int cmd_synth(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *seed_s = "0x5EED";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(synth_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config = argv[++i];
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed_s = argv[++i];
        } else {
            return usage_error("synth", "unknown or incomplete option '%s'", argv[i]);
        }
    }
    if (!config || !out) return usage_error("synth", "--config and --out are required%s", "");
    char *end;
    errno = 0;
    unsigned long long seed = strtoull(seed_s, &end, 0);
    if (errno || *end || !*seed_s) return usage_error("synth", "bad --seed '%s'", seed_s);
    clip_error e = {0};
    char *text;
    size_t len;
    if (clip_read_file(config, 16u << 20, &text, &len, &e)) return die(&e);
    /* The folder of --out gets config.json too, so it is a loadable model folder. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", out);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    if (clip_mkdir_p(dir, &e)) {
        free(text);
        return die(&e);
    }
    /* The weights first: an invalid config is refused before anything is written. */
    double t0 = clip_now();
    if (synth_write(config, (uint64_t)seed, out, &e)) {
        free(text);
        return die(&e);
    }
    char cfg_out[4200];
    snprintf(cfg_out, sizeof cfg_out, "%s/config.json", dir);
    FILE *f = fopen(cfg_out, "wb");
    if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
        free(text);
        fprintf(stderr, "clipeval: error: cannot write %s: %s\n", cfg_out, strerror(errno));
        return 1;
    }
    free(text);
    fprintf(stderr, "clipeval synth: wrote %s (seed 0x%llX) in %.1f s\n", out, seed,
            clip_now() - t0);
    return 0;
}

/* ------------------------------------------------------------------ shared input readers */

/* Reads a JSONL file of strings ("JSONL of strings": any text, newlines included, fits on one
 * line). Calls fn for each; blank lines are skipped; anything else is an error with its line. */
typedef int (*string_fn)(void *user, const char *s, size_t len, size_t line);

static int for_each_json_string(FILE *f, const char *what, string_fn fn, void *user) {
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = 0;
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t k = 0;
        while (k < len && (line[k] == ' ' || line[k] == '\t')) k++;
        if (k == len) continue;
        json_doc *d;
        clip_error e = {0};
        char where[256];
        snprintf(where, sizeof where, "%s line %zu", what, lineno);
        if (json_parse(line, len, where, 0, &d, &e)) {
            rc = die(&e);
            break;
        }
        const json_value *v = json_doc_root(d);
        if (v->type != JSON_STRING) {
            fprintf(stderr, "clipeval: error: %s: expected a JSON string, got %s\n", where,
                    json_type_name(v->type));
            rc = 1;
        } else {
            rc = fn(user, v->u.str.s, v->u.str.len, lineno);
        }
        json_doc_free(d);
    }
    free(line);
    return rc;
}

/* ------------------------------------------------------------------ embed */

static const char *embed_help =
    "usage: clipeval embed --model DIR|ID INPUT --out OUT.npy [--features]\n"
    "                      [--device cpu|cuda|auto] [--precision fp32|bf16|fp16] [--threads N]\n"
    "                      [--exif-transpose]\n"
    "INPUT is one of:\n"
    "  --pixel-values A.npy [B.npy ...]  float32 [3,S,S] or [N,3,S,S] preprocessed images\n"
    "  --images A.png [B.jpg ...]        image files, decoded and preprocessed like HF\n"
    "  --input-ids IDS.npy               int64 or int32 [N,L] (or [L]) token ids, L <= 77\n"
    "  --texts-file FILE                 one JSON string per line (JSONL of strings)\n"
    "--out: float32 [N,D] L2-normalised embeddings (CLIPModel.forward image_embeds/text_embeds),\n"
    "or with --features the unnormalised projections (get_image_features/get_text_features).\n";

typedef struct embed_args {
    const char *model, *out, *ids, *texts;
    const char **pix, **images;
    int npix, nimages;
    int features, threads, exif;
    clip_device device;
    clip_precision precision;
} embed_args;

static int load_pixels(const char **files, int nfiles, int S, float **data, int *count) {
    *data = NULL;
    *count = 0;
    size_t per = (size_t)3 * S * S, total = 0;
    float *buf = NULL;
    for (int f = 0; f < nfiles; f++) {
        npy_array a;
        clip_error e = {0};
        if (npy_load(files[f], &a, &e)) {
            free(buf);
            return die(&e);
        }
        int n = 0;
        if (a.ndim == 3 && a.shape[0] == 3 && a.shape[1] == (size_t)S && a.shape[2] == (size_t)S)
            n = 1;
        else if (a.ndim == 4 && a.shape[1] == 3 && a.shape[2] == (size_t)S &&
                 a.shape[3] == (size_t)S && a.shape[0] > 0 && a.shape[0] < (1u << 24))
            n = (int)a.shape[0];
        if (!n || (a.dtype != NPY_F32 && a.dtype != NPY_F64)) {
            fprintf(stderr,
                    "clipeval: error: %s: expected float32 pixel values of shape [3,%d,%d] or "
                    "[N,3,%d,%d] (dtype %s, %d dims)\n",
                    files[f], S, S, S, S, npy_dtype_name(a.dtype), a.ndim);
            npy_free(&a);
            free(buf);
            return 1;
        }
        float *nb = realloc(buf, (total + (size_t)n * per) * sizeof(float));
        if (!nb) {
            npy_free(&a);
            free(buf);
            fprintf(stderr, "clipeval: error: out of memory reading %s\n", files[f]);
            return 1;
        }
        buf = nb;
        if (a.dtype == NPY_F32)
            memcpy(buf + total, a.data, (size_t)n * per * sizeof(float));
        else
            for (size_t i = 0; i < (size_t)n * per; i++) buf[total + i] = (float)((double *)a.data)[i];
        total += (size_t)n * per;
        *count += n;
        npy_free(&a);
    }
    *data = buf;
    return 0;
}

static int load_images(const clip_model *m, const char **files, int nfiles, int exif,
                       float **data) {
    clip_image_config cfg;
    clip_error e = {0};
    if (clip_score_image_config(m, &cfg, &e)) return die(&e);
    int S = clip_model_get_info(m)->image_size;
    clip_decode_options d;
    clip_decode_options_init(&d);
    d.exif_transpose = exif;
    size_t per = (size_t)3 * S * S;
    float *buf = malloc(sizeof(float) * per * (size_t)nfiles);
    if (!buf) return 1;
    for (int i = 0; i < nfiles; i++)
        if (clip_preprocess_file(files[i], &cfg, &d, buf + per * i, &e)) {
            free(buf);
            return die(&e);
        }
    *data = buf;
    return 0;
}

static int load_ids(const char *file, int32_t **ids, int *n, int *len) {
    npy_array a;
    clip_error e = {0};
    if (npy_load(file, &a, &e)) return die(&e);
    if ((a.dtype != NPY_I64 && a.dtype != NPY_I32) || (a.ndim != 1 && a.ndim != 2) ||
        a.count == 0 || a.shape[a.ndim - 1] == 0 || a.shape[a.ndim - 1] > 65536 ||
        (a.ndim == 2 && a.shape[0] > (1u << 24))) {
        fprintf(stderr, "clipeval: error: %s: expected int64 or int32 token ids of shape [N,L] "
                        "(dtype %s, %d dims)\n", file, npy_dtype_name(a.dtype), a.ndim);
        npy_free(&a);
        return 1;
    }
    *len = (int)a.shape[a.ndim - 1];
    *n = a.ndim == 2 ? (int)a.shape[0] : 1;
    int32_t *v = malloc(sizeof(int32_t) * a.count);
    if (!v) {
        npy_free(&a);
        fprintf(stderr, "clipeval: error: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < a.count; i++) {
        long long x = a.dtype == NPY_I64 ? ((long long *)a.data)[i] : ((int32_t *)a.data)[i];
        if (x < INT32_MIN || x > INT32_MAX) x = -1; /* rejected by the range check later */
        v[i] = (int32_t)x;
    }
    npy_free(&a);
    *ids = v;
    return 0;
}

typedef struct texts_acc {
    const clip_tokenizer *tok;
    int L;
    int32_t *ids;
    int n, cap;
} texts_acc;

static int add_text(void *user, const char *s, size_t len, size_t line) {
    texts_acc *t = user;
    if (t->n == t->cap) {
        int ncap = t->cap ? t->cap * 2 : 64;
        int32_t *ni = realloc(t->ids, sizeof(int32_t) * (size_t)t->L * (size_t)ncap);
        if (!ni) {
            fprintf(stderr, "clipeval: error: out of memory at line %zu\n", line);
            return 1;
        }
        t->ids = ni;
        t->cap = ncap;
    }
    clip_error e = {0};
    if (clip_tokenize_batch(t->tok, &s, &len, 1, t->L, t->ids + (size_t)t->n * t->L, NULL, &e))
        return die(&e);
    t->n++;
    return 0;
}

static int load_texts(const char *model_dir, const char *file, int context, int32_t **ids, int *n,
                      int *len) {
    clip_tokenizer *tok;
    clip_error e = {0};
    if (clip_tokenizer_load(model_dir, &tok, &e)) return die(&e);
    FILE *f = strcmp(file, "-") ? fopen(file, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "clipeval: error: %s: cannot open: %s\n", file, strerror(errno));
        clip_tokenizer_free(tok);
        return 1;
    }
    int L = clip_tokenizer_max_length(tok);
    texts_acc t = {tok, L < context ? L : context, NULL, 0, 0};
    int rc = for_each_json_string(f, file, add_text, &t);
    if (f != stdin) fclose(f);
    clip_tokenizer_free(tok);
    if (!rc && t.n == 0) {
        fprintf(stderr, "clipeval: error: %s: no texts\n", file);
        rc = 1;
    }
    if (rc) {
        free(t.ids);
        return rc;
    }
    *ids = t.ids;
    *n = t.n;
    *len = t.L;
    return 0;
}

static int cmd_embed(int argc, char **argv) {
    embed_args a;
    memset(&a, 0, sizeof a);
    a.model = CLIP_DEFAULT_MODEL;
    a.device = CLIP_DEVICE_CPU;
    a.pix = calloc((size_t)argc + 1, sizeof *a.pix);
    a.images = calloc((size_t)argc + 1, sizeof *a.images);
    int rc = 0;
    if (!a.pix || !a.images) return 1;
    for (int i = 0; i < argc && !rc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(embed_help, stdout);
            rc = -1;
        } else if (!strcmp(o, "--model") && i + 1 < argc) {
            a.model = argv[++i];
        } else if (!strcmp(o, "--out") && i + 1 < argc) {
            a.out = argv[++i];
        } else if (!strcmp(o, "--input-ids") && i + 1 < argc) {
            a.ids = argv[++i];
        } else if (!strcmp(o, "--texts-file") && i + 1 < argc) {
            a.texts = argv[++i];
        } else if (!strcmp(o, "--pixel-values")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) a.pix[a.npix++] = argv[++i];
        } else if (!strcmp(o, "--images")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                a.images[a.nimages++] = argv[++i];
        } else if (!strcmp(o, "--features")) {
            a.features = 1;
        } else if (!strcmp(o, "--exif-transpose")) {
            a.exif = 1;
        } else if (!strcmp(o, "--threads") && i + 1 < argc) {
            if ((a.threads = parse_int(argv[++i], 1, 4096)) < 0)
                rc = usage_error("embed", "bad --threads '%s'", argv[i]);
        } else if (!strcmp(o, "--device") && i + 1 < argc) {
            if (!parse_device(argv[++i], &a.device))
                rc = usage_error("embed", "bad --device '%s' (cpu, cuda or auto)", argv[i]);
        } else if (!strcmp(o, "--precision") && i + 1 < argc) {
            clip_error pe;
            if (clip_precision_parse(argv[++i], &a.precision, &pe))
                rc = usage_error("embed", "%s", pe.msg);
        } else {
            rc = usage_error("embed", "unknown or incomplete option '%s'", o);
        }
    }
    int inputs = (a.npix > 0) + (a.nimages > 0) + (a.ids != NULL) + (a.texts != NULL);
    if (!rc && (inputs != 1 || !a.out))
        rc = usage_error("embed", "give --out and exactly one of --pixel-values, --images, "
                                  "--input-ids, --texts-file%s", "");
    clip_model *m = NULL;
    clip_error e = {0};
    if (!rc) {
        clip_model_options mo;
        clip_model_options_init(&mo);
        mo.device = a.device;
        mo.n_threads = a.threads;
        mo.precision = a.precision;
        if (clip_model_load(a.model, &mo, &m, &e)) rc = die(&e);
    }
    float *out = NULL;
    int n = 0;
    if (!rc) {
        const clip_model_info *info = clip_model_get_info(m);
        clip_encode_options eo = {a.features ? CLIP_EMBED_FEATURES : 0, NULL, NULL};
        if (a.npix || a.nimages) {
            float *pixels = NULL;
            rc = a.npix ? load_pixels(a.pix, a.npix, info->image_size, &pixels, &n)
                        : load_images(m, a.images, a.nimages, a.exif, &pixels);
            if (a.nimages) n = a.nimages;
            if (!rc && !(out = malloc(sizeof(float) * (size_t)n * info->embed_dim))) rc = 1;
            if (!rc && clip_encode_images(m, pixels, n, &eo, out, &e)) rc = die(&e);
            free(pixels);
        } else {
            int32_t *ids = NULL;
            int len = 0;
            rc = a.ids ? load_ids(a.ids, &ids, &n, &len)
                       : load_texts(info->dir, a.texts, info->context_length, &ids, &n, &len);
            if (!rc && !(out = malloc(sizeof(float) * (size_t)n * info->embed_dim))) rc = 1;
            if (!rc && clip_encode_texts(m, ids, n, len, &eo, out, &e)) rc = die(&e);
            free(ids);
        }
        if (!rc) {
            size_t shape[2] = {(size_t)n, (size_t)info->embed_dim};
            if (npy_save(a.out, NPY_F32, 2, shape, out, &e)) rc = die(&e);
        }
    }
    free(out);
    free(a.pix);
    free(a.images);
    clip_model_free(m);
    return rc < 0 ? 0 : rc;
}

/* ------------------------------------------------------------------ tokenize */

static const char *tokenize_help =
    "usage: clipeval tokenize [--model DIR|ID] [--max-length N] [--no-pad] [--no-truncate]\n"
    "Reads one JSON string per line on stdin; prints one JSON object per line:\n"
    "  {\"input_ids\":[...],\"attention_mask\":[...]}\n"
    "Without --max-length the full sequence is printed (BOS ... EOS). With it, the sequence is\n"
    "truncated (BOS + first N-2 + EOS) and padded to N, as CLIPProcessor(padding=\"max_length\",\n"
    "truncation=True, max_length=N) does; --no-pad / --no-truncate turn either off.\n";

typedef struct tok_state {
    const clip_tokenizer *tok;
    int max_length, flags;
    int32_t *ids, *mask;
    size_t cap;
    clip_buf out;
} tok_state;

static int tokenize_line(void *user, const char *s, size_t len, size_t line) {
    tok_state *t = user;
    clip_error e = {0};
    size_t n = 0;
    for (;;) {
        clip_status st = clip_tokenize(t->tok, s, len, t->max_length, t->flags, t->ids, t->mask,
                                       t->cap, &n, &e);
        if (st == CLIP_OK) break;
        if (st != CLIP_ERR_LIMIT || n <= t->cap) {
            fprintf(stderr, "clipeval: error: stdin line %zu: %s\n", line, e.msg);
            return 1;
        }
        int32_t *ni = realloc(t->ids, sizeof(int32_t) * n), *nm = realloc(t->mask, sizeof(int32_t) * n);
        if (ni) t->ids = ni;
        if (nm) t->mask = nm;
        if (!ni || !nm) return 1;
        t->cap = n;
    }
    t->out.len = 0;
    clip_buf_puts(&t->out, "{\"input_ids\":[");
    for (size_t i = 0; i < n; i++) clip_buf_printf(&t->out, "%s%d", i ? "," : "", (int)t->ids[i]);
    clip_buf_puts(&t->out, "],\"attention_mask\":[");
    for (size_t i = 0; i < n; i++) clip_buf_printf(&t->out, "%s%d", i ? "," : "", (int)t->mask[i]);
    clip_buf_puts(&t->out, "]}\n");
    if (t->out.oom || fwrite(t->out.data, 1, t->out.len, stdout) != t->out.len) return 1;
    return 0;
}

static int cmd_tokenize(int argc, char **argv) {
    const char *model = CLIP_DEFAULT_MODEL;
    int max_length = 0, pad = 1, trunc = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(tokenize_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--max-length") && i + 1 < argc) {
            if ((max_length = parse_int(argv[++i], 2, 1 << 24)) < 0)
                return usage_error("tokenize", "bad --max-length '%s' (at least 2)", argv[i]);
        } else if (!strcmp(argv[i], "--no-pad")) {
            pad = 0;
        } else if (!strcmp(argv[i], "--no-truncate")) {
            trunc = 0;
        } else {
            return usage_error("tokenize", "unknown or incomplete option '%s'", argv[i]);
        }
    }
    char dir[4096];
    clip_error e = {0};
    clip_tokenizer *tok;
    if (clip_resolve_model_dir(model, dir, sizeof dir, &e) || clip_tokenizer_load(dir, &tok, &e))
        return die(&e);
    tok_state t = {tok, max_length, (trunc ? CLIP_TOK_TRUNCATE : 0) | (pad ? CLIP_TOK_PAD : 0),
                   NULL, NULL, 0, {0}};
    t.cap = 256;
    t.ids = malloc(sizeof(int32_t) * t.cap);
    t.mask = malloc(sizeof(int32_t) * t.cap);
    int rc = t.ids && t.mask ? for_each_json_string(stdin, "stdin", tokenize_line, &t) : 1;
    if (fflush(stdout) != 0) rc = 1;
    free(t.ids);
    free(t.mask);
    clip_buf_free(&t.out);
    clip_tokenizer_free(tok);
    return rc;
}

/* ------------------------------------------------------------------ preprocess */

static const char *preprocess_help =
    "usage: clipeval preprocess [--model DIR|ID] IMAGE --out PIXELS.npy [--resized-out R.npy]\n"
    "                           [--exif-transpose] [--pillow-tall-rule]\n"
    "Decodes IMAGE like Pillow's Image.open(...).convert(\"RGB\") and preprocesses it like HF's\n"
    "CLIPImageProcessor with the model's preprocessor_config.json: PIXELS is float32 [3,S,S];\n"
    "R is the uint8 [H,W,3] image after the bicubic resize, before the centre crop.\n";

static int cmd_preprocess(int argc, char **argv) {
    const char *model = CLIP_DEFAULT_MODEL, *image = NULL, *out = NULL, *resized_out = NULL;
    clip_decode_options d;
    clip_decode_options_init(&d);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(preprocess_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--resized-out") && i + 1 < argc) {
            resized_out = argv[++i];
        } else if (!strcmp(argv[i], "--exif-transpose")) {
            d.exif_transpose = 1;
        } else if (!strcmp(argv[i], "--pillow-tall-rule")) {
            d.pillow_tall_rule = 1;
        } else if (argv[i][0] != '-' && !image) {
            image = argv[i];
        } else {
            return usage_error("preprocess", "unknown or incomplete option '%s'", argv[i]);
        }
    }
    if (!image || !out) return usage_error("preprocess", "IMAGE and --out are required%s", "");
    char dir[4096];
    clip_error e = {0};
    clip_image_config cfg;
    if (clip_resolve_model_dir(model, dir, sizeof dir, &e) || clip_image_config_load(dir, &cfg, &e))
        return die(&e);
    clip_image img = {0}, resized = {0};
    if (clip_image_decode_file(image, &d, &img, &e)) return die(&e);
    size_t n = (size_t)3 * cfg.crop_height * cfg.crop_width;
    float *px = malloc(sizeof(float) * n);
    int rc = px ? 0 : 1;
    if (!rc && clip_image_preprocess(&img, &cfg, &d, px, resized_out ? &resized : NULL, &e))
        rc = die(&e);
    if (!rc) {
        size_t shape[3] = {3, (size_t)cfg.crop_height, (size_t)cfg.crop_width};
        if (npy_save(out, NPY_F32, 3, shape, px, &e)) rc = die(&e);
    }
    if (!rc && resized_out) {
        size_t shape[3] = {(size_t)resized.height, (size_t)resized.width, 3};
        if (npy_save(resized_out, NPY_U8, 3, shape, resized.rgb, &e)) rc = die(&e);
    }
    free(px);
    clip_image_free(&img);
    clip_image_free(&resized);
    return rc;
}

/* ------------------------------------------------------------------ score */

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* The exit statuses of `clipeval score` (documented in --help and the README). */
enum {
    EXIT_OK = 0,
    EXIT_ERROR = 1,      /* nothing written: bad input, model, I/O... (the message says) */
    EXIT_USAGE = 2,      /* bad command line */
    EXIT_NO_IMAGE = 3,   /* output written, but no image could be read: every score is 0.0 */
    EXIT_STRICT = 4      /* --strict: output written, some rows failed (image or text) */
};

/* The parts of `score --help` and `filter --help` that are the same. */
#define TABLE_FILES_HELP                                                                        \
    "Files:\n"                                                                                  \
    "  IN and OUT are typed by their extension (.jsonl, .json, .csv). OUT's extension wins;\n"  \
    "  --cache-type must agree with it, and types an OUT without one (a device, a FIFO); else\n" \
    "  OUT has IN's type. `--input -` reads stdin and `--output -` writes stdout: their type\n"  \
    "  is --cache-type, which they require.\n"                                                  \
    "  FileStorage naming (DataFlow's FileStorage, operator step K, default 0): step 0 reads\n"  \
    "  --first-entry-file, step K >= 1 reads DIR/P_step{K}.{type}; both write DIR/P_step{K+1}.{type};\n" \
    "  type = --cache-type (default jsonl, as FileStorage), DIR ./cache, P dataflow_cache.\n"   \
    "  A regular OUT is written to a temporary file next to it and renamed into place when the\n" \
    "  run succeeds (a symlink is followed: it stays a link); a device, FIFO or stdout is\n"    \
    "  written directly.\n"

#define TABLE_OPTIONS_HELP                                                                      \
    "  --image-root DIR     resolve relative image paths against DIR (default: current dir)\n" \
    "  --model DIR|ID       model folder or HF model id (default " CLIP_DEFAULT_MODEL ")\n"     \
    "  --device D           auto|cpu|cuda (default auto: CUDA when built with it and present)\n" \
    "  --precision P        fp32 (default, the oracle), bf16 (CPU with AVX512-BF16, or CUDA),\n" \
    "                       fp16 (CUDA)\n"                                                      \
    "  --threads N          CPU threads for the model (default: all cores)\n"                   \
    "  --decode-threads N   image decoding threads (default: all cores)\n"                      \
    "  --batch-size N       images per forward call (default 32, at most "                     \
    STRINGIFY(CLIP_SCORE_MAX_BATCH) "; texts use 8x)\n"                                         \
    "  --cache-entries N    distinct images and texts whose embeddings are kept (default 65536)\n" \
    "  --per-row            DataFlow's own loop: batch 1, nothing reused (for comparison)\n"    \
    "  --pandas-compat      write exactly like pandas to_json/to_csv (10 decimals, \\/ ...)\n"  \
    "  --skip-invalid       copy invalid rows to OUT.rejects instead of stopping (OUT.rejects\n" \
    "                       exists after a run exactly when that run rejected rows)\n"          \
    "  --strict             exit 4 after writing the output when any row failed\n"              \
    "  --log-failures FILE  every failed row as JSONL: {\"line\", \"path\", \"reason\"}\n"     \
    "  --exif-transpose     apply EXIF orientation (DataFlow does not)\n"                       \
    "  --max-pixels N       refuse larger images (default 178956970, Pillow's limit)\n"         \
    "  --max-file-bytes N   refuse larger image files (default 1 GiB)\n"                        \
    "  --max-text-bytes N   longer texts fail with a warning (default 64 MiB)\n"                \
    "  --max-row-bytes N    a longer row is an invalid row (default 64 MiB)\n"                  \
    "  --max-json-depth N   a row nested deeper is an invalid row (default 1000)\n"             \
    "  --quiet              no progress line and no summary\n"

#define TABLE_EXIT_HELP(NO_IMAGE)                                                               \
    "Exit status:\n"                                                                            \
    "  0    success\n"                                                                          \
    "  1    error: nothing was written (the message says what and where)\n"                    \
    "  2    bad command line\n"                                                                 \
    "  3    no image could be read (a wrong --image-root?): the output is written, " NO_IMAGE  \
    ";\n       the message names the first failure\n"                                          \
    "  4    --strict and some rows failed: the output is written\n"                             \
    "  130, 143, 129  interrupted by SIGINT, SIGTERM, SIGHUP: temporary files removed, the\n"  \
    "       previous output intact (the shell's 128 + signal number)\n"

static const char *score_help =
    "usage: clipeval score --input IN --output OUT [options]\n"
    "   or: clipeval score --first-entry-file IN --cache-path DIR --file-name-prefix P\n"
    "                      [--cache-type jsonl|json|csv] [--step K] [options]\n"
    "Adds clip_score = clamp((cos(image, text) + 1) / 2, 0, 1) to every row of a JSONL/JSON/CSV\n"
    "table, exactly as DataFlow-MM's ImageCLIPEvaluator does.\n"
    TABLE_FILES_HELP
    "options:\n"
    "  --image-key K        image path column (default image_path)\n"
    "  --text-key K         text column (default text)\n"
    "  --output-key K       score column (default clip_score; replaced in place if present)\n"
    TABLE_OPTIONS_HELP
    "A row whose image cannot be read, whose image value is not a path or whose text is above\n"
    "--max-text-bytes scores 0.0 (DataFlow's rule); each distinct cause is warned once, with its\n"
    "row count, and summed up by reason at the end. The progress line (stderr, terminals only)\n"
    "counts rows actually scored and shows an ETA once the rate is steady.\n"
    TABLE_EXIT_HELP("every row 0.0");

static const char *filter_help =
    "usage: clipeval filter --mode threshold [--threshold T] --input IN --output OUT [options]\n"
    "   or: clipeval filter --mode keep-ratio [--keep-ratio R] --input IN --output OUT [options]\n"
    "   (or the FileStorage options instead of --input/--output, as in `clipeval score`)\n"
    "Keeps the rows of a JSONL/JSON/CSV table whose image matches their text, exactly as\n"
    "DataFlow-MM's CLIP filters do. cos = cosine of the L2-normalised CLIP embeddings.\n"
    "  --mode threshold   ImageClipFilter: similarity = clamp(cos, 0, 1); keeps the rows with\n"
    "                     similarity >= T (default 0.25), written unchanged (no score column).\n"
    "                     An unreadable image or an empty, blank or missing caption (or a\n"
    "                     falsy one: 0, false, []) gives 0.0, with a warning.\n"
    "  --mode keep-ratio  CLIPScoreFilter: similarity = cos (raw), NaN for an unreadable image\n"
    "                     or an empty text (question + answer); writes it in the --output-key\n"
    "                     column and keeps the rows with similarity >= np.percentile(the\n"
    "                     non-NaN similarities, (1 - R) * 100) (linear; R default 0.8, in\n"
    "                     [0, 1]): ties at the cut are all kept, NaN rows never. Reads the\n"
    "                     table twice; keeps 9 bytes per row in memory meanwhile.\n"
    TABLE_FILES_HELP
    "options:\n"
    "  --image-key K        image path column (default image)\n"
    "  --caption-key K      threshold: text column (default caption)\n"
    "  --question-key K     keep-ratio: question column (default question)\n"
    "  --answer-key K       keep-ratio: answer column (default answer); text = question + answer\n"
    "  --output-key K       keep-ratio: similarity column (default clipscore; replaced in place\n"
    "                       if present)\n"
    "  --scores-out FILE    every row's similarity as JSONL: {\"row\", \"line\", \"similarity\",\n"
    "                       \"status\", \"kept\"} (the value compared, as Python repr; null = NaN)\n"
    TABLE_OPTIONS_HELP
    "Where upstream crashes, clipeval filter gives a defined result (README, \"clipeval filter\"):\n"
    "a NaN or null caption is an empty text; a missing question or answer counts as \"\"; a\n"
    "caption over 77 tokens is truncated like every text; a table with no similarity at all\n"
    "gives an empty output and a warning.\n"
    TABLE_EXIT_HELP("no row kept\n       (unless the threshold is <= 0)");

/* The temporary files of this run, for the signal handler: the only state a handler may see. */
static files_registry g_temps;

/* SIGINT, SIGTERM, SIGHUP: remove the temporary files, then die of the same signal, so the
 * shell sees 128 + N and a script's loop stops as it should on Ctrl-C. Async-signal-safe. */
static void on_signal(int sig) {
    files_registry_unlink(&g_temps);
    static const char msg[] = "clipeval: interrupted: temporary files removed\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig); /* delivered as soon as the handler returns */
}

static void install_signals(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGHUP);
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        /* What was ignored stays ignored (nohup, a shell's background job), as Unix tools do. */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN && sigs[i] != SIGTERM)
            continue;
        sigaction(sigs[i], &sa, NULL);
    }
    /* Past a file-size limit (ulimit -f), write() must fail with EFBIG and be reported, not
     * kill the process with SIGXFSZ half-way. */
    signal(SIGXFSZ, SIG_IGN);
}

static int parse_size(const char *s, unsigned long long *out) {
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-') return 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return 0;
    *out = v;
    return 1;
}

/* The table type an output path's name gives: 1 with *fmt for .jsonl/.json/.csv, 0 when its
 * name has no extension clipeval knows (a device, a FIFO: the type comes from elsewhere), -1
 * for a table type clipeval cannot write (parquet, pickle, xlsx...). */
static int output_type(const char *path, table_format *fmt) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base) return 0;
    if (table_format_from_name(dot + 1, fmt)) return 1;
    static const char *const other[] = {"parquet", "pickle", "pkl", "xlsx", "xls", "feather"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (!strcmp(dot + 1, other[i])) return -1;
    return 0;
}

typedef struct score_paths {
    const char *input, *output, *first, *cache_path, *prefix, *cache_type;
    int step, step_given;
    char in_buf[4200], out_buf[4200];
} score_paths;

/* Input, output and their types, by the rules of score_help. Returns an exit status (0 = go). */
static int resolve_paths(const char *cmd, score_paths *p, clip_score_options *o) {
    clip_error e = {0};
    table_format ct = TABLE_JSONL;
    if (p->cache_type && !table_format_from_name(p->cache_type, &ct))
        return usage_error(cmd, "bad --cache-type '%s' (jsonl, json or csv)", p->cache_type);
    int filestorage = p->first || p->cache_path || p->prefix || p->step_given;
    if (filestorage) {
        if (p->input || p->output)
            return usage_error(cmd, "use either --input/--output or the FileStorage options "
                                        "(--first-entry-file, --cache-path, --file-name-prefix, "
                                        "--step)");
        const char *dir = p->cache_path ? p->cache_path : "./cache";
        const char *prefix = p->prefix ? p->prefix : "dataflow_cache";
        const char *type = table_format_name(ct); /* FileStorage's default cache_type: jsonl */
        if (p->step == 0) {
            if (!p->first)
                return usage_error(cmd, "step 0 reads --first-entry-file: give it (or --step "
                                            "K to read %s/%s_stepK.%s)", dir, prefix, type);
            p->input = p->first;
            if (table_format_from_path(p->input, &o->in_fmt, &e)) return die(&e);
        } else {
            int n = snprintf(p->in_buf, sizeof p->in_buf, "%s/%s_step%d.%s", dir, prefix, p->step,
                             type);
            if (n < 0 || (size_t)n >= sizeof p->in_buf)
                return usage_error(cmd, "input path too long");
            p->input = p->in_buf;
            o->in_fmt = ct;
        }
        int n = snprintf(p->out_buf, sizeof p->out_buf, "%s/%s_step%d.%s", dir, prefix,
                         p->step + 1, type);
        if (n < 0 || (size_t)n >= sizeof p->out_buf)
            return usage_error(cmd, "output path too long");
        p->output = p->out_buf;
        o->out_fmt = ct;
        return 0;
    }
    if (!p->input || !p->output)
        return usage_error(cmd, "give --input and --output (or the FileStorage options)");
    if (!strcmp(p->input, "-")) {
        if (!p->cache_type)
            return usage_error(cmd, "--input - reads stdin: give its type with --cache-type");
        o->in_fmt = ct;
    } else if (table_format_from_path(p->input, &o->in_fmt, &e)) {
        return die(&e);
    }
    if (!strcmp(p->output, "-")) {
        if (!p->cache_type)
            return usage_error(cmd, "--output - writes stdout: give its type with --cache-type");
        o->out_fmt = ct;
        return 0;
    }
    table_format ext;
    int known = output_type(p->output, &ext);
    if (known < 0)
        return usage_error(cmd, "%s: clipeval writes jsonl, json or csv, not '%s'", p->output,
                           strrchr(p->output, '.') + 1);
    if (known && p->cache_type && ext != ct)
        return usage_error(cmd, "--cache-type %s conflicts with the output's extension (%s): "
                                    "the extension decides; drop --cache-type or rename %s",
                           p->cache_type, table_format_name(ext), p->output);
    o->out_fmt = known ? ext : p->cache_type ? ct : o->in_fmt;
    return 0;
}


/* A finite number; 0 when s is not one. */
static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    if (!s || !*s) return 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

/* The options only `clipeval filter` has, as given (checked once --mode is known). */
typedef struct filter_args {
    const char *mode, *threshold, *keep_ratio, *caption_key, *question_key, *answer_key,
        *output_key;
    int text_key; /* --text-key was given */
} filter_args;

/* --mode and what goes with it: the keys' defaults are upstream's run() defaults. */
static int resolve_filter(filter_args *f, clip_score_options *o) {
    const char *cmd = "filter";
    if (!f->mode) return usage_error(cmd, "--mode threshold or --mode keep-ratio is required%s", "");
    o->image_key = o->image_key ? o->image_key : "image";
    if (!strcmp(f->mode, "threshold")) {
        o->mode = CLIP_MODE_THRESHOLD;
        const char *other = f->keep_ratio ? "--keep-ratio" : f->question_key ? "--question-key"
                            : f->answer_key ? "--answer-key" : f->output_key ? "--output-key" : NULL;
        if (other)
            return usage_error(cmd, "%s is for --mode keep-ratio (threshold mode writes the kept "
                                    "rows unchanged, without a score column)", other);
        o->text_key = f->caption_key ? f->caption_key : "caption";
        o->output_key = NULL;
        o->threshold = 0.25;
        if (f->threshold && !parse_double(f->threshold, &o->threshold))
            return usage_error(cmd, "bad --threshold '%s' (a finite number)", f->threshold);
    } else if (!strcmp(f->mode, "keep-ratio")) {
        o->mode = CLIP_MODE_KEEP_RATIO;
        const char *other = f->threshold ? "--threshold" : f->caption_key ? "--caption-key" : NULL;
        if (other) return usage_error(cmd, "%s is for --mode threshold", other);
        o->question_key = f->question_key ? f->question_key : "question";
        o->text_key = f->answer_key ? f->answer_key : "answer";
        o->output_key = f->output_key ? f->output_key : "clipscore";
        o->keep_ratio = 0.8;
        if (f->keep_ratio &&
            (!parse_double(f->keep_ratio, &o->keep_ratio) || o->keep_ratio < 0 || o->keep_ratio > 1))
            return usage_error(cmd, "bad --keep-ratio '%s' (a number in [0, 1]; numpy refuses "
                                    "percentiles outside [0, 100])", f->keep_ratio);
    } else {
        return usage_error(cmd, "bad --mode '%s' (threshold: ImageClipFilter, keep-ratio: "
                                "CLIPScoreFilter)", f->mode);
    }
    if (f->text_key)
        return usage_error(cmd, "--text-key: give the text column with %s",
                           o->mode == CLIP_MODE_THRESHOLD ? "--caption-key" : "--answer-key");
    if (!*o->text_key || (o->question_key && !*o->question_key) || (o->output_key && !*o->output_key))
        return usage_error(cmd, "a column name cannot be empty%s", "");
    return 0;
}

/* `clipeval score` and `clipeval filter`: the same options, files, limits and exit statuses;
 * filter adds --mode and its own. */
static int cmd_table(const char *cmd, int argc, char **argv) {
    int filter = !strcmp(cmd, "filter");
    clip_score_options o;
    clip_score_options_init(&o);
    o.command = cmd;
    if (filter) o.image_key = NULL; /* resolve_filter's default */
    score_paths p;
    memset(&p, 0, sizeof p);
    filter_args fa;
    memset(&fa, 0, sizeof fa);
    int strict = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long u;
#define VAL(name) (!strcmp(a, name) && v && ++i)
#define FVAL(name) (filter && VAL(name))
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(filter ? filter_help : score_help, stdout);
            return 0;
        } else if (VAL("--input")) {
            p.input = v;
        } else if (VAL("--output")) {
            p.output = v;
        } else if (VAL("--first-entry-file")) {
            p.first = v;
        } else if (VAL("--cache-path")) {
            p.cache_path = v;
        } else if (VAL("--file-name-prefix")) {
            p.prefix = v;
        } else if (VAL("--cache-type")) {
            p.cache_type = v;
        } else if (VAL("--step")) {
            if ((p.step = parse_int(v, 0, 1 << 30)) < 0) return usage_error(cmd, "bad --step '%s'", v);
            p.step_given = 1;
        } else if (VAL("--image-key")) {
            o.image_key = v;
        } else if (!filter && VAL("--text-key")) {
            o.text_key = v;
        } else if (!filter && VAL("--output-key")) {
            o.output_key = v;
        } else if (FVAL("--text-key")) {
            fa.text_key = 1;
        } else if (FVAL("--mode")) {
            fa.mode = v;
        } else if (FVAL("--threshold")) {
            fa.threshold = v;
        } else if (FVAL("--keep-ratio")) {
            fa.keep_ratio = v;
        } else if (FVAL("--caption-key")) {
            fa.caption_key = v;
        } else if (FVAL("--question-key")) {
            fa.question_key = v;
        } else if (FVAL("--answer-key")) {
            fa.answer_key = v;
        } else if (FVAL("--output-key")) {
            fa.output_key = v;
        } else if (FVAL("--scores-out")) {
            o.scores_out = v;
        } else if (VAL("--image-root")) {
            o.image_root = v;
        } else if (VAL("--model")) {
            o.model = v;
        } else if (VAL("--log-failures")) {
            o.log_failures = v;
        } else if (VAL("--device")) {
            if (!parse_device(v, &o.device)) return usage_error(cmd, "bad --device '%s'", v);
        } else if (VAL("--precision")) {
            clip_error pe;
            if (clip_precision_parse(v, &o.precision, &pe)) return usage_error(cmd, "%s", pe.msg);
        } else if (VAL("--threads")) {
            if ((o.threads = parse_int(v, 1, 4096)) < 0) return usage_error(cmd, "bad --threads '%s'", v);
        } else if (VAL("--decode-threads")) {
            if ((o.decode_threads = parse_int(v, 1, 4096)) < 0)
                return usage_error(cmd, "bad --decode-threads '%s'", v);
        } else if (VAL("--batch-size")) {
            if ((o.batch_size = parse_int(v, 1, CLIP_SCORE_MAX_BATCH)) < 0)
                return usage_error(cmd, "bad --batch-size '%s' (1..%d)", v, CLIP_SCORE_MAX_BATCH);
        } else if (VAL("--cache-entries")) {
            if (!parse_size(v, &u) || u == 0) return usage_error(cmd, "bad --cache-entries '%s'", v);
            o.cache_entries = (size_t)u;
        } else if (VAL("--max-pixels")) {
            if (!parse_size(v, &u) || u == 0) return usage_error(cmd, "bad --max-pixels '%s'", v);
            o.decode.max_pixels = u;
        } else if (VAL("--max-file-bytes")) {
            if (!parse_size(v, &u) || u == 0) return usage_error(cmd, "bad --max-file-bytes '%s'", v);
            o.decode.max_file_bytes = u;
        } else if (VAL("--max-text-bytes")) {
            if (!parse_size(v, &u) || u == 0) return usage_error(cmd, "bad --max-text-bytes '%s'", v);
            o.max_text_bytes = (size_t)u;
        } else if (VAL("--max-json-depth")) {
            if ((o.limits.max_depth = parse_int(v, 1, 100000)) < 0)
                return usage_error(cmd, "bad --max-json-depth '%s'", v);
        } else if (VAL("--max-row-bytes")) {
            if (!parse_size(v, &u) || u == 0) return usage_error(cmd, "bad --max-row-bytes '%s'", v);
            o.limits.max_row_bytes = (size_t)u;
        } else if (!strcmp(a, "--per-row")) {
            o.per_row = 1;
        } else if (!strcmp(a, "--pandas-compat")) {
            o.pandas_compat = 1;
        } else if (!strcmp(a, "--skip-invalid")) {
            o.skip_invalid = 1;
        } else if (!strcmp(a, "--strict")) {
            strict = 1;
        } else if (!strcmp(a, "--exif-transpose")) {
            o.decode.exif_transpose = 1;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
        } else {
            return usage_error(cmd, "unknown or incomplete option '%s'", a);
        }
#undef FVAL
#undef VAL
    }
    int rc = filter ? resolve_filter(&fa, &o) : 0;
    if (!rc) rc = resolve_paths(cmd, &p, &o);
    if (rc) return rc;
    const char *outs[3] = {p.output, o.log_failures, o.scores_out};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (outs[i] && outs[j] && !strcmp(outs[i], "-") && !strcmp(outs[j], "-"))
                return usage_error(cmd, "%s - and %s - would both write stdout",
                                   i == 0 ? "--output" : "--log-failures",
                                   j == 1 ? "--log-failures" : "--scores-out");
    o.input = p.input;
    o.output = p.output;
    o.registry = &g_temps;
    install_signals();
    clip_score_stats st;
    clip_error e = {0};
    if (clip_score_table(&o, &st, &e)) return die(&e);
    if (!o.quiet) {
        const char *dest = !strcmp(o.output, "-") ? "stdout" : o.output;
        if (o.mode == CLIP_MODE_SCORE)
            fprintf(stderr, "clipeval score: %zu rows, ", st.rows);
        else
            fprintf(stderr, "clipeval filter: %zu rows, %zu kept, %zu dropped; ", st.rows, st.kept,
                    st.rows - st.kept);
        fprintf(stderr,
                "%zu scored, %zu failed (image), %zu empty text, %zu refused (text too long), %zu "
                "rejected; %zu images + %zu texts encoded; %.2f s, %.1f rows/s -> %s\n",
                st.scored, st.image_failed, st.empty_text, st.text_failed, st.rejected,
                st.images_encoded, st.texts_encoded, st.seconds,
                st.seconds > 0 ? st.rows / st.seconds : 0.0, dest);
        char cut[40], ratio[40];
        clip_format_double_repr(st.cutoff, cut);
        clip_format_double_repr(o.keep_ratio, ratio);
        if (o.mode == CLIP_MODE_THRESHOLD)
            fprintf(stderr, "clipeval filter: kept the rows whose clamp(cos, 0, 1) >= %s\n", cut);
        else if (o.mode == CLIP_MODE_KEEP_RATIO && !isnan(st.cutoff))
            fprintf(stderr, "clipeval filter: kept the rows whose %s >= %s, np.percentile of the "
                            "%zu similarities at (1 - %s) * 100\n",
                    o.output_key, cut, st.scored, ratio);
        char line[512] = "";
        if (st.cpu) {
            clip_runtime_info ri;
            clip_runtime_info_get(&ri);
            runinfo_line(&ri, line, sizeof line);
        }
        fprintf(stderr, "clipeval %s: device %s%s%s\n", cmd, st.device, line[0] ? "; " : "", line);
        if (st.rejected && st.rejects_path[0])
            fprintf(stderr, "clipeval %s: %zu invalid rows copied to %s\n", cmd, st.rejected,
                    st.rejects_path);
    }
    if (st.image_failed && !st.images_read) {
        fprintf(stderr, "clipeval: error: no image could be read; first failure: %s%s\n",
                st.first_failure[0] ? st.first_failure : "?",
                st.first_relative && !o.image_root
                    ? " (relative paths are read from the current directory: set --image-root?)"
                    : "");
        fprintf(stderr, "clipeval: the output was written anyway (%s); exit status 3\n",
                o.mode == CLIP_MODE_SCORE ? "every row scored 0.0, as DataFlow does"
                : o.mode == CLIP_MODE_THRESHOLD
                    ? "every similarity is 0.0, as DataFlow gives it, so no row above a positive "
                      "threshold"
                    : "no row has a similarity, so it has no rows");
        return EXIT_NO_IMAGE;
    }
    if (strict && (st.image_failed || st.text_failed)) {
        fprintf(stderr, "clipeval: error: --strict: %zu rows failed (%zu image, %zu text); the "
                        "output was written; exit status 4\n",
                st.image_failed + st.text_failed, st.image_failed, st.text_failed);
        return EXIT_STRICT;
    }
    return EXIT_OK;
}

/* ------------------------------------------------------------------ info */

static int cmd_info(int argc, char **argv) {
    const char *model = CLIP_DEFAULT_MODEL;
    clip_model_options mo;
    clip_model_options_init(&mo);
    for (int i = 0; i < argc; i++) {
        clip_error pe;
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            if (!parse_device(argv[++i], &mo.device))
                return usage_error("info", "bad --device '%s' (cpu, cuda or auto)", argv[i]);
        } else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            if (clip_precision_parse(argv[++i], &mo.precision, &pe))
                return usage_error("info", "%s", pe.msg);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if ((mo.n_threads = parse_int(argv[++i], 1, 4096)) < 0)
                return usage_error("info", "bad --threads '%s'", argv[i]);
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            puts("usage: clipeval info [--model DIR|ID] [--device cpu|cuda|auto] [--precision P] "
                 "[--threads N]\nPrints where the model was found, its hyper-parameters, the "
                 "device, precision and matrix kernel it would run with, and what the CPU side "
                 "runs on (BLAS, its kernels, threads).");
            return 0;
        } else
            return usage_error("info", "unknown option '%s'", argv[i]);
    }
    clip_model *m;
    clip_error e = {0};
    double t0 = clip_now();
    if (clip_model_load(model, &mo, &m, &e)) return die(&e);
    double dt = clip_now() - t0;
    const clip_model_info *i = clip_model_get_info(m);
    printf("model folder   %s\n", i->dir);
    printf("vision         width %d, %d layers, %d heads, mlp %d, patch %d, image %d (%d positions)\n",
           i->vision_width, i->vision_layers, i->vision_heads, i->vision_mlp, i->patch_size,
           i->image_size, i->vision_positions);
    printf("text           width %d, %d layers, %d heads, mlp %d, context %d, vocab %d\n",
           i->text_width, i->text_layers, i->text_heads, i->text_mlp, i->context_length,
           i->vocab_size);
    printf("pooling        %s (eos_token_id %d)\n",
           i->eos_token_id == 2 ? "legacy argmax of ids" : "first eos_token_id", i->eos_token_id);
    printf("embedding dim  %d, logit_scale %.7g\n", i->embed_dim, (double)i->logit_scale);
    printf("device         %s, %s, %d threads%s%s\nload time      %.3f s\n", i->device,
           clip_precision_name(i->precision), i->n_threads, *i->cpu_kernel ? ", kernel " : "",
           i->cpu_kernel, dt);
    clip_runtime_info ri;
    clip_runtime_info_get(&ri);
    char line[512];
    runinfo_line(&ri, line, sizeof line);
    printf("cpu runtime    %s\n", line);
    runinfo_warn(&ri, stderr);
    clip_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ main */

static const char *main_help =
    "clipeval " CLIP_VERSION " — OpenAI CLIP in C, equal to Hugging Face transformers\n"
    "usage: clipeval COMMAND [options]   (clipeval COMMAND --help for details)\n"
    "commands:\n"
    "  score       add clip_score to a JSONL/JSON/CSV table (DataFlow ImageCLIPEvaluator)\n"
    "  filter      keep the rows that match their image (DataFlow ImageClipFilter,\n"
    "              CLIPScoreFilter)\n"
    "  embed       embeddings of images, texts, pixel tensors or token ids (.npy out)\n"
    "  tokenize    HF CLIP tokenizer: JSONL of strings in, input_ids/attention_mask out\n"
    "  preprocess  decode + preprocess an image exactly like Pillow + CLIPImageProcessor\n"
    "  serve       HTTP server: OpenAI-compatible embeddings, scores, metrics\n"
    "  synth       write deterministic synthetic weights for a config\n"
    "  info        show where a model is found and its hyper-parameters\n"
    "  trace       write every intermediate tensor of one input (golden/debug layout)\n"
    "  compare     compare two trace folders: the first tensor out of tolerance\n";

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(main_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        puts("clipeval " CLIP_VERSION);
        return 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "synth")) return cmd_synth(argc - 2, argv + 2);
    if (!strcmp(cmd, "embed")) return cmd_embed(argc - 2, argv + 2);
    if (!strcmp(cmd, "score") || !strcmp(cmd, "filter")) return cmd_table(cmd, argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "preprocess")) return cmd_preprocess(argc - 2, argv + 2);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "trace")) return trace_command(argc - 2, argv + 2);
    if (!strcmp(cmd, "compare")) return compare_command(argc - 2, argv + 2);
    if (!strcmp(cmd, "serve")) return serve_main(argc - 2, argv + 2);
    fprintf(stderr, "clipeval: unknown command '%s'\n%s", cmd, main_help);
    return 2;
}
