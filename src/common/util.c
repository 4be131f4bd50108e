/* util.c — errors, files, paths, checked arithmetic (see util.h). */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

const char *clip_status_name(clip_status s) {
    switch (s) {
    case CLIP_OK: return "ok";
    case CLIP_ERR_ARG: return "invalid argument";
    case CLIP_ERR_IO: return "I/O error";
    case CLIP_ERR_FORMAT: return "format error";
    case CLIP_ERR_CONFIG: return "configuration error";
    case CLIP_ERR_NOMEM: return "out of memory";
    case CLIP_ERR_LIMIT: return "limit exceeded";
    case CLIP_ERR_UNSUPPORTED: return "unsupported";
    case CLIP_ERR_NOT_FOUND: return "not found";
    case CLIP_ERR_DEVICE: return "device error";
    }
    return "unknown error";
}

clip_status clip_fail(clip_error *err, clip_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

clip_status clip_fail_prefix(clip_error *err, const char *fmt, ...) {
    if (!err) return CLIP_ERR_ARG;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    size_t pl = strlen(prefix), ol = strlen(old);
    if (pl > sizeof err->msg - 1) pl = sizeof err->msg - 1;
    if (ol > sizeof err->msg - 1 - pl) ol = sizeof err->msg - 1 - pl;
    memcpy(err->msg, prefix, pl);
    memcpy(err->msg + pl, old, ol);
    err->msg[pl + ol] = '\0';
    return err->code;
}

void clip_error_clear(clip_error *err) {
    if (err) {
        err->code = CLIP_OK;
        err->msg[0] = '\0';
    }
}

clip_status clip_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
                           clip_error *err) {
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return clip_fail(err, errno == ENOENT ? CLIP_ERR_NOT_FOUND : CLIP_ERR_IO,
                         "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return clip_fail(err, CLIP_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return clip_fail(err, CLIP_ERR_IO, "%s: is a directory", path);
    }
    if (max_bytes && S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes) {
        close(fd);
        return clip_fail(err, CLIP_ERR_LIMIT, "%s: file is %lld bytes, above the limit of %zu",
                         path, (long long)st.st_size, max_bytes);
    }
    /* Read in chunks: works for pipes and files whose size changes under us. */
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size + 1 : 65536;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return clip_fail(err, CLIP_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, cap);
    }
    size_t n = 0;
    for (;;) {
        if (n + 1 >= cap) {
            if (max_bytes && n >= max_bytes) {
                free(buf);
                close(fd);
                return clip_fail(err, CLIP_ERR_LIMIT, "%s: file is above the limit of %zu bytes",
                                 path, max_bytes);
            }
            size_t ncap = cap * 2;
            char *nb = ncap > cap ? realloc(buf, ncap) : NULL;
            if (!nb) {
                free(buf);
                close(fd);
                return clip_fail(err, CLIP_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, ncap);
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(buf);
            close(fd);
            return clip_fail(err, CLIP_ERR_IO, "%s: read failed: %s", path, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (max_bytes && n > max_bytes) {
        free(buf);
        return clip_fail(err, CLIP_ERR_LIMIT, "%s: file is above the limit of %zu bytes", path,
                         max_bytes);
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return CLIP_OK;
}

clip_status clip_mmap_open(const char *path, clip_mmap *map, clip_error *err) {
    map->data = NULL;
    map->len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return clip_fail(err, errno == ENOENT ? CLIP_ERR_NOT_FOUND : CLIP_ERR_IO,
                         "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return clip_fail(err, CLIP_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return CLIP_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return clip_fail(err, CLIP_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
    map->data = p;
    map->len = (size_t)st.st_size;
    return CLIP_OK;
}

void clip_mmap_close(clip_mmap *map) {
    if (map->data) munmap(map->data, map->len);
    map->data = NULL;
    map->len = 0;
}

clip_status clip_path_join(char *out, size_t cap, const char *dir, const char *name,
                           clip_error *err) {
    size_t dl = strlen(dir);
    int slash = dl > 0 && dir[dl - 1] != '/';
    int n = snprintf(out, cap, "%s%s%s", dir, slash ? "/" : "", name);
    if (n < 0 || (size_t)n >= cap)
        return clip_fail(err, CLIP_ERR_ARG, "path too long: %s/%s", dir, name);
    return CLIP_OK;
}

int clip_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

clip_status clip_mkdir_p(const char *path, clip_error *err) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return clip_fail(err, CLIP_ERR_ARG, "bad folder path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return clip_fail(err, CLIP_ERR_IO, "cannot create folder %s: %s", buf, strerror(errno));
        if (!clip_is_dir(buf))
            return clip_fail(err, CLIP_ERR_IO, "%s exists and is not a folder", buf);
        buf[i] = c;
    }
    return CLIP_OK;
}

int clip_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int clip_mul_size(size_t a, size_t b, size_t *out) {
    if (a && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int clip_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}

void *clip_malloc(size_t n, const char *what, clip_error *err) {
    void *p = malloc(n ? n : 1);
    if (!p) clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate %zu bytes for %s", n, what);
    return p;
}

void *clip_calloc(size_t n, size_t size, const char *what, clip_error *err) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) clip_fail(err, CLIP_ERR_NOMEM, "cannot allocate %zu x %zu bytes for %s", n, size, what);
    return p;
}

int clip_num_cores(void) {
#ifdef _OPENMP
    int n = omp_get_max_threads();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    return n > 0 ? (int)n : 1;
}

uint64_t clip_fnv1a64(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

double clip_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int clip_format_double_repr(double v, char *buf) {
    if (isnan(v)) return sprintf(buf, "nan");
    if (isinf(v)) return sprintf(buf, v < 0 ? "-inf" : "inf");
    if (v == 0) return sprintf(buf, signbit(v) ? "-0.0" : "0.0");
    /* Shortest digit string that round-trips: the correctly rounded %.*e with the least
     * precision that parses back to v (as Python's repr, David Gay's shortest mode). */
    char digits[40];
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(digits, sizeof digits, "%.*e", prec, v);
        if (strtod(digits, NULL) == v) break;
    }
    /* digits = [-]d[.ddd]e[+-]XX; split mantissa digits and exponent. */
    const char *p = digits;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    char mant[24];
    int nm = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') mant[nm++] = *p;
    mant[nm] = '\0';
    int exp10 = atoi(p + 1); /* value = 0.mant * 10^(exp10+1) = m.ant * 10^exp10 */
    while (nm > 1 && mant[nm - 1] == '0') mant[--nm] = '\0';
    char *o = buf;
    if (neg) *o++ = '-';
    if (exp10 < -4 || exp10 >= 16) {
        /* Python 'r' format: scientific with at least two exponent digits. */
        *o++ = mant[0];
        if (nm > 1) {
            *o++ = '.';
            memcpy(o, mant + 1, (size_t)nm - 1);
            o += nm - 1;
        }
        o += sprintf(o, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    } else if (exp10 < 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -exp10 - 1; i++) *o++ = '0';
        memcpy(o, mant, (size_t)nm);
        o += nm;
    } else {
        int intd = exp10 + 1;
        for (int i = 0; i < intd; i++) *o++ = i < nm ? mant[i] : '0';
        *o++ = '.';
        if (nm > intd) {
            memcpy(o, mant + intd, (size_t)(nm - intd));
            o += nm - intd;
        } else {
            *o++ = '0';
        }
    }
    *o = '\0';
    return (int)(o - buf);
}

int clip_buf_reserve(clip_buf *b, size_t extra) {
    if (b->oom) return 0;
    size_t need;
    if (!clip_add_size(b->len, extra, &need) || !clip_add_size(need, 1, &need)) {
        b->oom = 1;
        return 0;
    }
    if (need <= b->cap) return 1;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) {
            ncap = need;
            break;
        }
        ncap *= 2;
    }
    char *nd = realloc(b->data, ncap);
    if (!nd) {
        b->oom = 1;
        return 0;
    }
    b->data = nd;
    b->cap = ncap;
    return 1;
}

int clip_buf_append(clip_buf *b, const void *p, size_t n) {
    if (!clip_buf_reserve(b, n)) return 0;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 1;
}

int clip_buf_puts(clip_buf *b, const char *s) { return clip_buf_append(b, s, strlen(s)); }

int clip_buf_putc(clip_buf *b, char c) { return clip_buf_append(b, &c, 1); }

int clip_buf_printf(clip_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !clip_buf_reserve(b, (size_t)n)) return 0;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 1;
}

void clip_buf_free(clip_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}
