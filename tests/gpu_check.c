/* gpu_check.c — the CUDA backend's acceptance checks without Criterion, for a GPU machine that
 * may lack the test dependencies (tests/gpu_check.sh builds and runs it):
 *   - embeddings and features of tiny-synth and vitb32-synth against the fp64 golden data,
 *     with test_model.c's tolerance max(2 x PyTorch fp32 error, 1e-6) per array;
 *   - the same arrays against the CPU backend (max abs difference <= 1e-5), when the CPU
 *     backend (always built: without OpenBLAS it runs on our own kernels);
 *   - batch invariance (alone vs batch, a 300-image batch across chunks, padding);
 *   - rejected inputs leave the model usable; four threads on one model agree bit for bit;
 *   - throughput (bench_cuda), unless --no-bench.
 * usage: gpu_check [--no-bench] [--tiny-only] [--synth-only]
 *        --tiny-only: tiny-synth checks only (quick; no ViT-B/32, no throughput)
 * env:   CLIPEVAL_SHARED (the shared data folder), CLIPEVAL_SYNTH_DIR (default build/models;
 *        vitb32-synth is generated there when missing).
 * Exit status: 0 all checks passed, 1 a check failed, 77 no usable GPU, 2 setup error. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend.h"
#include "bench.h"
#include "clip.h"
#include "golden_data.h"
#include "json.h"
#include "model_internal.h"
#include "synth.h"
#include "npy.h"
#include "util.h"

#ifndef CLIP_WITH_CUDA
#error "gpu_check needs the CUDA backend: compile with -DCLIP_WITH_CUDA and link backend_cuda.o"
#endif

#define CPU_TOL 1e-5
#define BATCH_TOL 1e-6


double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *g_shared;
static char g_synth[2048];
static int n_pass, n_fail, n_skip;
static int cpu_usable = 1;
static char cpu_why[1024];

static void check(int ok, const char *fmt, ...) CLIP_PRINTF(2, 3);
static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  %s ", ok ? "PASS" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
}

static void skip(const char *fmt, ...) CLIP_PRINTF(1, 2);
static void skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  SKIP ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    n_skip++;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "gpu_check: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* Loads a golden .npy; 0 (and a FAIL) when it cannot. */
static int load_npy(const char *path, npy_array *a) {
    clip_error e = {0};
    if (npy_load(path, a, &e)) {
        check(0, "read %s: %s", path, e.msg);
        return 0;
    }
    return 1;
}

static clip_model *load_on(const char *dir, clip_device dev) {
    clip_model_options o;
    clip_model_options_init(&o);
    o.device = dev;
    clip_model *m = NULL;
    clip_error e = {0};
    if (clip_model_load(dir, &o, &m, &e)) {
        check(0, "load %s on %s: %s", dir, dev == CLIP_DEVICE_CUDA ? "cuda" : "cpu", e.msg);
        return NULL;
    }
    return m;
}

/* The 77-token input_ids of golden/tokenizer/texts.jsonl; NULL after a FAIL. */
static int32_t *golden_input_ids(int *n_out) {
    int32_t *ids = NULL;
    clip_error e = {0};
    if (gd_input_ids(g_shared, &ids, n_out, &e)) {
        check(0, "golden input_ids: %s", e.msg);
        return NULL;
    }
    return ids;
}

/* vitb32 golden pixel_values in embeddings order; NULL after a FAIL. */
static float *vitb32_pixels(int *n_out) {
    float *px = NULL;
    clip_error e = {0};
    if (gd_vitb32_pixels(g_shared, &px, n_out, &e)) {
        check(0, "golden pixel_values: %s", e.msg);
        return NULL;
    }
    return px;
}

/* ------------------------------------------------------------------ golden / CPU */

