/* writer.c — the output table: the input rows copied with only the score changed, or
 * written as pandas' to_json/to_csv would. */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"

struct table_writer {
    char *path;
    outfile *out;
    FILE *f; /* outfile_stream(out) */
    table_write_options o;
    char *key;
    size_t keylen;
    const table_schema *s;
    int verbatim;  /* default mode, same format: copy rows, change only the score */
    int score_col; /* the key's column in the schema, or -1 */
    size_t nrows;
    clip_buf line;
};

static void writer_free(table_writer *w) {
    if (!w) return;
    free(w->path);
    free(w->key);
    clip_buf_free(&w->line);
    free(w);
}

static clip_status writer_put(table_writer *w, const clip_buf *b, clip_error *err) {
    if (b->oom) return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", w->path);
    if (b->len && fwrite(b->data, 1, b->len, w->f) != b->len)
        return clip_fail(err, CLIP_ERR_IO, "%s: write error: %s", outfile_name(w->out),
                         strerror(errno));
    return CLIP_OK;
}

/* The score as the output shows it: Python repr (verbatim), or pandas' float64 column. */
static void score_text(clip_buf *b, const table_writer *w, double score) {
    if (!w->verbatim) {
        if (w->o.fmt == TABLE_CSV)
            py_repr_float(b, score);
        else
            ujson_double(b, score);
    } else if (w->o.fmt != TABLE_CSV && !isfinite(score)) {
        clip_buf_puts(b, isnan(score) ? "NaN" : score > 0 ? "Infinity" : "-Infinity");
    } else {
        py_repr_float(b, score);
    }
}

clip_status table_writer_open(const char *path, const table_write_options *o,
                              const table_schema *s, table_format in_fmt, table_writer **out,
                              clip_error *err) {
    *out = NULL;
    if (!path || !*path || !o || !s || (o->score_key && !*o->score_key))
        return clip_fail(err, CLIP_ERR_ARG, "table_writer_open: missing path, options or schema, or an empty key");
    if ((unsigned)o->fmt > TABLE_CSV || s->fmt != in_fmt)
        return clip_fail(err, CLIP_ERR_ARG, "%s: output format or input format does not match the schema", path);
    table_writer *w = calloc(1, sizeof *w);
    if (!w) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    w->o = *o;
    w->s = s;
    w->path = strdup(path);
    w->key = o->score_key ? strdup(o->score_key) : NULL;
    if (!w->path || (o->score_key && !w->key)) {
        writer_free(w);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    w->keylen = w->key ? strlen(w->key) : 0;
    w->score_col = w->key ? schema_lookup(s, w->key, w->keylen) : -1;
    w->verbatim = !o->pandas_compat && o->fmt == in_fmt;
    clip_status st = outfile_open(path, o->registry, o->hook, &w->out, err);
    if (st) {
        writer_free(w);
        return st;
    }
    w->f = outfile_stream(w->out);
    /* What comes before the first row. */
    clip_buf *b = &w->line;
    b->len = 0;
    if (w->verbatim && s->bom) clip_buf_puts(b, "\xEF\xBB\xBF");
    if (w->verbatim && o->fmt == TABLE_CSV) {
        clip_buf_append(b, s->csv_header.data ? s->csv_header.data : "", s->csv_header.len);
        if (w->key && w->score_col < 0) {
            clip_buf_putc(b, ',');
            csv_field_out(b, w->key, w->keylen, 1);
        }
        clip_buf_puts(b, s->csv_header_term);
    } else if (!w->verbatim && o->fmt == TABLE_JSON) {
        clip_buf_puts(b, "[\n");
    } else if (!w->verbatim && o->fmt == TABLE_CSV) {
        size_t n = s->ncols + (w->key && w->score_col < 0);
        for (size_t c = 0; c < n; c++) {
            const char *name = c < s->ncols ? s->cols[c].name : w->key;
            size_t len = c < s->ncols ? s->cols[c].len : w->keylen;
            if (c) clip_buf_putc(b, ',');
            if (n == 1 && len == 0)
                clip_buf_puts(b, "\"\"");
            else
                csv_field_out(b, name, len, 0);
        }
        clip_buf_putc(b, '\n');
    }
    if ((st = writer_put(w, b, err))) {
        table_writer_abort(w);
        return st;
    }
    *out = w;
    return CLIP_OK;
}

/* A JSON object's text with the score member set: existing members named key get the new value
 * in place; otherwise the member is added after the last one, with the object's own separator
 * and indentation when mimic is set (JSON arrays), compact otherwise (JSONL). */
static void object_with_score(clip_buf *b, const char *text, const json_value *root,
                              const char *key, size_t keylen, const char *val, size_t vlen,
                              int mimic) {
    const json_member *m = root->u.obj.members;
    size_t n = root->u.obj.n, pos = root->start;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].key_len != keylen || memcmp(m[i].key, key, keylen)) continue;
        clip_buf_append(b, text + pos, m[i].value.start - pos);
        clip_buf_append(b, val, vlen);
        pos = m[i].value.end;
        found = 1;
    }
    if (found) {
        clip_buf_append(b, text + pos, root->end - pos);
        return;
    }
    size_t at = n ? m[n - 1].value.end : root->start + 1;
    clip_buf_append(b, text + root->start, at - root->start);
    if (n) {
        if (mimic && n >= 2) {
            clip_buf_append(b, text + m[n - 2].value.end, m[n - 1].key_start - m[n - 2].value.end);
        } else {
            clip_buf_putc(b, ',');
            /* One member shows no separator: reuse the line break and indentation before it,
             * or on one line a space when its key and value are spaced. */
            const char *ws = text + root->start + 1;
            size_t wn = m[0].key_start - root->start - 1;
            if (mimic && memchr(ws, '\n', wn))
                clip_buf_append(b, ws, wn);
            else if (mimic && memchr(text + m[0].key_end, ' ', m[0].value.start - m[0].key_end))
                clip_buf_putc(b, ' ');
        }
    }
    json_write_string(b, key, keylen, 0);
    if (n && mimic)
        clip_buf_append(b, text + m[n - 1].key_end, m[n - 1].value.start - m[n - 1].key_end);
    else
        clip_buf_putc(b, ':');
    clip_buf_append(b, val, vlen);
    clip_buf_append(b, text + at, root->end - at);
}

