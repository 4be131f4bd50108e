/* test_table_io.c — the table reader/writer against pandas 1.5.3: the golden score tables
 * (byte-exact to_json output, str() of every caption), the ujson float format, dtype inference
 * of jsonl/json/csv, Python repr of nested values, the verbatim (default) writer, error paths
 * and the writer's atomic replace. Every expected string below was produced by pandas 1.5.3
 * (Debian python3-pandas) from the same input, or is written out by hand for the verbatim mode. */
#include <dirent.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "table/table.h"
#include "testutil.h"
#include "util.h"

/* ------------------------------------------------------------------ helpers */

static char g_dir[4096];

static void setup_dir(void) { tu_tmpdir(g_dir, sizeof g_dir); }
static void teardown_dir(void) { tu_rmtree(g_dir); }

/* g_dir/name, holding data when data is not NULL. */
static const char *tpath(const char *name, const char *data) {
    static char paths[8][4200]; /* a few live paths per test; tests run one at a time */
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 4200, "%s/%s", g_dir, name);
    if (data) tu_write_file(p, data, strlen(data));
    return p;
}

static char *slurp(const char *path, size_t *len) {
    char *d;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(path, 0, &d, len, &e), CLIP_OK, "%s", e.msg);
    return d;
}

/* Byte comparison with the first difference in the message. */
static void assert_bytes(const char *what, const char *got, size_t glen, const char *exp, size_t elen) {
    size_t i = 0;
    while (i < glen && i < elen && got[i] == exp[i]) i++;
    if (i == glen && i == elen) return;
    size_t from = i > 40 ? i - 40 : 0;
    cr_assert_fail("%s differs at byte %zu (lengths %zu vs %zu)\n  got:      %.*s\n  expected: %.*s",
                   what, i, glen, elen, (int)(glen - from < 120 ? glen - from : 120), got + from,
                   (int)(elen - from < 120 ? elen - from : 120), exp + from);
}

static void assert_file(const char *path, const char *exp) {
    size_t n;
    char *d = slurp(path, &n);
    assert_bytes(path, d, n, exp, strlen(exp));
    free(d);
}

static table_schema *scan(const char *path, table_format fmt, int skip) {
    table_schema *s = NULL;
    clip_error e = {0};
    cr_assert_eq(table_scan(path, fmt, NULL, skip, &s, &e), CLIP_OK, "scan %s: %s", path, e.msg);
    return s;
}

/* Reads every row of path; texts[i * ncols + c] must equal str() of column c of row i (NULL
 * entries are not checked); writes the table to out with scores[i] (when out is not NULL). */
static void run(const char *path, table_format fmt, const char *const *texts, size_t ncols,
                const char *out, table_format ofmt, int pandas, const double *scores, size_t nrows) {
    table_schema *s = scan(path, fmt, 0);
    cr_assert_eq(table_schema_rows(s), nrows, "%s: %zu rows, expected %zu", path, table_schema_rows(s), nrows);
    cr_assert_eq(table_schema_columns(s), ncols, "%s: %zu columns, expected %zu", path,
                 table_schema_columns(s), ncols);
    table_reader *r;
    table_writer *w = NULL;
    clip_error e = {0};
    cr_assert_eq(table_reader_open(path, fmt, s, NULL, &r, &e), CLIP_OK, "%s", e.msg);
    if (out) {
        table_write_options o = {ofmt, pandas, "clip_score", NULL, NULL};
        cr_assert_eq(table_writer_open(out, &o, s, fmt, &w, &e), CLIP_OK, "%s", e.msg);
    }
    clip_buf t = {0};
    size_t i = 0;
    for (;; i++) {
        table_row *row;
        cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK, "%s", e.msg);
        if (!row) break;
        cr_assert_lt(i, nrows);
        for (size_t c = 0; texts && c < ncols; c++) {
            const char *x = texts[i * ncols + c];
            if (!x) continue;
            cr_assert_eq(table_row_text(row, s, (int)c, &t, &e), CLIP_OK, "%s", e.msg);
            assert_bytes("str() of a cell", t.data, t.len, x, strlen(x));
        }
        if (w) cr_assert_eq(table_writer_row(w, row, scores[i], &e), CLIP_OK, "%s", e.msg);
    }
    cr_assert_eq(i, nrows);
    if (w) cr_assert_eq(table_writer_commit(w, &e), CLIP_OK, "%s", e.msg);
    clip_buf_free(&t);
    table_reader_close(r);
    table_schema_free(s);
}

/* The same input written in every format by pandas' writers. */
static void run_pandas_all(const char *in, table_format fmt, const double *scores, size_t nrows,
                           size_t ncols, const char *jsonl, const char *json, const char *csv) {
    const char *outs[3] = {jsonl, json, csv};
    const char *names[3] = {"out.jsonl", "out.json", "out.csv"};
    for (int f = 0; f < 3; f++) {
        const char *o = tpath(names[f], NULL);
        run(in, fmt, NULL, ncols, o, (table_format)f, 1, scores, nrows);
        assert_file(o, outs[f]);
    }
}

/* ------------------------------------------------------------------ golden score tables */

static void golden_set(const char *set) {
    char in[4096], exp_path[4096], sc[4096];
    char rel[256];
    snprintf(rel, sizeof rel, "golden/scores/%s.input.jsonl", set);
    tu_shared_path(in, sizeof in, rel);
    snprintf(rel, sizeof rel, "golden/scores/%s.expected.jsonl", set);
    tu_shared_path(exp_path, sizeof exp_path, rel);
    snprintf(rel, sizeof rel, "golden/scores/%s.scores.json", set);
    tu_shared_path(sc, sizeof sc, rel);

    clip_error e = {0};
    json_doc *doc;
    cr_assert_eq(json_parse_file(sc, 0, 0, &doc, &e), CLIP_OK, "%s", e.msg);
    const json_value *rows = json_get(json_doc_root(doc), "rows");
    cr_assert(rows && rows->type == JSON_ARRAY);
    size_t n = rows->u.arr.n;
    double *scores = malloc(n * sizeof *scores);
    const char **texts = calloc(2 * n, sizeof *texts);
    cr_assert(scores && texts);
    for (size_t i = 0; i < n; i++) {
        const json_value *r = &rows->u.arr.items[i];
        cr_assert_eq(json_get_number(r, "score", &scores[i]), 1);
        cr_assert_eq(json_get_string(r, "text_used", &texts[2 * i + 1]), 1);
    }

    /* pandas_compat: byte-identical to pandas' to_json(orient="records", lines=True). */
    const char *out = tpath("pandas.jsonl", NULL);
    run(in, TABLE_JSONL, texts, 2, out, TABLE_JSONL, 1, scores, n);
    size_t elen;
    char *exp = slurp(exp_path, &elen);
    size_t glen;
    char *got = slurp(out, &glen);
    assert_bytes("pandas_compat output", got, glen, exp, elen);
    free(got);
    free(exp);

    /* Default mode: every input line with ,"clip_score":repr(score) before its closing brace. */
    out = tpath("default.jsonl", NULL);
    run(in, TABLE_JSONL, NULL, 2, out, TABLE_JSONL, 0, scores, n);
    size_t ilen;
    char *input = slurp(in, &ilen);
    clip_buf want = {0};
    const char *p = input;
    for (size_t i = 0; i < n; i++) {
        const char *nl = strchr(p, '\n');
        cr_assert_not_null(nl);
        cr_assert_eq(nl[-1], '}');
        char repr[32];
        clip_format_double_repr(scores[i], repr);
        clip_buf_append(&want, p, (size_t)(nl - 1 - p));
        clip_buf_printf(&want, ",\"clip_score\":%s}\n", repr);
        p = nl + 1;
    }
    got = slurp(out, &glen);
    assert_bytes("default-mode output", got, glen, want.data, want.len);
    if (!strcmp(set, "edge_rows")) { /* two lines by hand */
        const char *l0 = "{\"image\":\"images/does_not_exist.png\",\"caption\":\"a photo of a cat\",\"clip_score\":0.0}\n";
        const char *l7 = "{\"image\":\"images/2.png\",\"caption\":5,\"clip_score\":0.5364568009972572}\n";
        cr_assert(!strncmp(got, l0, strlen(l0)), "line 1: %.100s", got);
        cr_assert_not_null(strstr(got, l7));
    }
    free(got);
    free(input);
    clip_buf_free(&want);
    free(scores);
    free(texts);
    json_doc_free(doc);
}

