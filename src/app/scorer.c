/* scorer.c — `clipeval score` and `clipeval filter`: what DataFlow-MM's ImageCLIPEvaluator,
 * ImageClipFilter and CLIPScoreFilter compute, row for row, without their per-row loops. Every
 * row's cosine and outcome are computed the same way for all three; filter.c says what each
 * makes of them (the value, which rows are written).
 *
 * Shape of a run:
 *   pass 0  table_scan: row count, columns (a missing column is an error, like DataFlow's
 *           KeyError), per-column dtypes for pandas' str() of the text;
 *   then, window by window (a bounded number of rows):
 *     reader A  collects the window's image paths and texts; every distinct one that is not
 *               in the embedding caches is decoded/tokenized and encoded in batches, decoding
 *               of batch j+1 overlapping the encoding of batch j;
 *               (texts first; a row counts as scored for the progress line once its image
 *               is settled);
 *     values    for every row, from the cached embeddings; failures go to failures.c (one
 *               warning per distinct image, a summary, --log-failures);
 *     reader B  reads the same rows again and the writer copies out those the mode keeps,
 *               with the value (or, for ImageClipFilter, unchanged);
 *   except that CLIPScoreFilter (KEEP_RATIO) keeps only the values (one double and one outcome
 *   byte per row) until the last window, then takes the percentile, and reader B writes the
 *   kept rows in a second pass.
 *   The writer's temporary file is renamed over the output only at the very end (files.c).
 * Memory is bounded by the window, the batch and the cache sizes, whatever the table size. */
#include "scorer.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "failures.h"
#include "progress.h"
#include "pytext.h"
#include "runinfo.h"
#include "testhook.h"
#include "util.h"

#define WINDOW_ROWS 4096

void clip_score_options_init(clip_score_options *o) {
    memset(o, 0, sizeof *o);
    o->image_key = "image_path";
    o->text_key = "text";
    o->output_key = "clip_score";
    o->command = "score";
    o->model = CLIP_DEFAULT_MODEL;
    o->device = CLIP_DEVICE_AUTO;
    o->precision = CLIP_PRECISION_FP32;
    o->batch_size = 32;
    o->cache_entries = 65536;
    o->progress = 1;
    clip_decode_options_init(&o->decode);
    o->log = stderr;
}

clip_status clip_score_image_config(const clip_model *m, clip_image_config *cfg, clip_error *err) {
    const clip_model_info *info = clip_model_get_info(m);
    clip_status st = clip_image_config_load(info->dir, cfg, err);
    if (!st && (cfg->crop_height != info->image_size || cfg->crop_width != info->image_size))
        st = clip_fail(err, CLIP_ERR_CONFIG,
                       "%s: preprocessor crop size %dx%d does not match the model's image size %d",
                       info->dir, cfg->crop_width, cfg->crop_height, info->image_size);
    return st;
}

static size_t max_text_bytes(const clip_score_options *o) {
    return o->max_text_bytes ? o->max_text_bytes : CLIP_SCORE_DEFAULT_MAX_TEXT;
}

double clip_pair_cosine(const float *img, const float *txt, int dim) {
    /* DataFlow: v = float((a * b).sum()) on float32 tensors (the filters: the same dot as a
     * float32 matmul or sum). The float32 sum's own order is torch's; we sum exactly-rounded
     * products in double and round once to float, which is within the golden tolerance of
     * every ordering. */
    double acc = 0.0;
    for (int i = 0; i < dim; i++) acc += (double)img[i] * (double)txt[i];
    return (double)(float)acc;
}

double clip_pair_score(const float *img, const float *txt, int dim) {
    /* (v + 1) / 2 in double, clamped; NaN passes through, as Python's min/max let it */
    return filter_value(CLIP_MODE_SCORE, ROW_SCORED, clip_pair_cosine(img, txt, dim));
}

/* ------------------------------------------------------------------ embedding cache */

/* A string-keyed LRU of embeddings: open addressing (linear probing, backward-shift
 * deletion) over `cap` entries, each owning one row of the embedding arena. */
/* Entry states: PENDING = just inserted; QUEUED = to be encoded in this window; CHECKED = the
 * image decodes but was only needed by blank-text rows (no embedding yet). */
enum { E_FREE = 0, E_PENDING, E_QUEUED, E_OK, E_FAILED, E_CHECKED };

typedef struct centry {
    char *key;
    size_t klen;
    uint64_t hash;
    int state;
    char *reason;      /* E_FAILED: the decoder's message */
    clip_status code;  /* E_FAILED: the decoder's status */
    int prev, next;    /* LRU list, most recent at head */
    size_t window;     /* last window that used it: never evicted while in use */
    int slot;          /* index into the table, kept in sync on moves */
} centry;

typedef struct cache {
    centry *e;     /* cap entries; entry i owns emb[i * dim] */
    int *table;    /* tsize slots: entry index or -1 */
    size_t cap, tsize, n;
    int head, tail, free_head; /* free list threads through `next` */
    float *emb;
    int dim;
} cache;

/* FNV-1a, its high bits folded down: the table index takes the low bits. */
static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = clip_fnv1a64(s, n);
    return h ^ (h >> 29);
}

static clip_status cache_init(cache *c, size_t cap, int dim, clip_error *err) {
    memset(c, 0, sizeof *c);
    c->cap = cap;
    c->dim = dim;
    c->tsize = 16;
    while (c->tsize < 2 * cap) c->tsize *= 2;
    c->e = calloc(cap, sizeof *c->e);
    c->table = malloc(c->tsize * sizeof *c->table);
    size_t ebytes;
    if (!clip_mul_size(cap * (size_t)dim, sizeof(float), &ebytes)) ebytes = SIZE_MAX;
    c->emb = ebytes == SIZE_MAX ? NULL : malloc(ebytes);
    if (!c->e || !c->table || !c->emb) {
        free(c->e);
        free(c->table);
        free(c->emb);
        return clip_fail(err, CLIP_ERR_NOMEM,
                         "cannot allocate an embedding cache of %zu entries (use --cache-entries)",
                         cap);
    }
    for (size_t i = 0; i < c->tsize; i++) c->table[i] = -1;
    for (size_t i = 0; i < cap; i++) c->e[i].next = i + 1 < cap ? (int)i + 1 : -1;
    c->free_head = 0;
    c->head = c->tail = -1;
    return CLIP_OK;
}

static void cache_free(cache *c) {
    for (size_t i = 0; i < c->cap; i++) {
        free(c->e[i].key);
        free(c->e[i].reason);
    }
    free(c->e);
    free(c->table);
    free(c->emb);
}

static void lru_unlink(cache *c, int i) {
    centry *e = &c->e[i];
    if (e->prev >= 0) c->e[e->prev].next = e->next; else c->head = e->next;
    if (e->next >= 0) c->e[e->next].prev = e->prev; else c->tail = e->prev;
}

