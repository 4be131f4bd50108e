/* backend_cuda.cu — the CLIP forward pass (spec §A) on one NVIDIA GPU, built with `make CUDA=1`.
 *
 * It reproduces backend_cpu.c, the oracle, step by step: the same packed-sequence layout, the
 * same order of operations, the same roundings wherever we control them.
 *  - Large products: cuBLAS sgemm in strict fp32. The handle runs in CUBLAS_PEDANTIC_MATH, so
 *    neither TF32 tensor cores nor bf16x9 emulation can be picked (spec §D #9): this backend
 *    is an oracle, not a fast path. As on the CPU, the product is computed without bias and
 *    the bias is added by the element-wise pass that follows, in HF's rounding order:
 *    (acc + b) * scale for q, h + (acc + b) for the residuals, act(acc + b) for fc1.
 *  - LayerNorm moments, softmax sums and the L2 norm are computed in double and rounded once,
 *    with the CPU's formulas; quick_gelu uses the CPU's own float exp (ported below), so the
 *    element-wise steps agree with the CPU bit for bit and only GEMM summation order differs.
 *  - Attention is a plain kernel (one block per query row and head) that accumulates the
 *    q·k and p·v dot products in double: sequences are short (50..577 positions), the cost is
 *    small next to the GEMMs, and masked keys are skipped, so their weight is exactly 0.
 *  - Device code is built with -fmad=false: no float contraction, like -ffp-contract=off.
 *
 * Memory: the weights are uploaded once (one cudaMalloc); one workspace sized for a chunk of
 * WS_ROWS tokens serves every call, so any batch size runs in bounded memory. Calls on one
 * model are serialised by a mutex (the workspace, the stream and the cuBLAS handle are per
 * model). Inputs go through two pinned staging slots: while the GPU runs chunk c, the host
 * copies chunk c+1 into the other slot. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
extern "C" {
#include "util.h"
}

/* Tokens per chunk: 256 captions of 77 tokens, or 256 ViT-B/32 images (50 tokens each). */
#define WS_ROWS (256 * 77)
#define MAX_CHUNK_ITEMS 256
/* Attention keeps one row of scores in shared memory (32 KiB at this length). */
#define ATT_MAX_LEN 8192
#define NT 256     /* threads of element-wise and per-row kernels (a power of two) */
#define ATT_NT 128 /* threads of the attention kernel (a power of two) */

typedef struct cuda_state {
    int dev;
    cudaStream_t stream;
    cublasHandle_t blas;
    float *wbase;          /* every weight, one allocation */
    clip_weights dw;       /* device pointers into wbase, same layout as the host weights */
    clip_layer_weights *vl, *tl;
    float *wsbase;         /* the workspace, one allocation */
    float *h, *a, *q, *k, *v, *ctx, *f, *px, *out;
    int *ints;             /* text chunk: per-row (id, position), per-seq (row0, len), pool rows */
    int vchunk;            /* images per chunk */
    int trows;             /* token rows per text chunk */
    unsigned char *pin;    /* pinned staging, one allocation */
    unsigned char *pin_in[2];
    float *pin_out[2];
    cudaEvent_t in_ev[2], out_ev[2];
    int n_ev;              /* events created (for cleanup) */
    pthread_mutex_t mu;
    int mu_ok;
} cuda_state;

/* ------------------------------------------------------------------ errors */

static clip_status cuda_err(clip_error *err, cudaError_t e, const char *what, int line) {
    return clip_fail(err, e == cudaErrorMemoryAllocation ? CLIP_ERR_NOMEM : CLIP_ERR_DEVICE,
                     "CUDA backend: %s failed: %s (%s) [backend_cuda.cu:%d]", what,
                     cudaGetErrorString(e), cudaGetErrorName(e), line);
}

static clip_status blas_err(clip_error *err, cublasStatus_t s, const char *what, int line) {
    return clip_fail(err, s == CUBLAS_STATUS_ALLOC_FAILED ? CLIP_ERR_NOMEM : CLIP_ERR_DEVICE,
                     "CUDA backend: %s failed: %s (cuBLAS status %d) [backend_cuda.cu:%d]", what,
                     cublasGetStatusString(s), (int)s, line);
}

/* Each returns from the enclosing function; resources live in the state, freed by its owner. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cuda_err(err, e_, #call, __LINE__);                          \
    } while (0)
#define CKB(call)                                                                                  \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) return blas_err(err, s_, #call, __LINE__);                \
    } while (0)
/* A launch error (bad configuration, no kernel image) shows at once; faults inside a kernel
 * show at the next synchronisation, which is checked too. */
#define CKL(name)                                                                                  \
    do {                                                                                           \
        cudaError_t e_ = cudaGetLastError();                                                       \
        if (e_ != cudaSuccess) return cuda_err(err, e_, "launch of " name, __LINE__);              \
    } while (0)

/* ------------------------------------------------------------------ kernels */

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (size_t)gridDim.x * blockDim.x)

static unsigned grid_for(size_t n) {
    size_t b = (n + NT - 1) / NT;
    if (b > 65536) b = 65536; /* the loops stride over the rest */
    return b ? (unsigned)b : 1u;
}

/* Sum over the block in a fixed tree order (deterministic); every thread gets the result.
 * blockDim.x must be a power of two and red hold blockDim.x values. */
