/* libFuzzer target: the safetensors header and tensor table (st_parse on memory). */
#include <stdint.h>
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    clip_error e;
    if (st_parse(data, size, "fuzz.safetensors", &f, &e) == CLIP_OK) {
        for (size_t i = 0; i < f.n; i++) {
            const st_tensor *t = &f.tensors[i];
            /* every tensor must lie inside the buffer */
            if ((const uint8_t *)t->data < data || (const uint8_t *)t->data + t->nbytes > data + size)
                abort();
            if (st_find(&f, t->name) == NULL) abort();
        }
        st_close(&f);
    }
    return 0;
}
