/* libFuzzer target: preprocessor_config.json, written to a private folder and loaded; a
 * loaded config (within small sizes) then preprocesses a fixed 7x5 image. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"

static char g_dir[64]; /* the fuzzer's private folder, made once */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/fuzz-ppcfg-XXXXXX");
        if (!mkdtemp(g_dir)) abort();
    }
    char p[128];
    snprintf(p, sizeof p, "%s/preprocessor_config.json", g_dir);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    clip_image_config cfg;
    clip_error e;
    if (clip_image_config_load(g_dir, &cfg, &e) != CLIP_OK) return 0;
    if (cfg.crop_height > 64 || cfg.crop_width > 64 || cfg.shortest_edge > 64) return 0;
    uint8_t rgb[7 * 5 * 3];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)(i * 37);
    clip_image img = {7, 5, rgb};
    float *out = malloc(sizeof(float) * 3 * (size_t)(cfg.crop_height + 1) * (size_t)(cfg.crop_width + 1));
    if (!out) return 0;
    clip_decode_options o;
    clip_decode_options_init(&o);
    clip_image resized = {0, 0, NULL};
    clip_image_preprocess(&img, &cfg, &o, out, &resized, &e);
    clip_image_free(&resized);
    free(out);
    return 0;
}
