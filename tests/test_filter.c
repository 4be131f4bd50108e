/* test_filter.c — `clipeval filter`: DataFlow-MM's ImageClipFilter (--mode threshold) and
 * CLIPScoreFilter (--mode keep-ratio) against the fp64 goldens, numpy's percentile, the
 * threshold edge, every upstream defect's defined result, formats, FileStorage naming, outputs
 * and exit statuses. (numpy itself checks the percentile end to end: tests/python/test_filters.py.) */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clip.h"
#include "filter.h"
#include "json.h"
#include "scorer.h"
#include "testutil.h"
#include "util.h"

/* ------------------------------------------------------------------ helpers */

static char *slurp(const char *path) {
    char *d;
    size_t n;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(path, 0, &d, &n, &e), CLIP_OK, "%s", e.msg);
    return d;
}

static size_t count_lines(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

typedef struct fixture {
    char tmp[4096], model[4300];
} fixture;

/* The tiny model and two images (a.png, b.jpg) in a scratch folder, which is the runs' cwd. */
static void setup(fixture *f) {
    tu_tmpdir(f->tmp, sizeof f->tmp);
    snprintf(f->model, sizeof f->model, "%s/model", f->tmp);
    tu_tiny_model(f->model);
    char a[4096], b[4096], cmd[16384];
    tu_shared_path(a, sizeof a, "golden/images/edge_100x60.png");
    tu_shared_path(b, sizeof b, "golden/images/cake.jpg");
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/a.png' && cp '%s' '%s/b.jpg'", a, f->tmp, b, f->tmp);
    cr_assert_eq(system(cmd), 0);
}

static void put(const fixture *f, const char *name, const char *content) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", f->tmp, name);
    tu_write_file(p, content, strlen(content));
}

static char *get(const fixture *f, const char *name) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", f->tmp, name);
    return slurp(p);
}

static int exists(const fixture *f, const char *name) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", f->tmp, name);
    return tu_exists(p);
}

/* `clipeval filter ARGS` in the fixture's folder, with its model on the CPU. */
static int run_filter(const fixture *f, const char *args, char **log) {
    char cmd[32768];
    snprintf(cmd, sizeof cmd, "cd '%s' && OMP_NUM_THREADS=1 '%s' filter --model '%s' --device cpu %s",
             f->tmp, tu_cli(), f->model, args);
    return tu_run(cmd, log);
}

/* The --scores-out lines: values, statuses and kept flags (at most cap rows). */
typedef struct srow {
    double sim;
    char status[32];
    int kept;
    long long row, line;
} srow;

static size_t read_scores(const fixture *f, const char *name, srow *out, size_t cap) {
    char *text = get(f, name);
    size_t n = 0;
    for (char *p = text; *p && n < cap;) {
        char *nl = strchr(p, '\n');
        cr_assert(nl, "%s: unterminated line", name);
        json_doc *d;
        clip_error e = {0};
        cr_assert_eq(json_parse(p, (size_t)(nl - p), name, 0, &d, &e), CLIP_OK, "%s", e.msg);
        const json_value *v = json_doc_root(d);
        srow *r = &out[n++];
        const char *st;
        const json_value *sim = json_get(v, "similarity");
        cr_assert(sim);
        r->sim = NAN;
        if (sim->type != JSON_NULL) cr_assert(json_get_number(v, "similarity", &r->sim));
        cr_assert(json_get_string(v, "status", &st));
        snprintf(r->status, sizeof r->status, "%s", st);
        cr_assert(json_get_bool(v, "kept", &r->kept));
        cr_assert(json_get_int(v, "row", &r->row) && json_get_int(v, "line", &r->line));
        json_doc_free(d);
        p = nl + 1;
    }
    free(text);
    return n;
}

/* ------------------------------------------------------------------ the policies */

/* np.percentile(v, (1 - keep_ratio) * 100) as numpy 1.24 printed it (repr), bit for bit; the
 * last case takes numpy's second lerp branch (t >= 0.5), where a + (b - a) * t would differ. */
Test(filter_policy, percentile_is_numpys_bit_for_bit) {
    static const struct {
        double v[8];
        size_t n;
        double keep, want;
    } cases[] = {
        {{1.0, 2.0, 3.0, 4.0, 5.0}, 5, 0.8, 1.7999999999999998},
        {{0.1, 0.1, 0.1, 0.2, 0.3}, 5, 0.5, 0.1},
        {{0.3}, 1, 0.25, 0.3},
        {{0.3, -0.2, 0.1}, 3, 1.0, -0.2},
        {{0.3, -0.2, 0.1}, 3, 0.0, 0.3},
        {{-0.05, 0.02, 0.01, -0.01}, 4, 0.3, 0.010999999999999996},
        {{0.11, 0.52, 0.33, 0.74, 0.95}, 5, 0.35, 0.652},
        {{0.06794117108707688, -0.07735723390642413, 0.04296913440107991}, 3, 0.508,
         0.041043912508159856},
    };
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v[8];
        memcpy(v, cases[i].v, sizeof v);
        double got = filter_percentile(v, cases[i].n, cases[i].keep);
        cr_expect(got == cases[i].want, "case %zu: %.17g, numpy %.17g", i, got, cases[i].want);
        if (fabs(got - cases[i].want) > worst) worst = fabs(got - cases[i].want);
    }
    fprintf(stderr, "[filter] percentile: 8 numpy cases, max |error| = %.3g\n", worst);
}