TestSuite(table, .init = setup_dir, .fini = teardown_dir);

Test(table, golden_dataflow_example) { golden_set("dataflow_example"); }
Test(table, golden_legacy_demo) { golden_set("legacy_demo"); }
Test(table, golden_edge_rows) { golden_set("edge_rows"); }

/* ------------------------------------------------------------------ ujson double_precision=10 */

/* pd.Series(values).to_json(orient="values", double_precision=10), pandas 1.5.3: rounding at
 * the 10th decimal (with ujson's half-way rule), 1e16 still in full, "%.10g" beyond, -1e-11
 * giving "-0.0", and the binary noise of 12345678.9. */
static const struct {
    double v;
    const char *s;
} ujson_cases[] = {
    {0x0.0p+0, "0.0"},
    {0x1.0000000000000p+0, "1.0"},
    {0x1.4f8b588e368f1p-17, "0.00001"},
    {0x1.ffffffff920c8p-1, "1.0"},
    {0x1.ffffffff920bfp-1, "0.9999999999"},
    {0x1.f9add37705d1fp-4, "0.123456789"},
    {0x1.b7cdfd9d7bdbbp-35, "0.0000000001"},
    {0x1.49da7e361ce4cp-33, "0.0000000002"},
    {0x1.12e0be826d695p-32, "0.0000000002"},
    {0x1.12aa774000000p-1, "0.536456801"},
    {0x1.1c37937e08000p+53, "10000000000000000.0"},
    {0x1.1c37937e08001p+53, "1e+16"},
    {0x1.1c37937e07fffp+53, "9999999999999998.0"},
    {0x1.203af9ee75616p-50, "0.0"},
    {0x1.1ff130772e185p-50, "9.99e-16"},
    {-0x1.5fd7fe1796495p-37, "-0.0"},
    {-0x1.0000000000000p-1, "-0.5"},
    {0x1.e240c9fcb68c8p+16, "123456.7890123456"},
    {0x1.c6bf526340002p+49, "1000000000000000.25"},
    {0x1.0000000000002p+52, "4503599627370498.0"},
    {0x1.3333333333334p-2, "0.3"},
    {0x1.5555555555555p-2, "0.3333333333"},
    {0x1.5555555555555p-1, "0.6666666667"},
    {0x1.b7cdfd9d7bdbbp-34, "0.0000000001"},
    {0x0.0000000000001p-1022, "4.940656458e-324"},
    {0x1.fffffffffffffp+1023, "1.797693135e+308"},
    {-0x1.1eb2d66005835p+997, "-1.5e+300"},
    {0x1.3333333333333p-2, "0.3"},
    {0x1.7e43c8800759cp+996, "1e+300"},
    {0x1.48e188674f92dp-1, "0.6423456789"},
    {0x1.fe8e92f7b651ep-2, "0.498590752"},
    {0x1.49da7e361ce4cp-33, "0.0000000002"},
    {0x1.12e0be826d695p-32, "0.0000000002"},
    {0x1.80d43de9cc603p-32, "0.0000000004"},
    {0x1.0000000036f9cp+0, "1.0000000001"},
    {0x1.000000001b7cep+1, "2.0000000001"},
    {0x1.12e0bae817165p-31, "0.0000000005"},
    {0x1.3fffffffbb47dp+3, "9.9999999995"},
    {0x1.869fffffffffdp+16, "100000.0"},
    {0x1.0c6f7a0b5ed8dp-20, "0.000001"},
    {0x1.08ffde1023e12p-23, "0.0000001234"},
    {0x1.999999999999ap-4, "0.1"},
    {0x1.9000000000000p+6, "100.0"},
    {0x1.86a0000000000p+16, "100000.0"},
    {0x1.78c29dccccccdp+23, "12345678.9000000004"},
    {-0x0.0p+0, "0.0"},
    {0x1.800000006df37p-1, "0.75"},
    {0x1.800000006df38p-1, "0.75"},
    {0x1.921fb54442d11p+1, "3.1415926536"},
    {0x1.0000000000000p+52, "4503599627370496.0"},
    {0x1.0000000000000p+53, "9007199254740992.0"},
    {0x1.6849b86a12b9bp-47, "0.0"},
    {0x1.b05876e5b0120p-50, "0.0"},
    {0x1.9385c44dd7885p-51, "7e-16"},
    {0x1.4b9ad0f953a6ep-2, "0.3238327648"},
    {0x1.34f0696513270p-3, "0.1508491739"},
    {0x1.4d474883171ffp-1, "0.650934473"},
    {0x1.28b2f3a47e100p-4, "0.0724362867"},
    {0x1.125f2046063a0p-1, "0.5358820043"},
    {0x1.767727ca98cc2p-2, "0.3656889169"},
    {0x1.db208fa389760p-5, "0.0579989248"},
    {0x1.03ce9dcdbd9d7p-1, "0.5074357332"},
    {0x1.332a1858028d0p-5, "0.0374956584"},
    {0x1.bc0d9d3586aa4p-2, "0.4336456837"},
    {0x1.1e20b87b382e0p-4, "0.0698554236"},
    {0x1.738f7d1a22dd8p-4, "0.0907130133"},
    {0x1.b2b5288790eecp-2, "0.4245191891"},
    {0x1.a75929643064bp-1, "0.8268521247"},
    {0x1.fb17c3e518208p-4, "0.1238019611"},
    {0x1.c93182a170b30p-3, "0.2232389646"},
    {0x1.413eed654fd23p-1, "0.6274332224"},
    {0x1.e53a1b43f58c3p-1, "0.9477089425"},
    {0x1.277a09a57982bp-1, "0.5771029486"},
    {0x1.9633680658f14p-2, "0.3966804747"},
    {0x1.d117c6c208ceap+19, "952510.2111858402"},
    {-0x1.baca5470c238fp+19, "-906834.6387644875"},
    {0x1.5e111d610db68p+19, "716936.9180973591"},
    {-0x1.9aeb5b597bcf6p+18, "-420781.4273366475"},
    {-0x1.5b683aaa45910p+19, "-711489.833285125"},
    {-0x1.753ff0c352f28p+19, "-764415.5238432633"},
    {-0x1.760f1683d3ebap+18, "-383036.3517961312"},
    {0x1.34b796fbd2958p+19, "632252.7182400627"},
    {-0x1.37ca67af53826p+19, "-638547.240152125"},
    {0x1.3ec029e5c88c0p+17, "163200.3273249324"},
    {0x1.85f63ac1cddb2p+22, "6389134.6892618407"},
    {0x1.b6c9ce67bf55dp-44, "0.0"},
    {0x1.27e43ae52f9f2p-11, "0.0005643683"},
    {0x1.71db8d04eb2c7p+35, "49641449511.3491744995"},
    {0x1.c4681cd3ac048p+42, "7772287749808.0703125"},
    {0x1.54d784655118dp+42, "5855618635076.3876953125"},
    {0x1.283550eb7f030p-5, "0.0361582356"},
    {0x1.4560b9d60109fp-4, "0.0794379482"},
    {0x1.476b87f3363bdp+6, "81.8550107958"},
    {0x1.9a4f4cfec1e8bp+15, "52519.6503811451"},
    {0x1.23c732987113ep+6, "72.9445289439"},
    {0x1.56d03e59e09c1p-41, "0.0"},
    {0x1.197da1da32cfep+30, "1180657782.5496211052"},
    {0x1.01c0d769c10bcp+14, "16496.2103643573"},
};

