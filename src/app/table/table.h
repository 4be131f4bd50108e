/* table.h — streaming table reader/writer with the semantics of DataFlow-MM's FileStorage
 * (pandas 1.5.3 readers and writers), for `clipeval score`.
 *
 * Two passes over the input, both in bounded memory:
 *   1. table_scan: row count, the union of columns in first-seen order, and per column what
 *      pandas needs to infer its dtype (int64 / uint64 / float64 / bool / object);
 *   2. table_reader_*: rows one at a time; each cell is seen as pandas holds it after the reader
 *      (dtype applied), and table_row_text gives exactly DataFlow's `str(row[text_key])`.
 * The writer produces either the input with only the score changed (default) or exactly what
 * pandas' writer would produce (pandas_compat), through a temp file renamed on commit.
 *
 * Readers reproduced (internal.h lists the details and the documented departures; one file per
 * concern in this folder: format.c, numbers.c, source.c, jsonl.c, json_array.c, csv.c,
 * schema.c (pass 1), pyvalue.c, reader.c (pass 2), pyrepr.c, writer.c):
 *   jsonl  DataFlow-MM's own reader: universal newlines, str.strip(), blank lines skipped,
 *          json.loads per line (NaN/Infinity accepted), pd.DataFrame(records).
 *   json   pd.read_json(path): a top-level array of objects, ujson number decoding, then
 *          read_json's float/int coercion of object and float columns.
 *   csv    pd.read_csv(path) with the C engine defaults (RFC 4180 quoting, NA strings,
 *          int64 -> uint64 -> float64 -> bool -> object inference, column name mangling).
 */
#ifndef CLIP_TABLE_H
#define CLIP_TABLE_H

#include <stddef.h>

#include "clip.h"

struct clip_buf; /* util.h */

typedef enum table_format { TABLE_JSONL, TABLE_JSON, TABLE_CSV } table_format;

/* FileStorage's rule: the type is the text after the LAST '.' anywhere in the path. jsonl/json/csv
 * are supported; parquet/pickle/xlsx/anything else -> CLIP_ERR_UNSUPPORTED naming the type. */
clip_status table_format_from_path(const char *path, table_format *fmt, clip_error *err);
int table_format_from_name(const char *name, table_format *fmt); /* "jsonl"/"json"/"csv" -> 1 */
const char *table_format_name(table_format f);

typedef struct table_limits {
    size_t max_row_bytes; /* one JSONL line / CSV record / JSON array element; 0 = 64 MiB */
    int max_depth;        /* JSON nesting; 0 = JSON_DEFAULT_MAX_DEPTH */
} table_limits;

/* Kinds of a cell as pandas holds it after DataFlow's reader (column dtype applied: an int in a
 * float64 column is TK_FLOAT). TK_MISSING: the key/field is absent (pandas holds NaN); TK_NULL:
 * JSON null or a CSV NA string (pandas holds None or NaN); a NaN literal is TK_FLOAT. */
typedef enum table_kind {
    TK_MISSING,
    TK_NULL,
    TK_BOOL,
    TK_INT,
    TK_FLOAT,
    TK_STRING,
    TK_LIST,
    TK_DICT
} table_kind;

/* The dtype pandas gives a column. */
typedef enum table_dtype { TD_INT64, TD_UINT64, TD_FLOAT64, TD_BOOL, TD_OBJECT } table_dtype;
const char *table_dtype_name(table_dtype d); /* "int64", "uint64", "float64", "bool", "object" */

/* ------------------------------------------------------------------ pass 1: scan */

/* Streams the file once. Invalid rows (not a JSON object, invalid JSON or UTF-8, too long, too
 * deep, a CSV record with more fields than the header or an unterminated quote): with
 * skip_invalid they are counted and ignored (DataFlow's jsonl reader skips them too), else the
 * scan stops with "FILE: line N: ..." (JSON: "element N (line L)", CSV: "record N (line L)").
 * Errors that no row can explain (missing file, folder, empty file, a broken JSON array
 * structure, a CSV without a header, a JSONL file without one valid record) always fail. */
typedef struct table_schema table_schema;
/* path "-" is standard input, which must then be a regular file (every pass reads it with its
 * own offset): files_stdin_seekable makes a pipe one. Other paths must be regular files too. */
clip_status table_scan(const char *path, table_format fmt, const table_limits *lim,
                       int skip_invalid, table_schema **out, clip_error *err);
size_t table_schema_rows(const table_schema *s);    /* valid data rows */
size_t table_schema_invalid(const table_schema *s); /* invalid rows seen (skip_invalid) */
size_t table_schema_columns(const table_schema *s);
/* Column name (decoded UTF-8, may contain NUL: use *len), in pandas' column order. */
const char *table_schema_column(const table_schema *s, int col, size_t *len);
int table_schema_find(const table_schema *s, const char *column); /* -1 when absent */
table_dtype table_schema_dtype(const table_schema *s, int col);
void table_schema_free(table_schema *s);

