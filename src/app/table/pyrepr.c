/* pyrepr.c — Python's str()/repr() of cells and nested values, and pandas' ujson writer
 * (to_json) of the same values. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ Python dicts */

/* A JSON object as the Python dict json.loads/ujson builds: each key once, at the position of
 * its first occurrence, holding the value of its last occurrence. */
typedef struct dict_view {
    size_t n;
    size_t *first, *last; /* member indices */
} dict_view;

typedef struct key_ref {
    const char *k;
    size_t len, idx;
} key_ref;

static int key_ref_cmp(const void *a, const void *b) {
    const key_ref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->k, y->k, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void dict_view_free(dict_view *d) {
    free(d->first);
    free(d->last);
    memset(d, 0, sizeof *d);
}

static clip_status dict_view_build(const json_value *obj, dict_view *d, clip_error *err) {
    size_t n = obj->u.obj.n;
    const json_member *m = obj->u.obj.members;
    memset(d, 0, sizeof *d);
    d->first = malloc((n ? n : 1) * sizeof *d->first);
    d->last = malloc((n ? n : 1) * sizeof *d->last);
    if (!d->first || !d->last) {
        dict_view_free(d);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (object)");
    }
    if (n <= 16) { /* the common small object: quadratic is cheapest */
        for (size_t i = 0; i < n; i++) {
            int dup = 0;
            for (size_t j = 0; j < i && !dup; j++)
                dup = m[j].key_len == m[i].key_len && !memcmp(m[j].key, m[i].key, m[i].key_len);
            if (dup) continue;
            size_t last = i;
            for (size_t j = i + 1; j < n; j++)
                if (m[j].key_len == m[i].key_len && !memcmp(m[j].key, m[i].key, m[i].key_len))
                    last = j;
            d->first[d->n] = i;
            d->last[d->n++] = last;
        }
        return CLIP_OK;
    }
    key_ref *refs = malloc(n * sizeof *refs);
    size_t *last_of = malloc(n * sizeof *last_of); /* by first index; n = not a first */
    if (!refs || !last_of) {
        free(refs);
        free(last_of);
        dict_view_free(d);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (object)");
    }
    for (size_t i = 0; i < n; i++) {
        refs[i] = (key_ref){m[i].key, m[i].key_len, i};
        last_of[i] = n;
    }
    qsort(refs, n, sizeof *refs, key_ref_cmp);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && refs[j + 1].len == refs[i].len && !memcmp(refs[j + 1].k, refs[i].k, refs[i].len)) j++;
        last_of[refs[i].idx] = refs[j].idx;
        i = j + 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (last_of[i] == n) continue;
        d->first[d->n] = i;
        d->last[d->n++] = last_of[i];
    }
    free(refs);
    free(last_of);
    return CLIP_OK;
}

/* ------------------------------------------------------------------ Python repr / str */

int oom_status(clip_buf *b, clip_error *err) {
    return b->oom ? clip_fail(err, CLIP_ERR_NOMEM, "out of memory (text)") : CLIP_OK;
}

/* repr(str): '...' unless the text has ' and no ", the escapes of unicode_repr, printable
 * non-ASCII kept as is. */
static void py_repr_str(clip_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    int sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    clip_buf_putc(b, q);
    for (size_t i = 0; i < n;) {
        unsigned cp;
        int k = json_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (!k) { /* not produced by the parsers; shown as a raw byte escape */
            cp = (unsigned char)s[i];
            k = 1;
        }
        char e[12];
        if (cp == (unsigned char)q || cp == '\\') {
            e[0] = '\\';
            e[1] = (char)cp;
            clip_buf_append(b, e, 2);
        } else if (cp == '\t') {
            clip_buf_puts(b, "\\t");
        } else if (cp == '\n') {
            clip_buf_puts(b, "\\n");
        } else if (cp == '\r') {
            clip_buf_puts(b, "\\r");
        } else if (cp < 0x20 || cp == 0x7f) {
            clip_buf_printf(b, "\\x%c%c", hex[cp >> 4], hex[cp & 15]);
        } else if (cp < 0x7f || (k > 1 && py_isprintable(cp))) {
            clip_buf_append(b, s + i, (size_t)k);
        } else if (cp <= 0xff) {
            clip_buf_printf(b, "\\x%02x", cp);
        } else if (cp <= 0xffff) {
            clip_buf_printf(b, "\\u%04x", cp);
        } else {
            clip_buf_printf(b, "\\U%08x", cp);
        }
        i += (size_t)k;
    }
    clip_buf_putc(b, q);
}