Test(filter_policy, values_and_keep_rules) {
    /* ImageCLIPEvaluator, ImageClipFilter, CLIPScoreFilter on the same cosines */
    cr_expect(filter_value(CLIP_MODE_SCORE, ROW_SCORED, -0.5) == 0.25);
    cr_expect(filter_value(CLIP_MODE_SCORE, ROW_IMAGE_FAILED, 0.9) == 0.0);
    cr_expect(filter_value(CLIP_MODE_THRESHOLD, ROW_SCORED, -0.5) == 0.0);
    cr_expect(filter_value(CLIP_MODE_THRESHOLD, ROW_SCORED, 0.3) == 0.3);
    cr_expect(filter_value(CLIP_MODE_THRESHOLD, ROW_SCORED, 1.5) == 1.0);
    cr_expect(filter_value(CLIP_MODE_THRESHOLD, ROW_EMPTY_TEXT, 0.3) == 0.0);
    cr_expect(isnan(filter_value(CLIP_MODE_THRESHOLD, ROW_SCORED, NAN)));
    cr_expect(filter_value(CLIP_MODE_KEEP_RATIO, ROW_SCORED, -0.5) == -0.5);
    cr_expect(isnan(filter_value(CLIP_MODE_KEEP_RATIO, ROW_TEXT_TOO_LONG, 0.3)));
    cr_expect(filter_keeps(CLIP_MODE_SCORE, NAN, 1.0));
    cr_expect(filter_keeps(CLIP_MODE_THRESHOLD, 0.25, 0.25));
    cr_expect(!filter_keeps(CLIP_MODE_THRESHOLD, nextafter(0.25, 0), 0.25));
    cr_expect(!filter_keeps(CLIP_MODE_KEEP_RATIO, NAN, -1.0));
    cr_expect(!filter_keeps(CLIP_MODE_KEEP_RATIO, 0.0, NAN));
    cr_expect_str_eq(row_outcome_name(ROW_EMPTY_TEXT), "empty_text");
}

/* ------------------------------------------------------------------ golden (vitb32-synth) */

/* ImageClipFilter over edge_rows: the similarity of every scored row is clamp(2 score_f64 - 1,
 * 0, 1); failures are 0.0; the rows kept are exactly those at or above the threshold, written as
 * pandas writes them (the golden pandas line without its clip_score member). Captions null or
 * absent (golden rows 10, 11: the evaluator scored "None" and "nan") are empty text here. */
Test(filter_golden, threshold_edge_rows, .timeout = 300) {
    char model[4096], gdir[4096], input[4096], scores[4096], tmp[4096], cmd[32768];
    tu_synth_dir(model, sizeof model, "vitb32-synth");
    tu_shared_path(gdir, sizeof gdir, "golden");
    tu_shared_path(input, sizeof input, "golden/scores/edge_rows.input.jsonl");
    tu_shared_path(scores, sizeof scores, "golden/scores/edge_rows.scores.json");
    tu_tmpdir(tmp, sizeof tmp);
    const double thr = 0.04;
    snprintf(cmd, sizeof cmd,
             "cd '%s' && OMP_NUM_THREADS=1 '%s' filter --mode threshold --threshold 0.04 --input "
             "'%s' --output '%s/out.jsonl' --scores-out '%s/s.jsonl' --model '%s' --device cpu "
             "--pandas-compat",
             gdir, tu_cli(), input, tmp, tmp, model);
    char *log;
    cr_assert_eq(tu_run(cmd, &log), 0, "%s", log);
    cr_expect(strstr(log, "text is missing (null or NaN) (similarity 0.0 on 2 rows"), "%s", log);
    cr_expect(strstr(log, "empty text (similarity 0.0 on 3 rows"), "%s", log);
    json_doc *sd;
    clip_error e = {0};
    cr_assert_eq(json_parse_file(scores, 0, 0, &sd, &e), CLIP_OK, "%s", e.msg);
    const json_value *rows = json_get(json_doc_root(sd), "rows");
    fixture f;
    snprintf(f.tmp, sizeof f.tmp, "%s", tmp);
    srow got[64];
    size_t n = read_scores(&f, "s.jsonl", got, 64);
    cr_assert_eq(n, rows->u.arr.n);
    clip_buf want = {0};
    double worst = 0;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        const json_value *g = &rows->u.arr.items[i];
        const char *status, *line;
        json_get_string(g, "status", &status);
        int missing_caption = i == 10 || i == 11;
        if (!strcmp(status, "scored") && !missing_caption) {
            double s;
            cr_assert(json_get_number(g, "score_f64", &s));
            double sim = 2 * s - 1;
            sim = sim < 0 ? 0 : sim > 1 ? 1 : sim;
            double d = fabs(got[i].sim - sim);
            if (d > worst) worst = d;
            cr_expect(d <= 2e-6, "row %zu: similarity %.17g, golden %.17g", i, got[i].sim, sim);
            cr_expect_str_eq(got[i].status, "scored");
        } else {
            cr_expect(got[i].sim == 0.0, "row %zu (%s): %.17g", i, status, got[i].sim);
            cr_expect_str_eq(got[i].status, !strcmp(status, "image_error") ? "image_failed" : "empty_text");
        }
        cr_expect_eq(got[i].kept, got[i].sim >= thr, "row %zu", i);
        if (!got[i].kept) continue;
        kept++;
        json_get_string(g, "pandas_line", &line);
        const char *cut = strstr(line, ",\"clip_score\":");
        cr_assert(cut);
        clip_buf_append(&want, line, (size_t)(cut - line));
        clip_buf_puts(&want, "}\n");
    }
    char p[4200];
    snprintf(p, sizeof p, "%s/out.jsonl", tmp);
    char *out = slurp(p);
    cr_expect(kept >= 5 && kept < n, "%zu of %zu rows kept: choose another threshold", kept, n);
    cr_expect_str_eq(out, want.data ? want.data : "", "the kept rows differ from pandas'");
    fprintf(stderr, "[golden] filter threshold edge_rows: %zu rows, %zu kept, max |similarity - "
                    "fp64| = %.3g\n", n, kept, worst);
    free(out);
    free(log);
    clip_buf_free(&want);
    json_doc_free(sd);
    tu_rmtree(tmp);
}

