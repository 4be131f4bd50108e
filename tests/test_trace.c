/* test_trace.c — `clipeval trace` and `clipeval compare`: traces of the golden inputs against
 * golden/debug, a trace against itself, a perturbed layer found by name, layout conventions,
 * and every error path (malformed folders exit 2). */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>

#include "clip.h"
#include "json.h"
#include "npy.h"
#include "testutil.h"
#include "trace.h"
#include "trace_names.h"
#include "util.h"

/* ------------------------------------------------------------------ helpers */

static void expect_fail(const char *cmd, int code, const char *needle) {
    char *log;
    int rc = tu_run(cmd, &log);
    cr_expect_eq(rc, code, "`%s` exited %d (want %d): %s", cmd, rc, code, log);
    cr_expect(strstr(log, needle) != NULL, "`%s`: output lacks '%s': %s", cmd, needle, log);
    free(log);
}

/* Runs `cmd`, expects exit status `code`, returns the output (free it). */
static char *run_expect(const char *cmd, int code) {
    char *log;
    int rc = tu_run(cmd, &log);
    cr_assert_eq(rc, code, "`%s` exited %d (want %d): %s", cmd, rc, code, log);
    return log;
}

/* The JSON report of `clipeval compare --json A B`, which must exit with `code`. */
static json_doc *compare_json(const char *a, const char *b, const char *extra, int code) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s compare --json '%s' '%s' %s", tu_cli(), a, b, extra ? extra : "");
    char *out = run_expect(cmd, code);
    json_doc *doc;
    clip_error e = {0};
    cr_assert_eq(json_parse(out, strlen(out), "compare --json", 0, &doc, &e), CLIP_OK,
                 "%s\n%s", e.msg, out);
    free(out);
    return doc;
}

static const json_value *tensor_entry(const json_value *root, const char *name) {
    const json_value *ts = json_get(root, "tensors");
    cr_assert(ts && ts->type == JSON_ARRAY);
    for (size_t i = 0; i < ts->u.arr.n; i++) {
        const char *n;
        if (json_get_string(&ts->u.arr.items[i], "name", &n) == 1 && !strcmp(n, name))
            return &ts->u.arr.items[i];
    }
    return NULL;
}

static void save(const char *dir, const char *name, npy_dtype t, int ndim, const size_t *shape,
                 const void *data) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    clip_error e = {0};
    cr_assert_eq(npy_save(path, t, ndim, shape, data, &e), CLIP_OK, "%s", e.msg);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    tu_write_file(path, text, strlen(text));
}

static void sh(const char *fmt, ...) CLIP_PRINTF(1, 2);
static void sh(const char *fmt, ...) {
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void rm_file(const char *dir, const char *name) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cr_assert_eq(remove(p), 0, "cannot remove %s", p);
}

/* Traces the tiny model on the golden/debug/tiny-synth inputs into `out`. */
static void trace_tiny(const char *out, const char *extra) {
    char model[4096], pv[4096], ids[4096], cmd[16384];
    tu_shared_path(model, sizeof model, "golden/models/tiny-synth");
    tu_shared_path(pv, sizeof pv, "golden/embeddings/tiny-synth/pixel_values.npy");
    tu_shared_path(ids, sizeof ids, "golden/debug/tiny-synth/text.input_ids.npy");
    snprintf(cmd, sizeof cmd,
             "%s trace --model '%s' --pixel-values '%s' --image-index 0 --input-ids '%s' "
             "--out '%s' %s", tu_cli(), model, pv, ids, out, extra ? extra : "");
    free(run_expect(cmd, 0));
}

/* Every tensor of the golden folder must be in ours with the same shape and dtype, every
 * compared tensor within the default tolerance (max relative errors printed). */
static void check_against_golden(const char *ours, const char *golden) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s'", tu_cli(), ours, golden);
    char *text = run_expect(cmd, 0);
    fprintf(stderr, "%s\n", text);
    cr_expect(strstr(text, "result: all") != NULL);
    free(text);
    json_doc *doc = compare_json(ours, golden, NULL, 0);
    const json_value *root = json_doc_root(doc);
    const json_value *only_b = json_get(root, "only_in_b");
    cr_expect(only_b && only_b->type == JSON_ARRAY && only_b->u.arr.n == 0,
              "golden tensors missing from our trace");
    const json_value *ts = json_get(root, "tensors");
    double worst = 0;
    for (size_t i = 0; i < ts->u.arr.n; i++) {
        const json_value *t = &ts->u.arr.items[i];
        const char *name, *status;
        double rel;
        json_get_string(t, "name", &name);
        json_get_string(t, "status", &status);
        cr_expect_str_eq(status, "ok", "%s", name);
        cr_expect_eq(json_get_number(t, "max_rel", &rel), 1, "%s", name);
        if (rel > worst) worst = rel;
        /* the same shape as the golden file, before any convention */
        const json_value *sa = json_get(t, "shape_a"), *sb = json_get(t, "shape_b");
        cr_expect(sa && sb && sa->end - sa->start == sb->end - sb->start, "%s: shape differs",
                  name);
    }
    fprintf(stderr, "[trace] %s: %zu tensors vs golden, max relative error %.3g (tolerance 1e-5)\n",
            golden, ts->u.arr.n, worst);
    /* dtypes: float32 arrays, int64 ids/mask/pool index, as golden/debug */
    for (size_t i = 0; i < ts->u.arr.n; i++) {
        const char *name;
        json_get_string(&ts->u.arr.items[i], "name", &name);
        char p1[4400], p2[4400];
        snprintf(p1, sizeof p1, "%s/%s.npy", ours, name);
        snprintf(p2, sizeof p2, "%s/%s.npy", golden, name);
        npy_array a, b;
        tu_load_npy(p1, &a);
        tu_load_npy(p2, &b);
        cr_expect(a.dtype == b.dtype && a.ndim == b.ndim &&
                      !memcmp(a.shape, b.shape, sizeof(size_t) * (size_t)a.ndim),
                  "%s: dtype or shape differs from golden/debug", name);
        npy_free(&a);
        npy_free(&b);
    }
    json_doc_free(doc);
}

/* ------------------------------------------------------------------ against golden/debug */

