/* schema.c — pass 1 (table_scan): the columns in first-seen order and the dtype pandas gives
 * each (lib.maybe_convert_objects for JSON records, the read_csv cascade for CSV). */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

int schema_lookup(const table_schema *s, const char *name, size_t len) {
    if (!s->nslots) return -1;
    size_t mask = s->nslots - 1;
    for (size_t i = (size_t)clip_fnv1a64(name, len) & mask;; i = (i + 1) & mask) {
        size_t v = s->slots[i];
        if (!v) return -1;
        const column *c = &s->cols[v - 1];
        if (c->len == len && memcmp(c->name, name, len) == 0) return (int)(v - 1);
    }
}

static clip_status schema_rehash(table_schema *s, clip_error *err) {
    size_t n = s->nslots ? s->nslots * 2 : 64;
    size_t *slots = calloc(n, sizeof *slots);
    if (!slots) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (column table)");
    for (size_t c = 0; c < s->ncols; c++) {
        size_t i = (size_t)clip_fnv1a64(s->cols[c].name, s->cols[c].len) & (n - 1);
        while (slots[i]) i = (i + 1) & (n - 1);
        slots[i] = c + 1;
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = n;
    return CLIP_OK;
}

/* Appends a column (the caller knows it is new). */
clip_status schema_add(table_schema *s, const char *name, size_t len, int *col,
                       clip_error *err) {
    if (s->ncols >= (size_t)INT_MAX - 1)
        return clip_fail(err, CLIP_ERR_LIMIT, "more than %d columns", INT_MAX - 1);
    if (s->ncols == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 16;
        column *nc = realloc(s->cols, ncap * sizeof *nc);
        if (!nc) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (columns)");
        s->cols = nc;
        s->cap = ncap;
    }
    column *c = &s->cols[s->ncols];
    memset(c, 0, sizeof *c);
    c->name = malloc(len + 1);
    if (!c->name) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (column name)");
    memcpy(c->name, name, len);
    c->name[len] = '\0';
    c->len = len;
    c->conv_ok = c->conv_int = 1;
    *col = (int)s->ncols++;
    if (s->ncols * 2 > s->nslots) return schema_rehash(s, err);
    size_t mask = s->nslots - 1;
    size_t i = (size_t)clip_fnv1a64(name, len) & mask;
    while (s->slots[i]) i = (i + 1) & mask;
    s->slots[i] = (size_t)*col + 1;
    return CLIP_OK;
}

size_t table_schema_rows(const table_schema *s) { return s ? s->rows : 0; }
size_t table_schema_invalid(const table_schema *s) { return s ? s->invalid : 0; }
size_t table_schema_columns(const table_schema *s) { return s ? s->ncols : 0; }

const char *table_schema_column(const table_schema *s, int col, size_t *len) {
    if (!s || col < 0 || (size_t)col >= s->ncols) return NULL;
    if (len) *len = s->cols[col].len;
    return s->cols[col].name;
}

int table_schema_find(const table_schema *s, const char *column) {
    if (!s || !column) return -1;
    return schema_lookup(s, column, strlen(column));
}

table_dtype table_schema_dtype(const table_schema *s, int col) {
    if (!s || col < 0 || (size_t)col >= s->ncols) return TD_OBJECT;
    return s->cols[col].dtype;
}

void table_schema_free(table_schema *s) {
    if (!s) return;
    for (size_t i = 0; i < s->ncols; i++) free(s->cols[i].name);
    free(s->cols);
    free(s->slots);
    clip_buf_free(&s->csv_header);
    clip_buf_free(&s->json_head);
    clip_buf_free(&s->json_tail);
    free(s);
}

/* ------------------------------------------------------------------ maybe_convert_objects */

/* Folds one value into the column's maybe_convert_objects state, in row order: an int is
 * range-checked only while no None has been seen, exactly as pandas 1.5.3 does. */
static void seen_update(column *c, pyclass k, int negative, int uint_range, int big) {
    if (c->seen & SEEN_OBJECT) return;
    switch (k) {
    case PY_NONE: c->seen |= SEEN_NULL; break;
    case PY_BOOL: c->seen |= SEEN_BOOL; break;
    case PY_FLOAT: c->seen |= SEEN_FLOAT; break;
    case PY_OBJECT: c->seen |= SEEN_OBJECT; break;
    case PY_INT:
        c->seen |= SEEN_INT;
        if (!(c->seen & SEEN_NULL)) {
            if (negative && !big) c->seen |= SEEN_SINT;
            if (uint_range) c->seen |= SEEN_UINT;
            if (((c->seen & SEEN_UINT) && (c->seen & SEEN_SINT)) || big) c->seen |= SEEN_OBJECT;
        }
        break;
    }
}

static table_dtype seen_dtype(unsigned seen) {
    if (seen & SEEN_OBJECT) return TD_OBJECT;
    if (seen & (SEEN_NULL | SEEN_NAN)) {
        if (seen & SEEN_BOOL) return TD_OBJECT;
        if (seen & (SEEN_FLOAT | SEEN_INT | SEEN_NAN)) return TD_FLOAT64;
        return TD_OBJECT; /* only None */
    }
    if (seen & SEEN_BOOL) return (seen & (SEEN_FLOAT | SEEN_INT)) ? TD_OBJECT : TD_BOOL;
    if (seen & SEEN_FLOAT) return TD_FLOAT64;
    if (seen & SEEN_INT) return (seen & SEEN_UINT) ? TD_UINT64 : TD_INT64;
    return TD_OBJECT;
}

/* ------------------------------------------------------------------ columns of one JSON row */

void rowmap_free(rowmap *m) {
    free(m->stamp);
    free(m->midx);
    free(m->touched);
    memset(m, 0, sizeof *m);
}

static clip_status rowmap_reserve(rowmap *m, size_t ncols, clip_error *err) {
    if (ncols <= m->cap) return CLIP_OK;
    size_t ncap = m->cap ? m->cap : 16;
    while (ncap < ncols) ncap *= 2;
    size_t *st = realloc(m->stamp, ncap * sizeof *st);
    if (st) m->stamp = st;
    size_t *mi = realloc(m->midx, ncap * sizeof *mi);
    if (mi) m->midx = mi;
    int *to = realloc(m->touched, ncap * sizeof *to);
    if (to) m->touched = to;
    if (!st || !mi || !to) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (row map)");
    memset(m->stamp + m->cap, 0, (ncap - m->cap) * sizeof *st);
    m->cap = ncap;
    return CLIP_OK;
}

/* Maps the members of root to columns; with add, unknown keys become new columns (scan),
 * otherwise they mean the file changed after the scan (*unknown = 1). */
clip_status rowmap_build(rowmap *m, table_schema *s, const json_value *root, int add,
                         int *unknown, clip_error *err) {
    clip_status st;
    m->gen++;
    m->ntouched = 0;
    if ((st = rowmap_reserve(m, s->ncols, err))) return st;
    for (size_t i = 0; i < root->u.obj.n; i++) {
        const json_member *mb = &root->u.obj.members[i];
        int col = schema_lookup(s, mb->key, mb->key_len);
        if (col < 0) {
            if (!add) {
                *unknown = 1;
                return CLIP_OK;
            }
            if ((st = schema_add(s, mb->key, mb->key_len, &col, err)) ||
                (st = rowmap_reserve(m, s->ncols, err)))
                return st;
        }
        if (m->stamp[col] != m->gen) {
            m->stamp[col] = m->gen;
            m->touched[m->ntouched++] = col;
        }
        m->midx[col] = i;
    }
    return CLIP_OK;
}

/* ------------------------------------------------------------------ pass 1 */

static clip_status scan_json(table_schema *s, src *in, int skip_invalid, clip_error *err) {
    clip_status st = CLIP_OK;
    rowmap m = {0};
    int ujson = s->fmt == TABLE_JSON;
    for (;;) {
        int got, blank;
        st = ujson ? json_next_elem(in, &got, err) : jsonl_next_line(in, &got, err);
        if (st || !got) break;
        json_doc *doc;
        size_t off;
        st = parse_json_row(in, &doc, &off, &blank, err);
        if (st) {
            if (!row_error(st) || !skip_invalid) break;
            s->invalid++;
            st = CLIP_OK;
            continue;
        }
        if (blank) continue;
        const json_value *root = json_doc_root(doc);
        const char *text = in->raw.data + off;
        st = rowmap_build(&m, s, root, 1, NULL, err);
        for (size_t t = 0; !st && t < m.ntouched; t++) {
            column *c = &s->cols[m.touched[t]];
            const json_value *v = &root->u.obj.members[m.midx[m.touched[t]]].value;
            pyinfo pi = py_classify(v, text, ujson);
            seen_update(c, pi.k, pi.negative, pi.uint_range, pi.big);
            c->present++;
            if (ujson && c->conv_ok) {
                double f;
                if (!py_to_float(v, text, &f))
                    c->conv_ok = 0;
                else if (!integral_int64(f))
                    c->conv_int = 0;
            }
        }
        json_doc_free(doc);
        if (st) break;
        s->rows++;
    }
    rowmap_free(&m);
    if (st) return st;
    if (s->fmt == TABLE_JSONL && s->rows == 0) {
        if (in->any == 0) return clip_fail(err, CLIP_ERR_FORMAT, "%s: empty file", in->path);
        /* DataFlow's reader raises ValueError when no record is left. */
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: no valid JSON record (%zu invalid line%s)",
                         in->path, s->invalid, s->invalid == 1 ? "" : "s");
    }
    if (s->fmt == TABLE_JSON) {
        if (!clip_buf_append(&s->json_head, in->head.data ? in->head.data : "", in->head.len) ||
            !clip_buf_append(&s->json_tail, in->tail.data ? in->tail.data : "", in->tail.len))
            return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    return CLIP_OK;
}

static clip_status scan_csv(table_schema *s, src *in, int skip_invalid, clip_error *err) {
    int got;
    clip_status st = csv_next_record(in, &got, err);
    if (st) return st;
    if (!got)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: %s (no header row: no columns to parse)",
                         in->path, in->any ? "only blank lines" : "empty file");
    if ((st = check_csv_record(in, 0, err))) return st; /* a bad header is fatal */
    if ((st = csv_header_columns(s, in, err))) return st;
    s->csv_header_fields = in->nfields;
    memcpy(s->csv_header_term, in->term, sizeof s->csv_header_term);
    if (!clip_buf_append(&s->csv_header, in->raw.data ? in->raw.data : "", in->raw.len))
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    size_t h = s->csv_header_fields;
    in->fkeep = h + 1; /* more fields only make the record invalid: do not store them */
    for (;;) {
        if ((st = csv_next_record(in, &got, err)) || !got) break;
        if ((st = check_csv_record(in, h, err))) {
            if (!row_error(st) || !skip_invalid) break;
            s->invalid++;
            st = CLIP_OK;
            continue;
        }
        for (size_t j = 0; j < h; j++) {
            const char *w = j < in->nfields ? in->vals.data + in->fields[j].val_start : "";
            csv_update(&s->cols[j], w);
        }
        s->rows++;
    }
    return st;
}

