/* test_tokenizer.c — the CLIP BPE tokenizer against the Hugging Face golden ids
 * (shared/golden/tokenizer/texts.jsonl), the spec §B.5 vectors, invalid UTF-8, long and random
 * inputs, loader errors, and concurrent use. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clip.h"
#include "json.h"
#include "testutil.h"
#include "util.h"

#define BOS 49406
#define EOS 49407

/* ------------------------------------------------------------------ helpers */

static clip_tokenizer *load_dir(const char *dir) {
    clip_tokenizer *t = NULL;
    clip_error e = {0};
    clip_status st = clip_tokenizer_load(dir, &t, &e);
    cr_assert_eq(st, CLIP_OK, "loading %s: %s", dir, e.msg);
    return t;
}

static clip_tokenizer *load_model(void) {
    char dir[4096];
    tu_shared_path(dir, sizeof dir, "models/clip-vit-base-patch32");
    return load_dir(dir);
}

/* Full sequence (no truncation) into a malloc'd array. */
static int32_t *tok_full(const clip_tokenizer *t, const char *s, size_t len, size_t *n) {
    size_t need = 0;
    clip_error e = {0};
    clip_status st = clip_tokenize(t, s, len, 0, 0, NULL, NULL, 0, &need, &e);
    cr_assert(st == CLIP_ERR_LIMIT && need >= 2, "size query: %d %s", st, e.msg);
    int32_t *ids = malloc(need * sizeof *ids);
    cr_assert_not_null(ids);
    st = clip_tokenize(t, s, len, 0, 0, ids, NULL, need, n, &e);
    cr_assert_eq(st, CLIP_OK, "%s", e.msg);
    cr_assert_eq(*n, need);
    return ids;
}

static void expect_ids(const clip_tokenizer *t, const char *s, const int32_t *want, size_t n) {
    size_t got_n;
    int32_t *got = tok_full(t, s, strlen(s), &got_n);
    int same = got_n == n && memcmp(got, want, n * sizeof *want) == 0;
    if (!same) {
        char buf[2048];
        size_t o = 0;
        for (size_t i = 0; i < got_n && o < sizeof buf - 16; i++)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "%d ", got[i]);
        cr_assert_fail("\"%s\": got %s", s, buf);
    }
    free(got);
}

static void expect_same(const clip_tokenizer *t, const char *a, size_t al, const char *b,
                        size_t bl, const char *what) {
    size_t na, nb;
    int32_t *x = tok_full(t, a, al, &na), *y = tok_full(t, b, bl, &nb);
    cr_assert(na == nb && memcmp(x, y, na * sizeof *x) == 0, "%s: different ids", what);
    free(x);
    free(y);
}

/* ------------------------------------------------------------------ golden file */

typedef struct gold {
    int id;
    char category[32];
    char *text;
    size_t len;
    int32_t *fast;
    size_t n_fast;
    int32_t input_ids[77], mask[77];
    int slow_eq_fast;
} gold;

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static void read_int_array(const json_value *row, const char *key, int32_t *out, size_t cap,
                           size_t *n) {
    const json_value *a = json_get(row, key);
    cr_assert(a && a->type == JSON_ARRAY && a->u.arr.n <= cap, "golden field %s", key);
    for (size_t i = 0; i < a->u.arr.n; i++) out[i] = (int32_t)a->u.arr.items[i].u.num.d;
    *n = a->u.arr.n;
}

static size_t load_golden(gold **out) {
    char path[4096];
    tu_shared_path(path, sizeof path, "golden/tokenizer/texts.jsonl");
    char *data;
    size_t len;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(path, 0, &data, &len, &e), CLIP_OK, "%s", e.msg);
    size_t n = 0, cap = 512;
    gold *g = calloc(cap, sizeof *g);
    cr_assert_not_null(g);
    for (char *line = data; line < data + len;) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
        if (ll) {
            json_doc *doc;
            cr_assert_eq(json_parse(line, ll, "texts.jsonl", 0, &doc, &e), CLIP_OK, "%s", e.msg);
            const json_value *row = json_doc_root(doc);
            cr_assert(n < cap);
            gold *r = &g[n++];
            long long id;
            cr_assert_eq(json_get_int(row, "id", &id), 1);
            r->id = (int)id;
            const char *hex, *cat;
            cr_assert_eq(json_get_string(row, "utf8_hex", &hex), 1);
            cr_assert_eq(json_get_string(row, "category", &cat), 1);
            snprintf(r->category, sizeof r->category, "%s", cat);
            size_t hl = strlen(hex);
            r->text = malloc(hl / 2 + 1);
            for (size_t i = 0; i < hl / 2; i++)
                r->text[i] = (char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1]));
            r->len = hl / 2;
            r->text[r->len] = '\0';
            const json_value *fast = json_get(row, "fast_ids");
            cr_assert(fast && fast->type == JSON_ARRAY);
            r->fast = malloc((fast->u.arr.n + 1) * sizeof *r->fast);
            read_int_array(row, "fast_ids", r->fast, fast->u.arr.n, &r->n_fast);
            size_t k;
            read_int_array(row, "input_ids", r->input_ids, 77, &k);
            cr_assert_eq(k, 77);
            read_int_array(row, "attention_mask", r->mask, 77, &k);
            cr_assert_eq(k, 77);
            int eq = 0;
            cr_assert_eq(json_get_bool(row, "slow_eq_fast", &eq), 1);
            r->slow_eq_fast = eq;
            json_doc_free(doc);
        }
        line += ll + 1;
    }
    free(data);
    *out = g;
    return n;
}

