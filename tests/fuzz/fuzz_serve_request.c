/* libFuzzer target: what `clipeval serve` does with an untrusted request body before any model
 * work: JSON parsing of /v1/embeddings and /v1/score bodies, base64 and data: URI decoding.
 * The first byte picks the path (and whether image paths are allowed); the rest is the input.
 * Besides not crashing, it checks the parsed request's invariants, that a refusal always has a
 * status and a message, and that base64 decoding inverts encoding. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve_request.h"

static void check_request(const sv_request *r, const sv_request_limits *lim, int score,
                          size_t len) {
    if (r->n < 1 || (size_t)r->n > lim->max_inputs || !r->in || !r->doc) abort();
    int per = score ? 2 : 1;
    for (int i = 0; i < r->n * per; i++) {
        const sv_input *in = &r->in[i];
        if (score && (i % 2 == 1) != (in->kind == SV_IN_TEXT)) abort();
        switch (in->kind) {
        case SV_IN_TEXT:
            if (!in->s || in->len > len) abort();
            break;
        case SV_IN_IMAGE:
            if (!in->bytes || in->nbytes == 0 || in->nbytes > len) abort();
            break;
        case SV_IN_IMAGE_PATH:
            if (!lim->allow_paths || !in->s || in->len == 0 || memchr(in->s, 0, in->len)) abort();
            break;
        default:
            abort();
        }
    }
}

static void check_fail(const sv_fail *f) {
    if (f->status != 400 && f->status != 413 && f->status != 500) abort();
    if (!f->msg[0]) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] & 3, allow = (data[0] >> 2) & 1;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    sv_request_limits lim = {64, allow, 40};
    sv_request r;
    sv_fail f;
    char why[256] = "";
    unsigned char *out = NULL;
    size_t out_len = 0;
    switch (mode) {
    case 0:
    case 1:
        memset(&f, 0, sizeof f);
        if ((mode ? sv_parse_score : sv_parse_embeddings)(s, n, &lim, &r, &f) == 0) {
            check_request(&r, &lim, mode, n);
            sv_request_free(&r);
        } else {
            check_fail(&f);
        }
        break;
    case 2: {
        int rc = sv_base64_decode(s, n, &out, &out_len, why, sizeof why);
        if (rc == 0) {
            if (out_len > n || (out_len && !out)) abort();
            /* encode and decode again: the same bytes */
            char *enc = malloc(sv_base64_len(out_len) + 1);
            if (!enc) abort();
            sv_base64_encode(out, out_len, enc);
            unsigned char *back = NULL;
            size_t back_len = 0;
            if (sv_base64_decode(enc, sv_base64_len(out_len), &back, &back_len, why, sizeof why))
                abort();
            if (back_len != out_len || (out_len && memcmp(back, out, out_len))) abort();
            free(back);
            free(enc);
        } else if (!why[0]) {
            abort();
        }
        free(out);
        break;
    }
    default: {
        why[0] = '\0';
        int rc = sv_decode_image_string(s, n, &out, &out_len, why, sizeof why);
        if (rc == 0 && (!out || out_len == 0)) abort();
        if (rc != 0 && (out || !why[0])) abort();
        free(out);
        break;
    }
    }
    return 0;
}
