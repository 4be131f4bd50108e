/* testhook.h — a documented, test-only pause point, so that a test interrupts a run at an exact
 * phase instead of after a guessed delay (tests/test_signals.c).
 *
 * With CLIPEVAL_TEST_PAUSE=POINT[:N] and CLIPEVAL_TEST_READY_FD=FD in the environment, the run
 * writes "POINT\n" to FD when it reaches POINT for the N-th time (default 1), then waits there
 * until a signal ends it. The points, in the order a run meets them:
 *   scan     the input was read once (its shape is known); no output file exists yet
 *   opened   the output's temporary file exists and is empty
 *   batch    a forward pass (images or texts) finished; N counts passes
 *   pass2    filter --mode keep-ratio: every row's value is known, the second pass over the
 *            input (which writes the kept rows) not yet begun
 *   row      a row was written to the output; N counts rows
 *   flushed  every byte is written and synced, the temporary file closed, not yet renamed
 *   renamed  the output was replaced by the rename, the folder not yet synced
 * With CLIPEVAL_TEST_RESUME_FD=FD too, the run does not wait for a signal but for one byte (or
 * end of file) on FD, then goes on: a test can change the world at an exact point (the input,
 * between the two passes).
 * Without both variables (the normal case) a point costs one string comparison. */
#ifndef CLIP_TESTHOOK_H
#define CLIP_TESTHOOK_H

#include <stddef.h>

typedef struct testhook {
    char point[16]; /* "" = off */
    size_t n, seen;
    int fd;
    int resume_fd; /* -1: pause until a signal */
} testhook;

/* Reads the environment; an unknown point or a bad N or FD leaves the hook off. */
void testhook_init(testhook *h);
/* Counts one arrival at `point` (h may be NULL); pauses on the N-th (for good, or until the
 * resume byte). */
void testhook_reached(testhook *h, const char *point);

#endif