static void free_golden(gold *g, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(g[i].text);
        free(g[i].fast);
    }
    free(g);
}

/* Counts the golden texts whose full ids and 77-token form match. */
static void check_golden(const clip_tokenizer *t, const gold *g, size_t n, size_t *full_ok,
                         size_t *form77_ok, int verbose) {
    *full_ok = *form77_ok = 0;
    for (size_t i = 0; i < n; i++) {
        size_t got_n;
        int32_t *got = tok_full(t, g[i].text, g[i].len, &got_n);
        if (got_n == g[i].n_fast && memcmp(got, g[i].fast, got_n * sizeof *got) == 0)
            (*full_ok)++;
        else if (verbose)
            fprintf(stderr, "tokenizer golden: text %d (%s) fast_ids differ\n", g[i].id,
                    g[i].category);
        free(got);
        int32_t ids[77], mask[77];
        size_t k;
        clip_error e = {0};
        clip_status st = clip_tokenize(t, g[i].text, g[i].len, 77,
                                       CLIP_TOK_TRUNCATE | CLIP_TOK_PAD, ids, mask, 77, &k, &e);
        if (st == CLIP_OK && k == 77 && !memcmp(ids, g[i].input_ids, sizeof ids) &&
            !memcmp(mask, g[i].mask, sizeof mask))
            (*form77_ok)++;
        else if (verbose)
            fprintf(stderr, "tokenizer golden: text %d (%s) 77-token form differs\n", g[i].id,
                    g[i].category);
    }
}

Test(tokenizer, golden_texts) {
    clip_tokenizer *t = load_model();
    gold *g;
    size_t n = load_golden(&g), full_ok, form_ok, slow_diff = 0;
    cr_assert_eq(n, 303, "texts.jsonl has %zu rows", n);
    check_golden(t, g, n, &full_ok, &form_ok, 1);
    for (size_t i = 0; i < n; i++) slow_diff += !g[i].slow_eq_fast;
    fprintf(stderr,
            "tokenizer golden: fast_ids %zu/%zu, input_ids+attention_mask (77) %zu/%zu; "
            "slow tokenizer differs from fast on %zu texts\n",
            full_ok, n, form_ok, n, slow_diff);
    cr_assert_eq(full_ok, n);
    cr_assert_eq(form_ok, n);
    free_golden(g, n);
    clip_tokenizer_free(t);
}

/* ------------------------------------------------------------------ spec vectors */

Test(tokenizer, spec_vectors) {
    clip_tokenizer *t = load_model();
    cr_assert_eq(clip_tokenizer_bos_id(t), BOS);
    cr_assert_eq(clip_tokenizer_eos_id(t), EOS);
    cr_assert_eq(clip_tokenizer_pad_id(t), EOS);
    cr_assert_eq(clip_tokenizer_max_length(t), 77);
    cr_assert_eq(clip_tokenizer_vocab_size(t), 49408);
    static const int32_t cat[] = {BOS, 320, 1125, 539, 320, 2368, EOS};
    expect_ids(t, "a photo of a cat", cat, 7);
    expect_ids(t, "a photo of a dog", (const int32_t[]){BOS, 320, 1125, 539, 320, 1929, EOS}, 7);
    expect_ids(t, "Hello world", (const int32_t[]){BOS, 3306, 1002, EOS}, 4);
    expect_ids(t, "hello world!!", (const int32_t[]){BOS, 3306, 1002, 748, EOS}, 5);
    expect_ids(t, "a cat sitting on the table",
               (const int32_t[]){BOS, 320, 2368, 4919, 525, 518, 2175, EOS}, 8);
    expect_ids(t, "It's 2024, isn't it?",
               (const int32_t[]){BOS, 585, 568, 273, 271, 273, 275, 267, 2923, 713, 585, 286, EOS},
               13);
    expect_ids(t, "a   photo\tof\na cat ", cat, 7);
    expect_ids(t, "don't", (const int32_t[]){BOS, 847, 713, EOS}, 4);
    expect_ids(t, "ABC123", (const int32_t[]){BOS, 5334, 272, 273, 274, EOS}, 6);
    expect_ids(t, "na\xc3\xafve caf\xc3\xa9", (const int32_t[]){BOS, 1097, 35689, 563, 15304, EOS},
               6);
    expect_ids(t, "na\xc3\xafve cafe\xcc\x81", /* NFD input: NFC first */
               (const int32_t[]){BOS, 1097, 35689, 563, 15304, EOS}, 6);
    expect_ids(t, "\xe6\x9d\xb1\xe4\xba\xac", (const int32_t[]){BOS, 48338, 21078, 361, EOS}, 5);
    expect_ids(t, "\xf0\x9f\x98\x80", (const int32_t[]){BOS, 7334, EOS}, 3);
    expect_ids(t, "", (const int32_t[]){BOS, EOS}, 2);
    expect_ids(t, "   ", (const int32_t[]){BOS, EOS}, 2);
    /* §B.3 F column */
    expect_ids(t, "don\xe2\x80\x99t", (const int32_t[]){BOS, 847, 728, 503, 339, EOS}, 6);
    expect_ids(t, "tom &amp; jerry", (const int32_t[]){BOS, 2435, 261, 6259, 282, 9164, EOS}, 7);
    clip_tokenizer_free(t);
}