__device__ double block_sum(double v, double *red) {
    unsigned t = threadIdx.x;
    red[t] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        __syncthreads();
    }
    double r = red[0];
    __syncthreads(); /* red may be reused right after */
    return r;
}

__device__ float block_max(float v, float *red) {
    unsigned t = threadIdx.x;
    red[t] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) red[t] = fmaxf(red[t], red[t + s]);
        __syncthreads();
    }
    float r = red[0];
    __syncthreads();
    return r;
}

/* y = (y + b) * scale, b per column (scale 1 is exact). */
__global__ void k_bias_scale(float *y, const float *b, size_t rows, int cols, float scale) {
    GRID_STRIDE(i, rows * (size_t)cols) y[i] = (y[i] + b[i % (size_t)cols]) * scale;
}

/* h = h + (y + b): the residual add of a biased projection. */
__global__ void k_residual_bias(float *h, const float *y, const float *b, size_t rows, int cols) {
    GRID_STRIDE(i, rows * (size_t)cols) h[i] = h[i] + (y[i] + b[i % (size_t)cols]);
}

/* backend_cpu.c's exp_f32, operation for operation (Cephes expf); with -fmad=false the device
 * rounds each step as the CPU build does, so quick_gelu is bit-identical to the oracle. */
__device__ float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.3f ? 88.3f : x);
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int bits = ((int)n + 127) << 23;
    return p * __int_as_float(bits);
}

/* x = act(x + b), b per column. */
__global__ void k_bias_act(float *x, const float *b, size_t rows, int cols, int act) {
    GRID_STRIDE(i, rows * (size_t)cols) {
        float u = x[i] + b[i % (size_t)cols];
        if (act == CLIP_ACT_QUICK_GELU) {
            x[i] = u / (1.0f + exp_f32(-1.702f * u));
        } else if (act == CLIP_ACT_GELU) {
            double v = u;
            x[i] = (float)(0.5 * v * (1.0 + erf(v * 0.70710678118654752440)));
        } else {
            double v = u;
            x[i] = (float)(0.5 * v *
                           (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v))));
        }
    }
}

/* cols[(b, py, px), (c, ky, kx)] = pixels[b, c, py*P+ky, px*P+kx]: the conv weight's order. */
__global__ void k_im2col(const float *px, float *cols, int n, int C, int S, int P, int g) {
    size_t K = (size_t)C * P * P, np = (size_t)g * g;
    GRID_STRIDE(idx, (size_t)n * np * K) {
        size_t k = idx % K, r = idx / K;
        size_t b = r / np, pi = r % np;
        size_t py = pi / g, pxx = pi % g;
        size_t ch = k / ((size_t)P * P), ky = (k / P) % P, kx = k % P;
        cols[idx] = px[((b * C + ch) * S + py * P + ky) * S + pxx * P + kx];
    }
}

/* h[b, 0] = class + pos[0]; h[b, t] = patch[b, t-1] + pos[t]. */
__global__ void k_vision_embed(const float *patch, const float *cls, const float *pos, float *h,
                               int n, int T, int D) {
    GRID_STRIDE(idx, (size_t)n * T * D) {
        size_t i = idx % D, t = (idx / D) % T, b = idx / ((size_t)T * D);
        h[idx] = t == 0 ? cls[i] + pos[i]
                        : patch[(b * (T - 1) + (t - 1)) * D + i] + pos[t * D + i];
    }
}

/* rowinfo: (token id, position) of each packed row; ids were validated on the host. */
__global__ void k_text_embed(const int *rowinfo, const float *tok, const float *pos, float *h,
                             size_t rows, int D) {
    GRID_STRIDE(idx, rows * D) {
        size_t r = idx / D, i = idx % D;
        size_t id = (size_t)rowinfo[2 * r], p = (size_t)rowinfo[2 * r + 1];
        h[idx] = tok[id * D + i] + pos[p * D + i];
    }
}

/* dst[r] = src[idx ? idx[r] : r * stride] for r < n, rows of D floats. */
__global__ void k_gather(const float *src, float *dst, const int *idx, int stride, int n, int D) {
    GRID_STRIDE(t, (size_t)n * D) {
        size_t r = t / D, i = t % D;
        size_t s = idx ? (size_t)idx[r] : r * (size_t)stride;
        dst[t] = src[s * D + i];
    }
}

/* One block per row; two-pass moments in double as the CPU does. x and y may not alias. */
__global__ void k_layernorm(const float *x, float *y, int d, const float *g, const float *b,
                            double eps) {
    __shared__ double red[NT];
    const float *xr = x + (size_t)blockIdx.x * d;
    float *yr = y + (size_t)blockIdx.x * d;
    double s = 0.0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += xr[i];
    double mu = block_sum(s, red) / d;
    double v = 0.0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        double c = xr[i] - mu;
        v += c * c;
    }
    double var = block_sum(v, red) / d;
    double rstd = 1.0 / sqrt(var + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        yr[i] = (float)(((double)xr[i] - mu) * rstd * g[i] + b[i]);
}

/* In place, one block per row: every read happens before the reduction's barrier, and each
 * thread then writes only the elements it read. No epsilon, as HF. */
