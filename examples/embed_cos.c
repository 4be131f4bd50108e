/* embed_cos.c — clipeval's C API in one page: load a model, embed one image and one text,
 * print their cosine similarity.
 *
 *   cc embed_cos.c $(pkg-config --cflags --libs clip) -o embed_cos
 *   ./embed_cos MODEL_DIR_OR_HF_ID IMAGE "a photo of a cat" */
#include <clip.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const clip_error *e) {
    fprintf(stderr, "embed_cos: %s\n", e->msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL IMAGE TEXT   (clipeval %s)\n", argv[0], clip_version());
        return 2;
    }
    clip_error e;
    clip_model *m = NULL;
    clip_tokenizer *tok = NULL;
    clip_image_config icfg;
    if (clip_model_load(argv[1], NULL, &m, &e)) return fail(&e);
    const clip_model_info *info = clip_model_get_info(m);
    if (clip_tokenizer_load(info->dir, &tok, &e) || clip_image_config_load(info->dir, &icfg, &e))
        return fail(&e);
    int D = info->embed_dim, S = info->image_size, L = info->context_length;
    float *pixels = malloc(sizeof(float) * 3 * S * S), *img = malloc(sizeof(float) * D),
          *txt = malloc(sizeof(float) * D);
    int32_t *ids = malloc(sizeof(int32_t) * L);
    if (!pixels || !img || !txt || !ids) return 1;
    const char *text = argv[3];
    size_t len = strlen(text);
    if (clip_preprocess_file(argv[2], &icfg, NULL, pixels, &e) ||   /* Pillow + HF, exact */
        clip_encode_images(m, pixels, 1, NULL, img, &e) ||           /* L2-normalised [1, D] */
        clip_tokenize_batch(tok, &text, &len, 1, L, ids, NULL, &e) || /* truncated + padded */
        clip_encode_texts(m, ids, 1, L, NULL, txt, &e))
        return fail(&e);
    float dot = 0.0f; /* both are unit vectors: the dot product is the cosine */
    for (int i = 0; i < D; i++) dot += img[i] * txt[i];
    printf("%.6f\n", dot);
    free(pixels), free(img), free(txt), free(ids);
    clip_tokenizer_free(tok);
    clip_model_free(m);
    return 0;
}
