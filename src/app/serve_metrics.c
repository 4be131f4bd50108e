/* serve_metrics.c — Prometheus text exposition of the server's counters (serve_metrics.h). */
#include "serve_metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Statuses the server can answer with; anything else is counted under "other". */
static const int k_status[] = {200, 400, 401, 404, 405, 408, 413, 429, 500, 503};
#define N_STATUS (int)(sizeof k_status / sizeof k_status[0])

static const double k_latency_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                      0.25,  0.5,    1,     2.5,  5,     10,   30};
#define N_LAT (int)(sizeof k_latency_le / sizeof k_latency_le[0])
static const double k_batch_le[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define N_BATCH (int)(sizeof k_batch_le / sizeof k_batch_le[0])

typedef struct histogram {
    unsigned long long bucket[16]; /* non-cumulative; index n = +Inf */
    unsigned long long count;
    double sum;
} histogram;

struct sv_metrics {
    pthread_mutex_t mu;
    unsigned long long requests[SV_EP_COUNT][N_STATUS + 1];
    histogram latency[SV_EP_COUNT];
    histogram batch_size[SV_MOD_COUNT], batch_seconds[SV_MOD_COUNT];
    unsigned long long inputs[SV_MOD_COUNT], encoded[SV_MOD_COUNT];
    unsigned long long timeouts;
};

const char *sv_endpoint_label(sv_endpoint e) {
    static const char *names[SV_EP_COUNT] = {"/v1/embeddings", "/v1/score", "/health",
                                             "/v1/models",     "/metrics",  "other"};
    return e >= 0 && e < SV_EP_COUNT ? names[e] : "other";
}

const char *sv_modality_label(sv_modality m) { return m == SV_MOD_IMAGE ? "image" : "text"; }

clip_status sv_metrics_new(sv_metrics **out, clip_error *err) {
    sv_metrics *m = clip_calloc(1, sizeof *m, "server metrics", err);
    if (!m) return CLIP_ERR_NOMEM;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot create the metrics mutex");
    }
    *out = m;
    return CLIP_OK;
}

void sv_metrics_free(sv_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void observe(histogram *h, const double *le, int n, double v) {
    int i = 0;
    while (i < n && v > le[i]) i++;
    h->bucket[i]++;
    h->count++;
    h->sum += v;
}

void sv_metrics_request(sv_metrics *m, sv_endpoint ep, int status, double seconds) {
    if (ep < 0 || ep >= SV_EP_COUNT) ep = SV_EP_OTHER;
    int s = N_STATUS;
    for (int i = 0; i < N_STATUS; i++)
        if (k_status[i] == status) s = i;
    pthread_mutex_lock(&m->mu);
    m->requests[ep][s]++;
    observe(&m->latency[ep], k_latency_le, N_LAT, seconds);
    pthread_mutex_unlock(&m->mu);
}

void sv_metrics_batch(sv_metrics *m, sv_modality mod, int inputs, int encoded, double seconds) {
    pthread_mutex_lock(&m->mu);
    observe(&m->batch_size[mod], k_batch_le, N_BATCH, inputs);
    observe(&m->batch_seconds[mod], k_latency_le, N_LAT, seconds);
    m->inputs[mod] += (unsigned long long)inputs;
    m->encoded[mod] += (unsigned long long)encoded;
    pthread_mutex_unlock(&m->mu);
}

void sv_metrics_timeout(sv_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->timeouts++;
    pthread_mutex_unlock(&m->mu);
}

static void header(clip_buf *b, const char *name, const char *type, const char *help) {
    clip_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_hist(clip_buf *b, const char *name, const char *label, const histogram *h,
                        const double *le, int n) {
    unsigned long long cum = 0;
    for (int i = 0; i <= n; i++) {
        cum += h->bucket[i];
        if (i < n)
            clip_buf_printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, label, le[i], cum);
        else
            clip_buf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, label, cum);
    }
    clip_buf_printf(b, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, label, h->sum, name, label,
                    h->count);
}