static void lru_push_front(cache *c, int i) {
    centry *e = &c->e[i];
    e->prev = -1;
    e->next = c->head;
    if (c->head >= 0) c->e[c->head].prev = i;
    c->head = i;
    if (c->tail < 0) c->tail = i;
}

static int cache_find(const cache *c, const char *key, size_t klen, uint64_t h) {
    size_t mask = c->tsize - 1;
    for (size_t s = h & mask;; s = (s + 1) & mask) {
        int i = c->table[s];
        if (i < 0) return -1;
        const centry *e = &c->e[i];
        if (e->hash == h && e->klen == klen && !memcmp(e->key, key, klen)) return i;
    }
}

static void cache_remove(cache *c, int i) {
    size_t mask = c->tsize - 1, s = (size_t)c->e[i].slot;
    c->table[s] = -1;
    /* backward-shift: move later entries of the run into the hole when allowed */
    for (size_t j = (s + 1) & mask; c->table[j] >= 0; j = (j + 1) & mask) {
        int k = c->table[j];
        size_t home = c->e[k].hash & mask;
        int between = s <= j ? (home > s && home <= j) : (home > s || home <= j);
        if (!between) {
            c->table[s] = k;
            c->e[k].slot = (int)s;
            c->table[j] = -1;
            s = j;
        }
    }
    lru_unlink(c, i);
    free(c->e[i].key);
    free(c->e[i].reason);
    memset(&c->e[i], 0, sizeof c->e[i]);
    c->e[i].next = c->free_head;
    c->free_head = i;
    c->n--;
}

/* Finds or inserts `key`, marks it used by `window`; -1 when the cache is full of entries the
 * current window still needs (cannot happen: cap >= 2 windows) or on allocation failure. */
static int cache_get(cache *c, const char *key, size_t klen, size_t window, int *inserted) {
    uint64_t h = hash_bytes(key, klen);
    int i = cache_find(c, key, klen, h);
    *inserted = 0;
    if (i >= 0) {
        lru_unlink(c, i);
        lru_push_front(c, i);
        c->e[i].window = window;
        return i;
    }
    if (c->free_head < 0) {
        int victim = c->tail;
        if (victim < 0 || c->e[victim].window == window) return -1;
        cache_remove(c, victim);
    }
    char *k = malloc(klen + 1);
    if (!k) return -1;
    memcpy(k, key, klen);
    k[klen] = '\0';
    i = c->free_head;
    c->free_head = c->e[i].next;
    centry *e = &c->e[i];
    memset(e, 0, sizeof *e);
    e->key = k;
    e->klen = klen;
    e->hash = h;
    e->state = E_PENDING;
    e->window = window;
    size_t mask = c->tsize - 1, s = h & mask;
    while (c->table[s] >= 0) s = (s + 1) & mask;
    c->table[s] = i;
    e->slot = (int)s;
    lru_push_front(c, i);
    c->n++;
    *inserted = 1;
    return i;
}

static float *cache_emb(cache *c, int i) { return c->emb + (size_t)i * c->dim; }

/* ------------------------------------------------------------------ decode pool */

typedef struct decode_job {
    const char *path;
    float *pixels;  /* NULL: decode only (is it a readable image?) */
    size_t *left;   /* jobs of this job's batch still running (under the pool mutex) */
    clip_status st;
    char msg[sizeof(((clip_error *)0)->msg)];
} decode_job;

typedef struct decode_pool {
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    decode_job **queue;
    size_t qcap, qhead, qlen, pending;
    int stop;
    const clip_image_config *icfg;
    const clip_decode_options *dopt;
} decode_pool;

