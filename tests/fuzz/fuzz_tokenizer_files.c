/* libFuzzer target: the tokenizer's files. The input is split at "\n@@\n" into vocab.json,
 * merges.txt and tokenizer_config.json, or — when it starts with "T:" — is one tokenizer.json;
 * they are written to a private folder and loaded. A loaded tokenizer must then tokenize. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clip.h"

static char g_dir[64]; /* the fuzzer's private folder, made once */

static void put(const char *name, const uint8_t *d, size_t n) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n) fwrite(d, 1, n, f);
    fclose(f);
}

static void drop(const char *name) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    unlink(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/fuzz-tokfiles-XXXXXX");
        if (!mkdtemp(g_dir)) abort();
    }
    drop("vocab.json");
    drop("merges.txt");
    drop("tokenizer_config.json");
    drop("tokenizer.json");
    if (size >= 2 && data[0] == 'T' && data[1] == ':') {
        put("tokenizer.json", data + 2, size - 2);
    } else {
        const char *names[3] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
        size_t start = 0;
        int part = 0;
        for (size_t i = 0; i + 4 <= size && part < 2; i++)
            if (!memcmp(data + i, "\n@@\n", 4)) {
                put(names[part++], data + start, i - start);
                start = i + 4;
                i += 3;
            }
        put(names[part], data + start, size - start);
    }
    clip_tokenizer *t;
    clip_error e;
    if (clip_tokenizer_load(g_dir, &t, &e) == CLIP_OK) {
        int32_t ids[77], mask[77];
        const char *txt = "A photo of a cat, it's 2024!";
        size_t len = strlen(txt);
        if (clip_tokenize_batch(t, &txt, &len, 1, 77, ids, mask, &e) == CLIP_OK)
            for (int i = 0; i < 77; i++)
                if (ids[i] < 0 || ids[i] >= clip_tokenizer_vocab_size(t)) abort();
        clip_tokenizer_free(t);
    }
    return 0;
}
