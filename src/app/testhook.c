/* testhook.c — the test-only pause point (see testhook.h). */
#include "testhook.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void testhook_init(testhook *h) {
    static const char *const points[] = {"scan",  "opened",  "batch",  "pass2",
                                         "row",   "flushed", "renamed"};
    memset(h, 0, sizeof *h);
    h->fd = h->resume_fd = -1;
    const char *p = getenv("CLIPEVAL_TEST_PAUSE"), *fd = getenv("CLIPEVAL_TEST_READY_FD"),
               *rfd = getenv("CLIPEVAL_TEST_RESUME_FD");
    if (!p || !*p || !fd || !*fd) return;
    char *end;
    long v = strtol(fd, &end, 10);
    if (*end || v < 0 || v > 1 << 20) return;
    if (rfd && *rfd) {
        long r = strtol(rfd, &end, 10);
        if (*end || r < 0 || r > 1 << 20) return;
        h->resume_fd = (int)r;
    }
    size_t len = strcspn(p, ":");
    unsigned long n = 1;
    if (p[len] == ':') {
        n = strtoul(p + len + 1, &end, 10);
        if (*end || n == 0) return;
    }
    for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
        if (strlen(points[i]) == len && !strncmp(p, points[i], len)) {
            memcpy(h->point, points[i], len + 1);
            h->n = (size_t)n;
            h->fd = (int)v;
        }
    }
}

void testhook_reached(testhook *h, const char *point) {
    if (!h || !h->point[0] || strcmp(h->point, point) != 0 || ++h->seen != h->n) return;
    size_t len = strlen(point);
    char line[20];
    memcpy(line, point, len);
    line[len] = '\n';
    ssize_t w;
    do {
        w = write(h->fd, line, len + 1);
    } while (w < 0 && errno == EINTR);
    close(h->fd);
    if (h->resume_fd < 0)
        for (;;) pause(); /* until a signal ends the process */
    char c;
    ssize_t r;
    do {
        r = read(h->resume_fd, &c, 1);
    } while (r < 0 && errno == EINTR);
    close(h->resume_fd);
    h->point[0] = '\0'; /* once */
}
