/* json_array.c — the elements of a top-level JSON array (pd.read_json), one at a time. */
#include "internal.h"

#include <string.h>

static int json_ws(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static clip_status buf_put(src *s, clip_buf *b, int c, clip_error *err) {
    if (b->len >= s->max_row)
        return clip_fail(err, CLIP_ERR_LIMIT,
                         "%s: line %zu: more than %zu bytes of whitespace between array elements",
                         s->path, s->line, s->max_row);
    if (!clip_buf_putc(b, (char)c)) return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
    return CLIP_OK;
}

/* Reads JSON whitespace into b; returns the next byte (not consumed), -1 at the end, -2 on error. */
static int json_skip_ws(src *s, clip_buf *b, clip_error *err) {
    for (;;) {
        int c = src_peek(s, err);
        if (c < 0 || !json_ws(c)) return c;
        if (buf_put(s, b, c, err) || src_take(s, c, err)) return -2;
    }
}

/* Reads the rest of the file after the closing ']' into tail: only whitespace may follow. */
static clip_status json_read_tail(src *s, clip_error *err) {
    int c = json_skip_ws(s, &s->tail, err);
    if (c == -2) return err ? err->code : CLIP_ERR_IO;
    if (c >= 0)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: line %zu: extra data after the JSON array",
                         s->path, s->line);
    s->jstate = JS_DONE;
    return CLIP_OK;
}

/* Reads the next top-level element of the array into raw (the bytes before it into sep).
 * Element boundaries come from bracket and string tracking only; whether the element is valid
 * JSON is decided later by the parser, so a bad element is one invalid row while a broken array
 * (no '[', a missing comma, a trailing comma, an early end) is final. */
clip_status json_next_elem(src *s, int *got, clip_error *err) {
    clip_status st;
    int c;
    *got = 0;
    rec_reset(s);
    s->sep.len = 0;
    if (s->jstate == JS_DONE) return CLIP_OK;
    if (s->jstate == JS_START) {
        if ((st = src_skip_bom(s, err))) return st;
        c = json_skip_ws(s, &s->head, err);
        if (c == -2) return err ? err->code : CLIP_ERR_IO;
        if (c == -1)
            return clip_fail(err, CLIP_ERR_FORMAT, "%s: empty file (no JSON array)", s->path);
        if (c != '[')
            return clip_fail(err, CLIP_ERR_FORMAT,
                             "%s: line %zu: expected a JSON array of records ('[')", s->path,
                             s->line);
        if ((st = buf_put(s, &s->head, c, err)) || (st = src_take(s, c, err))) return st;
        s->jstate = JS_FIRST;
    }
    c = json_skip_ws(s, &s->sep, err);
    if (c == -2) return err ? err->code : CLIP_ERR_IO;
    if (s->jstate == JS_AFTER) {
        if (c == ',') {
            if ((st = buf_put(s, &s->sep, c, err)) || (st = src_take(s, c, err))) return st;
            c = json_skip_ws(s, &s->sep, err);
            if (c == -2) return err ? err->code : CLIP_ERR_IO;
            if (c == ']')
                return clip_fail(err, CLIP_ERR_FORMAT,
                                 "%s: line %zu: trailing comma after element %zu of the JSON array",
                                 s->path, s->line, s->rec_no);
        } else if (c != ']' && c != -1) {
            return clip_fail(err, CLIP_ERR_FORMAT,
                             "%s: line %zu: expected ',' or ']' after element %zu of the JSON array",
                             s->path, s->line, s->rec_no);
        }
    }
    if (c == -1)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: line %zu: the JSON array is not closed",
                         s->path, s->line);
    if (c == ']' && (s->jstate == JS_FIRST || s->jstate == JS_AFTER)) {
        /* The tail keeps everything after the last element: whitespace, ']' and what follows. */
        if (s->sep.len && !clip_buf_append(&s->tail, s->sep.data, s->sep.len))
            return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
        s->sep.len = 0;
        if ((st = buf_put(s, &s->tail, c, err)) || (st = src_take(s, c, err))) return st;
        return json_read_tail(s, err);
    }
    /* One element: containers end at their matching bracket, scalars at ',', ']' or space. */
    s->rec_no++;
    s->rec_line = s->line;
    size_t depth = 0;
    int in_str = 0, esc = 0, started = 0;
    for (;;) {
        c = src_peek(s, err);
        if (c == -2) return CLIP_ERR_IO;
        if (c == -1)
            return clip_fail(err, CLIP_ERR_FORMAT,
                             "%s: element %zu (line %zu): the file ends inside this element",
                             s->path, s->rec_no, s->rec_line);
        if (!in_str && depth == 0 && started && (c == ',' || c == ']' || json_ws(c))) break;
        int done = 0;
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"') {
                in_str = 0;
                done = depth == 0;
            }
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) break; /* a stray closer: the parser will reject the element */
            done = --depth == 0;
        }
        char ch = (char)c;
        if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
        started = 1;
        if (done) break;
        size_t run = in_str ? (esc ? 0 : src_run(s, "\"\\\n\r", 4))
                            : src_run(s, "\"{}[], \t\n\r", 11);
        if (run && (st = src_copy_run(s, run, err))) return st;
    }
    s->jstate = JS_AFTER;
    *got = 1;
    return CLIP_OK;
}
