/* fuzz_image.c — libFuzzer target for the image decoders and the preprocessor.
 *
 * Any byte string must give either CLIP_OK with a well-formed image or an error status with a
 * message: no crash, no leak, no sanitizer report, no unbounded time. max_pixels is small so
 * that a header claiming a big image is refused quickly; the last input byte picks the options
 * so EXIF transposition and the tall-image resize order are exercised too.
 *
 *   make fuzz && build/fuzz/fuzz_image -max_len=65536 build/fuzz-corpus tests/fuzz/corpus/image
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t flags = size ? data[size - 1] : 0;
    clip_decode_options o;
    clip_decode_options_init(&o);
    o.max_pixels = (uint64_t)1 << 20;
    o.exif_transpose = flags & 1;
    o.pillow_tall_rule = (flags >> 1) & 1;

    clip_image img;
    clip_error err;
    clip_status st = clip_image_decode_memory(data, size, &o, &img, &err);
    if (st != CLIP_OK) {
        if (err.code != st || err.msg[0] == '\0' || memchr(err.msg, '\0', sizeof err.msg) == NULL)
            abort(); /* every error carries its status and a message */
        return 0;
    }
    if (img.width < 1 || img.height < 1 || !img.rgb ||
        (uint64_t)img.width * (uint64_t)img.height > o.max_pixels)
        abort();

    /* A small model size keeps each run fast; resize, crop (and padding) all run. */
    clip_image_config cfg;
    clip_image_config_default(&cfg);
    cfg.shortest_edge = 16 + (flags >> 2 & 15);
    cfg.crop_height = 24;
    cfg.crop_width = 20;
    float out[3 * 24 * 20];
    st = clip_image_preprocess(&img, &cfg, &o, out, NULL, &err);
    if (st == CLIP_OK)
        for (size_t i = 0; i < sizeof out / sizeof out[0]; i++)
            if (!(out[i] > -10.0f && out[i] < 10.0f)) abort(); /* normalised range, no NaN */
    clip_image_free(&img);
    return 0;
}