Test(table, ujson_double_precision) {
    for (size_t i = 0; i < sizeof ujson_cases / sizeof ujson_cases[0]; i++) {
        char buf[64];
        int n = table_format_double_ujson(ujson_cases[i].v, buf);
        cr_assert_eq((size_t)n, strlen(buf));
        cr_assert_str_eq(buf, ujson_cases[i].s, "%a: got %s, pandas writes %s", ujson_cases[i].v, buf,
                         ujson_cases[i].s);
    }
}

/* ------------------------------------------------------------------ pandas expectations */

/* Python repr of lists and dicts (quote choice, escapes, printable Unicode, duplicate keys, 1e+16, -0.0, inf/nan), and their ujson form */
static const char nested_in[] = "{\"id\":1,\"caption\":[1,\"a\",null,2.5,true,{\"k\":\"v\"}]}\n"
    "{\"id\":2,\"caption\":{\"q'\":\"it's\",\"dq\":\"say \\\"hi\\\"\",\"both\":\"'\\\"\",\"nl\":\"a\\nb\\tc\\\\/\",\"u\":\"\\u00e9\\u2615\\u200b\\u0001\\u007f\\ud83d\\ude00\\u00a0\",\"big\":1e16,\"neg0\":-0.0,\"inf\":Infinity,\"nan\":NaN,\"ninf\":-Infinity,\"int\":12345678901234567890123}}\n"
    "{\"id\":3,\"caption\":{\"dup\":1,\"x\":2,\"dup\":3}}\n"
    "{\"id\":4,\"caption\":[[],{},[[1.5e-7, 0.1, 100.0]],\"\\u2028\"]}\n";
static const char *const nested_texts[] = {
    "1", "[1, 'a', None, 2.5, True, {'k': 'v'}]",
    "2", "{\"q'\": \"it's\", 'dq': 'say \"hi\"', 'both': '\\'\"', 'nl': 'a\\nb\\tc\\\\/', 'u': '\u00e9\u2615\\u200b\\x01\\x7f\U0001f600\\xa0', 'big': 1e+16, 'neg0': -0.0, 'inf': inf, 'nan': nan, 'ninf': -inf, 'int': 12345678901234567890123}",
    "3", "{'dup': 3, 'x': 2}",
    "4", "[[], {}, [[1.5e-07, 0.1, 100.0]], '\\u2028']",
};
static const char *const nested_dtypes[] = {"int64", "object"};
static const char nested_jsonl[] = "{\"id\":1,\"caption\":[1,\"a\",null,2.5,true,{\"k\":\"v\"}],\"clip_score\":0.5}\n"
    "{\"id\":2,\"caption\":{\"q'\":\"it's\",\"dq\":\"say \\\"hi\\\"\",\"both\":\"'\\\"\",\"nl\":\"a\\nb\\tc\\\\\\/\",\"u\":\"\u00e9\u2615\u200b\\u0001\x7f\U0001f600\u00a0\",\"big\":10000000000000000.0,\"neg0\":0.0,\"inf\":null,\"nan\":null,\"ninf\":null,\"int\":12345678901234567890123},\"clip_score\":0.25}\n"
    "{\"id\":3,\"caption\":{\"dup\":3,\"x\":2},\"clip_score\":0.1666666667}\n"
    "{\"id\":4,\"caption\":[[],{},[[0.00000015,0.1,100.0]],\"\u2028\"],\"clip_score\":0.125}\n";
static const char nested_json[] = "[\n"
    "  {\n"
    "    \"id\":1,\n"
    "    \"caption\":[\n"
    "      1,\n"
    "      \"a\",\n"
    "      null,\n"
    "      2.5,\n"
    "      true,\n"
    "      {\n"
    "        \"k\":\"v\"\n"
    "      }\n"
    "    ],\n"
    "    \"clip_score\":0.5\n"
    "  },\n"
    "  {\n"
    "    \"id\":2,\n"
    "    \"caption\":{\n"
    "      \"q'\":\"it's\",\n"
    "      \"dq\":\"say \\\"hi\\\"\",\n"
    "      \"both\":\"'\\\"\",\n"
    "      \"nl\":\"a\\nb\\tc\\\\\\/\",\n"
    "      \"u\":\"\u00e9\u2615\u200b\\u0001\x7f\U0001f600\u00a0\",\n"
    "      \"big\":10000000000000000.0,\n"
    "      \"neg0\":0.0,\n"
    "      \"inf\":null,\n"
    "      \"nan\":null,\n"
    "      \"ninf\":null,\n"
    "      \"int\":12345678901234567890123\n"
    "    },\n"
    "    \"clip_score\":0.25\n"
    "  },\n"
    "  {\n"
    "    \"id\":3,\n"
    "    \"caption\":{\n"
    "      \"dup\":3,\n"
    "      \"x\":2\n"
    "    },\n"
    "    \"clip_score\":0.1666666667\n"
    "  },\n"
    "  {\n"
    "    \"id\":4,\n"
    "    \"caption\":[\n"
    "      [\n"
    "\n"
    "      ],\n"
    "      {\n"
    "\n"
    "      },\n"
    "      [\n"
    "        [\n"
    "          0.00000015,\n"
    "          0.1,\n"
    "          100.0\n"
    "        ]\n"
    "      ],\n"
    "      \"\u2028\"\n"
    "    ],\n"
    "    \"clip_score\":0.125\n"
    "  }\n"
    "]";
static const char nested_csv[] = "id,caption,clip_score\n"
    "1,\"[1, 'a', None, 2.5, True, {'k': 'v'}]\",0.5\n"
    "2,\"{\"\"q'\"\": \"\"it's\"\", 'dq': 'say \"\"hi\"\"', 'both': '\\'\"\"', 'nl': 'a\\nb\\tc\\\\/', 'u': '\u00e9\u2615\\u200b\\x01\\x7f\U0001f600\\xa0', 'big': 1e+16, 'neg0': -0.0, 'inf': inf, 'nan': nan, 'ninf': -inf, 'int': 12345678901234567890123}\",0.25\n"
    "3,\"{'dup': 3, 'x': 2}\",0.16666666666666666\n"
    "4,\"[[], {}, [[1.5e-07, 0.1, 100.0]], '\\u2028']\",0.125\n";
