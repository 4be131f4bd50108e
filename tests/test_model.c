/* test_model.c — the engine against the HF golden data (../shared/golden):
 * synthetic-weight checksums, embeddings vs the fp64 reference, per-layer intermediates vs
 * HF's fp32 debug dumps, batch invariance. */
#include <math.h>
#include <stdint.h>

#include "clip.h"
#include "json.h"
#include "model_internal.h"
#include "synth.h"
#include "testutil.h"
#include "util.h"

/* ------------------------------------------------------------------ helpers */

/* Loads a model folder, failing the test with the loader's message. */
static clip_model *load_model(const char *dir) {
    clip_model *m = NULL;
    clip_error e = {0};
    clip_status st = clip_model_load(dir, NULL, &m, &e);
    cr_assert_eq(st, CLIP_OK, "loading %s: %s", dir, e.msg);
    return m;
}

static void tiny_dir(char *out, size_t cap) { tu_shared_path(out, cap, "golden/models/tiny-synth"); }

/* ------------------------------------------------------------------ checksums */

static void check_manifest(const char *model) {
    char mpath[4096], cpath[4096], spath[4096];
    char rel[256];
    snprintf(rel, sizeof rel, "golden/models/%s/weights.manifest.json", model);
    tu_shared_path(mpath, sizeof mpath, rel);
    snprintf(rel, sizeof rel, "golden/models/%s/config.json", model);
    tu_shared_path(cpath, sizeof cpath, rel);
    snprintf(rel, sizeof rel, "golden/models/%s/seed.txt", model);
    tu_shared_path(spath, sizeof spath, rel);
    clip_error e = {0};
    clip_config cfg;
    cr_assert_eq(clip_config_load(cpath, &cfg, &e), CLIP_OK, "%s", e.msg);
    char *seed_s;
    size_t sl;
    cr_assert_eq(clip_read_file(spath, 0, &seed_s, &sl, &e), CLIP_OK);
    uint64_t seed = strtoull(seed_s, NULL, 0);
    free(seed_s);
    json_doc *doc;
    cr_assert_eq(json_parse_file(mpath, 0, 0, &doc, &e), CLIP_OK, "%s", e.msg);
    const json_value *root = json_doc_root(doc);
    const json_value *tensors = json_get(root, "tensors");
    if (!tensors) tensors = root;
    clip_tensor_info *specs;
    size_t n;
    cr_assert_eq(clip_tensor_table(&cfg, &specs, &n, &e), CLIP_OK);
    size_t matched = 0, listed = 0;
    /* The manifest lists tensors either as an object keyed by name or as an array. */
    for (size_t i = 0; i < n; i++) {
        const json_value *entry = NULL;
        if (tensors->type == JSON_OBJECT) {
            entry = json_get(tensors, specs[i].name);
        } else if (tensors->type == JSON_ARRAY) {
            for (size_t k = 0; k < tensors->u.arr.n && !entry; k++) {
                const char *nm;
                if (json_get_string(&tensors->u.arr.items[k], "name", &nm) == 1 &&
                    !strcmp(nm, specs[i].name))
                    entry = &tensors->u.arr.items[k];
            }
        }
        cr_assert_not_null(entry, "%s: tensor %s not in the manifest", model, specs[i].name);
        const char *want;
        cr_assert_eq(json_get_string(entry, "checksum", &want), 1);
        char got[17];
        snprintf(got, sizeof got, "%016llx",
                 (unsigned long long)synth_checksum(&specs[i], seed));
        cr_expect_str_eq(got, want, "%s: checksum of %s", model, specs[i].name);
        matched += !strcmp(got, want);
    }
    listed = tensors->type == JSON_OBJECT ? tensors->u.obj.n : tensors->u.arr.n;
    cr_expect_eq(listed, n, "%s: manifest lists %zu tensors, the config implies %zu", model, listed,
                 n);
    fprintf(stderr, "[golden] %s: %zu/%zu synthetic tensor checksums reproduced\n", model, matched, n);
    free(specs);
    json_doc_free(doc);
}

Test(synth, tiny_checksums) { check_manifest("tiny-synth"); }
Test(synth, vitb32_checksums, .timeout = 300) { check_manifest("vitb32-synth"); }