/* ------------------------------------------------------------------ threshold mode */

/* A row exactly at the threshold is kept; one ulp above drops it. */
Test(filter_threshold, row_exactly_at_the_threshold_is_kept) {
    fixture f;
    setup(&f);
    put(&f, "in.jsonl",
        "{\"image\":\"a.png\",\"caption\":\"a cat\"}\n{\"image\":\"b.jpg\",\"caption\":\"blue car\"}\n"
        "{\"image\":\"b.jpg\",\"caption\":\"the sun\"}\n{\"image\":\"a.png\",\"caption\":\"red\"}\n");
    char *log, args[8192];
    cr_assert_eq(run_filter(&f, "--mode threshold --threshold -1 --input in.jsonl --output o.jsonl "
                                "--scores-out s.jsonl --quiet", &log), 0, "%s", log);
    free(log);
    srow s[4];
    cr_assert_eq(read_scores(&f, "s.jsonl", s, 4), 4);
    size_t top = 0;
    for (size_t i = 1; i < 4; i++)
        if (s[i].sim > s[top].sim) top = i;
    cr_assert(s[top].sim > 0, "no positive similarity to test with");
    char at[40], above[40];
    clip_format_double_repr(s[top].sim, at);
    clip_format_double_repr(nextafter(s[top].sim, 2.0), above);
    snprintf(args, sizeof args, "--mode threshold --threshold %s --input in.jsonl --output o.jsonl "
                                "--scores-out s.jsonl --quiet", at);
    cr_assert_eq(run_filter(&f, args, &log), 0, "%s", log);
    free(log);
    char *out = get(&f, "o.jsonl"), *in = get(&f, "in.jsonl");
    cr_expect_eq(count_lines(out), 1, "at %s: %s", at, out);
    char *line = in;
    for (size_t i = 0; i < top; i++) line = strchr(line, '\n') + 1;
    cr_expect(!strncmp(out, line, strlen(out)), "kept %s, want row %zu", out, top);
    free(out);
    snprintf(args, sizeof args, "--mode threshold --threshold %s --input in.jsonl --output o.jsonl "
                                "--quiet", above);
    cr_assert_eq(run_filter(&f, args, &log), 0, "%s", log);
    out = get(&f, "o.jsonl");
    cr_expect_str_eq(out, "", "one ulp above %s kept: %s", at, out);
    fprintf(stderr, "[filter] threshold edge: %s kept, %s dropped\n", at, above);
    free(out);
    free(in);
    free(log);
    tu_rmtree(f.tmp);
}

/* Upstream ImageClipFilter tests `not text or text.strip() == ""` on the raw caption: falsy
 * values (None, 0, False, [], 0.0) are empty text with a warning, and it crashes on a NaN
 * (.strip() of a float) and on any other non-string. Here a missing caption (NaN, null,
 * absent) is an empty text too: 0.0 with a warning, kept only when the threshold is <= 0 (as
 * upstream keeps a 0.0 there); other values are str()'d as ImageCLIPEvaluator does. */
Test(filter_threshold, missing_and_odd_captions) {
    fixture f;
    setup(&f);
    put(&f, "in.jsonl",
        "{\"image\":\"a.png\",\"caption\":NaN}\n{\"image\":\"a.png\",\"caption\":null}\n"
        "{\"image\":\"a.png\"}\n{\"image\":\"a.png\",\"caption\":\" \\t\"}\n"
        "{\"image\":\"a.png\",\"caption\":5}\n{\"image\":\"a.png\",\"caption\":\"5\"}\n"
        "{\"image\":\"nope.png\",\"caption\":null}\n"
        "{\"image\":\"a.png\",\"caption\":0}\n{\"image\":\"a.png\",\"caption\":false}\n"
        "{\"image\":\"a.png\",\"caption\":[]}\n{\"image\":\"a.png\",\"caption\":0.0}\n"
        "{\"image\":\"a.png\",\"caption\":[0]}\n{\"image\":\"a.png\",\"caption\":true}\n");
    char *log;
    cr_assert_eq(run_filter(&f, "--mode threshold --threshold 0 --input in.jsonl --output o.jsonl "
                                "--scores-out s.jsonl --log-failures f.jsonl", &log), 0, "%s", log);
    cr_expect(strstr(log, "in.jsonl:1: text is missing (null or NaN) (similarity 0.0 on 3 rows"),
              "%s", log);
    cr_expect(strstr(log, "in.jsonl:4: empty text (similarity 0.0 on 5 rows"), "%s", log);
    cr_expect(strstr(log, "nope.png"), "%s", log); /* the image decides first */
    cr_expect(strstr(log, "8 empty text"), "%s", log);
    srow s[13];
    cr_assert_eq(read_scores(&f, "s.jsonl", s, 13), 13);
    static const int empty[] = {0, 1, 2, 3, 7, 8, 9, 10};
    for (int i = 0; i < 8; i++)
        cr_expect(s[empty[i]].sim == 0.0 && !strcmp(s[empty[i]].status, "empty_text"), "row %d",
                  empty[i]);
    cr_expect_str_eq(s[4].status, "scored");
    cr_expect(s[4].sim == s[5].sim, "5 and \"5\" differ: %.17g %.17g", s[4].sim, s[5].sim);
    cr_expect_str_eq(s[6].status, "image_failed");
    cr_expect(!strcmp(s[11].status, "scored") && !strcmp(s[12].status, "scored"), "[0], true");
    char *out = get(&f, "o.jsonl"), *flog = get(&f, "f.jsonl");
    cr_expect_eq(count_lines(out), 13, "threshold 0 keeps every 0.0: %s", out);
    cr_expect_eq(count_lines(flog), 9, "%s", flog); /* 8 empty texts + 1 image */
    cr_expect(strstr(flog, "\"reason\": \"text is missing (null or NaN)\""), "%s", flog);
    free(out);
    free(flog);
    free(log);
    cr_assert_eq(run_filter(&f, "--mode threshold --threshold 1e-300 --input in.jsonl --output "
                                "o.jsonl --quiet", &log), 0, "%s", log);
    out = get(&f, "o.jsonl");
    size_t want = 0;
    for (int i = 0; i < 13; i++) want += s[i].sim > 0;
    cr_expect_eq(count_lines(out), want, "%s", out);
    free(out);
    free(log);
    tu_rmtree(f.tmp);
}

