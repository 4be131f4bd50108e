/* resize.c — what CLIPImageProcessor (transformers 4.x, PIL path) does after decoding:
 * Pillow BICUBIC resize of 8-bit RGB in fixed point, centre crop, rescale and normalise
 * (spec §C.1 and §C.3–C.7), and the preprocessor_config.json reader.
 *
 * Bit-exactness rules that shape this file:
 *  - The resampler is a transcription of Pillow's Resample.c for 8-bit images (coefficients in
 *    double, rounded to 22-bit integers, horizontal pass first with a uint8 intermediate).
 *    Pillow computes whole passes; we compute only the output window the centre crop keeps.
 *    Every output pixel depends on nothing but its own coefficient row, so the pixels kept are
 *    the same, and a 1000x3 image no longer needs a 74666x224 intermediate.
 *  - The float part uses a 256x3 table built with NumPy's operation order (§C.6). Excess
 *    precision (x87) or FMA contraction would change table entries, hence the check below and
 *    -ffp-contract=off in the Makefile.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"
#include "json.h"
#include "util.h"

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "clipeval needs float arithmetic without excess precision (use SSE2: -mfpmath=sse)"
#endif

/* ------------------------------------------------------------------ configuration */

/* Python floats (doubles), rounded to float32 as np.array(mean, dtype=float32) does; a float
 * literal would round the decimal directly, which can differ in the last bit. */
static const double OPENAI_CLIP_MEAN[3] = {0.48145466, 0.4578275, 0.40821073};
static const double OPENAI_CLIP_STD[3] = {0.26862954, 0.26130258, 0.27577711};

/* Sizes above this are refused: no CLIP checkpoint comes close, and it keeps every product
 * of two sizes (and the crop buffer the caller allocates) far from overflow. */
#define MAX_CONFIG_SIZE 16384

void clip_image_config_default(clip_image_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->do_resize = cfg->do_center_crop = cfg->do_rescale = cfg->do_normalize = 1;
    cfg->do_convert_rgb = 1;
    cfg->shortest_edge = 224;
    cfg->crop_height = cfg->crop_width = 224;
    cfg->resample = 3;
    cfg->rescale_factor = 1.0 / 255.0; /* the Python literal 1/255 */
    for (int c = 0; c < 3; c++) {
        cfg->mean[c] = (float)OPENAI_CLIP_MEAN[c];
        cfg->std[c] = (float)OPENAI_CLIP_STD[c];
    }
}

static const char *resample_name(long long r) {
    switch (r) {
    case 0: return "NEAREST";
    case 1: return "LANCZOS";
    case 2: return "BILINEAR";
    case 3: return "BICUBIC";
    case 4: return "BOX";
    case 5: return "HAMMING";
    default: return "unknown filter";
    }
}

/* HF reads the do_* flags with Python truthiness; JSON configs hold true/false, and a few
 * hand-written ones 0/1, so both are accepted. */
static clip_status cfg_flag(const json_value *root, const char *key, int *out, const char *path,
                            clip_error *err) {
    const json_value *v = json_get(root, key);
    if (!v || v->type == JSON_NULL) return CLIP_OK;
    if (v->type == JSON_TRUE || v->type == JSON_FALSE) {
        *out = v->type == JSON_TRUE;
        return CLIP_OK;
    }
    if (v->type == JSON_NUMBER && v->u.num.is_int) {
        *out = v->u.num.d != 0;
        return CLIP_OK;
    }
    return clip_fail(err, CLIP_ERR_CONFIG, "%s: \"%s\" must be true or false, not a %s", path, key,
                     json_type_name(v->type));
}

static clip_status cfg_size_value(const json_value *v, const char *path, const char *what,
                                  int *out, clip_error *err) {
    if (!v || v->type != JSON_NUMBER || !v->u.num.is_int || v->u.num.d < 1 ||
        v->u.num.d > MAX_CONFIG_SIZE)
        return clip_fail(err, CLIP_ERR_CONFIG,
                         "%s: %s must be an integer between 1 and %d", path, what,
                         MAX_CONFIG_SIZE);
    *out = (int)v->u.num.d;
    return CLIP_OK;
}

/* "size": 224 | {"shortest_edge": 224[, "longest_edge": ...]}. CLIPImageProcessor.resize reads
 * only shortest_edge (longest_edge is ignored there too); {"height","width"} or [h, w] would mean
 * a resize to a fixed size, which no CLIP checkpoint uses and clip_image_config cannot hold. */