static void *decode_worker(void *arg) {
    decode_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->stop && p->qlen == 0) pthread_cond_wait(&p->work, &p->mu);
        if (p->stop && p->qlen == 0) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        decode_job *j = p->queue[p->qhead];
        p->qhead = (p->qhead + 1) % p->qcap;
        p->qlen--;
        pthread_mutex_unlock(&p->mu);
        clip_error e = {0};
        if (j->pixels) {
            j->st = clip_preprocess_file(j->path, p->icfg, p->dopt, j->pixels, &e);
        } else {
            clip_image img = {0};
            j->st = clip_image_decode_file(j->path, p->dopt, &img, &e);
            clip_image_free(&img);
        }
        memcpy(j->msg, j->st ? e.msg : "", j->st ? sizeof j->msg : 1);
        pthread_mutex_lock(&p->mu);
        --p->pending;
        if (--*j->left == 0) pthread_cond_broadcast(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

static clip_status pool_start(decode_pool *p, int nthreads, size_t qcap,
                              const clip_image_config *icfg, const clip_decode_options *dopt,
                              clip_error *err) {
    memset(p, 0, sizeof *p);
    p->icfg = icfg;
    p->dopt = dopt;
    p->qcap = qcap;
    p->queue = malloc(qcap * sizeof *p->queue);
    p->threads = malloc((size_t)nthreads * sizeof *p->threads);
    if (!p->queue || !p->threads) {
        free(p->queue);
        free(p->threads);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate the decoder pool");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, decode_worker, p) != 0) break;
        p->nthreads++;
    }
    if (p->nthreads == 0) {
        free(p->queue);
        free(p->threads);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot start decoder threads");
    }
    return CLIP_OK;
}

/* Queues one batch of jobs; *left counts them down as they finish. The queue holds every job
 * of two batches (or one window), the most ever in flight. */
static void pool_submit(decode_pool *p, decode_job *jobs, size_t n, size_t *left) {
    pthread_mutex_lock(&p->mu);
    *left = n;
    for (size_t i = 0; i < n; i++) {
        jobs[i].left = left;
        p->queue[(p->qhead + p->qlen) % p->qcap] = &jobs[i];
        p->qlen++;
        p->pending++;
    }
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
}

static void pool_wait(decode_pool *p, size_t *left) {
    pthread_mutex_lock(&p->mu);
    while (*left > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static void pool_stop(decode_pool *p) {
    if (!p->threads) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p->queue);
    free(p->threads);
    p->threads = NULL;
}

/* ------------------------------------------------------------------ run state */

typedef struct row_info {
    int img;          /* image cache entry, or -1 when the cell is not a usable path (or when
                       * the text decides first: KEEP_RATIO with blank text) */
    int txt;          /* text cache entry, or -1 for blank text */
    int blank;        /* empty text by the mode's rule (filter.h), or too long */
    int missing;      /* THRESHOLD: the text cell is null/NaN/absent (counts as blank) */
    int too_long;     /* text above max_text_bytes: refused, 0.0 + warning */
    size_t text_len;
    char bad_image[160]; /* why the image cell is unusable (non-string, empty) */
    size_t line;
} row_info;

typedef struct run {
    const clip_score_options *o;
    const char *input;    /* the input's name in messages ("stdin" for "-") */
    clip_model *model;
    clip_tokenizer *tok;
    clip_image_config icfg;
    table_schema *schema;
    int img_col, txt_col, q_col, dim, S;
    clip_table_mode mode;
    cache images, texts;
    /* The progress count: a row of the window is scored once both its entries are settled.
     * Each cache entry heads a list (through *_next, indexed by row) of the rows waiting for
     * it; pending[k] counts what row k still waits for. */
    int *img_head, *txt_head;  /* per cache entry: first waiting row, or -1 */
    int *img_next, *txt_next;  /* per window row */
    unsigned char *pending;    /* per window row */
    decode_pool pool;
    clip_score_stats *stats;
    clip_buf text, path, part;
    size_t rows_done;     /* rows whose score is known (the progress count) */
    progress *prog;
    failures *fails;
    testhook hook;
    outfile *rejects;
    int rejects_wanted;   /* the output is a regular file: invalid rows go to OUT.rejects */
    table_writer *w;
    scores_out *scores;   /* --scores-out, or NULL */
    double cutoff;        /* what filter_keeps compares with */
    /* KEEP_RATIO: every row's value and outcome, for the percentile and the second pass */
    double *values;
    unsigned char *outcomes;
    size_t nvalues, capvalues;
} run;

static void warn(const run *r, size_t line, const char *fmt, ...) CLIP_PRINTF(3, 4);
static void warn(const run *r, size_t line, const char *fmt, ...) {
    if (!r->o->log) return;
    progress_log_begin(r->prog);
    if (line)
        fprintf(r->o->log, "clipeval: warning: %s:%zu: ", r->input, line);
    else
        fputs("clipeval: warning: ", r->o->log);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->o->log, fmt, ap);
    va_end(ap);
    fputc('\n', r->o->log);
    progress_log_end(r->prog);
}

static void rows_done(run *r, size_t n) {
    r->rows_done += n;
    progress_set(r->prog, r->rows_done);
}

/* The reason class of a decode failure, for the summary. */
static const char *image_why(clip_status st) {
    switch (st) {
    case CLIP_ERR_NOT_FOUND: return "image file not found";
    case CLIP_ERR_IO: return "image file unreadable";
    case CLIP_ERR_FORMAT: return "not a valid image";
    case CLIP_ERR_UNSUPPORTED: return "unsupported image format";
    case CLIP_ERR_LIMIT: return "image above a limit (--max-pixels, --max-file-bytes)";
    default: return "image failed";
    }
}

/* Resolves the image cell of a row into r->path; 0 with a reason when it is not usable. */
static int image_path(run *r, const table_row *row, char *why, size_t cap) {
    size_t len;
    const char *s = table_row_string(row, r->img_col, &len);
    if (!s) {
        table_kind k = table_row_kind(row, r->img_col);
        snprintf(why, cap, "image value is %s, not a path",
                 k == TK_MISSING ? "missing" : k == TK_NULL ? "null" : "not a string");
        return 0;
    }
    if (len == 0 || memchr(s, '\0', len)) {
        snprintf(why, cap, len ? "image path contains a NUL byte" : "image path is empty");
        return 0;
    }
    r->path.len = 0;
    if (r->o->image_root && s[0] != '/') {
        clip_buf_puts(&r->path, r->o->image_root);
        if (r->path.len && r->path.data[r->path.len - 1] != '/') clip_buf_putc(&r->path, '/');
    }
    clip_buf_append(&r->path, s, len);
    return !r->path.oom;
}

/* Python's `not value` for a non-missing cell, from its kind and str(). */
static int py_falsy(table_kind k, const char *s, size_t n) {
#define IS(lit) (n == sizeof lit - 1 && !memcmp(s, lit, n))
    switch (k) {
    case TK_INT: return IS("0");
    case TK_FLOAT: return IS("0.0") || IS("-0.0");
    case TK_BOOL: return IS("False");
    case TK_LIST: return IS("[]");
    case TK_DICT: return IS("{}");
    default: return n == 0;
    }
#undef IS
}

/* Whether pandas holds the cell as missing (pd.isna): absent, null, or a float NaN. */
static clip_status cell_missing(run *r, const table_row *row, int col, int *na, clip_error *err) {
    table_kind k = table_row_kind(row, col);
    *na = k == TK_MISSING || k == TK_NULL;
    if (k != TK_FLOAT) return CLIP_OK;
    r->part.len = 0;
    clip_status st = table_row_text(row, r->schema, col, &r->part, err);
    *na = !st && r->part.len == 3 && !memcmp(r->part.data, "nan", 3);
    return st;
}

/* The row's text by the mode's rule, in r->text (sets ri->blank, ri->missing, ri->text_len):
 *   SCORE       str(value) as pandas holds it (ImageCLIPEvaluator's str(row[key])); blank when
 *               empty or whitespace-only (`not text or text.strip() == ""`);
 *   THRESHOLD   the raw value's `not text or text.strip() == ""` (ImageClipFilter does not str()
 *               it): a falsy value (None, 0, 0.0, False, [], {}) is blank, with upstream's
 *               warning; where upstream crashes, a missing value (absent, NaN: .strip() of a
 *               float) is blank too, and other non-strings are str()'d, as the evaluator does;
 *   KEEP_RATIO  question + answer, each str()'d, a missing one counting as "" (upstream: NaN + str
 *               raises TypeError; NaN + NaN is NaN, a NaN score); blank only when empty: upstream
 *               checks `text == ""`, so whitespace-only text is scored. */
static clip_status row_text(run *r, const table_row *row, row_info *ri, clip_error *err) {
    clip_status st = CLIP_OK;
    int na = 0;
    r->text.len = 0;
    if (r->mode == CLIP_MODE_KEEP_RATIO) {
        int cols[2] = {r->q_col, r->txt_col};
        for (int i = 0; i < 2 && !st; i++) {
            if ((st = cell_missing(r, row, cols[i], &na, err)) || na) continue;
            r->part.len = 0;
            st = table_row_text(row, r->schema, cols[i], &r->part, err);
            if (!st && r->part.len) clip_buf_append(&r->text, r->part.data, r->part.len);
        }
        if (!st && r->text.oom) st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
        ri->blank = r->text.len == 0;
    } else {
        int falsy = 0;
        if (r->mode == CLIP_MODE_THRESHOLD) st = cell_missing(r, row, r->txt_col, &na, err);
        if (!st && !na) st = table_row_text(row, r->schema, r->txt_col, &r->text, err);
        if (!st && !na && r->mode == CLIP_MODE_THRESHOLD)
            falsy = py_falsy(table_row_kind(row, r->txt_col), r->text.data, r->text.len);
        ri->missing = na;
        ri->blank = na || falsy || r->text.len == 0 || py_blank(r->text.data, r->text.len);
    }
    ri->text_len = r->text.len;
    return st;
}

/* Cache entry e is settled (encoded, or failed): the rows that waited only for it are scored. */
static void settle(run *r, int *head, const int *next, int e) {
    size_t n = 0;
    for (int k = head[e]; k >= 0; k = next[k])
        if (--r->pending[k] == 0) n++;
    head[e] = -1;
    rows_done(r, n);
}

static void image_settled(run *r, int e) {
    settle(r, r->img_head, r->img_next, e);
}

static void image_failed(centry *e, const decode_job *j) {
    e->state = E_FAILED;
    e->code = j->st;
    e->reason = strdup(j->msg);
}

static clip_status encode_images(run *r, int *entries, size_t n, clip_error *err) {
    size_t B = (size_t)r->o->batch_size, per = (size_t)3 * r->S * r->S;
    float *px[2] = {malloc(sizeof(float) * per * B), malloc(sizeof(float) * per * B)};
    decode_job *jobs[2] = {calloc(B, sizeof(decode_job)), calloc(B, sizeof(decode_job))};
    float *batch = malloc(sizeof(float) * per * B), *out = malloc(sizeof(float) * r->dim * B);
    int *ok = malloc(sizeof(int) * B);
    size_t left[2] = {0, 0};
    clip_status st = CLIP_OK;
    if (!px[0] || !px[1] || !jobs[0] || !jobs[1] || !batch || !out || !ok) {
        st = clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate image batch buffers");
        goto done;
    }
    size_t nb = (n + B - 1) / B;
    for (size_t b = 0; b <= nb; b++) {
        /* batch b decodes while batch b-1 is encoded */
        if (b < nb && !st) {
            size_t i0 = b * B, cnt = n - i0 < B ? n - i0 : B;
            for (size_t k = 0; k < cnt; k++) {
                decode_job *j = &jobs[b % 2][k];
                j->path = r->images.e[entries[i0 + k]].key;
                j->pixels = px[b % 2] + per * k;
            }
            pool_submit(&r->pool, jobs[b % 2], cnt, &left[b % 2]);
        }
        if (b == 0) continue;
        size_t pb = b - 1, i0 = pb * B, cnt = n - i0 < B ? n - i0 : B;
        pool_wait(&r->pool, &left[pb % 2]);
        if (st) continue; /* after an error: only drain what is in flight */
        size_t nok = 0;
        for (size_t k = 0; k < cnt; k++) {
            decode_job *j = &jobs[pb % 2][k];
            centry *e = &r->images.e[entries[i0 + k]];
            if (j->st) {
                image_failed(e, j);
                continue;
            }
            memcpy(batch + per * nok, j->pixels, sizeof(float) * per);
            ok[nok++] = entries[i0 + k];
        }
        if (nok) {
            st = clip_encode_images(r->model, batch, (int)nok, NULL, out, err);
            for (size_t k = 0; k < nok && !st; k++) {
                memcpy(cache_emb(&r->images, ok[k]), out + (size_t)r->dim * k,
                       sizeof(float) * (size_t)r->dim);
                r->images.e[ok[k]].state = E_OK;
            }
            r->stats->images_encoded += nok;
            r->stats->images_read += nok;
        }
        if (!st) {
            for (size_t k = 0; k < cnt; k++) image_settled(r, entries[i0 + k]);
            if (nok) testhook_reached(&r->hook, "batch");
        }
    }
done:
    free(px[0]);
    free(px[1]);
    free(jobs[0]);
    free(jobs[1]);
    free(batch);
    free(out);
    free(ok);
    return st;
}

/* Images only rows with blank text use: decoded (is it readable?), never encoded. */
static clip_status check_images(run *r, int *entries, size_t n, clip_error *err) {
    decode_job *jobs = calloc(n ? n : 1, sizeof *jobs);
    if (!jobs) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < n; k++) jobs[k].path = r->images.e[entries[k]].key;
    size_t left;
    pool_submit(&r->pool, jobs, n, &left);
    pool_wait(&r->pool, &left);
    for (size_t k = 0; k < n; k++) {
        centry *e = &r->images.e[entries[k]];
        if (jobs[k].st) {
            image_failed(e, &jobs[k]);
        } else {
            e->state = E_CHECKED;
            r->stats->images_read++;
        }
        image_settled(r, entries[k]);
    }
    free(jobs);
    return CLIP_OK;
}