/* Verbatim (default) and pandas outputs in every format, dropped rows anywhere, and an output
 * with no row at all. */
Test(filter_threshold, formats_and_empty_outputs) {
    fixture f;
    setup(&f);
    /* b.jpg with "the sun" is the tiny model's one similarity above 0.01 here */
    put(&f, "in.csv", "image,caption,n\r\nnope.png,x,1\r\nb.jpg,the sun,2\r\nnope.png,y,3\r\n");
    put(&f, "in.json", "[\n  {\"image\": \"nope.png\", \"caption\": \"x\"},\n  {\"image\": "
                       "\"b.jpg\", \"caption\": \"the sun\"}\n]\n");
    char *log, *out;
    cr_assert_eq(run_filter(&f, "--mode threshold --threshold 0.01 --input in.csv --output o.csv "
                                "--quiet", &log), 0, "%s", log);
    free(log);
    out = get(&f, "o.csv");
    cr_expect_str_eq(out, "image,caption,n\r\nb.jpg,the sun,2\r\n");
    free(out);
    cr_assert_eq(run_filter(&f, "--mode threshold --threshold 0.01 --input in.csv --output o.csv "
                                "--pandas-compat --quiet", &log), 0, "%s", log);
    free(log);
    out = get(&f, "o.csv");
    cr_expect_str_eq(out, "image,caption,n\nb.jpg,the sun,2\n");
    free(out);
    cr_assert_eq(run_filter(&f, "--mode threshold --threshold 0.01 --input in.json --output o.json "
                                "--quiet", &log), 0, "%s", log);
    free(log);
    out = get(&f, "o.json");
    cr_expect_str_eq(out, "[\n  {\"image\": \"b.jpg\", \"caption\": \"the sun\"}\n]\n");
    free(out);
    /* nothing kept: each format's empty table */
    static const struct {
        const char *in, *out, *flags, *want;
    } empty[] = {
        {"in.csv", "e.csv", "", "image,caption,n\r\n"},
        {"in.csv", "e.csv", "--pandas-compat", "image,caption,n\n"},
        {"in.json", "e.json", "", "[\n]\n"},
        {"in.json", "e.json", "--pandas-compat", "[\n\n]"},
        {"in.csv", "e.jsonl", "", "\n"}, /* another format: pandas' writer, to_json of no rows */
    };
    for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
        char args[4096];
        snprintf(args, sizeof args, "--mode threshold --threshold 0.9 --input %s --output %s %s "
                                    "--quiet", empty[i].in, empty[i].out, empty[i].flags);
        cr_assert_eq(run_filter(&f, args, &log), 0, "%s", log);
        free(log);
        out = get(&f, empty[i].out);
        cr_expect_str_eq(out, empty[i].want, "%s", args);
        free(out);
    }
    tu_rmtree(f.tmp);
}

/* ------------------------------------------------------------------ keep-ratio mode */

/* Ties at the cut are all kept, NaN rows never; the cut is the percentile of the non-NaN
 * similarities (at 20: between the tied values), and the similarity column holds the raw cos. */
Test(filter_keep_ratio, ties_and_nan_rows) {
    fixture f;
    setup(&f);
    clip_buf in = {0};
    for (int i = 0; i < 4; i++) /* four identical pairs: a tie */
        clip_buf_puts(&in, "{\"image\":\"a.png\",\"question\":\"a \",\"answer\":\"cat\"}\n");
    clip_buf_puts(&in, "{\"image\":\"b.jpg\",\"question\":\"a \",\"answer\":\"cat\"}\n"
                       "{\"image\":\"a.png\",\"question\":\"red\",\"answer\":\"\"}\n"
                       "{\"image\":\"b.jpg\",\"question\":\"the \",\"answer\":\"sun\"}\n"
                       "{\"image\":\"nope.png\",\"question\":\"a \",\"answer\":\"cat\"}\n"
                       "{\"image\":\"a.png\",\"question\":\"\",\"answer\":\"\"}\n"
                       "{\"image\":\"a.png\",\"question\":null,\"answer\":null}\n");
    put(&f, "in.jsonl", in.data);
    clip_buf_free(&in);
    srow s[10];
    double sorted[10];
    for (int k = 0; k <= 10; k++) {
        char args[4096], *log;
        double keep = k / 10.0;
        snprintf(args, sizeof args, "--mode keep-ratio --keep-ratio %g --input in.jsonl --output "
                                    "o.jsonl --scores-out s.jsonl --quiet", keep);
        cr_assert_eq(run_filter(&f, args, &log), 0, "%s", log);
        free(log);
        cr_assert_eq(read_scores(&f, "s.jsonl", s, 10), 10);
        size_t nv = 0, kept = 0;
        for (int i = 0; i < 10; i++) {
            if (!isnan(s[i].sim)) sorted[nv++] = s[i].sim;
            kept += (size_t)s[i].kept;
        }
        cr_assert_eq(nv, 7, "7 rows have a similarity");
        for (int i = 7; i < 10; i++) cr_expect(isnan(s[i].sim) && !s[i].kept, "row %d", i);
        cr_expect_str_eq(s[7].status, "image_failed");
        cr_expect_str_eq(s[8].status, "empty_text");
        cr_expect_str_eq(s[9].status, "empty_text");
        for (int i = 1; i < 4; i++) cr_expect(s[i].sim == s[0].sim, "tie broken at row %d", i);
        double cut = filter_percentile(sorted, nv, keep);
        for (int i = 0; i < 7; i++) cr_expect_eq(s[i].kept, s[i].sim >= cut, "keep %g row %d", keep, i);
        /* the output: the kept rows with their raw cos */
        char *out = get(&f, "o.jsonl");
        cr_expect_eq(count_lines(out), kept, "keep %g", keep);
        if (s[0].kept) {
            char want[256], num[40];
            clip_format_double_repr(s[0].sim, num);
            snprintf(want, sizeof want, "{\"image\":\"a.png\",\"question\":\"a \",\"answer\":\"cat\","
                                        "\"clipscore\":%s}\n", num);
            cr_expect(!strncmp(out, want, strlen(want)), "%s\nwant %s", out, want);
        }
        if (k == 10) cr_expect_eq(kept, 7, "keep-ratio 1 keeps every valid row");
        if (k == 0) cr_expect_geq(kept, 1, "keep-ratio 0 keeps the maximum (and its ties)");
        free(out);
    }
    tu_rmtree(f.tmp);
}

