/* test_score.c — `clipeval score` end to end: the golden DataFlow outputs, every row rule,
 * FileStorage naming, formats, atomic output, the per-row path, and the download script. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clip.h"
#include "json.h"
#include "scorer.h"
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
    tu_tiny_model(f->model);
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
    /* one warning per distinct image or cell problem, at its first line, with its row count;
     * none for blank texts */
    static const int warned[] = {2, 3, 4, 5, 6, 7, 8, 11};
    for (size_t k = 0; k < sizeof warned / sizeof warned[0]; k++) {
        char needle[64];
        snprintf(needle, sizeof needle, "in.jsonl:%d:", warned[k]);
        const char *w = strstr(log, needle);
        cr_expect(w != NULL, "no warning for line %d:\n%s", warned[k], log);
        cr_expect(!w || !strstr(w + 1, needle), "two warnings for line %d:\n%s", warned[k], log);
    }
    const char *m = strstr(log, "in.jsonl:2:");
    cr_expect(m && strstr(m, "missing.png") && strstr(m, "score 0.0 on 2 rows with this image"),
              "line 12 shares line 2's image:\n%s", log);
    cr_expect(strstr(log, "in.jsonl:12:") == NULL, "the same image warned twice:\n%s", log);
    cr_expect(strstr(log, "in.jsonl:9:") == NULL && strstr(log, "in.jsonl:10:") == NULL,
              "blank text must not warn:\n%s", log);
    cr_expect(strstr(log, "failures by reason: 3 rows image file not found (2 distinct)"), "%s", log);
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
    cr_expect(strstr(log, "the table has 'image_path', 'caption'; set it with --text-key"), "%s", log);
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
    /* cross-format: JSONL in, CSV out by the output's extension (pandas' writer) */
    char args[16384], in[4400];
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\"a\",\"k\":[1,\"x\"]}\n", f.img);
    snprintf(in, sizeof in, "%s/in.jsonl", f.tmp);
    tu_write_file(in, content, strlen(content));
    snprintf(args, sizeof args, "--input '%s' --output '%s/cross.csv' --model '%s' --device cpu", in,
             f.tmp, f.model);
    rc = run_score(args, &log);
    cr_expect_eq(rc, 0, "%s", log);
    free(log);
    char cp[4400];
    snprintf(cp, sizeof cp, "%s/cross.csv", f.tmp);
    out = read_all(cp);
    cr_expect(strncmp(out, "image_path,text,k,clip_score\n", 29) == 0, "%s", out);
    cr_expect(strstr(out, ",a,\"[1, 'x']\",0."), "%s", out);
    free(out);
    tu_rmtree(f.tmp);
}

/* DataFlow's FileStorage: step 0 reads the first entry file, step K >= 1 reads
 * {cache_path}/{prefix}_step{K}.{cache_type}; both write step K+1; cache_type defaults to jsonl. */