static clip_status cfg_size(const json_value *root, const char *path, clip_image_config *cfg,
                            clip_error *err) {
    const json_value *v = json_get(root, "size");
    if (!v || v->type == JSON_NULL) return CLIP_OK;
    if (v->type == JSON_NUMBER) return cfg_size_value(v, path, "\"size\"", &cfg->shortest_edge, err);
    if (v->type == JSON_OBJECT) {
        const json_value *se = json_get(v, "shortest_edge");
        if (se) return cfg_size_value(se, path, "size.shortest_edge", &cfg->shortest_edge, err);
        if (json_get(v, "height") || json_get(v, "width"))
            return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                             "%s: \"size\" {height, width} (a resize to a fixed size) is not "
                             "supported; CLIP configs use {\"shortest_edge\": N}",
                             path);
        return clip_fail(err, CLIP_ERR_CONFIG, "%s: \"size\" has no \"shortest_edge\"", path);
    }
    if (v->type == JSON_ARRAY)
        return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                         "%s: \"size\" as [height, width] (a resize to a fixed size) is not "
                         "supported; CLIP configs use {\"shortest_edge\": N}",
                         path);
    return clip_fail(err, CLIP_ERR_CONFIG, "%s: \"size\" must be a number or an object, not a %s",
                     path, json_type_name(v->type));
}

/* "crop_size": 224 | {"height": h, "width": w} | [h, w] (HF's get_size_dict, square default). */
static clip_status cfg_crop(const json_value *root, const char *path, clip_image_config *cfg,
                            clip_error *err) {
    const json_value *v = json_get(root, "crop_size");
    clip_status st;
    if (!v || v->type == JSON_NULL) return CLIP_OK;
    if (v->type == JSON_NUMBER) {
        st = cfg_size_value(v, path, "\"crop_size\"", &cfg->crop_height, err);
        cfg->crop_width = cfg->crop_height;
        return st;
    }
    if (v->type == JSON_OBJECT) {
        const json_value *h = json_get(v, "height"), *w = json_get(v, "width");
        if (!h || !w)
            return clip_fail(err, CLIP_ERR_CONFIG,
                             "%s: \"crop_size\" must have both \"height\" and \"width\"", path);
        st = cfg_size_value(h, path, "crop_size.height", &cfg->crop_height, err);
        if (st == CLIP_OK) st = cfg_size_value(w, path, "crop_size.width", &cfg->crop_width, err);
        return st;
    }
    if (v->type == JSON_ARRAY && v->u.arr.n == 2) {
        st = cfg_size_value(&v->u.arr.items[0], path, "crop_size[0]", &cfg->crop_height, err);
        if (st == CLIP_OK)
            st = cfg_size_value(&v->u.arr.items[1], path, "crop_size[1]", &cfg->crop_width, err);
        return st;
    }
    return clip_fail(err, CLIP_ERR_CONFIG,
                     "%s: \"crop_size\" must be a number, {height, width} or [height, width]", path);
}

/* image_mean / image_std: three numbers, or one number for all channels (HF normalize()).
 * Stored as float32 exactly as np.array(mean, dtype=float32) rounds them. */
static clip_status cfg_triple(const json_value *root, const char *key, const char *path,
                              float out[3], clip_error *err) {
    const json_value *v = json_get(root, key);
    double d[3];
    if (!v || v->type == JSON_NULL) return CLIP_OK;
    if (v->type == JSON_NUMBER) {
        d[0] = d[1] = d[2] = v->u.num.d;
    } else if (v->type == JSON_ARRAY && v->u.arr.n == 3) {
        for (int c = 0; c < 3; c++) {
            if (v->u.arr.items[c].type != JSON_NUMBER)
                return clip_fail(err, CLIP_ERR_CONFIG, "%s: \"%s\"[%d] is not a number", path, key,
                                 c);
            d[c] = v->u.arr.items[c].u.num.d;
        }
    } else {
        return clip_fail(err, CLIP_ERR_CONFIG,
                         "%s: \"%s\" must be a list of 3 numbers (one per RGB channel)", path, key);
    }
    for (int c = 0; c < 3; c++) {
        if (!isfinite(d[c]) || fabs(d[c]) > FLT_MAX)
            return clip_fail(err, CLIP_ERR_CONFIG, "%s: \"%s\"[%d] is not a finite float32", path,
                             key, c);
        out[c] = (float)d[c];
    }
    return CLIP_OK;
}