static void golden(const char *model, const char *name, const float *ours, size_t count) {
    char gdir[4096], p64[4200];
    snprintf(gdir, sizeof gdir, "%s/golden/embeddings/%s", g_shared, model);
    snprintf(p64, sizeof p64, "%s/%s_f64.npy", gdir, name);
    npy_array b;
    if (!load_npy(p64, &b)) return;
    double te = 0, tol = 0;
    clip_error e = {0};
    if (b.dtype != NPY_F64 || b.count != count) {
        check(0, "golden %s %s: golden array does not match our %zu values", model, name, count);
    } else if (gd_torch_err(gdir, name, &te, &tol, &e)) {
        check(0, "golden %s %s: %s", model, name, e.msg);
    } else {
        double err = gd_max_err_f64(ours, b.data, count);
        check(err <= tol, "golden %-12s %-15s max |cuda - fp64| %.3g  (torch fp32 %.3g, tolerance %.3g)",
              model, name, err, te, tol);
    }
    npy_free(&b);
}

static void vs_cpu(const char *model, const char *name, const float *g, const float *c,
                   size_t count) {
    double d = gd_max_abs_diff(g, c, count);
    check(d <= CPU_TOL, "vs cpu %-12s %-15s max |cuda - cpu|  %.3g  (limit %.0e)", model, name, d,
          CPU_TOL);
}

/* out[0] embeddings, out[1] features; 0 after reporting an error. */
static int encode_both(clip_model *m, const float *px, const int32_t *ids, int n, float *out[2],
                       clip_error *e) {
    size_t E = (size_t)clip_model_get_info(m)->embed_dim;
    clip_encode_options fo = {CLIP_EMBED_FEATURES, NULL, NULL};
    for (int k = 0; k < 2; k++) {
        out[k] = xmalloc(sizeof(float) * (size_t)n * E);
        clip_status st = px ? clip_encode_images(m, px, n, k ? &fo : NULL, out[k], e)
                            : clip_encode_texts(m, ids, n, 77, k ? &fo : NULL, out[k], e);
        if (st) return 0;
    }
    return 1;
}

static void check_model(const char *model, const char *dir, const float *px, int n_img,
                        const int32_t *ids, int n_txt) {
    printf("-- %s: cuda vs fp64 golden and vs the CPU backend\n", model);
    clip_model *g = load_on(dir, CLIP_DEVICE_CUDA);
    if (!g) return;
    clip_model *c = cpu_usable ? load_on(dir, CLIP_DEVICE_CPU) : NULL;
    size_t E = (size_t)clip_model_get_info(g)->embed_dim;
    static const char *names[2][2] = {{"image_embeds", "image_features"},
                                      {"text_embeds", "text_features"}};
    for (int tower = 0; tower < 2; tower++) {
        const float *p = tower == 0 ? px : NULL;
        int n = tower == 0 ? n_img : n_txt;
        float *go[2] = {NULL, NULL}, *co[2] = {NULL, NULL};
        clip_error e = {0};
        if (!encode_both(g, p, ids, n, go, &e)) {
            check(0, "%s: cuda encode: %s", model, e.msg);
        } else {
            for (int k = 0; k < 2; k++) golden(model, names[tower][k], go[k], (size_t)n * E);
            if (c && cpu_usable) {
                if (!encode_both(c, p, ids, n, co, &e)) {
                    cpu_usable = 0;
                    snprintf(cpu_why, sizeof cpu_why, "%s", e.msg);
                } else {
                    for (int k = 0; k < 2; k++)
                        vs_cpu(model, names[tower][k], go[k], co[k], (size_t)n * E);
                }
            }
            if (!cpu_usable) skip("vs cpu %s %s: %s", model, tower ? "texts" : "images", cpu_why);
        }
        for (int k = 0; k < 2; k++) {
            free(go[k]);
            free(co[k]);
        }
    }
    clip_model_free(c);
    clip_model_free(g);
}

/* ------------------------------------------------------------------ batch, errors, threads */

