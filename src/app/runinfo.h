/* runinfo.h — what the CPU side runs on, told to the user: the BLAS and its kernel family, the
 * thread counts (clipeval info and the score summary), and the engine's warning when OpenBLAS
 * picked kernels far below the CPU (clip_blas_advice), printed once. */
#ifndef CLIP_RUNINFO_H
#define CLIP_RUNINFO_H

#include <stddef.h>
#include <stdio.h>

#include "clip.h"

/* "OpenBLAS 0.3.21, core Haswell, 2 BLAS threads, 2 OpenMP threads, 2 cores, CPU AVX2 FMA". */
int runinfo_line(const clip_runtime_info *ri, char *buf, size_t cap);
/* "clipeval: warning: <the warning>" when there is one; nothing otherwise. Returns 1 when it
 * printed. */
int runinfo_warn(const clip_runtime_info *ri, FILE *log);

#endif
