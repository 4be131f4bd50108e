/* progress.h — the progress line of `clipeval score`: rows actually scored (not rows read), the
 * rate, and an ETA once the rate is steady. Shown on stderr only when it is a terminal (and not
 * --quiet), redrawn by a ticker thread every PROGRESS_PERIOD_S seconds of work.
 *
 * The decisions take the time as an argument, so tests drive them with a fake clock:
 *   progress_state_update  one rate sample per PROGRESS_SAMPLE_S seconds: the average rate since
 *                          the start; the rate is steady (and stays so) once the last
 *                          PROGRESS_STEADY samples agree within PROGRESS_TOLERANCE;
 *   progress_state_due     whether a redraw is due (PROGRESS_PERIOD_S since the last one);
 *   progress_state_format  the line itself. */
#ifndef CLIP_PROGRESS_H
#define CLIP_PROGRESS_H

#include <stddef.h>
#include <stdio.h>

#define PROGRESS_PERIOD_S 0.25
#define PROGRESS_SAMPLE_S 0.5
#define PROGRESS_STEADY 4
#define PROGRESS_TOLERANCE 0.15

typedef struct progress_state {
    size_t total;
    double t0, last_draw, last_sample;
    double rates[PROGRESS_STEADY]; /* the last samples, oldest first */
    int nrates;
    int steady; /* latched */
} progress_state;

void progress_state_init(progress_state *p, size_t total, double now);
void progress_state_update(progress_state *p, double now, size_t done);
/* Seconds left once the rate is steady and rows remain; -1 before. */
double progress_state_eta(const progress_state *p, double now, size_t done);
int progress_state_due(const progress_state *p, double now);
/* "[=====>     ] 1234/5000 rows  56.7 rows/s  ETA 1m06s"; "ETA --" until steady. Records the
 * draw time. Returns the length. */
int progress_state_format(progress_state *p, double now, size_t done, char *buf, size_t cap);

typedef struct progress progress;

/* Starts the ticker when `out` is a terminal and show is set; NULL otherwise (every function
 * below accepts NULL and then does nothing but what is said). */
progress *progress_start(FILE *out, int show, size_t total);
void progress_set(progress *p, size_t done);
/* Around any other line written to `out` while the ticker runs: clears the progress line
 * first and keeps the ticker from drawing in the middle. */
void progress_log_begin(progress *p);
void progress_log_end(progress *p);
/* Stops the ticker and clears the line. */
void progress_stop(progress *p);

#endif