Test(trace, tiny_matches_golden_debug) {
    char tmp[4096], out[4200], golden[4096];
    tu_shared_path(golden, sizeof golden, "golden/debug/tiny-synth");
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/t", tmp);
    trace_tiny(out, NULL);
    check_against_golden(out, golden);
    /* every layer is traced, not only layer 0 (tiny: 2 vision, 3 text layers) */
    static const char *parts[] = {"layer_norm1", "q_proj", "k_proj",   "v_proj", "attn_probs",
                                  "attn_context", "out_proj", "layer_norm2", "fc1", "fc2"};
    for (int tower = 0; tower < 2; tower++)
        for (int l = 0; l < (tower ? 3 : 2); l++)
            for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
                char p[4400];
                snprintf(p, sizeof p, "%s/%s.layer%d.%s.npy", out, tower ? "text" : "vision", l,
                         parts[k]);
                cr_expect(tu_exists(p), "%s missing", p);
            }
    /* the manifest records config, precision, device and version */
    char mp[4400];
    snprintf(mp, sizeof mp, "%s/manifest.json", out);
    json_doc *doc;
    clip_error e = {0};
    cr_assert_eq(json_parse_file(mp, 0, 0, &doc, &e), CLIP_OK, "%s", e.msg);
    const json_value *root = json_doc_root(doc);
    const char *s;
    long long v;
    cr_expect(json_get_string(root, "precision", &s) == 1 && !strcmp(s, "fp32"));
    cr_expect(json_get_string(root, "device", &s) == 1 && !strcmp(s, "cpu"));
    cr_expect(json_get_string(root, "clipeval_version", &s) == 1 && !strcmp(s, clip_version()));
    cr_expect(json_get_int(root, "pool_index", &v) == 1 && v == 6);
    cr_expect(json_get_int(root, "text_len", &v) == 1 && v == 7);
    const json_value *cfg = json_get(json_get(root, "config"), "vision");
    cr_expect(json_get_int(cfg, "num_hidden_layers", &v) == 1 && v == 2);
    json_doc_free(doc);
    tu_rmtree(tmp);
}

Test(trace, vitb32_matches_golden_debug, .timeout = 300) {
    char tmp[4096], out[4200], golden[4096], model[4096], pv[4096], cmd[16384];
    tu_synth_dir(model, sizeof model, "vitb32-synth");
    tu_shared_path(golden, sizeof golden, "golden/debug/vitb32-synth");
    tu_shared_path(pv, sizeof pv, "golden/images/0.pixel_values.npy");
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/v", tmp);
    /* the text through the model's tokenizer (golden text 0), the image as pixel values */
    snprintf(cmd, sizeof cmd,
             "%s trace --model '%s' --pixel-values '%s' --text 'a photo of a cat' --out '%s'",
             tu_cli(), model, pv, out);
    free(run_expect(cmd, 0));
    check_against_golden(out, golden);
    tu_rmtree(tmp);
}

Test(trace, image_file_matches_pixel_values) {
    /* --image decodes and preprocesses like HF: the tiny model with a 32-pixel preprocessor
     * gives golden's pixel values of 2.png bit for bit, hence the same trace */
    char tmp[4096], a[4200], b[4200], model[4200], tiny[4096], png[4096], pv[4096], cmd[16384];
    tu_shared_path(tiny, sizeof tiny, "golden/models/tiny-synth");
    tu_shared_path(png, sizeof png, "golden/images/2.png");
    tu_shared_path(pv, sizeof pv, "golden/embeddings/tiny-synth/pixel_values.npy");
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(model, sizeof model, "%s/model", tmp);
    sh("mkdir '%s' && ln -s '%s/config.json' '%s/model.safetensors' '%s/'", model, tiny, tiny,
       model);
    write_text(model, "preprocessor_config.json",
               "{\"crop_size\": 32, \"do_center_crop\": true, \"do_normalize\": true, "
               "\"do_resize\": true, \"image_mean\": [0.48145466, 0.4578275, 0.40821073], "
               "\"image_std\": [0.26862954, 0.26130258, 0.27577711], \"resample\": 3, "
               "\"size\": 32}");
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --image '%s' --out '%s'", tu_cli(), model,
             png, a);
    free(run_expect(cmd, 0));
    snprintf(cmd, sizeof cmd,
             "%s trace --model '%s' --pixel-values '%s' --image-index 0 --out '%s'", tu_cli(),
             model, pv, b);
    free(run_expect(cmd, 0));
    json_doc *doc = compare_json(a, b, "--rtol 0", 0);
    const json_value *ts = json_get(json_doc_root(doc), "tensors");
    cr_assert_eq(ts->u.arr.n, 29, "%zu tensors", ts->u.arr.n); /* the vision tower, 2 layers */
    for (size_t i = 0; i < ts->u.arr.n; i++) {
        double d = -1;
        const char *name;
        json_get_string(&ts->u.arr.items[i], "name", &name);
        cr_expect(json_get_number(&ts->u.arr.items[i], "max_abs", &d) == 1 && d == 0, "%s: %g",
                  name, d);
    }
    json_doc_free(doc);
    /* an image that cannot be decoded is named */
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --image '%s/config.json' --out '%s/c'",
             tu_cli(), model, model, tmp);
    expect_fail(cmd, 1, "config.json");
    tu_rmtree(tmp);
}

Test(trace, self_compare_is_exact) {
    char tmp[4096], out[4200];
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/t", tmp);
    trace_tiny(out, NULL);
    json_doc *doc = compare_json(out, out, "--rtol 0", 0);
    const json_value *ts = json_get(json_doc_root(doc), "tensors");
    cr_assert(ts->u.arr.n >= 60, "%zu tensors", ts->u.arr.n);
    for (size_t i = 0; i < ts->u.arr.n; i++) {
        double d = -1, c = 0;
        const char *name;
        json_get_string(&ts->u.arr.items[i], "name", &name);
        cr_expect(json_get_number(&ts->u.arr.items[i], "max_abs", &d) == 1 && d == 0, "%s: %g",
                  name, d);
        cr_expect(json_get_number(&ts->u.arr.items[i], "min_cos", &c) == 1 && c >= 1 - 1e-12,
                  "%s: cos %g", name, c);
    }
    json_doc_free(doc);
    /* --force replaces an earlier trace, and the same input gives the same bits */
    char again[4400];
    snprintf(again, sizeof again, "%s/again", tmp);
    trace_tiny(again, NULL);
    trace_tiny(again, "--force");
    sh("cmp -s '%s/vision.hidden_states.npy' '%s/vision.hidden_states.npy'", out, again);
    sh("cmp -s '%s/text.hidden_states.npy' '%s/text.hidden_states.npy'", out, again);
    tu_rmtree(tmp);
}

/* tools/hf_trace.py writes the same folder as `clipeval trace`: run it with the CLIP stand-in
 * (tools/hf_standin) where torch is installed; transformers itself cannot be installed here. */