/* Case and special tokens: added tokens match in the lowercased text (they are "normalized"). */
Test(tokenizer, special_tokens_and_case) {
    clip_tokenizer *t = load_model();
    expect_ids(t, "<|endoftext|>", (const int32_t[]){BOS, EOS, EOS}, 3);
    expect_ids(t, "<|EndOfText|>", (const int32_t[]){BOS, EOS, EOS}, 3);
    expect_ids(t, "x<|startoftext|>y", (const int32_t[]){BOS, 343, BOS, 344, EOS}, 5);
    /* U+0130 lowercases to "i" + U+0307 (full mapping), Σ to σ without final-sigma context. */
    expect_same(t, "\xc4\xb0", 2, "i\xcc\x87", 3, "U+0130");
    expect_same(t, "\xce\xa3", 2, "\xcf\x83", 2, "final sigma");
    clip_tokenizer_free(t);
}

/* ------------------------------------------------------------------ truncation / padding */

Test(tokenizer, truncation_padding_and_arguments) {
    clip_tokenizer *t = load_model();
    const char *text = "a photo of a cat";
    int32_t ids[16], mask[16];
    size_t n;
    clip_error e = {0};
    cr_assert_eq(clip_tokenize(t, text, strlen(text), 10, CLIP_TOK_PAD, ids, mask, 16, &n, &e),
                 CLIP_OK);
    cr_assert_eq(n, 10);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(mask[i], i < 7);
        if (i >= 7) cr_assert_eq(ids[i], EOS);
    }
    cr_assert_eq(clip_tokenize(t, text, strlen(text), 5, CLIP_TOK_TRUNCATE, ids, mask, 16, &n, &e),
                 CLIP_OK);
    cr_assert_eq(n, 5);
    int32_t want5[] = {BOS, 320, 1125, 539, EOS};
    cr_assert_arr_eq(ids, want5, sizeof want5);
    /* padding alone never truncates */
    cr_assert_eq(clip_tokenize(t, text, strlen(text), 5, CLIP_TOK_PAD, ids, NULL, 16, &n, &e),
                 CLIP_OK);
    cr_assert_eq(n, 7);
    cr_assert_eq(clip_tokenize(t, text, strlen(text), 2, CLIP_TOK_TRUNCATE, ids, NULL, 16, &n, &e),
                 CLIP_OK);
    cr_assert_eq(n, 2);
    cr_assert(ids[0] == BOS && ids[1] == EOS);
    /* errors */
    cr_assert_eq(clip_tokenize(t, text, strlen(text), 0, 0, ids, NULL, 3, &n, &e), CLIP_ERR_LIMIT);
    cr_assert_eq(n, 7, "the needed size is reported");
    cr_assert_eq(clip_tokenize(t, text, strlen(text), 1, CLIP_TOK_TRUNCATE, ids, NULL, 16, &n, &e),
                 CLIP_ERR_ARG);
    cr_assert_eq(clip_tokenize(t, text, strlen(text), 0, 4, ids, NULL, 16, &n, &e), CLIP_ERR_ARG);
    cr_assert_eq(clip_tokenize(NULL, text, 1, 0, 0, ids, NULL, 16, &n, &e), CLIP_ERR_ARG);
    cr_assert_eq(clip_tokenize(t, NULL, 3, 0, 0, ids, NULL, 16, &n, &e), CLIP_ERR_ARG);
    cr_assert_eq(clip_tokenize(t, NULL, 0, 0, 0, ids, NULL, 16, &n, &e), CLIP_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(clip_tokenize(t, text, 1, 0, 0, NULL, NULL, 16, &n, &e), CLIP_ERR_ARG);
    clip_tokenizer_free(t);
}

Test(tokenizer, batch_matches_single) {
    clip_tokenizer *t = load_model();
    const char *texts[] = {"a photo of a cat", "", "<|endoftext|> x", "a dog"};
    size_t lens[] = {16, 0, 15, 5};
    int32_t ids[4 * 8], masks[4 * 8];
    clip_error e = {0};
    cr_assert_eq(clip_tokenize_batch(t, texts, lens, 4, 8, ids, masks, &e), CLIP_OK, "%s", e.msg);
    for (int i = 0; i < 4; i++) {
        int32_t one[8], m[8];
        size_t n;
        cr_assert_eq(clip_tokenize(t, texts[i], lens[i], 8, CLIP_TOK_TRUNCATE | CLIP_TOK_PAD, one,
                                   m, 8, &n, &e),
                     CLIP_OK);
        cr_assert_arr_eq(ids + 8 * i, one, sizeof one);
        cr_assert_arr_eq(masks + 8 * i, m, sizeof m);
    }
    cr_assert_eq(clip_tokenize_batch(t, texts, NULL, 4, 8, ids, NULL, &e), CLIP_OK);
    cr_assert_eq(clip_tokenize_batch(t, texts, lens, 4, 1, ids, NULL, &e), CLIP_ERR_ARG);
    clip_tokenizer_free(t);
}