static clip_status encode_texts(run *r, int *entries, size_t n, clip_error *err) {
    int L = clip_tokenizer_max_length(r->tok);
    size_t B = (size_t)r->o->batch_size * 8; /* texts are ~10x cheaper than images */
    if (L > clip_model_get_info(r->model)->context_length)
        L = clip_model_get_info(r->model)->context_length;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)L * B);
    const char **texts = malloc(sizeof(char *) * B);
    size_t *lens = malloc(sizeof(size_t) * B);
    float *out = malloc(sizeof(float) * (size_t)r->dim * B);
    clip_status st = CLIP_OK;
    if (!ids || !texts || !lens || !out) st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    for (size_t i0 = 0; i0 < n && !st; i0 += B) {
        size_t cnt = n - i0 < B ? n - i0 : B;
        for (size_t k = 0; k < cnt; k++) {
            texts[k] = r->texts.e[entries[i0 + k]].key;
            lens[k] = r->texts.e[entries[i0 + k]].klen;
        }
        st = clip_tokenize_batch(r->tok, texts, lens, (int)cnt, L, ids, NULL, err);
        if (!st) st = clip_encode_texts(r->model, ids, (int)cnt, L, NULL, out, err);
        for (size_t k = 0; k < cnt && !st; k++) {
            memcpy(cache_emb(&r->texts, entries[i0 + k]), out + (size_t)r->dim * k,
                   sizeof(float) * (size_t)r->dim);
            r->texts.e[entries[i0 + k]].state = E_OK;
        }
        r->stats->texts_encoded += cnt;
        if (!st) {
            for (size_t k = 0; k < cnt; k++) settle(r, r->txt_head, r->txt_next, entries[i0 + k]);
            testhook_reached(&r->hook, "batch");
        }
    }
    free(ids);
    free(texts);
    free(lens);
    free(out);
    return st;
}