static clip_status cfg_parse(const json_value *root, const char *path, clip_image_config *cfg,
                             clip_error *err) {
    clip_status st;
    if (root->type != JSON_OBJECT)
        return clip_fail(err, CLIP_ERR_CONFIG, "%s: the top level must be an object, not a %s",
                         path, json_type_name(root->type));
    if ((st = cfg_flag(root, "do_resize", &cfg->do_resize, path, err)) ||
        (st = cfg_flag(root, "do_center_crop", &cfg->do_center_crop, path, err)) ||
        (st = cfg_flag(root, "do_rescale", &cfg->do_rescale, path, err)) ||
        (st = cfg_flag(root, "do_normalize", &cfg->do_normalize, path, err)) ||
        (st = cfg_flag(root, "do_convert_rgb", &cfg->do_convert_rgb, path, err)) ||
        (st = cfg_size(root, path, cfg, err)) || (st = cfg_crop(root, path, cfg, err)) ||
        (st = cfg_triple(root, "image_mean", path, cfg->mean, err)) ||
        (st = cfg_triple(root, "image_std", path, cfg->std, err)))
        return st;

    const json_value *v = json_get(root, "resample");
    if (v && v->type != JSON_NULL) {
        if (v->type != JSON_NUMBER || !v->u.num.is_int)
            return clip_fail(err, CLIP_ERR_CONFIG, "%s: \"resample\" must be an integer filter id",
                             path);
        if (v->u.num.d != 3)
            return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                             "%s: resample=%.0f (%s) is not supported: clipeval implements only "
                             "3 (BICUBIC), the filter every CLIP checkpoint uses",
                             path, v->u.num.d,
                             resample_name(fabs(v->u.num.d) < 1e9 ? (long long)v->u.num.d : -1));
        cfg->resample = 3;
    }
    v = json_get(root, "rescale_factor");
    if (v && v->type != JSON_NULL) {
        if (v->type != JSON_NUMBER || !isfinite(v->u.num.d))
            return clip_fail(err, CLIP_ERR_CONFIG, "%s: \"rescale_factor\" must be a finite number",
                             path);
        cfg->rescale_factor = v->u.num.d;
    }
    for (int c = 0; c < 3; c++)
        if (cfg->do_normalize && cfg->std[c] == 0.0f)
            return clip_fail(err, CLIP_ERR_CONFIG, "%s: image_std[%d] is 0", path, c);
    return CLIP_OK;
}

clip_status clip_image_config_load(const char *dir, clip_image_config *cfg, clip_error *err) {
    char path[4096];
    json_doc *doc = NULL;
    clip_status st;
    if (!dir || !cfg) return clip_fail(err, CLIP_ERR_ARG, "clip_image_config_load: NULL argument");
    if ((st = clip_path_join(path, sizeof path, dir, "preprocessor_config.json", err))) return st;
    if ((st = json_parse_file(path, (size_t)16 << 20, 64, &doc, err))) return st;
    clip_image_config c;
    clip_image_config_default(&c);
    st = cfg_parse(json_doc_root(doc), path, &c, err);
    json_doc_free(doc);
    if (st == CLIP_OK) *cfg = c;
    return st;
}

/* ------------------------------------------------------------------ Pillow BICUBIC */

#define PRECISION_BITS 22 /* Pillow: 32 - 8 - 2 */

static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Coefficients of output positions [first, first + count) of one axis (in_size -> out_size). */
typedef struct axis_coeffs {
    int count, ksize;
    int *bounds;  /* per output position: first input index, number of taps */
    int32_t *k;   /* per output position: ksize fixed-point weights (taps beyond n are 0) */
} axis_coeffs;

static void axis_free(axis_coeffs *a) {
    free(a->bounds);
    free(a->k);
    a->bounds = NULL;
    a->k = NULL;
}

