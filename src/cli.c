/* cli.c — the clipeval command line. Each subcommand is a thin layer over clip.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"
#include "model_internal.h"
#include "npy.h"
#include "util.h"

#define DEFAULT_MODEL "openai/clip-vit-base-patch32"

static int die(const clip_error *e) {
    fprintf(stderr, "clipeval: error: %s\n", e->msg);
    return 1;
}

static int usage_error(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "clipeval %s: ", cmd);
    fprintf(stderr, fmt, arg ? arg : "");
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

static int parse_device(const char *s, clip_device *d) {
    if (!strcmp(s, "cpu"))
        *d = CLIP_DEVICE_CPU;
    else if (!strcmp(s, "cuda"))
        *d = CLIP_DEVICE_CUDA;
    else if (!strcmp(s, "auto"))
        *d = CLIP_DEVICE_AUTO;
    else
        return 0;
    return 1;
}

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
    clip_config cfg;
    char *text;
    size_t len;
    if (clip_read_file(config, 16u << 20, &text, &len, &e)) return die(&e);
    if (clip_config_parse(text, len, config, &cfg, &e)) {
        free(text);
        return die(&e);
    }
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
    char cfg_out[4200];
    snprintf(cfg_out, sizeof cfg_out, "%s/config.json", dir);
    FILE *f = fopen(cfg_out, "wb");
    if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
        free(text);
        fprintf(stderr, "clipeval: error: cannot write %s: %s\n", cfg_out, strerror(errno));
        return 1;
    }
    free(text);
    double t0 = clip_now();
    if (clip_synth_write(&cfg, (uint64_t)seed, out, &e)) return die(&e);
    fprintf(stderr, "clipeval synth: wrote %s (seed 0x%llX) in %.1f s\n", out, seed,
            clip_now() - t0);
    return 0;
}

/* ------------------------------------------------------------------ embed */

static const char *embed_help =
    "usage: clipeval embed --model DIR|ID (--pixel-values A.npy [B.npy ...] | --input-ids IDS.npy)\n"
    "                      --out OUT.npy [--features] [--device cpu|cuda|auto] [--threads N]\n"
    "  --pixel-values  float32 [3,S,S] or [N,3,S,S] preprocessed images (S = model image size)\n"
    "  --input-ids     int64 or int32 [N,L] (or [L]) token ids, L <= 77, right-padded\n"
    "  --out           float32 [N,D]: L2-normalised embeddings (CLIPModel.forward image_embeds /\n"
    "                  text_embeds), or with --features the unnormalised projections\n"
    "                  (get_image_features / get_text_features)\n";

typedef struct embed_args {
    const char *model, *out, *ids;
    const char **pix;
    int npix;
    int features, threads;
    clip_device device;
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

static int write_embeddings(const char *path, const float *out, int n, int dim) {
    size_t shape[2] = {(size_t)n, (size_t)dim};
    clip_error e = {0};
    if (npy_save(path, NPY_F32, 2, shape, out, &e)) return die(&e);
    return 0;
}

static int cmd_embed(int argc, char **argv) {
    embed_args a = {DEFAULT_MODEL, NULL, NULL, NULL, 0, 0, 0, CLIP_DEVICE_CPU};
    const char **pix = calloc((size_t)argc + 1, sizeof *pix);
    if (!pix) return 1;
    a.pix = pix;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(embed_help, stdout);
            free(pix);
            return 0;
        } else if (!strcmp(o, "--model") && i + 1 < argc) {
            a.model = argv[++i];
        } else if (!strcmp(o, "--out") && i + 1 < argc) {
            a.out = argv[++i];
        } else if (!strcmp(o, "--input-ids") && i + 1 < argc) {
            a.ids = argv[++i];
        } else if (!strcmp(o, "--pixel-values")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) pix[a.npix++] = argv[++i];
        } else if (!strcmp(o, "--features")) {
            a.features = 1;
        } else if (!strcmp(o, "--threads") && i + 1 < argc) {
            if ((a.threads = parse_int(argv[++i], 1, 4096)) < 0) {
                free(pix);
                return usage_error("embed", "bad --threads '%s'", argv[i]);
            }
        } else if (!strcmp(o, "--device") && i + 1 < argc) {
            if (!parse_device(argv[++i], &a.device)) {
                free(pix);
                return usage_error("embed", "bad --device '%s' (cpu, cuda or auto)", argv[i]);
            }
        } else {
            free(pix);
            return usage_error("embed", "unknown or incomplete option '%s'", o);
        }
    }
    int inputs = (a.npix > 0) + (a.ids != NULL);
    if (inputs != 1 || !a.out) {
        free(pix);
        return usage_error("embed", "give --out and exactly one of --pixel-values, --input-ids%s",
                           "");
    }
    clip_model_options mo;
    clip_model_options_init(&mo);
    mo.device = a.device;
    mo.n_threads = a.threads;
    clip_model *m;
    clip_error e = {0};
    if (clip_model_load(a.model, &mo, &m, &e)) {
        free(pix);
        return die(&e);
    }
    const clip_model_info *info = clip_model_get_info(m);
    clip_encode_options eo = {a.features ? CLIP_EMBED_FEATURES : 0, NULL, NULL};
    int rc = 0, n = 0;
    float *out = NULL;
    if (a.npix) {
        float *pixels;
        rc = load_pixels(a.pix, a.npix, info->image_size, &pixels, &n);
        if (!rc) {
            out = malloc(sizeof(float) * (size_t)n * info->embed_dim);
            if (!out)
                rc = 1;
            else if (clip_encode_images(m, pixels, n, &eo, out, &e))
                rc = die(&e);
            free(pixels);
        }
    } else {
        int32_t *ids;
        int len;
        rc = load_ids(a.ids, &ids, &n, &len);
        if (!rc) {
            out = malloc(sizeof(float) * (size_t)n * info->embed_dim);
            if (!out)
                rc = 1;
            else if (clip_encode_texts(m, ids, n, len, &eo, out, &e))
                rc = die(&e);
            free(ids);
        }
    }
    if (!rc) rc = write_embeddings(a.out, out, n, info->embed_dim);
    free(out);
    free(pix);
    clip_model_free(m);
    return rc;
}

/* ------------------------------------------------------------------ info */

static int cmd_info(int argc, char **argv) {
    const char *model = DEFAULT_MODEL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            puts("usage: clipeval info [--model DIR|ID]\nPrints where the model was found and its "
                 "hyper-parameters.");
            return 0;
        } else
            return usage_error("info", "unknown option '%s'", argv[i]);
    }
    clip_model *m;
    clip_error e = {0};
    double t0 = clip_now();
    if (clip_model_load(model, NULL, &m, &e)) return die(&e);
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
    printf("device         %s\nload time      %.3f s\n", i->device, dt);
    clip_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ main */

static const char *main_help =
    "clipeval " CLIP_VERSION " — OpenAI CLIP in C, equal to Hugging Face transformers\n"
    "usage: clipeval COMMAND [options]   (clipeval COMMAND --help for details)\n"
    "commands:\n"
    "  embed       embeddings of pixel tensors or token ids (.npy in, .npy out)\n"
    "  synth       write deterministic synthetic weights for a config\n"
    "  info        show where a model is found and its hyper-parameters\n";

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
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
    fprintf(stderr, "clipeval: unknown command '%s'\n%s", cmd, main_help);
    return 2;
}