/* An invalid row under --skip-invalid: copied verbatim to OUT.rejects (a regular output only). */
static clip_status reject_row(run *r, const table_reader *rd, clip_error *err) {
    r->stats->rejected++;
    if (!r->rejects_wanted) return CLIP_OK;
    size_t len;
    const char *raw = table_reader_last_raw(rd, &len);
    clip_status st;
    if (!r->rejects &&
        (st = outfile_open(r->stats->rejects_path, r->o->registry, NULL, &r->rejects, err)))
        return st;
    FILE *f = outfile_stream(r->rejects);
    if (fwrite(raw, 1, len, f) != len || fputc('\n', f) == EOF)
        return clip_fail(err, CLIP_ERR_IO, "%s: write failed: %s", outfile_name(r->rejects),
                         strerror(errno));
    return CLIP_OK;
}

/* Reads the next valid row; invalid rows are rejected (skip_invalid) or stop the run. */
static clip_status next_row(run *r, table_reader *rd, int record_rejects, table_row **row,
                            clip_error *err) {
    for (;;) {
        clip_status st = table_reader_next(rd, row, err);
        if (!st || !r->o->skip_invalid || !table_reader_skippable(rd)) return st;
        if (record_rejects) {
            warn(r, 0, "%s (%s)", err->msg,
                 r->rejects_wanted ? "copied to the rejects file" : "skipped");
            if ((st = reject_row(r, rd, err))) return st;
        }
    }
}

static clip_status text_too_long(run *r, size_t line, const char *path, size_t len,
                                 clip_error *err) {
    char reason[160];
    snprintf(reason, sizeof reason, "text of %zu bytes is above the --max-text-bytes limit", len);
    r->stats->text_failed++;
    return failures_add(r->fails, FAILURE_TEXT, line, path, reason,
                        "text above the --max-text-bytes limit", err);
}

/* An empty text: silent for the evaluator and CLIPScoreFilter, a warning for ImageClipFilter
 * (upstream's "Empty text for image: PATH"), told once per kind like the other failures. */
static clip_status empty_text(run *r, const row_info *ri, const char *path, clip_error *err) {
    r->stats->empty_text++;
    if (r->mode != CLIP_MODE_THRESHOLD) return CLIP_OK;
    const char *why = ri->missing ? "text is missing (null or NaN)" : "empty text";
    return failures_add(r->fails, FAILURE_EMPTY, ri->line, path, why, why, err);
}

/* The row's outcome and, when scored, its cosine. The image decides first (DataFlow's
 * evaluator and ImageClipFilter load it before looking at the text), except for
 * CLIPScoreFilter, which looks at the text first and never loads the image of a blank one. */
static clip_status row_result(run *r, const row_info *ri, row_outcome *out, double *cos,
                              clip_error *err) {
    *cos = NAN;
    *out = ROW_SCORED;
    if (r->mode == CLIP_MODE_KEEP_RATIO && ri->blank) {
        if (ri->too_long) {
            *out = ROW_TEXT_TOO_LONG;
            return text_too_long(r, ri->line, NULL, ri->text_len, err);
        }
        *out = ROW_EMPTY_TEXT;
        return empty_text(r, ri, NULL, err);
    }
    if (ri->img < 0) {
        *out = ROW_IMAGE_FAILED;
        r->stats->image_failed++;
        return failures_add(r->fails, FAILURE_CELL, ri->line, NULL, ri->bad_image, ri->bad_image, err);
    }
    centry *ie = &r->images.e[ri->img];
    if (ie->state == E_FAILED) {
        *out = ROW_IMAGE_FAILED;
        r->stats->image_failed++;
        return failures_add(r->fails, FAILURE_IMAGE, ri->line, ie->key,
                            ie->reason ? ie->reason : "cannot be read", image_why(ie->code), err);
    }
    if (ri->too_long) {
        *out = ROW_TEXT_TOO_LONG;
        return text_too_long(r, ri->line, ie->key, ri->text_len, err);
    }
    if (ri->blank) {
        *out = ROW_EMPTY_TEXT;
        return empty_text(r, ri, ie->key, err);
    }
    r->stats->scored++;
    *cos = clip_pair_cosine(cache_emb(&r->images, ri->img), cache_emb(&r->texts, ri->txt), r->dim);
    return CLIP_OK;
}

static clip_status file_changed(const run *r, clip_error *err) {
    return clip_fail(err, CLIP_ERR_IO, "%s: the file changed while it was being read", r->input);
}

/* Row `index` with its value: its --scores-out line, and the row itself when the mode keeps it. */
static clip_status emit_row(run *r, const table_row *row, size_t index, double v, row_outcome o,
                            clip_error *err) {
    int keep = filter_keeps(r->mode, v, r->cutoff);
    clip_status st = CLIP_OK;
    if (r->scores) st = scores_out_row(r->scores, index, table_row_line(row), v, o, keep, err);
    if (!st && keep) {
        st = table_writer_row(r->w, row, v, err);
        r->stats->kept++;
    }
    return st;
}

/* A row whose outcome is known: KEEP_RATIO keeps its value for the percentile (the row is
 * written in the second pass, write_kept: row is NULL here); the others emit it now. */
static clip_status row_value(run *r, const table_row *row, size_t index, row_outcome o,
                             double cos, clip_error *err) {
    double v = filter_value(r->mode, o, cos);
    if (r->mode != CLIP_MODE_KEEP_RATIO) return emit_row(r, row, index, v, o, err);
    if (index >= r->capvalues) return file_changed(r, err);
    r->values[index] = v;
    r->outcomes[index] = (unsigned char)o;
    r->nvalues = index + 1;
    return CLIP_OK;
}

static clip_status cancelled(const run *r, clip_error *err) {
    return r->o->cancel && *r->o->cancel ? clip_fail(err, CLIP_ERR_IO, "interrupted") : CLIP_OK;
}

