/* golden_data.h — readers for the golden arrays shared by the Criterion tests (test_model.c,
 * test_cuda.c) and the Criterion-free GPU checker (gpu_check.c). No assertions here: each
 * returns a clip_status and the caller reports it its own way. */
#ifndef CLIP_GOLDEN_DATA_H
#define CLIP_GOLDEN_DATA_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"
#include "json.h"
#include "npy.h"
#include "util.h"

#define GD_CONTEXT 77
#define GD_VITB32_IMAGE 224

/* The 77-token `input_ids` of every text of golden/tokenizer/texts.jsonl: int32 [n, 77]. */
static inline clip_status gd_input_ids(const char *shared, int32_t **ids_out, int *n_out,
                                       clip_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/tokenizer/texts.jsonl", shared);
    char *data;
    size_t len;
    clip_status st = clip_read_file(path, 0, &data, &len, err);
    if (st) return st;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += data[i] == '\n';
    int32_t *ids = malloc(sizeof(int32_t) * GD_CONTEXT * lines);
    if (!ids) {
        free(data);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    int n = 0;
    for (char *line = data; !st && line < data + len;) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
        if (ll > 0) {
            json_doc *doc;
            st = json_parse(line, ll, path, 0, &doc, err);
            if (!st) {
                const json_value *a = json_get(json_doc_root(doc), "input_ids");
                if (!a || a->type != JSON_ARRAY || a->u.arr.n != GD_CONTEXT)
                    st = clip_fail(err, CLIP_ERR_FORMAT, "%s: text %d has no 77 input_ids", path, n);
                for (int k = 0; !st && k < GD_CONTEXT; k++)
                    ids[n * GD_CONTEXT + k] = (int32_t)a->u.arr.items[k].u.num.d;
                json_doc_free(doc);
                n++;
            }
        }
        line += ll + 1;
    }
    free(data);
    if (st) {
        free(ids);
        return st;
    }
    *ids_out = ids;
    *n_out = n;
    return CLIP_OK;
}

/* The vitb32 golden pixel_values in embeddings order (order.json): float32 [n, 3, 224, 224]. */
static inline clip_status gd_vitb32_pixels(const char *shared, float **px_out, int *n_out,
                                           clip_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/embeddings/vitb32-synth/order.json", shared);
    json_doc *doc;
    clip_status st = json_parse_file(path, 0, 0, &doc, err);
    if (st) return st;
    const json_value *a = json_get(json_doc_root(doc), "images");
    int n = a && a->type == JSON_ARRAY ? (int)a->u.arr.n : 0;
    size_t per = (size_t)3 * GD_VITB32_IMAGE * GD_VITB32_IMAGE;
    float *px = n ? malloc(sizeof(float) * per * (size_t)n) : NULL;
    if (!n) st = clip_fail(err, CLIP_ERR_FORMAT, "%s: no images listed", path);
    else if (!px) st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    for (int i = 0; !st && i < n; i++) {
        snprintf(path, sizeof path, "%s/golden/images/%s.pixel_values.npy", shared,
                 a->u.arr.items[i].u.str.s);
        npy_array p;
        st = npy_load(path, &p, err);
        if (st) break;
        if (p.dtype != NPY_F32 || p.count != per)
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: not float32 [3, 224, 224]", path);
        else
            memcpy(px + per * i, p.data, sizeof(float) * per);
        npy_free(&p);
    }
    json_doc_free(doc);
    if (st) {
        free(px);
        return st;
    }
    *px_out = px;
    *n_out = n;
    return CLIP_OK;
}

/* max |a - b|; a NaN anywhere makes the result NaN (so any <= check fails). */
static inline double gd_max_abs_diff(const float *a, const float *b, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= mx)) mx = d;
    }
    return mx;
}

/* max |ours - golden_f64| over an array (a NaN in ours propagates). */
/* The smallest cosine between row i of ours and row i of ref ([rows, dim] each). */
static inline double gd_min_cos_f64(const float *ours, const double *ref, size_t rows, size_t dim) {
    double worst = 1.0;
    for (size_t r = 0; r < rows; r++) {
        double d = 0, a = 0, b = 0;
        for (size_t j = 0; j < dim; j++) {
            double x = ours[r * dim + j], y = ref[r * dim + j];
            d += x * y;
            a += x * x;
            b += y * y;
        }
        double c = d / sqrt(a * b);
        if (!(c >= worst)) worst = c; /* NaN counts as the worst */
    }
    return worst;
}

static inline double gd_max_err_f64(const float *ours, const double *ref, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)ours[i] - ref[i]);
        if (!(d <= mx)) mx = d;
    }
    return mx;
}

/* PyTorch's own fp32 error on an array: max |golden_f32 - golden_f64| of gdir/name{,_f64}.npy,
 * and the tolerance max(2 x that, 1e-6). */
static inline clip_status gd_torch_err(const char *gdir, const char *name, double *err_out,
                                       double *tol_out, clip_error *err) {
    char p32[4200], p64[4200];
    snprintf(p32, sizeof p32, "%s/%s.npy", gdir, name);
    snprintf(p64, sizeof p64, "%s/%s_f64.npy", gdir, name);
    npy_array a, b;
    *err_out = 0;
    clip_status st = npy_load(p32, &a, err);
    if (st) return st;
    st = npy_load(p64, &b, err);
    if (st) {
        npy_free(&a);
        return st;
    }
    if (a.dtype != NPY_F32 || b.dtype != NPY_F64 || a.count != b.count)
        st = clip_fail(err, CLIP_ERR_FORMAT, "%s: f32/f64 golden arrays do not match", p32);
    else
        *err_out = gd_max_err_f64(a.data, b.data, a.count);
    npy_free(&a);
    npy_free(&b);
    if (!st && tol_out) *tol_out = 2.0 * *err_out > 1e-6 ? 2.0 * *err_out : 1e-6;
    return st;
}

#endif
