/* npy.c — .npy reader/writer (see npy.h). The header is a Python dict literal; it is parsed
 * as such (quoted keys in any order, tuples, True/False), not pattern-matched. */
#include "npy.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define NPY_MAX_FILE ((size_t)1 << 34) /* 16 GiB: far above anything clipeval reads */

static const struct {
    const char *descr[3];
    npy_dtype t;
    size_t size;
} dtypes[] = {
    {{"<f4", NULL, NULL}, NPY_F32, 4},   {{"<f8", NULL, NULL}, NPY_F64, 8},
    {{"<i4", NULL, NULL}, NPY_I32, 4},   {{"<i8", NULL, NULL}, NPY_I64, 8},
    {{"|u1", "<u1", NULL}, NPY_U8, 1},   {{"|i1", "<i1", NULL}, NPY_I8, 1},
    {{"|b1", NULL, NULL}, NPY_BOOL, 1},
};

const char *npy_dtype_name(npy_dtype t) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].t == t) return dtypes[i].descr[0];
    return "?";
}

typedef struct hdr_parser {
    const char *s;
    size_t n, i;
} hdr_parser;

static void hws(hdr_parser *h) {
    while (h->i < h->n && (h->s[h->i] == ' ' || h->s[h->i] == '\t' || h->s[h->i] == '\n'))
        h->i++;
}

static int hchar(hdr_parser *h, char c) {
    hws(h);
    if (h->i < h->n && h->s[h->i] == c) {
        h->i++;
        return 1;
    }
    return 0;
}

/* A quoted Python string; returns its bounds. */
static int hstr(hdr_parser *h, const char **s, size_t *len) {
    hws(h);
    if (h->i >= h->n || (h->s[h->i] != '\'' && h->s[h->i] != '"')) return 0;
    char q = h->s[h->i++];
    size_t st = h->i;
    while (h->i < h->n && h->s[h->i] != q) h->i++;
    if (h->i >= h->n) return 0;
    *s = h->s + st;
    *len = h->i - st;
    h->i++;
    return 1;
}

