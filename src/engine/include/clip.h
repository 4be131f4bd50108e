/* clip.h — the public C API of clipeval: OpenAI CLIP (Hugging Face layout) in C99.
 *
 * Conventions
 *  - Every fallible call returns a clip_status and, when `err` is not NULL, fills it with the
 *    same code and a message that names the file/tensor/row and the reason.
 *  - Objects returned by *_load are read-only afterwards: one model, tokenizer or image config
 *    may be used from several threads at once.
 *  - No global mutable state. Buffers are owned by the caller unless a *_free function exists.
 */
#ifndef CLIP_H
#define CLIP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Only the functions marked CLIP_API leave libclip.so (built with -fvisibility=hidden). */
#if defined(__GNUC__) || defined(__clang__)
#define CLIP_API __attribute__((visibility("default")))
#else
#define CLIP_API
#endif

#define CLIP_VERSION_MAJOR 0
#define CLIP_VERSION_MINOR 2
#define CLIP_VERSION_PATCH 0
#define CLIP_VERSION "0.2.0"

/* The version of the library actually linked (CLIP_VERSION is the header's). */
CLIP_API const char *clip_version(void);

/* ------------------------------------------------------------------ errors */

typedef enum clip_status {
    CLIP_OK = 0,
    CLIP_ERR_ARG,         /* invalid argument from the caller */
    CLIP_ERR_IO,          /* file missing, unreadable, or a write failed */
    CLIP_ERR_FORMAT,      /* malformed file contents (safetensors, JSON, image, npy...) */
    CLIP_ERR_CONFIG,      /* a configuration value is invalid or inconsistent */
    CLIP_ERR_NOMEM,       /* allocation failed */
    CLIP_ERR_LIMIT,       /* a configured limit was exceeded (pixels, bytes, nesting...) */
    CLIP_ERR_UNSUPPORTED, /* valid input that clipeval does not handle */
    CLIP_ERR_NOT_FOUND,   /* model or file not found */
    CLIP_ERR_DEVICE       /* GPU backend unavailable or failed */
} clip_status;

typedef struct clip_error {
    clip_status code;
    char msg[1024];
} clip_error;

CLIP_API const char *clip_status_name(clip_status s);

/* ------------------------------------------------------------------ model */

typedef struct clip_model clip_model;

typedef enum clip_device {
    CLIP_DEVICE_CPU = 0,
    CLIP_DEVICE_CUDA = 1,
    CLIP_DEVICE_AUTO = 2 /* CUDA when built with it and a GPU is usable, else CPU */
} clip_device;

/* "cpu", "cuda", "auto" -> the device; CLIP_ERR_ARG naming the accepted values otherwise. */
CLIP_API clip_status clip_device_parse(const char *name, clip_device *out, clip_error *err);

/* Arithmetic of the forward pass. FP32 is the oracle (the default): every golden tolerance holds.
 * BF16/FP16 store the weights in 16 bits and multiply them with fp32 accumulation; LayerNorm,
 * softmax, the residual stream and the final normalisation stay fp32. */
typedef enum clip_precision {
    CLIP_PRECISION_FP32 = 0,
    CLIP_PRECISION_BF16 = 1, /* CPU: AVX512-BF16; CUDA: tensor cores */
    CLIP_PRECISION_FP16 = 2  /* CUDA only */
} clip_precision;

/* "fp32", "bf16", "fp16". */
CLIP_API const char *clip_precision_name(clip_precision p);
/* The inverse; CLIP_ERR_ARG naming the accepted values for anything else. */
CLIP_API clip_status clip_precision_parse(const char *name, clip_precision *out, clip_error *err);

/* The CPU's matrix-product kernels. Ours (AVX-512, AVX2, portable) compute every element by one
 * fixed recipe, so results are bit-identical whatever the batch, the thread count and which of
 * them runs; OpenBLAS is fast everywhere, but its bits depend on the batch. */
