/* filter.c — the three CLIP operators' values, the keep rules and --scores-out (filter.h). */
#include "filter.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char *row_outcome_name(row_outcome o) {
    switch (o) {
    case ROW_SCORED: return "scored";
    case ROW_IMAGE_FAILED: return "image_failed";
    case ROW_EMPTY_TEXT: return "empty_text";
    case ROW_TEXT_TOO_LONG: return "text_too_long";
    }
    return "?";
}

double filter_value(clip_table_mode mode, row_outcome o, double cos) {
    double v;
    switch (mode) {
    case CLIP_MODE_THRESHOLD:
        /* ImageClipFilter: `if not (0 <= sim <= 1): sim = max(min(sim, 1), 0)`; a NaN stays NaN
         * (Python's min/max return their first argument when comparisons are false). */
        if (o != ROW_SCORED) return 0.0;
        v = cos;
        if (v > 1.0) v = 1.0;
        if (v < 0.0) v = 0.0;
        return v;
    case CLIP_MODE_KEEP_RATIO:
        return o == ROW_SCORED ? cos : NAN;
    case CLIP_MODE_SCORE:
    default:
        if (o != ROW_SCORED) return 0.0;
        v = (cos + 1.0) / 2.0;
        if (v > 1.0) v = 1.0;
        if (v < 0.0) v = 0.0;
        return v;
    }
}

int filter_keeps(clip_table_mode mode, double value, double cutoff) {
    if (mode == CLIP_MODE_SCORE) return 1;
    return value >= cutoff;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double filter_percentile(double *v, size_t n, double keep_ratio) {
    qsort(v, n, sizeof *v, cmp_double);
    /* CLIPScoreFilter: np.percentile(valid, (1 - keep_ratio) * 100); percentile divides by 100
     * again (np.true_divide), so q is not always keep_ratio's complement to the last bit. */
    double q = ((1.0 - keep_ratio) * 100.0) / 100.0;
    double vi = (double)(n - 1) * q;
    if (vi >= (double)(n - 1)) return v[n - 1];
    if (vi < 0.0) return v[0];
    double below = floor(vi);
    size_t i = (size_t)below;
    double a = v[i], b = v[i + 1], t = vi - below;
    /* numpy's _lerp: a + (b - a) * t, or b - (b - a) * (1 - t) from t = 0.5 on (monotone and
     * exact at both ends) */
    double d = b - a;
    return t >= 0.5 ? b - d * (1.0 - t) : a + d * t;
}

/* ------------------------------------------------------------------ --scores-out */

struct scores_out {
    outfile *out;
    clip_buf line;
};

clip_status scores_out_open(const char *path, files_registry *reg, scores_out **out,
                            clip_error *err) {
    *out = NULL;
    scores_out *s = calloc(1, sizeof *s);
    if (!s) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    clip_status st = outfile_open(path, reg, NULL, &s->out, err);
    if (st) {
        free(s);
        clip_fail_prefix(err, "--scores-out: ");
        return st;
    }
    *out = s;
    return CLIP_OK;
}

clip_status scores_out_row(scores_out *s, size_t row, size_t line, double value, row_outcome o,
                           int kept, clip_error *err) {
    clip_buf *b = &s->line;
    b->len = 0;
    clip_buf_printf(b, "{\"row\": %zu, \"line\": %zu, \"similarity\": ", row, line);
    if (isfinite(value)) {
        char num[40];
        int n = clip_format_double_repr(value, num);
        clip_buf_append(b, num, (size_t)n);
    } else {
        clip_buf_puts(b, "null");
    }
    clip_buf_printf(b, ", \"status\": \"%s\", \"kept\": %s}\n", row_outcome_name(o),
                    kept ? "true" : "false");
    if (b->oom) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    if (fwrite(b->data, 1, b->len, outfile_stream(s->out)) != b->len)
        return clip_fail(err, CLIP_ERR_IO, "--scores-out: %s: write error: %s",
                         outfile_name(s->out), strerror(errno));
    return CLIP_OK;
}

static void scores_out_free(scores_out *s) {
    clip_buf_free(&s->line);
    free(s);
}

clip_status scores_out_commit(scores_out *s, clip_error *err) {
    clip_status st = outfile_commit(s->out, err);
    if (st) clip_fail_prefix(err, "--scores-out: ");
    scores_out_free(s);
    return st;
}

void scores_out_abort(scores_out *s) {
    if (!s) return;
    outfile_abort(s->out);
    scores_out_free(s);
}