#define NESTED_ROWS 4
#define NESTED_COLS 2

/* jsonl dtypes: int64, float64 (ints and a float, a missing key), bool, object (None vs missing NaN), ints with a missing key or a null: float64 */
static const char dtj_in[] = "{\"n\":5,\"f\":1,\"b\":true,\"o\":1,\"s\":\"x\",\"m\":5,\"z\":1}\n"
    "{\"n\":6,\"b\":false,\"o\":\"y\",\"s\":null,\"z\":null}\n"
    "{\"n\":7,\"f\":2.5,\"b\":true,\"o\":2.5,\"m\":7,\"z\":3}\n";
static const char *const dtj_texts[] = {
    "5", "1.0", "True", "1", "x", "5.0", "1.0",
    "6", "nan", "False", "y", "None", "nan", "nan",
    "7", "2.5", "True", "2.5", "nan", "7.0", "3.0",
};
static const char *const dtj_dtypes[] = {"int64", "float64", "bool", "object", "object", "float64", "float64"};
static const char dtj_jsonl[] = "{\"n\":5,\"f\":1.0,\"b\":true,\"o\":1,\"s\":\"x\",\"m\":5.0,\"z\":1.0,\"clip_score\":0.5}\n"
    "{\"n\":6,\"f\":null,\"b\":false,\"o\":\"y\",\"s\":null,\"m\":null,\"z\":null,\"clip_score\":0.25}\n"
    "{\"n\":7,\"f\":2.5,\"b\":true,\"o\":2.5,\"s\":null,\"m\":7.0,\"z\":3.0,\"clip_score\":0.1666666667}\n";
static const char dtj_json[] = "[\n"
    "  {\n"
    "    \"n\":5,\n"
    "    \"f\":1.0,\n"
    "    \"b\":true,\n"
    "    \"o\":1,\n"
    "    \"s\":\"x\",\n"
    "    \"m\":5.0,\n"
    "    \"z\":1.0,\n"
    "    \"clip_score\":0.5\n"
    "  },\n"
    "  {\n"
    "    \"n\":6,\n"
    "    \"f\":null,\n"
    "    \"b\":false,\n"
    "    \"o\":\"y\",\n"
    "    \"s\":null,\n"
    "    \"m\":null,\n"
    "    \"z\":null,\n"
    "    \"clip_score\":0.25\n"
    "  },\n"
    "  {\n"
    "    \"n\":7,\n"
    "    \"f\":2.5,\n"
    "    \"b\":true,\n"
    "    \"o\":2.5,\n"
    "    \"s\":null,\n"
    "    \"m\":7.0,\n"
    "    \"z\":3.0,\n"
    "    \"clip_score\":0.1666666667\n"
    "  }\n"
    "]";
static const char dtj_csv[] = "n,f,b,o,s,m,z,clip_score\n"
    "5,1.0,True,1,x,5.0,1.0,0.5\n"
    "6,,False,y,,,,0.25\n"
    "7,2.5,True,2.5,,7.0,3.0,0.16666666666666666\n";
#define DTJ_ROWS 3
#define DTJ_COLS 7

/* csv dtypes: ints with an empty cell (float64), int64, float64, bool words, NA strings only, uint64 */
static const char dtc_in[] = "image,caption,n,f,b,na,big\n"
    "a.png,5,1,1.5,True,NA,9223372036854775808\n"
    "b.png,,2,,false,,1\n"
    "c.png,6,3,2,TRUE,#N/A,2\n";
static const char *const dtc_texts[] = {
    "a.png", "5.0", "1", "1.5", "True", "nan", "9223372036854775808",
    "b.png", "nan", "2", "nan", "False", "nan", "1",
    "c.png", "6.0", "3", "2.0", "True", "nan", "2",
};
static const char *const dtc_dtypes[] = {"object", "float64", "int64", "float64", "bool", "float64", "uint64"};
static const char dtc_jsonl[] = "{\"image\":\"a.png\",\"caption\":5.0,\"n\":1,\"f\":1.5,\"b\":true,\"na\":null,\"big\":9223372036854775808,\"clip_score\":0.5}\n"
    "{\"image\":\"b.png\",\"caption\":null,\"n\":2,\"f\":null,\"b\":false,\"na\":null,\"big\":1,\"clip_score\":0.25}\n"
    "{\"image\":\"c.png\",\"caption\":6.0,\"n\":3,\"f\":2.0,\"b\":true,\"na\":null,\"big\":2,\"clip_score\":0.1666666667}\n";
static const char dtc_json[] = "[\n"
    "  {\n"
    "    \"image\":\"a.png\",\n"
    "    \"caption\":5.0,\n"
    "    \"n\":1,\n"
    "    \"f\":1.5,\n"
    "    \"b\":true,\n"
    "    \"na\":null,\n"
    "    \"big\":9223372036854775808,\n"
    "    \"clip_score\":0.5\n"
    "  },\n"
    "  {\n"
    "    \"image\":\"b.png\",\n"
    "    \"caption\":null,\n"
    "    \"n\":2,\n"
    "    \"f\":null,\n"
    "    \"b\":false,\n"
    "    \"na\":null,\n"
    "    \"big\":1,\n"
    "    \"clip_score\":0.25\n"
    "  },\n"
    "  {\n"
    "    \"image\":\"c.png\",\n"
    "    \"caption\":6.0,\n"
    "    \"n\":3,\n"
    "    \"f\":2.0,\n"
    "    \"b\":true,\n"
    "    \"na\":null,\n"
    "    \"big\":2,\n"
    "    \"clip_score\":0.1666666667\n"
    "  }\n"
    "]";
static const char dtc_csv[] = "image,caption,n,f,b,na,big,clip_score\n"
    "a.png,5.0,1,1.5,True,,9223372036854775808,0.5\n"
    "b.png,,2,,False,,1,0.25\n"
    "c.png,6.0,3,2.0,True,,2,0.16666666666666666\n";
#define DTC_ROWS 3
#define DTC_COLS 7

/* read_json's coercion: numeric strings become int64, true/null/false float64 */
static const char jco_in[] = "[{\"image\":\"a/b.png\",\"caption\":\"5\",\"n\":1.0,\"t\":true},{\"image\":\"c.png\",\"caption\":\"6\",\"n\":2.0,\"t\":null},{\"image\":\"d.png\",\"caption\":\"7e0\",\"n\":3.5,\"t\":false}]";
static const char *const jco_texts[] = {
    "a/b.png", "5", "1.0", "1.0",
    "c.png", "6", "2.0", "nan",
    "d.png", "7", "3.5", "0.0",
};
static const char *const jco_dtypes[] = {"object", "int64", "float64", "float64"};
static const char jco_jsonl[] = "{\"image\":\"a\\/b.png\",\"caption\":5,\"n\":1.0,\"t\":1.0,\"clip_score\":0.5}\n"
    "{\"image\":\"c.png\",\"caption\":6,\"n\":2.0,\"t\":null,\"clip_score\":0.25}\n"
    "{\"image\":\"d.png\",\"caption\":7,\"n\":3.5,\"t\":0.0,\"clip_score\":0.1666666667}\n";
