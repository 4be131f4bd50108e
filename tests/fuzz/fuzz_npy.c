/* libFuzzer target: the .npy reader. */
#include <stdint.h>
#include <stdlib.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    npy_array a;
    clip_error e;
    if (npy_parse(data, size, "fuzz.npy", &a, &e) == CLIP_OK) {
        if (a.count * a.elem_size > size) abort();
        npy_free(&a);
    }
    return 0;
}
