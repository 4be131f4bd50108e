/* serve_request.h — the JSON bodies of `clipeval serve` (/v1/embeddings, /v1/score) turned into
 * inputs: texts, images (base64 or data: URIs, decoded here) and, when the server allows it,
 * image paths. No model is involved: this is where untrusted bytes arrive first, and what the
 * fuzz target (tests/fuzz/fuzz_serve_request.c) covers. */
#ifndef CLIP_SERVE_REQUEST_H
#define CLIP_SERVE_REQUEST_H

#include <stddef.h>

#include "json.h"

typedef enum sv_input_kind {
    SV_IN_TEXT,      /* s/len: UTF-8 text */
    SV_IN_IMAGE,     /* bytes/nbytes: an encoded image (PNG, JPEG, ...) */
    SV_IN_IMAGE_PATH /* s/len: a path the caller must check against --allow-paths */
} sv_input_kind;

typedef struct sv_input {
    sv_input_kind kind;
    const char *s;        /* TEXT, IMAGE_PATH: points into the parsed document */
    size_t len;
    unsigned char *bytes; /* IMAGE: owned by the request */
    size_t nbytes;
} sv_input;

typedef struct sv_request {
    int n;            /* embeddings: inputs; score: pairs */
    sv_input *in;     /* embeddings: n inputs; score: in[2i] is pair i's image, in[2i+1] its text */
    int base64_out;   /* encoding_format "base64": little-endian float32, base64 */
    json_doc *doc;
} sv_request;

typedef struct sv_request_limits {
    size_t max_inputs; /* more inputs (pairs) than this: 413 */
    int allow_paths;   /* {"image_path": ...} accepted (else 400) */
    int embed_dim;     /* "dimensions", when given, must equal it (0: not checked) */
} sv_request_limits;

/* Why a request was refused: an HTTP status, the offending field and a message naming it. */
typedef struct sv_fail {
    int status;     /* 400, 413, or 500 when memory ran out */
    char param[64]; /* "input[3]", "pairs[2].image", "encoding_format", or "" */
    char msg[640];
} sv_fail;

/* Return 0 and fill *out (free it with sv_request_free), or -1 and fill *f. */
int sv_parse_embeddings(const char *body, size_t len, const sv_request_limits *lim,
                        sv_request *out, sv_fail *f);
int sv_parse_score(const char *body, size_t len, const sv_request_limits *lim, sv_request *out,
                   sv_fail *f);
void sv_request_free(sv_request *r);

/* RFC 4648 base64, standard alphabet. ASCII whitespace is skipped (wrapped MIME bodies); padding
 * is optional but, when present, must be right. Returns 0 with *out malloc'd (NULL when empty),
 * -1 with a reason in why, or -2 when memory ran out. */
int sv_base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len, char *why,
                     size_t why_cap);
/* Encoded length of n bytes (padded), and the encoder (no NUL written). */
size_t sv_base64_len(size_t n);
void sv_base64_encode(const unsigned char *in, size_t n, char *out);

/* An image field: "data:image/png;base64,...." or bare base64. Same returns as
 * sv_base64_decode; an empty image, a URL or a non-base64 data URI is a reason. */
int sv_decode_image_string(const char *s, size_t n, unsigned char **out, size_t *out_len,
                           char *why, size_t why_cap);
/* 1 when a plain string input is a data: URI (it is then an image, not a text). */
int sv_is_data_uri(const char *s, size_t n);

#endif
