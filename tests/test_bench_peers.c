/* test_bench_peers.c — build/bench_peers, clipeval's column of `make bench-peers`: its accuracy
 * figures on the tiny model against the fp64 goldens, the shape of its timing records (never
 * their values: no test depends on timing), and every error it reports. The benchmark itself is
 * not run here (make bench-peers). */
#include <math.h>
#include <stdint.h>

#include "clip.h"
#include "json.h"
#include "testutil.h"

#define PEERS_EOS 49407
#define TINY_DIM 40
#define TINY_IMAGES 7

static const char *peers_bin(void) {
    static char path[4096]; /* tests are single-threaded */
    const char *b = getenv("CLIPEVAL_BUILD");
    snprintf(path, sizeof path, "%s/bench_peers", b && *b ? b : "build");
    cr_assert(tu_exists(path), "bench_peers not built: %s", path);
    return path;
}

static void put(const char *dir, const char *name, const void *data, size_t len) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    tu_write_file(path, data, len);
}

/* The flat inputs of make_inputs.py, for tiny-synth: validation from the goldens (7 images of
 * 32x32, 303 texts of 77 ids), benchmark ids of 4 rows. Variants break one file each. */
enum variant {
    V_OK,
    V_FEWER_PIXELS,   /* val_pix.f32 one image short of val_img.f64 */
    V_FEWER_MASKS,    /* val_am.i64 one row short */
    V_ID_OUT_OF_VOCAB,
    V_MASK_HOLE,      /* mask 0 at position 0, before the pooled EOS */
    V_ODD_SIZE        /* val_img.f64 of 7 bytes */
};

static void write_inputs(const char *dir, enum variant v) {
    char p[4096];
    npy_array px, ri, rt;
    tu_shared_path(p, sizeof p, "golden/embeddings/tiny-synth/pixel_values.npy");
    tu_load_npy(p, &px);
    tu_shared_path(p, sizeof p, "golden/embeddings/tiny-synth/image_embeds_f64.npy");
    tu_load_npy(p, &ri);
    tu_shared_path(p, sizeof p, "golden/embeddings/tiny-synth/text_embeds_f64.npy");
    tu_load_npy(p, &rt);
    cr_assert_eq(px.shape[0], TINY_IMAGES);
    int nt;
    int32_t *ids = tu_golden_input_ids(&nt);
    cr_assert_eq((size_t)nt * TINY_DIM, rt.count);
    int64_t *ids64 = malloc(sizeof(int64_t) * (size_t)nt * GD_CONTEXT);
    int64_t *am = malloc(sizeof(int64_t) * (size_t)nt * GD_CONTEXT);
    for (int b = 0; b < nt; b++) {
        int seen_eos = 0;
        for (int j = 0; j < GD_CONTEXT; j++) {
            size_t k = (size_t)b * GD_CONTEXT + (size_t)j;
            ids64[k] = ids[k];
            am[k] = !seen_eos; /* real tokens up to and including the first EOS */
            seen_eos |= ids[k] == PEERS_EOS;
        }
    }
    if (v == V_ID_OUT_OF_VOCAB) ids64[5] = 60000;
    if (v == V_MASK_HOLE) am[0] = 0;
    size_t pix_bytes = px.count * sizeof(float);
    put(dir, "val_pix.f32", px.data, v == V_FEWER_PIXELS ? pix_bytes / TINY_IMAGES * 6 : pix_bytes);
    put(dir, "val_img.f64", ri.data, v == V_ODD_SIZE ? 7 : ri.count * sizeof(double));
    put(dir, "val_ids.i64", ids64, sizeof(int64_t) * (size_t)nt * GD_CONTEXT);
    put(dir, "val_am.i64", am, sizeof(int64_t) * (size_t)(v == V_FEWER_MASKS ? nt - 1 : nt) * GD_CONTEXT);
    put(dir, "val_txt.f64", rt.data, rt.count * sizeof(double));
    put(dir, "pix32.f32", px.data, pix_bytes);
    /* 4 caption-like rows (BOS, words, EOS at 9..12, pads), as 15 and 77 columns; 4 full rows */
    int64_t i15[4 * 15], a15[4 * 15], i77[4 * 77], a77[4 * 77], full[4 * 77], ones[4 * 77];
    for (int b = 0; b < 4; b++)
        for (int j = 0; j < 77; j++) {
            int n = 10 + b;
            int64_t id = j == 0 ? 49406 : j < n - 1 ? 320 + 7 * b + j : PEERS_EOS;
            i77[b * 77 + j] = id;
            a77[b * 77 + j] = j < n;
            if (j < 15) {
                i15[b * 15 + j] = id;
                a15[b * 15 + j] = j < n;
            }
            full[b * 77 + j] = j == 0 ? 49406 : j < 76 ? 400 + b + j : PEERS_EOS;
            ones[b * 77 + j] = 1;
        }
    put(dir, "ids15.i64", i15, sizeof i15);
    put(dir, "am15.i64", a15, sizeof a15);
    put(dir, "ids77.i64", i77, sizeof i77);
    put(dir, "am77.i64", a77, sizeof a77);
    put(dir, "idsfull.i64", full, sizeof full);
    put(dir, "amfull.i64", ones, sizeof ones);
    free(ids);
    free(ids64);
    free(am);
    npy_free(&px);
    npy_free(&ri);
    npy_free(&rt);
}

