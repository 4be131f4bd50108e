/* libFuzzer target: config.json parsing and the tensor list it implies. */
#include <stdint.h>
#include <stdlib.h>

#include "model_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clip_config c;
    clip_error e;
    if (clip_config_parse((const char *)data, size, "fuzz/config.json", &c, &e) == CLIP_OK) {
        /* keep the tensor list small enough for the fuzzer: it is linear in the layer count */
        if (c.vision.layers + c.text.layers > 64) return 0;
        clip_tensor_info *specs;
        size_t n;
        if (clip_tensor_table(&c, &specs, &n, &e) == CLIP_OK) free(specs);
    }
    return 0;
}
