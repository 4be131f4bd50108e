/* test_score.c — `clipeval score` end to end: the golden DataFlow outputs, every row rule,
 * FileStorage naming, formats, atomic output, the per-row path, and the download script. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clip.h"
#include "json.h"
#include "testutil.h"
#include "util.h"

/* ------------------------------------------------------------------ helpers */

static char *read_all(const char *path) {
    char *d;
    size_t n;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(path, 0, &d, &n, &e), CLIP_OK, "%s", e.msg);
    return d;
}

/* Splits text into lines (in place); returns the count. */
static size_t split_lines(char *text, char **lines, size_t cap) {
    size_t n = 0;
    for (char *p = text; *p && n < cap;) {
        char *nl = strchr(p, '\n');
        lines[n++] = p;
        if (!nl) break;
        *nl = '\0';
        p = nl + 1;
    }
    return n;
}

/* The value of `key` in a JSONL line, as a number (NAN when absent or not a number). */
static double json_number(const char *line, const char *key) {
    json_doc *d;
    clip_error e = {0};
    if (json_parse(line, strlen(line), "line", 0, &d, &e)) return NAN;
    double v = NAN;
    json_get_number(json_doc_root(d), key, &v);
    json_doc_free(d);
    return v;
}

/* A line with the value of "clip_score" cut out: `..."clip_score":` + rest after the number. */
static void strip_score(const char *line, char *out, size_t cap) {
    const char *k = strstr(line, "\"clip_score\":");
    if (!k) {
        snprintf(out, cap, "%s", line);
        return;
    }
    k += strlen("\"clip_score\":");
    const char *e = k;
    while (*e && strchr("0123456789.eE+-", *e)) e++;
    snprintf(out, cap, "%.*s%s", (int)(k - line), line, e);
}

/* build/models/vitb32-synth with the real tokenizer and preprocessor files next to it. */
static void vitb32_dir(char *out, size_t cap) {
    tu_synth_dir(out, cap, "vitb32-synth");
    char f[4300];
    snprintf(f, sizeof f, "%s/vocab.json", out);
    if (!tu_exists(f)) cr_assert_fail("%s lacks the tokenizer files (make test links them)", out);
}