Test(score_rules, filestorage_steps) {
    fixture f;
    setup(&f);
    char in[4400], args[32768], p[4600], *log;
    snprintf(in, sizeof in, "%s/first.jsonl", f.tmp);
    clip_buf c = {0};
    for (int i = 0; i < 18; i++) clip_buf_printf(&c, "{\"image_path\":\"%s\",\"text\":\"t%d\"}\n", f.img, i);
    tu_write_file(in, c.data, c.len);
    clip_buf_free(&c);
    /* step 0 (the default): the first entry file -> step1 */
    snprintf(args, sizeof args,
             "--first-entry-file '%s' --cache-path '%s/fs' --file-name-prefix p --model '%s' --device cpu",
             in, f.tmp, f.model);
    cr_assert_eq(run_score(args, &log), 0, "%s", log);
    free(log);
    snprintf(p, sizeof p, "%s/fs/p_step1.jsonl", f.tmp);
    char *s1 = read_all(p), *lines[32];
    cr_expect_eq(split_lines(s1, lines, 32), 18);
    free(s1);
    /* step 1 reads p_step1 (cut to 5 rows here), not the first entry file, and writes p_step2 */
    char five[4096] = "";
    for (int i = 0; i < 5; i++) {
        char row[600];
        snprintf(row, sizeof row, "{\"image_path\":\"%s\",\"text\":\"u%d\"}\n", f.img, i);
        strcat(five, row);
    }
    tu_write_file(p, five, strlen(five));
    snprintf(args, sizeof args,
             "--first-entry-file '%s' --cache-path '%s/fs' --file-name-prefix p --step 1 "
             "--model '%s' --device cpu",
             in, f.tmp, f.model);
    cr_assert_eq(run_score(args, &log), 0, "%s", log);
    cr_expect(strstr(log, "5 rows"), "%s", log);
    free(log);
    snprintf(p, sizeof p, "%s/fs/p_step2.jsonl", f.tmp);
    char *s2 = read_all(p);
    cr_expect_eq(split_lines(s2, lines, 32), 5, "step 2 has the 5 rows of step 1");
    cr_expect(strstr(lines[0], "\"text\":\"u0\""), "%s", lines[0]);
    free(s2);
    /* --first-entry-file is not needed past step 0; without p_step2.csv step 2 fails clearly */
    snprintf(args, sizeof args,
             "--cache-path '%s/fs' --file-name-prefix p --step 2 --cache-type csv --model '%s'",
             f.tmp, f.model);
    cr_expect_eq(run_score(args, &log), 1);
    cr_expect(strstr(log, "fs/p_step2.csv: cannot open"), "%s", log);
    free(log);
    /* step 0 without a first entry file is a usage error naming what step K reads */
    snprintf(args, sizeof args, "--cache-path '%s/fs' --file-name-prefix p --model '%s'", f.tmp, f.model);
    cr_expect_eq(run_score(args, &log), 2);
    cr_expect(strstr(log, "step 0 reads --first-entry-file"), "%s", log);
    free(log);
    /* a CSV first entry file with the default cache type: FileStorage writes jsonl */
    snprintf(p, sizeof p, "%s/first.csv", f.tmp);
    char csv[4600];
    snprintf(csv, sizeof csv, "image_path,text\n%s,a\n", f.img);
    tu_write_file(p, csv, strlen(csv));
    snprintf(args, sizeof args,
             "--first-entry-file '%s' --cache-path '%s/fs' --file-name-prefix q --model '%s' --device cpu",
             p, f.tmp, f.model);
    cr_assert_eq(run_score(args, &log), 0, "%s", log);
    free(log);
    snprintf(p, sizeof p, "%s/fs/q_step1.jsonl", f.tmp);
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
    /* pixels: edge_100x60 has 6000 (no image readable: exit status 3, the output written) */
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--max-pixels 5999", &log), 3, "%s", log);
    cr_expect(strstr(log, "in.jsonl:1:") && strstr(log, "on 2 rows") && strstr(log, "0 scored"),
              "%s", log);
    free(log);
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--max-pixels 6000", &log), 0, "%s", log);
    cr_expect(strstr(log, "2 scored"), "%s", log);
    free(log);
    /* file size */
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--max-file-bytes 100", &log), 3, "%s", log);
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

/* (A run interrupted at each phase, by each signal: tests/test_signals.c.) */

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

/* ------------------------------------------------------------------ outputs that are not plain files */

/* A two-row input next to the fixture's images; returns its path in `in`. */
static void two_rows(fixture *f, char *in, size_t cap) {
    char content[4096];
    snprintf(content, sizeof content,
             "{\"image_path\":\"%s\",\"text\":\"a cat\"}\n{\"image_path\":\"%s\",\"text\":\"a dog\"}\n",
             f->img, f->img);
    snprintf(in, cap, "%s/in.jsonl", f->tmp);
    tu_write_file(in, content, strlen(content));
}

static int is_link(const char *p) {
    struct stat sb;
    return lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode);
}

/* A symlink stays a link: the temporary file and the rename happen at its final target, which
 * may not exist yet and may sit in another folder. */
