/* bench_tokenizer.c — tokenizer throughput on one core: captions/s for the DataFlow captions of
 * the golden file, synthetic 10-20 word captions, and captions of never-seen words (every word
 * misses the BPE cache). Each figure is the 77-token form (truncate + pad) the model consumes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "clip.h"
#include "json.h"
#include "util.h"

#define MAX_CAPTIONS 4096

typedef struct corpus {
    char *text[MAX_CAPTIONS];
    size_t len[MAX_CAPTIONS];
    int n;
} corpus;

static void corpus_free(corpus *c) {
    for (int i = 0; i < c->n; i++) free(c->text[i]);
    c->n = 0;
}

static int corpus_add(corpus *c, const char *s, size_t len) {
    if (c->n == MAX_CAPTIONS) return 0;
    char *p = malloc(len + 1);
    if (!p) return 0;
    memcpy(p, s, len);
    p[len] = '\0';
    c->text[c->n] = p;
    c->len[c->n++] = len;
    return 1;
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* The DataFlow captions (categories dataflow, dataflow_legacy) of texts.jsonl. */
static void load_dataflow(const char *shared, corpus *c) {
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/tokenizer/texts.jsonl", shared);
    char *data;
    size_t len;
    clip_error e = {0};
    if (clip_read_file(path, 0, &data, &len, &e)) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        return;
    }
    for (char *line = data; line < data + len;) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
        json_doc *doc;
        if (ll && json_parse(line, ll, "texts.jsonl", 0, &doc, &e) == CLIP_OK) {
            const json_value *row = json_doc_root(doc), *text = json_get(row, "text");
            const char *cat;
            if (json_get_string(row, "category", &cat) == 1 && !strncmp(cat, "dataflow", 8) &&
                text && text->type == JSON_STRING)
                corpus_add(c, text->u.str.s, text->u.str.len);
            json_doc_free(doc);
        }
        line += ll + 1;
    }
    free(data);
}

/* 10-20 words drawn from the DataFlow captions' own vocabulary. */
static void synth_captions(const corpus *src, corpus *c, int n, uint64_t seed) {
    const char *words[2048];
    size_t wlen[2048];
    int nw = 0;
    for (int i = 0; i < src->n; i++)
        for (const char *p = src->text[i]; *p && nw < 2048;) {
            while (*p == ' ') p++;
            const char *q = p;
            while (*q && *q != ' ') q++;
            if (q > p) {
                words[nw] = p;
                wlen[nw++] = (size_t)(q - p);
            }
            p = q;
        }
    if (!nw) return;
    char buf[1024];
    for (int k = 0; k < n; k++) {
        int count = 10 + (int)(rng_next(&seed) % 11);
        size_t o = 0;
        for (int w = 0; w < count; w++) {
            int i = (int)(rng_next(&seed) % (uint64_t)nw);
            if (o + wlen[i] + 2 >= sizeof buf) break;
            if (w) buf[o++] = ' ';
            memcpy(buf + o, words[i], wlen[i]);
            o += wlen[i];
        }
        corpus_add(c, buf, o);
    }
}

/* 10-20 random lower-case words of 3-10 letters: nearly every word is new to the cache. */
static void novel_captions(corpus *c, int n, uint64_t seed) {
    char buf[512];
    for (int k = 0; k < n; k++) {
        int count = 10 + (int)(rng_next(&seed) % 11);
        size_t o = 0;
        for (int w = 0; w < count; w++) {
            if (w) buf[o++] = ' ';
            int l = 3 + (int)(rng_next(&seed) % 8);
            for (int j = 0; j < l; j++) buf[o++] = (char)('a' + rng_next(&seed) % 26);
        }
        corpus_add(c, buf, o);
    }
}

/* Captions/s of clip_tokenize (77 tokens, truncate + pad) over the corpus, repeated for at
 * least `seconds`. */
static double rate_single(const clip_tokenizer *t, const corpus *c, double seconds) {
    int32_t ids[77], mask[77];
    size_t n;
    long done = 0;
    double t0 = bench_now(), dt;
    do {
        for (int i = 0; i < c->n; i++)
            if (clip_tokenize(t, c->text[i], c->len[i], 77, CLIP_TOK_TRUNCATE | CLIP_TOK_PAD, ids,
                              mask, 77, &n, NULL) != CLIP_OK)
                return -1;
        done += c->n;
        dt = bench_now() - t0;
    } while (dt < seconds);
    return (double)done / dt;
}

/* The same through clip_tokenize_batch (one scratch area for the whole batch). */
static double rate_batch(const clip_tokenizer *t, const corpus *c, double seconds) {
    int32_t *ids = malloc((size_t)c->n * 77 * sizeof *ids);
    if (!ids) return -1;
    long done = 0;
    double t0 = bench_now(), dt;
    do {
        if (clip_tokenize_batch(t, (const char *const *)c->text, c->len, c->n, 77, ids, NULL,
                                NULL) != CLIP_OK) {
            free(ids);
            return -1;
        }
        done += c->n;
        dt = bench_now() - t0;
    } while (dt < seconds);
    free(ids);
    return (double)done / dt;
}

static double mean_words(const corpus *c) {
    long words = 0;
    for (int i = 0; i < c->n; i++) {
        int in = 0;
        for (size_t k = 0; k < c->len[i]; k++) {
            int sp = c->text[i][k] == ' ';
            words += !sp && !in;
            in = !sp;
        }
    }
    return c->n ? (double)words / c->n : 0;
}

void bench_tokenizer(const char *shared) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models/clip-vit-base-patch32", shared);
    clip_tokenizer *t;
    clip_error e = {0};
    double t0 = bench_now();
    if (clip_tokenizer_load(dir, &t, &e)) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        return;
    }
    printf("tokenizer: load %.0f ms (vocab.json + merges.txt), one thread\n",
           1e3 * (bench_now() - t0));

    static corpus dataflow, synth, novel;
    load_dataflow(shared, &dataflow);
    synth_captions(&dataflow, &synth, 4000, 7);
    novel_captions(&novel, 4000, 11);
    const struct {
        const char *name;
        const corpus *c;
    } sets[] = {{"DataFlow captions", &dataflow},
                {"synthetic captions", &synth},
                {"captions of novel words", &novel}};
    for (int s = 0; s < 3; s++) {
        if (!sets[s].c->n) continue;
        double single = rate_single(t, sets[s].c, 1.0), batch = rate_batch(t, sets[s].c, 1.0);
        printf("tokenizer: %-24s (%4d texts, %4.1f words avg): %9.0f captions/s "
               "(clip_tokenize), %9.0f captions/s (clip_tokenize_batch)\n",
               sets[s].name, sets[s].c->n, mean_words(sets[s].c), single, batch);
    }
    corpus_free(&dataflow);
    corpus_free(&synth);
    corpus_free(&novel);
    clip_tokenizer_free(t);
}