int sv_metrics_render(sv_metrics *m, const sv_gauges *g, clip_buf *b) {
    pthread_mutex_lock(&m->mu);
    header(b, "clipeval_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
    for (int e = 0; e < SV_EP_COUNT; e++)
        for (int s = 0; s <= N_STATUS; s++) {
            if (!m->requests[e][s] && s != 0) continue; /* status 200 always listed */
            char st[16];
            if (s < N_STATUS)
                snprintf(st, sizeof st, "%d", k_status[s]);
            else
                snprintf(st, sizeof st, "other");
            clip_buf_printf(b, "clipeval_requests_total{endpoint=\"%s\",status=\"%s\"} %llu\n",
                            sv_endpoint_label((sv_endpoint)e), st, m->requests[e][s]);
        }
    header(b, "clipeval_request_duration_seconds", "histogram",
           "Time from a request's headers to its answer, by endpoint.");
    for (int e = 0; e < SV_EP_COUNT; e++) {
        char label[64];
        snprintf(label, sizeof label, "endpoint=\"%s\"", sv_endpoint_label((sv_endpoint)e));
        render_hist(b, "clipeval_request_duration_seconds", label, &m->latency[e], k_latency_le,
                    N_LAT);
    }
    header(b, "clipeval_batch_size", "histogram", "Queued inputs merged into one model call.");
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        char label[64];
        snprintf(label, sizeof label, "modality=\"%s\"", sv_modality_label((sv_modality)k));
        render_hist(b, "clipeval_batch_size", label, &m->batch_size[k], k_batch_le, N_BATCH);
    }
    header(b, "clipeval_batch_duration_seconds", "histogram", "Time of one model call.");
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        char label[64];
        snprintf(label, sizeof label, "modality=\"%s\"", sv_modality_label((sv_modality)k));
        render_hist(b, "clipeval_batch_duration_seconds", label, &m->batch_seconds[k],
                    k_latency_le, N_LAT);
    }
    header(b, "clipeval_inputs_total", "counter", "Inputs that went through the model queues.");
    for (int k = 0; k < SV_MOD_COUNT; k++)
        clip_buf_printf(b, "clipeval_inputs_total{modality=\"%s\"} %llu\n",
                        sv_modality_label((sv_modality)k), m->inputs[k]);
    header(b, "clipeval_encoded_total", "counter",
           "Inputs encoded by the model (identical inputs in one batch are encoded once).");
    for (int k = 0; k < SV_MOD_COUNT; k++)
        clip_buf_printf(b, "clipeval_encoded_total{modality=\"%s\"} %llu\n",
                        sv_modality_label((sv_modality)k), m->encoded[k]);
    header(b, "clipeval_request_timeouts_total", "counter",
           "Connections closed because a request outlived --request-timeout.");
    clip_buf_printf(b, "clipeval_request_timeouts_total %llu\n", m->timeouts);
    pthread_mutex_unlock(&m->mu);
    header(b, "clipeval_queue_depth", "gauge", "Inputs waiting for a model call.");
    for (int k = 0; k < SV_MOD_COUNT; k++)
        clip_buf_printf(b, "clipeval_queue_depth{modality=\"%s\"} %d\n",
                        sv_modality_label((sv_modality)k), g->queued[k]);
    header(b, "clipeval_queue_reserved", "gauge",
           "Inputs admitted and being decoded or tokenized (they count against --max-queue).");
    for (int k = 0; k < SV_MOD_COUNT; k++)
        clip_buf_printf(b, "clipeval_queue_reserved{modality=\"%s\"} %d\n",
                        sv_modality_label((sv_modality)k), g->reserved[k]);
    header(b, "clipeval_requests_in_flight", "gauge", "Requests being received or processed.");
    clip_buf_printf(b, "clipeval_requests_in_flight %d\n", g->in_flight);
    header(b, "clipeval_connections", "gauge", "Open client connections.");
    clip_buf_printf(b, "clipeval_connections %d\n", g->connections);
    return !b->oom;
}