/* The generator's file for tiny-synth is byte-identical to the reference file. */
Test(synth, tiny_file_matches_reference) {
    char cfg[4096], ref[4096], tmp[4096], out[4200], cmd[9000];
    tu_shared_path(cfg, sizeof cfg, "golden/models/tiny-synth/config.json");
    tu_shared_path(ref, sizeof ref, "golden/models/tiny-synth/model.safetensors");
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/model.safetensors", tmp);
    clip_error e = {0};
    cr_assert_eq(synth_write(cfg, 0x5EED, out, &e), CLIP_OK, "%s", e.msg);
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", out, ref);
    cr_expect_eq(system(cmd), 0, "generated tiny-synth differs from the reference file");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    (void)!system(cmd);
}

/* ------------------------------------------------------------------ embeddings */

static void check_images(const char *model_dir, const char *gdir, const float *pixels, int n) {
    clip_model *m = load_model(model_dir);
    int E = clip_model_get_info(m)->embed_dim;
    float *emb = malloc(sizeof(float) * (size_t)n * E), *feat = malloc(sizeof(float) * (size_t)n * E);
    clip_error e = {0};
    clip_encode_options fo = {CLIP_EMBED_FEATURES, NULL, NULL};
    cr_assert_eq(clip_encode_images(m, pixels, n, NULL, emb, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(clip_encode_images(m, pixels, n, &fo, feat, &e), CLIP_OK, "%s", e.msg);
    tu_check_golden("[golden]", gdir, "image_embeds", emb, (size_t)n * E);
    tu_check_golden("[golden]", gdir, "image_features", feat, (size_t)n * E);
    free(emb);
    free(feat);
    clip_model_free(m);
}

static void check_texts(const char *model_dir, const char *gdir) {
    int n;
    int32_t *ids = tu_golden_input_ids(&n);
    clip_model *m = load_model(model_dir);
    int E = clip_model_get_info(m)->embed_dim;
    float *emb = malloc(sizeof(float) * (size_t)n * E), *feat = malloc(sizeof(float) * (size_t)n * E);
    clip_error e = {0};
    clip_encode_options fo = {CLIP_EMBED_FEATURES, NULL, NULL};
    cr_assert_eq(clip_encode_texts(m, ids, n, 77, NULL, emb, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(clip_encode_texts(m, ids, n, 77, &fo, feat, &e), CLIP_OK, "%s", e.msg);
    tu_check_golden("[golden]", gdir, "text_embeds", emb, (size_t)n * E);
    tu_check_golden("[golden]", gdir, "text_features", feat, (size_t)n * E);
    free(emb);
    free(feat);
    free(ids);
    clip_model_free(m);
}

Test(golden, tiny_images) {
    char dir[4096], gdir[4096], pv[4200];
    tiny_dir(dir, sizeof dir);
    tu_shared_path(gdir, sizeof gdir, "golden/embeddings/tiny-synth");
    snprintf(pv, sizeof pv, "%s/pixel_values.npy", gdir);
    npy_array a;
    tu_load_npy(pv, &a);
    check_images(dir, gdir, a.data, (int)a.shape[0]);
    npy_free(&a);
}

Test(golden, tiny_texts) {
    char dir[4096], gdir[4096];
    tiny_dir(dir, sizeof dir);
    tu_shared_path(gdir, sizeof gdir, "golden/embeddings/tiny-synth");
    check_texts(dir, gdir);
}

Test(golden, vitb32_images, .timeout = 600) {
    char dir[4096], gdir[4096];
    tu_synth_dir(dir, sizeof dir, "vitb32-synth");
    tu_shared_path(gdir, sizeof gdir, "golden/embeddings/vitb32-synth");
    int n;
    float *px = tu_vitb32_pixels(&n);
    check_images(dir, gdir, px, n);
    free(px);
}

Test(golden, vitb32_texts, .timeout = 600) {
    char dir[4096], gdir[4096];
    tu_synth_dir(dir, sizeof dir, "vitb32-synth");
    tu_shared_path(gdir, sizeof gdir, "golden/embeddings/vitb32-synth");
    check_texts(dir, gdir);
}

/* ------------------------------------------------------------------ per-layer debug */

/* Collected intermediates of item 0. */
typedef struct capture {
    char names[512][64];
    float *data[512];
    int rows[512], cols[512];
    int n;
} capture;

static void capture_fn(void *user, const char *name, int item, const float *data, int rows,
                       int cols) {
    capture *c = user;
    if (item != 0 || c->n >= 512) return;
    snprintf(c->names[c->n], sizeof c->names[0], "%s", name);
    c->data[c->n] = malloc(sizeof(float) * (size_t)rows * cols);
    memcpy(c->data[c->n], data, sizeof(float) * (size_t)rows * cols);
    c->rows[c->n] = rows;
    c->cols[c->n] = cols;
    c->n++;
}

static const float *captured(const capture *c, const char *name, int *rows, int *cols) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->names[i], name)) {
            *rows = c->rows[i];
            *cols = c->cols[i];
            return c->data[i];
        }
    cr_assert_fail("intermediate %s was not traced", name);
    return NULL;
}

static void capture_free(capture *c) {
    for (int i = 0; i < c->n; i++) free(c->data[i]);
}

/* The debug dumps are HF's own fp32 values (debug/README.md states no tolerance), so a
 * comparison carries both engines' rounding. The check is relative to the array's magnitude:
 * 1e-5 of max |ref| is 4x the largest difference seen (2.3e-6, ViT-B/32 patch_conv, a
 * 3072-term conv that PyTorch sums in another order) and far below what a real defect does (a
 * wrong kernel, order or constant moves values by 1e-3 of their scale or more). */
#define DEBUG_REL_TOL 1e-5

static double compare_block(const char *label, const float *ours, int ours_cols, const float *ref,
                            int ref_cols, int rows, int cols, int transposed_ref) {
    double mx = 0, scale = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            double r = transposed_ref ? ref[(size_t)j * ref_cols + i] : ref[(size_t)i * ref_cols + j];
            double d = fabs((double)ours[(size_t)i * ours_cols + j] - r);
            if (!(d <= mx)) mx = d;
            if (fabs(r) > scale) scale = fabs(r);
        }
    double rel = mx / (scale > 0 ? scale : 1);
    fprintf(stderr, "[debug] %-40s max abs diff %.3g (max |ref| %.3g, relative %.2g)\n", label, mx,
            scale, rel);
    cr_expect(rel <= DEBUG_REL_TOL, "%s: relative diff %.3g above %.1g", label, rel, DEBUG_REL_TOL);
    return rel;
}

