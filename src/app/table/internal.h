/* internal.h — what the files of src/app/table/ share: the record source, the schema, cells as
 * pandas holds them, and the functions one file provides to another. Not for use outside.
 *
 * Where each concern lives:
 *   format.c      file types (FileStorage's rule) and dtype names
 *   numbers.c     pandas' number parsers (read_csv, ujson) and ujson's double formatting
 *   source.c      buffered input: bytes, lines, limits; a JSON record's text to an object
 *   jsonl.c       JSONL lines (DataFlow's reader)
 *   json_array.c  elements of a top-level JSON array (pd.read_json)
 *   csv.c         CSV records, header names, dtype inference, field quoting (pd.read_csv/to_csv)
 *   schema.c      pass 1 (table_scan): columns and maybe_convert_objects' dtype inference
 *   pyvalue.c     JSON values as Python objects; cells as pandas holds them
 *   reader.c      pass 2 (table_reader_*): rows and their cells
 *   pyrepr.c      Python str()/repr() and pandas' ujson writer of values
 *   writer.c      the output table (verbatim or pandas' writer), through files.h
 *   ../pytext.c   Python's view of Unicode text (isspace, strip, float(str))
 *
 * What pandas does, and where it is reproduced:
 *
 *  Readers
 *   - jsonl (DataFlow-MM's reader): Python text mode splits lines at \n, \r\n and \r; each line
 *     is str.strip()'d (Unicode whitespace), blank lines are skipped, json.loads parses the rest
 *     and a line that fails is skipped with a warning. pd.DataFrame(records) then infers each
 *     column's dtype with lib.maybe_convert_objects (seen_update, seen_dtype): ints -> int64
 *     (uint64 above 2**63-1, object when mixed with negatives or beyond 64 bits), ints with
 *     None/NaN/missing -> float64, bool -> bool (object with anything else), strings, lists and
 *     dicts -> object. Its order rule (an int after a None is not range-checked) is kept.
 *   - json (pd.read_json): pandas' ujson decoder (NaN -> None, its fast and imprecise float
 *     decoding, its integer overflow rules: ujson_number), the same DataFrame inference, then
 *     _try_convert_data: object columns whose every value float() accepts become float64, and
 *     float64 columns whose values are all integral become int64 (strings "5" become 5).
 *   - csv (pd.read_csv, C engine): the tokenizer state machine (quotes, "" escapes, \r, \n,
 *     \r\n, blank and whitespace-only lines, the BOM, NUL-terminated words), the default NA
 *     strings, column name mangling, and the int64 -> uint64 -> float64 -> bool -> object
 *     cascade with pandas' own integer and float parsers (precise_xstrtod), including the
 *     failures that fall back to object without the NA filter.
 *   - iterrows(): without object or bool columns a row is one numeric array, so ints print as
 *     floats once a float64 column exists (schema_finalize, row_float).
 *  Writers (pandas_compat, or a format change)
 *   - to_json: ujson with double_precision=10 (table_format_double_ujson), NaN/inf -> null,
 *     strings escaped with "\/" and non-ASCII raw, keys without spaces, the indent=2 layout for
 *     json, "\n" after every jsonl record.
 *   - to_csv: Python's csv module, QUOTE_MINIMAL with "\n" line terminator (',', '"' and '\n'
 *     force quotes, '\r' does not; a lone empty field is written ""), floats as repr, NaN/None
 *     empty, lists/dicts as Python repr.
 *
 *  Knowingly not reproduced:
 *   - input pandas or DataFlow refuses as a whole (a later CSV record with too many fields, an
 *     unterminated quote, an integer ujson cannot hold, invalid UTF-8, nesting past Python's
 *     recursion limit, a non-object JSONL line or array element): here one invalid row each;
 *   - pandas' implicit index when the first CSV data row has one field more than the header
 *     (here an invalid row), and its tokenizer backtracking to the previous '\n' when a line
 *     that follows a bare '\r' starts with a space or tab (it re-reads earlier lines: one
 *     9-line test file came back as 131075 rows);
 *   - chunked CSV inference (low_memory: pandas infers per 2**18-row chunk of a narrow table;
 *     here over the whole file) and read_json's date conversion of date-named columns;
 *   - ujson's leniency (raw control characters in strings, leading zeros: here invalid JSON)
 *     and lone surrogate escapes (here U+FFFD);
 *   - Python's isprintable() for characters assigned after Unicode 15.0 (Python 3.11 knows
 *     14.0; the 15.0 additions are listed in pytext.c, later ones count as printable via utf8proc).
 *  The verbatim writer drops blank lines and invalid rows; everything else is copied.
 */
#ifndef CLIP_TABLE_INTERNAL_H
#define CLIP_TABLE_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>

#include "json.h"
#include "pytext.h"
#include "table.h"
#include "util.h"

#define DEFAULT_MAX_ROW ((size_t)64 << 20)
#define READ_CHUNK ((size_t)1 << 16)