/* Pillow's precompute_coeffs() + normalize_coeffs_8bpp(), box (0, in_size). */
static clip_status axis_build(int in_size, int out_size, int first, int count, axis_coeffs *a,
                              clip_error *err) {
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale; /* BICUBIC support 2, widened when downscaling */
    int ksize = (int)ceil(support) * 2 + 1;
    size_t nk;
    a->count = count;
    a->ksize = ksize;
    a->bounds = NULL;
    a->k = NULL;
    if (!clip_mul_size((size_t)count, (size_t)ksize, &nk))
        return clip_fail(err, CLIP_ERR_LIMIT, "resize coefficients overflow");
    a->bounds = clip_calloc((size_t)count * 2, sizeof(int), "resize bounds", err);
    a->k = clip_calloc(nk, sizeof(int32_t), "resize coefficients", err);
    double *w = clip_calloc((size_t)ksize, sizeof(double), "resize weights", err);
    if (!a->bounds || !a->k || !w) {
        free(w);
        axis_free(a);
        return CLIP_ERR_NOMEM; /* only allocations fail here (the product was checked above) */
    }
    double ss = 1.0 / filterscale;
    for (int i = 0; i < count; i++) {
        int xx = first + i;
        double center = (xx + 0.5) * scale;
        double ww = 0.0;
        /* C casts truncate toward zero, as in Pillow ("Round the value"). */
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        int n = xmax - xmin;
        for (int x = 0; x < n; x++) {
            double f = bicubic_filter((x + xmin - center + 0.5) * ss);
            w[x] = f;
            ww += f;
        }
        int32_t *k = a->k + (size_t)i * ksize;
        for (int x = 0; x < n; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            /* Round half away from zero through truncation; the integer weights are not
             * renormalised (their sum may be 2^22 +- 1, as in Pillow). */
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        a->bounds[2 * i] = xmin;
        a->bounds[2 * i + 1] = n;
    }
    free(w);
    return CLIP_OK;
}

/* Pillow refuses (MemoryError) an axis whose coefficient table would pass INT_MAX bytes. */
static int pillow_axis_too_big(int in_size, int out_size) {
    double scale = (double)in_size / out_size;
    double support = 2.0 * (scale < 1.0 ? 1.0 : scale);
    double ksize = ceil(support) * 2 + 1;
    return (double)out_size > (double)(INT_MAX / 8) / ksize;
}

/* acc holds 2^21 + sum(sample * k): negative sums give 0 (Pillow's clip8 table), and the shift
 * is only ever applied to non-negative values (>> of a negative int is implementation-defined). */
static inline uint8_t clip8(int32_t acc) {
    if (acc < 0) return 0;
    acc >>= PRECISION_BITS;
    return acc > 255 ? 255 : (uint8_t)acc;
}

/* A window of an RGB image: p points at its top-left pixel. */
typedef struct view {
    const uint8_t *p;
    size_t stride; /* bytes per row */
} view;

/* Horizontal pass: rows of `in` (already offset to the first column the coefficients count
 * from) into `out`, a.count pixels per row. */
static void resample_h(view in, int rows, const axis_coeffs *a, uint8_t *out, size_t out_stride) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *row = in.p + (size_t)y * in.stride;
        uint8_t *o = out + (size_t)y * out_stride;
        for (int xx = 0; xx < a->count; xx++) {
            const int32_t *k = a->k + (size_t)xx * a->ksize;
            const uint8_t *s = row + (size_t)a->bounds[2 * xx] * 3;
            int n = a->bounds[2 * xx + 1];
            int32_t r = 1 << (PRECISION_BITS - 1), g = r, b = r;
            for (int t = 0; t < n; t++) {
                r += s[3 * t] * k[t];
                g += s[3 * t + 1] * k[t];
                b += s[3 * t + 2] * k[t];
            }
            o[3 * xx] = clip8(r);
            o[3 * xx + 1] = clip8(g);
            o[3 * xx + 2] = clip8(b);
        }
    }
}

/* Vertical pass: `in` row 0 is the row the coefficients count from; width pixels per row.
 * Integer sums are exact, so adding tap by tap over a whole row gives Pillow's values. */
static void resample_v(view in, int width, const axis_coeffs *a, uint8_t *out, size_t out_stride,
                       int32_t *acc) {
    size_t nb = (size_t)width * 3;
    for (int yy = 0; yy < a->count; yy++) {
        const int32_t *k = a->k + (size_t)yy * a->ksize;
        int ymin = a->bounds[2 * yy], n = a->bounds[2 * yy + 1];
        for (size_t i = 0; i < nb; i++) acc[i] = 1 << (PRECISION_BITS - 1);
        for (int t = 0; t < n; t++) {
            const uint8_t *s = in.p + (size_t)(ymin + t) * in.stride;
            int32_t kt = k[t];
            for (size_t i = 0; i < nb; i++) acc[i] += s[i] * kt;
        }
        uint8_t *o = out + (size_t)yy * out_stride;
        for (size_t i = 0; i < nb; i++) o[i] = clip8(acc[i]);
    }
}

