/* libFuzzer target: the JSON reader (every config, tokenizer file and table row goes through it).
 * Checks the span invariants on success, besides not crashing. */
#include <stdint.h>
#include <stdlib.h>

#include "json.h"

static void check(const json_value *v, size_t len) {
    if (v->start > v->end || v->end > len) abort();
    if (v->type == JSON_ARRAY)
        for (size_t i = 0; i < v->u.arr.n; i++) check(&v->u.arr.items[i], len);
    if (v->type == JSON_OBJECT)
        for (size_t i = 0; i < v->u.obj.n; i++) {
            const json_member *m = &v->u.obj.members[i];
            if (m->key_end > m->value.start || m->key_start < v->start) abort();
            check(&m->value, len);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_doc *d = NULL;
    clip_error e;
    if (json_parse((const char *)data, size, "fuzz", 64, &d, &e) == CLIP_OK) {
        check(json_doc_root(d), size);
        json_doc_free(d);
    }
    return 0;
}
