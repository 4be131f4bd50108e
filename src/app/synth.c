/* synth.c — `clipeval synth`: deterministic synthetic CLIP weights (golden/SYNTH_WEIGHTS.md, version 1).
 * Every operation is exact or correctly rounded, so these are bit-identical to the tensors
 * the golden outputs were computed with. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth.h"
#include "util.h"

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int64_t spec_count(const clip_tensor_info *s) {
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
    return n;
}

/* Fills out[0..count) with the tensor's values. */
static void synth_values(const clip_tensor_info *s, uint64_t seed, float *out, int64_t count) {
    if (s->role == CLIP_TENSOR_SCALAR) {
        out[0] = (float)log(100.0);
        return;
    }
    uint64_t state = seed ^ clip_fnv1a64(s->name, strlen(s->name));
    double lin = s->role == CLIP_TENSOR_LINEAR ? sqrt(3.0 / (double)s->fan_in) : 0.0;
    for (int64_t j = 0; j < count; j++) {
        uint64_t k = splitmix64(&state) >> 40;
        double r = (double)k * (1.0 / 8388608.0) - 1.0; /* k * 2^-23 - 1, exact */
        double v;
        switch (s->role) {
        case CLIP_TENSOR_NORM: v = 1.0 + r / 16.0; break;
        case CLIP_TENSOR_BIAS: v = r / 64.0; break;
        case CLIP_TENSOR_EMBEDDING: v = r / 32.0; break;
        default: v = lin * r; break;
        }
        out[j] = (float)v;
    }
}

uint64_t synth_checksum(const clip_tensor_info *spec, uint64_t seed) {
    int64_t n = spec_count(spec);
    float *buf = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!buf) return 0;
    synth_values(spec, seed, buf, n);
    uint64_t sum = 0;
    for (int64_t j = 0; j < n; j++) {
        uint32_t bits;
        memcpy(&bits, &buf[j], 4);
        sum += (uint64_t)bits * (uint64_t)(2 * j + 1);
    }
    free(buf);
    return sum;
}

clip_status synth_write(const char *config_path, uint64_t seed, const char *path,
                        clip_error *err) {
    clip_tensor_info *specs;
    size_t n;
    clip_status st = clip_config_tensors(config_path, &specs, &n, err);
    if (st) return st;
    clip_buf hdr = {0};
    clip_buf_puts(&hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    int64_t max_count = 1;
    for (size_t i = 0; i < n; i++) {
        int64_t c = spec_count(&specs[i]);
        if (c > max_count) max_count = c;
        clip_buf_printf(&hdr, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", specs[i].name);
        for (int d = 0; d < specs[i].ndim; d++)
            clip_buf_printf(&hdr, "%s%lld", d ? "," : "", (long long)specs[i].shape[d]);
        clip_buf_printf(&hdr, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                        (unsigned long long)(off + (uint64_t)c * 4));
        off += (uint64_t)c * 4;
    }
    clip_buf_putc(&hdr, '}');
    while (hdr.len % 8) clip_buf_putc(&hdr, ' ');
    float *buf = malloc((size_t)max_count * sizeof(float));
    if (hdr.oom || !buf) {
        free(buf);
        clip_free(specs);
        clip_buf_free(&hdr);
        return clip_fail(err, CLIP_ERR_NOMEM, "synth: out of memory");
    }
    /* Write to a temporary name and rename: an interrupted run never leaves a short file
     * where a complete one is expected. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = clip_fail(err, CLIP_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));
    int ok = fwrite(lenbuf, 1, 8, f) == 8 && fwrite(hdr.data, 1, hdr.len, f) == hdr.len;
    for (size_t i = 0; ok && i < n; i++) {
        int64_t c = spec_count(&specs[i]);
        synth_values(&specs[i], seed, buf, c);
        ok = fwrite(buf, sizeof(float), (size_t)c, f) == (size_t)c; /* little-endian hosts */
    }
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        st = clip_fail(err, CLIP_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        remove(tmp);
    }
done:
    free(buf);
    clip_free(specs);
    clip_buf_free(&hdr);
    return st;
}
