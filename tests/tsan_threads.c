/* tsan_threads.c — `make tsan`: the C API used from 4 threads at once on ONE model, tokenizer
 * and image config, under ThreadSanitizer. A plain program, not a Criterion test: Criterion's
 * runner cannot start under TSan (its inheritable arena fails to initialise).
 *
 * Each thread decodes + preprocesses golden images, tokenizes texts and encodes both, many
 * times, and compares every result with the single-threaded reference computed first. Exit
 * status 0 means equal results and (with TSAN_OPTIONS=halt_on_error=1) no data race. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"
#include "scorer.h"

#define NTHREADS 4
#define ROUNDS 3

static const char *images[] = {"golden/images/edge_100x60.png", "golden/images/cake.jpg",
                               "golden/images/edge_anim.gif", "golden/images/edge_webp_lossy.webp"};
static const char *texts[] = {"a photo of a cat", "It's 2024, isn't it?", "naïve café 東京 😀",
                              "a cup of coffee<|endoftext|>on a wooden table"};
#define NIMG 4
#define NTXT 4

typedef struct shared {
    const char *root;
    clip_model *model;
    clip_tokenizer *tok;
    clip_image_config icfg;
    int S, D;
    float ref_img[NIMG][1024], ref_txt[NTXT][1024];
    int failures; /* written by the main thread only, after join */
} shared;

typedef struct worker {
    shared *sh;
    int id, failures;
    float img[NIMG][1024], txt[NTXT][1024];
} worker;

/* Encodes every image and text; returns 0 on success. */
static int compute(shared *sh, float img[NIMG][1024], float txt[NTXT][1024], char *why) {
    size_t per = (size_t)3 * sh->S * sh->S;
    float *px = malloc(sizeof(float) * per * NIMG);
    if (!px) return 1;
    clip_error e = {0};
    clip_decode_options d;
    clip_decode_options_init(&d);
    for (int i = 0; i < NIMG; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", sh->root, images[i]);
        if (clip_preprocess_file(p, &sh->icfg, &d, px + per * i, &e)) {
            snprintf(why, 1024, "%s", e.msg);
            free(px);
            return 1;
        }
    }
    float out[NIMG * 1024];
    if (clip_encode_images(sh->model, px, NIMG, NULL, out, &e)) {
        snprintf(why, 1024, "%s", e.msg);
        free(px);
        return 1;
    }
    for (int i = 0; i < NIMG; i++) memcpy(img[i], out + i * sh->D, sizeof(float) * sh->D);
    free(px);
    int32_t ids[NTXT * 77];
    size_t lens[NTXT];
    for (int i = 0; i < NTXT; i++) lens[i] = strlen(texts[i]);
    if (clip_tokenize_batch(sh->tok, texts, lens, NTXT, 77, ids, NULL, &e) ||
        clip_encode_texts(sh->model, ids, NTXT, 77, NULL, out, &e)) {
        snprintf(why, 1024, "%s", e.msg);
        return 1;
    }
    for (int i = 0; i < NTXT; i++) memcpy(txt[i], out + i * sh->D, sizeof(float) * sh->D);
    return 0;
}

static void *run_worker(void *arg) {
    worker *w = arg;
    shared *sh = w->sh;
    char why[1024];
    for (int r = 0; r < ROUNDS; r++) {
        if (compute(sh, w->img, w->txt, why)) {
            fprintf(stderr, "thread %d: %s\n", w->id, why);
            w->failures++;
            continue;
        }
        /* the same batch composition as the reference: bit-identical results expected */
        if (memcmp(w->img, sh->ref_img, sizeof w->img) || memcmp(w->txt, sh->ref_txt, sizeof w->txt)) {
            fprintf(stderr, "thread %d round %d: results differ from the single-threaded run\n",
                    w->id, r);
            w->failures++;
        }
    }
    return NULL;
}