Test(trace, hf_trace_script_writes_the_same_folder, .timeout = 120) {
    if (system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0)
        cr_skip_test("python3-torch not installed: tools/hf_trace.py not run");
    const char *src = getenv("CLIPEVAL_SRC");
    char tmp[4096], hf[4200], ours[4200], model[4096], pv[4096], ids[4096], golden[4096];
    char cmd[16384];
    tu_shared_path(model, sizeof model, "golden/models/tiny-synth");
    tu_shared_path(pv, sizeof pv, "golden/embeddings/tiny-synth/pixel_values.npy");
    tu_shared_path(ids, sizeof ids, "golden/debug/tiny-synth/text.input_ids.npy");
    tu_shared_path(golden, sizeof golden, "golden/debug/tiny-synth");
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(hf, sizeof hf, "%s/hf", tmp);
    snprintf(ours, sizeof ours, "%s/ours", tmp);
    snprintf(cmd, sizeof cmd,
             "PYTHONDONTWRITEBYTECODE=1 PYTHONPATH='%s/tools/hf_standin' /usr/bin/python3 "
             "'%s/tools/hf_trace.py' --model '%s' --pixel-values '%s' --image-index 0 "
             "--input-ids '%s' --out '%s' --threads 1",
             src && *src ? src : ".", src && *src ? src : ".", model, pv, ids, hf);
    free(run_expect(cmd, 0));
    trace_tiny(ours, NULL);
    json_doc *doc = compare_json(hf, golden, NULL, 0); /* HF's hooks, as golden/debug */
    const json_value *only = json_get(json_doc_root(doc), "only_in_b");
    cr_expect(only && only->u.arr.n == 0, "golden tensors the script does not write");
    json_doc_free(doc);
    doc = compare_json(hf, ours, NULL, 0); /* every layer, the same names on both sides */
    const json_value *root = json_doc_root(doc);
    cr_expect_eq(json_get(root, "only_in_a")->u.arr.n, 0);
    cr_expect_eq(json_get(root, "only_in_b")->u.arr.n, 0);
    cr_expect_eq(json_get(root, "tensors")->u.arr.n, 67);
    json_doc_free(doc);
    tu_rmtree(tmp);
}

/* ------------------------------------------------------------------ a perturbed layer */

/* A 6-layer vision tower small enough to build in milliseconds. */
static const char *six_layer_config =
    "{\"architectures\": [\"CLIPModel\"], \"model_type\": \"clip\", \"projection_dim\": 16,"
    " \"logit_scale_init_value\": 2.6592,"
    " \"text_config\": {\"vocab_size\": 64, \"hidden_size\": 16, \"intermediate_size\": 32,"
    "  \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"max_position_embeddings\": 8,"
    "  \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05, \"bos_token_id\": 0,"
    "  \"eos_token_id\": 2, \"pad_token_id\": 1},"
    " \"vision_config\": {\"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 6,"
    "  \"num_attention_heads\": 2, \"num_channels\": 3, \"image_size\": 32, \"patch_size\": 8,"
    "  \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05}}";

/* Adds `delta` to the first `n` floats of tensor `name` in a safetensors file. */
static void perturb(const char *path, const char *name, int n, float delta) {
    char *data;
    size_t len;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(path, 0, &data, &len, &e), CLIP_OK, "%s", e.msg);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)data[i];
    cr_assert(hlen + 8 <= len);
    json_doc *doc;
    cr_assert_eq(json_parse(data + 8, (size_t)hlen, "header", 0, &doc, &e), CLIP_OK, "%s", e.msg);
    const json_value *t = json_get(json_doc_root(doc), name);
    cr_assert(t, "%s not in %s", name, path);
    const json_value *off = json_get(t, "data_offsets");
    cr_assert(off && off->type == JSON_ARRAY && off->u.arr.n == 2);
    size_t begin = 8 + (size_t)hlen + (size_t)off->u.arr.items[0].u.num.d;
    for (int i = 0; i < n; i++) {
        float f;
        memcpy(&f, data + begin + 4 * (size_t)i, 4);
        f += delta;
        memcpy(data + begin + 4 * (size_t)i, &f, 4);
    }
    json_doc_free(doc);
    tu_write_file(path, data, len);
    free(data);
}

Test(compare, names_the_perturbed_layer) {
    char tmp[4096], cmd[16384], pv[4096], base[4200], pert[4200], tb[4200], tp[4200];
    tu_shared_path(pv, sizeof pv, "golden/embeddings/tiny-synth/pixel_values.npy");
    tu_tmpdir(tmp, sizeof tmp);
    write_text(tmp, "six.json", six_layer_config);
    snprintf(base, sizeof base, "%s/base", tmp);
    snprintf(pert, sizeof pert, "%s/pert", tmp);
    snprintf(tb, sizeof tb, "%s/tb", tmp);
    snprintf(tp, sizeof tp, "%s/tp", tmp);
    snprintf(cmd, sizeof cmd, "%s synth --config '%s/six.json' --out '%s/model.safetensors'",
             tu_cli(), tmp, base);
    free(run_expect(cmd, 0));
    sh("mkdir -p '%s' && cp '%s'/* '%s'", pert, base, pert);
    char st[4400];
    snprintf(st, sizeof st, "%s/model.safetensors", pert);
    perturb(st, "vision_model.encoder.layers.5.mlp.fc1.weight", 4, 0.25f);
    const char *models[2] = {base, pert}, *outs[2] = {tb, tp};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "%s trace --model '%s' --pixel-values '%s' --image-index 0 --out '%s'",
                 tu_cli(), models[i], pv, outs[i]);
        free(run_expect(cmd, 0));
    }
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s'", tu_cli(), tp, tb);
    char *text = run_expect(cmd, 1);
    fprintf(stderr, "%s\n", text);
    cr_expect(strstr(text, "vision: drift starts in vision.layer5.fc1 (max rel ") != NULL, "%s",
              text);
    cr_expect(strstr(text, "its input vision.layer5.layer_norm2 agrees exactly") != NULL);
    cr_expect(strstr(text, "OUT from [6], the output of layer 5") != NULL);
    json_doc *doc = compare_json(tp, tb, NULL, 1);
    const json_value *d = json_get(json_get(json_doc_root(doc), "drift"), "vision");
    const char *s;
    cr_expect(json_get_string(d, "tensor", &s) == 1 && !strcmp(s, "vision.layer5.fc1"));
    long long idx;
    cr_expect(json_get_int(tensor_entry(json_doc_root(doc), "vision.hidden_states"),
                           "first_divergent_index", &idx) == 1 && idx == 6);
    json_doc_free(doc);
    /* Without the per-layer tensors of layer 5 (as in golden/debug, which stores layer 0 only)
     * the stacked hidden states locate it. */
    sh("rm '%s'/vision.layer5.* '%s/manifest.json'", tp, tp);
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s'", tu_cli(), tp, tb);
    text = run_expect(cmd, 1);
    cr_expect(strstr(text, "drift starts in vision.hidden_states[6], the output of layer 5") !=
                  NULL,
              "%s", text);
    cr_expect(strstr(text, "vision.hidden_states[5] agrees exactly") != NULL, "%s", text);
    cr_expect(strstr(text, "only in B (10):\n    vision.layer5.{layer_norm1,q_proj,k_proj,v_proj,"
                           "attn_probs,attn_context,out_proj,layer_norm2,fc1,fc2}") != NULL,
              "%s", text);
    free(text);
    /* a looser tolerance accepts it (and says so) */
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --rtol 0.5", tu_cli(), tp, tb);
    text = run_expect(cmd, 0);
    cr_expect(strstr(text, "0.5 x max|B|") != NULL, "%s", text);
    free(text);
    tu_rmtree(tmp);
}

