/* scorer.h — `clipeval score` and `clipeval filter`: DataFlow-MM's CLIP operators over a
 * table, streamed (ImageCLIPEvaluator, ImageClipFilter, CLIPScoreFilter: filter.h). */
#ifndef CLIP_SCORER_H
#define CLIP_SCORER_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "clip.h"
#include "files.h"
#include "filter.h"
#include "table/table.h"

/* DataFlow's default model (ImageCLIPEvaluator's model_name); every CLI command's default too. */
#define CLIP_DEFAULT_MODEL "openai/clip-vit-base-patch32"
/* The largest --batch-size (images per forward call). */
#define CLIP_SCORE_MAX_BATCH 4096
/* The default --max-text-bytes: a longer text scores 0.0 with a warning. */
#define CLIP_SCORE_DEFAULT_MAX_TEXT ((size_t)64 << 20)

typedef struct clip_score_options {
    const char *input;        /* the table to read; "-" = standard input (copied first) */
    const char *output;       /* the table to write: files.h says how ("-" = stdout) */
    table_format in_fmt, out_fmt;
    clip_table_mode mode;     /* score (default), or one of the two filters (filter.h) */
    const char *command;      /* "score" or "filter": the summary's and warnings' words */
    const char *image_key, *text_key, *output_key; /* THRESHOLD: no output_key (NULL) */
    const char *question_key; /* KEEP_RATIO: the text is question + answer (text_key) */
    double threshold;         /* THRESHOLD: rows with clamp(cos, 0, 1) >= threshold are kept */
    double keep_ratio;        /* KEEP_RATIO: in [0, 1] */
    const char *scores_out;   /* every row's value as JSONL (filter.h; NULL: none) */
    const char *image_root;   /* NULL: paths are relative to the current directory */
    const char *model;        /* folder or HF model id */
    clip_device device;
    clip_precision precision; /* fp32 (default), bf16, fp16 */
    int threads;              /* 0 = all cores */
    int decode_threads;       /* 0 = all cores */
    int batch_size;           /* images per forward call (texts: 8x) */
    size_t cache_entries;     /* distinct images (and texts) whose embeddings are kept */
    size_t max_text_bytes;    /* longer texts score 0.0 with a warning; 0 = the default */
    int per_row;              /* DataFlow's own loop: batch 1, no reuse (for comparison) */
    int pandas_compat, skip_invalid, quiet, progress;
    const char *log_failures; /* every failed row as JSONL (NULL: none) */
    clip_decode_options decode;
    table_limits limits;
    FILE *log;                /* warnings and progress (stderr) */
    volatile sig_atomic_t *cancel; /* polled: when set, stop and leave no output */
    files_registry *registry; /* temporary files a signal handler removes (may be NULL) */
} clip_score_options;

typedef struct clip_score_stats {
    size_t rows, scored, image_failed, text_failed, empty_text, rejected;
    size_t kept;              /* rows written (score: every row) */
    double cutoff;            /* THRESHOLD: the threshold; KEEP_RATIO: the percentile (NaN when
                               * no row has a similarity) */
    size_t images_read;       /* distinct images that decoded */
    size_t images_encoded, texts_encoded;
    double seconds;
    char rejects_path[4200];  /* set when rows were rejected */
    char first_failure[1024]; /* "PATH: REASON" of the first row whose image failed */
    int first_relative;       /* ... and PATH is relative */
    char device[160];         /* what the model ran on, and with how many threads */
    int cpu;                  /* the model ran on the CPU */
} clip_score_stats;

void clip_score_options_init(clip_score_options *o);

/* Runs the whole job; the output file appears only when everything succeeded. Rows whose image
 * or text failed get the mode's failure value (filter.h) and are counted in stats (the caller
 * decides what that means for its exit status: the CLI's are in cli.c). Memory is bounded by
 * the window, batch and cache sizes, plus 9 bytes per row in KEEP_RATIO mode (17 while the
 * percentile is taken). */
clip_status clip_score_table(const clip_score_options *o, clip_score_stats *stats, clip_error *err);

/* The model folder's preprocessor_config.json, refused (CLIP_ERR_CONFIG) when its crop size is
 * not the model's image size. */
clip_status clip_score_image_config(const clip_model *m, clip_image_config *cfg, clip_error *err);

/* The cosine of one pair of L2-normalised embeddings as DataFlow's operators get it: the dot
 * product taken in float32 like torch, held as a double (Python's float of it). */
double clip_pair_cosine(const float *img, const float *txt, int dim);
/* ImageCLIPEvaluator's score of the pair: clamp((cosine + 1) / 2, 0, 1) in double. */
double clip_pair_score(const float *img, const float *txt, int dim);


#endif
