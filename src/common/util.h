/* util.h — small internal helpers shared by every module: errors, files, paths, numbers. */
#ifndef CLIP_UTIL_H
#define CLIP_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "clip.h"

#if defined(__GNUC__)
#define CLIP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLIP_PRINTF(a, b)
#endif

/* Sets err (when not NULL) and returns code, so callers can `return clip_fail(...)`. */
clip_status clip_fail(clip_error *err, clip_status code, const char *fmt, ...) CLIP_PRINTF(3, 4);
/* Prefixes an existing message with context ("loading X: " + old message). */
clip_status clip_fail_prefix(clip_error *err, const char *fmt, ...) CLIP_PRINTF(2, 3);
void clip_error_clear(clip_error *err);

/* Reads a whole file into a NUL-terminated malloc'd buffer; refuses files above max_bytes
 * (0 = no limit). */
clip_status clip_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
                           clip_error *err);

/* A read-only memory map of a whole file (empty files are allowed: data = NULL, len = 0). */
typedef struct clip_mmap {
    void *data;
    size_t len;
} clip_mmap;
clip_status clip_mmap_open(const char *path, clip_mmap *map, clip_error *err);
void clip_mmap_close(clip_mmap *map);

/* dir + "/" + name into out (error when it does not fit). */
clip_status clip_path_join(char *out, size_t cap, const char *dir, const char *name,
                           clip_error *err);
int clip_is_dir(const char *path);
/* mkdir -p (mode 0777 before umask). */
clip_status clip_mkdir_p(const char *path, clip_error *err);
int clip_is_file(const char *path);

/* Overflow-checked size arithmetic: return 0 on overflow. */
int clip_mul_size(size_t a, size_t b, size_t *out);
int clip_add_size(size_t a, size_t b, size_t *out);

/* Checked allocation wrappers that set err with what was being allocated. */
void *clip_malloc(size_t n, const char *what, clip_error *err);
void *clip_calloc(size_t n, size_t size, const char *what, clip_error *err);

/* Number of usable cores (OpenMP's view, else sysconf). */
int clip_num_cores(void);

/* FNV-1a (64-bit) of n bytes: the hash of the app's string tables and of synth's per-tensor
 * seeds (golden/SYNTH_WEIGHTS.md fixes it, so it must never change). */
uint64_t clip_fnv1a64(const void *p, size_t n);

/* Monotonic seconds. */
double clip_now(void);

/* Shortest decimal that round-trips a double, formatted like Python's repr(float):
 * "0.5", "1e-05", "1e+16", "nan", "inf". buf needs 32 bytes. Returns the length. */
int clip_format_double_repr(double v, char *buf);

/* A growable byte buffer (always NUL-terminated when data != NULL). */
typedef struct clip_buf {
    char *data;
    size_t len, cap;
    int oom; /* sticky: an append failed */
} clip_buf;
int clip_buf_reserve(clip_buf *b, size_t extra);
int clip_buf_append(clip_buf *b, const void *p, size_t n);
int clip_buf_puts(clip_buf *b, const char *s);
int clip_buf_putc(clip_buf *b, char c);
int clip_buf_printf(clip_buf *b, const char *fmt, ...) CLIP_PRINTF(2, 3);
void clip_buf_free(clip_buf *b);

#endif