/* The dtypes, once every row has been seen. */
static void schema_finalize(table_schema *s) {
    int any_obj = 0, any_bool = 0, any_float = 0, any_i64 = 0, any_u64 = 0;
    for (size_t i = 0; i < s->ncols; i++) {
        column *c = &s->cols[i];
        if (s->fmt == TABLE_CSV) {
            /* read_csv gives an empty table object columns. */
            c->ck = s->rows ? csv_finalize_kind(c) : CK_OBJECT;
            c->dtype = csv_kind_dtype(c->ck);
        } else {
            if (c->present < s->rows) {
                c->seen |= SEEN_NAN; /* dicts_to_array fills missing keys with np.nan */
                c->conv_int = 0;
            }
            c->dtype = seen_dtype(c->seen);
            if (s->fmt == TABLE_JSON) {
                /* read_json's _try_convert_data: object -> float64 when float() takes every
                 * value, then float64 -> int64 when every value is integral. */
                if (c->dtype == TD_OBJECT && c->conv_ok) {
                    c->dtype = TD_FLOAT64;
                    c->coerced = 1;
                }
                if (c->dtype == TD_FLOAT64 && c->conv_int) {
                    c->dtype = TD_INT64;
                    c->coerced = 1;
                }
            }
        }
        any_obj |= c->dtype == TD_OBJECT;
        any_bool |= c->dtype == TD_BOOL;
        any_float |= c->dtype == TD_FLOAT64;
        any_i64 |= c->dtype == TD_INT64;
        any_u64 |= c->dtype == TD_UINT64;
    }
    /* iterrows() builds each row from df.values: without object or bool columns that array is
     * float64 as soon as one column is float64 or int64 meets uint64. */
    s->row_float = !any_obj && !any_bool && (any_float || (any_i64 && any_u64));
}

clip_status table_scan(const char *path, table_format fmt, const table_limits *lim,
                       int skip_invalid, table_schema **out, clip_error *err) {
    *out = NULL;
    if (!path) return clip_fail(err, CLIP_ERR_ARG, "table_scan: no path");
    if ((unsigned)fmt > TABLE_CSV) return clip_fail(err, CLIP_ERR_ARG, "%s: bad table format", path);
    table_schema *s = calloc(1, sizeof *s);
    if (!s) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    s->fmt = fmt;
    src in;
    clip_status st = src_open(&in, path, fmt, lim, err);
    if (!st) st = fmt == TABLE_CSV ? scan_csv(s, &in, skip_invalid, err)
                                   : scan_json(s, &in, skip_invalid, err);
    s->bom = in.bom;
    src_close(&in);
    if (st) {
        table_schema_free(s);
        return st;
    }
    schema_finalize(s);
    *out = s;
    return CLIP_OK;
}