static void run_ok(const char *cmd) {
    char *log;
    int st = tu_run(cmd, &log);
    cr_assert_eq(st, 0, "%s\nexit %d:\n%s", cmd, st, log);
    free(log);
}

static json_doc *load_json(const char *path) {
    json_doc *d = NULL;
    clip_error e = {0};
    cr_assert_eq(json_parse_file(path, 0, 0, &d, &e), CLIP_OK, "%s", e.msg);
    return d;
}

static double num(const json_value *o, const char *key) {
    double v;
    cr_assert_eq(json_get_number(o, key, &v), 1, "JSON field %s missing", key);
    return v;
}

static const json_value *obj(const json_value *o, const char *key) {
    const json_value *v = json_get(o, key);
    cr_assert(v && v->type == JSON_OBJECT, "JSON object %s missing", key);
    return v;
}

Test(bench_peers, validate_matches_the_fp64_goldens) {
    char model[4096], dir[4096], out[4200], cmd[16384];
    tu_shared_path(model, sizeof model, "golden/models/tiny-synth");
    tu_tmpdir(dir, sizeof dir);
    write_inputs(dir, V_OK);
    snprintf(out, sizeof out, "%s/val.json", dir);
    snprintf(cmd, sizeof cmd, "%s validate --model '%s' --inputs '%s' --out '%s'", peers_bin(), model,
             dir, out);
    run_ok(cmd);
    json_doc *d = load_json(out);
    const json_value *r = json_doc_root(d);
    const json_value *im = obj(r, "image_embeds"), *tx = obj(r, "text_embeds");
    double ie = num(im, "max_abs"), te = num(tx, "max_abs");
    fprintf(stderr, "[bench_peers] tiny fp32 vs fp64: images max err %.3g min cos %.12f, texts max "
            "err %.3g min cos %.12f\n", ie, num(im, "min_cos"), te, num(tx, "min_cos"));
    cr_expect_eq(num(im, "n"), TINY_IMAGES);
    cr_expect_eq(num(tx, "n"), 303);
    /* the golden rule of the suite: within 1e-6 of fp64 (PyTorch fp32 itself: 1.7e-7 / 3.5e-7) */
    cr_expect(ie <= 1e-6 && te <= 1e-6, "images %.3g, texts %.3g", ie, te);
    cr_expect(num(im, "min_cos") > 1 - 1e-9 && num(tx, "min_cos") > 1 - 1e-9);
    json_doc_free(d);
    tu_rmtree(dir);
}