void py_repr_float(clip_buf *b, double d) {
    char tmp[40];
    int n = clip_format_double_repr(d, tmp);
    clip_buf_append(b, tmp, (size_t)n);
}

/* A number nested in a list/dict as Python holds it: no column dtype applies (object). */
static void number_held(const json_value *v, const char *text, int ujson, held *h) {
    column c = {0};
    c.dtype = TD_OBJECT;
    memset(h, 0, sizeof *h);
    json_held(&c, v, text, ujson, h);
}

/* repr() of a nested JSON value as the Python object json.loads (or ujson) made of it. */
static clip_status py_repr_json(clip_buf *b, const json_value *v, const char *text, int ujson,
                                clip_error *err) {
    clip_status st;
    switch (v->type) {
    case JSON_NULL: clip_buf_puts(b, "None"); break;
    case JSON_TRUE: clip_buf_puts(b, "True"); break;
    case JSON_FALSE: clip_buf_puts(b, "False"); break;
    case JSON_STRING: py_repr_str(b, v->u.str.s, v->u.str.len); break;
    case JSON_NUMBER: {
        held h;
        number_held(v, text, ujson, &h);
        if (h.k == H_INT)
            clip_buf_append(b, h.s, h.n);
        else if (h.k == H_FLOAT)
            py_repr_float(b, h.d);
        else
            clip_buf_puts(b, "None");
        break;
    }
    case JSON_ARRAY:
        clip_buf_putc(b, '[');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) clip_buf_puts(b, ", ");
            if ((st = py_repr_json(b, &v->u.arr.items[i], text, ujson, err))) return st;
        }
        clip_buf_putc(b, ']');
        break;
    case JSON_OBJECT: {
        dict_view d;
        if ((st = dict_view_build(v, &d, err))) return st;
        clip_buf_putc(b, '{');
        for (size_t i = 0; i < d.n; i++) {
            const json_member *k = &v->u.obj.members[d.first[i]];
            if (i) clip_buf_puts(b, ", ");
            py_repr_str(b, k->key, k->key_len);
            clip_buf_puts(b, ": ");
            if ((st = py_repr_json(b, &v->u.obj.members[d.last[i]].value, text, ujson, err))) {
                dict_view_free(&d);
                return st;
            }
        }
        clip_buf_putc(b, '}');
        dict_view_free(&d);
        break;
    }
    }
    return oom_status(b, err);
}

/* str() of a held value; row_float applies iterrows()' float upcast to ints. */
clip_status held_str(clip_buf *b, const held *h, const char *text, int ujson, int row_float,
                     clip_error *err) {
    switch (h->k) {
    case H_MISSING:
    case H_NULL_NAN: clip_buf_puts(b, "nan"); break;
    case H_NONE: clip_buf_puts(b, "None"); break;
    case H_BOOL: clip_buf_puts(b, h->b ? "True" : "False"); break;
    case H_INT:
        if (row_float) {
            char tmp[64];
            if (h->n < sizeof tmp) {
                memcpy(tmp, h->s, h->n);
                tmp[h->n] = '\0';
                py_repr_float(b, strtod(tmp, NULL));
                break;
            }
        }
        clip_buf_append(b, h->s, h->n);
        break;
    case H_FLOAT: py_repr_float(b, h->d); break;
    case H_STR: clip_buf_append(b, h->s, h->n); break;
    case H_LIST:
    case H_DICT: return py_repr_json(b, h->jv, text, ujson, err);
    }
    return oom_status(b, err);
}

