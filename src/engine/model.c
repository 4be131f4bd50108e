/* model.c — finding and loading a CLIP model (config.json + model.safetensors), and the public
 * encode entry points that validate input and pick the backend. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "util.h"

void clip_model_options_init(clip_model_options *opt) {
    opt->device = CLIP_DEVICE_CPU;
    opt->n_threads = 0;
    opt->precision = CLIP_PRECISION_FP32;
    opt->cpu_kernel = CLIP_CPU_KERNEL_AUTO;
}

clip_status clip_device_parse(const char *name, clip_device *out, clip_error *err) {
    static const struct {
        const char *name;
        clip_device dev;
    } all[] = {{"cpu", CLIP_DEVICE_CPU}, {"cuda", CLIP_DEVICE_CUDA}, {"auto", CLIP_DEVICE_AUTO}};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, all[i].name)) {
            *out = all[i].dev;
            return CLIP_OK;
        }
    return clip_fail(err, CLIP_ERR_ARG, "bad device '%.64s' (cpu, cuda or auto)",
                     name ? name : "(null)");
}

const char *clip_precision_name(clip_precision p) {
    switch (p) {
    case CLIP_PRECISION_FP32: return "fp32";
    case CLIP_PRECISION_BF16: return "bf16";
    case CLIP_PRECISION_FP16: return "fp16";
    }
    return "unknown";
}

clip_status clip_precision_parse(const char *name, clip_precision *out, clip_error *err) {
    static const clip_precision all[] = {CLIP_PRECISION_FP32, CLIP_PRECISION_BF16,
                                         CLIP_PRECISION_FP16};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, clip_precision_name(all[i]))) {
            *out = all[i];
            return CLIP_OK;
        }
    return clip_fail(err, CLIP_ERR_ARG, "unknown precision '%.64s' (fp32, bf16 or fp16)",
                     name ? name : "(null)");
}

/* ------------------------------------------------------------------ HF cache */

static void hub_cache_dir(char *out, size_t cap) {
    const char *e = getenv("HF_HUB_CACHE");
    if (!e || !*e) e = getenv("HUGGINGFACE_HUB_CACHE"); /* the older name, still honoured by HF */
    if (e && *e) {
        snprintf(out, cap, "%s", e);
        return;
    }
    e = getenv("HF_HOME");
    if (e && *e) {
        snprintf(out, cap, "%s/hub", e);
        return;
    }
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && *xdg) {
        snprintf(out, cap, "%s/huggingface/hub", xdg);
        return;
    }
    const char *home = getenv("HOME");
    snprintf(out, cap, "%s/.cache/huggingface/hub", home && *home ? home : ".");
}

/* "org/name" -> "models--org--name"; 0 if `name` cannot be a model id. */
static int repo_folder_name(const char *id, char *out, size_t cap) {
    size_t n = strlen(id);
    if (n == 0 || n > 200 || id[0] == '/' || id[0] == '.' || id[n - 1] == '/') return 0;
    int slashes = 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (c == '/') {
            if (++slashes > 1) return 0;
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.')) {
            return 0;
        }
    }
    if (strstr(id, "..") || strstr(id, "--")) return 0;
    size_t o = (size_t)snprintf(out, cap, "models--");
    for (size_t i = 0; i < n && o + 3 < cap; i++) {
        if (id[i] == '/') {
            out[o++] = '-';
            out[o++] = '-';
        } else {
            out[o++] = id[i];
        }
    }
    out[o] = '\0';
    return 1;
}

