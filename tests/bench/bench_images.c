/* bench_images.c — single-thread speed of the image pipeline: decode, then resize + crop +
 * normalise, for the golden 1024x859 PNG and a JPEG photo. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "clip.h"
#include "util.h"

/* Times decode and preprocess separately, repeating for about a second (at least 5 runs). */
static void bench_one(const char *shared, const char *file) {
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/images/%s", shared, file);
    char *data;
    size_t len;
    clip_error e = {0};
    if (clip_read_file(path, 0, &data, &len, &e)) {
        printf("images: %s: skipped (%s)\n", file, e.msg);
        return;
    }
    clip_image_config cfg;
    clip_image_config_default(&cfg);
    float *out = malloc(sizeof(float) * 3 * (size_t)cfg.crop_height * cfg.crop_width);
    if (!out) {
        free(data);
        return;
    }
    double t_dec = 0, t_pre = 0;
    int runs = 0, w = 0, h = 0;
    double start = bench_now();
    while (runs < 5 || bench_now() - start < 1.0) {
        clip_image img;
        double t0 = bench_now();
        if (clip_image_decode_memory(data, len, NULL, &img, &e)) {
            printf("images: %s: %s\n", file, e.msg);
            break;
        }
        double t1 = bench_now();
        if (clip_image_preprocess(&img, &cfg, NULL, out, NULL, &e)) {
            printf("images: %s: %s\n", file, e.msg);
            clip_image_free(&img);
            break;
        }
        double t2 = bench_now();
        w = img.width;
        h = img.height;
        clip_image_free(&img);
        t_dec += t1 - t0;
        t_pre += t2 - t1;
        runs++;
    }
    if (runs)
        printf("images: %-11s %4dx%-4d  decode %7.2f ms  resize+crop+normalise %6.2f ms  "
               "total %7.2f ms/image  (%d runs, 1 thread)\n",
               file, w, h, 1e3 * t_dec / runs, 1e3 * t_pre / runs, 1e3 * (t_dec + t_pre) / runs,
               runs);
    free(out);
    free(data);
}

void bench_images(const char *shared) {
    if (!shared || !*shared) {
        printf("images: skipped (shared data folder not found)\n");
        return;
    }
    bench_one(shared, "2.png");
    bench_one(shared, "cake.jpg");
    bench_one(shared, "giraffe.jpg");
}
