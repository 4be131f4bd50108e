/* test_json.c — the JSON reader (spans, strictness, limits, Python-compatible literals) and the
 * Python-repr float formatter. */
#include <math.h>

#include "json.h"
#include "testutil.h"
#include "util.h"

static json_doc *parse_ok(const char *s) {
    json_doc *d = NULL;
    clip_error e = {0};
    cr_assert_eq(json_parse(s, strlen(s), "t.json", 0, &d, &e), CLIP_OK, "%s: %s", s, e.msg);
    return d;
}

static void parse_fail(const char *s, size_t len, clip_status code, const char *needle) {
    json_doc *d = NULL;
    clip_error e = {0};
    clip_status st = json_parse(s, len, "t.json", 0, &d, &e);
    cr_expect_eq(st, code, "%.60s: status %d (%s)", s, st, e.msg);
    cr_expect(strstr(e.msg, needle) != NULL, "%.60s: message '%s' lacks '%s'", s, e.msg, needle);
    cr_expect_null(d);
}

Test(json, values_and_spans) {
    const char *src = " {\"a\" : [1, -2.5e3, true, null], \"b\":\"x\\u00e9\\ud83d\\ude00\", \"a\":7} ";
    json_doc *d = parse_ok(src);
    const json_value *r = json_doc_root(d);
    cr_assert_eq(r->type, JSON_OBJECT);
    cr_expect_eq(r->start, 1);
    cr_expect_eq(r->end, strlen(src) - 1);
    cr_assert_eq(r->u.obj.n, 3);
    const json_member *m0 = &r->u.obj.members[0];
    cr_expect_eq(m0->key_start, 2);
    cr_expect_eq(m0->key_end, 5);
    const json_value *arr = &m0->value;
    cr_expect_eq(strncmp(src + arr->start, "[1, -2.5e3, true, null]", arr->end - arr->start), 0);
    cr_expect(arr->u.arr.items[0].u.num.is_int);
    cr_expect(!arr->u.arr.items[1].u.num.is_int);
    cr_expect_eq(arr->u.arr.items[1].u.num.d, -2500.0);
    cr_expect_eq(arr->u.arr.items[2].type, JSON_TRUE);
    cr_expect_eq(arr->u.arr.items[3].type, JSON_NULL);
    const char *b;
    cr_assert_eq(json_get_string(r, "b", &b), 1);
    cr_expect_str_eq(b, "x\xc3\xa9\xf0\x9f\x98\x80");
    long long a;
    cr_expect_eq(json_get_int(r, "a", &a), 1); /* last duplicate wins, as in Python */
    cr_expect_eq(a, 7);
    cr_expect_eq(json_get_int(r, "b", &a), -1);
    cr_expect_eq(json_get_int(r, "zz", &a), 0);
    json_doc_free(d);
}

Test(json, python_literals_and_surrogates) {
    json_doc *d = parse_ok("[NaN, Infinity, -Infinity, \"\\ud800x\", \"\\udc00\", \"a\\u0000b\"]");
    const json_value *r = json_doc_root(d);
    cr_expect(isnan(r->u.arr.items[0].u.num.d));
    cr_expect(isinf(r->u.arr.items[1].u.num.d) && r->u.arr.items[1].u.num.d > 0);
    cr_expect(isinf(r->u.arr.items[2].u.num.d) && r->u.arr.items[2].u.num.d < 0);
    cr_expect_str_eq(r->u.arr.items[3].u.str.s, "\xef\xbf\xbdx"); /* lone surrogate -> U+FFFD */
    cr_expect_str_eq(r->u.arr.items[4].u.str.s, "\xef\xbf\xbd");
    cr_expect_eq(r->u.arr.items[5].u.str.len, 3); /* embedded NUL kept, length says so */
    json_doc_free(d);
}