__global__ void k_l2norm(float *x, int E) {
    __shared__ double red[NT];
    float *o = x + (size_t)blockIdx.x * E;
    double ss = 0.0;
    for (int j = threadIdx.x; j < E; j += blockDim.x) ss += (double)o[j] * o[j];
    double nrm = sqrt(block_sum(ss, red));
    for (int j = threadIdx.x; j < E; j += blockDim.x) o[j] = (float)(o[j] / nrm);
}

/* ctx[row0+i, head h] = softmax_j(q_i · k_j) v_j over the keys j visible to query i.
 * Grid (query i, head h, sequence s); seqs = (row0, len) pairs, or NULL for n sequences of T
 * rows each. Dynamic shared memory: one float per key of the longest sequence. */
__global__ void k_attention(const float *q, const float *k, const float *v, float *ctx,
                            const int *seqs, int T, int d, int hd, int causal) {
    extern __shared__ float sc[];
    __shared__ double red[ATT_NT];
    __shared__ float fred[ATT_NT];
    int i = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    size_t row0 = seqs ? (size_t)seqs[2 * s] : (size_t)s * T;
    int L = seqs ? seqs[2 * s + 1] : T;
    if (i >= L) return; /* the whole block leaves together, before any barrier */
    int nvis = causal ? i + 1 : L;
    size_t off = (size_t)h * hd;
    const float *qi = q + (row0 + i) * d + off;
    for (int j = threadIdx.x; j < nvis; j += blockDim.x) {
        const float *kj = k + (row0 + j) * d + off;
        double acc = 0.0;
        for (int c = 0; c < hd; c++) acc += (double)qi[c] * (double)kj[c];
        sc[j] = (float)acc; /* scores are float32, as the CPU's sgemm output */
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < nvis; j += blockDim.x) mx = fmaxf(mx, sc[j]);
    mx = block_max(mx, fred);
    double sum = 0.0;
    for (int j = threadIdx.x; j < nvis; j += blockDim.x) sum += exp((double)sc[j] - (double)mx);
    double inv = 1.0 / block_sum(sum, red);
    for (int j = threadIdx.x; j < nvis; j += blockDim.x)
        sc[j] = (float)(exp((double)sc[j] - (double)mx) * inv);
    __syncthreads();
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        double acc = 0.0;
        for (int j = 0; j < nvis; j++) acc += (double)sc[j] * (double)v[(row0 + j) * d + off + c];
        ctx[(row0 + i) * d + off + c] = (float)acc;
    }
}

/* ------------------------------------------------------------------ availability */

extern "C" int clip_cuda_available(char *why, size_t cap) {
    int n = 0, drv = 0, rt = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        cudaDriverGetVersion(&drv);
        cudaRuntimeGetVersion(&rt);
        (void)cudaGetLastError(); /* clear the runtime's record of the failed call */
        if (drv == 0)
            snprintf(why, cap, "no CUDA device: no NVIDIA driver is installed or loadable "
                     "(cudaGetDeviceCount: %s)",
                     e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        else if (e == cudaErrorInsufficientDriver)
            snprintf(why, cap,
                     "NVIDIA driver too old: it supports CUDA %d.%d, this build needs CUDA %d.%d",
                     drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
        else if (e == cudaErrorNoDevice || n <= 0)
            snprintf(why, cap, "no CUDA device (cudaGetDeviceCount: %s)",
                     e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        else
            snprintf(why, cap, "CUDA unusable: cudaGetDeviceCount: %s (%s)", cudaGetErrorString(e),
                     cudaGetErrorName(e));
        return 0;
    }
    /* A device this binary has no code for (sm_80/sm_90 images, compute_90 PTX) fails at the
     * first launch; find out now so that --device auto can fall back to the CPU. */
    cudaFuncAttributes fa;
    e = cudaSetDevice(0);
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&fa, k_layernorm);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        int major = 0, minor = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
        (void)cudaGetLastError();
        snprintf(why, cap, "CUDA device 0 (compute capability %d.%d) unusable: %s (%s)", major,
                 minor, cudaGetErrorString(e), cudaGetErrorName(e));
        return 0;
    }
    if (cap) why[0] = '\0';
    return 1;
}

/* ------------------------------------------------------------------ init / free */

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* Walks every weight twice: first to size the single allocation (dst == NULL), then to copy
 * each tensor to its 256-byte aligned place and record the device pointer. */
typedef struct uploader {
    float *base; /* NULL while sizing */
    size_t used; /* floats */
    cudaError_t e;
    const char *failed;
} uploader;

static const float *up(uploader *u, const float *src, size_t n, const char *what) {
    size_t off = u->used;
    u->used += round_up(n ? n : 1, 64);
    if (!u->base) return NULL;
    float *dst = u->base + off;
    if (u->e == cudaSuccess) {
        u->e = cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice);
        if (u->e != cudaSuccess) u->failed = what;
    }
    return dst;
}