/* Input index range [lo, hi) read by the coefficients of an axis. */
static void axis_span(const axis_coeffs *a, int *lo, int *hi) {
    *lo = INT_MAX;
    *hi = 0;
    for (int i = 0; i < a->count; i++) {
        int b = a->bounds[2 * i], e = b + a->bounds[2 * i + 1];
        if (b < *lo) *lo = b;
        if (e > *hi) *hi = e;
    }
    if (*lo > *hi) *lo = *hi;
}

/* Pixels [ox, ox + ow) x [oy, oy + oh) of Pillow's resize of src (w x h) to out_w x out_h,
 * written to dst (ow x oh, tightly packed). vertical_first: Pillow >= 12.2's order for tall
 * images (pillow_tall_rule). */
static clip_status resize_window(const uint8_t *src, int w, int h, int out_w, int out_h, int ox,
                                 int ow, int oy, int oh, int vertical_first, uint8_t *dst,
                                 clip_error *err) {
    int need_h = out_w != w, need_v = out_h != h;
    axis_coeffs ah = {0}, av = {0};
    uint8_t *tmp = NULL;
    int32_t *acc = NULL;
    clip_status st = CLIP_OK;
    size_t src_stride = (size_t)w * 3, dst_stride = (size_t)ow * 3;

    if (!need_h && !need_v) {
        for (int y = 0; y < oh; y++)
            memcpy(dst + (size_t)y * dst_stride, src + (size_t)(oy + y) * src_stride + (size_t)ox * 3,
                   dst_stride);
        return CLIP_OK;
    }
    if (pillow_axis_too_big(w, out_w) || pillow_axis_too_big(h, out_h))
        return clip_fail(err, CLIP_ERR_LIMIT,
                         "resize %dx%d -> %dx%d: the output is too large (Pillow raises "
                         "MemoryError for it too)",
                         w, h, out_w, out_h);
    if (need_h && (st = axis_build(w, out_w, ox, ow, &ah, err))) goto done;
    if (need_v && (st = axis_build(h, out_h, oy, oh, &av, err))) goto done;

    if (!vertical_first) {
        /* Horizontal pass on the input rows the vertical pass reads, then the vertical pass. */
        int y0 = oy, y1 = oy + oh;
        if (need_v) axis_span(&av, &y0, &y1);
        view mid = {src + (size_t)y0 * src_stride + (size_t)ox * 3, src_stride};
        if (need_h) {
            size_t bytes;
            if (!need_v) {
                resample_h((view){src + (size_t)oy * src_stride, src_stride}, oh, &ah, dst,
                           dst_stride);
                goto done;
            }
            if (!clip_mul_size(dst_stride, (size_t)(y1 - y0), &bytes)) {
                st = clip_fail(err, CLIP_ERR_LIMIT, "resize intermediate overflows");
                goto done;
            }
            tmp = clip_malloc(bytes ? bytes : 1, "resize intermediate", err);
            if (!tmp) {
                st = CLIP_ERR_NOMEM;
                goto done;
            }
            resample_h((view){src + (size_t)y0 * src_stride, src_stride}, y1 - y0, &ah, tmp,
                       dst_stride);
            mid = (view){tmp, dst_stride};
        }
        for (int i = 0; i < av.count; i++) av.bounds[2 * i] -= y0;
        acc = clip_malloc(dst_stride * sizeof(int32_t) + 1, "resize accumulator", err);
        if (!acc) {
            st = CLIP_ERR_NOMEM;
            goto done;
        }
        resample_v(mid, ow, &av, dst, dst_stride, acc);
    } else {
        /* Vertical pass on the input columns the horizontal pass reads, then horizontal. */
        int x0 = ox, x1 = ox + ow;
        if (need_h) axis_span(&ah, &x0, &x1);
        size_t mid_stride = (size_t)(x1 - x0) * 3;
        view mid = {src + (size_t)oy * src_stride + (size_t)x0 * 3, src_stride};
        if (need_v) {
            size_t bytes;
            if (!clip_mul_size(mid_stride, (size_t)oh, &bytes)) {
                st = clip_fail(err, CLIP_ERR_LIMIT, "resize intermediate overflows");
                goto done;
            }
            tmp = clip_malloc(bytes ? bytes : 1, "resize intermediate", err);
            acc = clip_malloc(mid_stride * sizeof(int32_t) + 1, "resize accumulator", err);
            if (!tmp || !acc) {
                st = CLIP_ERR_NOMEM;
                goto done;
            }
            resample_v((view){src + (size_t)x0 * 3, src_stride}, x1 - x0, &av,
                       need_h ? tmp : dst, need_h ? mid_stride : dst_stride, acc);
            if (!need_h) goto done;
            mid = (view){tmp, mid_stride};
        }
        for (int i = 0; i < ah.count; i++) ah.bounds[2 * i] -= x0;
        resample_h(mid, oh, &ah, dst, dst_stride);
    }
done:
    free(acc);
    free(tmp);
    axis_free(&ah);
    axis_free(&av);
    return st;
}

