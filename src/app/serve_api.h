/* serve_api.h — what the endpoints of `clipeval serve` compute, independent of HTTP plumbing:
 * a request body in, a status and a JSON body out. Runs on the connection's thread; the model
 * calls go through the batcher. */
#ifndef CLIP_SERVE_API_H
#define CLIP_SERVE_API_H

#include <pthread.h>

#include "clip.h"
#include "serve_batch.h"
#include "serve_metrics.h"
#include "util.h"

typedef struct sv_api {
    /* read-only after sv_api_init */
    const clip_model *model;
    const clip_tokenizer *tok;
    clip_image_config icfg;
    clip_decode_options dopt;
    int ctx, dim, image_size;
    const char *model_name;
    const char *allow_dir; /* realpath of --allow-paths, or NULL: no server-side files */
    size_t max_inputs;     /* per request (--max-queue) */
    sv_batcher *batcher;
    sv_metrics *metrics;
    /* decode slots: at most decode_threads images are decoded and resized at once, whatever
     * the number of connections (bounds CPU and the memory of decoded images) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int decode_free;
} sv_api;

typedef struct sv_reply {
    int status;
    clip_buf body;
    const char *content_type; /* NULL: application/json */
    int retry_after;          /* seconds, sent with 429 and 503 when > 0 */
} sv_reply;

clip_status sv_api_init(sv_api *a, const clip_model *m, const clip_tokenizer *tok,
                        const clip_image_config *icfg, int decode_threads, uint64_t max_pixels,
                        size_t max_image_bytes, clip_error *err);
void sv_api_destroy(sv_api *a);

void sv_api_embeddings(sv_api *a, const char *body, size_t len, sv_reply *r);
void sv_api_score(sv_api *a, const char *body, size_t len, sv_reply *r);
void sv_api_models(const sv_api *a, sv_reply *r);

/* An OpenAI-shaped error: {"error": {"message", "type", "param", "code"}}; the type and code
 * follow from the status. param may be NULL or "". */
void sv_api_error(sv_reply *r, int status, const char *param, const char *fmt, ...)
    CLIP_PRINTF(4, 5);

#endif