/* ------------------------------------------------------------------ conventions */

/* B holds A's tensors in other documented layouts: the comparison is exact and each
 * conversion is named. */
Test(compare, layout_conventions) {
    char tmp[4096], a[4200], b[4200], cmd[16384];
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    trace_tiny(a, NULL);
    sh("mkdir '%s' && cp '%s'/*.npy '%s'", b, a, b);
    npy_array x;
    char p[4400];
#define LOAD(name)                                                                                 \
    do {                                                                                           \
        snprintf(p, sizeof p, "%s/%s.npy", a, name);                                               \
        tu_load_npy(p, &x);                                                                        \
        snprintf(p, sizeof p, "%s/%s.npy", b, name);                                               \
        remove(p);                                                                                 \
    } while (0)
    /* batch dimension of 1 */
    LOAD("vision.layer0.q_proj");
    save(b, "vision.layer0.q_proj", NPY_F32, 3, (size_t[]){1, 17, 64}, x.data);
    npy_free(&x);
    /* heads split [N, heads, head_dim] (a reshape) */
    LOAD("vision.layer0.k_proj");
    save(b, "vision.layer0.k_proj", NPY_F32, 3, (size_t[]){17, 4, 16}, x.data);
    npy_free(&x);
    /* heads first [heads, N, head_dim] (a transpose) */
    LOAD("vision.layer0.v_proj");
    {
        float *t = malloc(sizeof(float) * 17 * 64);
        for (int n = 0; n < 17; n++)
            for (int h = 0; h < 4; h++)
                for (int d = 0; d < 16; d++)
                    t[(h * 17 + n) * 16 + d] = ((float *)x.data)[n * 64 + h * 16 + d];
        save(b, "vision.layer0.v_proj", NPY_F32, 3, (size_t[]){4, 17, 16}, t);
        free(t);
    }
    npy_free(&x);
    /* attention probabilities with heads merged */
    LOAD("vision.layer0.attn_probs");
    save(b, "vision.layer0.attn_probs", NPY_F32, 2, (size_t[]){4 * 17, 17}, x.data);
    npy_free(&x);
    /* patch_conv as one row per patch [g*g, D] (the im2col GEMM's output) */
    LOAD("vision.patch_conv");
    {
        float *t = malloc(sizeof(float) * 64 * 16);
        for (int d = 0; d < 64; d++)
            for (int q = 0; q < 16; q++) t[q * 64 + d] = ((float *)x.data)[d * 16 + q];
        save(b, "vision.patch_conv", NPY_F32, 2, (size_t[]){16, 64}, t);
        free(t);
    }
    npy_free(&x);
    /* unpadded text rows: only the 7 real tokens */
    LOAD("text.layer0.fc1");
    save(b, "text.layer0.fc1", NPY_F32, 2, (size_t[]){7, 80}, x.data);
    npy_free(&x);
    LOAD("text.layer0.attn_probs");
    {
        float *t = malloc(sizeof(float) * 4 * 7 * 7);
        for (int h = 0; h < 4; h++)
            for (int i = 0; i < 7; i++)
                for (int j = 0; j < 7; j++)
                    t[(h * 7 + i) * 7 + j] = ((float *)x.data)[(h * 77 + i) * 77 + j];
        save(b, "text.layer0.attn_probs", NPY_F32, 3, (size_t[]){4, 7, 7}, t);
        free(t);
    }
    npy_free(&x);
    /* hidden states as one file per index, each with a batch dimension */
    LOAD("text.hidden_states");
    for (int k = 0; k < 4; k++) {
        char name[64];
        snprintf(name, sizeof name, "text.hidden_states.%d", k);
        save(b, name, NPY_F32, 3, (size_t[]){1, 77, 48}, (float *)x.data + (size_t)k * 77 * 48);
    }
    npy_free(&x);
    /* pooled vector with a batch dimension */
    LOAD("image_embeds");
    save(b, "image_embeds", NPY_F32, 2, (size_t[]){1, 40}, x.data);
    npy_free(&x);
#undef LOAD
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --rtol 0", tu_cli(), a, b);
    char *text = run_expect(cmd, 0);
    static const char *named[] = {
        "vision.patch_conv: B: one row per patch [16,64] [g*g, D]",
        "vision.layer0.q_proj: B: batch dimension of 1 dropped ([1,17,64])",
        "vision.layer0.k_proj: B: heads split [17,4,16] [N, heads, head_dim]",
        "vision.layer0.v_proj: B: heads split, heads first [4,17,16] [heads, N, head_dim]",
        "vision.layer0.attn_probs: B: heads merged [68,17] [heads*N, N]",
        "image_embeds: B: batch dimension of 1 dropped ([1,40])",
        "B: stacked from 4 files text.hidden_states.K.npy",
        "padded vs unpadded text rows: A has 77, B 7",
        "text rows 0..6 compared",
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        cr_expect(strstr(text, named[i]) != NULL, "report lacks '%s':\n%s", named[i], text);
    free(text);
    json_doc *doc = compare_json(a, b, "--rtol 0", 0);
    const json_value *ts = json_get(json_doc_root(doc), "tensors");
    for (size_t i = 0; i < ts->u.arr.n; i++) {
        double d = -1;
        cr_expect(json_get_number(&ts->u.arr.items[i], "max_abs", &d) == 1 && d == 0);
    }
    json_doc_free(doc);
    tu_rmtree(tmp);
}

/* Hand-made folders: the tolerance rules, presets, shapes, NaN, inputs that differ. */
Test(compare, tolerances_and_verdicts) {
    char tmp[4096], a[4200], b[4200], cmd[16384];
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    sh("mkdir '%s' '%s'", a, b);
    float ref[4] = {1, 2, 3, 4}, got[4] = {1, 2, 3, 4.001f};
    save(b, "vision.pooled", NPY_F32, 1, (size_t[]){4}, ref);
    save(a, "vision.pooled", NPY_F32, 1, (size_t[]){4}, got);
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s'", tu_cli(), a, b);
    char *text = run_expect(cmd, 1);
    cr_expect(strstr(text, "vision: drift starts in vision.pooled (max rel 0.00025 > 1e-05); its "
                           "input vision.pooled_cls_pre_ln is not in both folders; it is the first "
                           "vision tensor the folders have in common") != NULL, "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --rtol 1e-3", tu_cli(), a, b);
    free(run_expect(cmd, 0));
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --atol 0.002", tu_cli(), a, b);
    free(run_expect(cmd, 0));
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --rtol 1 --cos 1", tu_cli(), a, b);
    text = run_expect(cmd, 1);
    cr_expect(strstr(text, "drift starts in vision.pooled (min row cosine 0.99999") != NULL &&
                  strstr(text, " < 1)") != NULL, "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --atol 0.0005", tu_cli(), a, b);
    text = run_expect(cmd, 1);
    cr_expect(strstr(text, "(max abs 0.001 > 0.0005 + 1e-05 x max|B| 4)") != NULL, "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --precision fp16", tu_cli(), a, b);
    text = run_expect(cmd, 0);
    cr_expect(strstr(text, "fp16 preset (--precision)") != NULL, "%s", text);
    free(text);
    /* the preset follows a manifest that says bf16 */
    write_text(a, "manifest.json", "{\"generator\": \"my backend\", \"precision\": \"bf16\"}");
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s'", tu_cli(), a, b);
    text = run_expect(cmd, 0);
    cr_expect(strstr(text, "bf16 preset (from A's manifest)") != NULL, "%s", text);
    cr_expect(strstr(text, "A  ") && strstr(text, "(my backend, bf16)"), "%s", text);
    free(text);
    /* NaN is out of tolerance at any tolerance */
    got[3] = NAN;
    save(a, "vision.pooled", NPY_F32, 1, (size_t[]){4}, got);
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --rtol 100", tu_cli(), a, b);
    text = run_expect(cmd, 1);
    cr_expect(strstr(text, "inf") != NULL, "%s", text);
    free(text);
    /* a shape no convention explains: exit 1, both shapes named */
    save(a, "vision.pooled", NPY_F32, 1, (size_t[]){3}, got);
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s'", tu_cli(), a, b);
    text = run_expect(cmd, 1);
    cr_expect(strstr(text, "SHAPE") && strstr(text, "shapes [3] (A) and [4] (B) do not match"),
              "%s", text);
    free(text);
    /* different token ids: exact check, the inputs are named as the cause */
    rm_file(a, "vision.pooled.npy");
    rm_file(b, "vision.pooled.npy");
    int64_t ids_a[3] = {49406, 320, 49407}, ids_b[3] = {49406, 321, 49407};
    save(a, "text.input_ids", NPY_I64, 1, (size_t[]){3}, ids_a);
    save(b, "text.input_ids", NPY_I64, 1, (size_t[]){3}, ids_b);
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --rtol 1", tu_cli(), a, b);
    text = run_expect(cmd, 1);
    cr_expect(strstr(text, "DIFFERS") && strstr(text, "the inputs differ"), "%s", text);
    free(text);
    tu_rmtree(tmp);
}

/* ------------------------------------------------------------------ errors */

Test(compare, malformed_folders_exit_2) {
    char tmp[4096], good[4200], bad[4200], cmd[16384];
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(good, sizeof good, "%s/good", tmp);
    snprintf(bad, sizeof bad, "%s/bad", tmp);
    sh("mkdir '%s' '%s'", good, bad);
    float v[4] = {1, 2, 3, 4};
    save(good, "vision.pooled", NPY_F32, 1, (size_t[]){4}, v);
    save(good, "image_embeds", NPY_F32, 1, (size_t[]){4}, v);
    const char *cli = tu_cli();
#define CASE(needle)                                                                               \
    do {                                                                                           \
        snprintf(cmd, sizeof cmd, "%s compare '%s' '%s'", cli, bad, good);                         \
        expect_fail(cmd, 2, needle);                                                               \
    } while (0)
    /* no such folder; a file; an empty folder */
    snprintf(cmd, sizeof cmd, "%s compare '%s/nowhere' '%s'", cli, tmp, good);
    expect_fail(cmd, 2, "nowhere: No such file or directory");
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s/vision.pooled.npy'", cli, good, good);
    expect_fail(cmd, 2, "B: ");
    expect_fail(cmd, 2, "is not a folder");
    CASE("holds no tensors (no .npy files)");
    /* an unreadable .npy file */
    write_text(bad, "vision.pooled.npy", "\x93NUMPY\x01\x00garbage");
    CASE("A: ");
    CASE("vision.pooled.npy");
    write_text(bad, "vision.pooled.npy", "not numpy at all");
    CASE("bad magic");
    save(bad, "vision.pooled", NPY_F32, 1, (size_t[]){4}, v);
    /* nothing in common */
    save(bad, "something_else", NPY_F32, 1, (size_t[]){4}, v);
    rm_file(bad, "vision.pooled.npy");
    CASE("no tensor name in common");
    save(bad, "vision.pooled", NPY_F32, 1, (size_t[]){4}, v);
    /* a name too long for a tensor */
    {
        char longname[200];
        memset(longname, 'x', 150);
        longname[150] = '\0';
        save(bad, longname, NPY_F32, 1, (size_t[]){4}, v);
        CASE("file name too long");
        char p[4400];
        snprintf(p, sizeof p, "%s/%s.npy", bad, longname);
        remove(p);
    }
    /* malformed manifests */
    write_text(bad, "manifest.json", "{\"files\": ");
    CASE("malformed manifest");
    write_text(bad, "manifest.json", "[1, 2]");
    CASE("the top level is array, not an object");
    write_text(bad, "manifest.json", "{\"files\": [\"vision.pooled.npy\"]}");
    CASE("\"files\" is array, not an object");
    write_text(bad, "manifest.json", "{\"files\": {\"vision.pooled\": {}}}");
    CASE("is not a .npy name");
    write_text(bad, "manifest.json", "{\"files\": {\"vision.missing.npy\": {}}}");
    CASE("lists vision.missing.npy, but the folder has no such file");
    write_text(bad, "manifest.json", "{\"files\": {\"vision.pooled.npy\": {\"shape\": [\"4\"]}}}");
    CASE("is not a list of sizes");
    write_text(bad, "manifest.json", "{\"files\": {\"vision.pooled.npy\": {\"shape\": [5]}}}");
    CASE("says vision.pooled.npy has shape [5], the file holds [4]");
    /* [] vs [1] is the same (golden/debug's pool_index) */
    write_text(bad, "manifest.json", "{\"files\": {\"vision.pooled.npy\": {\"shape\": [1, 4]}}}");
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s'", cli, bad, good);
    free(run_expect(cmd, 0));
    rm_file(bad, "manifest.json");
    /* split hidden states with a gap, or of different shapes */
    float h[2 * 4] = {0};
    save(bad, "vision.hidden_states.0", NPY_F32, 2, (size_t[]){2, 4}, h);
    save(bad, "vision.hidden_states.2", NPY_F32, 2, (size_t[]){2, 4}, h);
    CASE("the split hidden states must be vision.hidden_states.0 .. vision.hidden_states.1");
    sh("mv '%s/vision.hidden_states.2.npy' '%s/vision.hidden_states.1.npy'", bad, bad);
    save(bad, "vision.hidden_states.1", NPY_F32, 1, (size_t[]){8}, h);
    CASE("every split hidden state must be a float [N, H] array of the same shape");
#undef CASE
    /* usage errors */
    snprintf(cmd, sizeof cmd, "%s compare '%s'", cli, good);
    expect_fail(cmd, 2, "give two trace folders");
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' '%s'", cli, good, good, good);
    expect_fail(cmd, 2, "more than two folders");
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --rtol -1", cli, good, good);
    expect_fail(cmd, 2, "bad --rtol");
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --atol x", cli, good, good);
    expect_fail(cmd, 2, "bad --atol");
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --cos 2", cli, good, good);
    expect_fail(cmd, 2, "bad --cos");
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --precision fp8", cli, good, good);
    expect_fail(cmd, 2, "bad --precision 'fp8'");
    snprintf(cmd, sizeof cmd, "%s compare '%s' '%s' --bogus", cli, good, good);
    expect_fail(cmd, 2, "unknown or incomplete option '--bogus'");
    snprintf(cmd, sizeof cmd, "%s compare --help", cli);
    expect_fail(cmd, 0, "Exit status: 0 all within tolerance, 1 out of tolerance, 2 unusable");
    tu_rmtree(tmp);
}

Test(trace, errors) {
    char tmp[4096], model[4096], pv[4096], ids[4096], cmd[16384], bad[4400];
    tu_shared_path(model, sizeof model, "golden/models/tiny-synth");
    tu_shared_path(pv, sizeof pv, "golden/embeddings/tiny-synth/pixel_values.npy");
    tu_shared_path(ids, sizeof ids, "golden/debug/tiny-synth/text.input_ids.npy");
    tu_tmpdir(tmp, sizeof tmp);
    const char *cli = tu_cli();
    /* usage (exit 2) */
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --input-ids '%s'", cli, model, ids);
    expect_fail(cmd, 2, "--out DIR is required");
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --out %s/o", cli, model, tmp);
    expect_fail(cmd, 2, "give an input");
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --image x.png --pixel-values '%s' --out %s/o",
             cli, model, pv, tmp);
    expect_fail(cmd, 2, "give one image input");
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --text hi --input-ids '%s' --out %s/o", cli,
             model, ids, tmp);
    expect_fail(cmd, 2, "give one text input");
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --input-ids '%s' --image-index 0 --out %s/o",
             cli, model, ids, tmp);
    expect_fail(cmd, 2, "--image-index needs --pixel-values");
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --pixel-values '%s' --text-index 0 --out %s/o",
             cli, model, pv, tmp);
    expect_fail(cmd, 2, "--text-index needs --input-ids");
    snprintf(cmd, sizeof cmd,
             "%s trace --model '%s' --pixel-values '%s' --image-index x --out %s/o", cli, model, pv,
             tmp);
    expect_fail(cmd, 2, "bad --image-index 'x'");
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --input-ids '%s' --text-index -1 --out %s/o",
             cli, model, ids, tmp);
    expect_fail(cmd, 2, "bad --text-index '-1'");
    snprintf(cmd, sizeof cmd, "%s trace --input-ids '%s' --threads 0 --out %s/o", cli, ids, tmp);
    expect_fail(cmd, 2, "bad --threads '0'");
    snprintf(cmd, sizeof cmd, "%s trace --input-ids '%s' --device tpu --out %s/o", cli, ids, tmp);
    expect_fail(cmd, 2, "bad --device 'tpu'");
    snprintf(cmd, sizeof cmd, "%s trace --input-ids '%s' --precision fp8 --out %s/o", cli, ids,
             tmp);
    expect_fail(cmd, 2, "unknown precision 'fp8'");
    snprintf(cmd, sizeof cmd, "%s trace --input-ids '%s' --bogus --out %s/o", cli, ids, tmp);
    expect_fail(cmd, 2, "unknown or incomplete option '--bogus'");
    snprintf(cmd, sizeof cmd, "%s trace --help", cli);
    expect_fail(cmd, 0, "golden/debug");
    /* inputs (exit 1) */