Test(bench_peers, stats_scores_known_rows) {
    char dir[4096], got[4200], ref[4200], out[4200], cmd[16384];
    tu_tmpdir(dir, sizeof dir);
    /* row 1 is off by 0.6 in one element: max error 0.6, cosine 0.8 */
    float g[8] = {1, 0, 0, 0, 0.6f, 0.8f, 0, 0};
    double r[8] = {1, 0, 0, 0, 0, 1, 0, 0};
    snprintf(got, sizeof got, "%s/got.f32", dir);
    snprintf(ref, sizeof ref, "%s/ref.f64", dir);
    snprintf(out, sizeof out, "%s/s.json", dir);
    tu_write_file(got, g, sizeof g);
    tu_write_file(ref, r, sizeof r);
    snprintf(cmd, sizeof cmd, "%s stats '%s' '%s' --dim 4 --out '%s'", peers_bin(), got, ref, out);
    run_ok(cmd);
    json_doc *d = load_json(out);
    const json_value *e = obj(json_doc_root(d), "embeds");
    cr_expect(fabs(num(e, "max_abs") - 0.6) < 1e-6, "max_abs %.9g", num(e, "max_abs"));
    cr_expect(fabs(num(e, "min_cos") - 0.8) < 1e-6, "min_cos %.9g", num(e, "min_cos"));
    cr_expect_eq(num(e, "worst_row"), 1);
    cr_expect_eq(num(e, "n"), 2);
    json_doc_free(d);
    /* a NaN is the worst error and the worst cosine, written as JSON literals */
    g[2] = NAN;
    tu_write_file(got, g, sizeof g);
    run_ok(cmd);
    d = load_json(out);
    e = obj(json_doc_root(d), "embeds");
    cr_expect(isinf(num(e, "max_abs")), "max_abs %.9g", num(e, "max_abs"));
    cr_expect(isnan(num(e, "min_cos")), "min_cos %.9g", num(e, "min_cos"));
    cr_expect_eq(num(e, "worst_row"), 0);
    json_doc_free(d);
    tu_rmtree(dir);
}

/* The timing rule's shape: 5 calls at least, 40 at most, figure = items / median call. */
static void check_cell(const json_value *cells, const char *name, int items, int reps) {
    const json_value *c = obj(cells, name);
    cr_expect_eq(num(c, "items"), items, "%s", name);
    cr_expect_eq(num(c, "reps"), reps, "%s", name);
    const json_value *t = json_get(c, "times");
    cr_assert(t && t->type == JSON_ARRAY && t->u.arr.n == (size_t)reps, "%s: times", name);
    double lo = 1e30, hi = 0;
    for (size_t i = 0; i < t->u.arr.n; i++) {
        lo = fmin(lo, t->u.arr.items[i].u.num.d);
        hi = fmax(hi, t->u.arr.items[i].u.num.d);
    }
    double med = num(c, "median_s");
    cr_expect(med >= lo && med <= hi, "%s: median %.6g outside [%.6g, %.6g]", name, med, lo, hi);
    cr_expect(fabs(num(c, "min_s") - lo) <= 1e-6 * lo + 1e-12, "%s: min_s", name);
    cr_expect(fabs(num(c, "per_s") * med - items) <= 1e-4 * items, "%s: per_s", name);
    cr_expect(num(c, "foreign_frac") >= 0 && num(c, "own_util") >= 0, "%s", name);
}