/* ------------------------------------------------------------------ invalid UTF-8 */

/* Expected strings from Python 3.11: bytes.decode("utf-8", errors="replace"). */
static const struct {
    const char *in, *out;
} utf8_cases[] = {
    {"\xff", "\xef\xbf\xbd"},
    {"\x61\x80\x62", "\x61\xef\xbf\xbd\x62"},
    {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xc2", "\xef\xbf\xbd"},
    {"\xc2\x41", "\xef\xbf\xbd\x41"},
    {"\xe0\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xe0\xa0", "\xef\xbf\xbd"},
    {"\xe0\xa0\x41", "\xef\xbf\xbd\x41"},
    {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xed\x9f\xbf", "\xed\x9f\xbf"},
    {"\xf0\x80\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xf0\x90\x80", "\xef\xbf\xbd"},
    {"\xf0\x90\x80\x41", "\xef\xbf\xbd\x41"},
    {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"},
    {"\xf5\x80\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xfe\xfe\xff\xff", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"caf\xe9 au lait", "caf\xef\xbf\xbd au lait"},
    {"\xe2\x82", "\xef\xbf\xbd"},
    {"\xe2\x82\xac\xe2", "\xe2\x82\xac\xef\xbf\xbd"},
    {"\xc3\x28", "\xef\xbf\xbd\x28"},
    {"\xa0\xa1", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xf8\x88\x80\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\x61\xf0\x9f\x98", "\x61\xef\xbf\xbd"},
    {"\xef\xbb\xbf\xef\xbb", "\xef\xbb\xbf\xef\xbf\xbd"},
};

Test(tokenizer, invalid_utf8_is_replaced_like_python) {
    clip_tokenizer *t = load_model();
    for (size_t i = 0; i < sizeof utf8_cases / sizeof *utf8_cases; i++) {
        char what[64];
        snprintf(what, sizeof what, "utf8 case %zu", i);
        expect_same(t, utf8_cases[i].in, strlen(utf8_cases[i].in), utf8_cases[i].out,
                    strlen(utf8_cases[i].out), what);
    }
    /* one U+FFFD per maximal subpart: a different count gives different ids */
    size_t n1, n2;
    int32_t *a = tok_full(t, "\xe0\x80\x80", 3, &n1), *b = tok_full(t, "\xef\xbf\xbd", 3, &n2);
    cr_assert(n1 != n2 || memcmp(a, b, n1 * sizeof *a) != 0);
    free(a);
    free(b);
    /* an embedded NUL is a character of its own (byte 0 -> "Ā</w>" = 188 + 256) */
    size_t n3;
    int32_t *c = tok_full(t, "a\0b", 3, &n3);
    int32_t want[] = {BOS, 320, 444, 321, EOS};
    cr_assert_eq(n3, 5);
    cr_assert_arr_eq(c, want, sizeof want);
    free(c);
    clip_tokenizer_free(t);
}

/* ------------------------------------------------------------------ random inputs */

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Random text: ASCII words, random code points of all planes, raw invalid bytes. */
static size_t random_text(uint64_t *rng, char *buf, size_t cap) {
    size_t n = 0, target = rng_next(rng) % (cap - 8);
    while (n < target) {
        uint64_t r = rng_next(rng);
        int kind = (int)(r % 8);
        if (kind <= 2) {
            buf[n++] = (char)(" aeiouxyzABC'.,!0123<|>"[(r >> 8) % 23]);
        } else if (kind <= 5) {
            static const uint32_t lo[] = {0x80, 0x300, 0x370, 0x590, 0x900, 0x1100, 0x2000,
                                          0x3000, 0x4E00, 0xAC00, 0xFB00, 0xFE00, 0x1F300,
                                          0x10000, 0xE0000, 0x100000};
            uint32_t cp = lo[(r >> 8) % 16] + (uint32_t)((r >> 16) % 0x400);
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
            if (cp > 0x10FFFF) cp = 0x10FFFF;
            n += (size_t)json_utf8_encode(cp, buf + n);
        } else if (kind == 6) {
            buf[n++] = (char)(0x80 + (r >> 8) % 0x80); /* stray or truncated sequences */
        } else {
            buf[n++] = (char)((r >> 8) % 0x20); /* controls, NUL included */
        }
    }
    return n;
}

Test(tokenizer, random_strings_properties) {
    clip_tokenizer *t = load_model();
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    char buf[600];
    int vocab = clip_tokenizer_vocab_size(t);
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = random_text(&rng, buf, sizeof buf);
        size_t n;
        int32_t *full = tok_full(t, buf, len, &n);
        cr_assert_eq(full[0], BOS);
        cr_assert_eq(full[n - 1], EOS);
        for (size_t i = 0; i < n; i++) cr_assert(full[i] >= 0 && full[i] < vocab);
        int32_t ids[77], mask[77];
        size_t k;
        clip_error e = {0};
        cr_assert_eq(clip_tokenize(t, buf, len, 77, CLIP_TOK_TRUNCATE | CLIP_TOK_PAD, ids, mask,
                                   77, &k, &e),
                     CLIP_OK, "%s", e.msg);
        cr_assert_eq(k, 77);
        size_t real = n < 77 ? n : 77;
        /* the truncated form is the full one cut at 75 content ids */
        cr_assert_arr_eq(ids, full, (real - 1) * sizeof *ids);
        cr_assert_eq(ids[real - 1], EOS);
        for (size_t i = 0; i < 77; i++) {
            cr_assert_eq(mask[i], i < real);
            if (i >= real) cr_assert_eq(ids[i], EOS);
        }
        free(full);
    }
    clip_tokenizer_free(t);
}

/* ------------------------------------------------------------------ long inputs */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Full sequence, or the 77-token form when truncate (which may stop early). */
static void tokenize_big(const clip_tokenizer *t, const char *buf, size_t len, int truncate,
                         const char *what) {
    double t0 = now_s();
    size_t n;
    if (truncate) {
        int32_t a[77];
        clip_error e = {0};
        cr_assert_eq(clip_tokenize(t, buf, len, 77, CLIP_TOK_TRUNCATE | CLIP_TOK_PAD, a, NULL, 77,
                                   &n, &e),
                     CLIP_OK, "%s", e.msg);
        cr_assert(n == 77 && a[0] == BOS && a[76] == EOS);
    } else { /* one pass: a text of len bytes has at most 3 * len ids after normalisation */
        size_t cap = 3 * len + 2;
        int32_t *ids = malloc(cap * sizeof *ids);
        clip_error e = {0};
        cr_assert_not_null(ids);
        cr_assert_eq(clip_tokenize(t, buf, len, 0, 0, ids, NULL, cap, &n, &e), CLIP_OK, "%s",
                     e.msg);
        cr_assert(n >= 2 && ids[0] == BOS && ids[n - 1] == EOS);
        free(ids);
    }
    fprintf(stderr, "tokenizer: %s (%zu bytes, %s): %.2f s\n", what, len,
            truncate ? "77 tokens" : "all tokens", now_s() - t0);
}

/* Nothing quadratic: BPE of a huge word is O(m log m), canonical reordering O(k log k). */
Test(tokenizer, long_inputs, .timeout = 600) {
    clip_tokenizer *t = load_model();
    size_t len = 10u << 20;
    char *buf = malloc(len);
    cr_assert_not_null(buf);
    uint64_t rng = 42;
    /* one 10 MB pre-token of letters: BPE of a huge word */
    for (size_t i = 0; i < len; i++) buf[i] = (char)('a' + rng_next(&rng) % 26);
    tokenize_big(t, buf, len, 0, "10 MB word of random letters");
    memset(buf, 'x', 2u << 20);
    tokenize_big(t, buf, 2u << 20, 1, "2 MB of 'x'");
    /* 10 MB of caption-like text */
    const char *words[] = {"a ", "photo ", "of ", "the ", "cat, ", "dog's ", "2024 ",
                           "\xc3\xa9t\xc3\xa9 "};
    size_t n = 0;
    while (n + 8 < len) {
        const char *w = words[rng_next(&rng) % 8];
        memcpy(buf + n, w, strlen(w));
        n += strlen(w);
    }
    tokenize_big(t, buf, n, 0, "10 MB of words");
    tokenize_big(t, buf, n, 1, "10 MB of words");
    /* combining marks in decreasing class order: quadratic for a naive canonical reordering */
    n = 0;
    buf[n++] = 'a';
    while (n + 4 < (2u << 20)) {
        memcpy(buf + n, "\xcc\x81\xcc\xa3", 4); /* U+0301 (class 230), U+0323 (class 220) */
        n += 4;
    }
    tokenize_big(t, buf, n, 0, "2 MB of alternating combining marks");
    free(buf);
    clip_tokenizer_free(t);
}

/* ------------------------------------------------------------------ loader */

/* The 256 byte symbols of spec §B.2, written independently of the library. */
static void byte_symbol(int b, char *out) {
    int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    int k = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE))) k++;
    int n = json_utf8_encode((unsigned)(printable ? b : 0x100 + k), out);
    out[n] = '\0';
}