static void up_layers(uploader *u, const clip_layer_weights *src, clip_layer_weights *dst,
                      int layers, int D, int M) {
    size_t d = (size_t)D, m = (size_t)M;
    for (int l = 0; l < layers; l++) {
        const clip_layer_weights *s = &src[l];
        clip_layer_weights *o = &dst[l];
        o->ln1_w = up(u, s->ln1_w, d, "layer_norm1.weight");
        o->ln1_b = up(u, s->ln1_b, d, "layer_norm1.bias");
        o->q_w = up(u, s->q_w, d * d, "q_proj.weight");
        o->q_b = up(u, s->q_b, d, "q_proj.bias");
        o->k_w = up(u, s->k_w, d * d, "k_proj.weight");
        o->k_b = up(u, s->k_b, d, "k_proj.bias");
        o->v_w = up(u, s->v_w, d * d, "v_proj.weight");
        o->v_b = up(u, s->v_b, d, "v_proj.bias");
        o->o_w = up(u, s->o_w, d * d, "out_proj.weight");
        o->o_b = up(u, s->o_b, d, "out_proj.bias");
        o->ln2_w = up(u, s->ln2_w, d, "layer_norm2.weight");
        o->ln2_b = up(u, s->ln2_b, d, "layer_norm2.bias");
        o->fc1_w = up(u, s->fc1_w, m * d, "fc1.weight");
        o->fc1_b = up(u, s->fc1_b, m, "fc1.bias");
        o->fc2_w = up(u, s->fc2_w, d * m, "fc2.weight");
        o->fc2_b = up(u, s->fc2_b, d, "fc2.bias");
    }
}

static void up_all(uploader *u, const clip_model *m, cuda_state *s) {
    const clip_config *c = &m->cfg;
    const clip_weights *W = &m->w;
    clip_weights *o = &s->dw;
    size_t Dv = (size_t)c->vision.width, Dt = (size_t)c->text.width, E = (size_t)c->embed_dim;
    size_t g = (size_t)(c->image_size / c->patch_size), P = (size_t)c->patch_size;
    o->class_emb = up(u, W->class_emb, Dv, "class_embedding");
    o->patch_w = up(u, W->patch_w, Dv * c->num_channels * P * P, "patch_embedding.weight");
    o->vpos = up(u, W->vpos, (g * g + 1) * Dv, "vision position_embedding");
    o->pre_ln_w = up(u, W->pre_ln_w, Dv, "pre_layrnorm.weight");
    o->pre_ln_b = up(u, W->pre_ln_b, Dv, "pre_layrnorm.bias");
    o->post_ln_w = up(u, W->post_ln_w, Dv, "post_layernorm.weight");
    o->post_ln_b = up(u, W->post_ln_b, Dv, "post_layernorm.bias");
    o->vproj = up(u, W->vproj, E * Dv, "visual_projection.weight");
    up_layers(u, W->vlayers, s->vl, c->vision.layers, c->vision.width, c->vision.mlp);
    o->tok_emb = up(u, W->tok_emb, (size_t)c->vocab_size * Dt, "token_embedding");
    o->tpos = up(u, W->tpos, (size_t)c->context_length * Dt, "text position_embedding");
    o->final_ln_w = up(u, W->final_ln_w, Dt, "final_layer_norm.weight");
    o->final_ln_b = up(u, W->final_ln_b, Dt, "final_layer_norm.bias");
    o->tproj = up(u, W->tproj, E * Dt, "text_projection.weight");
    up_layers(u, W->tlayers, s->tl, c->text.layers, c->text.width, c->text.mlp);
}

/* Frees whatever was created; safe on a partly initialised state. */
static void state_destroy(cuda_state *s) {
    if (!s) return;
    cudaSetDevice(s->dev);
    if (s->stream) cudaStreamSynchronize(s->stream); /* no copy may still target pinned memory */
    for (int i = 0; i < s->n_ev; i++) cudaEventDestroy(i < 2 ? s->in_ev[i] : s->out_ev[i - 2]);
    if (s->blas) cublasDestroy(s->blas);
    if (s->stream) cudaStreamDestroy(s->stream);
    if (s->wbase) cudaFree(s->wbase);
    if (s->wsbase) cudaFree(s->wsbase);
    if (s->pin) cudaFreeHost(s->pin);
    (void)cudaGetLastError();
    if (s->mu_ok) pthread_mutex_destroy(&s->mu);
    free(s->vl);
    free(s->tl);
    free(s);
}

