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

void bench_model(const char *shared, const char *synth_dir) {
    (void)shared;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/vitb32-synth", synth_dir);
    printf("== model: ViT-B/32 (synthetic weights, %s), %d threads ==\n", dir, BENCH_THREADS);
    clip_model_options o;
    clip_model_options_init(&o);
    o.n_threads = BENCH_THREADS;
    clip_model *m;
    clip_error e = {0};
    double t0 = bench_now();
    if (clip_model_load(dir, &o, &m, &e)) {
        printf("bench_model: skipped: %s\n", e.msg);
        return;
    }
    double load_s = bench_now() - t0;
    const clip_model_info *info = clip_model_get_info(m);
    int S = info->image_size, E = info->embed_dim;
    size_t per = (size_t)3 * S * S;
    int maxb = 32;
    float *px = malloc(sizeof(float) * per * maxb), *out = malloc(sizeof(float) * E * 256);
    for (size_t i = 0; i < per * maxb; i++) px[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1;
    double gf_img = image_flops(info) / 1e9;
    printf("model load (mmap, F32 zero-copy)   %8.3f s\n", load_s);
    printf("image cost                         %8.2f GFLOP/image\n", gf_img);
    printf("(each figure: best of N calls, each call interleaved with a 1536^3 sgemm ceiling sample)\n");
    int batches[2] = {1, 32}, reps[2] = {20, 5};
    for (int k = 0; k < 2; k++) {
        job j = {m, px, NULL, batches[k], 0, out};
        timing t = measure(&j, reps[k]);
        double r = batches[k] / t.call_s;
        printf("images/s  batch %-3d                %8.2f   model %6.1f GFLOP/s, sgemm ceiling %6.1f: "
               "ratio %.3f\n", batches[k], r, r * gf_img, t.ceiling_gflops,
               r * gf_img / t.ceiling_gflops);
    }
    int32_t *ids = malloc(sizeof(int32_t) * 64 * 77);
    for (int lens = 0; lens < 2; lens++) {
        int L = lens == 0 ? 12 : 77;
        for (int b = 0; b < 64; b++)
            for (int p = 0; p < 77; p++)
                ids[b * 77 + p] = p == 0 ? 49406 : (p < L - 1 ? 320 + (b * 31 + p * 7) % 40000
                                                              : 49407);
        job j = {m, NULL, ids, 64, 77, out};
        timing t = measure(&j, 5);
        double r = 64 / t.call_s, gf = text_flops(info, L) / 1e9;
        printf("texts/s   batch 64, %2d tokens      %8.1f   model %6.1f GFLOP/s, sgemm ceiling %6.1f: "
               "ratio %.3f\n", L, r, r * gf, t.ceiling_gflops, r * gf / t.ceiling_gflops);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS                           %8.1f MiB (weights are mmapped: the 605 MB file counts once)\n",
           ru.ru_maxrss / 1024.0);
    free(ids);
    free(px);
    free(out);
    clip_model_free(m);
}
