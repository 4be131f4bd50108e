/* serve_batch.c — the queues and model workers of `clipeval serve` (see serve_batch.h).
 *
 * Locking: one mutex guards both queues, the reservation counts and every job's `pending`;
 * each queue has a condition variable for its worker and each job one for its waiter. Inputs
 * are copied into a worker's batch buffer and results out of it without the lock: a job's
 * memory stays valid until its pending count reaches zero, which only a worker (or a cancel of
 * inputs still queued) can make happen. */
#include "serve_batch.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

typedef struct entry {
    sv_job *job;
    int index;
    double t; /* when it was queued */
} entry;

typedef struct queue {
    entry *ring;
    int head, count;
    pthread_cond_t cv; /* the worker waits for entries here */
    int cv_ok;
} queue;

typedef struct worker {
    sv_batcher *b;
    sv_modality mod;
    pthread_t thread;
    int started;
    int released, permit;  /* the test hold: over for good / one model call allowed */
    size_t row_in;         /* bytes of one input row */
    entry *take;           /* [max_batch] entries of the current call */
    int *map;              /* entry -> distinct row */
    int *slots;            /* dedup hash table: distinct row or -1 */
    uint64_t *hash;        /* per distinct row */
    unsigned char *in;     /* distinct input rows (grown on demand) */
    float *out;            /* their embeddings */
    int cap;               /* rows allocated in in/out */
} worker;

struct sv_batcher {
    const clip_model *model;
    sv_batcher_options o;
    sv_metrics *metrics;
    int dim, tsize;
    pthread_mutex_t mu;
    queue q[SV_MOD_COUNT];
    int reserved[SV_MOD_COUNT];
    int closed, stopping;
    worker w[SV_MOD_COUNT];
};

/* ------------------------------------------------------------------ helpers */

static void deadline_after(struct timespec *ts, double seconds) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    long long ns = ts->tv_nsec + (long long)(seconds * 1e9);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

/* 64-bit hash of a row (rows are whole floats or int32s: a multiple of 4 bytes). */
static uint64_t row_hash(const unsigned char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ULL;
    return h ^ (h >> 29);
}

/* Decrements a job's pending count by k; wakes its waiter at zero. Lock held. */
static void job_settle(sv_job *j, int k) {
    j->pending -= k;
    if (j->pending == 0) pthread_cond_signal(&j->done);
}

/* The test hold: one byte read allows one model call; 'r' (or EOF) ends the hold. */
static void hold(worker *w) {
    char c = 0;
    ssize_t r;
    do r = read(w->b->o.hold_fd, &c, 1);
    while (r < 0 && errno == EINTR);
    if (r != 1 || c == 'r')
        w->released = 1;
    else
        w->permit = 1;
}

static int grow(worker *w, int rows) {
    if (rows <= w->cap) return 1;
    size_t in_bytes, out_bytes;
    if (!clip_mul_size(w->row_in, (size_t)rows, &in_bytes) ||
        !clip_mul_size((size_t)w->b->dim * sizeof(float), (size_t)rows, &out_bytes))
        return 0;
    unsigned char *in = realloc(w->in, in_bytes);
    if (!in) return 0;
    w->in = in;
    float *out = realloc(w->out, out_bytes);
    if (!out) return 0;
    w->out = out;
    w->cap = rows;
    return 1;
}

/* ------------------------------------------------------------------ one model call */

/* Gathers the distinct inputs of w->take[0..k), encodes them and scatters the results. Returns
 * the number encoded, or -1 with msg. Runs without the lock. */