static clip_status state_init(cuda_state *s, const clip_model *m, clip_error *err) {
    const clip_config *c = &m->cfg;
    int T = (c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1;
    if (T > ATT_MAX_LEN || c->context_length > ATT_MAX_LEN)
        return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                         "CUDA backend: sequences of %d positions are longer than its %d limit",
                         T > c->context_length ? T : c->context_length, ATT_MAX_LEN);
    CK(cudaSetDevice(s->dev));
    CK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    CKB(cublasCreate(&s->blas));
    CKB(cublasSetStream(s->blas, s->stream));
    CKB(cublasSetMathMode(s->blas, CUBLAS_PEDANTIC_MATH));
    for (; s->n_ev < 4; s->n_ev++)
        CK(cudaEventCreateWithFlags(s->n_ev < 2 ? &s->in_ev[s->n_ev] : &s->out_ev[s->n_ev - 2],
                                    cudaEventDisableTiming));

    /* weights */
    s->vl = (clip_layer_weights *)calloc((size_t)c->vision.layers + 1, sizeof *s->vl);
    s->tl = (clip_layer_weights *)calloc((size_t)c->text.layers + 1, sizeof *s->tl);
    if (!s->vl || !s->tl) return clip_fail(err, CLIP_ERR_NOMEM, "CUDA backend: out of memory");
    s->dw.vlayers = s->vl;
    s->dw.tlayers = s->tl;
    uploader u = {NULL, 0, cudaSuccess, NULL};
    up_all(&u, m, s);
    size_t wbytes = u.used * sizeof(float);

    /* workspace, sized for the larger of the two towers' chunks */
    size_t Dv = (size_t)c->vision.width, Dt = (size_t)c->text.width, E = (size_t)c->embed_dim;
    size_t np = (size_t)T - 1, K = (size_t)c->num_channels * c->patch_size * c->patch_size;
    size_t pix = (size_t)c->num_channels * c->image_size * c->image_size;
    int vchunk = WS_ROWS / T;
    if (vchunk > MAX_CHUNK_ITEMS) vchunk = MAX_CHUNK_ITEMS;
    if (vchunk < 1) vchunk = 1;
    s->vchunk = vchunk;
    s->trows = WS_ROWS > c->context_length ? WS_ROWS : c->context_length;
    size_t vrows = (size_t)vchunk * T, trows = (size_t)s->trows;
    size_t hd = vrows * Dv > trows * Dt ? vrows * Dv : trows * Dt;
    size_t ff = vrows * c->vision.mlp;
    if ((size_t)vchunk * np * K > ff) ff = (size_t)vchunk * np * K; /* im2col columns */
    if (trows * c->text.mlp > ff) ff = trows * c->text.mlp;
    size_t items = MAX_CHUNK_ITEMS; /* >= vchunk */
    size_t nints = 2 * trows + 3 * (size_t)MAX_CHUNK_ITEMS;
    size_t sizes[10] = {hd, hd, hd, hd, hd, hd, ff, (size_t)vchunk * pix, items * E, nints};
    size_t wsfloats = 0;
    for (int i = 0; i < 10; i++) wsfloats += round_up(sizes[i], 64);
    size_t wsbytes = wsfloats * sizeof(float);

    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    if (wbytes + wsbytes > free_b)
        return clip_fail(err, CLIP_ERR_NOMEM,
                         "CUDA backend: the model needs %.0f MiB of GPU memory (weights %.0f MiB + "
                         "workspace %.0f MiB), only %.0f MiB of %.0f MiB are free",
                         (wbytes + wsbytes) / 1048576.0, wbytes / 1048576.0, wsbytes / 1048576.0,
                         free_b / 1048576.0, total_b / 1048576.0);
    CK(cudaMalloc((void **)&s->wbase, wbytes));
    u.base = s->wbase;
    u.used = 0;
    up_all(&u, m, s);
    if (u.e != cudaSuccess) {
        char what[128];
        snprintf(what, sizeof what, "cudaMemcpy of weight %s", u.failed);
        return cuda_err(err, u.e, what, __LINE__);
    }
    /* A pageable cudaMemcpy may return before its DMA lands, and our non-blocking stream does
     * not wait for the legacy stream: finish the uploads before any kernel reads them. */
    CK(cudaDeviceSynchronize());

    CK(cudaMalloc((void **)&s->wsbase, wsbytes));
    float *p = s->wsbase;
    float **slots[9] = {&s->h, &s->a, &s->q, &s->k, &s->v, &s->ctx, &s->f, &s->px, &s->out};
    for (int i = 0; i < 9; i++) {
        *slots[i] = p;
        p += round_up(sizes[i], 64);
    }
    s->ints = (int *)p; /* sizeof(int) == sizeof(float) */

    /* pinned staging: two input slots (pixels or the text tables) and two output slots */
    size_t in_b = (size_t)vchunk * pix * sizeof(float);
    if (nints * sizeof(int) > in_b) in_b = nints * sizeof(int);
    in_b = round_up(in_b, 256);
    size_t out_b = round_up(items * E * sizeof(float), 256);
    CK(cudaHostAlloc((void **)&s->pin, 2 * (in_b + out_b), cudaHostAllocDefault));
    for (int i = 0; i < 2; i++) {
        s->pin_in[i] = s->pin + (size_t)i * in_b;
        s->pin_out[i] = (float *)(s->pin + 2 * in_b + (size_t)i * out_b);
    }
    if (pthread_mutex_init(&s->mu, NULL))
        return clip_fail(err, CLIP_ERR_NOMEM, "CUDA backend: cannot create a mutex");
    s->mu_ok = 1;
    CK(cudaStreamSynchronize(s->stream));
    return CLIP_OK;
}

extern "C" clip_status clip_cuda_init(clip_model *m, clip_error *err) {
    cuda_state *s = (cuda_state *)calloc(1, sizeof *s);
    if (!s) return clip_fail(err, CLIP_ERR_NOMEM, "CUDA backend: out of memory");
    s->dev = 0;
    clip_status st = state_init(s, m, err);
    if (st) {
        state_destroy(s);
        return st;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, s->dev) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(prop.name, sizeof prop.name, "unknown GPU");
    }
    snprintf(m->device_name, sizeof m->device_name, "cuda:%d (%.120s)", s->dev, prop.name);
    m->cuda = s;
    m->device = CLIP_DEVICE_CUDA;
    return CLIP_OK;
}

extern "C" void clip_cuda_free(clip_model *m) {
    if (!m || !m->cuda) return;
    state_destroy((cuda_state *)m->cuda);
    m->cuda = NULL;
}

/* ------------------------------------------------------------------ forward pass */

