/* serve_request.c — parsing /v1/embeddings and /v1/score bodies (see serve_request.h).
 *
 * Every refusal names the field it is about ("input[3]: ..."), so a client sending a list of
 * images learns which one is bad. Nothing here reads a file or the network: an image path is
 * only carried to the caller, who checks it against --allow-paths. */
#include "serve_request.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* The bodies are shallow ({"input": [{"image": "..."}]}): anything deeper is not ours. */
#define REQ_MAX_DEPTH 16

static int fail(sv_fail *f, int status, const char *param, const char *fmt, ...)
    CLIP_PRINTF(4, 5);
static int fail(sv_fail *f, int status, const char *param, const char *fmt, ...) {
    f->status = status;
    snprintf(f->param, sizeof f->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* ------------------------------------------------------------------ base64 */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void describe_char(unsigned char c, char *buf, size_t cap) {
    if (c >= 0x21 && c < 0x7f)
        snprintf(buf, cap, "'%c'", c);
    else
        snprintf(buf, cap, "byte 0x%02x", c);
}

int sv_base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len, char *why,
                     size_t why_cap) {
    *out = NULL;
    *out_len = 0;
    /* first pass: validate, count data characters and padding */
    size_t data = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_ws(c)) continue;
        if (c == '=') {
            pad++;
            continue;
        }
        char d[16];
        if (b64_value(c) < 0) {
            describe_char(c, d, sizeof d);
            snprintf(why, why_cap, "invalid base64: %s at offset %zu", d, i);
            return -1;
        }
        if (pad) {
            snprintf(why, why_cap, "invalid base64: data after '=' padding at offset %zu", i);
            return -1;
        }
        data++;
    }
    if (data % 4 == 1) {
        snprintf(why, why_cap, "invalid base64: %zu characters cannot encode whole bytes", data);
        return -1;
    }
    if (pad && (pad > 2 || (data + pad) % 4 != 0)) {
        snprintf(why, why_cap, "invalid base64: wrong padding (%zu '=' after %zu characters)", pad,
                 data);
        return -1;
    }
    size_t len = data / 4 * 3 + (data % 4 ? data % 4 - 1 : 0);
    if (len == 0) return 0;
    unsigned char *o = malloc(len);
    if (!o) {
        snprintf(why, why_cap, "out of memory decoding %zu bytes of base64", len);
        return -2;
    }
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) continue; /* whitespace and padding, validated above */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    *out = o;
    *out_len = k;
    return 0;
}

size_t sv_base64_len(size_t n) { return (n + 2) / 3 * 4; }

void sv_base64_encode(const unsigned char *in, size_t n, char *out) {
    size_t i = 0, k = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[k++] = b64_alphabet[v >> 18];
        out[k++] = b64_alphabet[(v >> 12) & 63];
        out[k++] = b64_alphabet[(v >> 6) & 63];
        out[k++] = b64_alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[k++] = b64_alphabet[v >> 18];
        out[k++] = b64_alphabet[(v >> 12) & 63];
        out[k++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        out[k++] = '=';
    }
}

/* ------------------------------------------------------------------ image strings */

static int prefix_ci(const char *s, size_t n, const char *p) {
    size_t m = strlen(p);
    if (n < m) return 0;
    for (size_t i = 0; i < m; i++) {
        char a = s[i], b = p[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != b) return 0;
    }
    return 1;
}

int sv_is_data_uri(const char *s, size_t n) { return prefix_ci(s, n, "data:"); }