#define RUN1(needle, ...)                                                                          \
    do {                                                                                           \
        snprintf(cmd, sizeof cmd, __VA_ARGS__);                                                    \
        expect_fail(cmd, 1, needle);                                                               \
    } while (0)
    RUN1("holds 7 images: choose one with --image-index K",
         "%s trace --model '%s' --pixel-values '%s' --out %s/o1", cli, model, pv, tmp);
    RUN1("--image-index 7: ",
         "%s trace --model '%s' --pixel-values '%s' --image-index 7 --out %s/o2", cli, model, pv,
         tmp);
    snprintf(bad, sizeof bad, "%s/px.npy", tmp);
    {
        float z[3 * 16 * 16] = {0};
        clip_error e = {0};
        cr_assert_eq(npy_save(bad, NPY_F32, 3, (size_t[]){3, 16, 16}, z, &e), CLIP_OK);
    }
    RUN1("expected float32 pixel values [3,32,32]",
         "%s trace --model '%s' --pixel-values '%s' --out %s/o3", cli, model, bad, tmp);
    RUN1("missing.npy", "%s trace --model '%s' --pixel-values %s/missing.npy --out %s/o4", cli,
         model, tmp, tmp);
    {
        int64_t two[2][3] = {{49406, 320, 49407}, {49406, 321, 49407}};
        clip_error e = {0};
        snprintf(bad, sizeof bad, "%s/ids2.npy", tmp);
        cr_assert_eq(npy_save(bad, NPY_I64, 2, (size_t[]){2, 3}, two, &e), CLIP_OK);
        RUN1("holds 2 texts: choose one with --text-index K",
             "%s trace --model '%s' --input-ids '%s' --out %s/o5", cli, model, bad, tmp);
        RUN1(
            "--text-index 2: ", "%s trace --model '%s' --input-ids '%s' --text-index 2 --out %s/o6",
            cli, model, bad, tmp);
        int64_t oov[3] = {49406, 99999, 49407};
        cr_assert_eq(npy_save(bad, NPY_I64, 1, (size_t[]){3}, oov, &e), CLIP_OK);
        RUN1("token id 99999 at position 1 is outside the vocabulary",
             "%s trace --model '%s' --input-ids '%s' --out %s/o7", cli, model, bad, tmp);
        int64_t *longer = calloc(78, sizeof(int64_t));
        cr_assert_eq(npy_save(bad, NPY_I64, 1, (size_t[]){78}, longer, &e), CLIP_OK);
        free(longer);
        RUN1("78 positions, the model has 77", "%s trace --model '%s' --input-ids '%s' --out %s/o8",
             cli, model, bad, tmp);
        float f[3] = {1, 2, 3};
        cr_assert_eq(npy_save(bad, NPY_F32, 1, (size_t[]){3}, f, &e), CLIP_OK);
        RUN1("expected int64 or int32 token ids",
             "%s trace --model '%s' --input-ids '%s' --out %s/o9", cli, model, bad, tmp);
    }
    /* tiny-synth has no tokenizer files: --text names what is missing */
    RUN1("vocab.json", "%s trace --model '%s' --text 'a cat' --out %s/o10", cli, model, tmp);
    /* tiny-synth has no preprocessor_config.json either */
    RUN1("preprocessor_config.json", "%s trace --model '%s' --image x.png --out %s/o11", cli, model,
         tmp);
    RUN1("not found", "%s trace --model %s/nowhere --input-ids '%s' --out %s/o12", cli, tmp, ids,
         tmp);
    RUN1("precision fp16 is not available on the CPU",
         "%s trace --model '%s' --input-ids '%s' --precision fp16 --device cpu --out %s/o13", cli,
         model, ids, tmp);