/* y[rows, out] = x[rows, in] · w[out, in]^T, no bias. Row-major arrays are column-major
 * transposes, so cuBLAS computes y^T = w · x^T: op(A) = T on w (ld in), op(B) = N on x (ld in).
 * beta = 0: y is not read. */
static clip_status linear(cuda_state *s, const float *x, int rows, int in, const float *w,
                          int out, float *y, clip_error *err) {
    const float one = 1.0f, zero = 0.0f;
    CKB(cublasSgemm(s->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one, w, in, x, in, &zero,
                    y, out));
    return CLIP_OK;
}

static clip_status bias_scale(cuda_state *s, float *y, const float *b, int rows, int cols,
                              float scale, clip_error *err) {
    k_bias_scale<<<grid_for((size_t)rows * cols), NT, 0, s->stream>>>(y, b, (size_t)rows, cols,
                                                                       scale);
    CKL("k_bias_scale");
    return CLIP_OK;
}

static clip_status residual_bias(cuda_state *s, float *h, const float *y, const float *b,
                                 int rows, int cols, clip_error *err) {
    k_residual_bias<<<grid_for((size_t)rows * cols), NT, 0, s->stream>>>(h, y, b, (size_t)rows,
                                                                          cols);
    CKL("k_residual_bias");
    return CLIP_OK;
}

static clip_status layernorm(cuda_state *s, const float *x, float *y, int rows, int d,
                             const float *g, const float *b, double eps, clip_error *err) {
    k_layernorm<<<rows, NT, 0, s->stream>>>(x, y, d, g, b, eps);
    CKL("k_layernorm");
    return CLIP_OK;
}

/* The pre-LN encoder (spec §A.4) over `rows` packed tokens in s->h; seqs as k_attention. */
static clip_status encoder(cuda_state *s, int rows, int nseq, int max_len, const int *seqs, int T,
                           const clip_tower_config *tc, const clip_layer_weights *layers,
                           int causal, clip_error *err) {
    int d = tc->width, heads = tc->heads, mlp = tc->mlp, hd = d / heads;
    float scale = (float)(1.0 / sqrt((double)hd));
    clip_status st;
    for (int l = 0; l < tc->layers; l++) {
        const clip_layer_weights *L = &layers[l];
        /* HF eager scales q after the biased projection: (a Wq^T + bq) * head_dim^-0.5 */
        if ((st = layernorm(s, s->h, s->a, rows, d, L->ln1_w, L->ln1_b, tc->eps, err)) ||
            (st = linear(s, s->a, rows, d, L->q_w, d, s->q, err)) ||
            (st = linear(s, s->a, rows, d, L->k_w, d, s->k, err)) ||
            (st = linear(s, s->a, rows, d, L->v_w, d, s->v, err)) ||
            (st = bias_scale(s, s->q, L->q_b, rows, d, scale, err)) ||
            (st = bias_scale(s, s->k, L->k_b, rows, d, 1.0f, err)) ||
            (st = bias_scale(s, s->v, L->v_b, rows, d, 1.0f, err)))
            return st;
        dim3 grid((unsigned)max_len, (unsigned)heads, (unsigned)nseq);
        k_attention<<<grid, ATT_NT, (size_t)max_len * sizeof(float), s->stream>>>(
            s->q, s->k, s->v, s->ctx, seqs, T, d, hd, causal);
        CKL("k_attention");
        if ((st = linear(s, s->ctx, rows, d, L->o_w, d, s->a, err)) ||
            (st = residual_bias(s, s->h, s->a, L->o_b, rows, d, err)) ||
            (st = layernorm(s, s->h, s->a, rows, d, L->ln2_w, L->ln2_b, tc->eps, err)) ||
            (st = linear(s, s->a, rows, d, L->fc1_w, mlp, s->f, err)))
            return st;
        k_bias_act<<<grid_for((size_t)rows * mlp), NT, 0, s->stream>>>(s->f, L->fc1_b,
                                                                        (size_t)rows, mlp,
                                                                        (int)tc->act);
        CKL("k_bias_act");
        if ((st = linear(s, s->f, rows, mlp, L->fc2_w, d, s->a, err)) ||
            (st = residual_bias(s, s->h, s->a, L->fc2_b, rows, d, err)))
            return st;
    }
    return CLIP_OK;
}

/* The end of both towers: pooled rows of s->h (row idx[i], or i * stride when idx is NULL) ->
 * final LayerNorm -> projection -> L2 normalisation unless features -> on its way to
 * pin_out[slot] (event out_ev[slot]). */
static clip_status pool_project(cuda_state *s, const int *idx, int stride, int n, int D,
                                const float *ln_w, const float *ln_b, double eps,
                                const float *proj, int E, int features, int slot,
                                clip_error *err) {
    k_gather<<<grid_for((size_t)n * D), NT, 0, s->stream>>>(s->h, s->q, idx, stride, n, D);
    CKL("k_gather");
    clip_status st = layernorm(s, s->q, s->k, n, D, ln_w, ln_b, eps, err);
    if (st || (st = linear(s, s->k, n, D, proj, E, s->out, err))) return st;
    if (!features) {
        k_l2norm<<<n, NT, 0, s->stream>>>(s->out, E);
        CKL("k_l2norm");
    }
    CK(cudaMemcpyAsync(s->pin_out[slot], s->out, (size_t)n * E * sizeof(float),
                       cudaMemcpyDeviceToHost, s->stream));
    CK(cudaEventRecord(s->out_ev[slot], s->stream));
    return CLIP_OK;
}

