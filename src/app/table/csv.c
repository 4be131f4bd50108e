/* csv.c — CSV as pandas 1.5.3 reads and writes it: the C tokenizer's records, header name
 * mangling, the per-column dtype cascade, and to_csv's field quoting. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ CSV records */

enum {
    CS_START_RECORD,
    CS_WHITESPACE_LINE,
    CS_EAT_CRNL_NOP,
    CS_START_FIELD,
    CS_IN_FIELD,
    CS_IN_QUOTED,
    CS_QUOTE_IN_QUOTED,
    CS_EAT_CRNL
};

static clip_status csv_begin_field(src *s, clip_error *err) {
    if (s->too_long && s->fstop > s->nfields) s->fstop = s->nfields; /* invalid: count only */
    if (s->nfields < s->fstop) {
        if (s->nfields == s->fcap) {
            size_t ncap = s->fcap ? s->fcap * 2 : 16;
            csv_field *nf = realloc(s->fields, ncap * sizeof *nf);
            if (!nf) return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
            s->fields = nf;
            s->fcap = ncap;
        }
        csv_field *f = &s->fields[s->nfields];
        f->raw_start = s->raw.len;
        f->val_start = s->vals.len;
        f->raw_end = f->val_len = 0;
    }
    return CLIP_OK;
}

/* Closes the current field; its value is NUL-terminated in vals (pandas' words are C strings,
 * so a NUL inside a field also ends its value there). */
static clip_status csv_end_field(src *s, clip_error *err) {
    if (s->nfields < s->fstop) {
        csv_field *f = &s->fields[s->nfields];
        f->raw_end = s->raw.len;
        if (!clip_buf_putc(&s->vals, '\0'))
            return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
        f->val_len = strlen(s->vals.data + f->val_start);
    }
    s->nfields++;
    return CLIP_OK;
}

static clip_status csv_val(src *s, int c, clip_error *err) {
    if (s->nfields >= s->fstop || s->too_long) return CLIP_OK;
    if (!clip_buf_putc(&s->vals, (char)c))
        return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
    return CLIP_OK;
}

/* Copies the run of field bytes up to the next byte in stop into the record and the value. */
static clip_status csv_copy_run(src *s, const char *stop, clip_error *err) {
    size_t n = src_run(s, stop, 3);
    if (!n) return CLIP_OK;
    if (s->nfields < s->fstop && !s->too_long && !clip_buf_append(&s->vals, s->buf + s->pos, n))
        return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
    return src_copy_run(s, n, err);
}

/* Reads one CSV record with the pandas C tokenizer's rules for read_csv's defaults (',' and '"',
 * doublequote, lineterminator None so \n, \r\n and \r all end records, skip_blank_lines). The
 * raw bytes exclude the terminator; blank and whitespace-only lines between records are
 * skipped. *got = 0 at the end of the file. */
