/* bench.h — the pieces of `make bench`; each prints its own figures. */
#ifndef CLIP_BENCH_H
#define CLIP_BENCH_H

/* shared: the ../shared folder; synth_dir: the folder holding generated synthetic models. */
void bench_model(const char *shared, const char *synth_dir);
void bench_tokenizer(const char *shared);
void bench_images(const char *shared);
void bench_scorer(const char *shared, const char *synth_dir, const char *build_dir);
void bench_cuda(const char *synth_dir); /* CUDA vs CPU backend (skips without a GPU) */

double bench_now(void);

#endif