/* text = question + answer with no separator; a missing part counts as "" (upstream: NaN + str
 * raises TypeError); whitespace-only text is scored (upstream checks == ""). */
Test(filter_keep_ratio, question_plus_answer) {
    fixture f;
    setup(&f);
    put(&f, "in.csv",
        "image,question,answer\na.png,a photo ,of a cat\na.png,,a photo of a cat\n"
        "a.png,a photo of a cat,\na.png,\" \",\" \"\nb.jpg,5,2\nb.jpg,52,\n");
    char *log;
    cr_assert_eq(run_filter(&f, "--mode keep-ratio --keep-ratio 1 --input in.csv --output o.csv "
                                "--scores-out s.jsonl --output-key sim --quiet", &log), 0, "%s", log);
    free(log);
    srow s[6];
    cr_assert_eq(read_scores(&f, "s.jsonl", s, 6), 6);
    cr_expect(s[0].sim == s[1].sim && s[1].sim == s[2].sim, "%.17g %.17g %.17g", s[0].sim,
              s[1].sim, s[2].sim);
    cr_expect_str_eq(s[3].status, "scored"); /* "  " */
    cr_expect(s[4].sim == s[5].sim, "str(5) + str(2) is \"52\"");
    char *out = get(&f, "o.csv");
    cr_expect(!strncmp(out, "image,question,answer,sim\na.png,a photo ,of a cat,", 49), "%s", out);
    cr_expect_eq(count_lines(out), 7);
    free(out);
    tu_rmtree(f.tmp);
}

/* Upstream appends a NaN for a skipped row and then the batch's own list, which holds it
 * again (the list outgrows the table when a batch mixes valid and invalid rows). Here every
 * row has exactly one value whatever the batch size, the per-row path agrees, and the output
 * is the same bytes. */
Test(filter_keep_ratio, one_value_per_row_whatever_the_batches) {
    fixture f;
    setup(&f);
    clip_buf in = {0};
    for (int i = 0; i < 12; i++)
        clip_buf_printf(&in, "{\"image\":\"%s\",\"question\":\"%s\",\"answer\":\"%s\"}\n",
                        i % 3 == 1 ? "nope.png" : i % 2 ? "b.jpg" : "a.png",
                        i % 5 == 2 ? "" : i % 2 ? "a " : "the ", i % 5 == 2 ? "" : i % 4 ? "cat" : "sun");
    put(&f, "in.jsonl", in.data);
    clip_buf_free(&in);
    static const char *const variants[] = {"--batch-size 1", "--batch-size 2", "--batch-size 32",
                                           "--per-row"};
    char *first_out = NULL, *first_scores = NULL;
    for (size_t v = 0; v < 4; v++) {
        char args[4096], *log;
        snprintf(args, sizeof args, "--mode keep-ratio --keep-ratio 0.5 --input in.jsonl --output "
                                    "o.jsonl --scores-out s.jsonl %s --quiet", variants[v]);
        cr_assert_eq(run_filter(&f, args, &log), 0, "%s", log);
        free(log);
        char *out = get(&f, "o.jsonl"), *sc = get(&f, "s.jsonl");
        cr_expect_eq(count_lines(sc), 12, "%s", variants[v]);
        if (!first_out) {
            first_out = out;
            first_scores = sc;
            continue;
        }
        cr_expect_str_eq(out, first_out, "%s", variants[v]);
        cr_expect_str_eq(sc, first_scores, "%s", variants[v]);
        free(out);
        free(sc);
    }
    srow s[12];
    cr_assert_eq(read_scores(&f, "s.jsonl", s, 12), 12);
    for (int i = 0; i < 12; i++)
        cr_expect_eq(isnan(s[i].sim), i % 3 == 1 || i % 5 == 2, "row %d: %.17g", i, s[i].sim);
    free(first_out);
    free(first_scores);
    tu_rmtree(f.tmp);
}

/* With no similarity at all upstream crashes (filtered_dataframe is unbound). Here: an empty
 * table, a warning, exit 0; or exit 3 when that is because no image could be read. */
