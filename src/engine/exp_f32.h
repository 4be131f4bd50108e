/* exp_f32.h — e^x in float, the one definition the CPU backend (backend_cpu.c) and the CUDA
 * backend (backend_cuda.cu, built with -fmad=false) both compile, so that quick_gelu gives the
 * same bits on either. The includer defines CLIP_EXP_F32_QUALIFIERS (e.g. `static inline`,
 * or `__device__ static inline`).
 *
 * For x in [-87, 88.3], within about 1 ulp (Cephes expf: Cody-Waite reduction and a degree-6
 * polynomial), written without calls or branches so that the loops using it vectorise. The
 * activations are float32 in PyTorch too (vectorised Sleef expf, 1 ulp). */
#ifndef CLIP_EXP_F32_H
#define CLIP_EXP_F32_H

#include <stdint.h>

CLIP_EXP_F32_QUALIFIERS float exp_f32(float x) {
    /* clamp to [-87, 88.3] with bit masks: a ?: or fminf here stops GCC from vectorising
     * without -ffast-math; NaN stays NaN */
    union {
        float f;
        int32_t i;
    } ux = {x}, lo = {-87.0f}, hi = {88.3f};
    int32_t mlo = -(int32_t)(x < -87.0f), mhi = -(int32_t)(x > 88.3f);
    ux.i = (ux.i & ~mlo) | (lo.i & mlo);
    ux.i = (ux.i & ~mhi) | (hi.i & mhi);
    x = ux.f;
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick: exact for |n| < 2^22 */
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale = {((int32_t)n + 127) << 23};
    return p * scale.f;
}

#endif
