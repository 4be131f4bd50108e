/* serve_api.c — the endpoints of `clipeval serve` (see serve_api.h).
 *
 * A POST goes: parse (serve_request.c) -> reserve room in the queues (429 when full) -> tokenize
 * texts and decode images on this thread -> queue them and wait for the batch workers -> write
 * the JSON answer. Reserving before decoding bounds the memory of decoded inputs by --max-queue,
 * however many clients send at once. */
#include "pytext.h"
#include "serve_api.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "scorer.h"
#include "serve_request.h"

clip_status sv_api_init(sv_api *a, const clip_model *m, const clip_tokenizer *tok,
                        const clip_image_config *icfg, int decode_threads, uint64_t max_pixels,
                        size_t max_image_bytes, clip_error *err) {
    memset(a, 0, sizeof *a);
    const clip_model_info *info = clip_model_get_info(m);
    if (icfg->crop_height != info->image_size || icfg->crop_width != info->image_size)
        return clip_fail(err, CLIP_ERR_CONFIG,
                         "%s: preprocessor crop size %dx%d does not match the model's image size %d",
                         info->dir, icfg->crop_width, icfg->crop_height, info->image_size);
    a->model = m;
    a->tok = tok;
    a->icfg = *icfg;
    clip_decode_options_init(&a->dopt);
    a->dopt.max_pixels = max_pixels;
    a->dopt.max_file_bytes = max_image_bytes;
    int L = clip_tokenizer_max_length(tok);
    a->ctx = L < info->context_length ? L : info->context_length;
    a->dim = info->embed_dim;
    a->image_size = info->image_size;
    a->decode_free = decode_threads > 0 ? decode_threads : 1;
    if (pthread_mutex_init(&a->mu, NULL) != 0)
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot create the decoder mutex");
    if (pthread_cond_init(&a->cv, NULL) != 0) {
        pthread_mutex_destroy(&a->mu);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot create the decoder condition variable");
    }
    return CLIP_OK;
}

void sv_api_destroy(sv_api *a) {
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
}

/* ------------------------------------------------------------------ replies */

static void reply_reset(sv_reply *r, int status) {
    clip_buf_free(&r->body);
    r->status = status;
    r->content_type = NULL;
    r->retry_after = 0;
}

void sv_api_error(sv_reply *r, int status, const char *param, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *type = "invalid_request_error", *code = NULL;
    switch (status) {
    case 401: code = "invalid_api_key"; break;
    case 404: code = "not_found"; break;
    case 405: code = "method_not_allowed"; break;
    case 408: code = "request_timeout"; break;
    case 413: code = "payload_too_large"; break;
    case 429: type = "overloaded"; code = "model_overloaded"; break;
    case 503: type = "server_error"; code = "shutting_down"; break;
    default:
        if (status >= 500) type = "server_error";
    }
    reply_reset(r, status);
    clip_buf *b = &r->body;
    clip_buf_puts(b, "{\"error\":{\"message\":");
    json_write_string(b, msg, strlen(msg), 0);
    clip_buf_printf(b, ",\"type\":\"%s\",\"param\":", type);
    if (param && *param)
        json_write_string(b, param, strlen(param), 0);
    else
        clip_buf_puts(b, "null");
    clip_buf_puts(b, ",\"code\":");
    if (code)
        clip_buf_printf(b, "\"%s\"", code);
    else
        clip_buf_puts(b, "null");
    clip_buf_puts(b, "}}\n");
    if (status == 429) r->retry_after = 1;
}

static void put_float(clip_buf *b, float v) {
    if (!isfinite(v)) { /* JSON has no NaN: a degenerate (zero) embedding */
        clip_buf_puts(b, "null");
        return;
    }
    char s[32];
    int n = snprintf(s, sizeof s, "%.9g", (double)v); /* round-trips a float32 */
    clip_buf_append(b, s, (size_t)n);
}