#ifndef CLIP_WITH_CUDA
    RUN1("without CUDA", "%s trace --model '%s' --input-ids '%s' --device cuda --out %s/o14", cli,
         model, ids, tmp);
#endif
    /* the output folder: a file, a non-empty folder, a --force that cannot remove */
    snprintf(bad, sizeof bad, "%s/file", tmp);
    tu_write_file(bad, "x", 1);
    RUN1("exists and is not a folder", "%s trace --model '%s' --input-ids '%s' --out '%s'", cli,
         model, ids, bad);
    snprintf(bad, sizeof bad, "%s/full", tmp);
    sh("mkdir -p '%s' && touch '%s/notes.txt'", bad, bad);
    RUN1("is not empty (--force replaces", "%s trace --model '%s' --input-ids '%s' --out '%s'", cli,
         model, ids, bad);
    sh("mkdir -p '%s/text.pooled.npy/x'", bad);
    RUN1("cannot remove", "%s trace --model '%s' --input-ids '%s' --out '%s' --force", cli, model,
         ids, bad);
    /* --force keeps files that are not a trace's */
    sh("rm -r '%s/text.pooled.npy'", bad);
    snprintf(cmd, sizeof cmd, "%s trace --model '%s' --input-ids '%s' --out '%s' --force", cli,
             model, ids, bad);
    free(run_expect(cmd, 0));
    sh("test -f '%s/notes.txt' && test -f '%s/text.pooled.npy'", bad, bad);