Test(score_files, symlink_output_stays_a_link) {
    fixture f;
    setup(&f);
    char in[4400], cmd[32768], link[4400], target[4400], *log;
    two_rows(&f, in, sizeof in);
    snprintf(target, sizeof target, "%s/sub/real.jsonl", f.tmp);
    snprintf(link, sizeof link, "%s/link.jsonl", f.tmp);
    tu_write_file(target, "previous\n", 9);
    cr_assert_eq(symlink("sub/real.jsonl", link), 0);
    snprintf(cmd, sizeof cmd, "--input '%s' --output '%s' --model '%s' --device cpu", in, link, f.model);
    cr_assert_eq(run_score(cmd, &log), 0, "%s", log);
    free(log);
    cr_expect(is_link(link), "the symlink was replaced");
    char *t = read_all(target);
    cr_expect(strstr(t, "\"text\":\"a dog\",\"clip_score\":0."), "target not written: %s", t);
    free(t);
    /* a dangling link: its target is created */
    snprintf(link, sizeof link, "%s/dangling.jsonl", f.tmp);
    cr_assert_eq(symlink("sub/new.jsonl", link), 0);
    snprintf(cmd, sizeof cmd, "--input '%s' --output '%s' --model '%s' --device cpu", in, link, f.model);
    cr_assert_eq(run_score(cmd, &log), 0, "%s", log);
    free(log);
    snprintf(target, sizeof target, "%s/sub/new.jsonl", f.tmp);
    cr_expect(is_link(link) && tu_exists(target), "dangling link not followed");
    snprintf(cmd, sizeof cmd, "ls -A '%s' '%s/sub' | grep -c tmp-", f.tmp, f.tmp);
    cr_expect_neq(tu_run(cmd, &log), 0, "temporary files left: %s", log);
    free(log);
    tu_rmtree(f.tmp);
}

/* A character device (through a symlink, so nothing system-wide is at stake), a FIFO and
 * /dev/stdout are written directly, never replaced. */
Test(score_files, device_fifo_and_dev_stdout_are_written_directly) {
    fixture f;
    setup(&f);
    char in[4400], cmd[32768], p[4400], *log;
    two_rows(&f, in, sizeof in);
    snprintf(p, sizeof p, "%s/null", f.tmp);
    cr_assert_eq(symlink("/dev/null", p), 0);
    snprintf(cmd, sizeof cmd, "--input '%s' --output '%s' --model '%s' --device cpu", in, p, f.model);
    cr_expect_eq(run_score(cmd, &log), 0, "%s", log);
    free(log);
    struct stat sb;
    cr_expect(is_link(p) && stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode), "/dev/null replaced");
    /* a FIFO: its reader gets the rows; the FIFO stays a FIFO. The reader and the writer block
     * on each other's open, so their order does not matter. */
    snprintf(p, sizeof p, "%s/fifo", f.tmp);
    cr_assert_eq(mkfifo(p, 0644), 0);
    snprintf(cmd, sizeof cmd,
             "cat '%s' > '%s/got' & %s score --input '%s' --output '%s' --cache-type jsonl "
             "--model '%s' --device cpu --quiet; rc=$?; wait; exit $rc",
             p, f.tmp, tu_cli(), in, p, f.model);
    cr_expect_eq(tu_run(cmd, &log), 0, "%s", log);
    free(log);
    cr_expect(stat(p, &sb) == 0 && S_ISFIFO(sb.st_mode), "the FIFO was replaced");
    snprintf(p, sizeof p, "%s/got", f.tmp);
    char *got = read_all(p), *lines[4];
    cr_expect_eq(split_lines(got, lines, 4), 2);
    cr_expect(strstr(got, "\"clip_score\":0."), "%s", got);
    free(got);
    /* /dev/stdout on a pipe */
    snprintf(cmd, sizeof cmd,
             "%s score --input '%s' --output /dev/stdout --model '%s' --device cpu --quiet "
             "2>/dev/null | grep -c clip_score",
             tu_cli(), in, f.model);
    cr_expect_eq(tu_run(cmd, &log), 0);
    cr_expect_eq(atoi(log), 2, "%s", log);
    free(log);
    cr_expect(is_link("/dev/stdout"), "/dev/stdout replaced");
    tu_rmtree(f.tmp);
}

/* `--output -` writes stdout and `--input -` reads stdin (a pipe or a file); both take their
 * type from --cache-type, which they require. */