Test(filter_keep_ratio, no_similarity_at_all) {
    fixture f;
    setup(&f);
    put(&f, "blank.jsonl", "{\"image\":\"a.png\",\"question\":\"\",\"answer\":\"\"}\n"
                           "{\"image\":\"a.png\",\"question\":null,\"answer\":NaN}\n");
    put(&f, "bad.csv", "image,question,answer\nnope.png,a,b\nnope2.png,c,d\n");
    char *log;
    cr_assert_eq(run_filter(&f, "--mode keep-ratio --input blank.jsonl --output o.jsonl "
                                "--scores-out s.jsonl", &log), 0, "%s", log);
    cr_expect(strstr(log, "no row has a similarity"), "%s", log);
    char *out = get(&f, "o.jsonl");
    cr_expect_str_eq(out, "");
    free(out);
    free(log);
    cr_assert_eq(run_filter(&f, "--mode keep-ratio --input blank.jsonl --output o.jsonl "
                                "--pandas-compat --quiet", &log), 0, "%s", log);
    out = get(&f, "o.jsonl");
    cr_expect_str_eq(out, "\n"); /* pandas' to_json(lines=True) of no rows */
    free(out);
    free(log);
    cr_assert_eq(run_filter(&f, "--mode keep-ratio --input bad.csv --output o.csv", &log), 3, "%s",
                 log);
    cr_expect(strstr(log, "no image could be read") && strstr(log, "nope.png"), "%s", log);
    cr_expect(strstr(log, "no similarity, dropped"), "%s", log);
    out = get(&f, "o.csv");
    cr_expect_str_eq(out, "image,question,answer,clipscore\n");
    free(out);
    free(log);
    cr_assert_eq(run_filter(&f, "--mode threshold --input bad.csv --output o.csv --caption-key "
                                "answer --strict", &log), 3, "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

/* ------------------------------------------------------------------ files and steps */

/* DataFlow's FileStorage naming and --step, and the per-row path, in both modes; --strict. */
Test(filter_files, filestorage_steps_per_row_and_strict) {
    fixture f;
    setup(&f);
    put(&f, "first.jsonl", "{\"image\":\"a.png\",\"caption\":\"a\",\"question\":\"a\",\"answer\":\"b\"}\n"
                           "{\"image\":\"b.jpg\",\"caption\":\"blue car\",\"question\":\"c\",\"answer\":\"d\"}\n"
                           "{\"image\":\"no.png\",\"caption\":\"a\",\"question\":\"a\",\"answer\":\"b\"}\n");
    char *log;
    cr_assert_eq(run_filter(&f, "--mode threshold --threshold 0 --first-entry-file first.jsonl "
                                "--cache-path c --file-name-prefix p --quiet", &log), 0, "%s", log);
    free(log);
    cr_expect(exists(&f, "c/p_step1.jsonl"));
    cr_assert_eq(run_filter(&f, "--mode keep-ratio --keep-ratio 1 --cache-path c --file-name-prefix "
                                "p --step 1 --quiet --strict", &log), 4, "%s", log);
    cr_expect(strstr(log, "--strict: 1 rows failed (1 image, 0 text)"), "%s", log);
    free(log);
    char *batched = get(&f, "c/p_step2.jsonl");
    cr_expect_eq(count_lines(batched), 2, "%s", batched);
    cr_expect(strstr(batched, "\"clipscore\":"), "%s", batched);
    cr_assert_eq(run_filter(&f, "--mode keep-ratio --keep-ratio 1 --cache-path c --file-name-prefix "
                                "p --step 1 --quiet --per-row", &log), 0, "%s", log);
    free(log);
    char *per_row = get(&f, "c/p_step2.jsonl");
    cr_expect_str_eq(per_row, batched);
    free(per_row);
    free(batched);
    cr_assert_eq(run_filter(&f, "--mode threshold --threshold 0 --input first.jsonl --output "
                                "t.jsonl --per-row --quiet", &log), 0, "%s", log);
    free(log);
    char *t = get(&f, "t.jsonl"), *s1 = get(&f, "c/p_step1.jsonl");
    cr_expect_str_eq(t, s1);
    free(t);
    free(s1);
    tu_rmtree(f.tmp);
}

/* `clipeval filter --mode keep-ratio` on in.jsonl -> o.jsonl (+ s.jsonl), paused at the "pass2"
 * test point (testhook.h): every value known, no kept row written yet. Returns once the run is
 * there. With resume, *resume_w is the pipe end whose byte lets it go on; else only a signal
 * ends it. */
static pid_t start_at_pass2(const fixture *f, int resume, int *resume_w) {
    int ready[2], go[2] = {-1, -1};
    cr_assert_eq(pipe(ready), 0);
    if (resume) cr_assert_eq(pipe(go), 0);
    char in[4400], out[4400], sc[4400], logp[4400];
    snprintf(in, sizeof in, "%s/in.jsonl", f->tmp);
    snprintf(out, sizeof out, "%s/o.jsonl", f->tmp);
    snprintf(sc, sizeof sc, "%s/s.jsonl", f->tmp);
    snprintf(logp, sizeof logp, "%s/run.log", f->tmp);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGTERM, SIG_DFL);
        close(ready[0]);
        dup2(ready[1], 3);
        if (resume) {
            close(go[1]);
            dup2(go[0], 4);
            setenv("CLIPEVAL_TEST_RESUME_FD", "4", 1);
        }
        int lf = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(lf, 1);
        dup2(lf, 2);
        setenv("CLIPEVAL_TEST_PAUSE", "pass2", 1);
        setenv("CLIPEVAL_TEST_READY_FD", "3", 1);
        setenv("OMP_NUM_THREADS", "1", 1);
        execl(tu_cli(), "clipeval", "filter", "--mode", "keep-ratio", "--input", in, "--output",
              out, "--scores-out", sc, "--model", f->model, "--device", "cpu", "--quiet",
              (char *)NULL);
        _exit(127);
    }
    close(ready[1]);
    if (resume) {
        close(go[0]);
        *resume_w = go[1];
    }
    char buf[16];
    ssize_t n;
    do {
        n = read(ready[0], buf, sizeof buf);
    } while (n < 0 && errno == EINTR);
    close(ready[0]);
    cr_assert(n > 0 && !strncmp(buf, "pass2\n", 6), "the run did not reach pass2");
    return pid;
}