static void batch_invariance(const char *dir, const float *px, int n, const int32_t *ids) {
    printf("-- vitb32-synth: batch invariance (limit %.0e)\n", BATCH_TOL);
    clip_model *m = load_on(dir, CLIP_DEVICE_CUDA);
    if (!m) return;
    int E = clip_model_get_info(m)->embed_dim;
    size_t per = 3 * 224 * 224;
    clip_error e = {0};
    float *batch = xmalloc(sizeof(float) * (size_t)n * E), alone[2048];
    if (clip_encode_images(m, px, n, NULL, batch, &e)) {
        check(0, "images batch of %d: %s", n, e.msg);
        goto done;
    }
    double worst = 0;
    for (int i = 0; i < 7 && i < n; i++) {
        if (clip_encode_images(m, px + per * i, 1, NULL, alone, &e)) {
            check(0, "image %d alone: %s", i, e.msg);
            goto done;
        }
        double d = gd_max_abs_diff(alone, batch + (size_t)i * E, (size_t)E);
        if (!(d <= worst)) worst = d;
    }
    check(worst <= BATCH_TOL, "images 0..6 alone vs in the batch of %d: max diff %.3g", n, worst);
    {
        int big = 300; /* chunks of 256 + 44: both staging slots */
        float *bpx = xmalloc(sizeof(float) * per * (size_t)big);
        float *bout = xmalloc(sizeof(float) * (size_t)big * E);
        for (int i = 0; i < big; i++) memcpy(bpx + per * i, px + per * (i % n), sizeof(float) * per);
        if (clip_encode_images(m, bpx, big, NULL, bout, &e)) {
            check(0, "images batch of %d: %s", big, e.msg);
        } else {
            worst = 0;
            for (int i = 0; i < big; i++) {
                double d = gd_max_abs_diff(bout + (size_t)i * E, batch + (size_t)(i % n) * E, (size_t)E);
                if (!(d <= worst)) worst = d;
            }
            check(worst <= BATCH_TOL, "images in a batch of %d (2 chunks) vs batch of %d: max diff %.3g",
                  big, n, worst);
        }
        free(bpx);
        free(bout);
    }
    {
        int pick[7] = {0, 63, 64, 120, 200, 250, 280};
        int32_t b[7 * 77];
        for (int i = 0; i < 7; i++) memcpy(b + i * 77, ids + pick[i] * 77, sizeof(int32_t) * 77);
        float tb[7 * 2048];
        if (clip_encode_texts(m, b, 7, 77, NULL, tb, &e)) {
            check(0, "texts batch of 7: %s", e.msg);
            goto done;
        }
        worst = 0;
        for (int i = 0; i < 7; i++) {
            if (clip_encode_texts(m, b + i * 77, 1, 77, NULL, alone, &e)) {
                check(0, "text %d alone: %s", pick[i], e.msg);
                goto done;
            }
            double d = gd_max_abs_diff(alone, tb + (size_t)i * E, (size_t)E);
            if (!(d <= worst)) worst = d;
        }
        check(worst <= BATCH_TOL, "texts alone vs in a batch of 7 (mixed lengths): max diff %.3g",
              worst);
        int len0 = clip_text_pool_index(m, ids, 77) + 1;
        if (clip_encode_texts(m, ids, 1, len0, NULL, alone, &e)) {
            check(0, "text 0 unpadded: %s", e.msg);
            goto done;
        }
        double d = gd_max_abs_diff(alone, tb, (size_t)E);
        check(d <= BATCH_TOL, "text 0 unpadded (%d ids) vs padded to 77: max diff %.3g", len0, d);
    }
done:
    free(batch);
    clip_model_free(m);
}

static void trace_noop(void *user, const char *name, int item, const float *data, int rows,
                       int cols) {
    (void)user, (void)name, (void)item, (void)data, (void)rows, (void)cols;
}

/* bf16 and fp16 (issue goals): embeddings within min cosine 0.9995 (bf16) / 0.9999 (fp16) of
 * the fp64 golden; a tracing run on the GPU; batch invariance within the precision (tensor-core
 * products may pick other algorithms for other batch sizes: reported, limit 1e-3). */