Test(score_files, dash_is_stdin_and_stdout) {
    fixture f;
    setup(&f);
    char in[4400], cmd[32768], *log;
    two_rows(&f, in, sizeof in);
    snprintf(cmd, sizeof cmd,
             "cat '%s' | %s score --input - --output - --cache-type jsonl --model '%s' --device cpu "
             "--quiet 2>/dev/null",
             in, tu_cli(), f.model);
    cr_assert_eq(tu_run(cmd, &log), 0, "%s", log);
    char *lines[4];
    cr_expect_eq(split_lines(log, lines, 4), 2, "%s", log);
    cr_expect(strncmp(lines[1], "{\"image_path\":", 14) == 0 && strstr(lines[1], "\"a dog\",\"clip_score\":0."),
              "%s", lines[1]);
    free(log);
    /* stdin redirected from a file, output to a file, CSV by --cache-type */
    snprintf(cmd, sizeof cmd,
             "printf 'image_path,text\\n%s,x\\n' | %s score --input - --cache-type csv --output "
             "'%s/o.csv' --model '%s' --device cpu",
             f.img, tu_cli(), f.tmp, f.model);
    cr_expect_eq(tu_run(cmd, &log), 0, "%s", log);
    cr_expect(strstr(log, "1 rows, 1 scored"), "%s", log);
    free(log);
    snprintf(cmd, sizeof cmd, "%s score --input - --output '%s/o.jsonl' --model '%s' --device cpu "
                              "--quiet < '%s'", tu_cli(), f.tmp, f.model, in);
    cr_expect_eq(tu_run(cmd, &log), 2, "%s", log);
    cr_expect(strstr(log, "--input - reads stdin: give its type with --cache-type"), "%s", log);
    free(log);
    snprintf(cmd, sizeof cmd, "%s score --input - --cache-type jsonl --output '%s/o.jsonl' "
                              "--model '%s' --device cpu --quiet < '%s'", tu_cli(), f.tmp, f.model, in);
    cr_expect_eq(tu_run(cmd, &log), 0, "%s", log);
    free(log);
    snprintf(cmd, sizeof cmd, "%s score --input '%s' --output - --model '%s'", tu_cli(), in, f.model);
    cr_expect_eq(tu_run(cmd, &log), 2, "%s", log);
    cr_expect(strstr(log, "--output - writes stdout: give its type with --cache-type"), "%s", log);
    free(log);
    /* a FIFO given by name cannot be read several times: a clear error pointing at --input - */
    char fifo[4400];
    snprintf(fifo, sizeof fifo, "%s/in.fifo.jsonl", f.tmp);
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    snprintf(cmd, sizeof cmd, "cat '%s' > '%s' & %s score --input '%s' --output '%s/o2.jsonl' "
                              "--model '%s' --quiet; rc=$?; wait; exit $rc",
             in, fifo, tu_cli(), fifo, f.tmp, f.model);
    cr_expect_eq(tu_run(cmd, &log), 1, "%s", log);
    cr_expect(strstr(log, "not a regular file") && strstr(log, "--input -"), "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

/* One rule for the output's type: the output's extension wins, a --cache-type that disagrees is
 * an error, an output without a known extension takes --cache-type, else the input's type. */
Test(score_files, output_type_rule) {
    fixture f;
    setup(&f);
    char in[4400], cmd[32768], p[4400], *log;
    two_rows(&f, in, sizeof in);
    snprintf(cmd, sizeof cmd, "--input '%s' --output '%s/o.csv' --cache-type json --model '%s'", in,
             f.tmp, f.model);
    cr_expect_eq(run_score(cmd, &log), 2, "%s", log);
    cr_expect(strstr(log, "--cache-type json conflicts with the output's extension (csv)"), "%s", log);
    free(log);
    snprintf(p, sizeof p, "%s/o.csv", f.tmp);
    cr_expect(!tu_exists(p), "written despite the conflict");
    /* the extension decides (CSV), with or without an agreeing --cache-type */
    snprintf(cmd, sizeof cmd, "--input '%s' --output '%s/o.csv' --cache-type csv --model '%s' --device cpu",
             in, f.tmp, f.model);
    cr_expect_eq(run_score(cmd, &log), 0, "%s", log);
    free(log);
    char *o = read_all(p);
    cr_expect(strncmp(o, "image_path,text,clip_score\n", 27) == 0, "%s", o);
    free(o);
    /* no extension: --cache-type, else the input's type */
    snprintf(cmd, sizeof cmd, "--input '%s' --output '%s/plain' --cache-type json --model '%s' --device cpu",
             in, f.tmp, f.model);
    cr_expect_eq(run_score(cmd, &log), 0, "%s", log);
    free(log);
    snprintf(p, sizeof p, "%s/plain", f.tmp);
    o = read_all(p);
    cr_expect(strncmp(o, "[\n  {\n", 6) == 0, "JSON expected: %s", o);
    free(o);
    snprintf(cmd, sizeof cmd, "--input '%s' --output '%s/plain2' --model '%s' --device cpu", in,
             f.tmp, f.model);
    cr_expect_eq(run_score(cmd, &log), 0, "%s", log);
    free(log);
    snprintf(p, sizeof p, "%s/plain2", f.tmp);
    o = read_all(p);
    cr_expect(strncmp(o, "{\"image_path\":", 14) == 0, "JSONL expected: %s", o);
    free(o);
    /* a table type clipeval cannot write */
    snprintf(cmd, sizeof cmd, "--input '%s' --output '%s/o.parquet' --model '%s'", in, f.tmp, f.model);
    cr_expect_eq(run_score(cmd, &log), 2, "%s", log);
    cr_expect(strstr(log, "not 'parquet'"), "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

/* ------------------------------------------------------------------ exit statuses */

Test(score_exit, no_image_could_be_read) {
    fixture f;
    setup(&f);
    char content[4096], *log;
    snprintf(content, sizeof content,
             "{\"image_path\":\"nowhere/a.png\",\"text\":\"a\"}\n{\"image_path\":\"nowhere/b.png\",\"text\":\"\"}\n"
             "{\"image_path\":\"nowhere/a.png\",\"text\":\"c\"}\n");
    cr_expect_eq(score_file(&f, "in.jsonl", content, NULL, &log), 3, "%s", log);
    cr_expect(strstr(log, "no image could be read; first failure: nowhere/a.png: cannot open: No such "
                          "file or directory (relative paths are read from the current directory: "
                          "set --image-root?)"),
              "%s", log);
    free(log);
    /* DataFlow's semantics are kept: every row written, each 0.0 */
    char *out = out_text(&f, ".jsonl"), *lines[8];
    cr_assert_eq(split_lines(out, lines, 8), 3);
    for (int i = 0; i < 3; i++) cr_expect_eq(json_number(lines[i], "clip_score"), 0.0, "%s", lines[i]);
    free(out);
    /* image cells that are no paths at all count too */
    cr_expect_eq(score_file(&f, "in.jsonl", "{\"image_path\":null,\"text\":\"a\"}\n", NULL, &log), 3);
    cr_expect(strstr(log, "first failure: line 1: image value is null, not a path"), "%s", log);
    free(log);
    /* one readable image is enough for success */
    snprintf(content, sizeof content,
             "{\"image_path\":\"nowhere/a.png\",\"text\":\"a\"}\n{\"image_path\":\"%s\",\"text\":\"b\"}\n", f.img);
    cr_expect_eq(score_file(&f, "in.jsonl", content, NULL, &log), 0, "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

Test(score_exit, strict_fails_after_writing) {
    fixture f;
    setup(&f);
    char content[4096], *log;
    snprintf(content, sizeof content,
             "{\"image_path\":\"nowhere/a.png\",\"text\":\"a\"}\n{\"image_path\":\"%s\",\"text\":\"b\"}\n", f.img);
    cr_expect_eq(score_file(&f, "in.jsonl", content, "--strict", &log), 4, "%s", log);
    cr_expect(strstr(log, "--strict: 1 rows failed (1 image, 0 text)"), "%s", log);
    free(log);
    char *out = out_text(&f, ".jsonl"), *lines[4];
    cr_expect_eq(split_lines(out, lines, 4), 2, "the output is written");
    free(out);
    /* a text above the limit is a failure too */
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\"a long caption\"}\n", f.img);
    cr_expect_eq(score_file(&f, "in.jsonl", content, "--strict --max-text-bytes 4", &log), 4, "%s", log);
    free(log);
    /* blank texts are not failures (DataFlow scores them 0.0 without a warning) */
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\" \"}\n{\"image_path\":\"%s\",\"text\":\"b\"}\n",
             f.img, f.img);
    cr_expect_eq(score_file(&f, "in.jsonl", content, "--strict", &log), 0, "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

Test(score_exit, statuses_are_documented) {
    char cmd[4400], *log;
    snprintf(cmd, sizeof cmd, "%s score --help", tu_cli());
    cr_assert_eq(tu_run(cmd, &log), 0);
    static const char *const needles[] = {"Exit status:", "  0    success", "  1    error",
                                          "  2    bad command line", "  3    no image could be read",
                                          "  4    --strict", "130, 143, 129"};
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        cr_expect(strstr(log, needles[i]), "--help lacks '%s'", needles[i]);
    free(log);
    const char *src = getenv("CLIPEVAL_SRC");
    snprintf(cmd, sizeof cmd, "%s/README.md", src && *src ? src : ".");
    char *readme = read_all(cmd);
    cr_expect(strstr(readme, "| 3 |") && strstr(readme, "| 4 |") && strstr(readme, "| 130 / 143 / 129 |"),
              "README lacks the exit status table");
    free(readme);
}

/* ------------------------------------------------------------------ logs */

/* One missing image used by 4,000 rows: one warning with the count, and a summary by reason. */
Test(score_logs, one_warning_per_distinct_image) {
    fixture f;
    setup(&f);
    clip_buf c = {0};
    for (int i = 0; i < 4000; i++)
        clip_buf_printf(&c, "{\"image_path\":\"%s\",\"text\":\"t %d\"}\n",
                        i % 1000 == 7 ? f.img : "gone.png", i);
    char *log;
    cr_assert_eq(score_file(&f, "in.jsonl", c.data, NULL, &log), 0, "%s", log);
    size_t warnings = 0;
    for (const char *q = log; (q = strstr(q, "warning:")) != NULL; q++) warnings++;
    cr_expect_eq(warnings, 1, "%zu warnings:\n%.2000s", warnings, log);
    cr_expect(strstr(log, "in.jsonl:1: failed to load image: gone.png: cannot open") &&
                  strstr(log, "score 0.0 on 3996 rows with this image"),
              "%.2000s", log);
    cr_expect(strstr(log, "failures by reason: 3996 rows image file not found"), "%.2000s", log);
    free(log);
    clip_buf_free(&c);
    tu_rmtree(f.tmp);
}

Test(score_logs, log_failures_lists_every_failed_row) {
    fixture f;
    setup(&f);
    char content[4096], args[8400], p[4400], *log;
    snprintf(content, sizeof content,
             "{\"image_path\":\"gone.png\",\"text\":\"a\"}\n{\"image_path\":\"%s\",\"text\":\"long text\"}\n"
             "{\"image_path\":5,\"text\":\"b\"}\n{\"image_path\":\"gone.png\",\"text\":\"c\"}\n"
             "{\"image_path\":\"%s\",\"text\":\"d\"}\n",
             f.img, f.img);
    snprintf(p, sizeof p, "%s/failed.jsonl", f.tmp);
    snprintf(args, sizeof args, "--max-text-bytes 5 --log-failures '%s'", p);
    cr_assert_eq(score_file(&f, "in.jsonl", content, args, &log), 0, "%s", log);
    free(log);
    char *got = read_all(p), *lines[8];
    cr_assert_eq(split_lines(got, lines, 8), 4);
    cr_expect_str_eq(lines[0], "{\"line\": 1, \"path\": \"gone.png\", \"reason\": \"gone.png: cannot "
                               "open: No such file or directory\"}");
    cr_expect(strstr(lines[1], "\"line\": 2,") && strstr(lines[1], "a.png\"") &&
                  strstr(lines[1], "text of 9 bytes is above the --max-text-bytes limit"), "%s", lines[1]);
    cr_expect_str_eq(lines[2], "{\"line\": 3, \"path\": null, \"reason\": \"image value is not a "
                               "string, not a path\"}");
    cr_expect(strstr(lines[3], "\"line\": 4, \"path\": \"gone.png\""), "%s", lines[3]);
    free(got);
    /* a clean run writes an empty log: the log always belongs to this output */
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\"d\"}\n", f.img);
    cr_assert_eq(score_file(&f, "in.jsonl", content, args, &log), 0, "%s", log);
    free(log);
    got = read_all(p);
    cr_expect_str_eq(got, "");
    free(got);
    tu_rmtree(f.tmp);
}

Test(score_logs, missing_key_lists_the_columns) {
    fixture f;
    setup(&f);
    char *log;
    cr_expect_eq(score_file(&f, "in.csv", "img,caption,id\nx.png,a,1\n", NULL, &log), 1);
    cr_expect(strstr(log, "column 'image_path' not found (KeyError in DataFlow); the table has "
                          "'img', 'caption', 'id'; set it with --image-key"),
              "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

/* A UTF-8 BOM (Excel, Windows tools) is accepted at the start of a JSONL or JSON file and kept
 * in the default output (pandas-compat output, like pandas' writer, has none). */
Test(score_logs, bom_is_accepted_and_kept) {
    fixture f;
    setup(&f);
    char content[4096], *log;
    snprintf(content, sizeof content, "\xEF\xBB\xBF{\"image_path\":\"%s\",\"text\":\"a\"}\n", f.img);
    cr_assert_eq(score_file(&f, "in.jsonl", content, NULL, &log), 0, "%s", log);
    cr_expect(strstr(log, "1 rows, 1 scored"), "%s", log);
    free(log);
    char *out = out_text(&f, ".jsonl");
    cr_expect(strncmp(out, "\xEF\xBB\xBF{\"image_path\":", 17) == 0, "BOM not kept: %s", out);
    free(out);
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--pandas-compat", &log), 0, "%s", log);
    free(log);
    out = out_text(&f, ".jsonl");
    cr_expect(strncmp(out, "{\"image_path\":", 14) == 0, "pandas writes no BOM: %s", out);
    free(out);
    snprintf(content, sizeof content, "\xEF\xBB\xBF[{\"image_path\":\"%s\",\"text\":\"a\"}]\n", f.img);
    cr_assert_eq(score_file(&f, "in.json", content, NULL, &log), 0, "%s", log);
    free(log);
    out = out_text(&f, ".json");
    cr_expect(strncmp(out, "\xEF\xBB\xBF[{\"image_path\":", 18) == 0, "BOM not kept: %s", out);
    free(out);
    tu_rmtree(f.tmp);
}

/* OUT.rejects belongs to this output: a clean --skip-invalid run removes an earlier one. */
Test(score_logs, clean_run_removes_old_rejects) {
    fixture f;
    setup(&f);
    char content[4096], p[4400], *log;
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\"a\"}\n{oops\n", f.img);
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--skip-invalid", &log), 0, "%s", log);
    free(log);
    snprintf(p, sizeof p, "%s/out.jsonl.rejects", f.tmp);
    cr_assert(tu_exists(p));
    snprintf(content, sizeof content, "{\"image_path\":\"%s\",\"text\":\"a\"}\n", f.img);
    cr_assert_eq(score_file(&f, "in.jsonl", content, "--skip-invalid", &log), 0, "%s", log);
    cr_expect(!tu_exists(p), "an earlier run's rejects stayed");
    cr_expect(strstr(log, "removed") && strstr(log, "out.jsonl.rejects"), "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

/* The progress line shows on a terminal (here a pseudo-terminal from script(1)), counting the
 * rows actually scored; never when stderr is not a terminal. */
Test(score_logs, progress_only_on_a_terminal) {
    fixture f;
    setup(&f);
    if (system("command -v script >/dev/null") != 0) {
        if (tu_under_ci()) cr_assert_fail("script(1) (util-linux) is needed (CI=true)");
        cr_skip_test("script(1) missing");
    }
    char in[4400], cmd[32768], *log;
    two_rows(&f, in, sizeof in);
    snprintf(cmd, sizeof cmd,
             "script -qec \"%s score --input '%s' --output '%s/o.jsonl' --model '%s' --device cpu\" "
             "/dev/null",
             tu_cli(), in, f.tmp, f.model);
    cr_expect_eq(tu_run(cmd, &log), 0, "%s", log);
    cr_expect(strstr(log, "] 2/2 rows") && strstr(log, "rows/s"), "no progress line:\n%s", log);
    free(log);
    /* two windows of rows in every state (a new or a cached image and text, a missing image, a
     * null cell, a blank text): the count ends at exactly the table's rows */
    clip_buf c = {0};
    for (int i = 0; i < 4100; i++) {
        if (i % 7 == 3)
            clip_buf_printf(&c, "{\"image_path\":\"%s/gone.png\",\"text\":\"g%d\"}\n", f.tmp, i);
        else if (i % 11 == 5)
            clip_buf_printf(&c, "{\"image_path\":null,\"text\":\"n%d\"}\n", i);
        else if (i % 13 == 6)
            clip_buf_printf(&c, "{\"image_path\":\"%s\",\"text\":\" \"}\n", f.img);
        else
            clip_buf_printf(&c, "{\"image_path\":\"%s/%s\",\"text\":\"t%d\"}\n", f.tmp,
                            i % 2 ? "a.png" : "sub/b.png", i % 3000);
    }
    snprintf(in, sizeof in, "%s/many.jsonl", f.tmp);
    tu_write_file(in, c.data, c.len);
    clip_buf_free(&c);
    snprintf(cmd, sizeof cmd,
             "script -qec \"%s score --input '%s' --output '%s/o.jsonl' --model '%s' --device cpu\" "
             "/dev/null",
             tu_cli(), in, f.tmp, f.model);
    cr_expect_eq(tu_run(cmd, &log), 0, "%s", log);
    cr_expect(strstr(log, "] 4100/4100 rows"), "the count does not end at 4100:\n%.3000s", log);
    const char *over = strstr(log, "/4100 rows");
    for (; over; over = strstr(over + 1, "/4100 rows")) {
        const char *d = over;
        while (d > log && d[-1] >= '0' && d[-1] <= '9') d--;
        cr_expect_leq(atol(d), 4100, "a count above the table's rows");
    }
    free(log);
    snprintf(cmd, sizeof cmd, "--input '%s' --output '%s/o.jsonl' --model '%s' --device cpu", in,
             f.tmp, f.model);
    cr_expect_eq(run_score(cmd, &log), 0, "%s", log);
    cr_expect(!strstr(log, "rows/s  ETA"), "progress on a pipe:\n%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

/* ------------------------------------------------------------------ the C entry point */

/* An embedding program stops a run by setting the flag it passed: no output, no temp file. */
Test(score_api, cancel_flag_stops_without_output) {
    fixture f;
    setup(&f);
    char in[4400], out[4400], *log;
    two_rows(&f, in, sizeof in);
    snprintf(out, sizeof out, "%s/api.jsonl", f.tmp);
    clip_score_options o;
    clip_score_options_init(&o);
    o.input = in;
    o.output = out;
    o.model = f.model;
    o.device = CLIP_DEVICE_CPU;
    o.log = NULL;
    volatile sig_atomic_t stop = 1;
    o.cancel = &stop;
    clip_score_stats st;
    clip_error e = {0};
    cr_expect_eq(clip_score_table(&o, &st, &e), CLIP_ERR_IO);
    cr_expect(strstr(e.msg, "interrupted"), "%s", e.msg);
    cr_expect(!tu_exists(out));
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c tmp-", f.tmp);
    cr_expect_neq(tu_run(cmd, &log), 0, "temporary file left: %s", log);
    free(log);
    stop = 0;
    cr_expect_eq(clip_score_table(&o, &st, &e), CLIP_OK, "%s", e.msg);
    cr_expect(st.rows == 2 && st.scored == 2 && st.images_read == 1, "%zu %zu %zu", st.rows,
              st.scored, st.images_read);
    tu_rmtree(f.tmp);
}