/* Enqueues one chunk of images already staged in pinned slot `slot`; leaves its [n, E] result
 * on its way to pin_out[slot] (event out_ev[slot]). */
static clip_status vision_chunk(cuda_state *s, const clip_model *m, int n, int slot, int features,
                                clip_error *err) {
    const clip_config *c = &m->cfg;
    const clip_weights *W = &s->dw;
    int D = c->vision.width, P = c->patch_size, S = c->image_size, g = S / P, np = g * g;
    int T = np + 1, C = c->num_channels, K = C * P * P, E = c->embed_dim;
    size_t pix = (size_t)C * S * S;
    CK(cudaMemcpyAsync(s->px, s->pin_in[slot], (size_t)n * pix * sizeof(float),
                       cudaMemcpyHostToDevice, s->stream));
    CK(cudaEventRecord(s->in_ev[slot], s->stream));
    k_im2col<<<grid_for((size_t)n * np * K), NT, 0, s->stream>>>(s->px, s->f, n, C, S, P, g);
    CKL("k_im2col");
    clip_status st = linear(s, s->f, n * np, K, W->patch_w, D, s->q, err);
    if (st) return st;
    k_vision_embed<<<grid_for((size_t)n * T * D), NT, 0, s->stream>>>(s->q, W->class_emb, W->vpos,
                                                                        s->a, n, T, D);
    CKL("k_vision_embed");
    if ((st = layernorm(s, s->a, s->h, n * T, D, W->pre_ln_w, W->pre_ln_b, c->vision.eps, err)))
        return st;
    st = encoder(s, n * T, n, T, NULL, T, &c->vision, W->vlayers, 0, err);
    if (st) return st;
    return pool_project(s, NULL, T, n, D, W->post_ln_w, W->post_ln_b, c->vision.eps, W->vproj, E,
                        features, slot, err);
}

/* Waits for the result of an earlier chunk in `slot` and hands it to the caller. */
static clip_status finish(cuda_state *s, int slot, float *out, size_t floats, clip_error *err) {
    CK(cudaEventSynchronize(s->out_ev[slot]));
    memcpy(out, s->pin_out[slot], floats * sizeof(float));
    return CLIP_OK;
}

static clip_status lock_state(cuda_state *s, clip_error *err) {
    if (pthread_mutex_lock(&s->mu))
        return clip_fail(err, CLIP_ERR_DEVICE, "CUDA backend: cannot lock the model's workspace");
    cudaError_t e = cudaSetDevice(s->dev);
    if (e != cudaSuccess) {
        pthread_mutex_unlock(&s->mu);
        return cuda_err(err, e, "cudaSetDevice", __LINE__);
    }
    return CLIP_OK;
}

/* After a failure nothing may still be copying into the staging slots when the next call
 * starts; a fault that only shows now is reported if nothing was reported yet. */
static clip_status unlock_state(cuda_state *s, clip_status st, clip_error *err) {
    cudaError_t e = cudaStreamSynchronize(s->stream);
    if (!st && e != cudaSuccess) st = cuda_err(err, e, "cudaStreamSynchronize", __LINE__);
    (void)cudaGetLastError();
    pthread_mutex_unlock(&s->mu);
    return st;
}

static clip_status encode_images(cuda_state *s, const clip_model *m, const float *pixels, int n,
                                 int features, float *out, clip_error *err) {
    const clip_config *c = &m->cfg;
    size_t pix = (size_t)c->num_channels * c->image_size * c->image_size;
    size_t E = (size_t)c->embed_dim;
    int prev_slot = -1, prev_i0 = 0, prev_nb = 0;
    clip_status st = CLIP_OK;
    for (int i0 = 0, chunk = 0; i0 < n; i0 += s->vchunk, chunk++) {
        int nb = n - i0 < s->vchunk ? n - i0 : s->vchunk, slot = chunk & 1;
        /* the slot's previous upload (chunk - 2) must be done before it is overwritten */
        CK(cudaEventSynchronize(s->in_ev[slot]));
        memcpy(s->pin_in[slot], pixels + pix * i0, (size_t)nb * pix * sizeof(float));
        if ((st = vision_chunk(s, m, nb, slot, features, err))) return st;
        if (prev_slot >= 0 &&
            (st = finish(s, prev_slot, out + E * prev_i0, (size_t)prev_nb * E, err)))
            return st;
        prev_slot = slot;
        prev_i0 = i0;
        prev_nb = nb;
    }
    if (prev_slot >= 0) st = finish(s, prev_slot, out + E * prev_i0, (size_t)prev_nb * E, err);
    return st;
}

extern "C" clip_status clip_cuda_encode_images(const clip_model *m, const float *pixels, int n,
                                               const clip_encode_options *opt, float *out,
                                               clip_error *err) {
    cuda_state *s = (cuda_state *)m->cuda;
    if (!s) return clip_fail(err, CLIP_ERR_DEVICE, "CUDA backend: model not on the GPU");
    if (n <= 0) return CLIP_OK;
    int features = opt && (opt->flags & CLIP_EMBED_FEATURES);
    clip_status st = lock_state(s, err);
    if (st) return st;
    st = encode_images(s, m, pixels, n, features, out, err);
    return unlock_state(s, st, err);
}

