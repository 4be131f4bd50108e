/* jsonl.c — JSONL lines, as DataFlow's reader splits them (Python text mode). */
#include "internal.h"

#include <string.h>

/* Reads one physical line (universal newlines) into raw; *got = 0 at the end of the file. */
clip_status jsonl_next_line(src *s, int *got, clip_error *err) {
    rec_reset(s);
    *got = 0;
    clip_status st0 = src_skip_bom(s, err);
    if (st0) return st0;
    s->rec_line = s->line;
    int any = 0;
    for (;;) {
        if (s->pos == s->len) {
            int c = src_peek(s, err);
            if (c == -2) return CLIP_ERR_IO;
            if (c == -1) break;
        }
        /* Copy the run up to the next line break in one go. */
        size_t i = s->pos;
        while (i < s->len && s->buf[i] != '\n' && s->buf[i] != '\r') i++;
        if (i > s->pos) {
            any = 1;
            clip_status st = raw_put(s, s->buf + s->pos, i - s->pos, err);
            if (st) return st;
            s->any += i - s->pos;
            s->pos = i;
            continue;
        }
        int c = (unsigned char)s->buf[s->pos];
        clip_status st = src_take(s, c, err);
        if (st) return st;
        any = 1;
        if (c == '\r') {
            int n = src_peek(s, err);
            if (n == -2) return CLIP_ERR_IO;
            if (n == '\n') {
                if ((st = src_take(s, n, err))) return st;
                memcpy(s->term, "\r\n", 3);
            } else {
                memcpy(s->term, "\r", 2);
            }
        } else {
            memcpy(s->term, "\n", 2);
        }
        break;
    }
    if (!any) return CLIP_OK;
    s->rec_no++;
    *got = 1;
    return CLIP_OK;
}