static clip_status score_windows(run *r, table_reader *ra, table_reader *rb, clip_error *err) {
    row_info *rows = malloc(sizeof(row_info) * WINDOW_ROWS);
    double *cos = malloc(sizeof(double) * WINDOW_ROWS);
    row_outcome *outc = malloc(sizeof(row_outcome) * WINDOW_ROWS);
    int *new_img = malloc(sizeof(int) * WINDOW_ROWS), *chk_img = malloc(sizeof(int) * WINDOW_ROWS);
    int *new_txt = malloc(sizeof(int) * WINDOW_ROWS);
    clip_status st = CLIP_OK;
    if (!rows || !cos || !outc || !new_img || !chk_img || !new_txt)
        st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    size_t done = 0, max_text = max_text_bytes(r->o);
    for (size_t window = 1; !st; window++) {
        if ((st = cancelled(r, err))) break;
        size_t n = 0, nn = 0, nc = 0, nt = 0;
        table_row *row = NULL;
        while (n < WINDOW_ROWS && !st) {
            st = next_row(r, ra, 1, &row, err);
            if (st || !row) break;
            row_info *ri = &rows[n++];
            memset(ri, 0, sizeof *ri);
            ri->line = table_row_line(row);
            if ((st = row_text(r, row, ri, err))) break;
            if (r->text.len > max_text) ri->too_long = 1, ri->blank = 1;
            ri->img = -1;
            ri->txt = -1;
            int text_decides = r->mode == CLIP_MODE_KEEP_RATIO && ri->blank;
            if (!text_decides && image_path(r, row, ri->bad_image, sizeof ri->bad_image)) {
                int ins;
                ri->img = cache_get(&r->images, r->path.data, r->path.len, window, &ins);
                if (ri->img < 0) {
                    st = clip_fail(err, CLIP_ERR_NOMEM, "image cache exhausted");
                    break;
                }
                centry *e = &r->images.e[ri->img];
                if (ri->blank) {
                    if (ins) chk_img[nc++] = ri->img; /* decode only, unless queued later */
                } else if (e->state == E_PENDING || e->state == E_CHECKED) {
                    e->state = E_QUEUED;
                    new_img[nn++] = ri->img;
                }
            }
            if (!ri->blank && ri->img >= 0) {
                int ins;
                ri->txt = cache_get(&r->texts, r->text.data, r->text.len, window, &ins);
                if (ri->txt < 0) {
                    st = clip_fail(err, CLIP_ERR_NOMEM, "text cache exhausted");
                    break;
                }
                if (ins) new_txt[nt++] = ri->txt;
            }
        }
        if (st || n == 0) break;
        /* entries queued for checking that a later row queued for encoding are encoded */
        size_t keep = 0;
        for (size_t k = 0; k < nc; k++)
            if (r->images.e[chk_img[k]].state == E_PENDING) chk_img[keep++] = chk_img[k];
        nc = keep;
        /* Which rows wait for which entries (the progress count); the others are scored now. */
        size_t ready = 0;
        for (size_t k = 0; k < n; k++) {
            int e = rows[k].img, t = rows[k].txt;
            r->pending[k] = 0;
            if (e >= 0 && (r->images.e[e].state == E_QUEUED || r->images.e[e].state == E_PENDING)) {
                r->img_next[k] = r->img_head[e];
                r->img_head[e] = (int)k;
                r->pending[k]++;
            }
            if (t >= 0 && r->texts.e[t].state != E_OK) {
                r->txt_next[k] = r->txt_head[t];
                r->txt_head[t] = (int)k;
                r->pending[k]++;
            }
            if (!r->pending[k]) ready++;
        }
        rows_done(r, ready);
        if (nt) st = encode_texts(r, new_txt, nt, err);
        if (!st && nn) st = encode_images(r, new_img, nn, err);
        if (!st && nc) st = check_images(r, chk_img, nc, err);
        if (st) break;
        for (size_t k = 0; k < n && !st; k++) st = row_result(r, &rows[k], &outc[k], &cos[k], err);
        for (size_t k = 0; k < n && !st; k++) {
            row = NULL;
            if (r->mode != CLIP_MODE_KEEP_RATIO) {
                st = next_row(r, rb, 0, &row, err);
                if (!st && !row) st = file_changed(r, err);
            }
            if (!st) st = row_value(r, row, done + k, outc[k], cos[k], err);
        }
        done += n;
        r->stats->rows = done;
    }
    free(rows);
    free(cos);
    free(outc);
    free(new_img);
    free(chk_img);
    free(new_txt);
    return st;
}

/* DataFlow's own loop, kept for comparison (--per-row): every row decodes and encodes its
 * image and its text at batch size 1, nothing reused. */
static clip_status score_per_row(run *r, table_reader *ra, clip_error *err) {
    size_t per = (size_t)3 * r->S * r->S, max_text = max_text_bytes(r->o);
    int L = clip_tokenizer_max_length(r->tok);
    if (L > clip_model_get_info(r->model)->context_length)
        L = clip_model_get_info(r->model)->context_length;
    float *px = malloc(sizeof(float) * per), *ie = malloc(sizeof(float) * (size_t)r->dim),
          *te = malloc(sizeof(float) * (size_t)r->dim);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)L);
    clip_status st = !px || !ie || !te || !ids ? clip_fail(err, CLIP_ERR_NOMEM, "out of memory")
                                               : CLIP_OK;
    size_t done = 0;
    while (!st) {
        if ((st = cancelled(r, err))) break;
        table_row *row;
        st = next_row(r, ra, 1, &row, err);
        if (st || !row) break;
        row_info ri;
        memset(&ri, 0, sizeof ri);
        ri.line = table_row_line(row);
        if ((st = row_text(r, row, &ri, err))) break;
        if (r->text.len > max_text) ri.too_long = 1, ri.blank = 1;
        row_outcome o = ROW_SCORED;
        double cos = NAN;
        clip_error ie_err = {0};
        if (r->mode == CLIP_MODE_KEEP_RATIO && ri.blank) {
            /* CLIPScoreFilter looks at the text first */
            o = ri.too_long ? ROW_TEXT_TOO_LONG : ROW_EMPTY_TEXT;
            st = ri.too_long ? text_too_long(r, ri.line, NULL, ri.text_len, err)
                             : empty_text(r, &ri, NULL, err);
        } else if (!image_path(r, row, ri.bad_image, sizeof ri.bad_image)) {
            o = ROW_IMAGE_FAILED;
            r->stats->image_failed++;
            st = failures_add(r->fails, FAILURE_CELL, ri.line, NULL, ri.bad_image, ri.bad_image, err);
        } else if (clip_preprocess_file(r->path.data, &r->icfg, &r->o->decode, px, &ie_err)) {
            o = ROW_IMAGE_FAILED;
            r->stats->image_failed++;
            st = failures_add(r->fails, FAILURE_IMAGE, ri.line, r->path.data, ie_err.msg,
                              image_why(ie_err.code), err);
        } else {
            r->stats->images_read++;
            if (ri.too_long) {
                o = ROW_TEXT_TOO_LONG;
                st = text_too_long(r, ri.line, r->path.data, ri.text_len, err);
            } else if (ri.blank) {
                o = ROW_EMPTY_TEXT;
                st = empty_text(r, &ri, r->path.data, err);
            } else {
                const char *t = r->text.data;
                size_t tl = r->text.len;
                st = clip_tokenize_batch(r->tok, &t, &tl, 1, L, ids, NULL, err);
                if (!st) st = clip_encode_images(r->model, px, 1, NULL, ie, err);
                if (!st) testhook_reached(&r->hook, "batch");
                if (!st) st = clip_encode_texts(r->model, ids, 1, L, NULL, te, err);
                if (!st) testhook_reached(&r->hook, "batch");
                if (st) break;
                r->stats->images_encoded++;
                r->stats->texts_encoded++;
                r->stats->scored++;
                cos = clip_pair_cosine(ie, te, r->dim);
            }
        }
        if (!st) st = row_value(r, r->mode == CLIP_MODE_KEEP_RATIO ? NULL : row, done, o, cos, err);
        r->stats->rows = ++done;
        rows_done(r, 1);
    }
    free(px);
    free(ie);
    free(te);
    free(ids);
    return st;
}