static const char jco_json[] = "[\n"
    "  {\n"
    "    \"image\":\"a\\/b.png\",\n"
    "    \"caption\":5,\n"
    "    \"n\":1.0,\n"
    "    \"t\":1.0,\n"
    "    \"clip_score\":0.5\n"
    "  },\n"
    "  {\n"
    "    \"image\":\"c.png\",\n"
    "    \"caption\":6,\n"
    "    \"n\":2.0,\n"
    "    \"t\":null,\n"
    "    \"clip_score\":0.25\n"
    "  },\n"
    "  {\n"
    "    \"image\":\"d.png\",\n"
    "    \"caption\":7,\n"
    "    \"n\":3.5,\n"
    "    \"t\":0.0,\n"
    "    \"clip_score\":0.1666666667\n"
    "  }\n"
    "]";
static const char jco_csv[] = "image,caption,n,t,clip_score\n"
    "a/b.png,5,1.0,1.0,0.5\n"
    "c.png,6,2.0,,0.25\n"
    "d.png,7,3.5,0.0,0.16666666666666666\n";
#define JCO_ROWS 3
#define JCO_COLS 4

/* csv quoting, an embedded newline, CRLF records */
static const char csq_in[] = "image,\"cap,tion\"\r\n"
    "a.png,\"say \"\"hi\"\"\n"
    "there\"\r\n"
    "b.png,plain\r\n";
static const char *const csq_texts[] = {
    "a.png", "say \"hi\"\nthere",
    "b.png", "plain",
};
static const char *const csq_dtypes[] = {"object", "object"};
static const char csq_jsonl[] = "{\"image\":\"a.png\",\"cap,tion\":\"say \\\"hi\\\"\\nthere\",\"clip_score\":0.5}\n"
    "{\"image\":\"b.png\",\"cap,tion\":\"plain\",\"clip_score\":0.25}\n";
static const char csq_json[] = "[\n"
    "  {\n"
    "    \"image\":\"a.png\",\n"
    "    \"cap,tion\":\"say \\\"hi\\\"\\nthere\",\n"
    "    \"clip_score\":0.5\n"
    "  },\n"
    "  {\n"
    "    \"image\":\"b.png\",\n"
    "    \"cap,tion\":\"plain\",\n"
    "    \"clip_score\":0.25\n"
    "  }\n"
    "]";
static const char csq_csv[] = "image,\"cap,tion\",clip_score\n"
    "a.png,\"say \"\"hi\"\"\n"
    "there\",0.5\n"
    "b.png,plain,0.25\n";
#define CSQ_ROWS 2
#define CSQ_COLS 2

/* csv with the score column already there and a short record */
static const char cin_in[] = "image,clip_score,caption\n"
    "a.png,0.1,x\n"
    "b.png\n";
static const char *const cin_texts[] = {
    "a.png", "0.1", "x",
    "b.png", "nan", "nan",
};
static const char *const cin_dtypes[] = {"object", "float64", "object"};
static const char cin_jsonl[] = "{\"image\":\"a.png\",\"clip_score\":0.5,\"caption\":\"x\"}\n"
    "{\"image\":\"b.png\",\"clip_score\":0.25,\"caption\":null}\n";
static const char cin_json[] = "[\n"
    "  {\n"
    "    \"image\":\"a.png\",\n"
    "    \"clip_score\":0.5,\n"
    "    \"caption\":\"x\"\n"
    "  },\n"
    "  {\n"
    "    \"image\":\"b.png\",\n"
    "    \"clip_score\":0.25,\n"
    "    \"caption\":null\n"
    "  }\n"
    "]";
static const char cin_csv[] = "image,clip_score,caption\n"
    "a.png,0.5,x\n"
    "b.png,0.25,\n";
#define CIN_ROWS 2
#define CIN_COLS 3


/* ------------------------------------------------------------------ dtypes, repr and pandas writers */

static const double five_scores[] = {0.5, 0.25, 0.5 / 3, 0.125, 0.1};

/* Scans in, checks the dtypes and str() of every cell, then every pandas writer. */
static void pandas_case(const char *name, table_format fmt, const char *in, const char *const *texts,
                        const char *const *dtypes, size_t nrows, size_t ncols, const char *jsonl,
                        const char *json, const char *csv) {
    const char *path = tpath(name, in);
    table_schema *s = scan(path, fmt, 0);
    for (size_t c = 0; c < ncols; c++)
        cr_assert_str_eq(table_dtype_name(table_schema_dtype(s, (int)c)), dtypes[c], "%s column %zu",
                         name, c);
    table_schema_free(s);
    run(path, fmt, texts, ncols, NULL, TABLE_JSONL, 1, five_scores, nrows);
    run_pandas_all(path, fmt, five_scores, nrows, ncols, jsonl, json, csv);
}