/* A number the way pandas' ujson decoder (read_json) produces it. */
typedef enum uj_kind { UJ_INT, UJ_UINT, UJ_DOUBLE, UJ_NONE, UJ_ERROR } uj_kind;
typedef struct uj_num {
    uj_kind kind;
    int64_t i;
    uint64_t u;
    double d;
    const char *msg;
} uj_num;


/* One CSV field of the current record: its raw bytes (quotes included) and decoded value. */
typedef struct csv_field {
    size_t raw_start, raw_end; /* within src.raw */
    size_t val_start, val_len; /* within src.vals; val_len stops at a NUL, like pandas' words */
} csv_field;

enum { JS_START, JS_FIRST, JS_AFTER, JS_DONE };

typedef struct src {
    int fd;
    int borrowed;    /* fd is standard input: not ours to close */
    off_t off;       /* file offset of the next read (pread) */
    char *path;      /* for messages ("stdin" for "-") */
    table_format fmt;
    size_t max_row;
    int max_depth;
    char *buf;
    size_t pos, len;
    int eof;
    size_t line;     /* physical line of the next byte (universal newlines) */
    size_t any;      /* bytes consumed so far (an empty file has none) */
    /* the current record */
    clip_buf raw;    /* JSONL line / CSV record (no terminator) / JSON element */
    int too_long;    /* raw holds only the first max_row bytes */
    size_t rec_line; /* line of its first byte */
    size_t rec_no;   /* 1-based record number (JSONL: lines, CSV: records, JSON: elements) */
    char term[3];    /* JSONL/CSV line terminator: "\n", "\r\n", "\r" or "" at the end */
    /* JSON arrays: head "...[", the bytes before each element (",\n  "), tail "\n]\n" */
    int jstate;
    clip_buf head, sep, tail;
    /* CSV */
    csv_field *fields;
    size_t nfields, fcap, fkeep; /* fields stored only up to fkeep (more fields = invalid) */
    size_t fstop;                /* this record's limit: fkeep, lowered once it is too long */
    clip_buf vals;
    int unterminated; /* EOF inside a quoted field */
    int bom;          /* a UTF-8 BOM was skipped at the start */
} src;


/* What pandas' lib.maybe_convert_objects has seen in a column (DataFrame(records)). */
enum {
    SEEN_NULL = 1,    /* None */
    SEEN_NAN = 2,     /* np.nan: a missing key */
    SEEN_BOOL = 4,
    SEEN_FLOAT = 8,
    SEEN_INT = 16,
    SEEN_UINT = 32,   /* an int in (2**63-1, 2**64) */
    SEEN_SINT = 64,   /* a negative int */
    SEEN_OBJECT = 128 /* str, list, dict, or ints that fit no numpy integer type */
};

/* read_csv's per-column parse attempts (first failure wins, as pandas stops at it). */
enum { TRY_OK = 0, TRY_INVALID = 1, TRY_OVERFLOW = 2 };

/* How the cells of a CSV column are held, from the attempt that succeeded. */
typedef enum csv_kind {
    CK_INT64,
    CK_INT64_NA, /* ints with NA: float64 */
    CK_UINT64,
    CK_FLOAT64,
    CK_BOOL,
    CK_BOOL_NA, /* bools with NA: object True/False/NaN */
    CK_OBJECT,
    CK_OBJECT_RAW /* uint64 conflict: object without the NA filter ("" and "NA" stay strings) */
} csv_kind;

typedef struct column {
    char *name;
    size_t len;
    size_t present; /* rows holding the key */
    unsigned seen;  /* SEEN_* */
    /* read_json's _try_convert_data: every value float()-convertible / all integral in int64 */
    unsigned char conv_ok, conv_int;
    /* read_csv attempts */
    unsigned char try_i64, try_u64, try_f64, try_bool, u_sint, u_uint, u_null, na;
    /* results */
    table_dtype dtype;
    csv_kind ck;
    unsigned char coerced; /* json: read_json turned the column numeric */
} column;

struct table_schema {
    table_format fmt;
    size_t rows, invalid;
    column *cols;
    size_t ncols, cap;
    size_t *slots; /* open addressing: column index + 1, 0 = empty */
    size_t nslots;
    int row_float; /* iterrows() upcasts every int to float (an all-numeric table with floats) */
    /* verbatim writing */
    int bom; /* the file starts with a UTF-8 BOM (kept in verbatim output) */
    clip_buf csv_header; /* the header record's raw bytes */
    char csv_header_term[3];
    size_t csv_header_fields;
    clip_buf json_head, json_tail;
};

/* The class of a JSON value for maybe_convert_objects. */
typedef enum pyclass { PY_NONE, PY_BOOL, PY_FLOAT, PY_INT, PY_OBJECT } pyclass;

/* The range of a Python int literal (json.loads: exact): its sign and whether it fits int64,
 * only uint64, or neither. */
typedef enum int_range { IR_INT64, IR_UINT64, IR_BIG } int_range;