static void put_embedding(clip_buf *b, const float *e, int dim, int base64) {
    if (base64) { /* OpenAI's encoding: the little-endian float32 bytes, base64 */
        unsigned char raw[4 * 4096];
        char enc[4 * 4096 / 3 * 4 + 8];
        int done = 0;
        clip_buf_putc(b, '"');
        while (done < dim) {
            /* whole base64 groups per chunk: 3072 floats = 12288 bytes, a multiple of 3 */
            int k = dim - done < 3072 ? dim - done : 3072;
            for (int i = 0; i < k; i++) {
                uint32_t u;
                memcpy(&u, &e[done + i], 4);
                raw[4 * i] = (unsigned char)u;
                raw[4 * i + 1] = (unsigned char)(u >> 8);
                raw[4 * i + 2] = (unsigned char)(u >> 16);
                raw[4 * i + 3] = (unsigned char)(u >> 24);
            }
            sv_base64_encode(raw, (size_t)k * 4, enc);
            clip_buf_append(b, enc, sv_base64_len((size_t)k * 4));
            done += k;
        }
        clip_buf_putc(b, '"');
        return;
    }
    clip_buf_putc(b, '[');
    for (int i = 0; i < dim; i++) {
        if (i) clip_buf_putc(b, ',');
        put_float(b, e[i]);
    }
    clip_buf_putc(b, ']');
}