/* Compares traced `name` with debug file `file`; rows limits the compared rows (text: real
 * tokens only). */
static void debug_cmp(const capture *c, const char *ddir, const char *name, const char *file,
                      int max_rows) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.npy", ddir, file);
    npy_array a;
    tu_load_npy(path, &a);
    cr_assert_eq(a.dtype, NPY_F32);
    int rows, cols;
    const float *ours = captured(c, name, &rows, &cols);
    size_t ref_cols = a.ndim >= 2 ? a.shape[a.ndim - 1] : a.count;
    size_t ref_rows = a.count / ref_cols;
    int r = rows < (int)ref_rows ? rows : (int)ref_rows;
    if (max_rows > 0 && r > max_rows) r = max_rows;
    cr_assert_eq((size_t)cols, ref_cols, "%s: %d columns vs %zu in %s", name, cols, ref_cols, file);
    compare_block(name, ours, cols, a.data, (int)ref_cols, r, cols, 0);
    npy_free(&a);
}

static void debug_vision(const char *model_dir, const char *ddir, const float *pixels) {
    clip_model *m = load_model(model_dir);
    const clip_model_info *info = clip_model_get_info(m);
    capture *c = calloc(1, sizeof *c);
    clip_encode_options o = {0, capture_fn, c};
    float out[1024];
    clip_error e = {0};
    cr_assert_eq(clip_encode_images(m, pixels, 1, &o, out, &e), CLIP_OK, "%s", e.msg);
    int S = info->vision_positions, D = info->vision_width, H = info->vision_heads;
    /* patch_conv is [D, g, g] in HF's layout, ours [patches, D]. */
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/vision.patch_conv.npy", ddir);
        npy_array a;
        tu_load_npy(path, &a);
        int rows, cols;
        const float *ours = captured(c, "vision.patch_conv", &rows, &cols);
        cr_assert_eq((size_t)rows * cols, a.count);
        compare_block("vision.patch_conv", ours, cols, a.data, rows, rows, cols, 1);
        npy_free(&a);
    }
    debug_cmp(c, ddir, "vision.embeddings", "vision.embeddings", 0);
    debug_cmp(c, ddir, "vision.pre_layrnorm", "vision.pre_layrnorm", 0);
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/vision.hidden_states.npy", ddir);
        npy_array a;
        tu_load_npy(path, &a);
        for (size_t l = 0; l < a.shape[0]; l++) {
            char name[64];
            snprintf(name, sizeof name, "vision.hidden_states.%zu", l);
            int rows, cols;
            const float *ours = captured(c, name, &rows, &cols);
            compare_block(name, ours, cols, (const float *)a.data + l * (size_t)S * D, D, S, D, 0);
        }
        npy_free(&a);
    }
    static const char *layer0[] = {"layer_norm1", "q_proj", "k_proj",     "v_proj", "attn_context",
                                   "out_proj",    "layer_norm2", "fc1", "fc2", "attn_probs"};
    for (size_t i = 0; i < sizeof layer0 / sizeof layer0[0]; i++) {
        char name[64], path[4200];
        snprintf(name, sizeof name, "vision.layer0.%s", layer0[i]);
        snprintf(path, sizeof path, "%s/%s.npy", ddir, name);
        if (!tu_exists(path)) continue; /* fc1 is stored for tiny-synth only */
        debug_cmp(c, ddir, name, name, 0);
    }
    (void)H;
    debug_cmp(c, ddir, "vision.pooled_cls_pre_ln", "vision.pooled_cls_pre_ln", 0);
    debug_cmp(c, ddir, "vision.pooled", "vision.pooled", 0);
    debug_cmp(c, ddir, "image_features", "image_features", 0);
    debug_cmp(c, ddir, "image_embeds", "image_embeds", 0);
    capture_free(c);
    free(c);
    clip_model_free(m);
}