Test(bench_peers, bench_cells_follow_the_timing_rule) {
    char model[4096], dir[4096], out[4200], cmd[16384];
    tu_shared_path(model, sizeof model, "golden/models/tiny-synth");
    tu_tmpdir(dir, sizeof dir);
    write_inputs(dir, V_OK);
    snprintf(out, sizeof out, "%s/b.json", dir);
    /* a tiny TARGET_S: the minimum of 5 timed calls */
    snprintf(cmd, sizeof cmd, "TARGET_S=1e-9 %s bench --model '%s' --inputs '%s' --threads 1 "
             "--cells img_b1,img_b4,txt15_b4,txt77pad_b4,txtfull77_b2 --out '%s'", peers_bin(), model,
             dir, out);
    run_ok(cmd);
    json_doc *d = load_json(out);
    const json_value *r = json_doc_root(d), *cells = obj(r, "cells");
    check_cell(cells, "img_b1", 1, 5);
    check_cell(cells, "img_b4", 4, 5);
    check_cell(cells, "txt15_b4", 4, 5);
    check_cell(cells, "txt77pad_b4", 4, 5);
    check_cell(cells, "txtfull77_b2", 2, 5);
    cr_expect(num(r, "vm_hwm_mb") > 0 && num(r, "load_s") >= 0);
    cr_expect_eq(num(r, "threads"), 1);
    json_doc_free(d);
    /* a huge TARGET_S: the maximum of 40 */
    snprintf(cmd, sizeof cmd, "TARGET_S=1e9 %s bench --model '%s' --inputs '%s' --threads 1 "
             "--cells img_b1 --out '%s'", peers_bin(), model, dir, out);
    run_ok(cmd);
    d = load_json(out);
    check_cell(obj(json_doc_root(d), "cells"), "img_b1", 1, 40);
    json_doc_free(d);
    tu_rmtree(dir);
}

Test(bench_peers, first_info_and_ceiling) {
    char model[4096], dir[4096], out[4200], cmd[16384];
    tu_shared_path(model, sizeof model, "golden/models/tiny-synth");
    tu_tmpdir(dir, sizeof dir);
    write_inputs(dir, V_OK);
    snprintf(out, sizeof out, "%s/f.json", dir);
    snprintf(cmd, sizeof cmd, "%s first --model '%s' --inputs '%s' --out '%s'", peers_bin(), model,
             dir, out);
    run_ok(cmd);
    json_doc *d = load_json(out);
    const json_value *r = json_doc_root(d);
    double total = num(r, "main_to_result_s"), parts = num(r, "load_s") + num(r, "first_run_s");
    cr_expect(total >= parts - 1e-3, "main_to_result_s %.4f < load + first run %.4f", total, parts);
    cr_expect(num(r, "max_abs_vs_f64") <= 1e-6, "first image max err %.3g", num(r, "max_abs_vs_f64"));
    cr_expect(num(r, "vm_hwm_mb") > 0);
    json_doc_free(d);

    snprintf(out, sizeof out, "%s/i.json", dir);
    snprintf(cmd, sizeof cmd, "%s info --model '%s' --out '%s'", peers_bin(), model, out);
    run_ok(cmd);
    d = load_json(out);
    r = json_doc_root(d);
    const char *core, *env = getenv("OPENBLAS_CORETYPE"), *reported = NULL;
    cr_expect_eq(json_get_string(r, "blas_core", &core), 1);
    cr_expect(core && *core, "blas_core is empty");
    int has = json_get_string(r, "openblas_coretype_env", &reported);
    if (env) cr_expect(has == 1 && !strcmp(reported, env), "OPENBLAS_CORETYPE not reported as set");
    else cr_expect_eq(has, 0, "OPENBLAS_CORETYPE reported though unset");
    const json_value *m = obj(r, "model");
    cr_expect(num(m, "image_gflop") > 0 && num(m, "text77_gflop") > 0);
    json_doc_free(d);

    snprintf(out, sizeof out, "%s/c.json", dir);
    snprintf(cmd, sizeof cmd, "%s ceiling --out '%s'", peers_bin(), out);
    run_ok(cmd);
    d = load_json(out);
    cr_expect(num(json_doc_root(d), "sgemm_gflops") > 0);
    json_doc_free(d);
    tu_rmtree(dir);
}

typedef struct bad_case {
    const char *args; /* {M}: the tiny model folder, {D}: a good inputs folder */
    int status;
    const char *says;
} bad_case;