static int finish(sv_reply *r, int status) {
    r->status = status;
    if (r->body.oom) {
        sv_api_error(r, 500, NULL, "out of memory writing the response");
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ inputs */

static void slot_take(sv_api *a) {
    pthread_mutex_lock(&a->mu);
    while (a->decode_free == 0) pthread_cond_wait(&a->cv, &a->mu);
    a->decode_free--;
    pthread_mutex_unlock(&a->mu);
}

static void slot_give(sv_api *a) {
    pthread_mutex_lock(&a->mu);
    a->decode_free++;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

enum { IMG_OK = 0, IMG_UNREADABLE, IMG_REFUSED, IMG_NOMEM };

/* A request's image path inside --allow-paths: no ".." component, an absolute path must be
 * spelled under the folder, and the resolved path (symbolic links followed) must stay in it.
 * The lexical checks come first so nothing outside the folder is ever looked at. */
static int resolve_path(const sv_api *a, const char *p, size_t n, char *out, size_t cap,
                        char *why, size_t wcap) {
    const char *dir = a->allow_dir;
    size_t dl = strlen(dir);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && p[j] != '/') j++;
        if (j - i == 2 && p[i] == '.' && p[i + 1] == '.') {
            snprintf(why, wcap, "'..' is not allowed in image paths");
            return IMG_REFUSED;
        }
        i = j + 1;
    }
    char cand[8192];
    if (p[0] == '/') {
        int inside = n >= dl && !memcmp(p, dir, dl) && (n == dl || p[dl] == '/' || dl == 1);
        if (!inside) {
            snprintf(why, wcap, "image path is outside the folder given with --allow-paths");
            return IMG_REFUSED;
        }
        if (n >= sizeof cand) {
            snprintf(why, wcap, "image path too long");
            return IMG_REFUSED;
        }
        memcpy(cand, p, n);
        cand[n] = '\0';
    } else {
        if (dl + 1 + n >= sizeof cand) {
            snprintf(why, wcap, "image path too long");
            return IMG_REFUSED;
        }
        snprintf(cand, sizeof cand, "%s/%.*s", dir, (int)n, p);
    }
    char res[8192];
    if (!realpath(cand, res)) {
        snprintf(why, wcap, "image '%.*s': %s", (int)(n > 200 ? 200 : n), p, strerror(errno));
        return IMG_UNREADABLE;
    }
    size_t rl = strlen(res);
    if (!(rl >= dl && !memcmp(res, dir, dl) && (rl == dl || res[dl] == '/' || dl == 1))) {
        snprintf(why, wcap, "image path leads outside the folder given with --allow-paths");
        return IMG_REFUSED;
    }
    if (rl >= cap) {
        snprintf(why, wcap, "image path too long");
        return IMG_REFUSED;
    }
    memcpy(out, res, rl + 1);
    return IMG_OK;
}

/* Decodes one image input and, when px is given, preprocesses it into px. */
static int load_image(sv_api *a, const sv_input *in, float *px, char *why, size_t wcap) {
    char path[8192];
    if (in->kind == SV_IN_IMAGE_PATH) {
        int rc = resolve_path(a, in->s, in->len, path, sizeof path, why, wcap);
        if (rc) return rc;
    }
    clip_image img = {0};
    clip_error e = {0};
    slot_take(a);
    clip_status st = in->kind == SV_IN_IMAGE_PATH
                         ? clip_image_decode_file(path, &a->dopt, &img, &e)
                         : clip_image_decode_memory(in->bytes, in->nbytes, &a->dopt, &img, &e);
    if (!st && px) st = clip_image_preprocess(&img, &a->icfg, &a->dopt, px, NULL, &e);
    slot_give(a);
    clip_image_free(&img);
    if (st) {
        snprintf(why, wcap, "%s", e.msg);
        return st == CLIP_ERR_NOMEM ? IMG_NOMEM : IMG_UNREADABLE;
    }
    return IMG_OK;
}

/* Buffers of one request: token rows (+ masks), pixel rows and their embeddings. */
typedef struct work {
    int cnt[SV_MOD_COUNT];
    int32_t *ids, *masks;
    float *px, *out[SV_MOD_COUNT];
} work;

static void work_free(work *w) {
    free(w->ids);
    free(w->masks);
    free(w->px);
    free(w->out[0]);
    free(w->out[1]);
}

static void *alloc_rows(size_t rows, size_t per, size_t elem) {
    size_t n;
    if (!clip_mul_size(rows ? rows : 1, per, &n) || !clip_mul_size(n, elem, &n)) return NULL;
    return malloc(n);
}

static int work_alloc(const sv_api *a, work *w) {
    size_t S = (size_t)a->image_size;
    w->ids = alloc_rows((size_t)w->cnt[SV_MOD_TEXT], (size_t)a->ctx, sizeof(int32_t));
    w->masks = alloc_rows((size_t)w->cnt[SV_MOD_TEXT], (size_t)a->ctx, sizeof(int32_t));
    w->px = alloc_rows((size_t)w->cnt[SV_MOD_IMAGE], 3 * S * S, sizeof(float));
    for (int k = 0; k < SV_MOD_COUNT; k++)
        w->out[k] = alloc_rows((size_t)w->cnt[k], (size_t)a->dim, sizeof(float));
    return w->ids && w->masks && w->px && w->out[0] && w->out[1];
}

static int tokenize_row(const sv_api *a, const sv_input *in, work *w, int row, char *why,
                        size_t wcap) {
    clip_error e = {0};
    const char *s = in->s;
    size_t len = in->len;
    if (clip_tokenize_batch(a->tok, &s, &len, 1, a->ctx, w->ids + (size_t)row * a->ctx,
                            w->masks + (size_t)row * a->ctx, &e)) {
        snprintf(why, wcap, "%s", e.msg);
        return -1;
    }
    return 0;
}

/* Reserves the request's inputs; fills r and returns 0 when refused. */
static int admit(sv_api *a, const int cnt[SV_MOD_COUNT], sv_reply *r) {
    sv_admit ad = sv_batcher_reserve(a->batcher, cnt);
    if (ad == SV_ADMIT_FULL) {
        sv_api_error(r, 429, NULL,
                     "model is overloaded: the queue is full (--max-queue %zu inputs of each kind); "
                     "retry later",
                     a->max_inputs);
        return 0;
    }
    if (ad == SV_ADMIT_CLOSED) {
        sv_api_error(r, 503, NULL, "the server is shutting down");
        r->retry_after = 1;
        return 0;
    }
    return 1;
}

static int run_job(sv_api *a, work *w, const int reserved[SV_MOD_COUNT], sv_reply *r) {
    sv_job job;
    memset(&job, 0, sizeof job);
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        job.n[k] = w->cnt[k];
        job.out[k] = w->out[k];
    }
    job.in[SV_MOD_TEXT] = w->ids;
    job.in[SV_MOD_IMAGE] = w->px;
    sv_job_result res = sv_batcher_run(a->batcher, &job, reserved);
    if (res == SV_JOB_CANCELLED) {
        sv_api_error(r, 503, NULL, "the server is shutting down");
        r->retry_after = 1;
        return 0;
    }
    if (res != SV_JOB_OK) {
        sv_api_error(r, 500, NULL, "%s", job.msg);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ /v1/embeddings */

void sv_api_embeddings(sv_api *a, const char *body, size_t len, sv_reply *r) {
    sv_request_limits lim = {a->max_inputs, a->allow_dir != NULL, a->dim};
    sv_request q;
    sv_fail f;
    if (sv_parse_embeddings(body, len, &lim, &q, &f)) {
        sv_api_error(r, f.status, f.param, "%s", f.msg);
        return;
    }
    work w;
    memset(&w, 0, sizeof w);
    int *row = malloc(sizeof(int) * (size_t)q.n);
    if (!row) {
        sv_api_error(r, 500, NULL, "out of memory");
        sv_request_free(&q);
        return;
    }
    for (int i = 0; i < q.n; i++) {
        int k = q.in[i].kind == SV_IN_TEXT ? SV_MOD_TEXT : SV_MOD_IMAGE;
        row[i] = w.cnt[k]++;
    }
    int reserved[SV_MOD_COUNT] = {w.cnt[0], w.cnt[1]};
    if (!admit(a, reserved, r)) goto done;
    int ok = work_alloc(a, &w);
    if (!ok) sv_api_error(r, 500, NULL, "out of memory for %d inputs", q.n);
    char why[1100], param[64];
    for (int i = 0; ok && i < q.n; i++) {
        const sv_input *in = &q.in[i];
        snprintf(param, sizeof param, "input[%d]", i);
        if (in->kind == SV_IN_TEXT) {
            if (tokenize_row(a, in, &w, row[i], why, sizeof why)) {
                sv_api_error(r, 500, param, "%s: %s", param, why);
                ok = 0;
            }
            continue;
        }
        float *px = w.px + (size_t)row[i] * 3 * a->image_size * a->image_size;
        int rc = load_image(a, in, px, why, sizeof why);
        if (in->kind == SV_IN_IMAGE_PATH) snprintf(param, sizeof param, "input[%d].image_path", i);
        if (rc) {
            sv_api_error(r, rc == IMG_NOMEM ? 500 : 400, param, "%s: cannot use the image: %s",
                         param, why);
            ok = 0;
        }
    }
    if (!ok) {
        sv_batcher_unreserve(a->batcher, reserved);
        goto done;
    }
    if (!run_job(a, &w, reserved, r)) goto done;

    long long tokens = 0;
    for (size_t i = 0; i < (size_t)w.cnt[SV_MOD_TEXT] * (size_t)a->ctx; i++) tokens += w.masks[i];
    reply_reset(r, 200);
    clip_buf *b = &r->body;
    clip_buf_reserve(b, (size_t)q.n * ((size_t)a->dim * (q.base64_out ? 6 : 16) + 64) + 256);
    clip_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < q.n; i++) {
        int k = q.in[i].kind == SV_IN_TEXT ? SV_MOD_TEXT : SV_MOD_IMAGE;
        clip_buf_printf(b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "",
                        i);
        put_embedding(b, w.out[k] + (size_t)row[i] * a->dim, a->dim, q.base64_out);
        clip_buf_putc(b, '}');
    }
    clip_buf_puts(b, "],\"model\":");
    json_write_string(b, a->model_name, strlen(a->model_name), 0);
    clip_buf_printf(b, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}\n", tokens,
                    tokens);
    finish(r, 200);
done:
    work_free(&w);
    free(row);
    sv_request_free(&q);
}

