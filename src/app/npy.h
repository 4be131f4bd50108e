/* npy.h — NumPy .npy files (format 1.0/2.0/3.0): little-endian, C order, no pickles. */
#ifndef CLIP_NPY_H
#define CLIP_NPY_H

#include <stddef.h>

#include "clip.h"

#define NPY_MAX_DIMS 8

typedef enum npy_dtype { NPY_F32, NPY_F64, NPY_I32, NPY_I64, NPY_U8, NPY_I8, NPY_BOOL } npy_dtype;

typedef struct npy_array {
    npy_dtype dtype;
    int ndim;
    size_t shape[NPY_MAX_DIMS];
    size_t count;     /* product of shape (1 for a 0-d array) */
    size_t elem_size; /* bytes per element */
    void *data;       /* malloc'd, count * elem_size bytes */
} npy_array;

/* Parses an in-memory .npy file; `what` names it in errors. */
clip_status npy_parse(const void *buf, size_t len, const char *what, npy_array *out,
                      clip_error *err);
clip_status npy_load(const char *path, npy_array *out, clip_error *err);
void npy_free(npy_array *a);

/* Writes a C-order little-endian array (format 1.0). */
clip_status npy_save(const char *path, npy_dtype dtype, int ndim, const size_t *shape,
                     const void *data, clip_error *err);

const char *npy_dtype_name(npy_dtype t);

#endif