/* A tiny model folder (tiny-synth weights, the real tokenizer, a 32-pixel preprocessor): fast. */
static void tiny_model(const char *dir) {
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

static int run_score(const char *args, char **log) {
    char cmd[32768];
    snprintf(cmd, sizeof cmd, "%s score %s", tu_cli(), args);
    return tu_run(cmd, log);
}

/* ------------------------------------------------------------------ golden */

/* Scores every golden set with vitb32-synth; checks the rules of scores/README.md. */
static void golden_set(const char *set, int pandas) {
    char model[4096], gdir[4096], tmp[4096], args[32768], rel[256];
    vitb32_dir(model, sizeof model);
    tu_shared_path(gdir, sizeof gdir, "golden");
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(rel, sizeof rel, "golden/scores/%s.input.jsonl", set);
    char input[4096], expected[4096], scores[4096];
    tu_shared_path(input, sizeof input, rel);
    snprintf(rel, sizeof rel, "golden/scores/%s.expected.jsonl", set);
    tu_shared_path(expected, sizeof expected, rel);
    snprintf(rel, sizeof rel, "golden/scores/%s.scores.json", set);
    tu_shared_path(scores, sizeof scores, rel);
    snprintf(args, sizeof args,
             "--input '%s' --output '%s/out.jsonl' --model '%s' --image-key image --text-key "
             "caption --image-root '%s' --device cpu %s",
             input, tmp, model, gdir, pandas ? "--pandas-compat" : "");
    char *log;
    int rc = run_score(args, &log);
    cr_assert_eq(rc, 0, "%s", log);
    /* the golden per-row facts */
    json_doc *sd;
    clip_error e = {0};
    cr_assert_eq(json_parse_file(scores, 0, 0, &sd, &e), CLIP_OK, "%s", e.msg);
    const json_value *rows = json_get(json_doc_root(sd), "rows");
    cr_assert(rows && rows->type == JSON_ARRAY);
    char outp[4300];
    snprintf(outp, sizeof outp, "%s/out.jsonl", tmp);
    char *out = read_all(outp), *in = read_all(input), *exp = read_all(expected);
    char *ol[256], *il[256], *el[256];
    size_t no = split_lines(out, ol, 256), ni = split_lines(in, il, 256), ne = split_lines(exp, el, 256);
    if (no && !*ol[no - 1]) no--;
    if (ni && !*il[ni - 1]) ni--;
    if (ne && !*el[ne - 1]) ne--;
    cr_assert_eq(no, rows->u.arr.n, "%s: %zu output rows, %zu golden", set, no, rows->u.arr.n);
    double worst = 0;
    for (size_t i = 0; i < no; i++) {
        const json_value *gr = &rows->u.arr.items[i];
        const char *status;
        json_get_string(gr, "status", &status);
        double got = json_number(ol[i], "clip_score");
        if (strcmp(status, "scored") != 0) {
            cr_expect(got == 0.0 && !signbit(got), "%s row %zu (%s): score %.17g, want 0.0", set,
                      i, status, got);
        } else {
            double want;
            cr_assert_eq(json_get_number(gr, "score_f64", &want), 1);
            double d = fabs(got - want);
            if (d > worst) worst = d;
            cr_expect(d <= 1e-6, "%s row %zu: score %.17g, golden fp64 %.17g", set, i, got, want);
        }
        char a[8192], b[8192];
        if (pandas) {
            /* pandas-compat: byte-identical to pandas' line except the score digits */
            strip_score(ol[i], a, sizeof a);
            strip_score(el[i], b, sizeof b);
            cr_expect_str_eq(a, b, "%s row %zu: pandas line differs", set, i);
        } else {
            /* default: the input line byte for byte, plus ,"clip_score":repr before the brace */
            strip_score(ol[i], a, sizeof a);
            size_t il_len = strlen(il[i]);
            snprintf(b, sizeof b, "%.*s,\"clip_score\":}", (int)(il_len - 1), il[i]);
            cr_expect_str_eq(a, b, "%s row %zu: input fields changed", set, i);
        }
    }
    fprintf(stderr, "[golden] scores %s%s: %zu rows, max |score - fp64| = %.3g\n", set,
            pandas ? " (pandas-compat)" : "", no, worst);
    (void)ni;
    (void)ne;
    free(out);
    free(in);
    free(exp);
    free(log);
    json_doc_free(sd);
    tu_rmtree(tmp);
}

Test(score_golden, dataflow_example, .timeout = 300) { golden_set("dataflow_example", 0); }
Test(score_golden, dataflow_example_pandas, .timeout = 300) { golden_set("dataflow_example", 1); }
Test(score_golden, legacy_demo, .timeout = 300) { golden_set("legacy_demo", 1); }
Test(score_golden, edge_rows, .timeout = 300) { golden_set("edge_rows", 0); }
Test(score_golden, edge_rows_pandas, .timeout = 300) { golden_set("edge_rows", 1); }

/* The pandas writer itself is byte-exact: fed the golden Python floats it reproduces the file. */
/* (tests/test_table_io.c covers that; here the end-to-end run is checked above.) */

/* ------------------------------------------------------------------ row rules (tiny model) */

typedef struct fixture {
    char tmp[4096], model[4300], img[4300], log_path[4300];
} fixture;

static void setup(fixture *f) {
    tu_tmpdir(f->tmp, sizeof f->tmp);
    snprintf(f->model, sizeof f->model, "%s/model", f->tmp);
    tiny_model(f->model);
    char src[4096], cmd[16384];
    tu_shared_path(src, sizeof src, "golden/images/edge_100x60.png");
    snprintf(f->img, sizeof f->img, "%s/a.png", f->tmp);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && mkdir -p '%s/sub' && cp '%s' '%s/sub/b.png'", src,
             f->img, f->tmp, src, f->tmp);
    cr_assert_eq(system(cmd), 0);
}

