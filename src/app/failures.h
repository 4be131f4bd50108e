/* failures.h — the rows of a scoring run that got 0.0 because something failed (an image that
 * cannot be read, an image cell that is not a path, a text above --max-text-bytes), told once
 * each: one warning per distinct image (or cell problem) with the number of rows it affected,
 * a summary by reason, the first failure for the exit message, and with --log-failures FILE
 * every failed row as a JSONL line {"line": N, "path": "..." or null, "reason": "..."}. */
#ifndef CLIP_FAILURES_H
#define CLIP_FAILURES_H

#include <stddef.h>
#include <stdio.h>

#include "clip.h"
#include "files.h"

/* Distinct images (or cell problems) remembered for the warnings; beyond that, failures are
 * still counted by reason and logged, without a warning line of their own. */
#define FAILURES_MAX_KEYS 10000
/* Warning lines printed at the end; the rest are summed up in one line. */
#define FAILURES_MAX_WARNINGS 20

typedef enum failure_kind {
    FAILURE_IMAGE, /* the image file could not be read: key = its path */
    FAILURE_CELL,  /* the image cell is not a usable path: key = what is wrong with it */
    FAILURE_TEXT,  /* the text is above --max-text-bytes: key = that rule */
    FAILURE_EMPTY  /* the text is empty or missing, where the run warns of it (filter --mode
                    * threshold, as ImageClipFilter does): key = what is wrong with it */
} failure_kind;

typedef struct failures failures;

/* log_path (may be NULL): the --log-failures file, written through files.h. */
clip_status failures_open(const char *log_path, files_registry *reg, failures **out,
                          clip_error *err);
/* The words of the report: the command ("score", "filter") for the summary line, and what a
 * failed row gets ("score 0.0", "similarity 0.0", "no similarity, dropped"). Both strings must
 * outlive f. Defaults: "score" and "score 0.0". */
void failures_set_labels(failures *f, const char *command, const char *outcome);
/* One failed row. path: the image path (NULL when the cell is not one); reason: the full
 * message; why: the reason class for the summary ("file not found", "image value is null"...). */
clip_status failures_add(failures *f, failure_kind kind, size_t line, const char *path,
                         const char *reason, const char *why, clip_error *err);
/* One warning per key (rows, first line), then (with summary) the summary by reason, on `log`.
 * `input`: the table's name for the FILE:LINE prefix. */
void failures_report(const failures *f, FILE *log, const char *input, int summary);
/* The first row whose image failed: "PATH: REASON", or "line N: REASON" for a cell that is no
 * path; NULL when none. *relative says whether PATH is a relative path. */
const char *failures_first_image(const failures *f, int *relative);
/* Renames the log into place (when there is one) and frees f. */
clip_status failures_commit(failures *f, clip_error *err);
/* Removes the temporary log and frees f. */
void failures_abort(failures *f);

#endif