Test(bench_peers, every_error_is_reported) {
    char model[4096], ok[4096], cmd[16384];
    tu_shared_path(model, sizeof model, "golden/models/tiny-synth");
    tu_tmpdir(ok, sizeof ok);
    write_inputs(ok, V_OK);
    static const struct {
        enum variant v;
        const char *says;
    } broken[] = {
        {V_FEWER_PIXELS, "disagree on the number of images"},
        {V_FEWER_MASKS, "disagree on the number of texts"},
        {V_ID_OUT_OF_VOCAB, "token id out of the vocabulary"},
        {V_MASK_HOLE, "attention mask is 0 before the pooled position"},
        {V_ODD_SIZE, "val_img.f64: size is not a positive multiple"},
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        char dir[4096], *log;
        tu_tmpdir(dir, sizeof dir);
        write_inputs(dir, broken[i].v);
        snprintf(cmd, sizeof cmd, "%s validate --model '%s' --inputs '%s'", peers_bin(), model, dir);
        int st = tu_run(cmd, &log);
        cr_expect(st == 1 && strstr(log, broken[i].says), "%s\nexit %d, wanted 1 and '%s':\n%s", cmd,
                  st, broken[i].says, log);
        free(log);
        tu_rmtree(dir);
    }
    static const bad_case cases[] = {
        {"", 2, "usage: bench_peers"},
        {"frobnicate", 2, "unknown mode"},
        {"bench --bogus 1", 2, "unknown option"},
        {"bench --model", 2, "lacks its value"},
        {"bench --threads 0", 2, "--threads must be >= 1"},
        {"bench --kernel sse", 2, "--kernel: auto"},
        {"bench --precision fp8", 2, "fp8"},
        {"stats a b --dim 0", 2, "--dim must be >= 1"},
        {"validate --inputs {D}", 2, "--model is required"},
        {"validate --model {M}", 2, "--inputs is required"},
        {"stats a b c", 2, "too many arguments"},
        {"stats {D}/pix32.f32", 1, "stats needs GOT.f32 REF.f64"},
        {"stats {D}/pix32.f32 {D}/val_img.f64", 1, "differ in size"},
        {"stats {D}/nothing.f32 {D}/val_img.f64", 1, "cannot open"},
        {"validate --model {M} --inputs {D}/none", 1, "cannot open"},
        {"bench --model {D}/no-model --inputs {D}", 1, "no-model"},
        {"bench --model {M} --inputs {D} --cells img_x", 1, "unknown cell 'img_x'"},
        {"bench --model {M} --inputs {D} --cells img_b8", 1, "pix32.f32 holds fewer images"},
        {"bench --model {M} --inputs {D} --cells txt15_b8", 1, "ids15.i64 holds fewer rows"},
        {"bench --model {M} --inputs {D} --cells txtfull77_b8", 1, "idsfull.i64 holds fewer rows"},
        {"bench --model {M} --inputs {D} --cells img_b1 --out /nonexistent/x.json", 1, "cannot write"},
        {"info --model {D}/no-model", 3, "\"error\": "},
        {"bench --model {M} --inputs {D} --precision fp16", 1, "fp16"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* expand {M} and {D} */
        char args[8192] = "";
        for (const char *s = cases[i].args; *s; s++) {
            if (s[0] == '{' && (s[1] == 'M' || s[1] == 'D') && s[2] == '}') {
                strncat(args, "'", sizeof args - strlen(args) - 1);
                strncat(args, s[1] == 'M' ? model : ok, sizeof args - strlen(args) - 1);
                strncat(args, "'", sizeof args - strlen(args) - 1);
                s += 2;
            } else {
                size_t n = strlen(args);
                if (n + 1 < sizeof args) args[n] = *s, args[n + 1] = 0;
            }
        }
        char *log;
        snprintf(cmd, sizeof cmd, "%s %s", peers_bin(), args);
        int st = tu_run(cmd, &log);
        cr_expect(st == cases[i].status && strstr(log, cases[i].says),
                  "%s\nexit %d, wanted %d and '%s':\n%s", cmd, st, cases[i].status, cases[i].says, log);
        free(log);
    }
    char *log;
    snprintf(cmd, sizeof cmd, "TARGET_S=abc %s bench --model '%s' --inputs '%s' --cells img_b1",
             peers_bin(), model, ok);
    int st = tu_run(cmd, &log);
    cr_expect(st == 1 && strstr(log, "TARGET_S must be a positive number"), "exit %d:\n%s", st, log);
    free(log);
    tu_rmtree(ok);
}
