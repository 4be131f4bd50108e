/* bench_cuda.c — the CUDA backend on ViT-B/32 (synthetic weights): images/s at batch 1, 64 and
 * 256 and texts/s for 12-token captions at batch 256, each next to the CPU backend's figure for
 * the same batch in the same run, and the largest difference between the two outputs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "clip.h"
#ifdef CLIP_WITH_CUDA
#include "backend.h"
#endif

#ifndef CLIP_WITH_CUDA

void bench_cuda(const char *synth_dir) {
    (void)synth_dir;
    printf("== cuda: skipped: built without CUDA (rebuild with `make CUDA=1`) ==\n");
}

#else

#define GPU_MIN_S 2.0 /* the GPU figures: calls repeated for at least this long */
#define CPU_MIN_S 1.0 /* the CPU figures: at least one call, repeated up to this long */

/* Items per second of `batch` images (ids == NULL) or texts; -1 after printing the error.
 * One untimed call first when warm (cuBLAS heuristics, page faults, thread pools). */
static double rate(clip_model *m, const float *px, const int32_t *ids, int batch, float *out,
                   double min_s, int warm) {
    clip_error e = {0};
    int calls = 0;
    double t0 = 0, dt = 0;
    for (int i = -(warm != 0); i < 0 || dt < min_s; i++) {
        if (i == 0) t0 = bench_now();
        clip_status st = ids ? clip_encode_texts(m, ids, batch, 77, NULL, out, &e)
                             : clip_encode_images(m, px, batch, NULL, out, &e);
        if (st) {
            printf("bench_cuda: encode failed on %s: %s\n", clip_model_get_info(m)->device, e.msg);
            return -1;
        }
        if (i >= 0) {
            calls++;
            dt = bench_now() - t0;
        }
    }
    return calls * (double)batch / dt;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= mx)) mx = d;
    }
    return mx;
}

static void line(const char *what, double g, double c, const float *go, const float *co,
                 size_t n) {
    printf("%-32s cuda %9.1f/s", what, g);
    if (c > 0)
        printf("   cpu %8.2f/s   ratio %7.1fx   max |cuda-cpu| %.2g\n", c, g / c,
               max_abs_diff(go, co, n));
    else
        printf("   cpu unavailable\n");
}

void bench_cuda(const char *synth_dir) {
    char why[512], dir[4096];
    if (!clip_cuda_available(why, sizeof why)) {
        printf("== cuda: skipped: %s ==\n", why);
        return;
    }
    snprintf(dir, sizeof dir, "%s/vitb32-synth", synth_dir);
    clip_model_options o;
    clip_model_options_init(&o);
    o.device = CLIP_DEVICE_CUDA;
    clip_model *g = NULL, *c = NULL;
    clip_error e = {0};
    double t0 = bench_now();
    if (clip_model_load(dir, &o, &g, &e)) {
        printf("== cuda: skipped: %s ==\n", e.msg);
        return;
    }
    double load_s = bench_now() - t0;
    o.device = CLIP_DEVICE_CPU;
    o.n_threads = 0; /* all cores: the fairest CPU figure */
    if (clip_model_load(dir, &o, &c, &e)) {
        printf("bench_cuda: CPU model not loaded (%s): GPU figures only\n", e.msg);
        c = NULL;
    }
    const clip_model_info *info = clip_model_get_info(g);
    int S = info->image_size, E = info->embed_dim;
    size_t per = (size_t)info->num_channels * S * S;
    printf("== cuda: ViT-B/32 (synthetic weights, %s) on %s vs CPU (%ld cores) ==\n", dir,
           info->device, sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-32s %9.3f s (load + upload + workspace)\n", "model load onto the GPU", load_s);
    float *px = malloc(sizeof(float) * per * 256);
    float *go = malloc(sizeof(float) * (size_t)E * 256), *co = malloc(sizeof(float) * (size_t)E * 256);
    int32_t *ids = malloc(sizeof(int32_t) * 256 * 77);
    if (!px || !go || !co || !ids) {
        printf("bench_cuda: out of memory\n");
        goto done;
    }
    for (size_t i = 0; i < per * 256; i++) px[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1;
    static const int batches[3] = {1, 64, 256};
    for (int k = 0; k < 3; k++) {
        int b = batches[k];
        double rg = rate(g, px, NULL, b, go, GPU_MIN_S, 1);
        if (rg < 0) goto done;
        /* big CPU batches take seconds: the batch-1 run has warmed the CPU model already */
        double rc = c ? rate(c, px, NULL, b, co, CPU_MIN_S, b == 1) : -1;
        char what[64];
        snprintf(what, sizeof what, "images  batch %3d", b);
        line(what, rg, rc, go, co, (size_t)b * E);
    }
    for (int b = 0; b < 256; b++)
        for (int p = 0; p < 77; p++)
            ids[b * 77 + p] = p == 0 ? 49406 : (p < 11 ? 320 + (b * 31 + p * 7) % 40000 : 49407);
    {
        double rg = rate(g, NULL, ids, 256, go, GPU_MIN_S, 1);
        if (rg < 0) goto done;
        double rc = c ? rate(c, NULL, ids, 256, co, CPU_MIN_S, 1) : -1;
        line("texts   batch 256, 12 tokens", rg, rc, go, co, (size_t)256 * E);
    }
    /* bf16 / fp16 on the tensor cores next to fp32 on the same GPU (the goals: >= 1.1x
     * PyTorch bf16 sdpa at batch 256; batch 1 >= 2x PyTorch) */
    {
        int32_t *full = malloc(sizeof(int32_t) * 256 * 77);
        if (!full) goto done;
        for (int b = 0; b < 256; b++)
            for (int p = 0; p < 77; p++)
                full[b * 77 + p] = p == 0 ? 49406 : p == 76 ? 49407 : 320 + (b * 31 + p * 7) % 40000;
        static const clip_precision precs[2] = {CLIP_PRECISION_BF16, CLIP_PRECISION_FP16};
        for (int k = 0; k < 2; k++) {
            clip_model_options po;
            clip_model_options_init(&po);
            po.device = CLIP_DEVICE_CUDA;
            po.precision = precs[k];
            clip_model *h = NULL;
            if (clip_model_load(dir, &po, &h, &e)) {
                printf("bench_cuda: %s not loaded: %s\n", clip_precision_name(precs[k]), e.msg);
                continue;
            }
            const char *pn = clip_precision_name(precs[k]);
            for (int j = 0; j < 3; j++) {
                int b = batches[j];
                double r = rate(h, px, NULL, b, go, GPU_MIN_S, 1);
                double r32 = rate(g, px, NULL, b, co, GPU_MIN_S, 1);
                printf("%s images batch %3d   %9.1f/s   fp32 %9.1f/s   ratio %5.2fx   max |%s-fp32| %.2g\n",
                       pn, b, r, r32, r / r32, pn, max_abs_diff(go, co, (size_t)b * E));
            }
            double r77 = rate(h, NULL, full, 256, go, GPU_MIN_S, 1);
            double r12 = rate(h, NULL, ids, 256, go, GPU_MIN_S, 1);
            printf("%s texts batch 256: 77 tokens %9.1f/s, 12 tokens %9.1f/s\n", pn, r77, r12);
            clip_model_free(h);
        }
        free(full);
    }
done:
    free(px);
    free(go);
    free(co);
    free(ids);
    clip_model_free(c);
    clip_model_free(g);
}

#endif /* CLIP_WITH_CUDA */