Test(json, rejects) {
    parse_fail("", 0, CLIP_ERR_FORMAT, "unexpected end");
    parse_fail("[1,]", 4, CLIP_ERR_FORMAT, "line 1, column 4");
    parse_fail("{\"a\":1,}", 8, CLIP_ERR_FORMAT, "string key");
    parse_fail("{\"a\" 1}", 7, CLIP_ERR_FORMAT, "':'");
    parse_fail("[01]", 4, CLIP_ERR_FORMAT, "','");
    parse_fail("[1.]", 4, CLIP_ERR_FORMAT, "digit expected");
    parse_fail("[1e]", 4, CLIP_ERR_FORMAT, "exponent");
    parse_fail("\"abc", 4, CLIP_ERR_FORMAT, "unterminated");
    parse_fail("\"a\tb\"", 5, CLIP_ERR_FORMAT, "control character");
    parse_fail("\"\\x\"", 4, CLIP_ERR_FORMAT, "bad escape");
    parse_fail("\"\\u12g4\"", 8, CLIP_ERR_FORMAT, "\\u escape");
    parse_fail("\"\xc3\x28\"", 4, CLIP_ERR_FORMAT, "UTF-8");
    parse_fail("\"\xed\xa0\x80\"", 5, CLIP_ERR_FORMAT, "UTF-8"); /* encoded surrogate */
    parse_fail("\"\xc0\xaf\"", 4, CLIP_ERR_FORMAT, "UTF-8");     /* overlong */
    parse_fail("[1] x", 5, CLIP_ERR_FORMAT, "extra data");
    parse_fail("tru", 3, CLIP_ERR_FORMAT, "unexpected");
    parse_fail("[1\n,\n2 3]", 9, CLIP_ERR_FORMAT, "line 3");
    parse_fail("nan", 3, CLIP_ERR_FORMAT, "unexpected");
}

Test(json, nesting_limit) {
    size_t n = 100000;
    char *s = malloc(2 * n + 1);
    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = 0;
    parse_fail(s, 2 * n, CLIP_ERR_LIMIT, "nesting deeper than 1000");
    /* exactly at the limit is fine */
    json_doc *d;
    clip_error e = {0};
    cr_expect_eq(json_parse(s + n - 5, 10, "t", 5, &d, &e), CLIP_OK, "%s", e.msg);
    json_doc_free(d);
    cr_expect_eq(json_parse(s + n - 6, 12, "t", 5, &d, &e), CLIP_ERR_LIMIT);
    free(s);
}

Test(json, big_document) {
    /* 200k members: the arena and child stacks grow without quadratic behaviour */
    clip_buf b = {0};
    clip_buf_putc(&b, '{');
    for (int i = 0; i < 200000; i++) clip_buf_printf(&b, "%s\"k%d\":[%d,\"v\"]", i ? "," : "", i, i);
    clip_buf_putc(&b, '}');
    json_doc *d = parse_ok(b.data);
    long long v;
    cr_expect_eq(json_get_int(json_doc_root(d), "k0", &v), -1);
    const json_value *x = json_get(json_doc_root(d), "k199999");
    cr_assert_not_null(x);
    cr_expect_eq(x->u.arr.items[0].u.num.d, 199999.0);
    json_doc_free(d);
    clip_buf_free(&b);
}

Test(json, write_string) {
    clip_buf b = {0};
    const char s[] = "a/\"\\\n\t\x01\xc3\xa9";
    json_write_string(&b, s, sizeof s - 1, 1);
    cr_expect_str_eq(b.data, "\"a\\/\\\"\\\\\\n\\t\\u0001\xc3\xa9\"");
    b.len = 0;
    json_write_string(&b, "a/b", 3, 0);
    cr_expect_str_eq(b.data, "\"a/b\"");
    clip_buf_free(&b);
}

Test(util, python_repr_of_floats) {
    static const struct {
        double v;
        const char *s;
    } cases[] = {
        {0.0, "0.0"},
        {-0.0, "-0.0"},
        {1.0, "1.0"},
        {0.5, "0.5"},
        {0.1, "0.1"},
        {2.5, "2.5"},
        {0.5364568009972572, "0.5364568009972572"},
        {0.49859075201675296, "0.49859075201675296"},
        {1e-05, "1e-05"},
        {0.0001, "0.0001"},
        {1e16, "1e+16"},
        {1234567890123456.0, "1234567890123456.0"},
        {123456789012345678.0, "1.2345678901234568e+17"},
        {5e-324, "5e-324"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        {-2.5e-7, "-2.5e-07"},
        {100.0, "100.0"},
    };
    char buf[40];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        clip_format_double_repr(cases[i].v, buf);
        cr_expect_str_eq(buf, cases[i].s);
    }
    clip_format_double_repr(NAN, buf);
    cr_expect_str_eq(buf, "nan");
    clip_format_double_repr(-INFINITY, buf);
    cr_expect_str_eq(buf, "-inf");
}