typedef enum clip_cpu_kernel {
    CLIP_CPU_KERNEL_AUTO = 0, /* AVX-512, else AVX2+FMA, else OpenBLAS */
    CLIP_CPU_KERNEL_AVX512,
    CLIP_CPU_KERNEL_AVX2,
    CLIP_CPU_KERNEL_PORTABLE, /* C99 fmaf: slow, but the same bits on any CPU with FMA */
    CLIP_CPU_KERNEL_OPENBLAS
} clip_cpu_kernel;

typedef struct clip_model_options {
    clip_device device;
    int n_threads;            /* CPU threads for one encode call; 0 = all cores */
    clip_precision precision; /* FP32 by default; a precision the device cannot run is an error */
    clip_cpu_kernel cpu_kernel; /* AUTO by default; an fp32 kernel this CPU lacks is an error */
} clip_model_options;

CLIP_API void clip_model_options_init(clip_model_options *opt);

/* Finds the folder of `name`: an existing directory is used as is; otherwise `name` is an HF
 * model id ("org/name") looked up in the HF cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub): models--org--name/refs/main -> snapshots/<rev>/. */
CLIP_API clip_status clip_resolve_model_dir(const char *name, char *dir, size_t dir_cap, clip_error *err);

/* Loads config.json + model.safetensors of a folder or HF model id. */
CLIP_API clip_status clip_model_load(const char *name, const clip_model_options *opt, clip_model **out,
                            clip_error *err);
CLIP_API void clip_model_free(clip_model *m);

typedef struct clip_model_info {
    /* vision tower */
    int image_size, patch_size, num_channels;
    int vision_width, vision_layers, vision_heads, vision_mlp, vision_positions;
    /* text tower */
    int text_width, text_layers, text_heads, text_mlp, context_length, vocab_size;
    int eos_token_id; /* from config.json; 2 selects the legacy argmax pooling rule */
    /* shared */
    int embed_dim;    /* projection_dim */
    float logit_scale; /* the stored tensor (log scale) */
    const char *dir;   /* the resolved model folder */
    const char *device; /* "cpu" or "cuda:<n> (<name>)" */
    clip_precision precision; /* what the forward pass runs in */
    int n_threads;     /* CPU threads one encode call uses (resolved: never 0) */
    const char *cpu_kernel; /* "avx512", "avx2", "portable", "openblas", "avx512-bf16";
                             * "" on CUDA */
} clip_model_info;

CLIP_API const clip_model_info *clip_model_get_info(const clip_model *m);

enum {
    CLIP_EMBED_FEATURES = 1 /* unnormalised projections (get_*_features) instead of L2-normalised */
};

/* Optional per-call settings; NULL means defaults (normalised output, no trace). */
typedef void (*clip_trace_fn)(void *user, const char *name, int item, const float *data,
                              int rows, int cols);
typedef struct clip_encode_options {
    int flags;          /* CLIP_EMBED_* */
    clip_trace_fn trace; /* called with every intermediate ("vision.hidden_states.3", ...) */
    void *trace_user;
} clip_encode_options;

/* pixels: float32 [n, 3, S, S] (S = image_size), out: float32 [n, embed_dim]. */
CLIP_API clip_status clip_encode_images(const clip_model *m, const float *pixels, int n,
                               const clip_encode_options *opt, float *out, clip_error *err);

/* ids: [n, len] token ids, right-padded; row i is pooled as HF does (first EOS, or argmax for
 * the legacy eos_token_id == 2 rule) and only positions 0..pool are computed (causal mask).
 * out: float32 [n, embed_dim]. */
CLIP_API clip_status clip_encode_texts(const clip_model *m, const int32_t *ids, int n, int len,
                              const clip_encode_options *opt, float *out, clip_error *err);

/* The position HF pools a row of `len` ids at, under this model's config. */
CLIP_API int clip_text_pool_index(const clip_model *m, const int32_t *ids, int len);