/* How many temporary files of ours sit in the fixture's folder. */
static int temps(const fixture *f) {
    char cmd[4600], *out;
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c '\\.tmp-'", f->tmp);
    tu_run(cmd, &out);
    int n = atoi(out);
    free(out);
    return n;
}

/* Between the passes the input changes: the second pass notices (more rows, fewer rows), the
 * run fails and the previous output stays. */
static void change_between_passes(const fixture *f, const char *new_content) {
    char in[4400], out[4400], logp[4400];
    snprintf(in, sizeof in, "%s/in.jsonl", f->tmp);
    snprintf(out, sizeof out, "%s/o.jsonl", f->tmp);
    snprintf(logp, sizeof logp, "%s/run.log", f->tmp);
    tu_write_file(out, "previous\n", 9);
    int go;
    pid_t pid = start_at_pass2(f, 1, &go);
    tu_write_file(in, new_content, strlen(new_content));
    cr_assert_eq(write(go, "g", 1), 1);
    close(go);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    char *log = slurp(logp);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d: %s", st, log);
    cr_expect(strstr(log, "the file changed while it was being read"), "%s", log);
    char *now = slurp(out);
    cr_expect_str_eq(now, "previous\n");
    cr_expect(!exists(f, "s.jsonl") && temps(f) == 0, "files left by a failed run");
    free(now);
    free(log);
}

Test(filter_files, input_changed_between_the_passes) {
    fixture f;
    setup(&f);
    const char *two = "{\"image\":\"a.png\",\"question\":\"a\",\"answer\":\"b\"}\n"
                      "{\"image\":\"b.jpg\",\"question\":\"c\",\"answer\":\"d\"}\n";
    put(&f, "in.jsonl", two);
    change_between_passes(&f, "{\"image\":\"a.png\",\"question\":\"a\",\"answer\":\"b\"}\n"
                              "{\"image\":\"b.jpg\",\"question\":\"c\",\"answer\":\"d\"}\n"
                              "{\"image\":\"b.jpg\",\"question\":\"c\",\"answer\":\"e\"}\n");
    put(&f, "in.jsonl", two);
    change_between_passes(&f, "{\"image\":\"a.png\",\"question\":\"a\",\"answer\":\"b\"}\n");
    tu_rmtree(f.tmp);
}

/* SIGTERM while the values wait for the second pass: the output's and --scores-out's temporary
 * files are removed, the previous output stays, the shell sees 143. */
Test(process, filter_sigterm_between_the_passes) {
    fixture f;
    setup(&f);
    put(&f, "in.jsonl", "{\"image\":\"a.png\",\"question\":\"a\",\"answer\":\"b\"}\n");
    put(&f, "o.jsonl", "previous\n");
    pid_t pid = start_at_pass2(&f, 0, NULL);
    cr_expect_eq(temps(&f), 2, "the output's and --scores-out's temporary files");
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "status %d", st);
    char *now = get(&f, "o.jsonl");
    cr_expect_str_eq(now, "previous\n");
    cr_expect(temps(&f) == 0 && !exists(&f, "s.jsonl"), "temporary files left");
    free(now);
    tu_rmtree(f.tmp);
}

/* --scores-out is written like the output: complete or not at all; a run that fails writes
 * neither; it cannot share stdout with the output. */