static int encode_batch(worker *w, int k, char *msg, size_t cap) {
    sv_batcher *b = w->b;
    int tmask = b->tsize - 1, distinct = 0;
    for (int s = 0; s < b->tsize; s++) w->slots[s] = -1;
    for (int i = 0; i < k; i++) {
        const entry *e = &w->take[i];
        const unsigned char *src =
            (const unsigned char *)e->job->in[w->mod] + (size_t)e->index * w->row_in;
        uint64_t h = row_hash(src, w->row_in);
        int s = (int)(h & (uint64_t)tmask), found = -1;
        for (; w->slots[s] >= 0; s = (s + 1) & tmask) {
            int r = w->slots[s];
            if (w->hash[r] == h && !memcmp(w->in + (size_t)r * w->row_in, src, w->row_in)) {
                found = r;
                break;
            }
        }
        if (found < 0) {
            if (!grow(w, distinct + 1)) {
                snprintf(msg, cap, "out of memory for a batch of %d %ss", distinct + 1,
                         sv_modality_label(w->mod));
                return -1;
            }
            found = distinct++;
            memcpy(w->in + (size_t)found * w->row_in, src, w->row_in);
            w->hash[found] = h;
            w->slots[s] = found;
        }
        w->map[i] = found;
    }
    clip_error e = {0};
    clip_status st = w->mod == SV_MOD_TEXT
                         ? clip_encode_texts(b->model, (const int32_t *)w->in, distinct,
                                             (int)(w->row_in / sizeof(int32_t)), NULL, w->out, &e)
                         : clip_encode_images(b->model, (const float *)w->in, distinct, NULL,
                                              w->out, &e);
    if (st) {
        snprintf(msg, cap, "model error: %.560s", e.msg);
        return -1;
    }
    size_t dim = (size_t)b->dim;
    for (int i = 0; i < k; i++) {
        const entry *en = &w->take[i];
        memcpy(en->job->out[w->mod] + (size_t)en->index * dim, w->out + (size_t)w->map[i] * dim,
               dim * sizeof(float));
    }
    return distinct;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    sv_batcher *b = w->b;
    queue *q = &b->q[w->mod];
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!q->count && !b->stopping) pthread_cond_wait(&q->cv, &b->mu);
        if (!q->count) break; /* stopping and nothing left */
        if (b->o.hold_fd >= 0 && !w->released && !w->permit) {
            pthread_mutex_unlock(&b->mu);
            hold(w);
            pthread_mutex_lock(&b->mu);
            continue; /* the queue may have been cancelled meanwhile */
        }
        /* Wait for inputs that admitted requests are still preparing, but never past
         * max_wait_ms after the oldest queued input. */
        if (b->o.max_wait_ms > 0 && q->count < b->o.max_batch && b->reserved[w->mod] > 0) {
            double waited = clip_now() - q->ring[q->head].t;
            double left = b->o.max_wait_ms / 1000.0 - waited;
            if (left > 0) {
                struct timespec ts;
                deadline_after(&ts, left);
                while (q->count < b->o.max_batch && b->reserved[w->mod] > 0 && !b->closed &&
                       !b->stopping)
                    if (pthread_cond_timedwait(&q->cv, &b->mu, &ts) == ETIMEDOUT) break;
            }
            if (!q->count) continue;
        }
        w->permit = 0;
        int k = q->count < b->o.max_batch ? q->count : b->o.max_batch;
        int qcap = b->o.max_queue;
        for (int i = 0; i < k; i++) w->take[i] = q->ring[(q->head + i) % qcap];
        q->head = (q->head + k) % qcap;
        q->count -= k;
        pthread_mutex_unlock(&b->mu);

        char msg[600] = "";
        double t0 = clip_now();
        int encoded = encode_batch(w, k, msg, sizeof msg);
        double dt = clip_now() - t0;
        if (encoded >= 0) sv_metrics_batch(b->metrics, w->mod, k, encoded, dt);

        pthread_mutex_lock(&b->mu);
        for (int i = 0; i < k; i++) {
            sv_job *j = w->take[i].job;
            if (encoded < 0 && j->result == SV_JOB_OK) {
                j->result = SV_JOB_MODEL_ERROR;
                snprintf(j->msg, sizeof j->msg, "%s", msg);
            }
            job_settle(j, 1);
        }
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ------------------------------------------------------------------ public */

static void worker_free(worker *w) {
    free(w->take);
    free(w->map);
    free(w->slots);
    free(w->hash);
    free(w->in);
    free(w->out);
}

clip_status sv_batcher_start(const clip_model *m, int ctx, const sv_batcher_options *o,
                             sv_metrics *metrics, sv_batcher **out, clip_error *err) {
    *out = NULL;
    if (o->max_batch < 1 || o->max_queue < 1 || o->max_wait_ms < 0 || ctx < 1)
        return clip_fail(err, CLIP_ERR_ARG, "batcher: invalid limits");
    sv_batcher *b = clip_calloc(1, sizeof *b, "the batcher", err);
    if (!b) return CLIP_ERR_NOMEM;
    const clip_model_info *info = clip_model_get_info(m);
    b->model = m;
    b->o = *o;
    b->metrics = metrics;
    b->dim = info->embed_dim;
    b->tsize = 16;
    while (b->tsize < 2 * o->max_batch) b->tsize *= 2;
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot create the batcher mutex");
    }
    pthread_condattr_t ca;
    int ok = pthread_condattr_init(&ca) == 0;
    /* batching deadlines are on the monotonic clock */
    int ca_ok = ok;
    ok = ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0;
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        queue *q = &b->q[k];
        worker *w = &b->w[k];
        q->cv_ok = ok && pthread_cond_init(&q->cv, &ca) == 0;
        ok = ok && q->cv_ok;
        q->ring = calloc((size_t)o->max_queue, sizeof *q->ring);
        w->b = b;
        w->mod = (sv_modality)k;
        w->row_in = k == SV_MOD_TEXT ? (size_t)ctx * sizeof(int32_t)
                                     : (size_t)3 * info->image_size * info->image_size * sizeof(float);
        w->take = calloc((size_t)o->max_batch, sizeof *w->take);
        w->map = calloc((size_t)o->max_batch, sizeof *w->map);
        w->slots = calloc((size_t)b->tsize, sizeof *w->slots);
        w->hash = calloc((size_t)o->max_batch, sizeof *w->hash);
        ok = ok && q->ring && w->take && w->map && w->slots && w->hash;
    }
    if (ca_ok) pthread_condattr_destroy(&ca);
    if (!ok) {
        sv_batcher_free(b);
        return clip_fail(err, CLIP_ERR_NOMEM,
                         "cannot allocate the batcher (--max-queue %d, --max-batch %d)",
                         o->max_queue, o->max_batch);
    }
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        if (pthread_create(&b->w[k].thread, NULL, worker_main, &b->w[k]) != 0) {
            sv_batcher_free(b);
            return clip_fail(err, CLIP_ERR_NOMEM, "cannot start the model worker threads");
        }
        b->w[k].started = 1;
    }
    *out = b;
    return CLIP_OK;
}

