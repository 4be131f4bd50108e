/* reader.c — pass 2 (table_reader_*): rows one at a time, and their cells. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

clip_status table_reader_open(const char *path, table_format fmt, const table_schema *s,
                              const table_limits *lim, table_reader **out, clip_error *err) {
    *out = NULL;
    if (!path || !s) return clip_fail(err, CLIP_ERR_ARG, "table_reader_open: no path or schema");
    if (s->fmt != fmt)
        return clip_fail(err, CLIP_ERR_ARG, "%s: the schema was scanned as %s, not %s", path,
                         table_format_name(s->fmt), table_format_name(fmt));
    table_reader *r = calloc(1, sizeof *r);
    if (!r) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    clip_status st = src_open(&r->in, path, fmt, lim, err);
    if (st) {
        src_close(&r->in);
        free(r);
        return st;
    }
    r->s = s;
    r->row.r = r;
    *out = r;
    return CLIP_OK;
}

void table_reader_close(table_reader *r) {
    if (!r) return;
    json_doc_free(r->doc);
    rowmap_free(&r->m);
    src_close(&r->in);
    free(r);
}

int table_reader_skippable(const table_reader *r) { return r && !r->fatal && r->skippable; }

const char *table_reader_last_raw(const table_reader *r, size_t *len) {
    if (!r || !r->have_raw) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = r->in.raw.len;
    return r->in.raw.data ? r->in.raw.data : "";
}

static clip_status reader_fatal(table_reader *r, clip_status st, clip_error *err) {
    r->fatal = st;
    if (err) snprintf(r->fatal_msg, sizeof r->fatal_msg, "%s", err->msg);
    return st;
}

clip_status table_reader_next(table_reader *r, table_row **row, clip_error *err) {
    *row = NULL;
    if (!r) return clip_fail(err, CLIP_ERR_ARG, "table_reader_next: no reader");
    if (r->fatal) return clip_fail(err, r->fatal, "%s", r->fatal_msg);
    json_doc_free(r->doc);
    r->doc = NULL;
    r->skippable = r->have_raw = 0;
    src *in = &r->in;
    clip_status st;
    int got;
    if (in->fmt == TABLE_CSV) {
        size_t h = r->s->csv_header_fields;
        if (!r->header_done) {
            if ((st = csv_next_record(in, &got, err))) return reader_fatal(r, st, err);
            if (!got || in->nfields != h) {
                st = clip_fail(err, CLIP_ERR_FORMAT, "%s: the header changed since the scan", in->path);
                return reader_fatal(r, st, err);
            }
            in->fkeep = h + 1;
            r->header_done = 1;
        }
        if ((st = csv_next_record(in, &got, err))) return reader_fatal(r, st, err);
        if (!got) return CLIP_OK;
        if ((st = check_csv_record(in, h, err))) {
            if (!row_error(st)) return reader_fatal(r, st, err);
            r->skippable = r->have_raw = 1;
            return st;
        }
        r->row.line = in->rec_line;
        r->row.root = NULL;
        r->row.text = in->raw.data ? in->raw.data : "";
        *row = &r->row;
        return CLIP_OK;
    }
    for (;;) {
        st = in->fmt == TABLE_JSON ? json_next_elem(in, &got, err) : jsonl_next_line(in, &got, err);
        if (st) return reader_fatal(r, st, err);
        if (!got) return CLIP_OK;
        size_t off;
        int blank, unknown = 0;
        st = parse_json_row(in, &r->doc, &off, &blank, err);
        if (st) {
            if (!row_error(st)) return reader_fatal(r, st, err);
            r->skippable = r->have_raw = 1;
            return st;
        }
        if (blank) continue;
        const json_value *root = json_doc_root(r->doc);
        /* The schema is not changed (add = 0): the const cast only reaches rowmap_build. */
        if ((st = rowmap_build(&r->m, (table_schema *)r->s, root, 0, &unknown, err)))
            return reader_fatal(r, st, err);
        if (unknown) {
            char where[4200];
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: a key that was not there when the file was "
                           "scanned (the file changed)", row_where(in, where, sizeof where));
            return reader_fatal(r, st, err);
        }
        r->row.line = in->fmt == TABLE_JSON ? in->rec_no : in->rec_line;
        r->row.root = root;
        r->row.text = in->raw.data + off;
        *row = &r->row;
        return CLIP_OK;
    }
}

size_t table_row_line(const table_row *row) { return row ? row->line : 0; }

/* The JSON value of a column in this row, NULL when the key is absent. */
static const json_value *row_cell(const table_row *row, int col) {
    const rowmap *m = &row->r->m;
    if (!row->root || col < 0 || (size_t)col >= m->cap || m->stamp[col] != m->gen) return NULL;
    return &row->root->u.obj.members[m->midx[col]].value;
}

void row_held(const table_row *row, int col, held *h) {
    const table_reader *r = row->r;
    const column *c = &r->s->cols[col];
    memset(h, 0, sizeof *h);
    if (r->in.fmt == TABLE_CSV) {
        const src *in = &r->in;
        int missing = (size_t)col >= in->nfields;
        const char *w = missing ? "" : in->vals.data + in->fields[col].val_start;
        csv_held(c, w, missing, h);
    } else {
        json_held(c, row_cell(row, col), row->text, r->in.fmt == TABLE_JSON, h);
    }
}

static int valid_col(const table_row *row, int col) {
    return row && col >= 0 && (size_t)col < row->r->s->ncols;
}

table_kind table_row_kind(const table_row *row, int col) {
    if (!valid_col(row, col)) return TK_MISSING;
    held h;
    row_held(row, col, &h);
    switch (h.k) {
    case H_MISSING: return TK_MISSING;
    case H_NULL_NAN:
    case H_NONE: return TK_NULL;
    case H_BOOL: return TK_BOOL;
    case H_INT: return TK_INT;
    case H_FLOAT: return TK_FLOAT;
    case H_STR: return TK_STRING;
    case H_LIST: return TK_LIST;
    case H_DICT: return TK_DICT;
    }
    return TK_MISSING;
}

const char *table_row_string(const table_row *row, int col, size_t *len) {
    if (len) *len = 0;
    if (!valid_col(row, col)) return NULL;
    held h;
    row_held(row, col, &h);
    if (h.k != H_STR) return NULL;
    if (len) *len = h.n;
    return h.s;
}

clip_status table_row_text(const table_row *row, const table_schema *s, int col, clip_buf *out,
                           clip_error *err) {
    if (!row || !out) return clip_fail(err, CLIP_ERR_ARG, "table_row_text: no row or buffer");
    if (s && s != row->r->s)
        return clip_fail(err, CLIP_ERR_ARG, "table_row_text: the row comes from another schema");
    if (!valid_col(row, col))
        return clip_fail(err, CLIP_ERR_ARG, "table_row_text: no column %d", col);
    out->len = 0;
    if (!clip_buf_reserve(out, 1)) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (text)");
    out->data[0] = '\0';
    held h;
    row_held(row, col, &h);
    return held_str(out, &h, row->text, row->r->in.fmt == TABLE_JSON, row->r->s->row_float, err);
}
