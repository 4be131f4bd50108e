/* test_cli_engine.c — the CLI contract of `synth`, `embed` and `info`, and the .npy reader. */
#include <math.h>
#include <stdint.h>

#include "clip.h"
#include "npy.h"
#include "testutil.h"

/* Batch composition changes OpenBLAS's blocking, so equal inputs in different batches agree to
 * rounding (the batch-invariance bound of test_model.c), not bit for bit. */
static void expect_close(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        cr_expect(fabs((double)a[i] - b[i]) <= 1e-6, "element %zu: %.9g vs %.9g", i, a[i], b[i]);
}

static void save(const char *path, npy_dtype t, int ndim, const size_t *shape, const void *data) {
    clip_error e = {0};
    cr_assert_eq(npy_save(path, t, ndim, shape, data, &e), CLIP_OK, "%s", e.msg);
}

Test(cli_embed, pixel_values_and_ids_match_the_api) {
    char model[4096], pv[4096], tmp[4096], out[4200], ids_path[4200], cmd[32768];
    tu_shared_path(model, sizeof model, "golden/models/tiny-synth");
    tu_shared_path(pv, sizeof pv, "golden/embeddings/tiny-synth/pixel_values.npy");
    tu_tmpdir(tmp, sizeof tmp);
    /* [N,3,S,S] input, and the same first image again as a [3,S,S] file */
    npy_array px;
    tu_load_npy(pv, &px);
    char one[4200];
    snprintf(one, sizeof one, "%s/one.npy", tmp);
    size_t s3[3] = {3, 32, 32};
    save(one, NPY_F32, 3, s3, px.data);
    snprintf(out, sizeof out, "%s/img.npy", tmp);
    char *log;
    snprintf(cmd, sizeof cmd, "%s embed --model '%s' --pixel-values '%s' '%s' --out '%s'", tu_cli(),
             model, pv, one, out);
    cr_assert_eq(tu_run(cmd, &log), 0, "%s", log);
    free(log);
    npy_array got;
    tu_load_npy(out, &got);
    cr_assert_eq(got.ndim, 2);
    cr_assert_eq(got.shape[0], px.shape[0] + 1);
    cr_assert_eq(got.shape[1], 40);
    clip_model *m;
    clip_error e = {0};
    cr_assert_eq(clip_model_load(model, NULL, &m, &e), CLIP_OK, "%s", e.msg);
    float *ref = malloc(sizeof(float) * 40 * px.shape[0]);
    cr_assert_eq(clip_encode_images(m, px.data, (int)px.shape[0], NULL, ref, &e), CLIP_OK);
    expect_close(got.data, ref, 40 * px.shape[0]);
    expect_close((float *)got.data + 40 * px.shape[0], ref, 40);
    npy_free(&got);
    /* --features: unnormalised (norm != 1) */
    snprintf(cmd, sizeof cmd, "%s embed --model '%s' --pixel-values '%s' --out '%s' --features",
             tu_cli(), model, one, out);
    cr_assert_eq(tu_run(cmd, &log), 0, "%s", log);
    free(log);
    tu_load_npy(out, &got);
    double nrm = 0;
    for (int i = 0; i < 40; i++) nrm += (double)((float *)got.data)[i] * ((float *)got.data)[i];
    cr_expect(fabs(sqrt(nrm) - 1.0) > 1e-3, "features look normalised");
    npy_free(&got);
    /* token ids: int64 [N,L] and int32 [L] give the same vectors as the API */
    int64_t ids64[2][7] = {{49406, 320, 1125, 539, 320, 2368, 49407},
                           {49406, 320, 1125, 539, 320, 1929, 49407}};
    int32_t ids32[7] = {49406, 320, 1125, 539, 320, 2368, 49407};
    snprintf(ids_path, sizeof ids_path, "%s/ids.npy", tmp);
    size_t s2[2] = {2, 7};
    save(ids_path, NPY_I64, 2, s2, ids64);
    snprintf(cmd, sizeof cmd, "%s embed --model '%s' --input-ids '%s' --out '%s'", tu_cli(), model,
             ids_path, out);
    cr_assert_eq(tu_run(cmd, &log), 0, "%s", log);
    free(log);
    tu_load_npy(out, &got);
    cr_assert_eq(got.shape[0], 2);
    float tref[40];
    cr_assert_eq(clip_encode_texts(m, ids32, 1, 7, NULL, tref, &e), CLIP_OK);
    expect_close(got.data, tref, 40);
    npy_free(&got);
    size_t s1[1] = {7};
    save(ids_path, NPY_I32, 1, s1, ids32);
    cr_assert_eq(tu_run(cmd, &log), 0, "%s", log);
    free(log);
    tu_load_npy(out, &got);
    cr_assert_eq(got.shape[0], 1);
    expect_close(got.data, tref, 40);
    npy_free(&got);
    free(ref);
    npy_free(&px);
    clip_model_free(m);
    tu_rmtree(tmp);
}

