/* json.h — a strict JSON reader that keeps the byte span of every value.
 *
 * Why not cJSON/jansson: the scorer must copy every field it does not own byte for byte
 * ("nothing else in the table changes"), which needs the source span of each value; the
 * loaders need clear errors with line/column and hard limits on nesting and size. One small
 * parser serves config files, tokenizer files and table rows.
 *
 * Accepted: RFC 8259 plus the three non-standard literals Python's json.loads accepts
 * (NaN, Infinity, -Infinity). Rejected: invalid UTF-8, raw control characters in strings,
 * trailing garbage, nesting deeper than max_depth. Lone surrogate escapes (\ud800) decode
 * to U+FFFD. Duplicate keys are kept; json_object_get returns the last one, as Python does.
 */
#ifndef CLIP_JSON_H
#define CLIP_JSON_H

#include <stddef.h>

#include "clip.h"

typedef enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT
} json_type;

typedef struct json_value json_value;
typedef struct json_member json_member;

struct json_value {
    json_type type;
    size_t start, end; /* byte span [start, end) of the value in the parsed text */
    union {
        struct {
            double d;
            int is_int;     /* written without fraction or exponent (Python int) */
            int nonfinite;  /* NaN / Infinity / -Infinity literal */
        } num;
        struct {
            const char *s; /* decoded UTF-8, NUL-terminated (may contain NUL bytes: use len) */
            size_t len;
        } str;
        struct {
            json_value *items;
            size_t n;
        } arr;
        struct {
            json_member *members;
            size_t n;
        } obj;
    } u;
};

struct json_member {
    const char *key; /* decoded UTF-8, NUL-terminated */
    size_t key_len;
    size_t key_start, key_end; /* span of the key's string literal, quotes included */
    json_value value;
};

#define JSON_DEFAULT_MAX_DEPTH 1000 /* about where Python's json.loads gives up */

typedef struct json_doc json_doc;

/* Parses text[0..len). `what` names the source in error messages ("config.json", "line 7").
 * max_depth <= 0 means JSON_DEFAULT_MAX_DEPTH. */
clip_status json_parse(const char *text, size_t len, const char *what, int max_depth,
                       json_doc **out, clip_error *err);
const json_value *json_doc_root(const json_doc *doc);
void json_doc_free(json_doc *doc);

/* Parses a whole file (size limit max_bytes, 0 = none). */
clip_status json_parse_file(const char *path, size_t max_bytes, int max_depth, json_doc **out,
                            clip_error *err);

/* Object lookup (last duplicate wins); NULL when absent or obj is not an object. */
const json_value *json_get(const json_value *obj, const char *key);

/* Typed getters: return 1 and set *out when present with the right type, 0 when absent
 * (or JSON null), -1 when present with the wrong type or out of range. */
int json_get_int(const json_value *obj, const char *key, long long *out);
int json_get_number(const json_value *obj, const char *key, double *out);
int json_get_bool(const json_value *obj, const char *key, int *out);
int json_get_string(const json_value *obj, const char *key, const char **out);

const char *json_type_name(json_type t);

/* Appends s[0..len) as a JSON string literal (quotes included). Non-ASCII is written raw;
 * escape_slash writes '/' as "\/" (pandas/ujson style). Returns 0 on allocation failure. */
struct clip_buf;
int json_write_string(struct clip_buf *b, const char *s, size_t len, int escape_slash);

/* Decodes one UTF-8 code point at s[0..len); returns its length (1..4) and sets *cp, or
 * returns 0 for an invalid/truncated sequence. */
int json_utf8_decode(const unsigned char *s, size_t len, unsigned *cp);
/* Encodes a code point (<= 0x10FFFF); returns the number of bytes written (1..4). */
int json_utf8_encode(unsigned cp, char *out);

#endif
