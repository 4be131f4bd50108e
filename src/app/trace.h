/* trace.h — `clipeval trace`: every intermediate tensor of one image and/or one text, written
 * as DIR/<name>.npy + DIR/manifest.json in the layout of golden/debug (HF CLIPModel names,
 * shapes and conventions; see trace_names.h). */
#ifndef CLIPEVAL_TRACE_H
#define CLIPEVAL_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "clip.h"

/* The subcommand: argv excludes "trace". Exit status 0 on success, 1 on a failure, 2 on a usage
 * error. */
int trace_command(int argc, char **argv);

/* Records the blocks the engine reports for item 0 (a clip_trace_fn: pass trace_record as
 * clip_encode_options.trace and the recorder as trace_user). */
typedef struct trace_recorder trace_recorder;
trace_recorder *trace_recorder_new(void);
void trace_recorder_free(trace_recorder *r);
void trace_record(void *recorder, const char *name, int item, const float *data, int rows,
                  int cols);

/* The inputs of the traced forward passes, written next to the intermediates. */
typedef struct trace_inputs {
    const float *pixels;        /* [C, S, S] of the model, or NULL when no image was traced */
    const int32_t *ids, *mask;  /* [len], or NULL when no text was traced */
    int len, pool;              /* sequence length, pooled position */
    const char *image, *text, *input_ids; /* where they came from (manifest), or NULL */
    const char *mask_source;    /* how the attention mask was obtained */
} trace_inputs;

/* Writes the recorded blocks in the golden/debug layout (stacked hidden states, patch_conv as
 * [D, g, g], attention probabilities [heads, N, N], pooled vectors 1-D) plus the inputs and
 * manifest.json into the existing folder `dir`. Reports a recording failure (a block the engine
 * sent that cannot be stored, incomplete hidden states) as CLIP_ERR_FORMAT. */
clip_status trace_write_folder(const trace_recorder *r, const trace_inputs *in,
                               const clip_model_info *info, const char *dir, size_t *n_files,
                               size_t *bytes, clip_error *err);

#endif