sv_admit sv_batcher_reserve(sv_batcher *b, const int n[SV_MOD_COUNT]) {
    sv_admit r = SV_ADMIT_OK;
    pthread_mutex_lock(&b->mu);
    if (b->closed) {
        r = SV_ADMIT_CLOSED;
    } else {
        for (int k = 0; k < SV_MOD_COUNT; k++)
            if (n[k] > b->o.max_queue - b->reserved[k] - b->q[k].count) r = SV_ADMIT_FULL;
        if (r == SV_ADMIT_OK)
            for (int k = 0; k < SV_MOD_COUNT; k++) b->reserved[k] += n[k];
    }
    pthread_mutex_unlock(&b->mu);
    return r;
}

void sv_batcher_unreserve(sv_batcher *b, const int n[SV_MOD_COUNT]) {
    pthread_mutex_lock(&b->mu);
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        b->reserved[k] -= n[k];
        if (n[k]) pthread_cond_signal(&b->q[k].cv); /* a worker may be waiting for these */
    }
    pthread_mutex_unlock(&b->mu);
}

sv_job_result sv_batcher_run(sv_batcher *b, sv_job *job, const int reserved[SV_MOD_COUNT]) {
    job->result = SV_JOB_OK;
    job->msg[0] = '\0';
    job->pending = 0;
    if (pthread_cond_init(&job->done, NULL) != 0) {
        sv_batcher_unreserve(b, reserved);
        job->result = SV_JOB_MODEL_ERROR;
        snprintf(job->msg, sizeof job->msg, "cannot create a condition variable");
        return job->result;
    }
    double now = clip_now();
    pthread_mutex_lock(&b->mu);
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        b->reserved[k] -= reserved[k];
        if (b->closed) continue;
        queue *q = &b->q[k];
        /* reserve() kept reserved + queued <= max_queue, so the ring has room */
        for (int i = 0; i < job->n[k]; i++) {
            q->ring[(q->head + q->count) % b->o.max_queue] = (entry){job, i, now};
            q->count++;
        }
        job->pending += job->n[k];
        pthread_cond_signal(&q->cv);
    }
    if (b->closed) {
        job->result = SV_JOB_CANCELLED;
    } else {
        while (job->pending > 0) pthread_cond_wait(&job->done, &b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&job->done);
    return job->result;
}

void sv_batcher_close(sv_batcher *b) {
    pthread_mutex_lock(&b->mu);
    b->closed = 1;
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        queue *q = &b->q[k];
        for (int i = 0; i < q->count; i++) {
            sv_job *j = q->ring[(q->head + i) % b->o.max_queue].job;
            if (j->result == SV_JOB_OK) j->result = SV_JOB_CANCELLED;
            job_settle(j, 1);
        }
        q->count = 0;
        if (q->cv_ok) pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&b->mu);
}

void sv_batcher_free(sv_batcher *b) {
    if (!b) return;
    sv_batcher_close(b);
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    for (int k = 0; k < SV_MOD_COUNT; k++)
        if (b->q[k].cv_ok) pthread_cond_broadcast(&b->q[k].cv);
    pthread_mutex_unlock(&b->mu);
    /* a worker held by the test FIFO is blocked in read(): release it (one 'r' each) */
    if (b->o.hold_fd >= 0) {
        ssize_t wr = write(b->o.hold_fd, "rr", 2);
        (void)wr;
    }
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        if (b->w[k].started) pthread_join(b->w[k].thread, NULL);
        worker_free(&b->w[k]);
        free(b->q[k].ring);
        if (b->q[k].cv_ok) pthread_cond_destroy(&b->q[k].cv);
    }
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void sv_batcher_gauges(sv_batcher *b, int queued[SV_MOD_COUNT], int reserved[SV_MOD_COUNT]) {
    pthread_mutex_lock(&b->mu);
    for (int k = 0; k < SV_MOD_COUNT; k++) {
        queued[k] = b->q[k].count;
        reserved[k] = b->reserved[k];
    }
    pthread_mutex_unlock(&b->mu);
}