/* The scorer's own threads (decoder pool + inference) on a small table with the tiny model. */
static int score_run(const char *root) {
    char dir[] = "/tmp/clipeval-tsan-XXXXXX", cmd[16384], path[4200];
    if (!mkdtemp(dir)) return 1;
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/m && ln -s %s/golden/models/tiny-synth/config.json "
             "%s/golden/models/tiny-synth/model.safetensors %s/models/clip-vit-base-patch32/vocab.json "
             "%s/models/clip-vit-base-patch32/merges.txt %s/m/",
             dir, root, root, root, root, dir);
    if (system(cmd)) return 1;
    snprintf(path, sizeof path, "%s/m/preprocessor_config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fputs("{\"size\": 32, \"crop_size\": 32, \"resample\": 3}", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/in.jsonl", dir);
    f = fopen(path, "w");
    if (!f) return 1;
    for (int i = 0; i < 40; i++)
        fprintf(f, "{\"image_path\":\"%s/%s\",\"text\":\"%s %d\"}\n", root, images[i % NIMG],
                texts[i % NTXT], i % 10);
    fclose(f);
    clip_score_options o;
    clip_score_options_init(&o);
    char model[4200], out[4200];
    snprintf(model, sizeof model, "%s/m", dir);
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    o.input = path;
    o.output = out;
    o.model = model;
    o.device = CLIP_DEVICE_CPU;
    o.decode_threads = 4;
    o.batch_size = 3;
    o.quiet = 1;
    o.log = NULL;
    clip_score_stats st;
    clip_error e = {0};
    int rc = clip_score_table(&o, &st, &e) != CLIP_OK || st.scored != 40;
    if (rc) fprintf(stderr, "tsan_threads: score: %s (%zu scored)\n", e.msg, st.scored);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) rc = 1;
    printf("tsan_threads: scorer with 4 decoder threads: %s\n", rc ? "FAILED" : "ok");
    return rc;
}

int main(void) {
    shared *sh = calloc(1, sizeof *sh);
    const char *root = getenv("CLIPEVAL_SHARED");
    if (!sh || !root || !*root) {
        fprintf(stderr, "tsan_threads: set CLIPEVAL_SHARED\n");
        return 2;
    }
    sh->root = root;
    char dir[4096], tokdir[4096];
    snprintf(dir, sizeof dir, "%s/golden/models/tiny-synth", root);
    snprintf(tokdir, sizeof tokdir, "%s/models/clip-vit-base-patch32", root);
    clip_error e = {0};
    if (clip_model_load(dir, NULL, &sh->model, &e) || clip_tokenizer_load(tokdir, &sh->tok, &e) ||
        clip_image_config_load(tokdir, &sh->icfg, &e)) {
        fprintf(stderr, "tsan_threads: %s\n", e.msg);
        return 1;
    }
    /* the tiny model takes 32x32 images */
    sh->icfg.shortest_edge = sh->icfg.crop_height = sh->icfg.crop_width = 32;
    sh->S = clip_model_get_info(sh->model)->image_size;
    sh->D = clip_model_get_info(sh->model)->embed_dim;
    char why[1024];
    if (compute(sh, sh->ref_img, sh->ref_txt, why)) {
        fprintf(stderr, "tsan_threads: %s\n", why);
        return 1;
    }
    pthread_t th[NTHREADS];
    worker *w = calloc(NTHREADS, sizeof *w);
    if (!w) return 1;
    for (int i = 0; i < NTHREADS; i++) {
        w[i].sh = sh;
        w[i].id = i;
        if (pthread_create(&th[i], NULL, run_worker, &w[i])) return 1;
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        sh->failures += w[i].failures;
    }
    free(w);
    printf("tsan_threads: %d threads x %d rounds on one model/tokenizer/config: %s\n", NTHREADS,
           ROUNDS, sh->failures ? "FAILED" : "ok");
    clip_tokenizer_free(sh->tok);
    clip_model_free(sh->model);
    int rc = sh->failures != 0;
    if (score_run(root)) rc = 1;
    free(sh);
    return rc;
}