clip_status clip_resolve_model_dir(const char *name, char *dir, size_t dir_cap, clip_error *err) {
    if (!name || !*name) return clip_fail(err, CLIP_ERR_ARG, "no model given");
    if (clip_is_dir(name)) {
        if ((size_t)snprintf(dir, dir_cap, "%s", name) >= dir_cap)
            return clip_fail(err, CLIP_ERR_ARG, "model path too long: %s", name);
        return CLIP_OK;
    }
    char cache[2048], repo[512], base[3000];
    hub_cache_dir(cache, sizeof cache);
    if (!repo_folder_name(name, repo, sizeof repo))
        return clip_fail(err, CLIP_ERR_NOT_FOUND,
                         "model '%s' not found: it is not a folder, and not a valid Hugging Face model "
                         "id (org/name)", name);
    snprintf(base, sizeof base, "%s/%s", cache, repo);
    char ref_path[3100], rev[256] = "";
    snprintf(ref_path, sizeof ref_path, "%s/refs/main", base);
    FILE *f = fopen(ref_path, "r");
    if (f) {
        if (!fgets(rev, sizeof rev, f)) rev[0] = '\0';
        fclose(f);
        rev[strcspn(rev, " \r\n")] = '\0';
        if (strchr(rev, '/') || !strcmp(rev, "..")) rev[0] = '\0';
    }
    char snap[3400];
    if (rev[0]) {
        snprintf(snap, sizeof snap, "%s/snapshots/%s", base, rev);
        if (clip_is_dir(snap)) {
            if ((size_t)snprintf(dir, dir_cap, "%s", snap) >= dir_cap)
                return clip_fail(err, CLIP_ERR_ARG, "model path too long: %s", snap);
            return CLIP_OK;
        }
    }
    return clip_fail(err, CLIP_ERR_NOT_FOUND,
                     "model '%s' not found: not a local folder, and not in the Hugging Face cache "
                     "(looked for %s/refs/main -> snapshots/<revision>; cache from HF_HUB_CACHE, "
                     "else HF_HOME/hub, else ~/.cache/huggingface/hub). Download it with "
                     "`weights_tools/hf_download.sh %s` (or `huggingface-cli download %s`), or pass "
                     "a folder holding config.json and model.safetensors",
                     name, base, name, name);
}

/* ------------------------------------------------------------------ loading */

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3FF) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static clip_status keep_owned(clip_model *m, float *p, clip_error *err) {
    float **n = realloc(m->owned, sizeof(float *) * (m->n_owned + 1));
    if (!n) {
        free(p);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    m->owned = n;
    m->owned[m->n_owned++] = p;
    return CLIP_OK;
}

/* Finds a tensor, checks its shape against the spec and gives float32 data: in place for
 * aligned F32, converted for F16/BF16/F64. */
static clip_status bind(clip_model *m, const clip_tensor_info *spec, const float **out,
                        clip_error *err) {
    const st_tensor *t = st_find(&m->file, spec->name);
    if (!t)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor '%s' is missing", m->file.path,
                         spec->name);
    int ok = t->ndim == spec->ndim;
    for (int d = 0; ok && d < spec->ndim; d++) ok = t->shape[d] == (uint64_t)spec->shape[d];
    if (!ok) {
        char want[96] = "", got[160] = "";
        size_t wl = 0, gl = 0;
        for (int d = 0; d < spec->ndim; d++)
            wl += (size_t)snprintf(want + wl, sizeof want - wl, "%s%lld", d ? "," : "",
                                   (long long)spec->shape[d]);
        for (int d = 0; d < t->ndim && gl < sizeof got - 24; d++)
            gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s%llu", d ? "," : "",
                                   (unsigned long long)t->shape[d]);
        return clip_fail(err, CLIP_ERR_FORMAT,
                         "%s: tensor '%s' has shape [%s], but config.json implies [%s]",
                         m->file.path, spec->name, got, want);
    }
    size_t n = (size_t)t->nelem;
    if (t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = (const float *)t->data;
        return CLIP_OK;
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
        return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                         "%s: tensor '%s' has dtype %s; clipeval reads F32, F16, BF16 and F64",
                         m->file.path, spec->name, st_dtype_name(t->dtype));
    float *dst = malloc((n ? n : 1) * sizeof(float));
    if (!dst)
        return clip_fail(err, CLIP_ERR_NOMEM, "%s: cannot allocate %zu floats for '%s'",
                         m->file.path, n, spec->name);
    const unsigned char *src = t->data;
    for (size_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case ST_F32: memcpy(&dst[i], src + 4 * i, 4); break;
        case ST_F16: {
            uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
            dst[i] = f16_to_f32(h);
            break;
        }
        case ST_BF16: {
            uint32_t bits = (uint32_t)(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
            memcpy(&dst[i], &bits, 4);
            break;
        }
        default: {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
            break;
        }
        }
    }
    *out = dst;
    return keep_owned(m, dst, err);
}