/* A small vocabulary: byte symbols (ids 0..511), `extra` (512..), then the specials unless
 * no_specials. */
static void tiny_vocab(clip_buf *b, const char *const *extra, int n_extra, int no_specials) {
    int id = 0;
    clip_buf_putc(b, '{');
    for (int last = 0; last < 2; last++)
        for (int byte = 0; byte < 256; byte++) {
            char sym[16];
            byte_symbol(byte, sym);
            if (last) strcat(sym, "</w>");
            if (id) clip_buf_putc(b, ',');
            json_write_string(b, sym, strlen(sym), 0);
            clip_buf_printf(b, ":%d", id++);
        }
    for (int i = 0; i < n_extra; i++) {
        clip_buf_putc(b, ',');
        json_write_string(b, extra[i], strlen(extra[i]), 0);
        clip_buf_printf(b, ":%d", id++);
    }
    if (!no_specials)
        clip_buf_printf(b, ",\"<|startoftext|>\":%d,\"<|endoftext|>\":%d", id, id + 1);
    clip_buf_putc(b, '}');
}

static void write_in(const char *dir, const char *name, const char *text) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    tu_write_file(p, text, strlen(text));
}

static const char *const TINY_EXTRA[] = {"ab</w>", "ab"};
static const char TINY_MERGES[] = "#version: 0.2\na b</w>\na b\n";

