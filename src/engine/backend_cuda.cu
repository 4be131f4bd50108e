/* backend_cuda.cu — the forward pass's operations (forward.h) on one NVIDIA GPU, built with
 * `make CUDA=1`. forward.c decides what runs in which order; this file says how each step runs
 * on the device, and moves inputs and outputs.
 *
 * fp32 (the default, an oracle like the CPU):
 *  - Products: cuBLAS sgemm in strict fp32. The handle runs in CUBLAS_PEDANTIC_MATH, so neither
 *    TF32 tensor cores nor bf16x9 emulation can be picked (spec §D #9). The bias is added by a
 *    kernel after the product: fl(acc + b), as on the CPU.
 *  - LayerNorm moments, softmax sums and the L2 norm are computed in double and rounded once,
 *    with the CPU's formulas; quick_gelu uses the CPU's own float exp (ported below), so the
 *    element-wise steps agree with the CPU bit for bit and only product summation order differs.
 *  - Attention: one block per query row and head, dot products accumulated in double; masked
 *    keys are skipped, so their weight is exactly 0.
 * bf16 / fp16 (`--precision`): the Linear weights are converted once at load and kept on the
 *  GPU; each product converts its input rows to 16 bits and runs cublasGemmEx on tensor cores
 *  with fp32 accumulation and an fp32 result. LayerNorm statistics, softmax, the residual
 *  stream, the projection's normalisation — everything but the products' inputs — stay fp32.
 *  Attention runs fused: one block per (sequence, head) holds K and V in shared memory and
 *  makes one pass over them per query (fp32 softmax statistics); [H, L, L] never reaches
 *  global memory.
 * Device code is built with -fmad=false: no float contraction, like -ffp-contract=off.
 * Small image batches (up to GRAPH_MAX_N images) have fixed shapes: their forward pass is
 * captured once as a CUDA graph and replayed with one launch instead of ~200.
 *
 * Memory: the weights are uploaded once; one workspace sized for a chunk of WS_ROWS tokens
 * serves every call, so any batch size runs in bounded memory. Calls on one model are
 * serialised by a mutex (workspace, stream and cuBLAS handle are per model). Inputs go through
 * two pinned staging slots: while the GPU runs chunk c, the host copies chunk c+1 into the
 * other slot. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "forward.h"
extern "C" {
#include "util.h"
}

/* Tokens per chunk: 256 captions of 77 tokens, or 256 ViT-B/32 images (50 tokens each). */
#define WS_ROWS (256 * 77)
#define MAX_CHUNK_ITEMS 256
/* Attention keeps one row of scores in shared memory (32 KiB at this length). */
#define ATT_MAX_LEN 8192
#define NT 256     /* threads of element-wise and per-row kernels (a power of two) */
#define ATT_NT 128 /* threads of the attention kernels (a power of two, 4 warps) */
#define FUSED_SMEM (48 * 1024) /* the fused attention's K + V + scores must fit the default */
#define GRAPH_MAX_N 8          /* image chunks of up to this many images replay a CUDA graph */
#define BLAS_WS_BYTES ((size_t)32 << 20) /* cuBLAS workspace, fixed so graph capture allocates nothing */

/* A Linear layer on the device. */
typedef struct cuda_linear {
    const float *w; /* [out, in] fp32 */
    const void *w16; /* [out, in] bf16/fp16 (reduced precision), else NULL */
    const float *b; /* [out] or NULL */
    int in, out;
} cuda_linear;

/* Device tables of a chunk of texts (all NULL for images: every sequence has T rows). */
typedef struct cuda_seqs_dev {
    const int *seqs;      /* [n] (row0, len) */
    const int *rowinfo;   /* [R] (token id, position) */
    const int *pool_rows; /* [n] absolute pooled row */
} cuda_seqs_dev;