static void debug_text(const char *model_dir, const char *ddir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/text.input_ids.npy", ddir);
    npy_array ids_a;
    tu_load_npy(path, &ids_a);
    int L = (int)ids_a.count;
    int32_t ids[77];
    for (int i = 0; i < L; i++)
        ids[i] = (int32_t)(ids_a.dtype == NPY_I64 ? ((int64_t *)ids_a.data)[i]
                                                  : ((int32_t *)ids_a.data)[i]);
    npy_free(&ids_a);
    snprintf(path, sizeof path, "%s/text.pool_index.npy", ddir);
    npy_array pi;
    tu_load_npy(path, &pi);
    int pool = (int)(pi.dtype == NPY_I64 ? ((int64_t *)pi.data)[0] : ((int32_t *)pi.data)[0]);
    npy_free(&pi);
    clip_model *m = load_model(model_dir);
    cr_expect_eq(clip_text_pool_index(m, ids, L), pool, "pool index");
    int real = pool + 1; /* rows 0..pool are real tokens; HF's pad rows differ by design */
    capture *c = calloc(1, sizeof *c);
    clip_encode_options o = {0, capture_fn, c};
    float out[1024];
    clip_error e = {0};
    cr_assert_eq(clip_encode_texts(m, ids, 1, L, &o, out, &e), CLIP_OK, "%s", e.msg);
    int D = clip_model_get_info(m)->text_width;
    snprintf(path, sizeof path, "%s/text.hidden_states.npy", ddir);
    npy_array hs;
    tu_load_npy(path, &hs);
    for (size_t l = 0; l < hs.shape[0]; l++) {
        char name[64];
        snprintf(name, sizeof name, "text.hidden_states.%zu", l);
        int rows, cols;
        const float *ours = captured(c, name, &rows, &cols);
        compare_block(name, ours, cols, (const float *)hs.data + l * (size_t)L * D, D, real, D, 0);
    }
    npy_free(&hs);
    debug_cmp(c, ddir, "text.final_layer_norm", "text.final_layer_norm", real);
    static const char *layer0[] = {"layer_norm1", "q_proj",      "k_proj", "v_proj", "attn_context",
                                   "out_proj",    "layer_norm2", "fc1",    "fc2"};
    for (size_t i = 0; i < sizeof layer0 / sizeof layer0[0]; i++) {
        char name[64], p2[4200];
        snprintf(name, sizeof name, "text.layer0.%s", layer0[i]);
        snprintf(p2, sizeof p2, "%s/%s.npy", ddir, name);
        if (!tu_exists(p2)) continue;
        debug_cmp(c, ddir, name, name, real);
    }
    { /* attention probabilities [heads, L, L]: the real query rows of every head */
        snprintf(path, sizeof path, "%s/text.layer0.attn_probs.npy", ddir);
        npy_array a;
        tu_load_npy(path, &a);
        int rows, cols;
        const float *ours = captured(c, "text.layer0.attn_probs", &rows, &cols);
        int heads = (int)a.shape[0];
        for (int h = 0; h < heads; h++) {
            char label[64];
            snprintf(label, sizeof label, "text.layer0.attn_probs[head %d]", h);
            compare_block(label, ours + (size_t)h * L * L, L,
                          (const float *)a.data + (size_t)h * L * L, L, real, L, 0);
        }
        npy_free(&a);
    }
    debug_cmp(c, ddir, "text.pooled", "text.pooled", 0);
    debug_cmp(c, ddir, "text_features", "text_features", 0);
    debug_cmp(c, ddir, "text_embeds", "text_embeds", 0);
    capture_free(c);
    free(c);
    clip_model_free(m);
}

