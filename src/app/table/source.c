/* source.c — buffered input for the table readers: bytes, universal-newline line counting,
 * the row-size limit, and a JSON record's text parsed into an object (or an invalid row). */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

clip_status src_open(src *s, const char *path, table_format fmt, const table_limits *lim,
                     clip_error *err) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->fmt = fmt;
    s->max_row = lim && lim->max_row_bytes ? lim->max_row_bytes : DEFAULT_MAX_ROW;
    s->max_depth = lim && lim->max_depth > 0 ? lim->max_depth : JSON_DEFAULT_MAX_DEPTH;
    s->line = 1;
    s->fkeep = (size_t)-1;
    int is_stdin = !strcmp(path, "-");
    s->path = strdup(is_stdin ? "stdin" : path);
    s->buf = malloc(READ_CHUNK);
    if (!s->path || !s->buf) return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", path);
    if (is_stdin) {
        s->fd = STDIN_FILENO;
        s->borrowed = 1;
    } else {
        s->fd = open(path, O_RDONLY);
    }
    if (s->fd < 0) {
        int e = errno;
        return clip_fail(err, e == ENOENT ? CLIP_ERR_NOT_FOUND : CLIP_ERR_IO, "%s: cannot open: %s",
                         path, strerror(e));
    }
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return clip_fail(err, CLIP_ERR_IO, "%s: cannot stat: %s", s->path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return clip_fail(err, CLIP_ERR_IO, "%s: is a folder, not a %s file", path,
                         table_format_name(fmt));
    /* The table is read more than once, each pass from its own offset (pread). */
    if (!S_ISREG(st.st_mode))
        return clip_fail(err, CLIP_ERR_IO, "%s: not a regular file: a pipe or device cannot be read "
                         "the several times a table needs (`clipeval score --input -` copies "
                         "standard input first)", s->path);
    return CLIP_OK;
}

void src_close(src *s) {
    if (s->fd >= 0 && !s->borrowed) close(s->fd);
    free(s->path);
    free(s->buf);
    free(s->fields);
    clip_buf_free(&s->raw);
    clip_buf_free(&s->head);
    clip_buf_free(&s->sep);
    clip_buf_free(&s->tail);
    clip_buf_free(&s->vals);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

/* The next byte without consuming it: 0..255, -1 at the end, -2 on a read error (err set). */
int src_peek(src *s, clip_error *err) {
    if (s->pos < s->len) return (unsigned char)s->buf[s->pos];
    if (s->eof) return -1;
    for (;;) {
        ssize_t r = pread(s->fd, s->buf, READ_CHUNK, s->off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            clip_fail(err, CLIP_ERR_IO, "%s: read error: %s", s->path, strerror(errno));
            return -2;
        }
        s->pos = 0;
        s->len = (size_t)r;
        s->off += r;
        if (r == 0) {
            s->eof = 1;
            return -1;
        }
        return (unsigned char)s->buf[0];
    }
}

/* A UTF-8 BOM at the very start of the file is skipped and remembered (s->bom), as pandas'
 * CSV tokenizer does (CHECK_FOR_BOM). clipeval does the same for JSONL and JSON, where Python's
 * utf-8 codec keeps U+FEFF and DataFlow's reader drops the first record as invalid JSON (and
 * pd.read_json fails): files from Excel and Windows tools carry one. */
clip_status src_skip_bom(src *s, clip_error *err) {
    if (s->any != 0) return CLIP_OK;
    int c = src_peek(s, err);
    if (c == -2) return CLIP_ERR_IO;
    if (c == 0xEF && s->len - s->pos >= 3 && (unsigned char)s->buf[s->pos + 1] == 0xBB &&
        (unsigned char)s->buf[s->pos + 2] == 0xBF) {
        s->pos += 3;
        s->any += 3;
        s->bom = 1;
    }
    return CLIP_OK;
}

/* Consumes the byte src_peek returned, counting lines the way Python's universal newlines do
 * (\n, \r\n and a lone \r each end one line). */
clip_status src_take(src *s, int c, clip_error *err) {
    s->pos++;
    s->any++;
    if (c == '\n') {
        s->line++;
    } else if (c == '\r') {
        int n = src_peek(s, err);
        if (n == -2) return CLIP_ERR_IO;
        if (n != '\n') s->line++;
    }
    return CLIP_OK;
}

/* Appends to the current record, keeping only the first max_row bytes. */
clip_status raw_put(src *s, const char *p, size_t n, clip_error *err) {
    if (s->raw.len + n > s->max_row) {
        s->too_long = 1;
        n = s->max_row > s->raw.len ? s->max_row - s->raw.len : 0;
    }
    if (n && !clip_buf_append(&s->raw, p, n))
        return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
    return CLIP_OK;
}

void rec_reset(src *s) {
    s->raw.len = 0;
    if (s->raw.data) s->raw.data[0] = '\0';
    s->too_long = 0;
    s->term[0] = '\0';
    s->nfields = 0;
    s->fstop = s->fkeep;
    s->vals.len = 0;
    s->unterminated = 0;
}

/* The length of the run of buffered bytes from pos that holds none of stop[0..nstop): the
 * tokenizers copy such runs in one go instead of byte by byte. Never crosses a line break
 * unless one is listed, so src_take keeps counting lines. */
size_t src_run(const src *s, const char *stop, int nstop) {
    size_t i = s->pos;
    while (i < s->len) {
        char c = s->buf[i];
        int hit = 0;
        for (int k = 0; k < nstop && !hit; k++) hit = c == stop[k];
        if (hit) break;
        i++;
    }
    return i - s->pos;
}

/* Consumes n ordinary bytes from the buffer into the record. */
clip_status src_copy_run(src *s, size_t n, clip_error *err) {
    clip_status st = raw_put(s, s->buf + s->pos, n, err);
    s->pos += n;
    s->any += n;
    return st;
}

/* ------------------------------------------------------------------ a JSON record */

/* Rewrites json.c's "what: invalid JSON at line L, column C: msg" for a row whose JSON text
 * starts `skipped` bytes into the line (JSONL lines are stripped first). */
static clip_status row_json_error(const src *s, clip_status code, const char *jmsg,
                                  size_t skipped, clip_error *err) {
    const char *p = strstr(jmsg, "invalid JSON at line ");
    size_t l = 1, c = 1;
    int off = 0;
    const char *msg = jmsg;
    if (p && sscanf(p, "invalid JSON at line %zu, column %zu: %n", &l, &c, &off) == 2 && off > 0)
        msg = p + off;
    if (s->fmt == TABLE_JSONL)
        return clip_fail(err, code, "%s: line %zu: invalid JSON at column %zu: %s", s->path,
                         s->rec_line, c + skipped, msg);
    return clip_fail(err, code, "%s: element %zu (line %zu): invalid JSON at line %zu, column %zu: %s",
                     s->path, s->rec_no, s->rec_line, s->rec_line + l - 1, c, msg);
}

const char *row_where(const src *s, char *buf, size_t cap) {
    if (s->fmt == TABLE_JSON)
        snprintf(buf, cap, "%s: element %zu (line %zu)", s->path, s->rec_no, s->rec_line);
    else if (s->fmt == TABLE_CSV)
        snprintf(buf, cap, "%s: record %zu (line %zu)", s->path, s->rec_no, s->rec_line);
    else
        snprintf(buf, cap, "%s: line %zu", s->path, s->rec_line);
    return buf;
}

/* pandas' ujson decoder fails the whole read_json on an integer it cannot hold; here that makes
 * the element an invalid row. */
static const char *ujson_check(const json_value *v, const char *text) {
    if (v->type == JSON_NUMBER) {
        uj_num n;
        ujson_number(text + v->start, v->end - v->start, &n);
        return n.kind == UJ_ERROR ? n.msg : NULL;
    }
    if (v->type == JSON_ARRAY) {
        for (size_t i = 0; i < v->u.arr.n; i++) {
            const char *m = ujson_check(&v->u.arr.items[i], text);
            if (m) return m;
        }
    } else if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->u.obj.n; i++) {
            const char *m = ujson_check(&v->u.obj.members[i].value, text);
            if (m) return m;
        }
    }
    return NULL;
}