static clip_status bind_one(void *user, const clip_tensor_info *spec, const float **dest,
                            int optional, clip_error *err) {
    clip_model *m = user;
    if (!dest) { /* logit_scale: optional for encoding, read when it is a plain F32 scalar */
        const st_tensor *t = st_find(&m->file, spec->name);
        if (t && t->nelem == 1 && t->dtype == ST_F32) memcpy(&m->w.logit_scale, t->data, 4);
        return CLIP_OK;
    }
    if (optional && !st_find(&m->file, spec->name)) return CLIP_OK;
    return bind(m, spec, dest, err);
}

static clip_status bind_all(clip_model *m, clip_error *err) {
    clip_weights *W = &m->w;
    W->vlayers = calloc((size_t)m->cfg.vision.layers, sizeof *W->vlayers);
    W->tlayers = calloc((size_t)m->cfg.text.layers, sizeof *W->tlayers);
    if (!W->vlayers || !W->tlayers) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    W->logit_scale = 0.0f;
    return clip_tensor_walk(&m->cfg, W, bind_one, m, err);
}

static void fill_info(clip_model *m) {
    const clip_config *c = &m->cfg;
    clip_model_info *i = &m->info;
    int g = c->image_size / c->patch_size;
    i->image_size = c->image_size;
    i->patch_size = c->patch_size;
    i->num_channels = c->num_channels;
    i->vision_width = c->vision.width;
    i->vision_layers = c->vision.layers;
    i->vision_heads = c->vision.heads;
    i->vision_mlp = c->vision.mlp;
    i->vision_positions = g * g + 1;
    i->text_width = c->text.width;
    i->text_layers = c->text.layers;
    i->text_heads = c->text.heads;
    i->text_mlp = c->text.mlp;
    i->context_length = c->context_length;
    i->vocab_size = c->vocab_size;
    i->eos_token_id = c->eos_token_id;
    i->embed_dim = c->embed_dim;
    i->logit_scale = m->w.logit_scale;
    i->dir = m->dir;
    i->device = m->device_name;
    i->precision = m->precision;
    i->n_threads = m->n_threads > 0 ? m->n_threads : clip_num_cores();
    i->cpu_kernel = clip_cpu_kernel_name(m);
}

clip_status clip_model_load(const char *name, const clip_model_options *opt, clip_model **out,
                            clip_error *err) {
    *out = NULL;
    clip_model_options defaults;
    if (!opt) {
        clip_model_options_init(&defaults);
        opt = &defaults;
    }
    clip_model *m = calloc(1, sizeof *m);
    if (!m) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    m->n_threads = opt->n_threads > 0 ? opt->n_threads : 0;
    m->precision = opt->precision;
    m->cpu_kernel = opt->cpu_kernel;
    clip_status st = CLIP_OK;
    if (opt->precision != CLIP_PRECISION_FP32 && opt->precision != CLIP_PRECISION_BF16 &&
        opt->precision != CLIP_PRECISION_FP16)
        st = clip_fail(err, CLIP_ERR_ARG, "clip_model_load: unknown precision %d",
                       (int)opt->precision);
    if (!st && (opt->cpu_kernel < CLIP_CPU_KERNEL_AUTO || opt->cpu_kernel > CLIP_CPU_KERNEL_OPENBLAS))
        st = clip_fail(err, CLIP_ERR_ARG, "clip_model_load: unknown cpu_kernel %d",
                       (int)opt->cpu_kernel);
    if (!st) st = clip_resolve_model_dir(name, m->dir, sizeof m->dir, err);
    char path[4200];
    if (!st) st = clip_path_join(path, sizeof path, m->dir, "config.json", err);
    if (!st) st = clip_config_load(path, &m->cfg, err);
    if (!st) st = clip_path_join(path, sizeof path, m->dir, "model.safetensors", err);
    if (!st && !clip_is_file(path)) {
        char alt[4200];
        snprintf(alt, sizeof alt, "%s/model.safetensors.index.json", m->dir);
        if (clip_is_file(alt))
            st = clip_fail(err, CLIP_ERR_UNSUPPORTED,
                           "%s: sharded checkpoints (model.safetensors.index.json) are not supported; "
                           "merge them into one model.safetensors", m->dir);
        else
            st = clip_fail(err, CLIP_ERR_NOT_FOUND,
                           "%s: no model.safetensors in the model folder (clipeval reads safetensors "
                           "only, like DataFlow's use_safetensors=True)", m->dir);
    }
    if (!st) st = st_open(path, &m->file, err);
    if (!st) st = bind_all(m, err);
    if (!st) {
        snprintf(m->device_name, sizeof m->device_name, "cpu");
        m->device = CLIP_DEVICE_CPU;
        if (opt->device == CLIP_DEVICE_CUDA || opt->device == CLIP_DEVICE_AUTO) {
#ifdef CLIP_WITH_CUDA
            char why[256];
            if (clip_cuda_available(why, sizeof why)) {
                st = clip_cuda_init(m, err);
                if (st && opt->device == CLIP_DEVICE_AUTO) { /* auto falls back to the CPU */
                    clip_error_clear(err);
                    st = CLIP_OK;
                }
            } else if (opt->device == CLIP_DEVICE_CUDA) {
                st = clip_fail(err, CLIP_ERR_DEVICE, "CUDA device requested but unavailable: %s",
                               why);
            }
#else
            if (opt->device == CLIP_DEVICE_CUDA)
                st = clip_fail(err, CLIP_ERR_DEVICE,
                               "CUDA device requested, but this clipeval was built without CUDA "
                               "(rebuild with `make CUDA=1`)");
#endif
        }
        if (!st && m->device == CLIP_DEVICE_CPU) st = clip_cpu_init(m, err);
    }
    if (st) {
        clip_model_free(m);
        return st;
    }
    fill_info(m);
    *out = m;
    return CLIP_OK;
}