clip_status csv_next_record(src *s, int *got, clip_error *err) {
    clip_status st;
    int state = CS_START_RECORD;
    rec_reset(s);
    *got = 0;
    if ((st = src_skip_bom(s, err))) return st; /* pandas' CHECK_FOR_BOM */
    for (;;) {
        int c = src_peek(s, err);
        if (c == -2) return CLIP_ERR_IO;
        char ch = (char)c;
        switch (state) {
        case CS_START_RECORD:
            if (c == -1) return CLIP_OK;
            if (c == '\n' || c == '\r') {
                if ((st = src_take(s, c, err))) return st;
                state = c == '\r' ? CS_EAT_CRNL_NOP : CS_START_RECORD;
            } else if (c == ' ' || c == '\t') {
                s->rec_line = s->line;
                if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
                state = CS_WHITESPACE_LINE;
            } else {
                s->rec_line = s->line;
                state = CS_START_FIELD;
            }
            continue;
        case CS_WHITESPACE_LINE:
            if (c == -1) return CLIP_OK;
            if (c == '\n' || c == '\r') {
                s->raw.len = 0;
                s->too_long = 0;
                if ((st = src_take(s, c, err))) return st;
                state = c == '\r' ? CS_EAT_CRNL_NOP : CS_START_RECORD;
            } else if (c == ' ' || c == '\t') {
                if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
            } else {
                /* Not blank after all: pandas backtracks, so the spaces open the first field. */
                if ((st = csv_begin_field(s, err))) return st;
                if (s->nfields < s->fstop) {
                    s->fields[0].raw_start = 0;
                    for (size_t i = 0; i < s->raw.len; i++)
                        if ((st = csv_val(s, s->raw.data[i], err))) return st;
                }
                state = CS_IN_FIELD;
            }
            continue;
        case CS_EAT_CRNL_NOP:
            if (c == -1) return CLIP_OK;
            /* After a blank \r line pandas swallows a following '\n', and also a ','. */
            if (c == '\n' || c == ',') {
                if ((st = src_take(s, c, err))) return st;
            }
            state = CS_START_RECORD;
            continue;
        case CS_START_FIELD:
            if ((st = csv_begin_field(s, err))) return st;
            if (c == -1 || c == '\n' || c == '\r') {
                if ((st = csv_end_field(s, err))) return st;
                goto end_of_record;
            }
            if (c == ',' && (st = csv_end_field(s, err))) return st; /* an empty field */
            if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
            if (c == '"') {
                state = CS_IN_QUOTED;
            } else if (c != ',') {
                if ((st = csv_val(s, c, err)) || (st = csv_copy_run(s, ",\n\r", err))) return st;
                state = CS_IN_FIELD;
            }
            continue;
        case CS_IN_FIELD:
        case CS_QUOTE_IN_QUOTED:
            if (c == -1 || c == '\n' || c == '\r') {
                if ((st = csv_end_field(s, err))) return st;
                goto end_of_record;
            }
            if (c == ',' && (st = csv_end_field(s, err))) return st; /* the comma is not in it */
            if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
            if (c == ',') {
                state = CS_START_FIELD;
            } else if (c == '"' && state == CS_QUOTE_IN_QUOTED) {
                if ((st = csv_val(s, c, err))) return st; /* "" inside quotes */
                state = CS_IN_QUOTED;
            } else {
                /* Text after a closing quote, or a quote inside an unquoted field: literal. */
                if ((st = csv_val(s, c, err)) || (st = csv_copy_run(s, ",\n\r", err))) return st;
                state = CS_IN_FIELD;
            }
            continue;
        case CS_IN_QUOTED:
            if (c == -1) {
                s->unterminated = 1;
                if ((st = csv_end_field(s, err))) return st;
                s->rec_no++;
                *got = 1;
                return CLIP_OK;
            }
            if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
            if (c == '"') {
                state = CS_QUOTE_IN_QUOTED;
            } else if ((st = csv_val(s, c, err)) || (st = csv_copy_run(s, "\"\n\r", err))) {
                return st;
            }
            continue;
        default: break;
        }
        break;
    }
end_of_record:
    /* c is the terminator (or the end): consume \n, \r or \r\n. */
    {
        int c = src_peek(s, err);
        if (c == -2) return CLIP_ERR_IO;
        if (c == '\n') {
            if ((st = src_take(s, c, err))) return st;
            memcpy(s->term, "\n", 2);
        } else if (c == '\r') {
            if ((st = src_take(s, c, err))) return st;
            int n = src_peek(s, err);
            if (n == -2) return CLIP_ERR_IO;
            if (n == '\n') {
                if ((st = src_take(s, n, err))) return st;
                memcpy(s->term, "\r\n", 3);
            } else {
                memcpy(s->term, "\r", 2);
            }
        }
    }
    s->rec_no++;
    *got = 1;
    return CLIP_OK;
}

/* Checks a CSV data record; invalid ones return CLIP_ERR_FORMAT / CLIP_ERR_LIMIT. */
clip_status check_csv_record(const src *s, size_t header_fields, clip_error *err) {
    char where[4200];
    if (s->too_long)
        return clip_fail(err, CLIP_ERR_LIMIT, "%s: longer than %zu bytes (max_row_bytes)",
                         row_where(s, where, sizeof where), s->max_row);
    if (s->unterminated)
        return clip_fail(err, CLIP_ERR_FORMAT,
                         "%s: unterminated quoted field (the file ends inside it)",
                         row_where(s, where, sizeof where));
    if (!py_utf8_valid(s->raw.data ? s->raw.data : "", s->raw.len))
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: invalid UTF-8", row_where(s, where, sizeof where));
    if (header_fields && s->nfields > header_fields)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: %zu fields, but the header has %zu",
                         row_where(s, where, sizeof where), s->nfields, header_fields);
    return CLIP_OK;
}

/* ------------------------------------------------------------------ CSV inference */

