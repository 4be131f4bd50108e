/* progress.c — the progress line (see progress.h). */
#include "progress.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

void progress_state_init(progress_state *p, size_t total, double now) {
    memset(p, 0, sizeof *p);
    p->total = total;
    p->t0 = p->last_sample = now;
    p->last_draw = -INFINITY;
}

void progress_state_update(progress_state *p, double now, size_t done) {
    if (now - p->last_sample < PROGRESS_SAMPLE_S || now <= p->t0) return;
    p->last_sample = now;
    double rate = (double)done / (now - p->t0);
    if (p->nrates == PROGRESS_STEADY) {
        memmove(p->rates, p->rates + 1, sizeof p->rates[0] * (PROGRESS_STEADY - 1));
        p->nrates--;
    }
    p->rates[p->nrates++] = rate;
    if (p->steady || p->nrates < PROGRESS_STEADY || rate <= 0) return;
    int agree = 1;
    for (int i = 0; i < p->nrates && agree; i++)
        agree = fabs(p->rates[i] - rate) <= PROGRESS_TOLERANCE * rate;
    p->steady = agree;
}

double progress_state_eta(const progress_state *p, double now, size_t done) {
    if (!p->steady || done >= p->total || now <= p->t0 || done == 0) return -1;
    return (double)(p->total - done) / ((double)done / (now - p->t0));
}

int progress_state_due(const progress_state *p, double now) {
    return now - p->last_draw >= PROGRESS_PERIOD_S;
}

int progress_state_format(progress_state *p, double now, size_t done, char *buf, size_t cap) {
    enum { WIDTH = 30 };
    char bar[WIDTH + 1];
    int fill = p->total ? (int)((double)(done < p->total ? done : p->total) / p->total * WIDTH) : 0;
    for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[WIDTH] = '\0';
    double el = now - p->t0, rate = el > 0 ? (double)done / el : 0;
    double eta = progress_state_eta(p, now, done);
    char etas[32];
    if (eta < 0) {
        snprintf(etas, sizeof etas, "--");
    } else {
        long s = lround(eta);
        if (s >= 3600)
            snprintf(etas, sizeof etas, "%ldh%02ldm", s / 3600, s / 60 % 60);
        else
            snprintf(etas, sizeof etas, "%ldm%02lds", s / 60, s % 60);
    }
    p->last_draw = now;
    int n = snprintf(buf, cap, "[%s] %zu/%zu rows  %.1f rows/s  ETA %s", bar, done, p->total, rate,
                     etas);
    return n < 0 ? 0 : (n >= (int)cap ? (int)cap - 1 : n);
}

/* ------------------------------------------------------------------ the ticker */

struct progress {
    FILE *out;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    size_t done;
    progress_state st;
};

/* Called with the mutex held. */
static void draw(progress *p, double now) {
    char line[256];
    progress_state_update(&p->st, now, p->done);
    progress_state_format(&p->st, now, p->done, line, sizeof line);
    fprintf(p->out, "\r\033[K%s", line);
    fflush(p->out);
}

static void *ticker(void *arg) {
    progress *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        double now = clip_now();
        if (progress_state_due(&p->st, now)) draw(p, now);
        /* sleep until the next redraw is due, or until stopped */
        double wake = p->st.last_draw + PROGRESS_PERIOD_S; /* on clip_now's CLOCK_MONOTONIC */
        struct timespec ts;
        ts.tv_sec = (time_t)wake;
        ts.tv_nsec = (long)((wake - (double)ts.tv_sec) * 1e9);
        if (!p->stop) pthread_cond_timedwait(&p->cv, &p->mu, &ts); /* the loop re-checks */
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

progress *progress_start(FILE *out, int show, size_t total) {
    if (!out || !show || !isatty(fileno(out))) return NULL;
    progress *p = calloc(1, sizeof *p);
    if (!p) return NULL; /* no progress line: not worth failing a run for */
    p->out = out;
    progress_state_init(&p->st, total, clip_now());
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* clip_now is CLOCK_MONOTONIC too */
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&p->thread, NULL, ticker, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        return NULL;
    }
    return p;
}

void progress_set(progress *p, size_t done) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->done = done;
    pthread_mutex_unlock(&p->mu);
}

void progress_log_begin(progress *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    fputs("\r\033[K", p->out);
}

void progress_log_end(progress *p) {
    if (!p) return;
    fflush(p->out);
    p->st.last_draw = -INFINITY; /* redraw the line at once */
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void progress_stop(progress *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    draw(p, clip_now()); /* the final count, then the line is cleared */
    fputs("\r\033[K", p->out);
    fflush(p->out);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
