/* safetensors.h — a validating reader for the safetensors format (8-byte little-endian header
 * length, JSON header, raw little-endian C-order data), read through mmap. */
#ifndef CLIP_SAFETENSORS_H
#define CLIP_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "clip.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER ((uint64_t)100 << 20) /* the reference implementation's own limit */

typedef enum st_dtype {
    ST_F64, ST_F32, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I16, ST_I8, ST_U64, ST_U32, ST_U16,
    ST_U8, ST_BOOL, ST_F8_E4M3, ST_F8_E5M2
} st_dtype;

typedef struct st_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t nelem;
    const void *data; /* inside the mapping */
    size_t nbytes;
} st_tensor;

typedef struct st_file {
    void *map;     /* whole-file mapping (NULL for st_parse on caller memory) */
    size_t map_len;
    st_tensor *tensors;
    size_t n;
    char *names;   /* storage for tensor names */
    char path[4096];
} st_file;

/* Maps and validates `path`: header length within the file, JSON header, known dtypes,
 * shapes whose products do not overflow, offsets in range, sizes matching shapes,
 * no overlapping tensors, no duplicate names. */
clip_status st_open(const char *path, st_file *f, clip_error *err);
/* Validates an in-memory file (the caller keeps buf alive while f is used). */
clip_status st_parse(const void *buf, size_t len, const char *what, st_file *f, clip_error *err);
void st_close(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
const char *st_dtype_name(st_dtype t);

#ifdef __cplusplus
}
#endif
#endif