void csv_update(column *c, const char *w) {
    int na = pd_is_na(w);
    if (na) c->na = 1;
    if (c->try_i64 == TRY_OK && !na) {
        int64_t v;
        int r = pd_str_to_int64(w, &v);
        if (r) c->try_i64 = r == PD_OVERFLOW ? TRY_OVERFLOW : TRY_INVALID;
    }
    /* The uint64 attempt only matters once int64 overflowed; it runs over every word in order
     * and, like pandas, stops at its first failure. */
    if (c->try_u64 == TRY_OK) {
        if (na) {
            c->u_null = 1;
        } else {
            uint64_t u;
            int si = 0, ui = 0;
            int r = pd_str_to_uint64(w, &u, &si, &ui);
            if (r) {
                c->try_u64 = r == PD_OVERFLOW ? TRY_OVERFLOW : TRY_INVALID;
            } else {
                c->u_sint |= (unsigned char)si;
                c->u_uint |= (unsigned char)ui;
            }
        }
    }
    if (c->try_f64 == TRY_OK && !na) {
        double d;
        if (!pd_parse_double(w, &d)) c->try_f64 = TRY_INVALID;
    }
    if (c->try_bool == TRY_OK && !na) {
        int b;
        if (!pd_parse_bool(w, &b)) c->try_bool = TRY_INVALID;
    }
}

/* parsers.pyx _convert_tokens: int64, then (on overflow) uint64, float64, bool, object. */
csv_kind csv_finalize_kind(const column *c) {
    if (c->try_i64 == TRY_OK) return c->na ? CK_INT64_NA : CK_INT64;
    if (c->try_i64 == TRY_OVERFLOW) {
        if (c->try_u64 == TRY_OVERFLOW) return CK_OBJECT; /* OverflowError */
        if (c->try_u64 == TRY_OK) {
            if (c->u_uint && (c->u_sint || c->u_null)) return CK_OBJECT_RAW; /* ValueError */
            if (c->u_sint) return CK_OBJECT;                                  /* OverflowError */
            return CK_UINT64;
        }
    }
    if (c->try_f64 == TRY_OK) return CK_FLOAT64;
    if (c->try_bool == TRY_OK) return c->na ? CK_BOOL_NA : CK_BOOL;
    return CK_OBJECT;
}

table_dtype csv_kind_dtype(csv_kind k) {
    switch (k) {
    case CK_INT64: return TD_INT64;
    case CK_INT64_NA: return TD_FLOAT64;
    case CK_UINT64: return TD_UINT64;
    case CK_FLOAT64: return TD_FLOAT64;
    case CK_BOOL: return TD_BOOL;
    default: return TD_OBJECT;
    }
}

/* ------------------------------------------------------------------ CSV header names */

/* A small string map for pandas' duplicate-name mangling ("a", "a" -> "a", "a.1"). */
typedef struct smap_ent {
    char *k;
    size_t n;
    size_t count;   /* pandas' `counts` dict */
    size_t present; /* occurrences in the header as renamed so far (`col in this_header`) */
} smap_ent;
typedef struct smap {
    smap_ent *e;
    size_t cap, used;
} smap;

static void smap_free(smap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->e[i].k);
    free(m->e);
    memset(m, 0, sizeof *m);
}

/* Finds or inserts k. An insertion may move the entries: earlier pointers become invalid. */
static smap_ent *smap_get(smap *m, const char *k, size_t n, clip_error *err) {
    if (m->cap) {
        size_t j = (size_t)clip_fnv1a64(k, n) & (m->cap - 1);
        for (; m->e[j].k; j = (j + 1) & (m->cap - 1))
            if (m->e[j].n == n && memcmp(m->e[j].k, k, n) == 0) return &m->e[j];
    }
    if ((m->used + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        smap_ent *ne = calloc(ncap, sizeof *ne);
        if (!ne) {
            clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header names)");
            return NULL;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->e[i].k) continue;
            size_t j = (size_t)clip_fnv1a64(m->e[i].k, m->e[i].n) & (ncap - 1);
            while (ne[j].k) j = (j + 1) & (ncap - 1);
            ne[j] = m->e[i];
        }
        free(m->e);
        m->e = ne;
        m->cap = ncap;
    }
    size_t j = (size_t)clip_fnv1a64(k, n) & (m->cap - 1);
    while (m->e[j].k) j = (j + 1) & (m->cap - 1);
    m->e[j].k = malloc(n + 1);
    if (!m->e[j].k) {
        clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header names)");
        return NULL;
    }
    memcpy(m->e[j].k, k, n);
    m->e[j].k[n] = '\0';
    m->e[j].n = n;
    m->e[j].count = m->e[j].present = 0;
    m->used++;
    return &m->e[j];
}