/* A folder with the tiny vocabulary (ids: "ab</w>" 512, "ab" 513, BOS 514, EOS 515). */
static void tiny_folder(char *dir, size_t cap, const char *merges) {
    tu_tmpdir(dir, cap);
    clip_buf b = {0};
    tiny_vocab(&b, TINY_EXTRA, 2, 0);
    write_in(dir, "vocab.json", b.data);
    clip_buf_free(&b);
    write_in(dir, "merges.txt", merges);
}

static void expect_load_error(const char *dir, clip_status code, const char *needle1,
                              const char *needle2) {
    clip_tokenizer *t = NULL;
    clip_error e = {0};
    clip_status st = clip_tokenizer_load(dir, &t, &e);
    cr_assert_eq(st, code, "status %d, want %d: %s", st, code, e.msg);
    cr_assert_null(t);
    cr_assert(strstr(e.msg, needle1), "message \"%s\" lacks \"%s\"", e.msg, needle1);
    if (needle2) cr_assert(strstr(e.msg, needle2), "message \"%s\" lacks \"%s\"", e.msg, needle2);
}

Test(tokenizer_load, tiny_vocabulary_and_merge_ranks) {
    char dir[4096];
    tiny_folder(dir, sizeof dir, TINY_MERGES);
    clip_tokenizer *t = load_dir(dir);
    cr_assert_eq(clip_tokenizer_bos_id(t), 514);
    cr_assert_eq(clip_tokenizer_eos_id(t), 515);
    cr_assert_eq(clip_tokenizer_vocab_size(t), 516);
    expect_ids(t, "ab", (const int32_t[]){514, 512, 515}, 3);
    /* rank 0 "a b</w>" merges the end first, then rank 1 "a b" */
    expect_ids(t, "ABab", (const int32_t[]){514, 513, 512, 515}, 4);
    expect_ids(t, "ba", (const int32_t[]){514, 'b', 256 + 'a', 515}, 4); /* ids = byte order */
    clip_tokenizer_free(t);
    /* only vocab_size - 514 merge lines are used: with 3 lines, the third is never read */
    tu_rmtree(dir);
    tiny_folder(dir, sizeof dir, "#version: 0.2\na b</w>\na b\nthis line is not a merge\n");
    t = load_dir(dir);
    clip_tokenizer_free(t);
    tu_rmtree(dir);
}

Test(tokenizer_load, missing_files) {
    expect_load_error("/nonexistent/clip-tokenizer", CLIP_ERR_NOT_FOUND, "/nonexistent", NULL);
    char dir[4096];
    tu_tmpdir(dir, sizeof dir);
    write_in(dir, "merges.txt", TINY_MERGES);
    expect_load_error(dir, CLIP_ERR_NOT_FOUND, "vocab.json", NULL);
    tu_rmtree(dir);
    tiny_folder(dir, sizeof dir, TINY_MERGES);
    char p[4200];
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    remove(p);
    expect_load_error(dir, CLIP_ERR_NOT_FOUND, "merges.txt", NULL);
    tu_rmtree(dir);
}