#undef RUN1
    tu_rmtree(tmp);
}

/* ------------------------------------------------------------------ the writer, directly */

static clip_model_info fake_info(void) {
    clip_model_info i;
    memset(&i, 0, sizeof i);
    i.image_size = 4, i.patch_size = 2, i.num_channels = 1;
    i.vision_width = 3, i.vision_layers = 1, i.vision_heads = 1;
    i.embed_dim = 2, i.context_length = 77;
    i.dir = "fake", i.device = "cpu";
    return i;
}

Test(trace_writer, layouts) {
    char tmp[4096];
    tu_tmpdir(tmp, sizeof tmp);
    clip_model_info info = fake_info();
    trace_recorder *r = trace_recorder_new();
    float patch[4 * 3], h0[5 * 3], h1[5 * 3], probs[2 * 5 * 5], vec[3];
    for (int i = 0; i < 12; i++) patch[i] = (float)i;
    for (int i = 0; i < 15; i++) h0[i] = (float)i, h1[i] = (float)-i;
    for (int i = 0; i < 50; i++) probs[i] = (float)i / 50;
    for (int i = 0; i < 3; i++) vec[i] = (float)i;
    trace_record(r, "vision.patch_conv", 0, patch, 4, 3);
    trace_record(r, "vision.hidden_states.1", 0, h1, 5, 3);
    trace_record(r, "vision.hidden_states.0", 0, h0, 5, 3);
    trace_record(r, "vision.layer0.attn_probs", 0, probs, 10, 5);
    trace_record(r, "vision.pooled", 0, vec, 1, 3);
    trace_record(r, "vision.pooled", 1, h0, 1, 3); /* item 1: ignored */
    trace_inputs in = {0};
    size_t n = 0, bytes = 0;
    clip_error e = {0};
    cr_assert_eq(trace_write_folder(r, &in, &info, tmp, &n, &bytes, &e), CLIP_OK, "%s", e.msg);
    cr_expect_eq(n, 4);
    npy_array a;
    char p[4400];
    snprintf(p, sizeof p, "%s/vision.patch_conv.npy", tmp);
    tu_load_npy(p, &a); /* [g*g, D] rows -> the Conv2d layout [D, g, g] */
    cr_expect(a.ndim == 3 && a.shape[0] == 3 && a.shape[1] == 2 && a.shape[2] == 2);
    cr_expect_eq(((float *)a.data)[1 * 4 + 2], patch[2 * 3 + 1]);
    npy_free(&a);
    snprintf(p, sizeof p, "%s/vision.hidden_states.npy", tmp);
    tu_load_npy(p, &a);
    cr_expect(a.ndim == 3 && a.shape[0] == 2 && a.shape[1] == 5 && a.shape[2] == 3);
    cr_expect_eq(((float *)a.data)[15 + 4], -4.0f);
    npy_free(&a);
    snprintf(p, sizeof p, "%s/vision.layer0.attn_probs.npy", tmp);
    tu_load_npy(p, &a);
    cr_expect(a.ndim == 3 && a.shape[0] == 2 && a.shape[1] == 5 && a.shape[2] == 5);
    npy_free(&a);
    snprintf(p, sizeof p, "%s/vision.pooled.npy", tmp);
    tu_load_npy(p, &a);
    cr_expect(a.ndim == 1 && a.shape[0] == 3 && ((float *)a.data)[2] == 2.0f);
    npy_free(&a);
    /* the folder can't be written: a folder stands where a file goes */
    snprintf(p, sizeof p, "%s/vision.pooled.npy", tmp);
    remove(p);
    sh("mkdir '%s'", p);
    cr_expect_eq(trace_write_folder(r, &in, &info, tmp, &n, &bytes, &e), CLIP_ERR_IO);
    cr_expect(strstr(e.msg, "vision.pooled.npy") != NULL, "%s", e.msg);
    sh("rmdir '%s' && rm '%s/manifest.json' && mkdir '%s/manifest.json'", p, tmp, tmp);
    cr_expect_eq(trace_write_folder(r, &in, &info, tmp, &n, &bytes, &e), CLIP_ERR_IO);
    cr_expect(strstr(e.msg, "manifest.json: write failed") != NULL, "%s", e.msg);
    trace_recorder_free(r);
    tu_rmtree(tmp);
}