/* CLIPScoreFilter's cut, then the second pass: every value is known; the rows whose value is at
 * or above the percentile are written (none when no row has a value: upstream crashes there,
 * on an unbound variable). */
static clip_status write_kept(run *r, table_reader *rb, clip_error *err) {
    size_t n = r->nvalues, nvalid = 0;
    double *valid = malloc(sizeof(double) * (n ? n : 1));
    if (!valid) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (%zu scores)", n);
    for (size_t i = 0; i < n; i++)
        if (!isnan(r->values[i])) valid[nvalid++] = r->values[i];
    r->cutoff = nvalid ? filter_percentile(valid, nvalid, r->o->keep_ratio) : NAN;
    free(valid);
    r->stats->cutoff = r->cutoff;
    if (!nvalid)
        warn(r, 0, "no row has a similarity (every row failed or has empty text): no row is "
                   "kept");
    clip_status st = CLIP_OK;
    size_t i = 0;
    for (;; i++) {
        if (i % WINDOW_ROWS == 0 && (st = cancelled(r, err))) break;
        table_row *row;
        if ((st = next_row(r, rb, 0, &row, err)) || !row) break;
        if (i >= n) return file_changed(r, err);
        if ((st = emit_row(r, row, i, r->values[i], (row_outcome)r->outcomes[i], err))) break;
    }
    if (!st && i != n) st = file_changed(r, err);
    return st;
}

/* A column missing from the whole table: DataFlow's KeyError, with the columns there are. */
static clip_status missing_column(const run *r, const char *key, const char *option,
                                  clip_error *err) {
    clip_buf b = {0};
    size_t n = table_schema_columns(r->schema), shown = n < 20 ? n : 20;
    for (size_t i = 0; i < shown; i++) {
        size_t len;
        const char *name = table_schema_column(r->schema, (int)i, &len);
        clip_buf_printf(&b, "%s'%.*s'", i ? ", " : "", (int)(len < 200 ? len : 200), name);
    }
    if (n > shown) clip_buf_printf(&b, " and %zu more", n - shown);
    clip_status st = clip_fail(err, CLIP_ERR_ARG,
                               "%s: column '%s' not found (KeyError in DataFlow); the table has %s; "
                               "set it with %s",
                               r->input, key, b.oom || !b.data ? "?" : b.data, option);
    clip_buf_free(&b);
    return st;
}

/* The model's device and thread count for the summary; the BLAS warning, once, on the CPU. */
static void note_device(run *r) {
    const clip_model_info *info = clip_model_get_info(r->model);
    r->stats->cpu = !strcmp(info->device, "cpu");
    if (r->stats->cpu)
        snprintf(r->stats->device, sizeof r->stats->device, "cpu, %d thread%s", info->n_threads,
                 info->n_threads == 1 ? "" : "s");
    else
        snprintf(r->stats->device, sizeof r->stats->device, "%s", info->device);
    if (r->stats->cpu && r->o->log) {
        clip_runtime_info ri;
        clip_runtime_info_get(&ri);
        runinfo_warn(&ri, r->o->log);
    }
}

/* The rejects of this output, and the earlier runs' temporary files next to each file. */
static void prepare_outputs(run *r) {
    const clip_score_options *o = r->o;
    FILE *log = o->log; /* removing files is always said, --quiet or not */
    r->rejects_wanted = outfile_kind_of(o->output) == OUTFILE_ATOMIC;
    if (r->rejects_wanted) {
        snprintf(r->stats->rejects_path, sizeof r->stats->rejects_path, "%s.rejects", o->output);
        files_clean_stale(r->stats->rejects_path, log);
    }
    files_clean_stale(o->output, log);
    if (o->log_failures) files_clean_stale(o->log_failures, log);
    if (o->scores_out) files_clean_stale(o->scores_out, log);
}

/* After a successful run: OUT.rejects exists exactly when this run rejected rows. */
static clip_status finish_rejects(run *r, clip_error *err) {
    clip_status st = CLIP_OK;
    if (r->rejects) {
        st = outfile_commit(r->rejects, err);
        r->rejects = NULL;
    } else if (r->rejects_wanted) {
        struct stat sb;
        const char *p = r->stats->rejects_path;
        if (lstat(p, &sb) == 0 && (S_ISREG(sb.st_mode) || S_ISLNK(sb.st_mode)) && unlink(p) == 0 &&
            r->o->log)
            fprintf(r->o->log, "clipeval: removed %s, left by an earlier run (this run rejected "
                               "no rows)\n", p);
    }
    if (!r->stats->rejected) r->stats->rejects_path[0] = '\0';
    return st;
}