/* Runs a command that must fail with `code` and print `needle`. */
static void expect_fail(const char *cmd, int code, const char *needle) {
    char *log;
    int rc = tu_run(cmd, &log);
    cr_expect_eq(rc, code, "`%s` exited %d: %s", cmd, rc, log);
    cr_expect(strstr(log, needle) != NULL, "`%s`: output lacks '%s': %s", cmd, needle, log);
    free(log);
}

Test(cli_embed, errors) {
    char model[4096], tmp[4096], bad[4200], cmd[32768];
    tu_shared_path(model, sizeof model, "golden/models/tiny-synth");
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(bad, sizeof bad, "%s/bad.npy", tmp);
    float zeros[3 * 16 * 16] = {0};
    size_t shape[3] = {3, 16, 16};
    save(bad, NPY_F32, 3, shape, zeros);
    snprintf(cmd, sizeof cmd, "%s embed --model '%s' --pixel-values '%s' --out %s/o.npy", tu_cli(),
             model, bad, tmp);
    expect_fail(cmd, 1, "[3,32,32]");
    snprintf(cmd, sizeof cmd, "%s embed --model '%s' --pixel-values %s/missing.npy --out %s/o.npy",
             tu_cli(), model, tmp, tmp);
    expect_fail(cmd, 1, "missing.npy");
    /* a big-endian .npy file is refused with the dtype named */
    {
        const char *h = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n";
        char b[256];
        size_t hl = strlen(h);
        memcpy(b, "\x93NUMPY\x01\x00", 8);
        b[8] = (char)hl;
        b[9] = 0;
        memcpy(b + 10, h, hl);
        memset(b + 10 + hl, 0, 4);
        tu_write_file(bad, b, 14 + hl);
    }
    snprintf(cmd, sizeof cmd, "%s embed --model '%s' --pixel-values '%s' --out %s/o.npy", tu_cli(),
             model, bad, tmp);
    expect_fail(cmd, 1, ">f4");
    int64_t ids[3] = {49406, 99999, 49407};
    size_t s1[1] = {3};
    save(bad, NPY_I64, 1, s1, ids);
    snprintf(cmd, sizeof cmd, "%s embed --model '%s' --input-ids '%s' --out %s/o.npy", tu_cli(),
             model, bad, tmp);
    expect_fail(cmd, 1, "99999");
    snprintf(cmd, sizeof cmd, "%s embed --model '%s' --out %s/o.npy", tu_cli(), model, tmp);
    expect_fail(cmd, 2, "exactly one of");
    snprintf(cmd, sizeof cmd, "%s embed --bogus", tu_cli());
    expect_fail(cmd, 2, "--bogus");
    snprintf(cmd, sizeof cmd, "%s embed --model %s/nowhere --input-ids '%s' --out %s/o.npy",
             tu_cli(), tmp, bad, tmp);
    expect_fail(cmd, 1, "not found");
#ifndef CLIP_WITH_CUDA
    snprintf(cmd, sizeof cmd, "%s embed --device cuda --model '%s' --input-ids '%s' --out %s/o.npy",
             tu_cli(), model, bad, tmp);
    expect_fail(cmd, 1, "without CUDA");
#endif
    snprintf(cmd, sizeof cmd, "%s frobnicate", tu_cli());
    expect_fail(cmd, 2, "unknown command");
    tu_rmtree(tmp);
}

Test(cli_synth, writes_a_loadable_folder) {
    char cfg[4096], tmp[4096], cmd[32768];
    tu_shared_path(cfg, sizeof cfg, "golden/models/tiny-synth/config.json");
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(cmd, sizeof cmd, "%s synth --config '%s' --seed 0x5EED --out %s/a/b/model.safetensors",
             tu_cli(), cfg, tmp);
    char *log;
    cr_assert_eq(tu_run(cmd, &log), 0, "%s", log);
    free(log);
    char ref[4096];
    tu_shared_path(ref, sizeof ref, "golden/models/tiny-synth/model.safetensors");
    snprintf(cmd, sizeof cmd, "cmp -s '%s' %s/a/b/model.safetensors && test -f %s/a/b/config.json",
             ref, tmp, tmp);
    cr_expect_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s info --model %s/a/b", tu_cli(), tmp);
    cr_assert_eq(tu_run(cmd, &log), 0, "%s", log);
    cr_expect(strstr(log, "width 64, 2 layers") && strstr(log, "legacy argmax"), "%s", log);
    free(log);
    snprintf(cmd, sizeof cmd, "%s synth --config '%s' --seed nope --out %s/x.safetensors", tu_cli(),
             cfg, tmp);
    expect_fail(cmd, 2, "--seed");
    tu_rmtree(tmp);
}