/* Which member holds each column in the current row (Python dict semantics: the last duplicate
 * wins), without clearing a per-column array for every row. */
typedef struct rowmap {
    size_t *stamp, *midx;
    size_t cap, gen;
    int *touched; /* the row's distinct columns, in first-seen order */
    size_t ntouched;
} rowmap;

typedef struct pyinfo {
    pyclass k;
    int negative, uint_range, big;
} pyinfo;

struct table_row {
    table_reader *r;
    size_t line;
    const json_value *root; /* JSON sources: the record object, spans relative to text */
    const char *text;
};

struct table_reader {
    src in;
    const table_schema *s;
    clip_status fatal; /* sticky */
    char fatal_msg[sizeof(((clip_error *)0)->msg)];
    int skippable, have_raw, header_done;
    rowmap m;
    json_doc *doc;
    table_row row;
};

typedef enum hkind {
    H_MISSING,  /* absent key/field: NaN */
    H_NULL_NAN, /* null or NA string held as NaN */
    H_NONE,     /* None (null in an object column) */
    H_BOOL,
    H_INT,      /* digits in s/n */
    H_FLOAT,
    H_STR,
    H_LIST,
    H_DICT
} hkind;

typedef struct held {
    hkind k;
    int b;
    double d;
    const char *s;
    size_t n;
    const json_value *jv; /* H_LIST / H_DICT */
    char num[32];
} held;

/* ------------------------------------------------------------------ numbers.c */

int pd_parse_double(const char *w, double *out);
enum { PD_OK = 0, PD_INVALID = 1, PD_OVERFLOW = 2 };
int pd_str_to_int64(const char *p, int64_t *out);
int pd_str_to_uint64(const char *p, uint64_t *out, int *seen_sint, int *seen_uint);
int pd_parse_bool(const char *w, int *out);
int pd_is_na(const char *w);
void ujson_number(const char *s, size_t n, uj_num *out);

/* ------------------------------------------------------------------ source.c */

clip_status src_open(src *s, const char *path, table_format fmt, const table_limits *lim,
                     clip_error *err);
void src_close(src *s);
int src_peek(src *s, clip_error *err);
clip_status src_take(src *s, int c, clip_error *err);
clip_status src_skip_bom(src *s, clip_error *err);
clip_status raw_put(src *s, const char *p, size_t n, clip_error *err);
void rec_reset(src *s);
size_t src_run(const src *s, const char *stop, int nstop);
clip_status src_copy_run(src *s, size_t n, clip_error *err);
const char *row_where(const src *s, char *buf, size_t cap);
clip_status parse_json_row(const src *s, json_doc **doc, size_t *off, int *blank,
                           clip_error *err);
int row_error(clip_status st);

/* ------------------------------------------------------------------ jsonl.c, json_array.c */

clip_status jsonl_next_line(src *s, int *got, clip_error *err);
clip_status json_next_elem(src *s, int *got, clip_error *err);

/* ------------------------------------------------------------------ csv.c */

clip_status csv_next_record(src *s, int *got, clip_error *err);
clip_status check_csv_record(const src *s, size_t header_fields, clip_error *err);
void csv_update(column *c, const char *w);
csv_kind csv_finalize_kind(const column *c);
table_dtype csv_kind_dtype(csv_kind k);
clip_status csv_header_columns(table_schema *s, const src *in, clip_error *err);
void csv_field_out(clip_buf *b, const char *s, size_t n, int quote_cr);
clip_status held_csv_text(clip_buf *b, const held *h, const char *text, int ujson,
                          clip_error *err);

/* ------------------------------------------------------------------ schema.c */

int schema_lookup(const table_schema *s, const char *name, size_t len);
clip_status schema_add(table_schema *s, const char *name, size_t len, int *col, clip_error *err);
void rowmap_free(rowmap *m);
clip_status rowmap_build(rowmap *m, table_schema *s, const json_value *root, int add,
                         int *unknown, clip_error *err);

/* ------------------------------------------------------------------ pyvalue.c */

pyinfo py_classify(const json_value *v, const char *text, int ujson);
double py_number_value(const json_value *v, const char *text, int ujson, int *is_none);
int py_to_float(const json_value *v, const char *text, double *out);
int integral_int64(double f);
void csv_held(const column *c, const char *w, int missing, held *h);
void json_held(const column *c, const json_value *v, const char *text, int ujson, held *h);

/* ------------------------------------------------------------------ reader.c */

void row_held(const table_row *row, int col, held *h);

/* ------------------------------------------------------------------ pyrepr.c */

int oom_status(clip_buf *b, clip_error *err);
void py_repr_float(clip_buf *b, double d);
clip_status held_str(clip_buf *b, const held *h, const char *text, int ujson, int row_float,
                     clip_error *err);
void ujson_indent(clip_buf *b, int indent, int level);
void ujson_double(clip_buf *b, double d);
clip_status held_json(clip_buf *b, const held *h, const char *text, int ujson, int indent,
                      int level, clip_error *err);

#endif