clip_status clip_score_table(const clip_score_options *o, clip_score_stats *stats,
                             clip_error *err) {
    run r;
    memset(&r, 0, sizeof r);
    memset(stats, 0, sizeof *stats);
    r.o = o;
    r.stats = stats;
    r.input = !strcmp(o->input, "-") ? "stdin" : o->input;
    testhook_init(&r.hook);
    double t0 = clip_now();
    table_reader *ra = NULL, *rb = NULL;
    table_writer *w = NULL;
    int pool_up = 0, caches_up = 0;
    if (!o->input || !o->output || !o->model)
        return clip_fail(err, CLIP_ERR_ARG, "clip_score_table: input, output and model are required");
    if (o->batch_size < 1 || o->batch_size > CLIP_SCORE_MAX_BATCH)
        return clip_fail(err, CLIP_ERR_ARG, "batch size %d is out of range [1, %d]", o->batch_size,
                         CLIP_SCORE_MAX_BATCH);
    r.mode = o->mode;
    if (o->mode == CLIP_MODE_THRESHOLD && isnan(o->threshold))
        return clip_fail(err, CLIP_ERR_ARG, "the threshold is NaN: no row could be kept");
    if (o->mode == CLIP_MODE_KEEP_RATIO && !(o->keep_ratio >= 0.0 && o->keep_ratio <= 1.0))
        return clip_fail(err, CLIP_ERR_ARG, "keep ratio %g is outside [0, 1]", o->keep_ratio);
    if (o->mode == CLIP_MODE_KEEP_RATIO && !o->question_key)
        return clip_fail(err, CLIP_ERR_ARG, "keep-ratio mode needs a question key");
    if (o->mode != CLIP_MODE_THRESHOLD && !o->output_key)
        return clip_fail(err, CLIP_ERR_ARG, "an output key is required");
    r.cutoff = o->mode == CLIP_MODE_THRESHOLD ? o->threshold : NAN;
    stats->cutoff = r.cutoff;
    clip_status st = CLIP_OK;
    if (!strcmp(o->input, "-")) st = files_stdin_seekable(err);
    /* pass 0: the whole table's shape */
    if (!st) st = table_scan(o->input, o->in_fmt, &o->limits, o->skip_invalid, &r.schema, err);
    if (!st) {
        int qa = o->mode == CLIP_MODE_KEEP_RATIO;
        r.img_col = table_schema_find(r.schema, o->image_key);
        r.txt_col = table_schema_find(r.schema, o->text_key);
        r.q_col = qa ? table_schema_find(r.schema, o->question_key) : -1;
        if (r.img_col < 0)
            st = missing_column(&r, o->image_key, "--image-key", err);
        else if (qa && r.q_col < 0)
            st = missing_column(&r, o->question_key, "--question-key", err);
        else if (r.txt_col < 0)
            st = missing_column(&r, o->text_key,
                                qa ? "--answer-key"
                                   : o->mode == CLIP_MODE_THRESHOLD ? "--caption-key" : "--text-key",
                                err);
    }
    if (!st && o->mode == CLIP_MODE_KEEP_RATIO) {
        /* one value and one outcome per row until the second pass */
        r.capvalues = table_schema_rows(r.schema);
        r.values = malloc(sizeof(double) * (r.capvalues ? r.capvalues : 1));
        r.outcomes = malloc(r.capvalues ? r.capvalues : 1);
        if (!r.values || !r.outcomes)
            st = clip_fail(err, CLIP_ERR_NOMEM, "cannot keep the scores of %zu rows", r.capvalues);
    }
    if (!st) testhook_reached(&r.hook, "scan");
    /* the model, its tokenizer and its image processor: all from one folder */
    clip_model_options mo;
    clip_model_options_init(&mo);
    mo.device = o->device;
    mo.n_threads = o->threads;
    mo.precision = o->precision;
    if (!st) st = clip_model_load(o->model, &mo, &r.model, err);
    if (!st) {
        const clip_model_info *info = clip_model_get_info(r.model);
        r.dim = info->embed_dim;
        r.S = info->image_size;
        st = clip_tokenizer_load(info->dir, &r.tok, err);
        if (!st) st = clip_score_image_config(r.model, &r.icfg, err);
        if (!st) note_device(&r);
    }
    if (!st && !o->per_row) {
        size_t cap = o->cache_entries < 2 * WINDOW_ROWS ? 2 * WINDOW_ROWS : o->cache_entries;
        st = cache_init(&r.images, cap, r.dim, err);
        if (!st) {
            st = cache_init(&r.texts, cap, r.dim, err);
            if (st) cache_free(&r.images);
            else caches_up = 1;
        }
        r.img_head = malloc(cap * sizeof *r.img_head);
        r.txt_head = malloc(cap * sizeof *r.txt_head);
        r.img_next = malloc(WINDOW_ROWS * sizeof *r.img_next);
        r.txt_next = malloc(WINDOW_ROWS * sizeof *r.txt_next);
        r.pending = malloc(WINDOW_ROWS);
        if (!st && (!r.img_head || !r.txt_head || !r.img_next || !r.txt_next || !r.pending))
            st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !st && i < cap; i++) r.img_head[i] = r.txt_head[i] = -1;
        int nthreads = o->decode_threads > 0 ? o->decode_threads : clip_num_cores();
        if (!st)
            st = pool_start(&r.pool, nthreads, 2 * CLIP_SCORE_MAX_BATCH + WINDOW_ROWS, &r.icfg,
                            &o->decode, err);
        if (!st) pool_up = 1;
    }
    if (!st) prepare_outputs(&r);
    if (!st) st = table_reader_open(o->input, o->in_fmt, r.schema, &o->limits, &ra, err);
    if (!st && (!o->per_row || o->mode == CLIP_MODE_KEEP_RATIO))
        st = table_reader_open(o->input, o->in_fmt, r.schema, &o->limits, &rb, err);
    if (!st) st = failures_open(o->log_failures, o->registry, &r.fails, err);
    if (!st)
        failures_set_labels(r.fails, o->command ? o->command : "score",
                            o->mode == CLIP_MODE_THRESHOLD    ? "similarity 0.0"
                            : o->mode == CLIP_MODE_KEEP_RATIO ? "no similarity, dropped"
                                                              : "score 0.0");
    if (!st && o->scores_out) st = scores_out_open(o->scores_out, o->registry, &r.scores, err);
    table_write_options wo = {o->out_fmt, o->pandas_compat,
                              o->mode == CLIP_MODE_THRESHOLD ? NULL : o->output_key, o->registry,
                              &r.hook};
    if (!st) st = table_writer_open(o->output, &wo, r.schema, o->in_fmt, &w, err);
    r.w = w;
    if (!st) {
        r.prog = progress_start(o->log, o->progress && !o->quiet, table_schema_rows(r.schema));
        st = o->per_row ? score_per_row(&r, ra, err) : score_windows(&r, ra, rb, err);
        progress_stop(r.prog);
        r.prog = NULL;
    }
    if (!st && o->mode == CLIP_MODE_KEEP_RATIO) {
        testhook_reached(&r.hook, "pass2");
        st = write_kept(&r, rb, err);
    }
    if (!st) {
        st = table_writer_commit(w, err);
        w = NULL;
    }
    if (!st && r.scores) {
        st = scores_out_commit(r.scores, err);
        r.scores = NULL;
    }
    if (!st) st = finish_rejects(&r, err);
    if (r.fails) {
        if (!st) {
            failures_report(r.fails, o->log, r.input, !o->quiet);
            const char *first = failures_first_image(r.fails, &stats->first_relative);
            if (first) snprintf(stats->first_failure, sizeof stats->first_failure, "%s", first);
            st = failures_commit(r.fails, err);
        } else {
            failures_abort(r.fails);
        }
    }
    outfile_abort(r.rejects);
    scores_out_abort(r.scores);
    if (w) table_writer_abort(w);
    table_reader_close(ra);
    table_reader_close(rb);
    if (pool_up) pool_stop(&r.pool);
    if (caches_up) {
        cache_free(&r.images);
        cache_free(&r.texts);
    }
    free(r.img_head);
    free(r.txt_head);
    free(r.img_next);
    free(r.txt_next);
    free(r.pending);
    free(r.values);
    free(r.outcomes);
    clip_buf_free(&r.text);
    clip_buf_free(&r.path);
    clip_buf_free(&r.part);
    clip_tokenizer_free(r.tok);
    clip_model_free(r.model);
    table_schema_free(r.schema);
    stats->seconds = clip_now() - t0;
    return st;
}