static int score_file(fixture *f, const char *name, const char *content, const char *extra,
                      char **log) {
    char in[4400], args[32768];
    snprintf(in, sizeof in, "%s/%s", f->tmp, name);
    tu_write_file(in, content, strlen(content));
    const char *ext = strrchr(name, '.');
    snprintf(args, sizeof args, "--input '%s' --output '%s/out%s' --model '%s' --device cpu %s", in,
             f->tmp, ext ? ext : "", f->model, extra ? extra : "");
    return run_score(args, log);
}

static char *out_text(fixture *f, const char *ext) {
    char p[4400];
    snprintf(p, sizeof p, "%s/out%s", f->tmp, ext);
    return read_all(p);
}

Test(score_rules, failures_score_zero_with_warnings) {
    fixture f;
    setup(&f);
    char content[16384];
    snprintf(content, sizeof content,
             "{\"image_path\":\"%s\",\"text\":\"a cat\"}\n"
             "{\"image_path\":\"%s/missing.png\",\"text\":\"a cat\"}\n"
             "{\"image_path\":\"%s/sub\",\"text\":\"a directory\"}\n"
             "{\"image_path\":\"%s/in.jsonl\",\"text\":\"not an image\"}\n"
             "{\"image_path\":null,\"text\":\"null path\"}\n"
             "{\"image_path\":5,\"text\":\"number path\"}\n"
             "{\"image_path\":\"\",\"text\":\"empty path\"}\n"
             "{\"image_path\":\"https://example.com/x.png\",\"text\":\"url\"}\n"
             "{\"image_path\":\"%s\",\"text\":\"\"}\n"
             "{\"image_path\":\"%s\",\"text\":\" \\t\\n\\u3000\"}\n"
             "{\"text\":\"no image key\"}\n"
             "{\"image_path\":\"%s/missing.png\",\"text\":\"\"}\n",
             f.img, f.tmp, f.tmp, f.tmp, f.img, f.img, f.tmp);
    char *log;
    int rc = score_file(&f, "in.jsonl", content, NULL, &log);
    cr_assert_eq(rc, 0, "%s", log);
    char *out = out_text(&f, ".jsonl");
    char *lines[32];
    size_t n = split_lines(out, lines, 32);
    cr_assert_geq(n, 12);
    double s0 = json_number(lines[0], "clip_score");
    cr_expect(s0 > 0 && s0 < 1, "row 1 scored: %g", s0);
    for (size_t i = 1; i < 12; i++)
        cr_expect_eq(json_number(lines[i], "clip_score"), 0.0, "row %zu: %s", i + 1, lines[i]);
    /* a warning with the line number for each image failure; none for blank texts */
    static const int warned[] = {2, 3, 4, 5, 6, 7, 8, 11, 12};
    for (size_t k = 0; k < sizeof warned / sizeof warned[0]; k++) {
        char needle[64];
        snprintf(needle, sizeof needle, "in.jsonl:%d:", warned[k]);
        cr_expect(strstr(log, needle) != NULL, "no warning for line %d:\n%s", warned[k], log);
    }
    cr_expect(strstr(log, "in.jsonl:9:") == NULL && strstr(log, "in.jsonl:10:") == NULL,
              "blank text must not warn:\n%s", log);
    cr_expect(strstr(log, "12 rows, 1 scored, 9 failed (image), 2 empty text"), "%s", log);
    free(out);
    free(log);
    tu_rmtree(f.tmp);
}