/* ------------------------------------------------------------------ runtime */

/* What the CPU side runs on: the BLAS actually loaded and its kernel family, the thread
 * counts, and the CPU's vector extensions (CPUID). */
typedef struct clip_runtime_info {
    char blas[64];        /* "OpenBLAS 0.3.21" */
    char blas_core[32];   /* openblas_get_corename(): "Haswell", "SkylakeX", "Prescott", ... */
    int blas_threads;     /* openblas_get_num_threads() */
    int omp_threads;      /* omp_get_max_threads() (1 without OpenMP) */
    int cores;            /* usable cores */
    int avx2, fma, avx512f, avx512bf16; /* CPUID (0 on other architectures) */
    char warning[320];    /* empty, or one line naming a slow BLAS kernel choice and the fix */
} clip_runtime_info;

CLIP_API void clip_runtime_info_get(clip_runtime_info *out);

/* The rule behind clip_runtime_info.warning, separated so it can be tested with any input:
 * a generic pre-AVX2 OpenBLAS core (Prescott, Core2, Penryn, Dunnington, Nehalem, Atom,
 * Sandybridge, Barcelona, ...) on a CPU whose CPUID reports AVX2+FMA (or AVX-512) gets a warning
 * naming `export OPENBLAS_CORETYPE=Haswell` (SkylakeX when AVX-512F, Cooperlake when also
 * AVX512-BF16). Writes "" when there is nothing to say. Returns the length written. */
CLIP_API int clip_blas_advice(const char *blas_core, int avx2, int fma, int avx512f,
                              int avx512bf16, char *buf, size_t cap);

/* ------------------------------------------------------------------ tensors */

/* What a tensor of the state dict is for; the loader checks every one, `clipeval synth` draws
 * each role from its own distribution (golden/SYNTH_WEIGHTS.md). */
typedef enum clip_tensor_role {
    CLIP_TENSOR_EMBEDDING, /* token, position and class embeddings */
    CLIP_TENSOR_LINEAR,    /* projections and the patch convolution: fan_in inputs per output */
    CLIP_TENSOR_NORM,      /* LayerNorm weights */
    CLIP_TENSOR_BIAS,      /* Linear and LayerNorm biases */
    CLIP_TENSOR_SCALAR     /* logit_scale */
} clip_tensor_role;

typedef struct clip_tensor_info {
    char name[96];    /* the Hugging Face state-dict key */
    int ndim;
    int64_t shape[4];
    clip_tensor_role role;
    int64_t fan_in;   /* CLIP_TENSOR_LINEAR only */
} clip_tensor_info;

/* The tensors of the CLIPModel state dict that the config.json at `config_path` implies, sorted
 * by name: exactly what clip_model_load requires. Free *out with clip_free. */
CLIP_API clip_status clip_config_tensors(const char *config_path, clip_tensor_info **out,
                                         size_t *n, clip_error *err);

/* Frees memory that a clip_* function returned for the caller to own. */
CLIP_API void clip_free(void *p);

/* ------------------------------------------------------------------ tokenizer */

typedef struct clip_tokenizer clip_tokenizer;

/* Loads vocab.json + merges.txt (+ tokenizer_config.json / special_tokens_map.json), or a
 * folder that has only tokenizer.json. */
CLIP_API clip_status clip_tokenizer_load(const char *dir, clip_tokenizer **out, clip_error *err);
CLIP_API void clip_tokenizer_free(clip_tokenizer *t);

CLIP_API int clip_tokenizer_bos_id(const clip_tokenizer *t);
CLIP_API int clip_tokenizer_eos_id(const clip_tokenizer *t);
CLIP_API int clip_tokenizer_pad_id(const clip_tokenizer *t);
CLIP_API int clip_tokenizer_max_length(const clip_tokenizer *t); /* model_max_length, 77 by default */
CLIP_API int clip_tokenizer_vocab_size(const clip_tokenizer *t);

