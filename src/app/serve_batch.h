/* serve_batch.h — dynamic batching for `clipeval serve`.
 *
 * Requests reserve room first (before their images are decoded), then queue their token rows
 * and pixel tensors. Texts and images queue separately; one worker per queue merges whatever
 * is queued into one model call of at most max_batch inputs. A worker that finds inputs waits
 * up to max_wait_ms for more only while other admitted requests of its kind are still being
 * prepared, so a lone request is never delayed. Identical inputs in one call are encoded once.
 * Admission is bounded: reserved + queued inputs of a kind never exceed max_queue. */
#ifndef CLIP_SERVE_BATCH_H
#define CLIP_SERVE_BATCH_H

#include <pthread.h>

#include "clip.h"
#include "serve_metrics.h"

typedef struct sv_batcher_options {
    int max_batch;   /* inputs per model call */
    int max_wait_ms; /* how long a call may wait for inputs still being prepared (0: never) */
    int max_queue;   /* inputs of one kind admitted at once (being prepared or queued) */
    int hold_fd;     /* testing only, -1 = off: each worker reads one byte before every model
                        call and stops doing so after reading 'r' (tests/serve uses a FIFO to hold
                        the queue still without timing) */
} sv_batcher_options;

typedef enum sv_job_result { SV_JOB_OK = 0, SV_JOB_MODEL_ERROR, SV_JOB_CANCELLED } sv_job_result;

typedef struct sv_job {
    /* set by the caller */
    int n[SV_MOD_COUNT];
    const void *in[SV_MOD_COUNT]; /* text: int32 ids [n, ctx]; image: float pixels [n, 3, S, S] */
    float *out[SV_MOD_COUNT];     /* [n, embed_dim] each, written by the workers */
    /* set by the batcher */
    sv_job_result result;
    char msg[600]; /* SV_JOB_MODEL_ERROR: the engine's message */
    int pending;
    pthread_cond_t done;
} sv_job;

typedef enum sv_admit { SV_ADMIT_OK, SV_ADMIT_FULL, SV_ADMIT_CLOSED } sv_admit;

typedef struct sv_batcher sv_batcher;

/* ctx: the token row length (ids per text). Starts one worker per kind. */
clip_status sv_batcher_start(const clip_model *m, int ctx, const sv_batcher_options *o,
                             sv_metrics *metrics, sv_batcher **out, clip_error *err);

/* Admission: reserves n[k] inputs of each kind, or refuses (queue full, or shutting down). */
sv_admit sv_batcher_reserve(sv_batcher *b, const int n[SV_MOD_COUNT]);
/* Gives a reservation back unused (the request failed before queuing). */
void sv_batcher_unreserve(sv_batcher *b, const int n[SV_MOD_COUNT]);
/* Queues job (job->n[k] <= reserved[k]; the whole reservation is consumed) and waits until every
 * input is encoded or the job is cancelled. Returns job->result. */
sv_job_result sv_batcher_run(sv_batcher *b, sv_job *job, const int reserved[SV_MOD_COUNT]);

/* Shutdown, step 1: refuse new reservations and cancel what is still queued (inputs already in
 * a model call finish). */
void sv_batcher_close(sv_batcher *b);
/* Step 2: stop and join the workers, free everything (closes first if needed). */
void sv_batcher_free(sv_batcher *b);

void sv_batcher_gauges(sv_batcher *b, int queued[SV_MOD_COUNT], int reserved[SV_MOD_COUNT]);

#endif