Test(tokenizer_load, malformed_files) {
    char dir[4096];
    tiny_folder(dir, sizeof dir, TINY_MERGES);
    write_in(dir, "vocab.json", "{\"a\": 0,");
    expect_load_error(dir, CLIP_ERR_FORMAT, "vocab.json", "invalid JSON");
    write_in(dir, "vocab.json", "[1, 2]");
    expect_load_error(dir, CLIP_ERR_FORMAT, "vocab.json", "object");
    write_in(dir, "vocab.json", "{\"a\": 0, \"b\": 5}");
    expect_load_error(dir, CLIP_ERR_FORMAT, "vocab.json", "outside");
    write_in(dir, "vocab.json", "{\"a\": 0, \"b\": 0}");
    expect_load_error(dir, CLIP_ERR_FORMAT, "vocab.json", "two tokens");
    write_in(dir, "vocab.json", "{\"a\": 0, \"a\": 1}");
    expect_load_error(dir, CLIP_ERR_FORMAT, "vocab.json", "twice");
    write_in(dir, "vocab.json", "{\"a\": 0, \"b\": \"1\"}");
    expect_load_error(dir, CLIP_ERR_FORMAT, "vocab.json", "integer");
    tu_rmtree(dir);

    tiny_folder(dir, sizeof dir, "#version: 0.2\na b c\na b\n");
    expect_load_error(dir, CLIP_ERR_FORMAT, "merges.txt: line 2", "two tokens");
    tu_rmtree(dir);
    tiny_folder(dir, sizeof dir, "#version: 0.2\na\na b\n");
    expect_load_error(dir, CLIP_ERR_FORMAT, "merges.txt: line 2", "two tokens");
    tu_rmtree(dir);
    tiny_folder(dir, sizeof dir, "#version: 0.2\na b</w>\n\na b\n");
    expect_load_error(dir, CLIP_ERR_FORMAT, "merges.txt: line 3", NULL);
    tu_rmtree(dir);
    tiny_folder(dir, sizeof dir, "#version: 0.2\na zz\na b\n");
    expect_load_error(dir, CLIP_ERR_FORMAT, "merges.txt: line 2",
                      "\"zz\" is not in the vocabulary");
    tu_rmtree(dir);
    tiny_folder(dir, sizeof dir, "#version: 0.2\nb a\na b\n");
    expect_load_error(dir, CLIP_ERR_FORMAT, "merges.txt: line 2", "merge result \"ba\"");
    tu_rmtree(dir);

    /* no BOS in the vocabulary */
    tu_tmpdir(dir, sizeof dir);
    clip_buf b = {0};
    tiny_vocab(&b, TINY_EXTRA, 2, 1);
    write_in(dir, "vocab.json", b.data);
    clip_buf_free(&b);
    write_in(dir, "merges.txt", "#version: 0.2\n");
    expect_load_error(dir, CLIP_ERR_FORMAT, "bos_token", "<|startoftext|>");
    tu_rmtree(dir);
}

Test(tokenizer_load, config_files) {
    char dir[4096];
    tiny_folder(dir, sizeof dir, TINY_MERGES);
    write_in(dir, "tokenizer_config.json", "{\"model_max_length\": 1e30}");
    clip_tokenizer *t = load_dir(dir);
    cr_assert_eq(clip_tokenizer_max_length(t), 77, "absurd model_max_length means unset");
    clip_tokenizer_free(t);
    write_in(dir, "tokenizer_config.json",
             "{\"model_max_length\": 248, \"pad_token\": {\"content\": \"!\"}}");
    t = load_dir(dir);
    cr_assert_eq(clip_tokenizer_max_length(t), 248);
    cr_assert_eq(clip_tokenizer_pad_id(t), '!');
    clip_tokenizer_free(t);
    /* special_tokens_map.json overrides tokenizer_config.json */
    write_in(dir, "special_tokens_map.json", "{\"pad_token\": \"ab\"}");
    t = load_dir(dir);
    cr_assert_eq(clip_tokenizer_pad_id(t), 513);
    /* "ab" is now an added token: it is split out before BPE, like HF's pad token */
    expect_ids(t, "abab", (const int32_t[]){514, 513, 513, 515}, 4);
    clip_tokenizer_free(t);
    write_in(dir, "special_tokens_map.json", "{\"pad_token\": \"<pad>\"}");
    expect_load_error(dir, CLIP_ERR_FORMAT, "pad_token \"<pad>\"", "special_tokens_map.json");
    write_in(dir, "special_tokens_map.json", "{\"pad_token\": 3}");
    expect_load_error(dir, CLIP_ERR_FORMAT, "special_tokens_map.json: pad_token", NULL);
    char p[4200];
    snprintf(p, sizeof p, "%s/special_tokens_map.json", dir);
    remove(p);
    write_in(dir, "tokenizer_config.json", "{\"model_max_length\": ");
    expect_load_error(dir, CLIP_ERR_FORMAT, "tokenizer_config.json", "invalid JSON");
    write_in(dir, "tokenizer_config.json", "{\"model_max_length\": \"77\"}");
    expect_load_error(dir, CLIP_ERR_FORMAT, "tokenizer_config.json", "model_max_length");
    tu_rmtree(dir);
}

/* tokenizer.json alone: the real file gives the same ids on every golden text. */
Test(tokenizer_load, tokenizer_json_only_matches) {
    char src[4096], dir[4096], dst[4200];
    tu_shared_path(src, sizeof src, "models/clip-vit-base-patch32/tokenizer.json");
    char *data;
    size_t len;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(src, 0, &data, &len, &e), CLIP_OK, "%s", e.msg);
    tu_tmpdir(dir, sizeof dir);
    snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
    tu_write_file(dst, data, len);
    free(data);
    clip_tokenizer *t = load_dir(dir);
    cr_assert_eq(clip_tokenizer_bos_id(t), BOS);
    cr_assert_eq(clip_tokenizer_eos_id(t), EOS);
    cr_assert_eq(clip_tokenizer_pad_id(t), EOS);
    cr_assert_eq(clip_tokenizer_vocab_size(t), 49408);
    gold *g;
    size_t n = load_golden(&g), full_ok, form_ok;
    check_golden(t, g, n, &full_ok, &form_ok, 1);
    cr_assert_eq(full_ok, n);
    cr_assert_eq(form_ok, n);
    free_golden(g, n);
    clip_tokenizer_free(t);
    tu_rmtree(dir);
}