clip_status npy_parse(const void *buf, size_t len, const char *what, npy_array *out,
                      clip_error *err) {
    memset(out, 0, sizeof *out);
    const unsigned char *b = buf;
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: not a .npy file (bad magic)", what);
    unsigned major = b[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)b[8] | ((size_t)b[9] << 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) return clip_fail(err, CLIP_ERR_FORMAT, "%s: truncated .npy header", what);
        hlen = (size_t)b[8] | ((size_t)b[9] << 8) | ((size_t)b[10] << 16) | ((size_t)b[11] << 24);
        hstart = 12;
    } else {
        return clip_fail(err, CLIP_ERR_UNSUPPORTED, "%s: .npy format version %u is not supported",
                         what, major);
    }
    if (hlen > len - hstart)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: .npy header length %zu runs past the end", what,
                         hlen);
    hdr_parser h = {(const char *)b + hstart, hlen, 0};
    const char *descr = NULL;
    size_t descr_len = 0;
    int have_fortran = 0, fortran = 0, have_shape = 0;
    size_t shape[NPY_MAX_DIMS];
    int ndim = 0;
    if (!hchar(&h, '{')) return clip_fail(err, CLIP_ERR_FORMAT, "%s: .npy header is not a dict", what);
    for (;;) {
        if (hchar(&h, '}')) break;
        const char *key;
        size_t klen;
        if (!hstr(&h, &key, &klen) || !hchar(&h, ':'))
            return clip_fail(err, CLIP_ERR_FORMAT, "%s: malformed .npy header", what);
        if (klen == 5 && !memcmp(key, "descr", 5)) {
            if (!hstr(&h, &descr, &descr_len))
                return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                                 "%s: .npy structured dtypes are not supported", what);
        } else if (klen == 13 && !memcmp(key, "fortran_order", 13)) {
            hws(&h);
            if (h.n - h.i >= 4 && !memcmp(h.s + h.i, "True", 4)) {
                fortran = 1;
                h.i += 4;
            } else if (h.n - h.i >= 5 && !memcmp(h.s + h.i, "False", 5)) {
                h.i += 5;
            } else {
                return clip_fail(err, CLIP_ERR_FORMAT, "%s: bad fortran_order in .npy header", what);
            }
            have_fortran = 1;
        } else if (klen == 5 && !memcmp(key, "shape", 5)) {
            if (!hchar(&h, '('))
                return clip_fail(err, CLIP_ERR_FORMAT, "%s: bad shape in .npy header", what);
            while (!hchar(&h, ')')) {
                hws(&h);
                size_t v = 0;
                int digits = 0;
                while (h.i < h.n && h.s[h.i] >= '0' && h.s[h.i] <= '9') {
                    size_t d = (size_t)(h.s[h.i++] - '0');
                    if (v > (SIZE_MAX - d) / 10)
                        return clip_fail(err, CLIP_ERR_FORMAT, "%s: .npy shape overflows", what);
                    v = v * 10 + d;
                    digits++;
                }
                if (!digits) return clip_fail(err, CLIP_ERR_FORMAT, "%s: bad shape in .npy header", what);
                if (ndim == NPY_MAX_DIMS)
                    return clip_fail(err, CLIP_ERR_UNSUPPORTED, "%s: more than %d dimensions", what,
                                     NPY_MAX_DIMS);
                shape[ndim++] = v;
                if (!hchar(&h, ',')) {
                    if (!hchar(&h, ')'))
                        return clip_fail(err, CLIP_ERR_FORMAT, "%s: bad shape in .npy header", what);
                    break;
                }
            }
            have_shape = 1;
        } else {
            return clip_fail(err, CLIP_ERR_FORMAT, "%s: unknown key in .npy header", what);
        }
        if (!hchar(&h, ',')) {
            if (!hchar(&h, '}')) return clip_fail(err, CLIP_ERR_FORMAT, "%s: malformed .npy header", what);
            break;
        }
    }
    if (!descr || !have_fortran || !have_shape)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: .npy header lacks descr/fortran_order/shape", what);
    if (fortran)
        return clip_fail(err, CLIP_ERR_UNSUPPORTED, "%s: Fortran-order .npy arrays are not supported "
                         "(save with np.ascontiguousarray)", what);
    int found = 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0] && !found; i++)
        for (int k = 0; k < 3 && dtypes[i].descr[k]; k++)
            if (strlen(dtypes[i].descr[k]) == descr_len &&
                !memcmp(dtypes[i].descr[k], descr, descr_len)) {
                out->dtype = dtypes[i].t;
                out->elem_size = dtypes[i].size;
                found = 1;
                break;
            }
    if (!found)
        return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                         "%s: .npy dtype '%.*s' is not supported (need little-endian f4/f8/i4/i8/u1)",
                         what, (int)(descr_len > 16 ? 16 : descr_len), descr);
    size_t count = 1;
    for (int i = 0; i < ndim; i++)
        if (!clip_mul_size(count, shape[i], &count))
            return clip_fail(err, CLIP_ERR_FORMAT, "%s: .npy shape product overflows", what);
    size_t bytes;
    if (!clip_mul_size(count, out->elem_size, &bytes))
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: .npy data size overflows", what);
    size_t data_off = hstart + hlen;
    if (bytes > len - data_off)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: .npy data truncated (%zu bytes expected, %zu present)",
                         what, bytes, len - data_off);
    out->data = clip_malloc(bytes, what, err);
    if (!out->data) return CLIP_ERR_NOMEM;
    memcpy(out->data, b + data_off, bytes);
    out->ndim = ndim;
    memcpy(out->shape, shape, sizeof(size_t) * (size_t)ndim);
    out->count = count;
    return CLIP_OK;
}

clip_status npy_load(const char *path, npy_array *out, clip_error *err) {
    char *data;
    size_t len;
    memset(out, 0, sizeof *out);
    clip_status st = clip_read_file(path, NPY_MAX_FILE, &data, &len, err);
    if (st) return st;
    st = npy_parse(data, len, path, out, err);
    free(data);
    return st;
}

void npy_free(npy_array *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}

clip_status npy_save(const char *path, npy_dtype dtype, int ndim, const size_t *shape,
                     const void *data, clip_error *err) {
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     npy_dtype_name(dtype));
    size_t count = 1, esize = 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].t == dtype) esize = dtypes[i].size;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%zu%s", shape[i],
                      ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        count *= shape[i];
    }
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "), }");
    /* Pad with spaces so that the data starts on a 64-byte boundary, newline-terminated. */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    FILE *f = fopen(path, "wb");
    if (!f) return clip_fail(err, CLIP_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xFF),
                             (unsigned char)(hlen >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, (size_t)n, f) == (size_t)n;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    ok = ok && (count == 0 || fwrite(data, esize, count, f) == count);
    if (fclose(f) != 0) ok = 0;
    if (!ok) {
        remove(path);
        return clip_fail(err, CLIP_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    return CLIP_OK;
}