Test(score_rules, image_root_keys_and_columns) {
    fixture f;
    setup(&f);
    char content[8192], args[16384];
    snprintf(content, sizeof content,
             "{\"id\":1,\"img\":\"a.png\",\"cap\":\"x\",\"clip_score\":9,\"z\":[1,{\"k\":null}]}\n"
             "{\"id\":2,\"img\":\"sub/b.png\",\"cap\":\"y\"}\n");
    char *log;
    snprintf(args, sizeof args, "--image-key img --text-key cap --image-root '%s'", f.tmp);
    int rc = score_file(&f, "in.jsonl", content, args, &log);
    cr_assert_eq(rc, 0, "%s", log);
    char *out = out_text(&f, ".jsonl");
    char *lines[8];
    split_lines(out, lines, 8);
    /* existing score column replaced in place; other fields untouched */
    cr_expect(strncmp(lines[0], "{\"id\":1,\"img\":\"a.png\",\"cap\":\"x\",\"clip_score\":0.", 46) == 0,
              "%s", lines[0]);
    cr_expect(strstr(lines[0], ",\"z\":[1,{\"k\":null}]}") != NULL, "%s", lines[0]);
    cr_expect(strncmp(lines[1], "{\"id\":2,\"img\":\"sub/b.png\",\"cap\":\"y\",\"clip_score\":0.", 50) == 0,
              "%s", lines[1]);
    free(out);
    free(log);
    /* a column missing from the whole table is an error naming it (DataFlow's KeyError) */
    rc = score_file(&f, "in2.jsonl", "{\"image_path\":\"a.png\",\"caption\":\"x\"}\n", NULL, &log);
    cr_expect_eq(rc, 1);
    cr_expect(strstr(log, "column 'text' not found"), "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

Test(score_rules, invalid_lines) {
    fixture f;
    setup(&f);
    char content[8192];
    snprintf(content, sizeof content,
             "{\"image_path\":\"%s\",\"text\":\"a\"}\n{bad json\n\n{\"image_path\":\"%s\",\"text\":\"b\"}\n",
             f.img, f.img);
    char *log;
    int rc = score_file(&f, "in.jsonl", content, NULL, &log);
    cr_expect_eq(rc, 1, "%s", log);
    cr_expect(strstr(log, "line 2"), "%s", log);
    char p[4400];
    snprintf(p, sizeof p, "%s/out.jsonl", f.tmp);
    cr_expect(!tu_exists(p), "no output after a stopped run");
    free(log);
    rc = score_file(&f, "in.jsonl", content, "--skip-invalid", &log);
    cr_assert_eq(rc, 0, "%s", log);
    cr_expect(strstr(log, "1 rejected"), "%s", log);
    char *out = out_text(&f, ".jsonl"), *lines[8];
    cr_expect_eq(split_lines(out, lines, 8), 2);
    snprintf(p, sizeof p, "%s/out.jsonl.rejects", f.tmp);
    char *rej = read_all(p);
    cr_expect_str_eq(rej, "{bad json\n");
    free(rej);
    free(out);
    free(log);
    tu_rmtree(f.tmp);
}

Test(score_rules, csv_and_json_round_trips) {
    fixture f;
    setup(&f);
    char content[8192];
    snprintf(content, sizeof content,
             "image_path,text,n\r\n%s,\"a cat, \"\"quoted\"\"\",1\r\n%s,\"multi\nline\",2\r\n", f.img,
             f.img);
    char *log;
    int rc = score_file(&f, "in.csv", content, NULL, &log);
    cr_assert_eq(rc, 0, "%s", log);
    char *out = out_text(&f, ".csv");
    cr_expect(strncmp(out, "image_path,text,n,clip_score\r\n", 30) == 0, "%s", out);
    cr_expect(strstr(out, "\"a cat, \"\"quoted\"\"\",1,0.") != NULL, "%s", out);
    cr_expect(strstr(out, "\"multi\nline\",2,0.") != NULL, "%s", out);
    free(out);
    free(log);
    snprintf(content, sizeof content,
             "[\n  {\"image_path\": \"%s\", \"text\": \"a\"},\n  {\"image_path\": \"%s\", \"text\": \"b\"}\n]\n",
             f.img, f.img);
    rc = score_file(&f, "in.json", content, NULL, &log);
    cr_assert_eq(rc, 0, "%s", log);
    out = out_text(&f, ".json");
    json_doc *d;
    clip_error e = {0};
    cr_assert_eq(json_parse(out, strlen(out), "out.json", 0, &d, &e), CLIP_OK, "%s\n%s", e.msg, out);
    const json_value *r = json_doc_root(d);
    cr_assert_eq(r->type, JSON_ARRAY);
    cr_assert_eq(r->u.arr.n, 2);
    double s;
    cr_expect_eq(json_get_number(&r->u.arr.items[1], "clip_score", &s), 1);
    cr_expect(strncmp(out, "[\n  {\"image_path\": ", 19) == 0, "layout kept: %s", out);
    json_doc_free(d);
    free(out);
    free(log);
    /* cross-format: JSONL in, CSV out by --cache-type */
    char args[8192];
    snprintf(args, sizeof args, "--cache-type csv");
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\"a\",\"k\":[1,\"x\"]}\n", f.img);
    rc = score_file(&f, "in.jsonl", content, args, &log);
    cr_expect_eq(rc, 0, "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

Test(score_rules, filestorage_naming) {
    fixture f;
    setup(&f);
    char in[4400], args[32768], p[4600];
    snprintf(in, sizeof in, "%s/first.jsonl", f.tmp);
    char content[4096];
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\"a\"}\n", f.img);
    tu_write_file(in, content, strlen(content));
    snprintf(args, sizeof args,
             "--first-entry-file '%s' --cache-path '%s/cache' --file-name-prefix imgtext_eval_clip "
             "--model '%s' --device cpu",
             in, f.tmp, f.model);
    char *log;
    cr_assert_eq(run_score(args, &log), 0, "%s", log);
    free(log);
    snprintf(p, sizeof p, "%s/cache/imgtext_eval_clip_step1.jsonl", f.tmp);
    cr_expect(tu_exists(p), "%s missing", p);
    snprintf(args, sizeof args,
             "--first-entry-file '%s' --cache-path '%s/cache' --file-name-prefix P --step 2 "
             "--cache-type csv --model '%s' --device cpu",
             in, f.tmp, f.model);
    cr_assert_eq(run_score(args, &log), 0, "%s", log);
    free(log);
    snprintf(p, sizeof p, "%s/cache/P_step3.csv", f.tmp);
    cr_expect(tu_exists(p), "%s missing", p);
    /* FileStorage types by the text after the last dot: parquet is refused clearly */
    snprintf(args, sizeof args, "--input '%s/x.parquet' --output '%s/o.jsonl' --model '%s'", f.tmp,
             f.tmp, f.model);
    cr_expect_neq(run_score(args, &log), 0);
    cr_expect(strstr(log, "parquet"), "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

Test(score_rules, batched_equals_per_row_and_dedupes) {
    fixture f;
    setup(&f);
    clip_buf c = {0};
    for (int i = 0; i < 40; i++)
        clip_buf_printf(&c, "{\"image_path\":\"%s\",\"text\":\"caption number %d\"}\n",
                        i % 2 ? f.img : "sub/b.png", i % 7);
    char args[8192], *log;
    snprintf(args, sizeof args, "--image-root '%s' --batch-size 3", f.tmp);
    cr_assert_eq(score_file(&f, "in.jsonl", c.data, args, &log), 0, "%s", log);
    cr_expect(strstr(log, "2 images + 7 texts encoded"), "each distinct input once:\n%s", log);
    free(log);
    char *a = out_text(&f, ".jsonl");
    snprintf(args, sizeof args, "--image-root '%s' --per-row", f.tmp);
    cr_assert_eq(score_file(&f, "in.jsonl", c.data, args, &log), 0, "%s", log);
    cr_expect(strstr(log, "40 images + 40 texts encoded"), "%s", log);
    free(log);
    char *b = out_text(&f, ".jsonl");
    char *la[64], *lb[64];
    size_t na = split_lines(a, la, 64), nb = split_lines(b, lb, 64);
    cr_assert_eq(na, nb);
    for (size_t i = 0; i < na && *la[i]; i++) {
        double x = json_number(la[i], "clip_score"), y = json_number(lb[i], "clip_score");
        cr_expect(fabs(x - y) <= 1e-6, "row %zu: batched %.17g vs per-row %.17g", i, x, y);
    }
    free(a);
    free(b);
    clip_buf_free(&c);
    tu_rmtree(f.tmp);
}

/* Every limit is configurable; a field over its limit is that row's 0.0 + warning, a row over
 * a structural limit is an invalid row (stop with its line, or --skip-invalid). */
Test(score_rules, limits) {
    fixture f;
    setup(&f);
    char content[8192], *log;
    snprintf(content, sizeof content,
             "{\"image_path\":\"%s\",\"text\":\"a short caption\"}\n"
             "{\"image_path\":\"%s\",\"text\":\"a caption that is longer than forty bytes, surely\"}\n",
             f.img, f.img);
    /* pixels: edge_100x60 has 6000 */
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--max-pixels 5999", &log), 0, "%s", log);
    cr_expect(strstr(log, "in.jsonl:1:") && strstr(log, "in.jsonl:2:") && strstr(log, "0 scored"),
              "%s", log);
    free(log);
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--max-pixels 6000", &log), 0, "%s", log);
    cr_expect(strstr(log, "2 scored"), "%s", log);
    free(log);
    /* file size */
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--max-file-bytes 100", &log), 0, "%s", log);
    cr_expect(strstr(log, "0 scored") && strstr(log, "limit"), "%s", log);
    free(log);
    /* text length */
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--max-text-bytes 40", &log), 0, "%s", log);
    cr_expect(strstr(log, "1 scored") && strstr(log, "in.jsonl:2: text of") &&
                  strstr(log, "max-text-bytes"),
              "%s", log);
    free(log);
    char *out = out_text(&f, ".jsonl"), *lines[4];
    split_lines(out, lines, 4);
    cr_expect_eq(json_number(lines[1], "clip_score"), 0.0);
    free(out);
    /* row length and nesting: invalid rows */
    cr_expect_eq(score_file(&f, "in.jsonl", content, "--max-row-bytes 80", &log), 1, "%s", log);
    cr_expect(strstr(log, "line 2") || strstr(log, ":2"), "%s", log);
    free(log);
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--max-row-bytes 80 --skip-invalid", &log), 0,
                 "%s", log);
    cr_expect(strstr(log, "1 rejected"), "%s", log);
    free(log);
    snprintf(content, sizeof content,
             "{\"image_path\":\"%s\",\"text\":\"a\",\"deep\":[[[[1]]]]}\n", f.img);
    cr_expect_eq(score_file(&f, "in.jsonl", content, "--max-json-depth 3", &log), 1, "%s", log);
    cr_expect(strstr(log, "nesting"), "%s", log);
    free(log);
    /* a 4 MB caption is tokenised (linearly) and truncated to 77 tokens like HF */
    clip_buf big = {0};
    clip_buf_printf(&big, "{\"image_path\":\"%s\",\"text\":\"", f.img);
    for (int i = 0; i < 400000; i++) clip_buf_puts(&big, "word word ");
    clip_buf_puts(&big, "\"}\n");
    cr_assert_eq(score_file(&f, "in.jsonl", big.data, NULL, &log), 0, "%s", log);
    cr_expect(strstr(log, "1 scored"), "%s", log);
    free(log);
    clip_buf_free(&big);
    tu_rmtree(f.tmp);
}

/* A run killed at any moment leaves the previous output intact (or none), never a partial one. */
Test(score_atomic, sigkill_keeps_previous_output, .timeout = 300) {
    fixture f;
    setup(&f);
    clip_buf c = {0};
    for (int i = 0; i < 3000; i++)
        clip_buf_printf(&c, "{\"image_path\":\"%s\",\"text\":\"caption %d\"}\n", f.img, i);
    char in[4400], out[4400], cmd[32768];
    snprintf(in, sizeof in, "%s/in.jsonl", f.tmp);
    snprintf(out, sizeof out, "%s/out.jsonl", f.tmp);
    tu_write_file(in, c.data, c.len);
    tu_write_file(out, "previous\n", 9);
    for (int k = 0; k < 20; k++) {
        /* per-row mode keeps the process busy long enough to be killed mid-way */
        snprintf(cmd, sizeof cmd,
                 "%s score --input '%s' --output '%s' --model '%s' --device cpu --per-row --quiet "
                 "& p=$!; sleep 0.%02d; kill -%s $p; wait $p",
                 tu_cli(), in, out, f.model, 5 + (k * 37) % 90, k % 4 == 3 ? "INT" : "KILL");
        char *log;
        int rc = tu_run(cmd, &log);
        cr_expect_neq(rc, 0, "the run was not interrupted (rc %d): %s", rc, log);
        free(log);
        char *now = read_all(out);
        cr_expect_str_eq(now, "previous\n", "output changed by an interrupted run");
        free(now);
    }
    char *inow = read_all(in);
    cr_expect_eq(strcmp(inow, c.data), 0, "input modified");
    free(inow);
    clip_buf_free(&c);
    tu_rmtree(f.tmp);
}

/* Disk full (a file-size limit): a clear error, no partial output, the old one intact. */
Test(score_atomic, file_size_limit_gives_clear_error) {
    fixture f;
    setup(&f);
    clip_buf c = {0};
    for (int i = 0; i < 200; i++)
        clip_buf_printf(&c, "{\"image_path\":\"%s\",\"text\":\"caption %d with some padding text\"}\n",
                        f.img, i);
    char in[4400], out[4400], cmd[32768];
    snprintf(in, sizeof in, "%s/in.jsonl", f.tmp);
    snprintf(out, sizeof out, "%s/out.jsonl", f.tmp);
    tu_write_file(in, c.data, c.len);
    tu_write_file(out, "previous\n", 9);
    /* ulimit -f counts 1024-byte blocks: 8 KiB is less than the ~30 KiB output */
    snprintf(cmd, sizeof cmd,
             "ulimit -f 8; %s score --input '%s' --output '%s' --model '%s' --device cpu --quiet",
             tu_cli(), in, out, f.model);
    char *log;
    int rc = tu_run(cmd, &log);
    cr_expect_eq(rc, 1, "rc %d: %s", rc, log);
    cr_expect(strstr(log, "write") || strstr(log, "large"), "unclear error: %s", log);
    free(log);
    char *now = read_all(out);
    cr_expect_str_eq(now, "previous\n");
    free(now);
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -v -x -e in.jsonl -e out.jsonl -e model -e a.png -e sub", f.tmp);
    cr_expect_neq(tu_run(cmd, &log), 0, "temporary files left behind: %s", log);
    free(log);
    clip_buf_free(&c);
    tu_rmtree(f.tmp);
}

/* ------------------------------------------------------------------ download script */

Test(download, fake_hub_with_resume_and_token, .timeout = 120) {
    fixture f;
    setup(&f);
    char script[4400], server[4400], cmd[32768];
    const char *src = getenv("CLIPEVAL_SRC"); /* the repository root (set by the Makefile) */
    if (!src || !*src) src = ".";
    snprintf(script, sizeof script, "%s/weights_tools/hf_download.sh", src);
    snprintf(server, sizeof server, "%s/tests/hf_fake_server.py", src);
    cr_assert(tu_exists(script), "%s not found (set CLIPEVAL_SRC)", script);
    if (system("command -v python3 >/dev/null && command -v curl >/dev/null") != 0) {
        if (tu_under_ci()) cr_assert_fail("python3 and curl are needed (CI=true)");
        cr_skip_test("python3 or curl missing");
    }
    /* serve the tiny model folder as acme/tiny-clip; cut the first weights download halfway.
     * The server prints its port once it listens: reading it through a FIFO waits exactly
     * that long (and ends at once if the server dies first), with no polling. */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && mkfifo port.fifo && (FAKE_HUB_TOKEN=sekret FAKE_HUB_CUT_FILE=model.safetensors "
             "python3 '%s' acme/tiny-clip '%s' > port.fifo & echo $! > pid.txt) && "
             "read port < port.fifo && echo \"$port\" > port.txt && test -s port.txt",
             f.tmp, server, f.model);
    cr_assert_eq(system(cmd), 0, "fake hub did not start");
    char *port_s;
    char pp[4400];
    snprintf(pp, sizeof pp, "%s/port.txt", f.tmp);
    port_s = read_all(pp);
    int port = atoi(port_s);
    free(port_s);
    char *log;
    /* without the token: a clear access error */
    snprintf(cmd, sizeof cmd,
             "HF_ENDPOINT=http://127.0.0.1:%d HF_HUB_CACHE='%s/hub' HF_TOKEN= bash '%s' acme/tiny-clip",
             port, f.tmp, script);
    cr_expect_neq(tu_run(cmd, &log), 0);
    cr_expect(strstr(log, "HF_TOKEN"), "%s", log);
    free(log);
    snprintf(cmd, sizeof cmd,
             "HF_ENDPOINT=http://127.0.0.1:%d HF_HUB_CACHE='%s/hub' HF_TOKEN=sekret bash '%s' "
             "acme/tiny-clip",
             port, f.tmp, script);
    int rc = tu_run(cmd, &log);
    cr_expect_eq(rc, 0, "%s", log);
    cr_expect(strstr(log, "resuming"), "the cut download was not resumed:\n%s", log);
    free(log);
    snprintf(cmd, sizeof cmd,
             "cd '%s/hub/models--acme--tiny-clip' && test -f refs/main && "
             "cmp snapshots/$(cat refs/main)/model.safetensors '%s/model.safetensors' && "
             "test -L snapshots/$(cat refs/main)/config.json && ls blobs | grep -c . ",
             f.tmp, f.model);
    cr_expect_eq(tu_run(cmd, &log), 0, "cache layout: %s", log);
    free(log);
    /* then score with the model id, found in the HF cache */
    char content[4096], args[16384];
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\"a\"}\n", f.img);
    snprintf(pp, sizeof pp, "%s/in.jsonl", f.tmp);
    tu_write_file(pp, content, strlen(content));
    snprintf(cmd, sizeof cmd,
             "HF_HUB_CACHE='%s/hub' %s score --input '%s' --output '%s/o.jsonl' --model acme/tiny-clip",
             f.tmp, tu_cli(), pp, f.tmp);
    cr_expect_eq(tu_run(cmd, &log), 0, "%s", log);
    free(log);
    snprintf(cmd, sizeof cmd, "kill $(cat '%s/pid.txt')", f.tmp);
    (void)!system(cmd);
    (void)args;
    tu_rmtree(f.tmp);
}

/* ------------------------------------------------------------------ model folder checks */

/* A preprocessor whose crop size is not the model's image size is refused, by one check shared
 * by `score` and `embed --images`. */
Test(score_rules, crop_size_mismatch_is_refused) {
    fixture f;
    setup(&f);
    char p[4400], cmd[32768], content[4096], *log;
    snprintf(p, sizeof p, "%s/preprocessor_config.json", f.model);
    const char *cfg = "{\"crop_size\": 48, \"do_center_crop\": true, \"do_normalize\": true, "
                      "\"do_resize\": true, \"image_mean\": [0.5, 0.5, 0.5], "
                      "\"image_std\": [0.5, 0.5, 0.5], \"resample\": 3, \"size\": 48}";
    unlink(p); /* not through the symlinked shared file */
    tu_write_file(p, cfg, strlen(cfg));
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\"a\"}\n", f.img);
    cr_expect_eq(score_file(&f, "in.jsonl", content, NULL, &log), 1, "%s", log);
    cr_expect(strstr(log, "crop size 48x48 does not match the model's image size 32"), "%s", log);
    free(log);
    snprintf(cmd, sizeof cmd, "%s embed --model '%s' --images '%s' --out '%s/e.npy'", tu_cli(),
             f.model, f.img, f.tmp);
    cr_expect_eq(tu_run(cmd, &log), 1, "%s", log);
    cr_expect(strstr(log, "crop size 48x48 does not match the model's image size 32"), "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}