enum {
    CLIP_TOK_TRUNCATE = 1, /* keep BOS + first max_length-2 tokens + EOS */
    CLIP_TOK_PAD = 2       /* pad to max_length with the pad id */
};

/* Tokenizes UTF-8 text (invalid bytes become U+FFFD) into [BOS] ids [EOS].
 * max_length <= 0 means no truncation/padding (the full sequence, like HF's fast_ids).
 * Writes at most `cap` ids (and mask values when mask != NULL); *n_out receives the length
 * of the full result, so a result longer than cap returns CLIP_ERR_LIMIT and the needed size. */
CLIP_API clip_status clip_tokenize(const clip_tokenizer *t, const char *text, size_t len, int max_length,
                          int flags, int32_t *ids, int32_t *mask, size_t cap, size_t *n_out,
                          clip_error *err);

/* n texts into [n, max_length] ids (+ masks), always truncated and padded. */
CLIP_API clip_status clip_tokenize_batch(const clip_tokenizer *t, const char *const *texts,
                                const size_t *lens, int n, int max_length, int32_t *ids,
                                int32_t *masks, clip_error *err);

/* ------------------------------------------------------------------ images */

typedef struct clip_image_config {
    int do_resize, do_center_crop, do_rescale, do_normalize, do_convert_rgb;
    int shortest_edge;  /* resize target of the short side */
    int crop_height, crop_width;
    int resample;       /* PIL filter id; only 3 (BICUBIC) is supported */
    double rescale_factor;
    float mean[3], std[3];
} clip_image_config;

/* Reads preprocessor_config.json of a model folder (old and new HF styles). */
CLIP_API clip_status clip_image_config_load(const char *dir, clip_image_config *cfg, clip_error *err);
CLIP_API void clip_image_config_default(clip_image_config *cfg); /* openai/clip-vit-base-patch32 */

/* Pillow's DecompressionBombError threshold: 2 * Image.MAX_IMAGE_PIXELS. */
#define CLIP_PILLOW_MAX_PIXELS ((uint64_t)2 * 89478485u)

typedef struct clip_decode_options {
    int exif_transpose;       /* apply EXIF orientation (off = DataFlow/PIL-object parity) */
    uint64_t max_pixels;      /* refuse larger images before allocating; 0 = Pillow's 2*89478485 */
    uint64_t max_file_bytes;  /* refuse larger files; 0 = 1 GiB */
    int pillow_tall_rule;     /* Pillow >= 12.2: vertical pass first when H > 100*W */
} clip_decode_options;

CLIP_API void clip_decode_options_init(clip_decode_options *o);

typedef struct clip_image {
    int width, height; /* 8-bit RGB, row-major, 3 bytes per pixel */
    uint8_t *rgb;
} clip_image;

CLIP_API void clip_image_free(clip_image *img);

/* Decodes a file / buffer (format from the bytes) to RGB following Pillow's convert("RGB"). */
CLIP_API clip_status clip_image_decode_file(const char *path, const clip_decode_options *o, clip_image *out,
                                   clip_error *err);
CLIP_API clip_status clip_image_decode_memory(const void *data, size_t len, const clip_decode_options *o,
                                     clip_image *out, clip_error *err);

/* Resize (Pillow BICUBIC, fixed point), centre crop, rescale, normalise into
 * out[3 * crop_height * crop_width] (CHW). `resized` (optional) receives the uint8 image before
 * the crop; free it with clip_image_free. */
CLIP_API clip_status clip_image_preprocess(const clip_image *img, const clip_image_config *cfg,
                                  const clip_decode_options *o, float *out, clip_image *resized,
                                  clip_error *err);

/* decode + preprocess. */
CLIP_API clip_status clip_preprocess_file(const char *path, const clip_image_config *cfg,
                                 const clip_decode_options *o, float *out, clip_error *err);

#ifdef __cplusplus
}
#endif
#endif /* CLIP_H */