static clip_status row_verbatim(table_writer *w, const table_row *row, const char *val,
                                size_t vlen, clip_buf *b) {
    const src *in = &row->r->in;
    const char *raw = in->raw.data ? in->raw.data : "";
    if (in->fmt == TABLE_CSV && !w->key) {
        clip_buf_append(b, raw, in->raw.len);
        clip_buf_puts(b, in->term);
        return CLIP_OK;
    }
    if (in->fmt == TABLE_CSV) {
        size_t f = in->nfields, h = w->s->csv_header_fields;
        int k = w->score_col;
        if (k >= 0 && (size_t)k < f) {
            clip_buf_append(b, raw, in->fields[k].raw_start);
            clip_buf_append(b, val, vlen);
            clip_buf_append(b, raw + in->fields[k].raw_end, in->raw.len - in->fields[k].raw_end);
        } else {
            /* Short records get empty fields up to the score's column. */
            size_t pad = k >= 0 ? (size_t)k - f : h - f;
            clip_buf_append(b, raw, in->raw.len);
            for (size_t i = 0; i <= pad; i++) clip_buf_putc(b, ',');
            clip_buf_append(b, val, vlen);
        }
        clip_buf_puts(b, in->term);
        return CLIP_OK;
    }
    size_t off = (size_t)(row->text - raw);
    const json_value *root = row->root;
    if (in->fmt == TABLE_JSON) {
        const char *sep = in->sep.data ? in->sep.data : "";
        size_t slen = in->sep.len;
        if (w->nrows == 0) {
            /* The first row written follows the array's '[' even if earlier elements were
             * skipped: keep the spacing after their comma, not the comma. */
            const char *comma = memchr(sep, ',', slen);
            if (comma) {
                slen -= (size_t)(comma + 1 - sep);
                sep = comma + 1;
            }
            clip_buf_append(b, w->s->json_head.data ? w->s->json_head.data : "", w->s->json_head.len);
        }
        clip_buf_append(b, sep, slen);
    }
    if (!w->key) {
        clip_buf_append(b, raw, in->raw.len);
    } else {
        clip_buf_append(b, raw, off + root->start);
        object_with_score(b, row->text, root, w->key, w->keylen, val, vlen,
                          in->fmt == TABLE_JSON);
        clip_buf_append(b, raw + off + root->end, in->raw.len - off - root->end);
    }
    if (in->fmt == TABLE_JSONL) clip_buf_puts(b, in->term);
    return CLIP_OK;
}

