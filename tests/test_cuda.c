/* test_cuda.c — the CUDA backend (make CUDA=1) against the fp64 golden data and against the CPU
 * backend, batch invariance, error paths and concurrent use.
 *
 * Built without CUDA, the suite is one skipped test. Built with CUDA on a machine without a
 * usable GPU (CI), every GPU test skips with the reason from clip_cuda_available — also under
 * CI=true, where no GPU is expected — and only the device-selection test runs. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include "clip.h"
#include "json.h"
#include "model_internal.h"
#include "testutil.h"
#include "util.h"

#ifndef CLIP_WITH_CUDA

Test(cuda, not_built) {
    cr_skip_test("CUDA backend not built: rebuild with `make CUDA=1` (needs nvcc) to test it");
}

#else

#include "backend.h"

/* GPU vs CPU backend, max abs difference over embeddings and features (both towers). */
#define CPU_TOL 1e-5
/* The same item alone or in a batch: cuBLAS may pick another kernel (summation order) for
 * another row count, so this is a bound, not bit equality; the CPU test uses the same. */
#define BATCH_TOL 1e-6

/* ------------------------------------------------------------------ helpers */

static void gpu_or_skip(void) {
    char why[512];
    if (!clip_cuda_available(why, sizeof why)) {
        fprintf(stderr, "[cuda] skipped: %s\n", why);
        cr_skip_test("no usable CUDA device: %s", why);
    }
}

static clip_model *load_on(const char *dir, clip_device dev) {
    clip_model_options o;
    clip_model_options_init(&o);
    o.device = dev;
    clip_model *m = NULL;
    clip_error e = {0};
    clip_status st = clip_model_load(dir, &o, &m, &e);
    cr_assert_eq(st, CLIP_OK, "loading %s on %s: %s", dir, dev == CLIP_DEVICE_CUDA ? "cuda" : "cpu",
                 e.msg);
    return m;
}

static void tiny_dir(char *out, size_t cap) { tu_shared_path(out, cap, "golden/models/tiny-synth"); }

static void check_cpu(const char *label, const char *name, const float *gpu, const float *cpu,
                      size_t count) {
    double d = gd_max_abs_diff(gpu, cpu, count);
    fprintf(stderr, "[cuda] vs cpu %s %s: max |cuda - cpu| %.3g (limit %.0e)\n", label, name, d,
            CPU_TOL);
    cr_expect(d <= CPU_TOL, "%s %s: CUDA and CPU differ by %.3g", label, name, d);
}