/* Column names from the header record: "Unnamed: i" for empty names, then pandas 1.5.3's
 * mangle_dupe_cols (named columns first, then the unnamed ones). */
clip_status csv_header_columns(table_schema *s, const src *in, clip_error *err) {
    size_t h = in->nfields;
    clip_status st = CLIP_OK;
    clip_buf *names = calloc(h ? h : 1, sizeof *names);
    size_t *order = malloc((h ? h : 1) * sizeof *order);
    smap m = {0};
    if (!names || !order) {
        st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header)");
        goto done;
    }
    size_t no = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < h; i++) {
            const csv_field *f = &in->fields[i];
            int unnamed = f->val_len == 0;
            if (pass == 0) {
                if (unnamed ? !clip_buf_printf(&names[i], "Unnamed: %zu", i)
                            : !clip_buf_append(&names[i], in->vals.data + f->val_start, f->val_len)) {
                    st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header)");
                    goto done;
                }
                smap_ent *e = smap_get(&m, names[i].data, names[i].len, err);
                if (!e) {
                    st = CLIP_ERR_NOMEM;
                    goto done;
                }
                e->present++;
            }
            if ((pass == 0) != unnamed) order[no++] = i;
        }
    }
    for (size_t o = 0; o < h; o++) {
        size_t i = order[o];
        clip_buf col = {0};
        smap_ent *e = smap_get(&m, names[i].data, names[i].len, err);
        if (!e) {
            st = CLIP_ERR_NOMEM;
            goto done;
        }
        size_t cur = e->count;
        int renamed = cur > 0;
        while (cur > 0) {
            e = smap_get(&m, names[i].data, names[i].len, err); /* re-fetched: inserts move */
            e->count = cur + 1;
            col.len = 0;
            if (!clip_buf_append(&col, names[i].data, names[i].len) ||
                !clip_buf_printf(&col, ".%zu", cur) ||
                !(e = smap_get(&m, col.data, col.len, err))) {
                clip_buf_free(&col);
                st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header)");
                goto done;
            }
            cur = e->present ? cur + 1 : e->count;
        }
        if (renamed) {
            smap_ent *old = smap_get(&m, names[i].data, names[i].len, err);
            old->present--;
            clip_buf_free(&names[i]);
            names[i] = col;
            e = smap_get(&m, names[i].data, names[i].len, err);
            e->present++;
        }
        e->count = cur + 1;
    }
    for (size_t i = 0; i < h; i++) {
        int c;
        if (schema_lookup(s, names[i].data, names[i].len) >= 0) {
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: duplicate column name after mangling", in->path);
            goto done;
        }
        if ((st = schema_add(s, names[i].data, names[i].len, &c, err))) goto done;
    }
done:
    if (names)
        for (size_t i = 0; i < h; i++) clip_buf_free(&names[i]);
    free(names);
    free(order);
    smap_free(&m);
    return st;
}

/* ------------------------------------------------------------------ Python's csv output */

/* QUOTE_MINIMAL with lineterminator "\n": quote when the field holds ',', '"' or '\n'. The
 * verbatim writer also quotes '\r', which pandas' reader would otherwise take as a line end. */
void csv_field_out(clip_buf *b, const char *s, size_t n, int quote_cr) {
    int q = 0;
    for (size_t i = 0; i < n && !q; i++)
        q = s[i] == ',' || s[i] == '"' || s[i] == '\n' || (quote_cr && s[i] == '\r');
    if (!q) {
        clip_buf_append(b, s, n);
        return;
    }
    clip_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') clip_buf_putc(b, '"');
        clip_buf_putc(b, s[i]);
    }
    clip_buf_putc(b, '"');
}

/* to_csv's text of a cell: NaN/None empty, floats repr, lists/dicts repr (str()). */
clip_status held_csv_text(clip_buf *b, const held *h, const char *text, int ujson,
                          clip_error *err) {
    switch (h->k) {
    case H_MISSING:
    case H_NULL_NAN:
    case H_NONE: break; /* isna(): na_rep "" */
    case H_FLOAT:
        if (isnan(h->d)) break;
        return held_str(b, h, text, ujson, 0, err);
    default: return held_str(b, h, text, ujson, 0, err);
    }
    return oom_status(b, err);
}
