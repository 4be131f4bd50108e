/* safetensors.c — validating safetensors reader (see safetensors.h). */
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

static const struct {
    const char *name;
    st_dtype t;
    size_t size;
} dtype_table[] = {
    {"F64", ST_F64, 8},   {"F32", ST_F32, 4},   {"F16", ST_F16, 2},     {"BF16", ST_BF16, 2},
    {"I64", ST_I64, 8},   {"I32", ST_I32, 4},   {"I16", ST_I16, 2},     {"I8", ST_I8, 1},
    {"U64", ST_U64, 8},   {"U32", ST_U32, 4},   {"U16", ST_U16, 2},     {"U8", ST_U8, 1},
    {"BOOL", ST_BOOL, 1}, {"F8_E4M3", ST_F8_E4M3, 1}, {"F8_E5M2", ST_F8_E5M2, 1},
};

const char *st_dtype_name(st_dtype t) {
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
        if (dtype_table[i].t == t) return dtype_table[i].name;
    return "?";
}


typedef struct span {
    uint64_t begin, end;
    size_t idx;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int tensor_cmp(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Reads a JSON number that must be a non-negative integer below 2^53 (exact in a double). */
static int get_u64(const json_value *v, uint64_t *out) {
    if (!v || v->type != JSON_NUMBER || !v->u.num.is_int || v->u.num.d < 0 ||
        v->u.num.d > 9007199254740992.0)
        return 0;
    *out = (uint64_t)v->u.num.d;
    return 1;
}

clip_status st_parse(const void *buf, size_t len, const char *what, st_file *f, clip_error *err) {
    const unsigned char *b = buf;
    f->tensors = NULL;
    f->n = 0;
    f->names = NULL;
    if (len < 8)
        return clip_fail(err, CLIP_ERR_FORMAT,
                         "%s: truncated safetensors file (%zu bytes, the header length alone is 8)",
                         what, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    if (hlen > ST_MAX_HEADER)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: safetensors header length %llu is above the "
                         "%llu-byte limit (corrupt file?)", what, (unsigned long long)hlen,
                         (unsigned long long)ST_MAX_HEADER);
    if (hlen > len - 8)
        return clip_fail(err, CLIP_ERR_FORMAT,
                         "%s: safetensors header length %llu runs past the end of the %zu-byte file "
                         "(truncated download?)", what, (unsigned long long)hlen, len);
    const char *hdr = (const char *)b + 8;
    const unsigned char *data = b + 8 + hlen;
    uint64_t data_len = (uint64_t)len - 8 - hlen;

    json_doc *doc;
    char jwhat[4200];
    snprintf(jwhat, sizeof jwhat, "%s (safetensors header)", what);
    clip_status st = json_parse(hdr, (size_t)hlen, jwhat, 16, &doc, err);
    if (st) return st;
    const json_value *root = json_doc_root(doc);
    if (root->type != JSON_OBJECT) {
        json_doc_free(doc);
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: safetensors header is not a JSON object", what);
    }
    size_t n = root->u.obj.n, names_len = 0;
    for (size_t i = 0; i < n; i++) names_len += root->u.obj.members[i].key_len + 1;
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->names = malloc(names_len ? names_len : 1);
    span *spans = calloc(n ? n : 1, sizeof *spans);
    if (!f->tensors || !f->names || !spans) {
        free(spans);
        json_doc_free(doc);
        st_close(f);
        return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory reading the tensor table", what);
    }
    char *np = f->names;
    size_t nt = 0;
    int n_meta = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const json_member *m = &root->u.obj.members[i];
        if (strlen(m->key) != m->key_len) {
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor name with a NUL byte", what);
            break;
        }
        if (!strcmp(m->key, "__metadata__")) {
            if (m->value.type != JSON_OBJECT)
                st = clip_fail(err, CLIP_ERR_FORMAT, "%s: __metadata__ is not an object", what);
            else if (++n_meta > 1)
                st = clip_fail(err, CLIP_ERR_FORMAT, "%s: __metadata__ is listed twice", what);
            continue;
        }
        const json_value *v = &m->value;
        if (v->type != JSON_OBJECT) {
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor '%s': entry is not an object", what,
                           m->key);
            break;
        }
        st_tensor *t = &f->tensors[nt];
        memcpy(np, m->key, m->key_len + 1);
        t->name = np;
        np += m->key_len + 1;
        const char *dt = NULL;
        if (json_get_string(v, "dtype", &dt) != 1) {
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor '%s': missing dtype", what, t->name);
            break;
        }
        size_t esize = 0;
        for (size_t k = 0; k < sizeof dtype_table / sizeof dtype_table[0]; k++)
            if (!strcmp(dtype_table[k].name, dt)) {
                t->dtype = dtype_table[k].t;
                esize = dtype_table[k].size;
            }
        if (!esize) {
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", what,
                           t->name, dt);
            break;
        }
        const json_value *shape = json_get(v, "shape");
        if (!shape || shape->type != JSON_ARRAY || shape->u.arr.n > ST_MAX_DIMS) {
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor '%s': shape must be an array of at most "
                           "%d integers", what, t->name, ST_MAX_DIMS);
            break;
        }
        t->ndim = (int)shape->u.arr.n;
        uint64_t nelem = 1;
        int overflow = 0;
        for (int d = 0; d < t->ndim; d++) {
            if (!get_u64(&shape->u.arr.items[d], &t->shape[d])) {
                st = clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor '%s': bad dimension %d in shape",
                               what, t->name, d);
                break;
            }
            if (t->shape[d] && nelem > UINT64_MAX / t->shape[d]) overflow = 1;
            nelem *= t->shape[d];
        }
        if (st) break;
        if (overflow || nelem > UINT64_MAX / esize) {
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor '%s': shape product overflows 64 bits",
                           what, t->name);
            break;
        }
        t->nelem = nelem;
        const json_value *offs = json_get(v, "data_offsets");
        uint64_t ob, oe;
        if (!offs || offs->type != JSON_ARRAY || offs->u.arr.n != 2 ||
            !get_u64(&offs->u.arr.items[0], &ob) || !get_u64(&offs->u.arr.items[1], &oe)) {
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end]",
                           what, t->name);
            break;
        }
        if (ob > oe || oe > data_len) {
            st = clip_fail(err, CLIP_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%llu, %llu] out of range (data section "
                           "is %llu bytes; truncated file?)", what, t->name, (unsigned long long)ob,
                           (unsigned long long)oe, (unsigned long long)data_len);
            break;
        }
        if (oe - ob != nelem * esize) {
            st = clip_fail(err, CLIP_ERR_FORMAT,
                           "%s: tensor '%s': %llu bytes of data for shape with %llu %s elements "
                           "(%llu bytes expected)", what, t->name, (unsigned long long)(oe - ob),
                           (unsigned long long)nelem, dt, (unsigned long long)(nelem * esize));
            break;
        }
        t->data = data + ob;
        t->nbytes = (size_t)(oe - ob);
        spans[nt].begin = ob;
        spans[nt].end = oe;
        spans[nt].idx = nt;
        nt++;
    }
    json_doc_free(doc);
    if (!st) {
        /* Sorted by start, a tensor overlaps an earlier one iff it starts before the furthest
         * end seen so far (empty tensors occupy no bytes and cannot overlap). */
        qsort(spans, nt, sizeof *spans, span_cmp);
        uint64_t max_end = 0;
        size_t max_idx = 0;
        for (size_t i = 0; i < nt; i++) {
            if (spans[i].end == spans[i].begin) continue;
            if (spans[i].begin < max_end) {
                st = clip_fail(err, CLIP_ERR_FORMAT,
                               "%s: tensors '%s' and '%s' overlap in the data section", what,
                               f->tensors[max_idx].name, f->tensors[spans[i].idx].name);
                break;
            }
            max_end = spans[i].end;
            max_idx = spans[i].idx;
        }
    }
    free(spans);
    if (!st) {
        /* Sorted by name: duplicates become neighbours and lookups can bisect. */
        qsort(f->tensors, nt, sizeof *f->tensors, tensor_cmp);
        for (size_t i = 1; i < nt; i++)
            if (!strcmp(f->tensors[i].name, f->tensors[i - 1].name)) {
                st = clip_fail(err, CLIP_ERR_FORMAT, "%s: tensor '%s' is listed twice", what,
                               f->tensors[i].name);
                break;
            }
    }
    if (st) {
        st_close(f);
        return st;
    }
    f->n = nt;
    return CLIP_OK;
}

clip_status st_open(const char *path, st_file *f, clip_error *err) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    clip_mmap map;
    clip_status st = clip_mmap_open(path, &map, err);
    if (st) return st;
    st = st_parse(map.data, map.len, path, f, err);
    if (st) {
        clip_mmap_close(&map);
        return st;
    }
    f->map = map.data;
    f->map_len = map.len;
    return CLIP_OK;
}

void st_close(st_file *f) {
    free(f->tensors);
    free(f->names);
    if (f->map) {
        clip_mmap m = {f->map, f->map_len};
        clip_mmap_close(&m);
    }
    f->tensors = NULL;
    f->names = NULL;
    f->map = NULL;
    f->map_len = 0;
    f->n = 0;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    st_tensor key;
    key.name = name;
    return f->n ? bsearch(&key, f->tensors, f->n, sizeof key, tensor_cmp) : NULL;
}
