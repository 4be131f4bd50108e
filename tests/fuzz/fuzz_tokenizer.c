/* libFuzzer target: clip_tokenize on arbitrary bytes (invalid UTF-8, controls, marks, special
 * token fragments). Besides not crashing, checks the output invariants: BOS first, EOS last,
 * ids inside the vocabulary, and the 77-token form equal to the full sequence cut at 75 ids.
 * The tokenizer folder: $CLIPEVAL_TOKENIZER_DIR, else $CLIPEVAL_SHARED/models/
 * clip-vit-base-patch32, else ../shared/models/clip-vit-base-patch32. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"

static clip_tokenizer *tokenizer(void) {
    static clip_tokenizer *t; /* loaded once, read-only afterwards */
    if (t) return t;
    char dir[4096];
    const char *d = getenv("CLIPEVAL_TOKENIZER_DIR"), *shared = getenv("CLIPEVAL_SHARED");
    if (d && *d)
        snprintf(dir, sizeof dir, "%s", d);
    else
        snprintf(dir, sizeof dir, "%s/models/clip-vit-base-patch32",
                 shared && *shared ? shared : "../shared");
    clip_error e;
    if (clip_tokenizer_load(dir, &t, &e) != CLIP_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s (set CLIPEVAL_TOKENIZER_DIR)\n", e.msg);
        abort();
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const clip_tokenizer *t = tokenizer();
    const char *text = (const char *)data;
    size_t cap = 3 * size + 2, n = 0; /* normalisation grows a text at most 3x in ids */
    int32_t *full = malloc(cap * sizeof *full);
    if (!full) return 0;
    if (clip_tokenize(t, text, size, 0, 0, full, NULL, cap, &n, NULL) != CLIP_OK) abort();
    int bos = clip_tokenizer_bos_id(t), eos = clip_tokenizer_eos_id(t);
    int vocab = clip_tokenizer_vocab_size(t);
    if (n < 2 || full[0] != bos || full[n - 1] != eos) abort();
    for (size_t i = 0; i < n; i++)
        if (full[i] < 0 || full[i] >= vocab) abort();

    int32_t ids[77], mask[77];
    size_t k = 0;
    if (clip_tokenize(t, text, size, 77, CLIP_TOK_TRUNCATE | CLIP_TOK_PAD, ids, mask, 77, &k,
                      NULL) != CLIP_OK ||
        k != 77)
        abort();
    size_t real = n < 77 ? n : 77;
    if (memcmp(ids, full, (real - 1) * sizeof *ids) != 0 || ids[real - 1] != eos) abort();
    for (size_t i = 0; i < 77; i++)
        if (mask[i] != (i < real) || (i >= real && ids[i] != clip_tokenizer_pad_id(t))) abort();
    free(full);
    return 0;
}
