/* testutil.h — helpers shared by the Criterion tests: where the golden data is, and how a
 * missing data folder is reported (skip locally, fail under CI=true).
 *
 * No test depends on timing: nothing sleeps to order events (processes synchronise on pipes
 * and FIFOs: test_signals.c, the fake hub in test_score.c), nothing asserts a duration (speed
 * figures are `make bench`'s). The `.timeout = N` of some tests is a hang guard only: a test
 * that never ends would stall the whole suite; each N is far above the test's own duration on
 * the slowest machine we run (the 600 s ones take tens of seconds). */
#ifndef CLIP_TESTUTIL_H
#define CLIP_TESTUTIL_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "golden_data.h"
#include "npy.h"

static inline int tu_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* 1 in the sanitizer builds (make asan sets CLIPEVAL_SANITIZER): the heaviest numeric sweeps
 * run a smaller grid there, since they test arithmetic, which the plain run covers in full. */
static inline int tu_sanitized(void) {
    const char *s = getenv("CLIPEVAL_SANITIZER");
    return s && *s && strcmp(s, "0");
}

static inline int tu_under_ci(void) {
    const char *ci = getenv("CI");
    return ci && (!strcmp(ci, "true") || !strcmp(ci, "1"));
}

/* The ../shared folder (CLIPEVAL_SHARED, set by the Makefile). Missing data skips the test with
 * a clear message, or fails it under CI=true. */
static inline const char *tu_shared_or_skip(void) {
    const char *s = getenv("CLIPEVAL_SHARED");
    if (s && *s && tu_exists(s)) return s;
    if (tu_under_ci())
        cr_assert_fail("shared test data not found (CLIPEVAL_SHARED=%s) and CI=true", s ? s : "");
    cr_skip_test("shared test data not found: set CLIPEVAL_SHARED to the ../shared folder");
    return NULL;
}

/* path = shared + "/" + rel; skips/fails like tu_shared_or_skip when it does not exist. */
static inline void tu_shared_path(char *out, size_t cap, const char *rel) {
    const char *s = tu_shared_or_skip();
    snprintf(out, cap, "%s/%s", s, rel);
    if (!tu_exists(out)) {
        if (tu_under_ci()) cr_assert_fail("golden file missing: %s (CI=true)", out);
        cr_skip_test("golden file missing: %s", out);
    }
}

/* The generated synthetic ViT-B/32 folder (make test builds it) with the real tokenizer
 * files next to it is build/models/vitb32-synth. */
static inline void tu_synth_dir(char *out, size_t cap, const char *name) {
    const char *d = getenv("CLIPEVAL_SYNTH_DIR");
    snprintf(out, cap, "%s/%s", d && *d ? d : "build/models", name);
    char f[4096];
    snprintf(f, sizeof f, "%s/model.safetensors", out);
    if (!tu_exists(f)) {
        if (tu_under_ci()) cr_assert_fail("synthetic model missing: %s (run make test)", f);
        cr_skip_test("synthetic model missing: %s (make test generates it)", f);
    }
}