#define PANDAS_CASE(id, file, fmt)                                                                 \
    pandas_case(file, fmt, id##_in, id##_texts, id##_dtypes, sizeof id##_texts / sizeof *id##_texts / \
                                                                 (sizeof id##_dtypes / sizeof *id##_dtypes), \
                sizeof id##_dtypes / sizeof *id##_dtypes, id##_jsonl, id##_json, id##_csv)

Test(table, nested_values_repr_and_json) { PANDAS_CASE(nested, "nested.jsonl", TABLE_JSONL); }
Test(table, jsonl_dtypes) { PANDAS_CASE(dtj, "dtypes.jsonl", TABLE_JSONL); }
Test(table, csv_dtypes_and_na) { PANDAS_CASE(dtc, "dtypes.csv", TABLE_CSV); }
Test(table, json_read_json_coercion) { PANDAS_CASE(jco, "coerce.json", TABLE_JSON); }
Test(table, csv_quotes_crlf) { PANDAS_CASE(csq, "quotes.csv", TABLE_CSV); }
Test(table, csv_existing_score_column) { PANDAS_CASE(cin, "inplace.csv", TABLE_CSV); }

/* Cell kinds and strings as the scorer sees them. */
Test(table, kinds_and_strings) {
    const char *path = tpath("k.jsonl", "{\"a\":\"x\",\"b\":null,\"c\":[1],\"d\":{},\"e\":NaN}\n{\"f\":1}\n");
    table_schema *s = scan(path, TABLE_JSONL, 0);
    cr_assert_eq(table_schema_find(s, "f"), 5);
    cr_assert_eq(table_schema_find(s, "zz"), -1);
    table_reader *r;
    clip_error e = {0};
    cr_assert_eq(table_reader_open(path, TABLE_JSONL, s, NULL, &r, &e), CLIP_OK, "%s", e.msg);
    table_row *row;
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_eq(table_row_line(row), 1);
    size_t len;
    cr_assert_str_eq(table_row_string(row, 0, &len), "x");
    cr_assert_eq(len, 1);
    cr_assert_eq(table_row_kind(row, 1), TK_NULL);
    cr_assert_eq(table_row_kind(row, 2), TK_LIST);
    cr_assert_eq(table_row_kind(row, 3), TK_DICT);
    cr_assert_eq(table_row_kind(row, 4), TK_FLOAT);
    cr_assert_eq(table_row_kind(row, 5), TK_MISSING); /* f: float64, absent here */
    cr_assert_null(table_row_string(row, 1, &len));
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_eq(table_row_line(row), 2);
    cr_assert_eq(table_row_kind(row, 5), TK_FLOAT); /* the int 1 in a float64 column */
    cr_assert_eq(table_row_kind(row, 0), TK_MISSING);
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_null(row);
    table_reader_close(r);
    table_schema_free(s);
}

/* iterrows() on an all-numeric table upcasts the ints of the text column to float. */
Test(table, iterrows_float_upcast) {
    const char *path = tpath("num.csv", "image,caption\n1.5,5\n2.5,6\n");
    const char *texts[] = {"1.5", "5.0", "2.5", "6.0"};
    run(path, TABLE_CSV, texts, 2, NULL, TABLE_CSV, 1, five_scores, 2);
}

/* ------------------------------------------------------------------ the default (verbatim) writer */

Test(table, jsonl_verbatim) {
    /* CRLF and a final line without a newline kept, blank lines dropped, an existing key
     * replaced in place (every duplicate), `{}`, spacing and Unicode escapes untouched. */
    const char *in = "{\"image\": \"a\\/b.png\", \"caption\": \"x\\u00e9\"}\r\n"
                     "\r\n"
                     "  {\"clip_score\":1,\"image\":\"c.png\",\"clip_score\":2}  \n"
                     "{}\n"
                     "{\"image\":\"d.png\",\"caption\":5}";
    const char *want = "{\"image\": \"a\\/b.png\", \"caption\": \"x\\u00e9\",\"clip_score\":0.5}\r\n"
                       "  {\"clip_score\":0.25,\"image\":\"c.png\",\"clip_score\":0.25}  \n"
                       "{\"clip_score\":0.125}\n"
                       "{\"image\":\"d.png\",\"caption\":5,\"clip_score\":0.1}";
    const double scores[] = {0.5, 0.25, 0.125, 0.1};
    const char *path = tpath("v.jsonl", in), *out = tpath("sub/dir/v.out.jsonl", NULL);
    run(path, TABLE_JSONL, NULL, 3, out, TABLE_JSONL, 0, scores, 4);
    assert_file(out, want);
}

Test(table, json_verbatim_pretty) {
    const char *in = "[\n"
                     "    {\n"
                     "        \"image\": \"a.png\",\n"
                     "        \"caption\": \"x\"\n"
                     "    },\n"
                     "    {\"image\": \"b.png\", \"caption\": \"y\"},\n"
                     "    {},\n"
                     "    {\"image\": \"c.png\"},\n"
                     "    {\n"
                     "      \"image\": \"d.png\"\n"
                     "    }\n"
                     "]\n";
    const char *want = "[\n"
                       "    {\n"
                       "        \"image\": \"a.png\",\n"
                       "        \"caption\": \"x\",\n"
                       "        \"clip_score\": 0.5\n"
                       "    },\n"
                       "    {\"image\": \"b.png\", \"caption\": \"y\", \"clip_score\": 0.25},\n"
                       "    {\"clip_score\":0.125},\n"
                       "    {\"image\": \"c.png\", \"clip_score\": 1.0},\n"
                       "    {\n"
                       "      \"image\": \"d.png\",\n"
                       "      \"clip_score\": 0.0\n"
                       "    }\n"
                       "]\n";
    const double scores[] = {0.5, 0.25, 0.125, 1.0, 0.0};
    const char *path = tpath("v.json", in), *out = tpath("v.out.json", NULL);
    run(path, TABLE_JSON, NULL, 2, out, TABLE_JSON, 0, scores, 5);
    assert_file(out, want);
}

/* An invalid first element is left out; the array stays well-formed. */
Test(table, json_verbatim_skips_invalid_element) {
    const char *path = tpath("bad.json", "[{\"a\":1,}, {\"image\":\"b\"},\n {\"image\":\"c\"}]");
    table_schema *s;
    clip_error e = {0};
    cr_assert_eq(table_scan(path, TABLE_JSON, NULL, 0, &s, &e), CLIP_ERR_FORMAT);
    cr_assert(strstr(e.msg, "element 1 (line 1)"), "%s", e.msg);
    s = scan(path, TABLE_JSON, 1);
    cr_assert_eq(table_schema_rows(s), 2);
    cr_assert_eq(table_schema_invalid(s), 1);
    table_reader *r;
    table_writer *w;
    table_write_options o = {TABLE_JSON, 0, "clip_score", NULL, NULL};
    const char *out = tpath("bad.out.json", NULL);
    cr_assert_eq(table_reader_open(path, TABLE_JSON, s, NULL, &r, &e), CLIP_OK);
    cr_assert_eq(table_writer_open(out, &o, s, TABLE_JSON, &w, &e), CLIP_OK);
    table_row *row;
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_ERR_FORMAT);
    cr_assert(table_reader_skippable(r));
    size_t len;
    const char *raw = table_reader_last_raw(r, &len);
    cr_assert_eq(len, 8);
    cr_assert(!memcmp(raw, "{\"a\":1,}", 8));
    for (double sc = 0.5;; sc /= 2) {
        cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK, "%s", e.msg);
        if (!row) break;
        cr_assert_eq(table_writer_row(w, row, sc, &e), CLIP_OK);
    }
    cr_assert_eq(table_writer_commit(w, &e), CLIP_OK);
    assert_file(out, "[ {\"image\":\"b\",\"clip_score\":0.5},\n {\"image\":\"c\",\"clip_score\":0.25}]");
    table_reader_close(r);
    table_schema_free(s);
}

Test(table, csv_verbatim) {
    /* BOM, a quoted header name, CRLF, an embedded newline, a short record padded, the last
     * record without a newline; the score is a new last column. */
    const char *in = "\xEF\xBB\xBFimage,\"cap,tion\",n\r\n"
                     "a.png,\"say \"\"hi\"\"\nthere\",1\r\n"
                     "b.png,plain\r\n"
                     "\r\n"
                     "c.png, x ,3";
    const char *want = "\xEF\xBB\xBFimage,\"cap,tion\",n,clip_score\r\n"
                       "a.png,\"say \"\"hi\"\"\nthere\",1,0.5\r\n"
                       "b.png,plain,,0.25\r\n"
                       "c.png, x ,3,0.125";
    const char *texts[] = {"a.png", "say \"hi\"\nthere", "1.0", "b.png", "plain", "nan", "c.png", " x ", "3.0"};
    const double scores[] = {0.5, 0.25, 0.125};
    const char *path = tpath("v.csv", in), *out = tpath("v.out.csv", NULL);
    run(path, TABLE_CSV, texts, 3, out, TABLE_CSV, 0, scores, 3);
    assert_file(out, want);
}

Test(table, csv_verbatim_score_in_place) {
    const double scores[] = {0.5, 0.25};
    const char *path = tpath("in.csv", cin_in), *out = tpath("in.out.csv", NULL);
    run(path, TABLE_CSV, NULL, 3, out, TABLE_CSV, 0, scores, 2);
    assert_file(out, "image,clip_score,caption\na.png,0.5,x\nb.png,0.25\n");
}

/* Default mode with another output format writes what pandas would. */
Test(table, cross_format_default_mode) {
    const char *path = tpath("x.csv", dtc_in), *out = tpath("x.jsonl", NULL);
    run(path, TABLE_CSV, NULL, 7, out, TABLE_JSONL, 0, five_scores, 3);
    assert_file(out, dtc_jsonl);
    path = tpath("x2.jsonl", dtj_in);
    out = tpath("x2.csv", NULL);
    run(path, TABLE_JSONL, NULL, 7, out, TABLE_CSV, 0, five_scores, 3);
    assert_file(out, dtj_csv);
}