/* Embeddings and features of n images / texts on one model, into malloc'd buffers. */
static void encode_images2(clip_model *m, const float *px, int n, float **emb, float **feat) {
    int E = clip_model_get_info(m)->embed_dim;
    *emb = malloc(sizeof(float) * (size_t)n * E);
    *feat = malloc(sizeof(float) * (size_t)n * E);
    cr_assert(*emb && *feat);
    clip_error e = {0};
    clip_encode_options fo = {CLIP_EMBED_FEATURES, NULL, NULL};
    cr_assert_eq(clip_encode_images(m, px, n, NULL, *emb, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(clip_encode_images(m, px, n, &fo, *feat, &e), CLIP_OK, "%s", e.msg);
}

static void encode_texts2(clip_model *m, const int32_t *ids, int n, float **emb, float **feat) {
    int E = clip_model_get_info(m)->embed_dim;
    *emb = malloc(sizeof(float) * (size_t)n * E);
    *feat = malloc(sizeof(float) * (size_t)n * E);
    cr_assert(*emb && *feat);
    clip_error e = {0};
    clip_encode_options fo = {CLIP_EMBED_FEATURES, NULL, NULL};
    cr_assert_eq(clip_encode_texts(m, ids, n, 77, NULL, *emb, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(clip_encode_texts(m, ids, n, 77, &fo, *feat, &e), CLIP_OK, "%s", e.msg);
}

/* Golden and CPU comparisons of one model folder; px = NULL skips the images. */
static void check_model(const char *label, const char *dir, const char *gdir, const float *px,
                        int n_img) {
    int n_txt;
    int32_t *ids = tu_golden_input_ids(&n_txt);
    clip_model *g = load_on(dir, CLIP_DEVICE_CUDA), *c = load_on(dir, CLIP_DEVICE_CPU);
    fprintf(stderr, "[cuda] %s on %s\n", label, clip_model_get_info(g)->device);
    cr_assert(!strncmp(clip_model_get_info(g)->device, "cuda:", 5), "device %s",
              clip_model_get_info(g)->device);
    size_t E = (size_t)clip_model_get_info(g)->embed_dim;
    float *ge, *gf, *ce, *cf;
    if (px) {
        encode_images2(g, px, n_img, &ge, &gf);
        tu_check_golden("[cuda] golden", gdir, "image_embeds", ge, (size_t)n_img * E);
        tu_check_golden("[cuda] golden", gdir, "image_features", gf, (size_t)n_img * E);
        encode_images2(c, px, n_img, &ce, &cf);
        check_cpu(label, "image_embeds", ge, ce, (size_t)n_img * E);
        check_cpu(label, "image_features", gf, cf, (size_t)n_img * E);
        free(ge);
        free(gf);
        free(ce);
        free(cf);
    }
    encode_texts2(g, ids, n_txt, &ge, &gf); /* 303 texts: two chunks of at most 256 */
    tu_check_golden("[cuda] golden", gdir, "text_embeds", ge, (size_t)n_txt * E);
    tu_check_golden("[cuda] golden", gdir, "text_features", gf, (size_t)n_txt * E);
    encode_texts2(c, ids, n_txt, &ce, &cf);
    check_cpu(label, "text_embeds", ge, ce, (size_t)n_txt * E);
    check_cpu(label, "text_features", gf, cf, (size_t)n_txt * E);
    free(ge);
    free(gf);
    free(ce);
    free(cf);
    free(ids);
    clip_model_free(g);
    clip_model_free(c);
}

/* ------------------------------------------------------------------ device selection */

/* Runs with or without a GPU: --device cuda either works or fails with the reason, and auto
 * lands on the GPU when there is one, else on the CPU. */
Test(cuda, device_selection) {
    char dir[4096], why[512];
    tiny_dir(dir, sizeof dir);
    int have = clip_cuda_available(why, sizeof why);
    clip_model_options o;
    clip_model_options_init(&o);
    clip_model *m = NULL;
    clip_error e = {0};
    o.device = CLIP_DEVICE_CUDA;
    clip_status st = clip_model_load(dir, &o, &m, &e);
    if (have) {
        cr_assert_eq(st, CLIP_OK, "%s", e.msg);
        cr_expect(!strncmp(clip_model_get_info(m)->device, "cuda:", 5), "device %s",
                  clip_model_get_info(m)->device);
        fprintf(stderr, "[cuda] device: %s\n", clip_model_get_info(m)->device);
        clip_model_free(m);
    } else {
        cr_expect_eq(st, CLIP_ERR_DEVICE, "loading on cuda without a GPU: status %d", st);
        cr_expect_null(m);
        cr_expect(strstr(e.msg, why) != NULL, "message '%s' lacks the reason '%s'", e.msg, why);
        fprintf(stderr, "[cuda] no GPU: %s\n", e.msg);
    }
    o.device = CLIP_DEVICE_AUTO;
    m = NULL;
    cr_assert_eq(clip_model_load(dir, &o, &m, &e), CLIP_OK, "auto: %s", e.msg);
    const char *dev = clip_model_get_info(m)->device;
    if (have)
        cr_expect(!strncmp(dev, "cuda:", 5), "auto with a GPU chose %s", dev);
    else
        cr_expect_str_eq(dev, "cpu", "auto without a GPU chose %s", dev);
    clip_model_free(m);
}

/* ------------------------------------------------------------------ accuracy */

Test(cuda, tiny_golden_and_cpu) {
    gpu_or_skip();
    char dir[4096], gdir[4096];
    npy_array a;
    tu_tiny_golden(dir, sizeof dir, gdir, sizeof gdir, &a);
    check_model("tiny-synth", dir, gdir, a.data, (int)a.shape[0]);
    npy_free(&a);
}

Test(cuda, vitb32_golden_and_cpu, .timeout = 600) {
    gpu_or_skip();
    char dir[4096], gdir[4096];
    tu_synth_dir(dir, sizeof dir, "vitb32-synth");
    tu_shared_path(gdir, sizeof gdir, "golden/embeddings/vitb32-synth");
    int n;
    float *px = tu_vitb32_pixels(&n);
    check_model("vitb32-synth", dir, gdir, px, n);
    free(px);
}

/* ------------------------------------------------------------------ batch invariance */

Test(cuda, vitb32_batch_invariance, .timeout = 600) {
    gpu_or_skip();
    char dir[4096];
    tu_synth_dir(dir, sizeof dir, "vitb32-synth");
    int n;
    float *px = tu_vitb32_pixels(&n);
    cr_assert(n >= 7);
    clip_model *m = load_on(dir, CLIP_DEVICE_CUDA);
    int E = clip_model_get_info(m)->embed_dim;
    size_t per = 3 * 224 * 224;
    clip_error e = {0};
    float *batch = malloc(sizeof(float) * (size_t)n * E), alone[1024];
    cr_assert_eq(clip_encode_images(m, px, n, NULL, batch, &e), CLIP_OK, "%s", e.msg);
    double worst = 0;
    for (int i = 0; i < 7; i++) {
        cr_assert_eq(clip_encode_images(m, px + per * i, 1, NULL, alone, &e), CLIP_OK, "%s", e.msg);
        double d = gd_max_abs_diff(alone, batch + (size_t)i * E, (size_t)E);
        if (d > worst) worst = d;
        cr_expect(d <= BATCH_TOL, "image %d: alone vs in a batch of %d differ by %.3g", i, n, d);
    }
    fprintf(stderr, "[cuda] images alone vs batch of %d: max diff %.3g\n", n, worst);
    /* 300 images = chunks of 256 + 44 through both staging slots: item i is image i % n */
    int big = 300;
    float *bpx = malloc(sizeof(float) * per * (size_t)big), *bout = malloc(sizeof(float) * big * E);
    cr_assert(bpx && bout);
    for (int i = 0; i < big; i++) memcpy(bpx + per * i, px + per * (i % n), sizeof(float) * per);
    cr_assert_eq(clip_encode_images(m, bpx, big, NULL, bout, &e), CLIP_OK, "%s", e.msg);
    worst = 0;
    for (int i = 0; i < big; i++) {
        double d = gd_max_abs_diff(bout + (size_t)i * E, batch + (size_t)(i % n) * E, (size_t)E);
        if (d > worst) worst = d;
    }
    fprintf(stderr, "[cuda] images batch of %d vs batch of %d: max diff %.3g\n", big, n, worst);
    cr_expect(worst <= BATCH_TOL, "batch of %d vs %d: %.3g", big, n, worst);
    free(bpx);
    free(bout);
    free(batch);
    free(px);

    int nt;
    int32_t *ids = tu_golden_input_ids(&nt);
    int pick[7] = {0, 63, 64, 120, 200, 250, 280}; /* mixed lengths, one truncated to 77 */
    int32_t b[7 * 77];
    for (int i = 0; i < 7; i++) memcpy(b + i * 77, ids + pick[i] * 77, sizeof(int32_t) * 77);
    float tb[7 * 1024];
    cr_assert_eq(clip_encode_texts(m, b, 7, 77, NULL, tb, &e), CLIP_OK, "%s", e.msg);
    worst = 0;
    for (int i = 0; i < 7; i++) {
        cr_assert_eq(clip_encode_texts(m, b + i * 77, 1, 77, NULL, alone, &e), CLIP_OK, "%s",
                     e.msg);
        double d = gd_max_abs_diff(alone, tb + (size_t)i * E, (size_t)E);
        if (d > worst) worst = d;
        cr_expect(d <= BATCH_TOL, "text %d: alone vs in a batch of 7 differ by %.3g", pick[i], d);
    }
    /* padding to 77 or not changes nothing: the pooled token only sees its prefix */
    int len0 = clip_text_pool_index(m, ids, 77) + 1;
    cr_assert_eq(clip_encode_texts(m, ids, 1, len0, NULL, alone, &e), CLIP_OK, "%s", e.msg);
    double dp = gd_max_abs_diff(alone, tb, (size_t)E);
    fprintf(stderr, "[cuda] texts alone vs batch of 7: max diff %.3g; unpadded vs padded %.3g\n",
            worst, dp);
    cr_expect(dp <= BATCH_TOL, "unpadded vs padded text: %.3g", dp);
    free(ids);
    clip_model_free(m);
}

/* ------------------------------------------------------------------ errors */

/* Counts the reported intermediates and their values. */
static void trace_count(void *user, const char *name, int item, const float *data, int rows,
                        int cols) {
    (void)name, (void)item, (void)data;
    size_t *c = user;
    c[0]++;
    c[1] += (size_t)rows * (size_t)cols;
}

Test(cuda, errors_leave_the_model_usable) {
    gpu_or_skip();
    char dir[4096];
    tiny_dir(dir, sizeof dir);
    clip_model *m = load_on(dir, CLIP_DEVICE_CUDA);
    const clip_model_info *info = clip_model_get_info(m);
    int E = info->embed_dim;
    int32_t ids[77] = {49406, 320, 1125, 539, 320, 2368, 49407};
    float ref[1024], out[1024];
    clip_error e = {0};
    cr_assert_eq(clip_encode_texts(m, ids, 1, 77, NULL, ref, &e), CLIP_OK, "%s", e.msg);

    ids[3] = info->vocab_size; /* rejected on the host, before anything reaches the GPU */
    cr_expect_eq(clip_encode_texts(m, ids, 1, 77, NULL, out, &e), CLIP_ERR_ARG);
    fprintf(stderr, "[cuda] id out of range: %s\n", e.msg);
    ids[3] = -1;
    cr_expect_eq(clip_encode_texts(m, ids, 1, 77, NULL, out, &e), CLIP_ERR_ARG);
    ids[3] = 539;
    int32_t long_ids[100] = {49406, 320, 49407};
    cr_expect_eq(clip_encode_texts(m, long_ids, 1, info->context_length + 1, NULL, out, &e),
                 CLIP_ERR_ARG);
    /* Tracing on the GPU: the same intermediates as on the CPU, and the traced result is the
     * untraced one bit for bit (the observer only reads). */
    size_t gcount[2] = {0, 0}, ccount[2] = {0, 0};
    clip_encode_options tr = {0, trace_count, gcount};
    float traced[1024];
    cr_expect_eq(clip_encode_texts(m, ids, 1, 77, &tr, traced, &e), CLIP_OK, "%s", e.msg);
    cr_expect_eq(memcmp(ref, traced, sizeof(float) * (size_t)E), 0, "tracing changed the result");
    clip_model *c = load_on(dir, CLIP_DEVICE_CPU);
    tr.trace_user = ccount;
    cr_expect_eq(clip_encode_texts(c, ids, 1, 77, &tr, traced, &e), CLIP_OK, "%s", e.msg);
    cr_expect(gcount[0] == ccount[0] && gcount[1] == ccount[1],
              "cuda traced %zu tensors (%zu values), cpu %zu (%zu)", gcount[0], gcount[1],
              ccount[0], ccount[1]);
    clip_model_free(c);
    cr_expect_eq(clip_encode_texts(m, ids, 0, 77, NULL, out, &e), CLIP_OK);

    /* the failed calls left nothing behind: the same call gives the same bits */
    cr_assert_eq(clip_encode_texts(m, ids, 1, 77, NULL, out, &e), CLIP_OK, "%s", e.msg);
    cr_expect_eq(memcmp(ref, out, sizeof(float) * (size_t)E), 0,
                 "result changed after rejected calls");
    clip_model_free(m);
}

/* ------------------------------------------------------------------ threads */

typedef struct job {
    clip_model *m;
    const int32_t *ids;
    int n, rounds;
    float *out;
    clip_status st;
    char msg[1024];
} job;

static void *run_job(void *p) {
    job *j = p;
    clip_error e = {0};
    j->st = CLIP_OK;
    for (int r = 0; r < j->rounds && !j->st; r++)
        j->st = clip_encode_texts(j->m, j->ids, j->n, 77, NULL, j->out, &e);
    if (j->st) snprintf(j->msg, sizeof j->msg, "%s", e.msg);
    return NULL;
}

/* One model used from four threads at once gives what one thread gives, bit for bit (the
 * workspace is per model; calls are serialised). */
Test(cuda, threads_share_a_model, .timeout = 300) {
    gpu_or_skip();
    char dir[4096];
    tiny_dir(dir, sizeof dir);
    int n;
    int32_t *ids = tu_golden_input_ids(&n);
    clip_model *m = load_on(dir, CLIP_DEVICE_CUDA);
    int E = clip_model_get_info(m)->embed_dim;
    float *ref = malloc(sizeof(float) * (size_t)n * E);
    clip_error e = {0};
    cr_assert_eq(clip_encode_texts(m, ids, n, 77, NULL, ref, &e), CLIP_OK, "%s", e.msg);
    enum { NJ = 4 };
    job jobs[NJ];
    pthread_t th[NJ];
    for (int t = 0; t < NJ; t++) {
        memset(&jobs[t], 0, sizeof jobs[t]);
        jobs[t].m = m;
        jobs[t].ids = ids;
        jobs[t].n = n;
        jobs[t].rounds = 3;
        jobs[t].out = malloc(sizeof(float) * (size_t)n * E);
        cr_assert_eq(pthread_create(&th[t], NULL, run_job, &jobs[t]), 0);
    }
    for (int t = 0; t < NJ; t++) {
        pthread_join(th[t], NULL);
        cr_expect_eq(jobs[t].st, CLIP_OK, "thread %d: %s", t, jobs[t].msg);
        cr_expect_eq(memcmp(jobs[t].out, ref, sizeof(float) * (size_t)n * E), 0,
                     "thread %d: result differs from the single-thread one (max %.3g)", t,
                     gd_max_abs_diff(jobs[t].out, ref, (size_t)n * E));
        free(jobs[t].out);
    }
    fprintf(stderr, "[cuda] %d threads x 3 calls on one model: identical results\n", NJ);
    free(ref);
    free(ids);
    clip_model_free(m);
}

#endif /* CLIP_WITH_CUDA */