/* Enqueues one chunk of texts whose tables are staged in pin_in[slot]:
 * ints = [rows x (id, position)] [n x (row0, len)] [n x pooled row]. */
static clip_status text_chunk(cuda_state *s, const clip_model *m, int n, int rows, int max_len,
                              int slot, int features, clip_error *err) {
    const clip_config *c = &m->cfg;
    const clip_weights *W = &s->dw;
    int D = c->text.width, E = c->embed_dim;
    size_t nints = 2 * (size_t)rows + 3 * (size_t)n;
    CK(cudaMemcpyAsync(s->ints, s->pin_in[slot], nints * sizeof(int), cudaMemcpyHostToDevice,
                       s->stream));
    CK(cudaEventRecord(s->in_ev[slot], s->stream));
    const int *rowinfo = s->ints, *seqs = s->ints + 2 * (size_t)rows,
              *pool_rows = s->ints + 2 * (size_t)rows + 2 * (size_t)n;
    k_text_embed<<<grid_for((size_t)rows * D), NT, 0, s->stream>>>(rowinfo, W->tok_emb, W->tpos,
                                                                    s->h, (size_t)rows, D);
    CKL("k_text_embed");
    clip_status st = encoder(s, rows, n, max_len, seqs, 0, &c->text, W->tlayers, 1, err);
    if (st) return st;
    return pool_project(s, pool_rows, 0, n, D, W->final_ln_w, W->final_ln_b, c->text.eps, W->tproj,
                        E, features, slot, err);
}

static clip_status encode_texts(cuda_state *s, const clip_model *m, const int32_t *ids, int n,
                                int len, const int *pool, int features, float *out,
                                clip_error *err) {
    size_t E = (size_t)m->cfg.embed_dim;
    int prev_slot = -1, prev_i0 = 0, prev_nb = 0;
    clip_status st = CLIP_OK;
    for (int i0 = 0, chunk = 0; i0 < n; chunk++) {
        /* as many texts as fit: each runs positions 0..pool[i] only (causal mask) */
        int nb = 0, rows = 0, max_len = 1, slot = chunk & 1;
        while (i0 + nb < n && nb < MAX_CHUNK_ITEMS && rows + pool[i0 + nb] + 1 <= s->trows) {
            int L = pool[i0 + nb] + 1;
            rows += L;
            if (L > max_len) max_len = L;
            nb++;
        }
        CK(cudaEventSynchronize(s->in_ev[slot]));
        int *tab = (int *)s->pin_in[slot];
        int *seqs = tab + 2 * (size_t)rows, *pool_rows = seqs + 2 * (size_t)nb;
        int r = 0;
        for (int i = 0; i < nb; i++) {
            const int32_t *row = ids + (size_t)(i0 + i) * len;
            int L = pool[i0 + i] + 1;
            seqs[2 * i] = r;
            seqs[2 * i + 1] = L;
            pool_rows[i] = r + L - 1;
            for (int p = 0; p < L; p++, r++) {
                tab[2 * r] = row[p];
                tab[2 * r + 1] = p;
            }
        }
        if ((st = text_chunk(s, m, nb, rows, max_len, slot, features, err))) return st;
        if (prev_slot >= 0 &&
            (st = finish(s, prev_slot, out + E * prev_i0, (size_t)prev_nb * E, err)))
            return st;
        prev_slot = slot;
        prev_i0 = i0;
        prev_nb = nb;
        i0 += nb;
    }
    if (prev_slot >= 0) st = finish(s, prev_slot, out + E * prev_i0, (size_t)prev_nb * E, err);
    return st;
}

extern "C" clip_status clip_cuda_encode_texts(const clip_model *m, const int32_t *ids, int n,
                                              int len, const int *pool,
                                              const clip_encode_options *opt, float *out,
                                              clip_error *err) {
    cuda_state *s = (cuda_state *)m->cuda;
    if (!s) return clip_fail(err, CLIP_ERR_DEVICE, "CUDA backend: model not on the GPU");
    if (n <= 0) return CLIP_OK;
    /* model.c validates these; an out-of-range index on the device would read stray memory,
     * so check again here where it costs nothing next to the forward pass. */
    if (len < 1 || len > m->cfg.context_length)
        return clip_fail(err, CLIP_ERR_ARG, "CUDA backend: sequence length %d outside [1, %d]", len,
                         m->cfg.context_length);
    for (int i = 0; i < n; i++) {
        if (pool[i] < 0 || pool[i] >= len)
            return clip_fail(err, CLIP_ERR_ARG, "CUDA backend: pooling index %d of row %d outside "
                             "[0, %d)", pool[i], i, len);
        for (int p = 0; p <= pool[i]; p++) {
            int32_t id = ids[(size_t)i * len + p];
            if (id < 0 || id >= m->cfg.vocab_size)
                return clip_fail(err, CLIP_ERR_ARG,
                                 "CUDA backend: token id %d at row %d, position %d is outside the "
                                 "vocabulary [0, %d)", (int)id, i, p, m->cfg.vocab_size);
        }
    }
    int features = opt && (opt->flags & CLIP_EMBED_FEATURES);
    clip_status st = lock_state(s, err);
    if (st) return st;
    st = encode_texts(s, m, ids, n, len, pool, features, out, err);
    return unlock_state(s, st, err);
}
