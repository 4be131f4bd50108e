/* cpu.h — CPUID features, for the kernel dispatch and clip_runtime_info. */
#ifndef CLIP_CPU_H
#define CLIP_CPU_H

typedef struct clip_cpu_features {
    int avx2, fma, avx512f, avx512bw, avx512vl, avx512bf16;
} clip_cpu_features;

/* Asks the CPU (and the OS, through XGETBV, whether it saves the vector registers). All zero on
 * other architectures. */
clip_cpu_features clip_cpu_detect(void);

#endif