/* ------------------------------------------------------------------ preprocessing */

/* HF get_resize_output_image_size(default_to_square=False): the short side becomes S and the
 * long side int(S * long / short) (float division, truncation). */
static clip_status hf_output_size(int w, int h, int s, int *ow, int *oh, clip_error *err) {
    int shrt = w <= h ? w : h, lng = w <= h ? h : w;
    double q = (double)((int64_t)s * lng) / (double)shrt;
    if (q >= (double)INT_MAX)
        return clip_fail(err, CLIP_ERR_LIMIT, "resize of %dx%d to shortest edge %d: too large", w,
                         h, s);
    int new_long = (int)q;
    if (w <= h) {
        *ow = s;
        *oh = new_long;
    } else {
        *ow = new_long;
        *oh = s;
    }
    return CLIP_OK;
}

/* One axis of HF center_crop(): the part of the resized axis (length r) that is kept, and
 * where it lands in the crop (length c); zero padding when r < c. */
static void crop_axis(int r, int c, int *src_off, int *dst_off, int *n) {
    if (r >= c) {
        *src_off = (r - c) / 2; /* floor, non-negative */
        *dst_off = 0;
        *n = c;
    } else {
        *src_off = 0;
        *dst_off = (c - r + 1) / 2; /* ceil((c - r) / 2) */
        *n = r;
    }
}

/* The 256x3 table of §C.6: x = float32(float64(v) * rescale_factor), then float32 (x - mean)
 * and float32 / std, as NumPy computes them. */
static void build_lut(const clip_image_config *cfg, float lut[3][256]) {
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = cfg->do_rescale ? (float)((double)v * cfg->rescale_factor) : (float)v;
            if (cfg->do_normalize) {
                float d = x - cfg->mean[c];
                x = d / cfg->std[c];
            }
            lut[c][v] = x;
        }
}

static clip_status check_config(const clip_image_config *cfg, clip_error *err) {
    if (cfg->crop_height < 1 || cfg->crop_width < 1 || cfg->crop_height > MAX_CONFIG_SIZE ||
        cfg->crop_width > MAX_CONFIG_SIZE)
        return clip_fail(err, CLIP_ERR_CONFIG, "crop size %dx%d is out of range (1..%d)",
                         cfg->crop_width, cfg->crop_height, MAX_CONFIG_SIZE);
    if (cfg->do_resize) {
        if (cfg->shortest_edge < 1 || cfg->shortest_edge > MAX_CONFIG_SIZE)
            return clip_fail(err, CLIP_ERR_CONFIG, "shortest_edge %d is out of range (1..%d)",
                             cfg->shortest_edge, MAX_CONFIG_SIZE);
        if (cfg->resample != 3)
            return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                             "resample=%d (%s) is not supported: only 3 (BICUBIC)", cfg->resample,
                             resample_name(cfg->resample));
    }
    if (cfg->do_rescale && !isfinite(cfg->rescale_factor))
        return clip_fail(err, CLIP_ERR_CONFIG, "rescale_factor is not finite");
    return CLIP_OK;
}