void clip_model_free(clip_model *m) {
    if (!m) return;
#ifdef CLIP_WITH_CUDA
    if (m->cuda) clip_cuda_free(m);
#endif
    clip_cpu_free(m);
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->w.vlayers);
    free(m->w.tlayers);
    st_close(&m->file);
    free(m);
}

const clip_model_info *clip_model_get_info(const clip_model *m) { return &m->info; }

int clip_text_pool_index(const clip_model *m, const int32_t *ids, int len) {
    return clip_pool_index(&m->cfg, ids, len);
}

/* ------------------------------------------------------------------ encode */

clip_status clip_encode_images(const clip_model *m, const float *pixels, int n,
                               const clip_encode_options *opt, float *out, clip_error *err) {
    if (!m || (!pixels && n > 0) || (!out && n > 0) || n < 0)
        return clip_fail(err, CLIP_ERR_ARG, "clip_encode_images: invalid arguments");
    if (n == 0) return CLIP_OK;
#ifdef CLIP_WITH_CUDA
    if (m->cuda) return clip_cuda_encode_images(m, pixels, n, opt, out, err);
#endif
    return clip_cpu_encode_images(m, pixels, n, opt, out, err);
}

clip_status clip_encode_texts(const clip_model *m, const int32_t *ids, int n, int len,
                              const clip_encode_options *opt, float *out, clip_error *err) {
    if (!m || (!ids && n > 0) || (!out && n > 0) || n < 0 || len < 0)
        return clip_fail(err, CLIP_ERR_ARG, "clip_encode_texts: invalid arguments");
    if (n == 0) return CLIP_OK;
    if (len < 1)
        return clip_fail(err, CLIP_ERR_ARG, "clip_encode_texts: empty sequences (length 0)");
    if (len > m->cfg.context_length)
        return clip_fail(err, CLIP_ERR_ARG,
                         "clip_encode_texts: sequence length %d exceeds the model's %d positions "
                         "(truncate to max_position_embeddings, as HF's processor does)",
                         len, m->cfg.context_length);
    for (size_t i = 0; i < (size_t)n * (size_t)len; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return clip_fail(err, CLIP_ERR_ARG,
                             "clip_encode_texts: token id %d at row %zu, position %zu is outside "
                             "the vocabulary [0, %d)", (int)ids[i], i / (size_t)len,
                             i % (size_t)len, m->cfg.vocab_size);
    int *pool = malloc(sizeof(int) * (size_t)n);
    if (!pool) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) pool[i] = clip_pool_index(&m->cfg, ids + (size_t)i * len, len);
    clip_status st;
#ifdef CLIP_WITH_CUDA
    if (m->cuda) {
        st = clip_cuda_encode_texts(m, ids, n, len, pool, opt, out, err);
        free(pool);
        return st;
    }
#endif
    st = clip_cpu_encode_texts(m, ids, n, len, pool, opt, out, err);
    free(pool);
    return st;
}
const char *clip_version(void) { return CLIP_VERSION; }