/* ------------------------------------------------------------------ pandas' ujson output */

void ujson_indent(clip_buf *b, int indent, int level) {
    if (indent <= 0) return;
    for (int i = 0; i < level * indent; i++) clip_buf_putc(b, ' ');
}

void ujson_double(clip_buf *b, double d) {
    char tmp[64];
    if (!isfinite(d)) { /* objToJSON writes NaN and inf as null */
        clip_buf_puts(b, "null");
        return;
    }
    clip_buf_append(b, tmp, (size_t)table_format_double_ujson(d, tmp));
}

/* A nested JSON value as ujson encodes the Python object (indent > 0: the indent=2 layout,
 * `level` being the nesting level of v). */
static clip_status ujson_json(clip_buf *b, const json_value *v, const char *text, int ujson,
                              int indent, int level, clip_error *err) {
    clip_status st;
    switch (v->type) {
    case JSON_NULL: clip_buf_puts(b, "null"); break;
    case JSON_TRUE: clip_buf_puts(b, "true"); break;
    case JSON_FALSE: clip_buf_puts(b, "false"); break;
    case JSON_STRING: json_write_string(b, v->u.str.s, v->u.str.len, 1); break;
    case JSON_NUMBER: {
        held h;
        number_held(v, text, ujson, &h);
        if (h.k == H_INT)
            clip_buf_append(b, h.s, h.n);
        else if (h.k == H_FLOAT)
            ujson_double(b, h.d);
        else
            clip_buf_puts(b, "null");
        break;
    }
    case JSON_ARRAY:
        clip_buf_putc(b, '[');
        if (indent) clip_buf_putc(b, '\n');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) {
                clip_buf_putc(b, ',');
                if (indent) clip_buf_putc(b, '\n');
            }
            ujson_indent(b, indent, level + 1);
            if ((st = ujson_json(b, &v->u.arr.items[i], text, ujson, indent, level + 1, err)))
                return st;
        }
        if (indent) clip_buf_putc(b, '\n');
        ujson_indent(b, indent, level);
        clip_buf_putc(b, ']');
        break;
    case JSON_OBJECT: {
        dict_view d;
        if ((st = dict_view_build(v, &d, err))) return st;
        clip_buf_putc(b, '{');
        if (indent) clip_buf_putc(b, '\n');
        for (size_t i = 0; i < d.n; i++) {
            const json_member *k = &v->u.obj.members[d.first[i]];
            if (i) {
                clip_buf_putc(b, ',');
                if (indent) clip_buf_putc(b, '\n');
            }
            ujson_indent(b, indent, level + 1);
            json_write_string(b, k->key, k->key_len, 1);
            clip_buf_putc(b, ':');
            if ((st = ujson_json(b, &v->u.obj.members[d.last[i]].value, text, ujson, indent,
                                 level + 1, err))) {
                dict_view_free(&d);
                return st;
            }
        }
        if (indent) clip_buf_putc(b, '\n');
        ujson_indent(b, indent, level);
        clip_buf_putc(b, '}');
        dict_view_free(&d);
        break;
    }
    }
    return oom_status(b, err);
}

clip_status held_json(clip_buf *b, const held *h, const char *text, int ujson, int indent,
                      int level, clip_error *err) {
    switch (h->k) {
    case H_MISSING:
    case H_NULL_NAN:
    case H_NONE: clip_buf_puts(b, "null"); break;
    case H_BOOL: clip_buf_puts(b, h->b ? "true" : "false"); break;
    case H_INT: clip_buf_append(b, h->s, h->n); break;
    case H_FLOAT: ujson_double(b, h->d); break;
    case H_STR: json_write_string(b, h->s, h->n, 1); break;
    case H_LIST:
    case H_DICT: return ujson_json(b, h->jv, text, ujson, indent, level, err);
    }
    return oom_status(b, err);
}