/* Tables without rows: pandas still writes the header, "[\n\n]" and a lone newline. */
Test(table, empty_tables) {
    const char *p = tpath("h.csv", "a,b\n"), *out = tpath("h.out.csv", NULL);
    run(p, TABLE_CSV, NULL, 2, out, TABLE_CSV, 0, five_scores, 0);
    assert_file(out, "a,b,clip_score\n");
    run_pandas_all(p, TABLE_CSV, five_scores, 0, 2, "\n", "[\n\n]", "a,b,clip_score\n");
    p = tpath("e.json", "[ ]\n");
    out = tpath("e.out.json", NULL);
    run(p, TABLE_JSON, NULL, 0, out, TABLE_JSON, 0, five_scores, 0);
    assert_file(out, "[ ]\n");
    run_pandas_all(p, TABLE_JSON, five_scores, 0, 0, "\n", "[\n\n]", "clip_score\n");
}

/* ------------------------------------------------------------------ error paths */

static clip_status scan_err(const char *path, table_format fmt, const table_limits *lim, int skip,
                            clip_error *e) {
    table_schema *s = NULL;
    memset(e, 0, sizeof *e);
    clip_status st = table_scan(path, fmt, lim, skip, &s, e);
    if (st == CLIP_OK) table_schema_free(s);
    return st;
}

/* One bad line among good ones: a scan without skip stops naming it; with skip it is counted,
 * and the reader reports it, hands its bytes out, and goes on. */
static void bad_line(const char *name, const char *line, clip_status code, const char *msg) {
    clip_buf data = {0};
    clip_buf_printf(&data, "{\"image\":\"a\",\"caption\":\"x\"}\n%s\n{\"image\":\"b\",\"caption\":\"y\"}\n", line);
    const char *path = tpath(name, data.data);
    clip_error e;
    cr_assert_eq(scan_err(path, TABLE_JSONL, NULL, 0, &e), code, "%s: %s", name, e.msg);
    cr_assert(strstr(e.msg, path) && strstr(e.msg, "line 2") && strstr(e.msg, msg), "%s", e.msg);
    table_schema *s = scan(path, TABLE_JSONL, 1);
    cr_assert_eq(table_schema_rows(s), 2);
    cr_assert_eq(table_schema_invalid(s), 1);
    table_reader *r;
    cr_assert_eq(table_reader_open(path, TABLE_JSONL, s, NULL, &r, &e), CLIP_OK);
    table_row *row;
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_not_null(row);
    cr_assert_null(table_reader_last_raw(r, NULL));
    cr_assert_eq(table_reader_next(r, &row, &e), code);
    cr_assert(strstr(e.msg, "line 2"), "%s", e.msg);
    cr_assert(table_reader_skippable(r));
    size_t len;
    const char *raw = table_reader_last_raw(r, &len);
    cr_assert_eq(len, strlen(line));
    cr_assert(!memcmp(raw, line, len));
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK, "%s", e.msg);
    cr_assert_str_eq(table_row_string(row, 0, NULL), "b");
    cr_assert_eq(table_row_line(row), 3);
    table_reader_close(r);
    table_schema_free(s);
    clip_buf_free(&data);
}

Test(table, invalid_json_line) { bad_line("bad1.jsonl", "{\"image\": oops}", CLIP_ERR_FORMAT, "invalid JSON at column 11"); }
Test(table, non_object_line) { bad_line("bad2.jsonl", "[1, 2]", CLIP_ERR_FORMAT, "not a JSON object"); }
Test(table, invalid_utf8_line) { bad_line("bad3.jsonl", "{\"caption\":\"\xff\xfe\"}", CLIP_ERR_FORMAT, "invalid UTF-8"); }
/* A BOM anywhere but at the very start of the file is not skipped: that line is invalid. */
Test(table, bom_after_the_start_is_invalid) { bad_line("bad4.jsonl", "\xEF\xBB\xBF{}", CLIP_ERR_FORMAT, "invalid JSON"); }

/* A UTF-8 BOM at the very start of a JSONL, JSON or CSV file is skipped when reading (the
 * first row parses, its line is still 1) and kept by the verbatim writer; pandas' writer
 * writes none. */
Test(table, bom_at_the_start_is_skipped_and_kept) {
    static const struct {
        const char *name, *data;
        table_format fmt;
        const char *verbatim;
    } cases[] = {
        {"bom.jsonl", "\xEF\xBB\xBF{\"t\":\"a\"}\n", TABLE_JSONL, "\xEF\xBB\xBF{\"t\":\"a\",\"clip_score\":0.5}\n"},
        {"bom.json", "\xEF\xBB\xBF[{\"t\": \"a\"}]\n", TABLE_JSON, "\xEF\xBB\xBF[{\"t\": \"a\", \"clip_score\": 0.5}]\n"},
        {"bom.csv", "\xEF\xBB\xBFt\na\n", TABLE_CSV, "\xEF\xBB\xBFt,clip_score\na,0.5\n"},
    };
    static const char *const pandas[] = {"{\"t\":\"a\",\"clip_score\":0.5}\n",
                                         "[\n  {\n    \"t\":\"a\",\n    \"clip_score\":0.5\n  }\n]",
                                         "t,clip_score\na,0.5\n"};
    double score = 0.5;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *in = tpath(cases[i].name, cases[i].data);
        const char *texts[] = {"a"};
        const char *out = tpath("bom_out", NULL);
        run(in, cases[i].fmt, texts, 1, out, cases[i].fmt, 0, &score, 1);
        assert_file(out, cases[i].verbatim);
        run(in, cases[i].fmt, texts, 1, out, cases[i].fmt, 1, &score, 1);
        assert_file(out, pandas[cases[i].fmt]);
    }
}

Test(table, too_long_and_too_deep) {
    table_limits lim = {40, 3};
    const char *path = tpath("long.jsonl", "{\"a\":1}\n{\"a\":\"0123456789012345678901234567890123456789\"}\n"
                                          "{\"a\":[[[1]]]}\n{\"a\":2}\n");
    clip_error e;
    cr_assert_eq(scan_err(path, TABLE_JSONL, &lim, 0, &e), CLIP_ERR_LIMIT);
    cr_assert(strstr(e.msg, "line 2") && strstr(e.msg, "40 bytes"), "%s", e.msg);
    table_schema *s = NULL;
    cr_assert_eq(table_scan(path, TABLE_JSONL, &lim, 1, &s, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(table_schema_rows(s), 2);
    cr_assert_eq(table_schema_invalid(s), 2);
    table_reader *r;
    cr_assert_eq(table_reader_open(path, TABLE_JSONL, s, &lim, &r, &e), CLIP_OK);
    table_row *row;
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_ERR_LIMIT);
    size_t len;
    table_reader_last_raw(r, &len);
    cr_assert_eq(len, 40); /* the first max_row_bytes bytes */
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_ERR_LIMIT);
    cr_assert(strstr(e.msg, "line 3") && strstr(e.msg, "nesting"), "%s", e.msg);
    cr_assert(table_reader_skippable(r));
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_eq(table_row_line(row), 4);
    table_reader_close(r);
    table_schema_free(s);
}