static void reduced_precision(const char *dir, const float *px, int n, const int32_t *ids, int nt) {
    static const clip_precision precs[2] = {CLIP_PRECISION_BF16, CLIP_PRECISION_FP16};
    static const double goal[2] = {0.9995, 0.9999};
    char gdir[4200], path[4400];
    snprintf(gdir, sizeof gdir, "%s/golden/embeddings/vitb32-synth", g_shared);
    for (int p = 0; p < 2; p++) {
        const char *pn = clip_precision_name(precs[p]);
        printf("-- vitb32-synth %s on the GPU\n", pn);
        clip_model_options o;
        clip_model_options_init(&o);
        o.device = CLIP_DEVICE_CUDA;
        o.precision = precs[p];
        clip_model *m = NULL;
        clip_error e = {0};
        if (clip_model_load(dir, &o, &m, &e)) {
            check(0, "load %s: %s", pn, e.msg);
            continue;
        }
        int E = clip_model_get_info(m)->embed_dim;
        float *img = xmalloc(sizeof(float) * (size_t)n * E), *txt = xmalloc(sizeof(float) * (size_t)nt * E);
        float alone[2048];
        if (clip_encode_images(m, px, n, NULL, img, &e) ||
            clip_encode_texts(m, ids, nt, 77, NULL, txt, &e)) {
            check(0, "%s encode: %s", pn, e.msg);
        } else {
            const char *names[2] = {"image_embeds", "text_embeds"};
            const float *got[2] = {img, txt};
            int rows[2] = {n, nt};
            for (int k = 0; k < 2; k++) {
                npy_array ref;
                snprintf(path, sizeof path, "%s/%s_f64.npy", gdir, names[k]);
                if (!load_npy(path, &ref)) continue;
                double c = gd_min_cos_f64(got[k], ref.data, (size_t)rows[k], (size_t)E);
                double err = gd_max_err_f64(got[k], ref.data, (size_t)rows[k] * E);
                check(c >= goal[p], "%s %s: min cosine vs fp64 %.6f (goal >= %.4f), max |err| %.3g",
                      pn, names[k], c, goal[p], err);
                npy_free(&ref);
            }
            double worst = 0;
            for (int i = 0; i < 7 && i < n; i++) {
                if (clip_encode_images(m, px + (size_t)i * 3 * 224 * 224, 1, NULL, alone, &e)) break;
                double d = gd_max_abs_diff(alone, img + (size_t)i * E, (size_t)E);
                if (!(d <= worst)) worst = d;
            }
            check(worst <= 1e-3, "%s images 0..6 alone vs in the batch of %d: max diff %.3g", pn, n,
                  worst);
            worst = 0;
            for (int i = 0; i < 7 && i < nt; i++) {
                if (clip_encode_texts(m, ids + (size_t)i * 77, 1, 77, NULL, alone, &e)) break;
                double d = gd_max_abs_diff(alone, txt + (size_t)i * E, (size_t)E);
                if (!(d <= worst)) worst = d;
            }
            check(worst <= 1e-3, "%s texts 0..6 alone vs in the batch of %d: max diff %.3g", pn, nt,
                  worst);
        }
        free(img);
        free(txt);
        clip_model_free(m);
    }
}

