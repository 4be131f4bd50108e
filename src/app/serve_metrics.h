/* serve_metrics.h — the counters and histograms of `clipeval serve`, rendered for GET /metrics
 * in the Prometheus text format (version 0.0.4). One mutex; every update is a few additions. */
#ifndef CLIP_SERVE_METRICS_H
#define CLIP_SERVE_METRICS_H

#include "clip.h"
#include "util.h"

typedef enum sv_endpoint {
    SV_EP_EMBEDDINGS,
    SV_EP_SCORE,
    SV_EP_HEALTH,
    SV_EP_MODELS,
    SV_EP_METRICS,
    SV_EP_OTHER, /* unknown paths (404) */
    SV_EP_COUNT
} sv_endpoint;

typedef enum sv_modality { SV_MOD_TEXT, SV_MOD_IMAGE, SV_MOD_COUNT } sv_modality;

const char *sv_endpoint_label(sv_endpoint e);   /* "/v1/embeddings", ..., "other" */
const char *sv_modality_label(sv_modality m);   /* "text", "image" */

typedef struct sv_metrics sv_metrics;

clip_status sv_metrics_new(sv_metrics **out, clip_error *err);
void sv_metrics_free(sv_metrics *m);

/* One answered request: its endpoint, HTTP status and seconds from its first byte to the answer. */
void sv_metrics_request(sv_metrics *m, sv_endpoint ep, int status, double seconds);
/* One model call: `inputs` queued inputs, `encoded` of them distinct (the rest deduplicated). */
void sv_metrics_batch(sv_metrics *m, sv_modality mod, int inputs, int encoded, double seconds);
/* A connection closed because a request took longer than --request-timeout to arrive or leave. */
void sv_metrics_timeout(sv_metrics *m);

/* Values read at render time from their owners. */
typedef struct sv_gauges {
    int queued[SV_MOD_COUNT];   /* inputs waiting for a model call */
    int reserved[SV_MOD_COUNT]; /* inputs admitted, being decoded/tokenized */
    int in_flight;              /* requests being received or processed */
    int connections;            /* open connections */
} sv_gauges;

/* Appends the whole exposition; 0 when memory ran out. */
int sv_metrics_render(sv_metrics *m, const sv_gauges *g, clip_buf *out);

#endif