Test(table, csv_bad_records) {
    const char *path = tpath("bad.csv", "image,caption\na,x\nb,y,z\nc,w\nd,\"never closed\n");
    clip_error e;
    cr_assert_eq(scan_err(path, TABLE_CSV, NULL, 0, &e), CLIP_ERR_FORMAT);
    cr_assert(strstr(e.msg, "record 3 (line 3)") && strstr(e.msg, "3 fields, but the header has 2"), "%s", e.msg);
    table_schema *s = scan(path, TABLE_CSV, 1);
    cr_assert_eq(table_schema_rows(s), 2);
    cr_assert_eq(table_schema_invalid(s), 2);
    table_reader *r;
    cr_assert_eq(table_reader_open(path, TABLE_CSV, s, NULL, &r, &e), CLIP_OK);
    table_row *row;
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_ERR_FORMAT);
    size_t len;
    const char *raw = table_reader_last_raw(r, &len);
    cr_assert(len == 5 && !memcmp(raw, "b,y,z", 5));
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_eq(table_row_line(row), 4);
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_ERR_FORMAT);
    cr_assert(strstr(e.msg, "line 5") && strstr(e.msg, "unterminated"), "%s", e.msg);
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_null(row);
    table_reader_close(r);
    table_schema_free(s);
}

Test(table, file_errors) {
    clip_error e;
    for (int f = 0; f < 3; f++) {
        const char *path = tpath(f == 0 ? "empty.jsonl" : f == 1 ? "empty.json" : "empty.csv", "");
        cr_assert_eq(scan_err(path, (table_format)f, NULL, 1, &e), CLIP_ERR_FORMAT, "%s", e.msg);
        cr_assert(strstr(e.msg, path) && strstr(e.msg, "empty file"), "%s", e.msg);
    }
    cr_assert_eq(scan_err(tpath("missing.jsonl", NULL), TABLE_JSONL, NULL, 1, &e), CLIP_ERR_NOT_FOUND);
    cr_assert(strstr(e.msg, "missing.jsonl"), "%s", e.msg);
    cr_assert_eq(scan_err(g_dir, TABLE_CSV, NULL, 1, &e), CLIP_ERR_IO);
    cr_assert(strstr(e.msg, "folder"), "%s", e.msg);
    /* Every line invalid: DataFlow's reader has no record left. */
    cr_assert_eq(scan_err(tpath("none.jsonl", "nope\n\n"), TABLE_JSONL, NULL, 1, &e), CLIP_ERR_FORMAT);
    cr_assert(strstr(e.msg, "no valid JSON record"), "%s", e.msg);
    /* A broken array is not one bad row. */
    const char *broken[] = {"{\"a\":1}", "[{\"a\":1} {\"a\":2}]", "[{\"a\":1},]", "[{\"a\":1}", "[{\"a\":1}] x"};
    for (size_t i = 0; i < sizeof broken / sizeof *broken; i++) {
        cr_assert_eq(scan_err(tpath("broken.json", broken[i]), TABLE_JSON, NULL, 1, &e), CLIP_ERR_FORMAT,
                     "%s", broken[i]);
        cr_assert(strstr(e.msg, "broken.json: line 1"), "%s -> %s", broken[i], e.msg);
    }
    /* A CSV with only blank lines has no header. */
    cr_assert_eq(scan_err(tpath("blank.csv", "\n\n"), TABLE_CSV, NULL, 1, &e), CLIP_ERR_FORMAT);
}

Test(table, reader_fatal_is_sticky) {
    const char *path = tpath("arr.json", "[{\"a\":1},{\"a\":2}]");
    table_schema *s = scan(path, TABLE_JSON, 0);
    tu_write_file(path, "[{\"a\":1} {\"a\":2}]", 17); /* changed after the scan */
    table_reader *r;
    clip_error e = {0};
    cr_assert_eq(table_reader_open(path, TABLE_JSON, s, NULL, &r, &e), CLIP_OK);
    table_row *row;
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_OK);
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_ERR_FORMAT);
    cr_assert(!table_reader_skippable(r));
    cr_assert_eq(table_reader_next(r, &row, &e), CLIP_ERR_FORMAT);
    cr_assert(strstr(e.msg, "expected ','"), "%s", e.msg);
    table_reader_close(r);
    table_schema_free(s);
}

Test(table, format_from_path) {
    table_format f;
    clip_error e = {0};
    cr_assert_eq(table_format_from_path("a/b.c/data.jsonl", &f, &e), CLIP_OK);
    cr_assert_eq(f, TABLE_JSONL);
    cr_assert_eq(table_format_from_path("x.tar.json", &f, &e), CLIP_OK);
    cr_assert_eq(f, TABLE_JSON);
    cr_assert_eq(table_format_from_path("t.csv", &f, &e), CLIP_OK);
    cr_assert_eq(f, TABLE_CSV);
    cr_assert_eq(table_format_from_path("data.parquet", &f, &e), CLIP_ERR_UNSUPPORTED);
    cr_assert(strstr(e.msg, "'parquet'"), "%s", e.msg);
    /* FileStorage splits the whole path: the last dot may sit in a folder name. */
    cr_assert_eq(table_format_from_path("dir.csv/file", &f, &e), CLIP_ERR_UNSUPPORTED);
    cr_assert(strstr(e.msg, "'csv/file'"), "%s", e.msg);
    cr_assert_eq(table_format_from_path("data.JSONL", &f, &e), CLIP_ERR_UNSUPPORTED);
    cr_assert(table_format_from_name("csv", &f) && f == TABLE_CSV);
    cr_assert(!table_format_from_name("xlsx", &f));
    cr_assert_str_eq(table_format_name(TABLE_JSON), "json");
}

/* ------------------------------------------------------------------ atomic replace */

static int temp_files(void) {
    DIR *d = opendir(g_dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp-")) n++;
    closedir(d);
    return n;
}

Test(table, writer_atomicity) {
    const char *in = tpath("in.jsonl", "{\"a\":1}\n{\"a\":2}\n");
    const char *out = tpath("out.jsonl", "previous complete output\n");
    table_schema *s = scan(in, TABLE_JSONL, 0);
    table_write_options o = {TABLE_JSONL, 0, "clip_score", NULL, NULL};
    clip_error e = {0};
    for (int commit = 0; commit < 2; commit++) {
        table_reader *r;
        table_writer *w;
        cr_assert_eq(table_reader_open(in, TABLE_JSONL, s, NULL, &r, &e), CLIP_OK);
        cr_assert_eq(table_writer_open(out, &o, s, TABLE_JSONL, &w, &e), CLIP_OK, "%s", e.msg);
        table_row *row;
        while (table_reader_next(r, &row, &e) == CLIP_OK && row)
            cr_assert_eq(table_writer_row(w, row, 0.5, &e), CLIP_OK);
        cr_assert_eq(temp_files(), 1); /* the temporary file lives next to the target */
        assert_file(out, "previous complete output\n");
        if (commit) {
            cr_assert_eq(table_writer_commit(w, &e), CLIP_OK, "%s", e.msg);
            assert_file(out, "{\"a\":1,\"clip_score\":0.5}\n{\"a\":2,\"clip_score\":0.5}\n");
        } else {
            table_writer_abort(w);
            assert_file(out, "previous complete output\n");
        }
        cr_assert_eq(temp_files(), 0);
        table_reader_close(r);
    }
    /* No previous file: abort leaves nothing behind. */
    const char *fresh = tpath("fresh/new.csv", NULL);
    table_writer *w;
    o.fmt = TABLE_CSV;
    cr_assert_eq(table_writer_open(fresh, &o, s, TABLE_JSONL, &w, &e), CLIP_OK, "%s", e.msg);
    table_writer_abort(w);
    cr_assert(!tu_exists(fresh));
    table_schema_free(s);
}
