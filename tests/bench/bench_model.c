/* bench_model.c — the CLIP forward pass on ViT-B/32 (synthetic weights): images/s, texts/s,
 * and the fraction of the machine's own sgemm ceiling the model reaches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench.h"
#include "clip.h"

#define BENCH_THREADS 2

/* Best-of-`reps` timing of one call, interleaved with a sgemm ceiling sample each round: on a
 * shared, noisy machine the best times of both come from the same quiet moments, so their
 * ratio is stable even when the absolute figures are not. Returns seconds per call. */
typedef struct timing {
    double call_s, ceiling_gflops;
} timing;

typedef struct job {
    clip_model *m;
    const float *px;
    const int32_t *ids;
    int batch, len;
    float *out;
} job;

static void run_job(const job *j) {
    clip_error e = {0};
    clip_status st = j->px ? clip_encode_images(j->m, j->px, j->batch, NULL, j->out, &e)
                           : clip_encode_texts(j->m, j->ids, j->batch, j->len, NULL, j->out, &e);
    if (st) {
        fprintf(stderr, "bench: %s\n", e.msg);
        exit(1);
    }
}

static timing measure(const job *j, int reps) {
    timing t = {1e30, 0};
    run_job(j); /* warm-up: page in weights, grow the heap */
    for (int r = 0; r < reps; r++) {
        double c = sgemm_ceiling(1536);
        if (c > t.ceiling_gflops) t.ceiling_gflops = c;
        double t0 = bench_now();
        run_job(j);
        double dt = bench_now() - t0;
        if (dt < t.call_s) t.call_s = dt;
    }
    return t;
}

/* One configuration of the engine: images/s at batch 1 and 32, texts/s at 12 and 77 tokens. */
static void bench_config(const char *dir, const char *label, int threads, clip_precision prec,
                         clip_cpu_kernel kernel, const float *px, const int32_t *ids12,
                         const int32_t *ids77, float *out) {
    clip_model_options o;
    clip_model_options_init(&o);
    o.n_threads = threads;
    o.precision = prec;
    o.cpu_kernel = kernel;
    clip_model *m;
    clip_error e = {0};
    double t0 = bench_now();
    if (clip_model_load(dir, &o, &m, &e)) {
        printf("%-24s skipped: %s\n", label, e.msg);
        return;
    }
    double load_s = bench_now() - t0;
    const clip_model_info *info = clip_model_get_info(m);
    double gf_img = image_flops(info) / 1e9;
    printf("-- %s: %d threads, kernel %s, load %.2f s\n", label, threads, info->cpu_kernel, load_s);
    int batches[2] = {1, 32}, reps[2] = {20, 5};
    for (int k = 0; k < 2; k++) {
        job j = {m, px, NULL, batches[k], 0, out};
        timing t = measure(&j, reps[k]);
        double r = batches[k] / t.call_s;
        printf("   images/s  batch %-3d             %8.2f   model %6.1f GFLOP/s, sgemm ceiling %6.1f: "
               "ratio %.3f\n", batches[k], r, r * gf_img, t.ceiling_gflops,
               r * gf_img / t.ceiling_gflops);
    }
    for (int lens = 0; lens < 2; lens++) {
        int L = lens == 0 ? 12 : 77;
        job j = {m, NULL, lens == 0 ? ids12 : ids77, 64, 77, out};
        timing t = measure(&j, 5);
        double r = 64 / t.call_s, gf = text_flops(info, L) / 1e9;
        printf("   texts/s   batch 64, %2d tokens   %8.1f   model %6.1f GFLOP/s, sgemm ceiling %6.1f: "
               "ratio %.3f\n", L, r, r * gf, t.ceiling_gflops, r * gf / t.ceiling_gflops);
    }
    clip_model_free(m);
}

void bench_model(const char *shared, const char *synth_dir) {
    (void)shared;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/vitb32-synth", synth_dir);
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("== model: ViT-B/32 (synthetic weights, %s); OPENBLAS_CORETYPE=%s ==\n", dir,
           core ? core : "(unset)");
    size_t per = (size_t)3 * 224 * 224;
    int maxb = 32;
    float *px = malloc(sizeof(float) * per * maxb), *out = malloc(sizeof(float) * 1024 * 256);
    int32_t *ids12 = malloc(sizeof(int32_t) * 64 * 77), *ids77 = malloc(sizeof(int32_t) * 64 * 77);
    if (!px || !out || !ids12 || !ids77) {
        printf("bench_model: out of memory\n");
        return;
    }
    for (size_t i = 0; i < per * maxb; i++) px[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1;
    for (int b = 0; b < 64; b++)
        for (int p = 0; p < 77; p++) {
            int tok = 320 + (b * 31 + p * 7) % 40000;
            ids12[b * 77 + p] = p == 0 ? 49406 : p < 11 ? tok : 49407;
            ids77[b * 77 + p] = p == 0 ? 49406 : p < 76 ? tok : 49407;
        }
    printf("(each figure: best of N calls, each call interleaved with a 1536^3 OpenBLAS sgemm "
           "ceiling sample)\n");
    bench_config(dir, "fp32", BENCH_THREADS, CLIP_PRECISION_FP32, CLIP_CPU_KERNEL_AUTO, px, ids12,
                 ids77, out);
    bench_config(dir, "fp32, 1 thread", 1, CLIP_PRECISION_FP32, CLIP_CPU_KERNEL_AUTO, px, ids12,
                 ids77, out);
    bench_config(dir, "bf16", BENCH_THREADS, CLIP_PRECISION_BF16, CLIP_CPU_KERNEL_AUTO, px, ids12,
                 ids77, out);
    bench_config(dir, "bf16, 1 thread", 1, CLIP_PRECISION_BF16, CLIP_CPU_KERNEL_AUTO, px, ids12,
                 ids77, out);
    bench_config(dir, "fp32 on OpenBLAS sgemm", BENCH_THREADS, CLIP_PRECISION_FP32,
                 CLIP_CPU_KERNEL_OPENBLAS, px, ids12, ids77, out);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS of this process           %8.1f MiB\n", ru.ru_maxrss / 1024.0);
    free(ids12);
    free(ids77);
    free(px);
    free(out);
}