/* Parses the current JSONL line / JSON element. *blank = 1 for a JSONL line that strips to
 * nothing (skipped, not an error). On success *doc holds an object whose spans are relative to
 * raw + *off. Invalid rows return CLIP_ERR_FORMAT or CLIP_ERR_LIMIT. */
clip_status parse_json_row(const src *s, json_doc **doc, size_t *off, int *blank,
                           clip_error *err) {
    char where[4200];
    *doc = NULL;
    *blank = 0;
    *off = 0;
    const char *text = s->raw.data ? s->raw.data : "";
    size_t b = 0, e = s->raw.len;
    if (s->too_long)
        return clip_fail(err, CLIP_ERR_LIMIT, "%s: longer than %zu bytes (max_row_bytes)",
                         row_where(s, where, sizeof where), s->max_row);
    if (!py_utf8_valid(text, e))
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: invalid UTF-8", row_where(s, where, sizeof where));
    if (s->fmt == TABLE_JSONL) {
        py_strip(text, &b, &e);
        if (b == e) {
            *blank = 1;
            return CLIP_OK;
        }
    }
    clip_error jerr = {0};
    clip_status st = json_parse(text + b, e - b, "row", s->max_depth, doc, &jerr);
    if (st == CLIP_ERR_NOMEM)
        return clip_fail(err, st, "%s: out of memory", row_where(s, where, sizeof where));
    if (st) return row_json_error(s, st == CLIP_ERR_LIMIT ? st : CLIP_ERR_FORMAT, jerr.msg, b, err);
    const json_value *root = json_doc_root(*doc);
    if (root->type != JSON_OBJECT) {
        json_type t = root->type;
        json_doc_free(*doc);
        *doc = NULL;
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: not a JSON object (a record) but %s %s",
                         row_where(s, where, sizeof where), t == JSON_ARRAY ? "an" : "a",
                         json_type_name(t));
    }
    if (s->fmt == TABLE_JSON) {
        const char *m = ujson_check(root, text + b);
        if (m) {
            json_doc_free(*doc);
            *doc = NULL;
            return clip_fail(err, CLIP_ERR_FORMAT,
                             "%s: pandas' JSON decoder rejects a number: %s",
                             row_where(s, where, sizeof where), m);
        }
    }
    *off = b;
    return CLIP_OK;
}


/* A row-level failure: counted and skipped with skip_invalid, else the scan stops. */
int row_error(clip_status st) { return st == CLIP_ERR_FORMAT || st == CLIP_ERR_LIMIT; }