Test(trace_writer, engine_contract_violations) {
    char tmp[4096];
    tu_tmpdir(tmp, sizeof tmp);
    clip_model_info info = fake_info();
    trace_inputs in = {0};
    clip_error e = {0};
    float h[6] = {0};
    /* a block the engine should never send */
    trace_recorder *r = trace_recorder_new();
    trace_record(r, "vision.pooled", 0, h, 0, 3);
    cr_expect_eq(trace_write_folder(r, &in, &info, tmp, NULL, NULL, &e), CLIP_ERR_FORMAT);
    cr_expect(strstr(e.msg, "the engine traced 'vision.pooled' as 0 x 3 values"), "%s", e.msg);
    trace_recorder_free(r);
    char longname[200];
    memset(longname, 'n', 150);
    longname[150] = '\0';
    r = trace_recorder_new();
    trace_record(r, longname, 0, h, 1, 3);
    cr_expect_eq(trace_write_folder(r, &in, &info, tmp, NULL, NULL, &e), CLIP_ERR_FORMAT);
    trace_recorder_free(r);
    /* incomplete or inconsistent hidden states */
    r = trace_recorder_new();
    trace_record(r, "text.hidden_states.0", 0, h, 2, 3);
    trace_record(r, "text.hidden_states.2", 0, h, 2, 3);
    cr_expect_eq(trace_write_folder(r, &in, &info, tmp, NULL, NULL, &e), CLIP_ERR_FORMAT);
    cr_expect(strstr(e.msg, "text.hidden_states.1 is missing"), "%s", e.msg);
    trace_recorder_free(r);
    r = trace_recorder_new();
    trace_record(r, "vision.hidden_states.0", 0, h, 2, 3);
    trace_record(r, "vision.hidden_states.1", 0, h, 3, 2);
    cr_expect_eq(trace_write_folder(r, &in, &info, tmp, NULL, NULL, &e), CLIP_ERR_FORMAT);
    cr_expect(strstr(e.msg, "vision.hidden_states.1 is of another shape"), "%s", e.msg);
    trace_recorder_free(r);
    tu_rmtree(tmp);
}

/* ------------------------------------------------------------------ names */

Test(trace_names, order_and_inputs) {
    trace_name a, b;
    trace_name_parse("vision.layer5.fc1", &a);
    cr_expect(a.tower == TRACE_VISION && a.layer == 5 && a.kind == TK_ROWS);
    trace_name_parse("vision.layer5.layer_norm2", &b);
    cr_expect(b.layer == 5 && b.step < a.step);
    trace_name_stack_point(TRACE_VISION, 6, &b); /* hidden_states[6] follows layer 5's fc2 */
    cr_expect(b.layer == 5 && b.step > a.step);
    trace_name_parse("text_embeds", &a);
    cr_expect(a.tower == TRACE_TEXT && a.layer == TRACE_LAYER_POST && a.kind == TK_VEC);
    trace_name_parse("text.pool_index", &a);
    cr_expect(a.exact && a.kind == TK_POOL_INDEX);
    trace_name_parse("vision.layer05.fc1", &a);
    cr_expect(a.kind == TK_OTHER && a.layer == TRACE_LAYER_UNKNOWN);
    trace_name_parse("vision.layer3.mystery", &a);
    cr_expect(a.kind == TK_OTHER && a.layer == 3);
    trace_name_parse("logits_per_image", &a);
    cr_expect(a.tower == TRACE_OTHER);
    char in[2][128];
    cr_expect_eq(trace_point_inputs("vision.layer5.fc1", -1, 13, in), 1);
    cr_expect_str_eq(in[0], "vision.layer5.layer_norm2");
    cr_expect_eq(trace_point_inputs("text.layer2.attn_context", -1, 13, in), 2);
    cr_expect_str_eq(in[0], "text.layer2.attn_probs");
    cr_expect_str_eq(in[1], "text.layer2.v_proj");
    cr_expect_eq(trace_point_inputs("vision.hidden_states", 6, 13, in), 2);
    cr_expect_str_eq(in[0], "vision.layer5.fc2");
    cr_expect_str_eq(in[1], "vision.hidden_states[5]");
    cr_expect_eq(trace_point_inputs("vision.pooled_cls_pre_ln", -1, 13, in), 1);
    cr_expect_str_eq(in[0], "vision.hidden_states[12]");
    cr_expect_eq(trace_point_inputs("text.final_layer_norm", -1, 0, in), 1);
    cr_expect_str_eq(in[0], "text.hidden_states[last]");
    cr_expect_eq(trace_point_inputs("text.pooled", -1, 13, in), 2);
    cr_expect_eq(trace_point_inputs("vision.pixel_values", -1, 13, in), 0);
    cr_expect(strstr(trace_name_description("vision.layer7.q_proj"), "BEFORE the 1/sqrt"));
    cr_expect(strstr(trace_name_description("zzz"), "outside"));
}