/* ------------------------------------------------------------------ pass 2: rows */

typedef struct table_reader table_reader;
typedef struct table_row table_row; /* valid until the next call on its reader */

/* The schema must come from table_scan of the same file and format, and outlive the reader. */
clip_status table_reader_open(const char *path, table_format fmt, const table_schema *s,
                              const table_limits *lim, table_reader **out, clip_error *err);
/* *row = NULL at the end. An invalid row returns CLIP_ERR_FORMAT (CLIP_ERR_LIMIT when too long
 * or too deep) with its line in the message; the reader stays usable (table_reader_skippable
 * says 1): the next call continues after it, and table_reader_last_raw gives the invalid row's
 * raw bytes (for a rejects file; a too-long row gives its first max_row_bytes bytes). Any other
 * failure (I/O, memory, a broken JSON array, the file changed since the scan) is final: every
 * later call returns it again. Blank JSONL/CSV lines are skipped, as pandas/DataFlow do. */
clip_status table_reader_next(table_reader *r, table_row **row, clip_error *err);
int table_reader_skippable(const table_reader *r);
const char *table_reader_last_raw(const table_reader *r, size_t *len);
void table_reader_close(table_reader *r);

size_t table_row_line(const table_row *row); /* 1-based line (JSONL/CSV) or element number (JSON) */
table_kind table_row_kind(const table_row *row, int col);
/* The decoded string when the cell is a string (TK_STRING), else NULL. */
const char *table_row_string(const table_row *row, int col, size_t *len);
/* Python str() of the value pandas holds for this cell, with the column's dtype applied —
 * exactly what DataFlow's `str(row[text_key])` gives: "5", "5.0" (int in a float64 column),
 * "2.5", "True", "None" (null in an object column), "nan" (missing key, or null in a numeric
 * column), "1e+16", lists/dicts as Python repr "[1, 'a', None]" / "{'k': 'v'}". Replaces out's
 * contents (NUL-terminated; the text may contain NUL bytes: use out->len). */
clip_status table_row_text(const table_row *row, const table_schema *s, int col,
                           struct clip_buf *out, clip_error *err);

/* ------------------------------------------------------------------ writer */

/* The output is written through files.h: a regular file (or a new one, or a symlink's target)
 * goes to a temporary file next to it that table_writer_commit renames over it after syncing,
 * so a killed run leaves either no output or the previous complete one; "-" (stdout), a device
 * or a FIFO is written directly. The target folder is created if missing (FileStorage does
 * os.makedirs). */
struct files_registry;
struct testhook;
typedef struct table_write_options {
    table_format fmt;      /* output format (may differ from the input's) */
    int pandas_compat;     /* write exactly as pandas' writer would (see internal.h) */
    const char *score_key; /* e.g. "clip_score"; NULL: no score column (rows unchanged) */
    struct files_registry *registry; /* may be NULL: where signal handlers find the temp file */
    struct testhook *hook;           /* may be NULL: the "row" pause point of testhook.h */
} table_write_options;

typedef struct table_writer table_writer;
/* Default mode with fmt == in_fmt copies every row verbatim except for the score (JSONL: the
 * member `,"KEY":VALUE` after the last member; JSON: the same with the element's own member
 * separator and indentation, and the bytes around the elements kept; CSV: `,KEY` on the header
 * and `,VALUE` on each record, padded for short records). An existing KEY has its value(s)
 * replaced in place. Scores are written as Python repr. Blank lines and the invalid rows the
 * caller skips are not copied; line endings are kept. Otherwise (pandas_compat, or another
 * output format) the table is written as pandas 1.5.3 would: jsonl to_json(orient="records",
 * lines=True, force_ascii=False); json the same with indent=2; csv to_csv(index=False). */
clip_status table_writer_open(const char *path, const table_write_options *o,
                              const table_schema *s, table_format in_fmt, table_writer **out,
                              clip_error *err);
/* Writes one input row plus its score: appended as the last field, or replacing the value in
 * place when the row (or, in pandas mode, the table) already has that key. Without a score_key
 * the row is written as it is (score unused): verbatim, its bytes; pandas mode, its columns.
 * Rows the caller does not write are simply left out (a filter). */
clip_status table_writer_row(table_writer *w, const table_row *row, double score,
                             clip_error *err);
clip_status table_writer_commit(table_writer *w, clip_error *err); /* frees w */
void table_writer_abort(table_writer *w); /* removes the temp file, frees w */

/* ------------------------------------------------------------------ number formats */

/* pandas' ujson writer with double_precision=10 (to_json's default): at most 10 decimals with
 * its own rounding, trailing zeros trimmed, "%.10g" when |v| > 1e16 or 0 < |v| < 1e-15. v must
 * be finite (pandas writes NaN/inf as null). buf needs 64 bytes; returns the length. */
int table_format_double_ujson(double v, char *buf);

#endif