int sv_decode_image_string(const char *s, size_t n, unsigned char **out, size_t *out_len,
                           char *why, size_t why_cap) {
    *out = NULL;
    *out_len = 0;
    if (prefix_ci(s, n, "http://") || prefix_ci(s, n, "https://") || prefix_ci(s, n, "file:")) {
        snprintf(why, why_cap, "URLs are not fetched: send the image bytes as base64 or a data URI");
        return -1;
    }
    const char *b = s;
    size_t bn = n;
    if (sv_is_data_uri(s, n)) {
        /* data:[<media type>][;param=value]*[;base64],<data> (RFC 2397) */
        const char *comma = memchr(s, ',', n);
        if (!comma) {
            snprintf(why, why_cap, "malformed data URI: no ',' before the data");
            return -1;
        }
        const char *h = s + 5;
        size_t hn = (size_t)(comma - h);
        if (hn < 7 || !prefix_ci(h + hn - 7, 7, ";base64")) {
            snprintf(why, why_cap, "only base64 data URIs are supported (data:image/png;base64,...)");
            return -1;
        }
        const char *semi = memchr(h, ';', hn);
        size_t mt = (size_t)(semi - h);
        if (mt && !prefix_ci(h, mt, "image/") &&
            !(mt == 24 && prefix_ci(h, mt, "application/octet-stream"))) {
            snprintf(why, why_cap, "data URI media type '%.*s' is not an image",
                     (int)(mt > 64 ? 64 : mt), h);
            return -1;
        }
        b = comma + 1;
        bn = n - (size_t)(b - s);
    }
    int rc = sv_base64_decode(b, bn, out, out_len, why, why_cap);
    if (rc) return rc;
    if (*out_len == 0) {
        snprintf(why, why_cap, "empty image");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ requests */

void sv_request_free(sv_request *r) {
    if (!r) return;
    if (r->in)
        for (size_t i = 0; i < (size_t)r->n * 2; i++) {
            /* in[] is sized for pairs (2n) in both kinds; unused slots are zero */
            free(r->in[i].bytes);
        }
    free(r->in);
    json_doc_free(r->doc);
    memset(r, 0, sizeof *r);
}

/* Structural characters outside strings: an upper bound on the values a parse would build.
 * A body of 32 MiB of `[0,0,0,...]` would otherwise become some 11 million parsed values, 20
 * times its size in memory, before the input count is even looked at. */
static size_t count_structure(const char *s, size_t n, size_t stop) {
    size_t count = 0;
    int in_str = 0;
    for (size_t i = 0; i < n && count <= stop; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == ',' || c == ':' || c == '[' || c == '{') {
            count++;
        }
    }
    return count;
}

static int parse_root(const char *body, size_t len, size_t max_inputs, sv_request *out,
                      sv_fail *f) {
    memset(out, 0, sizeof *out);
    /* a valid request needs at most a few per input ({"image": ...},) plus a few fields */
    size_t limit = max_inputs > ((size_t)-1 - 64) / 8 ? (size_t)-1 : 8 * max_inputs + 64;
    if (count_structure(body, len, limit) > limit)
        return fail(f, 413, NULL,
                    "the request has more JSON values than %zu inputs can need (--max-queue)",
                    max_inputs);
    clip_error e = {0};
    clip_status st = json_parse(body, len, "request body", REQ_MAX_DEPTH, &out->doc, &e);
    if (st == CLIP_ERR_NOMEM) return fail(f, 500, NULL, "out of memory parsing the request");
    if (st) return fail(f, 400, NULL, "malformed JSON: %s", e.msg);
    if (json_doc_root(out->doc)->type != JSON_OBJECT)
        return fail(f, 400, NULL, "the request body must be a JSON object, not %s",
                    json_type_name(json_doc_root(out->doc)->type));
    return 0;
}

/* "model" is optional and only type-checked: the server serves one model. */
static int check_model(const json_value *root, sv_fail *f) {
    const json_value *m = json_get(root, "model");
    if (m && m->type != JSON_STRING && m->type != JSON_NULL)
        return fail(f, 400, "model", "'model' must be a string, not %s", json_type_name(m->type));
    return 0;
}

static int alloc_inputs(sv_request *r, size_t n, const sv_request_limits *lim, const char *what,
                        sv_fail *f) {
    if (n == 0) return fail(f, 400, what, "'%s' must not be empty", what);
    if (n > lim->max_inputs)
        return fail(f, 413, what,
                    "'%s' has %zu items; at most %zu are accepted per request (--max-queue)", what,
                    n, lim->max_inputs);
    r->in = calloc(2 * n, sizeof *r->in);
    if (!r->in) return fail(f, 500, NULL, "out of memory for %zu inputs", n);
    r->n = (int)n;
    return 0;
}

static int image_from_string(const json_value *v, sv_input *in, const char *param, sv_fail *f) {
    char why[256];
    int rc = sv_decode_image_string(v->u.str.s, v->u.str.len, &in->bytes, &in->nbytes, why,
                                    sizeof why);
    if (rc == -2) return fail(f, 500, param, "%s: %s", param, why);
    if (rc) return fail(f, 400, param, "%s: %s", param, why);
    in->kind = SV_IN_IMAGE;
    return 0;
}

static int image_path(const json_value *v, sv_input *in, const sv_request_limits *lim,
                      const char *param, sv_fail *f) {
    if (!lim->allow_paths)
        return fail(f, 400, param,
                    "%s: server-side image paths are not allowed (the server was started "
                    "without --allow-paths); send the image bytes as base64",
                    param);
    if (v->u.str.len == 0 || memchr(v->u.str.s, '\0', v->u.str.len))
        return fail(f, 400, param, "%s: not a valid path", param);
    in->kind = SV_IN_IMAGE_PATH;
    in->s = v->u.str.s;
    in->len = v->u.str.len;
    return 0;
}

/* One element of "input": a string (text, or an image when it is a data URI) or an object
 * with exactly one of "text", "image", "image_path". */
static int embeddings_item(const json_value *v, size_t i, sv_input *in,
                           const sv_request_limits *lim, sv_fail *f) {
    char param[64];
    snprintf(param, sizeof param, "input[%zu]", i);
    if (v->type == JSON_STRING) {
        if (sv_is_data_uri(v->u.str.s, v->u.str.len)) return image_from_string(v, in, param, f);
        in->kind = SV_IN_TEXT;
        in->s = v->u.str.s;
        in->len = v->u.str.len;
        return 0;
    }
    if (v->type == JSON_NUMBER || v->type == JSON_ARRAY)
        return fail(f, 400, param, "%s: token id arrays are not supported; send text", param);
    if (v->type != JSON_OBJECT)
        return fail(f, 400, param,
                    "%s: expected a string or an object with \"text\", \"image\" or "
                    "\"image_path\", not %s",
                    param, json_type_name(v->type));
    const json_value *t = json_get(v, "text"), *im = json_get(v, "image"),
                     *p = json_get(v, "image_path");
    if ((t != NULL) + (im != NULL) + (p != NULL) != 1)
        return fail(f, 400, param,
                    "%s: give exactly one of \"text\", \"image\" (base64 or data URI) and "
                    "\"image_path\"",
                    param);
    const json_value *x = t ? t : im ? im : p;
    const char *key = t ? "text" : im ? "image" : "image_path";
    char sub[64];
    snprintf(sub, sizeof sub, "input[%zu].%s", i, key);
    if (x->type != JSON_STRING)
        return fail(f, 400, sub, "%s must be a string, not %s", sub, json_type_name(x->type));
    if (t) {
        in->kind = SV_IN_TEXT;
        in->s = x->u.str.s;
        in->len = x->u.str.len;
        return 0;
    }
    return im ? image_from_string(x, in, sub, f) : image_path(x, in, lim, sub, f);
}

int sv_parse_embeddings(const char *body, size_t len, const sv_request_limits *lim,
                        sv_request *out, sv_fail *f) {
    if (parse_root(body, len, lim->max_inputs, out, f) || check_model(json_doc_root(out->doc), f))
        goto bad;
    const json_value *root = json_doc_root(out->doc);
    const json_value *fmt = json_get(root, "encoding_format");
    if (fmt && fmt->type != JSON_NULL) {
        if (fmt->type == JSON_STRING && !strcmp(fmt->u.str.s, "base64") && fmt->u.str.len == 6)
            out->base64_out = 1;
        else if (!(fmt->type == JSON_STRING && !strcmp(fmt->u.str.s, "float") &&
                   fmt->u.str.len == 5)) {
            fail(f, 400, "encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
            goto bad;
        }
    }
    const json_value *dims = json_get(root, "dimensions");
    if (dims && dims->type != JSON_NULL && lim->embed_dim > 0 &&
        !(dims->type == JSON_NUMBER && dims->u.num.is_int && dims->u.num.d == lim->embed_dim)) {
        fail(f, 400, "dimensions", "'dimensions' must be %d, this model's embedding size",
             lim->embed_dim);
        goto bad;
    }
    const json_value *input = json_get(root, "input");
    if (!input || input->type == JSON_NULL) {
        fail(f, 400, "input", "'input' is required");
        goto bad;
    }
    if (input->type == JSON_STRING) {
        if (alloc_inputs(out, 1, lim, "input", f) || embeddings_item(input, 0, &out->in[0], lim, f))
            goto bad;
        return 0;
    }
    if (input->type != JSON_ARRAY) {
        fail(f, 400, "input", "'input' must be a string or an array, not %s",
             json_type_name(input->type));
        goto bad;
    }
    if (alloc_inputs(out, input->u.arr.n, lim, "input", f)) goto bad;
    for (size_t i = 0; i < input->u.arr.n; i++)
        if (embeddings_item(&input->u.arr.items[i], i, &out->in[i], lim, f)) goto bad;
    return 0;
bad:
    sv_request_free(out);
    return -1;
}

int sv_parse_score(const char *body, size_t len, const sv_request_limits *lim, sv_request *out,
                   sv_fail *f) {
    if (parse_root(body, len, lim->max_inputs, out, f) || check_model(json_doc_root(out->doc), f))
        goto bad;
    const json_value *pairs = json_get(json_doc_root(out->doc), "pairs");
    if (!pairs || pairs->type != JSON_ARRAY) {
        fail(f, 400, "pairs", "'pairs' is required: an array of {\"image\": ..., \"text\": ...}");
        goto bad;
    }
    if (alloc_inputs(out, pairs->u.arr.n, lim, "pairs", f)) goto bad;
    for (size_t i = 0; i < pairs->u.arr.n; i++) {
        const json_value *p = &pairs->u.arr.items[i];
        char param[64];
        snprintf(param, sizeof param, "pairs[%zu]", i);
        if (p->type != JSON_OBJECT) {
            fail(f, 400, param, "%s must be an object {\"image\": ..., \"text\": ...}, not %s",
                 param, json_type_name(p->type));
            goto bad;
        }
        const json_value *t = json_get(p, "text"), *im = json_get(p, "image"),
                         *path = json_get(p, "image_path");
        char sub[64];
        snprintf(sub, sizeof sub, "pairs[%zu].text", i);
        if (!t || t->type != JSON_STRING) {
            fail(f, 400, sub, "%s must be a string%s", sub, t ? "" : " (it is missing)");
            goto bad;
        }
        if ((im != NULL) + (path != NULL) != 1) {
            fail(f, 400, param, "%s: give exactly one of \"image\" and \"image_path\"", param);
            goto bad;
        }
        snprintf(sub, sizeof sub, "pairs[%zu].%s", i, im ? "image" : "image_path");
        const json_value *x = im ? im : path;
        if (x->type != JSON_STRING) {
            fail(f, 400, sub, "%s must be a string, not %s", sub, json_type_name(x->type));
            goto bad;
        }
        sv_input *img = &out->in[2 * i], *txt = &out->in[2 * i + 1];
        if (im ? image_from_string(x, img, sub, f) : image_path(x, img, lim, sub, f)) goto bad;
        txt->kind = SV_IN_TEXT;
        txt->s = t->u.str.s;
        txt->len = t->u.str.len;
    }
    return 0;
bad:
    sv_request_free(out);
    return -1;
}
