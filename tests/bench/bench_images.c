/* bench_images.c — single-thread speed of the image pipeline: decode, then resize + crop +
 * normalise, for the golden 1024x859 PNG and a JPEG photo. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Hostile headers (the sizes of test_image.c's image_errors::huge_declared_sizes) are refused
 * from the header alone: microseconds, whatever the size they claim. */
static void bench_hostile(void) {
    uint8_t bmp[54] = {'B', 'M'};
    bmp[10] = 54;
    bmp[14] = 40;
    uint32_t big = 100000;
    memcpy(bmp + 18, &big, 4);
    memcpy(bmp + 22, &big, 4);
    bmp[26] = 1;
    bmp[28] = 24;
    static const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0, 0,
                                  ',', 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, ';'};
    static const uint8_t webp[] = {'R', 'I', 'F', 'F', 22, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P',
                                   '8', 'X', 10, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0x3F, 0, 0xFF, 0x3F, 0};
    const struct { const char *name; const uint8_t *data; size_t len; } files[] = {
        {"100000x100000 BMP", bmp, sizeof bmp},
        {"65535x65535 GIF", gif, sizeof gif},
        {"16384x16384 WebP", webp, sizeof webp},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        double worst = 0, total = 0;
        int runs = 0, refused = 1;
        for (; runs < 200; runs++) {
            clip_image img;
            clip_error e = {0};
            double t0 = bench_now();
            clip_status st = clip_image_decode_memory(files[i].data, files[i].len, NULL, &img, &e);
            double dt = bench_now() - t0;
            if (st != CLIP_ERR_LIMIT) {
                refused = 0;
                if (!st) clip_image_free(&img);
                break;
            }
            total += dt;
            if (dt > worst) worst = dt;
        }
        if (refused)
            printf("images: hostile header %-18s refused in %6.1f us (worst %6.1f us, %d runs)\n",
                   files[i].name, 1e6 * total / runs, 1e6 * worst, runs);
        else
            printf("images: hostile header %s: NOT refused by the limit\n", files[i].name);
    }
}

void bench_images(const char *shared) {
    bench_hostile();
    if (!shared || !*shared) {
        printf("images: skipped (shared data folder not found)\n");
        return;
    }
    bench_one(shared, "2.png");
    bench_one(shared, "cake.jpg");
    bench_one(shared, "giraffe.jpg");
}