static void errors(const char *dir) {
    printf("-- tiny-synth: rejected inputs\n");
    clip_model *m = load_on(dir, CLIP_DEVICE_CUDA);
    if (!m) return;
    const clip_model_info *info = clip_model_get_info(m);
    int32_t ids[77] = {49406, 320, 1125, 539, 320, 2368, 49407};
    float ref[2048], out[2048];
    clip_error e = {0};
    if (clip_encode_texts(m, ids, 1, 77, NULL, ref, &e)) {
        check(0, "text encode: %s", e.msg);
        clip_model_free(m);
        return;
    }
    ids[3] = info->vocab_size;
    clip_status st = clip_encode_texts(m, ids, 1, 77, NULL, out, &e);
    check(st == CLIP_ERR_ARG, "token id = vocab_size rejected (%s): %s", clip_status_name(st), e.msg);
    ids[3] = -1;
    st = clip_encode_texts(m, ids, 1, 77, NULL, out, &e);
    check(st == CLIP_ERR_ARG, "token id -1 rejected (%s)", clip_status_name(st));
    ids[3] = 539;
    int32_t long_ids[128] = {49406, 320, 49407};
    st = clip_encode_texts(m, long_ids, 1, info->context_length + 1, NULL, out, &e);
    check(st == CLIP_ERR_ARG, "length context+1 rejected (%s)", clip_status_name(st));
    clip_encode_options tr = {0, trace_noop, NULL};
    st = clip_encode_texts(m, ids, 1, 77, &tr, out, &e);
    check(st == CLIP_ERR_UNSUPPORTED, "tracing refused on the GPU (%s)", clip_status_name(st));
    st = clip_encode_texts(m, ids, 1, 77, NULL, out, &e);
    check(st == CLIP_OK && !memcmp(ref, out, sizeof(float) * (size_t)info->embed_dim),
          "after the rejected calls the same call gives the same bits (%s)", clip_status_name(st));
    clip_model_free(m);
}

typedef struct job {
    clip_model *m;
    const int32_t *ids;
    int n;
    float *out;
    clip_status st;
    char msg[1024];
} job;

static void *run_job(void *p) {
    job *j = p;
    clip_error e = {0};
    j->st = CLIP_OK;
    for (int r = 0; r < 3 && !j->st; r++)
        j->st = clip_encode_texts(j->m, j->ids, j->n, 77, NULL, j->out, &e);
    if (j->st) snprintf(j->msg, sizeof j->msg, "%s", e.msg);
    return NULL;
}

static void threads(const char *dir, const int32_t *ids, int n) {
    printf("-- tiny-synth: 4 threads x 3 calls on one model\n");
    clip_model *m = load_on(dir, CLIP_DEVICE_CUDA);
    if (!m) return;
    size_t E = (size_t)clip_model_get_info(m)->embed_dim;
    float *ref = xmalloc(sizeof(float) * (size_t)n * E);
    clip_error e = {0};
    if (clip_encode_texts(m, ids, n, 77, NULL, ref, &e)) {
        check(0, "text encode: %s", e.msg);
    } else {
        job jobs[4];
        pthread_t th[4];
        int started[4] = {0};
        for (int t = 0; t < 4; t++) {
            memset(&jobs[t], 0, sizeof jobs[t]);
            jobs[t].m = m;
            jobs[t].ids = ids;
            jobs[t].n = n;
            jobs[t].out = xmalloc(sizeof(float) * (size_t)n * E);
            started[t] = !pthread_create(&th[t], NULL, run_job, &jobs[t]);
        }
        for (int t = 0; t < 4; t++) {
            if (started[t]) pthread_join(th[t], NULL);
            int same = started[t] && !jobs[t].st &&
                       !memcmp(jobs[t].out, ref, sizeof(float) * (size_t)n * E);
            check(same, "thread %d: %s", t,
                  !started[t] ? "pthread_create failed"
                  : jobs[t].st ? jobs[t].msg
                  : same ? "identical to the single-thread result"
                         : "differs from the single-thread result");
            free(jobs[t].out);
        }
    }
    free(ref);
    clip_model_free(m);
}

/* ------------------------------------------------------------------ main */

