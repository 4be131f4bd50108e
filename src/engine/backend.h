/* backend.h — the two implementations of the forward pass's operations (forward.h):
 * backend_cpu.c (our GEMM kernels + OpenMP) and backend_cuda.cu (`make CUDA=1`). Each keeps the
 * weights in its own form, built once at load. model.c validates arguments and picks one. */
#ifndef CLIP_BACKEND_H
#define CLIP_BACKEND_H

#include "model_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Packs the weights for the CPU kernels (m->cpu). */
clip_status clip_cpu_init(clip_model *m, clip_error *err);
void clip_cpu_free(clip_model *m);
const char *clip_cpu_kernel_name(const clip_model *m);
/* pixels [n, C, S, S]; out [n, E]. */
clip_status clip_cpu_encode_images(const clip_model *m, const float *pixels, int n,
                                   const clip_encode_options *opt, float *out, clip_error *err);
/* ids [n, len] (validated: 0 <= id < vocab, len <= context); pool[i] = pooling position of row
 * i, computed by the caller; only positions 0..pool[i] of row i are run (causal mask). */
clip_status clip_cpu_encode_texts(const clip_model *m, const int32_t *ids, int n, int len,
                                  const int *pool, const clip_encode_options *opt, float *out,
                                  clip_error *err);

#ifdef CLIP_WITH_CUDA
/* 1 when a CUDA device is usable; otherwise 0 and a reason in why. */
int clip_cuda_available(char *why, size_t cap);
/* Uploads the weights of m to the GPU; sets m->cuda and m->device_name. */
clip_status clip_cuda_init(clip_model *m, clip_error *err);
void clip_cuda_free(clip_model *m);
clip_status clip_cuda_encode_images(const clip_model *m, const float *pixels, int n,
                                    const clip_encode_options *opt, float *out, clip_error *err);
clip_status clip_cuda_encode_texts(const clip_model *m, const int32_t *ids, int n, int len,
                                   const int *pool, const clip_encode_options *opt, float *out,
                                   clip_error *err);
#endif

#ifdef __cplusplus
}
#endif
#endif
