/* bench.c — `make bench`: speed figures of every stage, each with the ratio that matters
 * measured in the same run (the machine is shared and noisy: compare ratios, not seconds). */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    const char *shared = getenv("CLIPEVAL_SHARED");
    const char *synth = getenv("CLIPEVAL_SYNTH_DIR");
    const char *build = getenv("CLIPEVAL_BUILD");
    if (!shared || !*shared) {
        fprintf(stderr, "bench: CLIPEVAL_SHARED is not set (run it through `make bench`)\n");
        return 2;
    }
    if (!synth || !*synth) synth = "build/models";
    if (!build || !*build) build = "build";
    /* CLIPEVAL_BENCH=model,tokenizer,images,scorer,cuda picks parts (default: all) */
    const char *pick = getenv("CLIPEVAL_BENCH");
#define WANT(name) (!pick || !*pick || strstr(pick, name))
    if (WANT("model")) bench_model(shared, synth);
    if (WANT("tokenizer")) bench_tokenizer(shared);
    if (WANT("images")) bench_images(shared);
    if (WANT("scorer")) bench_scorer(shared, synth, build);
    if (WANT("cuda")) bench_cuda(synth);
#undef WANT
    return 0;
}