/* A fresh scratch folder for one test (removed by the OS tmp cleaner; tests keep it small). */
static inline void tu_tmpdir(char *out, size_t cap) {
    const char *t = getenv("TMPDIR");
    snprintf(out, cap, "%s/clipeval-test-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(out), "mkdtemp failed");
}

/* rm -rf of a scratch folder made by tu_tmpdir. */
static inline void tu_rmtree(const char *dir) {
    char cmd[4200];
    if (strncmp(dir, "/tmp/", 5) != 0 && !getenv("TMPDIR")) return; /* only scratch folders */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
}

/* Runs `cmd` through the shell; returns its exit status and its stdout+stderr in *out
 * (malloc'd, NUL-terminated). */
static inline int tu_run(const char *cmd, char **out) {
    char full[16384];
    snprintf(full, sizeof full, "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p, "popen failed");
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (n + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The built CLI (CLIPEVAL_BUILD set by the Makefile). */
static inline const char *tu_cli(void) {
    static char path[4096]; /* read-only after first use; tests are single-threaded */
    const char *b = getenv("CLIPEVAL_BUILD");
    snprintf(path, sizeof path, "%s/clipeval", b && *b ? b : "build");
    cr_assert(tu_exists(path), "CLI not built: %s", path);
    return path;
}

static inline void tu_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* A tiny model folder: the tiny-synth weights, the real tokenizer files, a 32-pixel
 * preprocessor. Fast enough for end-to-end runs of the CLI. */
static inline void tu_tiny_model(const char *dir) {
    char src[4096], tokdir[4096], cmd[32768];
    tu_shared_path(src, sizeof src, "golden/models/tiny-synth");
    tu_shared_path(tokdir, sizeof tokdir, "models/clip-vit-base-patch32");
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && ln -sf '%s/config.json' '%s/model.safetensors' '%s/vocab.json' "
             "'%s/merges.txt' '%s/tokenizer_config.json' '%s/special_tokens_map.json' '%s/'",
             dir, src, src, tokdir, tokdir, tokdir, tokdir, dir);
    cr_assert_eq(system(cmd), 0);
    char p[4300];
    snprintf(p, sizeof p, "%s/preprocessor_config.json", dir);
    const char *cfg = "{\"crop_size\": 32, \"do_center_crop\": true, \"do_normalize\": true, "
                      "\"do_resize\": true, \"image_mean\": [0.48145466, 0.4578275, 0.40821073], "
                      "\"image_std\": [0.26862954, 0.26130258, 0.27577711], \"resample\": 3, "
                      "\"size\": 32}";
    tu_write_file(p, cfg, strlen(cfg));
}

static inline void tu_load_npy(const char *path, npy_array *a) {
    clip_error e = {0};
    clip_status st = npy_load(path, a, &e);
    cr_assert_eq(st, CLIP_OK, "%s", e.msg);
}

/* The golden arrays of golden_data.h, failing the test when they cannot be read. */
static inline int32_t *tu_golden_input_ids(int *n_out) {
    int32_t *ids = NULL;
    clip_error e = {0};
    cr_assert_eq(gd_input_ids(tu_shared_or_skip(), &ids, n_out, &e), CLIP_OK, "%s", e.msg);
    return ids;
}

/* The tiny model's folder, its golden embeddings folder and their pixel_values.npy (the 34
 * images), in the paths every tiny-model golden test reads. */
static inline void tu_tiny_golden(char *dir, size_t dcap, char *gdir, size_t gcap, npy_array *a) {
    char pv[4200];
    tu_shared_path(dir, dcap, "golden/models/tiny-synth");
    tu_shared_path(gdir, gcap, "golden/embeddings/tiny-synth");
    snprintf(pv, sizeof pv, "%s/pixel_values.npy", gdir);
    tu_load_npy(pv, a);
}

static inline float *tu_vitb32_pixels(int *n_out) {
    float *px = NULL;
    clip_error e = {0};
    cr_assert_eq(gd_vitb32_pixels(tu_shared_or_skip(), &px, n_out, &e), CLIP_OK, "%s", e.msg);
    return px;
}

/* The acceptance rule on one array of gdir: max |ours - fp64| <= max(2 x PyTorch-fp32's
 * own max error on that array, 1e-6). `tag` starts the stderr report line. */
static inline void tu_check_golden(const char *tag, const char *gdir, const char *name,
                                   const float *ours, size_t count) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s_f64.npy", gdir, name);
    npy_array ref;
    tu_load_npy(path, &ref);
    cr_assert(ref.dtype == NPY_F64 && ref.count == count, "%s: %zu values, golden has %zu", path,
              count, ref.count);
    double err = gd_max_err_f64(ours, ref.data, count), torch = 0, tol = 0;
    clip_error e = {0};
    cr_assert_eq(gd_torch_err(gdir, name, &torch, &tol, &e), CLIP_OK, "%s", e.msg);
    fprintf(stderr, "%s %s %s: max err %.3g, torch fp32 %.3g, tolerance %.3g\n", tag,
            strrchr(gdir, '/') + 1, name, err, torch, tol);
    cr_expect(err <= tol, "%s: max error %.3g above tolerance %.3g", name, err, tol);
    npy_free(&ref);
}

#endif