Test(debug, tiny_vision) {
    char dir[4096], ddir[4096], pv[4096];
    tiny_dir(dir, sizeof dir);
    tu_shared_path(ddir, sizeof ddir, "golden/debug/tiny-synth");
    tu_shared_path(pv, sizeof pv, "golden/embeddings/tiny-synth/pixel_values.npy");
    npy_array a;
    tu_load_npy(pv, &a);
    debug_vision(dir, ddir, a.data); /* item 0 = 2.png at 32x32 */
    npy_free(&a);
}

Test(debug, tiny_text) {
    char dir[4096], ddir[4096];
    tiny_dir(dir, sizeof dir);
    tu_shared_path(ddir, sizeof ddir, "golden/debug/tiny-synth");
    debug_text(dir, ddir);
}

Test(debug, vitb32_vision, .timeout = 300) {
    char dir[4096], ddir[4096], pv[4096];
    tu_synth_dir(dir, sizeof dir, "vitb32-synth");
    tu_shared_path(ddir, sizeof ddir, "golden/debug/vitb32-synth");
    tu_shared_path(pv, sizeof pv, "golden/images/0.pixel_values.npy");
    npy_array a;
    tu_load_npy(pv, &a);
    debug_vision(dir, ddir, a.data);
    npy_free(&a);
}

Test(debug, vitb32_text, .timeout = 300) {
    char dir[4096], ddir[4096];
    tu_synth_dir(dir, sizeof dir, "vitb32-synth");
    tu_shared_path(ddir, sizeof ddir, "golden/debug/vitb32-synth");
    debug_text(dir, ddir);
}

/* ------------------------------------------------------------------ batch invariance */

Test(batch, vitb32_images_alone_vs_batch_of_7, .timeout = 300) {
    char dir[4096];
    tu_synth_dir(dir, sizeof dir, "vitb32-synth");
    int n;
    float *px = tu_vitb32_pixels(&n);
    cr_assert(n >= 7);
    clip_model *m = load_model(dir);
    int E = clip_model_get_info(m)->embed_dim;
    size_t per = 3 * 224 * 224;
    float batch[7 * 512], alone[512];
    clip_error e = {0};
    cr_assert_eq(clip_encode_images(m, px, 7, NULL, batch, &e), CLIP_OK, "%s", e.msg);
    for (int i = 0; i < 7; i++) {
        cr_assert_eq(clip_encode_images(m, px + per * i, 1, NULL, alone, &e), CLIP_OK);
        double d = gd_max_abs_diff(alone, batch + (size_t)i * E, (size_t)E);
        cr_expect(d <= 1e-6, "image %d: alone vs in a batch of 7 differ by %.3g", i, d);
    }
    free(px);
    clip_model_free(m);
}

Test(batch, vitb32_texts_alone_vs_batch_of_7, .timeout = 300) {
    char dir[4096];
    tu_synth_dir(dir, sizeof dir, "vitb32-synth");
    int n;
    int32_t *ids = tu_golden_input_ids(&n);
    clip_model *m = load_model(dir);
    int E = clip_model_get_info(m)->embed_dim;
    /* texts of different lengths in one batch, including a truncated 77-token one */
    int pick[7] = {0, 63, 64, 120, 200, 250, 280};
    int32_t b[7 * 77];
    for (int i = 0; i < 7; i++) memcpy(b + i * 77, ids + pick[i] * 77, sizeof(int32_t) * 77);
    float batch[7 * 512], alone[512];
    clip_error e = {0};
    cr_assert_eq(clip_encode_texts(m, b, 7, 77, NULL, batch, &e), CLIP_OK, "%s", e.msg);
    for (int i = 0; i < 7; i++) {
        cr_assert_eq(clip_encode_texts(m, b + i * 77, 1, 77, NULL, alone, &e), CLIP_OK);
        double d = gd_max_abs_diff(alone, batch + (size_t)i * E, (size_t)E);
        cr_expect(d <= 1e-6, "text %d: alone vs in a batch of 7 differ by %.3g", pick[i], d);
    }
    /* Padding to 77 or not changes nothing: the pooled token only sees its prefix. */
    int len0 = clip_text_pool_index(m, ids, 77) + 1;
    cr_assert_eq(clip_encode_texts(m, ids, 1, len0, NULL, alone, &e), CLIP_OK);
    cr_expect(gd_max_abs_diff(alone, batch, (size_t)E) <= 1e-6);
    free(ids);
    clip_model_free(m);
}
