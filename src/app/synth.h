/* synth.h — deterministic synthetic CLIP weights (golden/SYNTH_WEIGHTS.md), for tests and for
 * anyone who needs a full-size model without downloading one. */
#ifndef CLIPEVAL_SYNTH_H
#define CLIPEVAL_SYNTH_H

#include <stdint.h>

#include "clip.h"

/* Writes model.safetensors (F32) for the config.json at config_path: every tensor of
 * clip_config_tensors, in name order. Written to path.tmp, then renamed. */
clip_status synth_write(const char *config_path, uint64_t seed, const char *path, clip_error *err);

/* The manifest checksum of one tensor: sum of bits(v[j]) * (2j + 1), as SYNTH_WEIGHTS.md. */
uint64_t synth_checksum(const clip_tensor_info *spec, uint64_t seed);

#endif
