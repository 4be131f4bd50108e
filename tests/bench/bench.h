/* bench.h — the pieces of `make bench`; each prints its own figures. */
#ifndef CLIP_BENCH_H
#define CLIP_BENCH_H

#include "clip.h"

/* shared: the ../shared folder; synth_dir: the folder holding generated synthetic models. */
void bench_model(const char *shared, const char *synth_dir);
void bench_tokenizer(const char *shared);
void bench_images(const char *shared);
void bench_scorer(const char *shared, const char *synth_dir, const char *build_dir);
void bench_cuda(const char *synth_dir); /* CUDA vs CPU backend (skips without a GPU) */

/* bench_util.c, shared with bench_peers (peers.c) */
double bench_now(void); /* CLOCK_MONOTONIC seconds */
/* GFLOP/s of one n^3 sgemm (best of 2 after a warm-up call), the ceiling models are compared
 * with; 0 when the matrices cannot be allocated. */
double sgemm_ceiling(int n);
/* FLOPs (multiply-add = 2) of one image through the vision tower + projection, and of one text
 * of L tokens through the text tower + projection. */
double image_flops(const clip_model_info *i);
double text_flops(const clip_model_info *i, int L);

#endif