Test(filter_files, scores_out_errors) {
    fixture f;
    setup(&f);
    put(&f, "in.jsonl", "{\"image\":\"a.png\",\"caption\":\"a\"}\n");
    put(&f, "file", "x");
    char *log;
    cr_assert_eq(run_filter(&f, "--mode threshold --input in.jsonl --output o.jsonl --scores-out "
                                "file/s.jsonl", &log), 1, "%s", log);
    cr_expect(strstr(log, "--scores-out: "), "%s", log);
    cr_expect(!exists(&f, "o.jsonl"), "an output was written");
    free(log);
    cr_assert_eq(run_filter(&f, "--mode threshold --input in.jsonl --output o.jsonl --scores-out s.jsonl "
                                "--image-key nope", &log), 1, "%s", log);
    cr_expect(!exists(&f, "s.jsonl") && !exists(&f, "o.jsonl"), "files written by a failed run");
    free(log);
    cr_assert_eq(run_filter(&f, "--mode threshold --input in.jsonl --output - --cache-type jsonl "
                                "--scores-out -", &log), 2, "%s", log);
    cr_expect(strstr(log, "--output - and --scores-out - would both write stdout"), "%s", log);
    free(log);
    cr_assert_eq(run_filter(&f, "--mode threshold --input in.jsonl --output o.jsonl --scores-out - "
                                "--log-failures -", &log), 2, "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

/* ------------------------------------------------------------------ errors */

Test(filter_errors, command_line) {
    fixture f;
    setup(&f);
    put(&f, "in.jsonl", "{\"image\":\"a.png\",\"caption\":\"a\",\"question\":\"a\",\"answer\":\"b\"}\n");
    static const struct {
        const char *args, *needle;
    } bad[] = {
        {"--input in.jsonl --output o.jsonl", "--mode threshold or --mode keep-ratio is required"},
        {"--mode top-k --input in.jsonl --output o.jsonl", "bad --mode 'top-k'"},
        {"--mode threshold --threshold abc --input in.jsonl --output o.jsonl", "bad --threshold 'abc'"},
        {"--mode threshold --threshold nan --input in.jsonl --output o.jsonl", "bad --threshold 'nan'"},
        {"--mode threshold --threshold", "unknown or incomplete option '--threshold'"},
        {"--mode keep-ratio --keep-ratio 1.5 --input in.jsonl --output o.jsonl", "bad --keep-ratio '1.5'"},
        {"--mode keep-ratio --keep-ratio -0.1 --input in.jsonl --output o.jsonl", "bad --keep-ratio '-0.1'"},
        {"--mode keep-ratio --keep-ratio x --input in.jsonl --output o.jsonl", "bad --keep-ratio 'x'"},
        {"--mode keep-ratio --threshold 0.3 --input in.jsonl --output o.jsonl", "--threshold is for --mode threshold"},
        {"--mode keep-ratio --caption-key c --input in.jsonl --output o.jsonl", "--caption-key is for --mode threshold"},
        {"--mode threshold --keep-ratio 0.5 --input in.jsonl --output o.jsonl", "--keep-ratio is for --mode keep-ratio"},
        {"--mode threshold --question-key q --input in.jsonl --output o.jsonl", "--question-key is for --mode keep-ratio"},
        {"--mode threshold --answer-key q --input in.jsonl --output o.jsonl", "--answer-key is for --mode keep-ratio"},
        {"--mode threshold --output-key s --input in.jsonl --output o.jsonl", "--output-key is for --mode keep-ratio"},
        {"--mode threshold --text-key caption --input in.jsonl --output o.jsonl", "--text-key: give the text column with --caption-key"},
        {"--mode keep-ratio --text-key caption --input in.jsonl --output o.jsonl", "--text-key: give the text column with --answer-key"},
        {"--mode keep-ratio --question-key '' --input in.jsonl --output o.jsonl", "a column name cannot be empty"},
        {"--mode threshold --input in.jsonl", "give --input and --output"},
        {"--mode threshold --input in.jsonl --output o.parquet", "clipeval writes jsonl, json or csv"},
        {"--mode threshold --batch-size 0 --input in.jsonl --output o.jsonl", "bad --batch-size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *log;
        cr_expect_eq(run_filter(&f, bad[i].args, &log), 2, "%s: %s", bad[i].args, log);
        cr_expect(strstr(log, bad[i].needle) && strstr(log, "clipeval filter --help"),
                  "%s: %s", bad[i].args, log);
        free(log);
    }
    char cmd[4400], *log;
    snprintf(cmd, sizeof cmd, "'%s' score --scores-out x --input a --output b", tu_cli());
    cr_expect_eq(tu_run(cmd, &log), 2, "%s", log); /* a filter option */
    free(log);
    snprintf(cmd, sizeof cmd, "'%s' filter --help", tu_cli());
    cr_expect_eq(tu_run(cmd, &log), 0);
    cr_expect(strstr(log, "--mode threshold") && strstr(log, "np.percentile") &&
              strstr(log, "Exit status:") && strstr(log, "  3    no image could be read"), "%s", log);
    free(log);
    tu_rmtree(f.tmp);
}

/* A missing column is DataFlow's KeyError, naming the option that sets it. */
Test(filter_errors, missing_columns) {
    fixture f;
    setup(&f);
    put(&f, "in.jsonl", "{\"image\":\"a.png\",\"caption\":\"a\",\"question\":\"a\",\"answer\":\"b\"}\n");
    static const struct {
        const char *args, *needle;
    } bad[] = {
        {"--mode threshold --caption-key text", "column 'text' not found (KeyError in DataFlow); the table has 'image', 'caption', 'question', 'answer'; set it with --caption-key"},
        {"--mode threshold --image-key image_path", "column 'image_path' not found"},
        {"--mode keep-ratio --question-key q", "column 'q' not found (KeyError in DataFlow); the table has 'image', 'caption', 'question', 'answer'; set it with --question-key"},
        {"--mode keep-ratio --answer-key a", "set it with --answer-key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[4096], *log;
        snprintf(args, sizeof args, "%s --input in.jsonl --output o.jsonl", bad[i].args);
        cr_expect_eq(run_filter(&f, args, &log), 1, "%s: %s", args, log);
        cr_expect(strstr(log, bad[i].needle), "%s: %s", args, log);
        cr_expect(!exists(&f, "o.jsonl"));
        free(log);
    }
    tu_rmtree(f.tmp);
}

/* The library call refuses options the CLI cannot produce. */
Test(filter_errors, api_refuses_bad_options) {
    clip_score_options o;
    clip_score_stats st;
    clip_error e = {0};
    clip_score_options_init(&o);
    o.input = "in.jsonl";
    o.output = "out.jsonl";
    o.mode = CLIP_MODE_THRESHOLD;
    o.threshold = NAN;
    cr_expect_eq(clip_score_table(&o, &st, &e), CLIP_ERR_ARG);
    cr_expect(strstr(e.msg, "threshold is NaN"), "%s", e.msg);
    o.mode = CLIP_MODE_KEEP_RATIO;
    o.question_key = "q";
    o.keep_ratio = NAN;
    cr_expect_eq(clip_score_table(&o, &st, &e), CLIP_ERR_ARG);
    cr_expect(strstr(e.msg, "keep ratio"), "%s", e.msg);
    o.keep_ratio = 0.5;
    o.question_key = NULL;
    cr_expect_eq(clip_score_table(&o, &st, &e), CLIP_ERR_ARG);
    cr_expect(strstr(e.msg, "question key"), "%s", e.msg);
    o.question_key = "q";
    o.output_key = NULL;
    cr_expect_eq(clip_score_table(&o, &st, &e), CLIP_ERR_ARG);
    cr_expect(strstr(e.msg, "output key"), "%s", e.msg);
}