/* ------------------------------------------------------------------ npy */

static clip_status parse_npy(const char *bytes, size_t len, npy_array *a, char *msg) {
    clip_error e = {0};
    clip_status st = npy_parse(bytes, len, "x.npy", a, &e);
    strcpy(msg, e.msg);
    return st;
}

/* magic + version + header length + header + data into buf; returns the total length. */
static size_t mk_npy(char *buf, int ver, const char *hdr, const void *data, size_t dlen) {
    size_t h = strlen(hdr), o = 0;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (char)ver;
    buf[7] = 0;
    o = 8;
    buf[o++] = (char)(h & 0xFF);
    buf[o++] = (char)((h >> 8) & 0xFF);
    if (ver >= 2) {
        buf[o++] = 0;
        buf[o++] = 0;
    }
    memcpy(buf + o, hdr, h);
    o += h;
    if (dlen) memcpy(buf + o, data, dlen);
    return o + dlen;
}

Test(npy, header_forms) {
    npy_array a;
    char msg[1024], buf[512];
    /* keys in another order, double quotes, a 1-tuple and a 0-d shape */
    int32_t v[2] = {1, 2};
    size_t n = mk_npy(buf, 1, "{\"shape\": (2,), \"fortran_order\": False, \"descr\": \"<i4\"}  \n", v, 8);
    cr_assert_eq(parse_npy(buf, n, &a, msg), CLIP_OK, "%s", msg);
    cr_expect_eq(a.count, 2);
    cr_expect_eq(((int32_t *)a.data)[1], 2);
    npy_free(&a);
    double one = 1.0;
    n = mk_npy(buf, 2, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }\n", &one, 8);
    cr_assert_eq(parse_npy(buf, n, &a, msg), CLIP_OK, "%s", msg);
    cr_expect_eq(a.ndim, 0);
    cr_expect_eq(((double *)a.data)[0], 1.0);
    npy_free(&a);
    /* round trip through the writer */
    char tmp[4096], path[4200];
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(path, sizeof path, "%s/r.npy", tmp);
    uint8_t px[2][3] = {{1, 2, 3}, {4, 5, 6}};
    size_t shape[2] = {2, 3};
    clip_error e = {0};
    cr_assert_eq(npy_save(path, NPY_U8, 2, shape, px, &e), CLIP_OK);
    tu_load_npy(path, &a);
    cr_expect(a.dtype == NPY_U8 && a.ndim == 2 && a.shape[1] == 3 && ((uint8_t *)a.data)[5] == 6);
    npy_free(&a);
    tu_rmtree(tmp);
}

Test(npy, errors) {
    npy_array a;
    char msg[1024], buf[512];
    float z = 0;
    cr_expect_eq(parse_npy("PK\x03\x04", 4, &a, msg), CLIP_ERR_FORMAT);
    cr_expect(strstr(msg, "magic"), "%s", msg);
    size_t n = mk_npy(buf, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }\n", &z, 4);
    cr_expect_eq(parse_npy(buf, n, &a, msg), CLIP_ERR_UNSUPPORTED);
    cr_expect(strstr(msg, "Fortran"), "%s", msg);
    n = mk_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (9,), }\n", &z, 4);
    cr_expect_eq(parse_npy(buf, n, &a, msg), CLIP_ERR_FORMAT);
    cr_expect(strstr(msg, "truncated"), "%s", msg);
    n = mk_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }\n", NULL, 0);
    cr_expect_eq(parse_npy(buf, n, &a, msg), CLIP_ERR_FORMAT);
    n = mk_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n", NULL, 0);
    cr_expect_eq(parse_npy(buf, n, &a, msg), CLIP_ERR_FORMAT);
    n = mk_npy(buf, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n", &z, 4);
    cr_expect_eq(parse_npy(buf, n, &a, msg), CLIP_ERR_UNSUPPORTED);
    cr_expect(strstr(msg, ">f4"), "%s", msg);
    n = mk_npy(buf, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}\n", &z, 4);
    cr_expect_neq(parse_npy(buf, n, &a, msg), CLIP_OK);
    n = mk_npy(buf, 1, "{'descr': '<f4', 'shape': (1,)}\n", &z, 4);
    cr_expect_eq(parse_npy(buf, n, &a, msg), CLIP_ERR_FORMAT);
    const char hl[] = "\x93NUMPY\x01\x00\xff\x7f{}";
    cr_expect_eq(parse_npy(hl, sizeof hl - 1, &a, msg), CLIP_ERR_FORMAT);
    cr_expect(strstr(msg, "past the end"), "%s", msg);
    const char v9[] = "\x93NUMPY\x09\x00\x00\x00{}";
    cr_expect_eq(parse_npy(v9, sizeof v9 - 1, &a, msg), CLIP_ERR_UNSUPPORTED);
}