static const char TJ_HEAD[] =
    "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 514, \"content\": \"<|startoftext|>\", "
    "\"normalized\": true, \"special\": true}, {\"id\": 515, \"content\": \"<|endoftext|>\", "
    "\"normalized\": true, \"special\": true}],"
    "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": "
    "\"Replace\", \"pattern\": {\"Regex\": \"\\\\s+\"}, \"content\": \" \"}, {\"type\": "
    "\"Lowercase\"}]},"
    "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
    "\"pattern\": {\"Regex\": "
    "\"'s|'t|'re|'ve|'m|'ll|'d|[\\\\p{L}]+|[\\\\p{N}]|[^\\\\s\\\\p{L}\\\\p{N}]+\"}, "
    "\"behavior\": \"Removed\", \"invert\": true}, {\"type\": \"ByteLevel\"}]},"
    "\"post_processor\": {\"type\": \"RobertaProcessing\", \"sep\": [\"<|endoftext|>\", 515], "
    "\"cls\": [\"<|startoftext|>\", 514]},";

static void tiny_tokenizer_json(const char *dir, const char *merges_json, const char *lowercase) {
    clip_buf b = {0};
    clip_buf_puts(&b, TJ_HEAD);
    clip_buf_puts(&b, "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": "
                      "\"<|endoftext|>\", \"end_of_word_suffix\": \"</w>\", \"vocab\": ");
    tiny_vocab(&b, TINY_EXTRA, 2, 0);
    clip_buf_printf(&b, ", \"merges\": %s}}", merges_json);
    if (lowercase) { /* swap the Lowercase normalizer for another one */
        char *p = strstr(b.data, "\"Lowercase\"");
        cr_assert_not_null(p);
        memcpy(p, lowercase, strlen(lowercase));
    }
    write_in(dir, "tokenizer.json", b.data);
    clip_buf_free(&b);
}

Test(tokenizer_load, tokenizer_json_forms_and_errors) {
    char dir[4096];
    tu_tmpdir(dir, sizeof dir);
    const char *forms[] = {"[\"a b</w>\", \"a b\"]", "[[\"a\", \"b</w>\"], [\"a\", \"b\"]]"};
    for (int f = 0; f < 2; f++) {
        tiny_tokenizer_json(dir, forms[f], NULL);
        clip_tokenizer *t = load_dir(dir);
        expect_ids(t, "abab <|ENDOFTEXT|>", (const int32_t[]){514, 513, 512, 515, 515}, 5);
        clip_tokenizer_free(t);
    }
    tiny_tokenizer_json(dir, "[\"a b c\"]", NULL);
    expect_load_error(dir, CLIP_ERR_FORMAT, "model.merges[0]", "two tokens");
    tiny_tokenizer_json(dir, "[[\"a\"]]", NULL);
    expect_load_error(dir, CLIP_ERR_FORMAT, "model.merges[0]", NULL);
    tiny_tokenizer_json(dir, "[\"b a\"]", NULL);
    expect_load_error(dir, CLIP_ERR_FORMAT, "model.merges[0]", "merge result");
    tiny_tokenizer_json(dir, "[]", "\"Lowercasf\"");
    expect_load_error(dir, CLIP_ERR_UNSUPPORTED, "tokenizer.json", "normalizer");
    write_in(dir, "tokenizer.json", "{\"model\": 3}");
    expect_load_error(dir, CLIP_ERR_FORMAT, "tokenizer.json", "model");
    tu_rmtree(dir);
}

/* ------------------------------------------------------------------ threads */

typedef struct thread_arg {
    const clip_tokenizer *t;
    const gold *g;
    size_t n, start;
    int32_t *const *want; /* per text: the 77-token form from a single thread */
    int failures;
} thread_arg;

static void *thread_main(void *p) {
    thread_arg *a = p;
    for (int round = 0; round < 3; round++)
        for (size_t k = 0; k < a->n; k++) {
            size_t i = (a->start + k * (round + 1)) % a->n;
            int32_t ids[77];
            size_t n;
            if (clip_tokenize(a->t, a->g[i].text, a->g[i].len, 77, CLIP_TOK_TRUNCATE | CLIP_TOK_PAD,
                              ids, NULL, 77, &n, NULL) != CLIP_OK ||
                memcmp(ids, a->want[i], sizeof ids) != 0)
                a->failures++;
        }
    return NULL;
}

Test(threads, tokenizer_shared_by_four_threads) {
    clip_tokenizer *ref = load_model();
    gold *g;
    size_t n = load_golden(&g);
    int32_t **want = malloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++) {
        want[i] = malloc(77 * sizeof **want);
        size_t k;
        cr_assert_eq(clip_tokenize(ref, g[i].text, g[i].len, 77, CLIP_TOK_TRUNCATE | CLIP_TOK_PAD,
                                   want[i], NULL, 77, &k, NULL),
                     CLIP_OK);
    }
    clip_tokenizer_free(ref);
    clip_tokenizer *t = load_model(); /* a cold cache, filled concurrently */
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){t, g, n, (size_t)i * 77, want, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].failures, 0, "thread %d: %d results differ", i, args[i].failures);
    }
    for (size_t i = 0; i < n; i++) free(want[i]);
    free(want);
    free_golden(g, n);
    clip_tokenizer_free(t);
}