clip_status clip_image_preprocess(const clip_image *img, const clip_image_config *cfg,
                                  const clip_decode_options *o, float *out, clip_image *resized,
                                  clip_error *err) {
    clip_decode_options defaults;
    clip_status st;
    if (resized) memset(resized, 0, sizeof *resized);
    if (!img || !cfg || !out)
        return clip_fail(err, CLIP_ERR_ARG, "clip_image_preprocess: NULL argument");
    if (!img->rgb || img->width < 1 || img->height < 1)
        return clip_fail(err, CLIP_ERR_ARG, "clip_image_preprocess: empty image (%dx%d)",
                         img->width, img->height);
    if (!o) {
        clip_decode_options_init(&defaults);
        o = &defaults;
    }
    if ((st = check_config(cfg, err))) return st;

    int w = img->width, h = img->height, rw = w, rh = h;
    if (cfg->do_resize && (st = hf_output_size(w, h, cfg->shortest_edge, &rw, &rh, err)))
        return st;
    int ch = cfg->crop_height, cw = cfg->crop_width;
    int sx = 0, sy = 0, dx = 0, dy = 0, nx = rw, ny = rh;
    if (cfg->do_center_crop) {
        crop_axis(rw, cw, &sx, &dx, &nx);
        crop_axis(rh, ch, &sy, &dy, &ny);
    } else if (rw != cw || rh != ch) {
        /* HF would return an image of the resized size; the model needs crop-size input. */
        return clip_fail(err, CLIP_ERR_CONFIG,
                         "do_center_crop is off and the %dx%d image resizes to %dx%d, not the "
                         "%dx%d the model expects",
                         w, h, rw, rh, cw, ch);
    }
    int vertical_first = o->pillow_tall_rule && (int64_t)h > (int64_t)100 * w && rh < h;
    uint64_t max_pixels = o->max_pixels ? o->max_pixels : CLIP_PILLOW_MAX_PIXELS;

    size_t crop_bytes = (size_t)ch * (size_t)cw * 3;
    uint8_t *crop = clip_calloc(crop_bytes, 1, "crop", err);
    uint8_t *win = NULL;
    if (!crop) return CLIP_ERR_NOMEM;
    if (resized) {
        /* The caller wants the whole resized image: materialise it, then crop from it. */
        if ((uint64_t)rw * (uint64_t)rh > max_pixels) {
            st = clip_fail(err, CLIP_ERR_LIMIT,
                           "resized image %dx%d has more than max_pixels (%llu) pixels", rw, rh,
                           (unsigned long long)max_pixels);
            goto fail;
        }
        resized->rgb = clip_malloc((size_t)rw * (size_t)rh * 3, "resized image", err);
        if (!resized->rgb) {
            st = CLIP_ERR_NOMEM;
            goto fail;
        }
        resized->width = rw;
        resized->height = rh;
        if ((st = resize_window(img->rgb, w, h, rw, rh, 0, rw, 0, rh, vertical_first,
                                resized->rgb, err)))
            goto fail;
        for (int y = 0; y < ny; y++)
            memcpy(crop + ((size_t)(dy + y) * cw + dx) * 3,
                   resized->rgb + ((size_t)(sy + y) * rw + sx) * 3, (size_t)nx * 3);
    } else {
        win = clip_malloc((size_t)nx * (size_t)ny * 3, "resize window", err);
        if (!win) {
            st = CLIP_ERR_NOMEM;
            goto fail;
        }
        if ((st = resize_window(img->rgb, w, h, rw, rh, sx, nx, sy, ny, vertical_first, win, err)))
            goto fail;
        for (int y = 0; y < ny; y++)
            memcpy(crop + ((size_t)(dy + y) * cw + dx) * 3, win + (size_t)y * nx * 3,
                   (size_t)nx * 3);
        free(win);
        win = NULL;
    }

    float lut[3][256];
    build_lut(cfg, lut);
    size_t plane = (size_t)ch * cw;
    for (size_t i = 0; i < plane; i++) {
        out[i] = lut[0][crop[3 * i]];
        out[plane + i] = lut[1][crop[3 * i + 1]];
        out[2 * plane + i] = lut[2][crop[3 * i + 2]];
    }
    free(crop);
    return CLIP_OK;

fail:
    free(win);
    free(crop);
    if (resized) clip_image_free(resized);
    return st;
}

clip_status clip_preprocess_file(const char *path, const clip_image_config *cfg,
                                 const clip_decode_options *o, float *out, clip_error *err) {
    clip_image img = {0};
    clip_status st = clip_image_decode_file(path, o, &img, err);
    if (st) return st;
    st = clip_image_preprocess(&img, cfg, o, out, NULL, err);
    if (st) clip_fail_prefix(err, "%s: ", path);
    clip_image_free(&img);
    return st;
}