typedef struct cuda_state {
    int dev;
    clip_precision prec;
    cudaStream_t stream;
    cublasHandle_t blas;
    float *wbase;          /* every fp32 weight, one allocation */
    void *w16base;         /* the Linear weights in 16 bits (reduced precision) */
    cuda_linear *lins;     /* every product of the model */
    int nlins;
    fwd_layer *layers;     /* vision layers, then text layers */
    fwd_tower vision, text;
    /* workspace */
    float *wsbase;
    fwd_buffers buf;
    float *px;             /* [vchunk, C, S, S] pixels of a chunk */
    int *ints;             /* the text tables of a chunk */
    void *x16;             /* a product's input in 16 bits */
    size_t x16_elems;
    int vchunk;            /* images per chunk */
    int trows;             /* token rows per text chunk */
    int *hrow0, *hlen, *hpool; /* host tables of a chunk (MAX_CHUNK_ITEMS each) */
    /* Small image batches have fixed shapes: their forward pass (about 200 launches for
     * ViT-B/32) is captured once per (features, n) and replayed as one graph launch. */
    cudaGraphExec_t graphs[2][GRAPH_MAX_N + 1];
    int graphs_off;        /* capture failed once: run directly from then on */
    void *blas_ws;
    /* pinned staging */
    unsigned char *pin;
    unsigned char *pin_in[2];
    float *pin_out[2];
    cudaEvent_t in_ev[2], out_ev[2];
    int n_ev;
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

/* y[r][c] = y[r][c] + b[c], row stride ldy. */
__global__ void k_bias(float *y, const float *b, size_t rows, int cols, size_t ldy) {
    GRID_STRIDE(i, rows * (size_t)cols) {
        size_t r = i / (size_t)cols, c = i % (size_t)cols;
        y[r * ldy + c] = y[r * ldy + c] + b[c];
    }
}

/* h = h + y */
__global__ void k_add(float *h, const float *y, size_t n) { GRID_STRIDE(i, n) h[i] = h[i] + y[i]; }

/* The CPU backend's exp_f32, the same source: with -fmad=false the device rounds each step as
 * the CPU build does, so quick_gelu is bit-identical to the oracle. */
#define CLIP_EXP_F32_QUALIFIERS __device__ static inline
#include "exp_f32.h"

__global__ void k_act(float *x, size_t n, int act) {
    GRID_STRIDE(i, n) {
        float u = x[i];
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

/* A product's input rows in 16 bits (round to nearest even). */
__global__ void k_to_bf16(const float *x, __nv_bfloat16 *y, size_t n) {
    GRID_STRIDE(i, n) y[i] = __float2bfloat16_rn(x[i]);
}
__global__ void k_to_fp16(const float *x, __half *y, size_t n) {
    GRID_STRIDE(i, n) y[i] = __float2half_rn(x[i]);
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

/* One block per row; two-pass moments in double as the CPU does. x and y may be the same
 * buffer: every thread reads its own elements for the moments, and after the last barrier
 * writes exactly the elements it reads. */
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

/* Where sequence s of a chunk lives: from the device table, or n sequences of T rows from row
 * `base` (images; one traced text). */
__device__ void seq_of(const int *seqs, int T, int base, int s, size_t *row0, int *L) {
    *row0 = seqs ? (size_t)seqs[2 * s] : (size_t)base + (size_t)s * T;
    *L = seqs ? seqs[2 * s + 1] : T;
}

/* fp32: ctx[row0+i, head h] = softmax_j(fl(q_i * scale) . k_j) v_j over the visible keys j, the
 * dot products accumulated in double. Grid (query i, head h, sequence s). qkv rows: q | k | v
 * (stride ld = 3D). Dynamic shared memory: one float per key of the longest sequence. probs
 * (one sequence, or NULL): [H, L, L]. */
__global__ void k_attention(const float *qkv, size_t ld, float *ctx, int d, const int *seqs, int T,
                            int base, int hd, int causal, float scale, float *probs) {
    extern __shared__ float sc[];
    __shared__ double red[ATT_NT];
    __shared__ float fred[ATT_NT];
    int i = blockIdx.x, h = blockIdx.y, s = blockIdx.z, L;
    size_t row0;
    seq_of(seqs, T, base, s, &row0, &L);
    if (i >= L) return; /* the whole block leaves together, before any barrier */
    int nvis = causal ? i + 1 : L;
    size_t off = (size_t)h * hd;
    const float *qi = qkv + (row0 + i) * ld + off;
    for (int j = threadIdx.x; j < nvis; j += blockDim.x) {
        const float *kj = qkv + (row0 + j) * ld + d + off;
        double acc = 0.0;
        for (int c = 0; c < hd; c++) {
            float qs = qi[c] * scale; /* HF: q_proj(x) * scale, in float */
            acc += (double)qs * (double)kj[c];
        }
        sc[j] = (float)acc; /* scores are float32, as HF's bmm output */
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
    if (probs)
        for (int j = threadIdx.x; j < L; j += blockDim.x)
            probs[((size_t)h * L + i) * L + j] = j < nvis ? sc[j] : 0.0f;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        double acc = 0.0;
        for (int j = 0; j < nvis; j++)
            acc += (double)sc[j] * (double)qkv[(row0 + j) * ld + 2 * (size_t)d + off + c];
        ctx[(row0 + i) * (size_t)d + off + c] = (float)acc;
    }
}

__device__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Reduced precision: one block per (head, sequence). K and V of the sequence are read from
 * global memory once into shared memory; each warp takes query rows, scores them against every
 * visible key, keeps the softmax statistics in fp32 and writes its context row. Shared memory:
 * K [Lmax][hd], V [Lmax][hd], one score row of Lmax per warp. */
__global__ void k_attention_fused(const float *qkv, size_t ld, float *ctx, int d, const int *seqs,
                                  int T, int base, int hd, int causal, float scale, int Lmax) {
    extern __shared__ float sm[];
    float *Ks = sm, *Vs = sm + (size_t)Lmax * hd, *Ss = Vs + (size_t)Lmax * hd;
    int h = blockIdx.x, s = blockIdx.y, L;
    size_t row0;
    seq_of(seqs, T, base, s, &row0, &L);
    size_t off = (size_t)h * hd;
    for (int t = threadIdx.x; t < L * hd; t += blockDim.x) {
        int j = t / hd, c = t % hd;
        const float *r = qkv + (row0 + j) * ld + off + c;
        Ks[t] = r[d];
        Vs[t] = r[2 * (size_t)d];
    }
    __syncthreads();
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    float *row = Ss + (size_t)warp * Lmax;
    for (int i = warp; i < L; i += nwarps) {
        int nvis = causal ? i + 1 : L;
        const float *qi = qkv + (row0 + i) * ld + off;
        float mx = -INFINITY;
        for (int j = lane; j < nvis; j += 32) {
            const float *kj = Ks + (size_t)j * hd;
            float acc = 0.0f;
            for (int c = 0; c < hd; c++) acc = acc + (qi[c] * scale) * kj[c];
            row[j] = acc;
            mx = fmaxf(mx, acc);
        }
        mx = warp_max(mx);
        float sum = 0.0f;
        for (int j = lane; j < nvis; j += 32) {
            float e = __expf(row[j] - mx);
            row[j] = e;
            sum += e;
        }
        float inv = 1.0f / warp_sum(sum);
        __syncwarp();
        for (int c = lane; c < hd; c += 32) {
            float acc = 0.0f;
            for (int j = 0; j < nvis; j++) acc = acc + row[j] * Vs[(size_t)j * hd + c];
            ctx[(row0 + i) * (size_t)d + off + c] = acc * inv;
        }
        __syncwarp();
    }
}

/* ------------------------------------------------------------------ operations */

static clip_status op_linear(void *be, const fwd_linear *fl, const float *x, int rows, float *y,
                             size_t ldy, clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    const cuda_linear *w = (const cuda_linear *)fl->impl;
    const float one = 1.0f, zero = 0.0f;
    /* Row-major arrays are column-major transposes, so cuBLAS computes y^T = w . x^T:
     * op(A) = T on w (ld in), op(B) = N on x (ld in); beta = 0: y is not read. */
    if (!w->w16) {
        CKB(cublasSgemm(s->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->out, rows, w->in, &one, w->w, w->in,
                        x, w->in, &zero, y, (int)ldy));
    } else {
        size_t n = (size_t)rows * w->in;
        if (n > s->x16_elems)
            return clip_fail(err, CLIP_ERR_ARG, "CUDA backend: %zu inputs exceed the 16-bit "
                             "workspace (%zu)", n, s->x16_elems);
        cudaDataType_t t;
        if (s->prec == CLIP_PRECISION_BF16) {
            k_to_bf16<<<grid_for(n), NT, 0, s->stream>>>(x, (__nv_bfloat16 *)s->x16, n);
            t = CUDA_R_16BF;
        } else {
            k_to_fp16<<<grid_for(n), NT, 0, s->stream>>>(x, (__half *)s->x16, n);
            t = CUDA_R_16F;
        }
        CKL("k_to_16");
        CKB(cublasGemmEx(s->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->out, rows, w->in, &one, w->w16, t,
                         w->in, s->x16, t, w->in, &zero, y, CUDA_R_32F, (int)ldy,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (w->b) {
        k_bias<<<grid_for((size_t)rows * w->out), NT, 0, s->stream>>>(y, w->b, (size_t)rows,
                                                                      w->out, ldy);
        CKL("k_bias");
    }
    return CLIP_OK;
}

static clip_status op_layernorm(void *be, const float *x, float *y, int rows, int d, fwd_norm n,
                                double eps, clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    k_layernorm<<<rows, NT, 0, s->stream>>>(x, y, d, n.w, n.b, eps);
    CKL("k_layernorm");
    return CLIP_OK;
}

static clip_status op_attention(void *be, const fwd_seqs *q, const float *qkv, int d, int heads,
                                int causal, float *att, float *probs, clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    const cuda_seqs_dev *dv = (const cuda_seqs_dev *)q->dev;
    const int *seqs = dv ? dv->seqs : NULL;
    /* without a device table: q->n sequences of len[0] rows from row0[0] */
    int T = q->len[0], base = q->row0[0], hd = d / heads;
    float scale = (float)(1.0 / sqrt((double)hd));
    size_t ld = 3 * (size_t)d;
    size_t fused_smem = (2 * (size_t)q->max_len * hd + (ATT_NT / 32) * (size_t)q->max_len) *
                        sizeof(float);
    if (s->prec != CLIP_PRECISION_FP32 && !probs && fused_smem <= FUSED_SMEM) {
        dim3 grid((unsigned)heads, (unsigned)q->n);
        k_attention_fused<<<grid, ATT_NT, fused_smem, s->stream>>>(qkv, ld, att, d, seqs, T, base,
                                                                  hd, causal, scale, q->max_len);
        CKL("k_attention_fused");
        return CLIP_OK;
    }
    dim3 grid((unsigned)q->max_len, (unsigned)heads, (unsigned)q->n);
    k_attention<<<grid, ATT_NT, (size_t)q->max_len * sizeof(float), s->stream>>>(
        qkv, ld, att, d, seqs, T, base, hd, causal, scale, probs);
    CKL("k_attention");
    return CLIP_OK;
}

static clip_status op_activation(void *be, float *x, size_t n, clip_act act, clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    k_act<<<grid_for(n), NT, 0, s->stream>>>(x, n, (int)act);
    CKL("k_act");
    return CLIP_OK;
}

static clip_status op_residual(void *be, float *h, const float *y, size_t n, clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    k_add<<<grid_for(n), NT, 0, s->stream>>>(h, y, n);
    CKL("k_add");
    return CLIP_OK;
}

static clip_status op_im2col(void *be, const float *pixels, int n, int C, int S, int P,
                             float *cols, clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    int g = S / P;
    k_im2col<<<grid_for((size_t)n * g * g * C * P * P), NT, 0, s->stream>>>(pixels, cols, n, C, S,
                                                                           P, g);
    CKL("k_im2col");
    return CLIP_OK;
}

static clip_status op_vision_embed(void *be, const float *patches, const float *cls,
                                   const float *pos, int n, int T, int D, float *h,
                                   clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    k_vision_embed<<<grid_for((size_t)n * T * D), NT, 0, s->stream>>>(patches, cls, pos, h, n, T,
                                                                      D);
    CKL("k_vision_embed");
    return CLIP_OK;
}

static clip_status op_text_embed(void *be, const fwd_seqs *q, const float *tok, const float *pos,
                                 int D, float *h, clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    const cuda_seqs_dev *dv = (const cuda_seqs_dev *)q->dev;
    if (!dv || !dv->rowinfo)
        return clip_fail(err, CLIP_ERR_ARG, "CUDA backend: text rows without their device table");
    k_text_embed<<<grid_for((size_t)q->rows * D), NT, 0, s->stream>>>(dv->rowinfo, tok, pos, h,
                                                                      (size_t)q->rows, D);
    CKL("k_text_embed");
    return CLIP_OK;
}

static clip_status op_gather(void *be, const fwd_seqs *q, const float *src, int D, float *dst,
                             clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    const cuda_seqs_dev *dv = (const cuda_seqs_dev *)q->dev;
    /* images: row s * T (CLS); texts: the device table of pooled rows */
    k_gather<<<grid_for((size_t)q->n * D), NT, 0, s->stream>>>(src, dst, dv ? dv->pool_rows : NULL,
                                                               q->max_len, q->n, D);
    CKL("k_gather");
    return CLIP_OK;
}

static clip_status op_l2norm(void *be, float *x, int n, int E, clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    k_l2norm<<<n, NT, 0, s->stream>>>(x, E);
    CKL("k_l2norm");
    return CLIP_OK;
}

static const float *op_to_host(void *be, const float *x, size_t n, float *scratch,
                               clip_error *err) {
    cuda_state *s = (cuda_state *)be;
    cudaError_t e = cudaMemcpyAsync(scratch, x, n * sizeof(float), cudaMemcpyDeviceToHost,
                                    s->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s->stream);
    if (e != cudaSuccess) {
        cuda_err(err, e, "copying an intermediate to the host", __LINE__);
        return NULL;
    }
    return scratch;
}

static const fwd_ops cuda_ops = {op_linear,  op_layernorm, op_attention,   op_activation,
                                 op_residual, op_im2col,   op_vision_embed, op_text_embed,
                                 op_gather,  op_l2norm,    op_to_host};

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

/* Walks every weight twice: first to size the single allocation (base == NULL), then to copy
 * each tensor to its 256-byte aligned place and record the device pointer. Several host
 * tensors may go to one device tensor side by side (q | k | v). */
typedef struct uploader {
    float *base; /* NULL while sizing */
    size_t used; /* floats */
    cudaError_t e;
    const char *failed;
} uploader;

static const float *up_parts(uploader *u, int nparts, const float *const *src, const size_t *n,
                             const char *what) {
    size_t total = 0;
    for (int p = 0; p < nparts; p++) total += n[p];
    size_t off = u->used;
    u->used += round_up(total ? total : 1, 64);
    if (!u->base) return NULL;
    float *dst = u->base + off;
    for (int p = 0; p < nparts && u->e == cudaSuccess; p++) {
        u->e = cudaMemcpy(dst, src[p], n[p] * sizeof(float), cudaMemcpyHostToDevice);
        if (u->e != cudaSuccess) u->failed = what;
        dst += n[p];
    }
    return u->base + off;
}

static const float *up(uploader *u, const float *src, size_t n, const char *what) {
    return up_parts(u, 1, &src, &n, what);
}

/* One Linear layer: weights (and bias) of nparts host tensors side by side. */
static void up_linear(uploader *u, cuda_state *s, fwd_linear *fl, int nparts,
                      const float *const *w, const float *const *b, const int *outs, int in,
                      const char *what) {
    size_t wn[3], bn[3];
    int out = 0;
    for (int p = 0; p < nparts; p++) {
        wn[p] = (size_t)outs[p] * in;
        bn[p] = (size_t)outs[p];
        out += outs[p];
    }
    cuda_linear *L = &s->lins[s->nlins++];
    L->w = up_parts(u, nparts, w, wn, what);
    L->b = b ? up_parts(u, nparts, b, bn, what) : NULL;
    L->w16 = NULL;
    L->in = in;
    L->out = out;
    fl->impl = L;
    fl->in = in;
    fl->out = out;
}

static void up_tower(uploader *u, cuda_state *s, const clip_tower_config *tc,
                     const clip_layer_weights *src, fwd_layer *dst) {
    size_t D = (size_t)tc->width;
    int d = tc->width, f = tc->mlp, qkv[3] = {d, d, d};
    for (int l = 0; l < tc->layers; l++) {
        const clip_layer_weights *L = &src[l];
        fwd_layer *o = &dst[l];
        o->ln1.w = up(u, L->ln1_w, D, "layer_norm1.weight");
        o->ln1.b = up(u, L->ln1_b, D, "layer_norm1.bias");
        o->ln2.w = up(u, L->ln2_w, D, "layer_norm2.weight");
        o->ln2.b = up(u, L->ln2_b, D, "layer_norm2.bias");
        const float *qw[3] = {L->q_w, L->k_w, L->v_w}, *qb[3] = {L->q_b, L->k_b, L->v_b};
        up_linear(u, s, &o->qkv, 3, qw, qb, qkv, d, "q/k/v_proj");
        up_linear(u, s, &o->o, 1, &L->o_w, &L->o_b, &d, d, "out_proj");
        up_linear(u, s, &o->fc1, 1, &L->fc1_w, &L->fc1_b, &f, d, "fc1");
        up_linear(u, s, &o->fc2, 1, &L->fc2_w, &L->fc2_b, &d, f, "fc2");
    }
}

static void up_all(uploader *u, const clip_model *m, cuda_state *s) {
    const clip_config *c = &m->cfg;
    const clip_weights *W = &m->w;
    fwd_tower *v = &s->vision, *t = &s->text;
    size_t Dv = (size_t)c->vision.width, Dt = (size_t)c->text.width;
    size_t g = (size_t)(c->image_size / c->patch_size);
    int dv = c->vision.width, E = c->embed_dim, Kp = c->num_channels * c->patch_size * c->patch_size;
    s->nlins = 0;
    v->cls = up(u, W->class_emb, Dv, "class_embedding");
    up_linear(u, s, &v->patch, 1, &W->patch_w, NULL, &dv, Kp, "patch_embedding.weight");
    v->pos = up(u, W->vpos, (g * g + 1) * Dv, "vision position_embedding");
    v->pre_ln.w = up(u, W->pre_ln_w, Dv, "pre_layrnorm.weight");
    v->pre_ln.b = up(u, W->pre_ln_b, Dv, "pre_layrnorm.bias");
    v->final_ln.w = up(u, W->post_ln_w, Dv, "post_layernorm.weight");
    v->final_ln.b = up(u, W->post_ln_b, Dv, "post_layernorm.bias");
    up_linear(u, s, &v->proj, 1, &W->vproj, NULL, &E, dv, "visual_projection.weight");
    up_tower(u, s, &c->vision, W->vlayers, s->layers);
    t->tok = up(u, W->tok_emb, (size_t)c->vocab_size * Dt, "token_embedding");
    t->pos = up(u, W->tpos, (size_t)c->context_length * Dt, "text position_embedding");
    t->final_ln.w = up(u, W->final_ln_w, Dt, "final_layer_norm.weight");
    t->final_ln.b = up(u, W->final_ln_b, Dt, "final_layer_norm.bias");
    up_linear(u, s, &t->proj, 1, &W->tproj, NULL, &E, c->text.width, "text_projection.weight");
    up_tower(u, s, &c->text, W->tlayers, s->layers + c->vision.layers);
    v->cfg = &c->vision;
    v->layers = s->layers;
    t->cfg = &c->text;
    t->layers = s->layers + c->vision.layers;
}

/* Frees whatever was created; safe on a partly initialised state. */
static void state_destroy(cuda_state *s) {
    if (!s) return;
    cudaSetDevice(s->dev);
    if (s->stream) cudaStreamSynchronize(s->stream); /* no copy may still target pinned memory */
    for (int i = 0; i < s->n_ev; i++) cudaEventDestroy(i < 2 ? s->in_ev[i] : s->out_ev[i - 2]);
    for (int f = 0; f < 2; f++)
        for (int n = 0; n <= GRAPH_MAX_N; n++)
            if (s->graphs[f][n]) cudaGraphExecDestroy(s->graphs[f][n]);
    if (s->blas) cublasDestroy(s->blas);
    if (s->blas_ws) cudaFree(s->blas_ws);
    if (s->stream) cudaStreamDestroy(s->stream);
    if (s->wbase) cudaFree(s->wbase);
    if (s->w16base) cudaFree(s->w16base);
    if (s->wsbase) cudaFree(s->wsbase);
    if (s->pin) cudaFreeHost(s->pin);
    (void)cudaGetLastError();
    if (s->mu_ok) pthread_mutex_destroy(&s->mu);
    free(s->lins);
    free(s->layers);
    free(s->hrow0);
    free(s);
}

/* Reduced precision: a 16-bit copy of every Linear weight, converted on the device. */
static clip_status make_w16(cuda_state *s, clip_error *err) {
    size_t total = 0;
    for (int i = 0; i < s->nlins; i++) total += round_up((size_t)s->lins[i].out * s->lins[i].in, 128);
    CK(cudaMalloc(&s->w16base, total * 2));
    size_t off = 0;
    for (int i = 0; i < s->nlins; i++) {
        cuda_linear *L = &s->lins[i];
        size_t n = (size_t)L->out * L->in;
        void *dst = (char *)s->w16base + off * 2;
        if (s->prec == CLIP_PRECISION_BF16)
            k_to_bf16<<<grid_for(n), NT, 0, s->stream>>>(L->w, (__nv_bfloat16 *)dst, n);
        else
            k_to_fp16<<<grid_for(n), NT, 0, s->stream>>>(L->w, (__half *)dst, n);
        CKL("k_to_16 (weights)");
        L->w16 = dst;
        off += round_up(n, 128);
    }
    CK(cudaStreamSynchronize(s->stream));
    return CLIP_OK;
}

static clip_status state_init(cuda_state *s, const clip_model *m, clip_error *err) {
    const clip_config *c = &m->cfg;
    int T = (c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1;
    if (T > ATT_MAX_LEN || c->context_length > ATT_MAX_LEN)
        return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                         "CUDA backend: sequences of %d positions are longer than its %d limit",
                         T > c->context_length ? T : c->context_length, ATT_MAX_LEN);
    s->prec = m->precision;
    CK(cudaSetDevice(s->dev));
    CK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    CKB(cublasCreate(&s->blas));
    CKB(cublasSetStream(s->blas, s->stream));
    CK(cudaMalloc(&s->blas_ws, BLAS_WS_BYTES));
    CKB(cublasSetWorkspace(s->blas, s->blas_ws, BLAS_WS_BYTES));
    /* fp32 is the oracle: no TF32, no emulation. 16-bit products use the tensor cores. */
    CKB(cublasSetMathMode(s->blas, s->prec == CLIP_PRECISION_FP32 ? CUBLAS_PEDANTIC_MATH
                                                                  : CUBLAS_DEFAULT_MATH));
    for (; s->n_ev < 4; s->n_ev++)
        CK(cudaEventCreateWithFlags(s->n_ev < 2 ? &s->in_ev[s->n_ev] : &s->out_ev[s->n_ev - 2],
                                    cudaEventDisableTiming));

    /* weights */
    int Lv = c->vision.layers, Lt = c->text.layers;
    s->lins = (cuda_linear *)calloc(4 * (size_t)(Lv + Lt) + 3, sizeof *s->lins);
    s->layers = (fwd_layer *)calloc((size_t)(Lv + Lt), sizeof *s->layers);
    s->hrow0 = (int *)calloc(3 * (size_t)WS_ROWS, sizeof(int));
    if (!s->lins || !s->layers || !s->hrow0)
        return clip_fail(err, CLIP_ERR_NOMEM, "CUDA backend: out of memory");
    s->hlen = s->hrow0 + WS_ROWS;
    s->hpool = s->hlen + WS_ROWS;
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
    size_t Lmax = (size_t)(T > c->context_length ? T : c->context_length);
    size_t heads = (size_t)(c->vision.heads > c->text.heads ? c->vision.heads : c->text.heads);
    size_t Dmax = Dv > Dt ? Dv : Dt;
    size_t nints = 2 * trows + 3 * (size_t)MAX_CHUNK_ITEMS;
    /* h, x, qkv, att, y, f, pooled, out, probs, px, ints */
    size_t sizes[11] = {hd, hd, 3 * hd, hd, hd, ff, items * Dmax, items * E, heads * Lmax * Lmax,
                        (size_t)vchunk * pix, nints};
    size_t wsfloats = 0;
    for (int i = 0; i < 11; i++) wsfloats += round_up(sizes[i], 64);
    s->x16_elems = s->prec == CLIP_PRECISION_FP32 ? 0 : ff; /* the largest product input */
    size_t wsbytes = wsfloats * sizeof(float) + s->x16_elems * 2;
    size_t w16bytes = s->prec == CLIP_PRECISION_FP32 ? 0 : wbytes / 2;

    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    if (wbytes + w16bytes + wsbytes > free_b)
        return clip_fail(err, CLIP_ERR_NOMEM,
                         "CUDA backend: the model needs %.0f MiB of GPU memory (weights %.0f MiB + "
                         "workspace %.0f MiB), only %.0f MiB of %.0f MiB are free",
                         (wbytes + w16bytes + wsbytes) / 1048576.0,
                         (wbytes + w16bytes) / 1048576.0, wsbytes / 1048576.0,
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
    if (s->prec != CLIP_PRECISION_FP32) {
        clip_status st = make_w16(s, err);
        if (st) return st;
    }

    CK(cudaMalloc((void **)&s->wsbase, wsbytes));
    float *p = s->wsbase;
    float **slots[10] = {&s->buf.h,   &s->buf.x,      &s->buf.qkv, &s->buf.att,   &s->buf.y,
                         &s->buf.f,   &s->buf.pooled, &s->buf.out, &s->buf.probs, &s->px};
    for (int i = 0; i < 10; i++) {
        *slots[i] = p;
        p += round_up(sizes[i], 64);
    }
    s->ints = (int *)p; /* sizeof(int) == sizeof(float) */
    p += round_up(nints, 64);
    s->x16 = s->x16_elems ? (void *)p : NULL;

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

/* ------------------------------------------------------------------ encode */

/* Tracing: host copies of the intermediates (R rows of the widest buffer) + strided rows. */
typedef struct trace_mem {
    float *host, *host2;
} trace_mem;

static clip_status trace_alloc(trace_mem *t, const clip_encode_options *opt, size_t rows,
                               const clip_tower_config *tc, size_t max_len, int heads,
                               clip_error *err) {
    t->host = t->host2 = NULL;
    if (!opt || !opt->trace) return CLIP_OK;
    size_t w = 3 * (size_t)tc->width > (size_t)tc->mlp ? 3 * (size_t)tc->width : (size_t)tc->mlp;
    size_t probs = (size_t)heads * max_len * max_len;
    size_t n = rows * w > probs ? rows * w : probs;
    t->host = (float *)malloc(n * sizeof(float));
    t->host2 = (float *)malloc(max_len * w * sizeof(float));
    if (!t->host || !t->host2) {
        free(t->host);
        free(t->host2);
        return clip_fail(err, CLIP_ERR_NOMEM, "CUDA backend: cannot allocate the trace buffers");
    }
    return CLIP_OK;
}

/* Waits for the result of an earlier chunk in `slot` and hands it to the caller. */
static clip_status finish(cuda_state *s, int slot, float *out, size_t floats, clip_error *err) {
    CK(cudaEventSynchronize(s->out_ev[slot]));
    memcpy(out, s->pin_out[slot], floats * sizeof(float));
    return CLIP_OK;
}

/* The chunk's embeddings on their way to pin_out[slot] (event out_ev[slot]). */
static clip_status send_out(cuda_state *s, int n, int E, int slot, clip_error *err) {
    CK(cudaMemcpyAsync(s->pin_out[slot], s->buf.out, (size_t)n * E * sizeof(float),
                       cudaMemcpyDeviceToHost, s->stream));
    CK(cudaEventRecord(s->out_ev[slot], s->stream));
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

static clip_status vision_chunk(cuda_state *s, const clip_model *m, int n, int slot, int item0,
                                const clip_encode_options *opt, trace_mem *tm, clip_error *err) {
    const clip_config *c = &m->cfg;
    int S = c->image_size, P = c->patch_size, T = (S / P) * (S / P) + 1;
    size_t pix = (size_t)c->num_channels * S * S;
    CK(cudaMemcpyAsync(s->px, s->pin_in[slot], (size_t)n * pix * sizeof(float),
                       cudaMemcpyHostToDevice, s->stream));
    CK(cudaEventRecord(s->in_ev[slot], s->stream));
    for (int b = 0; b < n; b++) {
        s->hrow0[b] = b * T;
        s->hlen[b] = T;
        s->hpool[b] = 0;
    }
    fwd_seqs seqs = {n, n * T, T, s->hrow0, s->hlen, s->hpool, NULL, NULL};
    fwd_ctx ctx = {&cuda_ops, s, c, opt, item0, tm->host, tm->host2};
    int features = opt && (opt->flags & CLIP_EMBED_FEATURES);
    clip_status st = CLIP_OK;
    if (!fwd_tracing(&ctx) && n <= GRAPH_MAX_N && !s->graphs_off) {
        cudaGraphExec_t *exec = &s->graphs[features][n];
        if (!*exec) {
            /* Capture: nothing runs now; a failure of any kind (an operation cuBLAS will not
             * capture, a driver without graph support) only switches graphs off. */
            cudaGraph_t graph = NULL;
            clip_error cap_err;
            int ok = cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal) ==
                     cudaSuccess;
            if (ok) ok = fwd_vision(&ctx, &s->vision, &seqs, s->px, &s->buf, &cap_err) == CLIP_OK;
            cudaError_t ce = cudaStreamEndCapture(s->stream, &graph);
            ok = ok && ce == cudaSuccess && graph &&
                 cudaGraphInstantiate(exec, graph, 0) == cudaSuccess;
            if (graph) cudaGraphDestroy(graph);
            if (!ok) {
                if (*exec) cudaGraphExecDestroy(*exec);
                *exec = NULL;
                s->graphs_off = 1;
                (void)cudaGetLastError();
            }
        }
        if (*exec) {
            CK(cudaGraphLaunch(*exec, s->stream));
            return send_out(s, n, c->embed_dim, slot, err);
        }
    }
    st = fwd_vision(&ctx, &s->vision, &seqs, s->px, &s->buf, err);
    return st ? st : send_out(s, n, c->embed_dim, slot, err);
}

static clip_status encode_images(cuda_state *s, const clip_model *m, const float *pixels, int n,
                                 const clip_encode_options *opt, float *out, clip_error *err) {
    const clip_config *c = &m->cfg;
    size_t pix = (size_t)c->num_channels * c->image_size * c->image_size;
    size_t E = (size_t)c->embed_dim;
    int T = (c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1;
    trace_mem tm;
    clip_status st = trace_alloc(&tm, opt, (size_t)s->vchunk * T, &c->vision, (size_t)T,
                                 c->vision.heads, err);
    if (st) return st;
    int prev_slot = -1, prev_i0 = 0, prev_nb = 0;
    for (int i0 = 0, chunk = 0; i0 < n && !st; i0 += s->vchunk, chunk++) {
        int nb = n - i0 < s->vchunk ? n - i0 : s->vchunk, slot = chunk & 1;
        /* the slot's previous upload (chunk - 2) must be done before it is overwritten */
        cudaError_t e = cudaEventSynchronize(s->in_ev[slot]);
        if (e != cudaSuccess) {
            st = cuda_err(err, e, "cudaEventSynchronize", __LINE__);
            break;
        }
        memcpy(s->pin_in[slot], pixels + pix * i0, (size_t)nb * pix * sizeof(float));
        if ((st = vision_chunk(s, m, nb, slot, i0, opt, &tm, err))) break;
        if (prev_slot >= 0 &&
            (st = finish(s, prev_slot, out + E * prev_i0, (size_t)prev_nb * E, err)))
            break;
        prev_slot = slot;
        prev_i0 = i0;
        prev_nb = nb;
    }
    if (!st && prev_slot >= 0)
        st = finish(s, prev_slot, out + E * prev_i0, (size_t)prev_nb * E, err);
    free(tm.host);
    free(tm.host2);
    return st;
}

extern "C" clip_status clip_cuda_encode_images(const clip_model *m, const float *pixels, int n,
                                               const clip_encode_options *opt, float *out,
                                               clip_error *err) {
    cuda_state *s = (cuda_state *)m->cuda;
    if (!s) return clip_fail(err, CLIP_ERR_DEVICE, "CUDA backend: model not on the GPU");
    if (n <= 0) return CLIP_OK;
    clip_status st = lock_state(s, err);
    if (st) return st;
    st = encode_images(s, m, pixels, n, opt, out, err);
    return unlock_state(s, st, err);
}

/* Enqueues one chunk of texts whose tables are staged in pin_in[slot]:
 * ints = [rows x (id, position)] [n x (row0, len)] [n x pooled row]. */
static clip_status text_chunk(cuda_state *s, const clip_model *m, int n, int rows, int max_len,
                              int slot, int item0, const clip_encode_options *opt, trace_mem *tm,
                              clip_error *err) {
    const clip_config *c = &m->cfg;
    size_t nints = 2 * (size_t)rows + 3 * (size_t)n;
    CK(cudaMemcpyAsync(s->ints, s->pin_in[slot], nints * sizeof(int), cudaMemcpyHostToDevice,
                       s->stream));
    CK(cudaEventRecord(s->in_ev[slot], s->stream));
    cuda_seqs_dev dv = {s->ints + 2 * (size_t)rows, s->ints,
                        s->ints + 2 * (size_t)rows + 2 * (size_t)n};
    fwd_seqs seqs = {n, rows, max_len, s->hrow0, s->hlen, s->hpool, NULL, &dv};
    fwd_ctx ctx = {&cuda_ops, s, c, opt, item0, tm->host, tm->host2};
    clip_status st = fwd_text(&ctx, &s->text, &seqs, &s->buf, err);
    return st ? st : send_out(s, n, c->embed_dim, slot, err);
}

static clip_status encode_texts(cuda_state *s, const clip_model *m, const int32_t *ids, int n,
                                int len, const int *pool, const clip_encode_options *opt,
                                float *out, clip_error *err) {
    size_t E = (size_t)m->cfg.embed_dim;
    int tracing = opt && opt->trace;
    trace_mem tm;
    clip_status st = trace_alloc(&tm, opt, (size_t)s->trows, &m->cfg.text, (size_t)len,
                                 m->cfg.text.heads, err);
    if (st) return st;
    int prev_slot = -1, prev_i0 = 0, prev_nb = 0;
    for (int i0 = 0, chunk = 0; i0 < n && !st; chunk++) {
        /* as many texts as fit: each runs positions 0..pool[i] only (causal mask); a traced
         * run computes every position, rows 0..pool coming out the same */
        int nb = 0, rows = 0, max_len = 1, slot = chunk & 1;
        while (i0 + nb < n && nb < MAX_CHUNK_ITEMS) {
            int L = tracing ? len : pool[i0 + nb] + 1;
            if (rows + L > s->trows) break;
            rows += L;
            if (L > max_len) max_len = L;
            nb++;
        }
        cudaError_t e = cudaEventSynchronize(s->in_ev[slot]);
        if (e != cudaSuccess) {
            st = cuda_err(err, e, "cudaEventSynchronize", __LINE__);
            break;
        }
        /* the previous chunk's host tables may still be read by its observer: none is, since
         * forward.c reads them synchronously before returning */
        int *tab = (int *)s->pin_in[slot];
        int *seqs = tab + 2 * (size_t)rows, *pool_rows = seqs + 2 * (size_t)nb;
        int r = 0;
        for (int i = 0; i < nb; i++) {
            const int32_t *row = ids + (size_t)(i0 + i) * len;
            int L = tracing ? len : pool[i0 + i] + 1;
            seqs[2 * i] = r;
            seqs[2 * i + 1] = L;
            pool_rows[i] = r + pool[i0 + i];
            s->hrow0[i] = r;
            s->hlen[i] = L;
            s->hpool[i] = pool[i0 + i];
            for (int p = 0; p < L; p++, r++) {
                tab[2 * r] = row[p];
                tab[2 * r + 1] = p;
            }
        }
        if ((st = text_chunk(s, m, nb, rows, max_len, slot, i0, opt, &tm, err))) break;
        if (prev_slot >= 0 &&
            (st = finish(s, prev_slot, out + E * prev_i0, (size_t)prev_nb * E, err)))
            break;
        prev_slot = slot;
        prev_i0 = i0;
        prev_nb = nb;
        i0 += nb;
    }
    if (!st && prev_slot >= 0)
        st = finish(s, prev_slot, out + E * prev_i0, (size_t)prev_nb * E, err);
    free(tm.host);
    free(tm.host2);
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
        for (int p = 0; p < len; p++) {
            int32_t id = ids[(size_t)i * len + p];
            if (id < 0 || id >= m->cfg.vocab_size)
                return clip_fail(err, CLIP_ERR_ARG,
                                 "CUDA backend: token id %d at row %d, position %d is outside the "
                                 "vocabulary [0, %d)", (int)id, i, p, m->cfg.vocab_size);
        }
    }
    clip_status st = lock_state(s, err);
    if (st) return st;
    st = encode_texts(s, m, ids, n, len, pool, opt, out, err);
    return unlock_state(s, st, err);
}