/* ------------------------------------------------------------------ /v1/score */

/* DataFlow's compute_similarity per pair: the image is loaded first (an unreadable one scores
 * 0.0 with its reason, even when the text is blank), then a blank text scores 0.0 with no
 * reason, else clamp((cos + 1) / 2, 0, 1). */
void sv_api_score(sv_api *a, const char *body, size_t len, sv_reply *r) {
    sv_request_limits lim = {a->max_inputs, a->allow_dir != NULL, 0};
    sv_request q;
    sv_fail f;
    if (sv_parse_score(body, len, &lim, &q, &f)) {
        sv_api_error(r, f.status, f.param, "%s", f.msg);
        return;
    }
    int n = q.n;
    work w;
    memset(&w, 0, sizeof w);
    int *row = malloc(sizeof(int) * (size_t)n);
    char **reason = calloc((size_t)n, sizeof *reason);
    int reserved[SV_MOD_COUNT] = {0, 0}, admitted = 0;
    if (!row || !reason) {
        sv_api_error(r, 500, NULL, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const sv_input *t = &q.in[2 * i + 1];
        row[i] = py_blank(t->s, t->len) ? -2 : -1; /* -2 blank, -1 to do */
        if (row[i] == -1) reserved[SV_MOD_TEXT]++, reserved[SV_MOD_IMAGE]++;
    }
    if (!admit(a, reserved, r)) goto done;
    admitted = 1;
    w.cnt[0] = reserved[0];
    w.cnt[1] = reserved[1];
    if (!work_alloc(a, &w)) {
        sv_api_error(r, 500, NULL, "out of memory for %d pairs", n);
        goto done;
    }
    int m = 0;
    char why[1100], param[64];
    for (int i = 0; i < n; i++) {
        snprintf(param, sizeof param, "pairs[%d].%s", i,
                 q.in[2 * i].kind == SV_IN_IMAGE_PATH ? "image_path" : "image");
        float *px = row[i] == -1 ? w.px + (size_t)m * 3 * a->image_size * a->image_size : NULL;
        int rc = load_image(a, &q.in[2 * i], px, why, sizeof why);
        if (rc == IMG_REFUSED || rc == IMG_NOMEM) {
            sv_api_error(r, rc == IMG_NOMEM ? 500 : 400, param, "%s: %s", param, why);
            goto done;
        }
        if (rc == IMG_UNREADABLE) {
            reason[i] = strdup(why);
            if (!reason[i]) {
                sv_api_error(r, 500, NULL, "out of memory");
                goto done;
            }
            row[i] = -3; /* scored 0.0 with the reason */
            continue;
        }
        if (row[i] == -1) {
            if (tokenize_row(a, &q.in[2 * i + 1], &w, m, why, sizeof why)) {
                sv_api_error(r, 500, param, "pairs[%d].text: %s", i, why);
                goto done;
            }
            row[i] = m++;
        }
    }
    w.cnt[0] = w.cnt[1] = m;
    admitted = 0; /* run_job consumes the reservation */
    if (!run_job(a, &w, reserved, r)) goto done;

    reply_reset(r, 200);
    clip_buf *b = &r->body;
    clip_buf_puts(b, "{\"scores\":[");
    for (int i = 0; i < n; i++) {
        double s = row[i] >= 0 ? clip_pair_score(w.out[SV_MOD_IMAGE] + (size_t)row[i] * a->dim,
                                                 w.out[SV_MOD_TEXT] + (size_t)row[i] * a->dim,
                                                 a->dim)
                               : 0.0;
        char num[40];
        if (isfinite(s))
            clip_format_double_repr(s, num);
        else
            snprintf(num, sizeof num, "null");
        clip_buf_printf(b, "%s%s", i ? "," : "", num);
    }
    clip_buf_puts(b, "],\"errors\":[");
    for (int i = 0; i < n; i++) {
        if (i) clip_buf_putc(b, ',');
        if (reason[i])
            json_write_string(b, reason[i], strlen(reason[i]), 0);
        else
            clip_buf_puts(b, "null");
    }
    clip_buf_puts(b, "],\"model\":");
    json_write_string(b, a->model_name, strlen(a->model_name), 0);
    clip_buf_puts(b, "}\n");
    finish(r, 200);
done:
    if (admitted) sv_batcher_unreserve(a->batcher, reserved);
    if (reason)
        for (int i = 0; i < n; i++) free(reason[i]);
    free(reason);
    work_free(&w);
    free(row);
    sv_request_free(&q);
}

/* ------------------------------------------------------------------ /v1/models */

void sv_api_models(const sv_api *a, sv_reply *r) {
    const clip_model_info *info = clip_model_get_info(a->model);
    reply_reset(r, 200);
    clip_buf *b = &r->body;
    clip_buf_puts(b, "{\"object\":\"list\",\"data\":[{\"id\":");
    json_write_string(b, a->model_name, strlen(a->model_name), 0);
    clip_buf_printf(b,
                    ",\"object\":\"model\",\"created\":0,\"owned_by\":\"clipeval\","
                    "\"embedding_dim\":%d,\"image_size\":%d,\"context_length\":%d,\"device\":",
                    a->dim, a->image_size, a->ctx);
    json_write_string(b, info->device, strlen(info->device), 0);
    clip_buf_printf(b, ",\"precision\":\"%s\"}]}\n", clip_precision_name(info->precision));
    finish(r, 200);
}