/* Writes SYNTH_DIR/vitb32-synth (config.json + model.safetensors) when missing. */
static int ensure_vitb32(void) {
    char dir[4096], st_path[4200], cfg_src[4096], seed_path[4096], cfg_dst[4200];
    snprintf(dir, sizeof dir, "%s/vitb32-synth", g_synth);
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
    snprintf(cfg_dst, sizeof cfg_dst, "%s/config.json", dir);
    if (exists(st_path) && exists(cfg_dst)) return 1;
    snprintf(cfg_src, sizeof cfg_src, "%s/golden/models/vitb32-synth/config.json", g_shared);
    snprintf(seed_path, sizeof seed_path, "%s/golden/models/vitb32-synth/seed.txt", g_shared);
    clip_error e = {0};
    char *cfg_text = NULL, *seed_text = NULL;
    size_t cl, sl;
    int ok = !clip_read_file(cfg_src, 0, &cfg_text, &cl, &e) &&
             !clip_read_file(seed_path, 0, &seed_text, &sl, &e) && !clip_mkdir_p(dir, &e);
    if (ok) {
        FILE *f = fopen(cfg_dst, "wb");
        ok = f && fwrite(cfg_text, 1, cl, f) == cl;
        if (f && fclose(f)) ok = 0;
        if (!ok) snprintf(e.msg, sizeof e.msg, "cannot write %.900s", cfg_dst);
    }
    double t0 = bench_now();
    if (ok) ok = !synth_write(cfg_src, strtoull(seed_text, NULL, 0), st_path, &e);
    if (ok) printf("generated %s in %.1f s\n", st_path, bench_now() - t0);
    else printf("gpu_check: cannot generate %s: %s\n", st_path, e.msg);
    free(cfg_text);
    free(seed_text);
    return ok;
}

int main(int argc, char **argv) {
    int bench = 1, synth_only = 0, tiny_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-bench")) {
            bench = 0;
        } else if (!strcmp(argv[i], "--synth-only")) {
            synth_only = 1;
        } else if (!strcmp(argv[i], "--tiny-only")) {
            tiny_only = 1;
            bench = 0;
        } else {
            fprintf(stderr, "usage: gpu_check [--no-bench] [--tiny-only] [--synth-only]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_shared = getenv("CLIPEVAL_SHARED");
    if (!g_shared || !*g_shared || !exists(g_shared)) {
        fprintf(stderr, "gpu_check: set CLIPEVAL_SHARED to the shared data folder\n");
        return 2;
    }
    const char *sd = getenv("CLIPEVAL_SYNTH_DIR");
    snprintf(g_synth, sizeof g_synth, "%s", sd && *sd ? sd : "build/models");
    if (synth_only) return ensure_vitb32() ? 0 : 2;

    char why[512];
    if (!clip_cuda_available(why, sizeof why)) {
        printf("gpu_check: SKIPPED: no usable CUDA device: %s\n", why);
        return 77;
    }
    double t0 = bench_now();
    char tiny[4096], vitb32[4200];
    snprintf(tiny, sizeof tiny, "%s/golden/models/tiny-synth", g_shared);
    snprintf(vitb32, sizeof vitb32, "%s/vitb32-synth", g_synth);
    int n_txt = 0, n_img = 0;
    int32_t *ids = golden_input_ids(&n_txt);
    if (ids) {
        char pv[4096];
        snprintf(pv, sizeof pv, "%s/golden/embeddings/tiny-synth/pixel_values.npy", g_shared);
        npy_array a;
        if (load_npy(pv, &a)) {
            check_model("tiny-synth", tiny, a.data, (int)a.shape[0], ids, n_txt);
            npy_free(&a);
        }
        errors(tiny);
        threads(tiny, ids, n_txt);
        float *px = tiny_only ? NULL : ensure_vitb32() ? vitb32_pixels(&n_img) : NULL;
        if (tiny_only) {
            skip("vitb32-synth (--tiny-only)");
        } else if (px) {
            check_model("vitb32-synth", vitb32, px, n_img, ids, n_txt);
            batch_invariance(vitb32, px, n_img, ids);
            reduced_precision(vitb32, px, n_img, ids, n_txt);
            free(px);
        } else {
            check(0, "vitb32-synth model or golden images unavailable");
        }
        free(ids);
    }
    printf("gpu_check: %d passed, %d failed, %d skipped (%.1f s)%s%s\n", n_pass, n_fail, n_skip,
           bench_now() - t0, cpu_usable ? "" : "; CPU comparison skipped: ",
           cpu_usable ? "" : cpu_why);
    if (bench) {
        printf("\n");
        bench_cuda(g_synth);
    }
    return n_fail ? 1 : 0;
}
