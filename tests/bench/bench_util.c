/* bench_util.c — what every benchmark program shares: the clock, the machine's own sgemm
 * ceiling, and the FLOP count of one image or text through the model. */
#include <cblas.h>
#include <stdlib.h>
#include <time.h>

#include "bench.h"

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double sgemm_ceiling(int n) {
    float *a = malloc(sizeof(float) * (size_t)n * n), *b = malloc(sizeof(float) * (size_t)n * n),
          *c = malloc(sizeof(float) * (size_t)n * n);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return 0;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)((i * 7) % 13) / 13.0f;
        b[i] = (float)((i * 5) % 11) / 11.0f;
    }
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = bench_now() - t0;
        if (r > 0 && dt < best) best = dt; /* first run warms up the thread pool */
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * n * (double)n * n / best / 1e9;
}

double image_flops(const clip_model_info *i) {
    double T = i->vision_positions, D = i->vision_width, M = i->vision_mlp;
    double K = 3.0 * i->patch_size * i->patch_size, np = T - 1;
    double layer = 2 * T * D * D * 4 + 2 * T * D * M * 2 + 2 * 2 * T * T * D;
    return 2 * np * K * D + i->vision_layers * layer + 2 * D * i->embed_dim;
}

double text_flops(const clip_model_info *i, int L) {
    double D = i->text_width, M = i->text_mlp;
    double layer = 2 * L * D * D * 4 + 2 * L * D * M * 2 + 2 * L * (L + 1) / 2.0 * D * 2;
    return i->text_layers * layer + 2 * D * i->embed_dim;
}
