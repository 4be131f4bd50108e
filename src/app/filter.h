/* filter.h — what a table run does with each row's cosine: DataFlow-MM's three CLIP operators.
 *
 *   mode        operator           value per row                    rows written
 *   SCORE       ImageCLIPEvaluator clamp((cos + 1) / 2, 0, 1);       all, value in the score column
 *                                  0.0 when the row failed
 *   THRESHOLD   ImageClipFilter    clamp(cos, 0, 1); 0.0 on failure  value >= threshold, unchanged
 *                                                                    (no score column)
 *   KEEP_RATIO  CLIPScoreFilter    cos (raw); NaN on failure         value >= numpy's linear
 *                                                                    percentile (1 - keep_ratio)
 *                                                                    of the non-NaN values, with
 *                                                                    the value in the score column
 * cos is the float32 dot product of the L2-normalised embeddings, held as a double (Python's
 * float of torch's result). The scorer (scorer.c) computes every row's cos and outcome once, the
 * same way for all three; only the functions below differ. KEEP_RATIO needs every value before
 * the first row is written: the scorer keeps one double (and one outcome byte) per row and
 * reads the table a second time to write it. */
#ifndef CLIP_FILTER_H
#define CLIP_FILTER_H

#include <stddef.h>

#include "clip.h"
#include "files.h"

typedef enum clip_table_mode {
    CLIP_MODE_SCORE = 0,
    CLIP_MODE_THRESHOLD,
    CLIP_MODE_KEEP_RATIO
} clip_table_mode;

/* What happened to one row. */
typedef enum row_outcome {
    ROW_SCORED = 0,     /* cos is the pair's similarity */
    ROW_IMAGE_FAILED,   /* unreadable image, or an image cell that is not a path */
    ROW_EMPTY_TEXT,     /* empty/blank/missing text, by the mode's rule */
    ROW_TEXT_TOO_LONG   /* above --max-text-bytes */
} row_outcome;

const char *row_outcome_name(row_outcome o); /* "scored", "image_failed", ... */

/* The mode's value of a row (see the table above). */
double filter_value(clip_table_mode mode, row_outcome o, double cos);

/* Whether a row with this value is written. cutoff: the threshold (THRESHOLD) or the percentile
 * (KEEP_RATIO); SCORE keeps every row. A NaN value is never kept (NaN >= x is false). */
int filter_keeps(clip_table_mode mode, double value, double cutoff);

/* np.percentile(v[0..n), (1 - keep_ratio) * 100) with numpy's default linear method (numpy
 * 1.22+: virtual index (n - 1) * q, the neighbours' lerp computed as numpy's _lerp does), for
 * finite v and keep_ratio in [0, 1]. Sorts v in place. n must be >= 1. */
double filter_percentile(double *v, size_t n, double keep_ratio);

/* --scores-out: one JSONL line per row (of the table's valid rows, in order):
 *   {"row": 0, "line": 1, "similarity": 0.1234, "status": "scored", "kept": true}
 * row: the 0-based position (DataFlow's DataFrame index); line: the input line (JSON: element);
 * similarity: the mode's value as Python repr (NaN as null), exactly the value compared with
 * the cutoff. Written through files.h: it appears complete when the run succeeds, or not at all. */
typedef struct scores_out scores_out;
clip_status scores_out_open(const char *path, files_registry *reg, scores_out **out,
                            clip_error *err);
clip_status scores_out_row(scores_out *s, size_t row, size_t line, double value, row_outcome o,
                           int kept, clip_error *err);
clip_status scores_out_commit(scores_out *s, clip_error *err); /* frees s */
void scores_out_abort(scores_out *s);                           /* frees s (NULL is fine) */

#endif