static clip_status row_pandas(table_writer *w, const table_row *row, double score, clip_buf *b,
                              clip_error *err) {
    const table_schema *s = w->s;
    int ujson = row->r->in.fmt == TABLE_JSON;
    size_t n = s->ncols + (w->key && w->score_col < 0);
    clip_status st;
    if (w->o.fmt == TABLE_CSV) {
        for (size_t c = 0; c < n; c++) {
            if (c) clip_buf_putc(b, ',');
            clip_buf cell = {0};
            if (c >= s->ncols || (int)c == w->score_col) {
                score_text(&cell, w, score);
            } else {
                held h;
                row_held(row, (int)c, &h);
                if ((st = held_csv_text(&cell, &h, row->text, ujson, err))) {
                    clip_buf_free(&cell);
                    return st;
                }
            }
            if (n == 1 && cell.len == 0)
                clip_buf_puts(b, "\"\"");
            else
                csv_field_out(b, cell.data ? cell.data : "", cell.len, 0);
            int oom = cell.oom;
            clip_buf_free(&cell);
            if (oom) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
        }
        clip_buf_putc(b, '\n');
        return oom_status(b, err);
    }
    int indent = w->o.fmt == TABLE_JSON ? 2 : 0;
    if (indent) {
        if (w->nrows) clip_buf_puts(b, ",\n");
        clip_buf_puts(b, "  {\n");
    } else {
        clip_buf_putc(b, '{');
    }
    for (size_t c = 0; c < n; c++) {
        if (c) clip_buf_puts(b, indent ? ",\n" : ",");
        ujson_indent(b, indent, 2);
        if (c < s->ncols)
            json_write_string(b, s->cols[c].name, s->cols[c].len, 1);
        else
            json_write_string(b, w->key, w->keylen, 1);
        clip_buf_putc(b, ':');
        if (c >= s->ncols || (int)c == w->score_col) {
            score_text(b, w, score);
        } else {
            held h;
            row_held(row, (int)c, &h);
            if ((st = held_json(b, &h, row->text, ujson, indent, 2, err))) return st;
        }
    }
    clip_buf_puts(b, indent ? "\n  }" : "}\n");
    return oom_status(b, err);
}

clip_status table_writer_row(table_writer *w, const table_row *row, double score,
                             clip_error *err) {
    if (!w || !row) return clip_fail(err, CLIP_ERR_ARG, "table_writer_row: no writer or row");
    if (row->r->s != w->s)
        return clip_fail(err, CLIP_ERR_ARG, "table_writer_row: the row comes from another schema");
    clip_buf *b = &w->line;
    b->len = 0;
    clip_status st;
    if (w->verbatim) {
        clip_buf val = {0};
        score_text(&val, w, score);
        st = val.oom ? clip_fail(err, CLIP_ERR_NOMEM, "out of memory")
                     : row_verbatim(w, row, val.data, val.len, b);
        clip_buf_free(&val);
    } else {
        st = row_pandas(w, row, score, b, err);
    }
    if (!st) st = writer_put(w, b, err);
    if (!st) {
        w->nrows++;
        testhook_reached(w->o.hook, "row");
    }
    return st;
}

void table_writer_abort(table_writer *w) {
    if (!w) return;
    outfile_abort(w->out);
    writer_free(w);
}

clip_status table_writer_commit(table_writer *w, clip_error *err) {
    if (!w) return clip_fail(err, CLIP_ERR_ARG, "table_writer_commit: no writer");
    clip_buf *b = &w->line;
    b->len = 0;
    const table_schema *s = w->s;
    if (w->verbatim && w->o.fmt == TABLE_JSON) {
        if (!w->nrows)
            clip_buf_append(b, s->json_head.data ? s->json_head.data : "", s->json_head.len);
        clip_buf_append(b, s->json_tail.data ? s->json_tail.data : "", s->json_tail.len);
    } else if (!w->verbatim && w->o.fmt == TABLE_JSON) {
        clip_buf_puts(b, "\n]");
    } else if (!w->verbatim && w->o.fmt == TABLE_JSONL && !w->nrows) {
        clip_buf_putc(b, '\n'); /* to_json(lines=True) of an empty frame */
    }
    clip_status st = writer_put(w, b, err);
    if (st) {
        table_writer_abort(w);
        return st;
    }
    st = outfile_commit(w->out, err);
    writer_free(w);
    return st;
}
