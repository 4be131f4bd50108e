/* test_loader.c — every loader error path, each with a small hostile file written here, plus
 * dtype conversion, extra keys, and model-name resolution through the HF cache layout. */
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "clip.h"
#include "model_internal.h"
#include "safetensors.h"
#include "testutil.h"
#include "util.h"

/* A safetensors file from a raw header string and a data section. */
static void write_raw_st(const char *path, const char *header, const void *data, size_t dlen) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    uint64_t n = strlen(header);
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(n >> (8 * i));
    fwrite(lb, 1, 8, f);
    fwrite(header, 1, (size_t)n, f);
    if (dlen) fwrite(data, 1, dlen, f);
    fclose(f);
}

/* Parses `header` + dlen zero bytes and returns the status; the message goes to msg. */
static clip_status parse_st(const char *header, size_t dlen, char *msg, size_t cap) {
    char dir[4096], path[4200];
    tu_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    void *zeros = calloc(1, dlen + 1);
    write_raw_st(path, header, zeros, dlen);
    free(zeros);
    st_file f;
    clip_error e = {0};
    clip_status st = st_open(path, &f, &e);
    if (!st) st_close(&f);
    snprintf(msg, cap, "%s", e.msg);
    unlink(path);
    rmdir(dir);
    return st;
}

#define EXPECT_ST_ERROR(header, dlen, needle)                                                     \
    do {                                                                                          \
        char msg_[1024];                                                                          \
        clip_status st_ = parse_st(header, dlen, msg_, sizeof msg_);                              \
        cr_expect_neq(st_, CLIP_OK, "accepted: %s", header);                                      \
        cr_expect(strstr(msg_, needle) != NULL, "message '%s' lacks '%s'", msg_, needle);         \
        cr_expect(strstr(msg_, "m.safetensors") != NULL, "message '%s' lacks the file", msg_);    \
    } while (0)

Test(safetensors, valid_minimal) {
    char msg[1024];
    cr_expect_eq(parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"__metadata__\":{\"format\":\"pt\"}}",
                          8, msg, sizeof msg),
                 CLIP_OK, "%s", msg);
    cr_expect_eq(parse_st("{}", 0, msg, sizeof msg), CLIP_OK, "%s", msg);
}

Test(safetensors, truncated_file) {
    char dir[4096], path[4200];
    tu_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    tu_write_file(path, "\x10\x00\x00", 3);
    st_file f;
    clip_error e = {0};
    cr_expect_eq(st_open(path, &f, &e), CLIP_ERR_FORMAT);
    cr_expect(strstr(e.msg, "truncated") && strstr(e.msg, path), "%s", e.msg);
    tu_write_file(path, "", 0);
    cr_expect_eq(st_open(path, &f, &e), CLIP_ERR_FORMAT, "empty file: %s", e.msg);
    unlink(path);
    rmdir(dir);
}

Test(safetensors, header_length_past_end) {
    char dir[4096], path[4200];
    tu_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    unsigned char b[16] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    tu_write_file(path, b, 10);
    st_file f;
    clip_error e = {0};
    cr_expect_eq(st_open(path, &f, &e), CLIP_ERR_FORMAT);
    cr_expect(strstr(e.msg, "runs past the end"), "%s", e.msg);
    /* an absurd length (2^63) must be refused, not added to a pointer */
    unsigned char huge[10] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
    tu_write_file(path, huge, 10);
    cr_expect_eq(st_open(path, &f, &e), CLIP_ERR_FORMAT);
    cr_expect(strstr(e.msg, "limit"), "%s", e.msg);
    unlink(path);
    rmdir(dir);
}

Test(safetensors, header_not_json) {
    EXPECT_ST_ERROR("{\"a\":", 0, "invalid JSON");
    EXPECT_ST_ERROR("[1,2]", 0, "not a JSON object");
    EXPECT_ST_ERROR("{\"a\":5}", 0, "not an object");
}

Test(safetensors, unknown_dtype) {
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                    "unknown dtype");
    EXPECT_ST_ERROR("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing dtype");
}

Test(safetensors, shape_overflow) {
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                    "\"data_offsets\":[0,4]}}",
                    4, "overflows 64 bits");
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                    "bad dimension");
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
                    "bad dimension");
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                    "\"data_offsets\":[0,4]}}",
                    4, "at most 8");
}

Test(safetensors, offsets) {
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                    "out of range");
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 8,
                    "out of range");
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8,
                    "bytes expected");
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 8,
                    "data_offsets");
    EXPECT_ST_ERROR("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                    12, "overlap");
    /* containment with an empty tensor in between must still be caught */
    EXPECT_ST_ERROR("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                    "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                    16, "overlap");
}

Test(safetensors, duplicate_and_bad_names) {
    EXPECT_ST_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, "listed twice");
    EXPECT_ST_ERROR("{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                    "invalid UTF-8");
    EXPECT_ST_ERROR("{\"__metadata__\":[1]}", 0, "__metadata__");
}

/* ------------------------------------------------------------------ model folders */

typedef struct tensor_out {
    const char *name;
    const char *dtype;
    int ndim;
    uint64_t shape[4];
    const void *data;
    size_t nbytes;
} tensor_out;

static void write_st(const char *path, const tensor_out *t, size_t n) {
    clip_buf h = {0};
    clip_buf_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        clip_buf_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            clip_buf_printf(&h, "%s%llu", d ? "," : "", (unsigned long long)t[i].shape[d]);
        clip_buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                        (unsigned long long)(off + t[i].nbytes));
        off += t[i].nbytes;
    }
    clip_buf_putc(&h, '}');
    while (h.len % 8) clip_buf_putc(&h, ' ');
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    fwrite(lb, 1, 8, f);
    fwrite(h.data, 1, h.len, f);
    for (size_t i = 0; i < n; i++) fwrite(t[i].data, 1, t[i].nbytes, f);
    fclose(f);
    clip_buf_free(&h);
}

/* A copy of tiny-synth in dir, with `mutate` applied to the tensor list. */
typedef void (*mutator)(tensor_out *t, size_t *n, void **scratch, int arg);

static void make_tiny_variant(const char *dir, mutator mutate, int arg) {
    char src[4096], cfg[4096], path[4200], cmd[9000];
    tu_shared_path(src, sizeof src, "golden/models/tiny-synth/model.safetensors");
    tu_shared_path(cfg, sizeof cfg, "golden/models/tiny-synth/config.json");
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/config.json'", cfg, dir);
    cr_assert_eq(system(cmd), 0);
    st_file f;
    clip_error e = {0};
    cr_assert_eq(st_open(src, &f, &e), CLIP_OK, "%s", e.msg);
    tensor_out *t = calloc(f.n + 4, sizeof *t);
    for (size_t i = 0; i < f.n; i++) {
        t[i].name = f.tensors[i].name;
        t[i].dtype = st_dtype_name(f.tensors[i].dtype);
        t[i].ndim = f.tensors[i].ndim;
        memcpy(t[i].shape, f.tensors[i].shape, sizeof(uint64_t) * (size_t)t[i].ndim);
        t[i].data = f.tensors[i].data;
        t[i].nbytes = f.tensors[i].nbytes;
    }
    size_t n = f.n;
    void *scratch = NULL;
    if (mutate) mutate(t, &n, &scratch, arg);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_st(path, t, n);
    free(scratch);
    free(t);
    st_close(&f);
}

static clip_status load_dir(const char *dir, char *msg, size_t cap) {
    clip_model *m = NULL;
    clip_error e = {0};
    clip_status st = clip_model_load(dir, NULL, &m, &e);
    clip_model_free(m);
    snprintf(msg, cap, "%s", e.msg);
    return st;
}

static void drop_tensor(tensor_out *t, size_t *n, void **scratch, int arg) {
    (void)scratch;
    (void)arg;
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(t[i].name, "vision_model.encoder.layers.1.mlp.fc2.bias")) {
            t[i] = t[--*n];
            return;
        }
}

static void reshape_tensor(tensor_out *t, size_t *n, void **scratch, int arg) {
    (void)scratch;
    (void)arg;
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(t[i].name, "text_projection.weight")) {
            uint64_t a = t[i].shape[0];
            t[i].shape[0] = t[i].shape[1];
            t[i].shape[1] = a;
        }
}

static void int_weights(tensor_out *t, size_t *n, void **scratch, int arg) {
    (void)scratch;
    (void)arg;
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(t[i].name, "vision_model.pre_layrnorm.bias")) t[i].dtype = "I32";
}

static void add_extra_keys(tensor_out *t, size_t *n, void **scratch, int arg) {
    (void)arg;
    int64_t *ids = malloc(sizeof(int64_t) * 77);
    for (int i = 0; i < 77; i++) ids[i] = i;
    *scratch = ids;
    tensor_out x = {"text_model.embeddings.position_ids", "I64", 2, {1, 77, 0, 0}, ids, 77 * 8};
    t[(*n)++] = x;
    tensor_out y = {"vision_model.embeddings.position_ids", "I64", 2, {1, 17, 0, 0}, ids, 17 * 8};
    t[(*n)++] = y;
}

Test(model_load, missing_tensor) {
    char dir[4096], msg[1024];
    tu_tmpdir(dir, sizeof dir);
    make_tiny_variant(dir, drop_tensor, 0);
    cr_expect_eq(load_dir(dir, msg, sizeof msg), CLIP_ERR_FORMAT);
    cr_expect(strstr(msg, "vision_model.encoder.layers.1.mlp.fc2.bias") && strstr(msg, "missing") &&
                  strstr(msg, "model.safetensors"),
              "%s", msg);
}

Test(model_load, misshaped_tensor) {
    char dir[4096], msg[1024];
    tu_tmpdir(dir, sizeof dir);
    make_tiny_variant(dir, reshape_tensor, 0);
    cr_expect_eq(load_dir(dir, msg, sizeof msg), CLIP_ERR_FORMAT);
    cr_expect(strstr(msg, "text_projection.weight") && strstr(msg, "[48,40]") &&
                  strstr(msg, "[40,48]"),
              "%s", msg);
}

Test(model_load, unsupported_weight_dtype) {
    char dir[4096], msg[1024];
    tu_tmpdir(dir, sizeof dir);
    make_tiny_variant(dir, int_weights, 0);
    cr_expect_eq(load_dir(dir, msg, sizeof msg), CLIP_ERR_UNSUPPORTED);
    cr_expect(strstr(msg, "vision_model.pre_layrnorm.bias") && strstr(msg, "I32"), "%s", msg);
}

Test(model_load, extra_keys_ignored) {
    char dir[4096], msg[1024];
    tu_tmpdir(dir, sizeof dir);
    make_tiny_variant(dir, add_extra_keys, 0);
    cr_expect_eq(load_dir(dir, msg, sizeof msg), CLIP_OK, "%s", msg);
}

/* F16 and BF16 tensors are converted at load: a model stored in F16 must give exactly the
 * embeddings of an F32 model holding the same (F16-representable) values. */
static uint16_t to_f16(float f) { /* round to nearest even; values here are normal and small */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int exp = (int)((x >> 23) & 0xFF) - 127 + 15;
    uint32_t man = x & 0x7FFFFF;
    if (exp <= 0) return (uint16_t)sign; /* flush tiny values (none here matter) */
    uint32_t r = man >> 13, rem = man & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    uint32_t h = ((uint32_t)exp << 10) + r;
    return (uint16_t)(sign | h);
}

/* arg 0: F32 file of F16-rounded values, 1: F16 file, 2: BF16 file. */
static void to_half(tensor_out *t, size_t *n, void **scratch, int arg) {
    size_t total = 0;
    for (size_t i = 0; i < *n; i++) total += t[i].nbytes;
    char *buf = malloc(total);
    *scratch = buf;
    for (size_t i = 0; i < *n; i++) {
        size_t cnt = t[i].nbytes / 4;
        const float *src = t[i].data;
        if (arg == 0 || arg == 1) {
            /* values rounded through f16 (f32 file) or stored as f16 */
            for (size_t k = 0; k < cnt; k++) {
                uint16_t h = to_f16(src[k]);
                if (arg == 1) {
                    memcpy(buf + 2 * k, &h, 2);
                } else {
                    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F,
                             mm = h & 0x3FF;
                    uint32_t bits = e ? sign | ((e + 112) << 23) | (mm << 13) : sign;
                    memcpy(buf + 4 * k, &bits, 4);
                }
            }
            t[i].dtype = arg == 1 ? "F16" : "F32";
            t[i].nbytes = arg == 1 ? 2 * cnt : 4 * cnt;
        } else {
            for (size_t k = 0; k < cnt; k++) {
                uint32_t bits;
                memcpy(&bits, &src[k], 4);
                uint16_t b = (uint16_t)(bits >> 16); /* truncation: any bf16 pattern is valid */
                memcpy(buf + 2 * k, &b, 2);
            }
            t[i].dtype = "BF16";
            t[i].nbytes = 2 * cnt;
        }
        t[i].data = buf;
        buf += t[i].nbytes;
    }
}

static void embed_tiny(const char *dir, float *img, float *txt) {
    clip_model *m = NULL;
    clip_error e = {0};
    cr_assert_eq(clip_model_load(dir, NULL, &m, &e), CLIP_OK, "%s", e.msg);
    float px[3 * 32 * 32];
    for (int i = 0; i < 3 * 32 * 32; i++) px[i] = (float)((i * 37 % 101) - 50) / 25.0f;
    int32_t ids[7] = {49406, 320, 1125, 539, 320, 2368, 49407};
    cr_assert_eq(clip_encode_images(m, px, 1, NULL, img, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(clip_encode_texts(m, ids, 1, 7, NULL, txt, &e), CLIP_OK, "%s", e.msg);
    clip_model_free(m);
}

Test(model_load, f16_and_bf16_converted_at_load) {
    char d32[4096], d16[4096];
    tu_tmpdir(d32, sizeof d32);
    tu_tmpdir(d16, sizeof d16);
    make_tiny_variant(d32, to_half, 0);
    make_tiny_variant(d16, to_half, 1);
    float a_img[40], a_txt[40], b_img[40], b_txt[40];
    embed_tiny(d32, a_img, a_txt);
    embed_tiny(d16, b_img, b_txt);
    cr_expect_eq(memcmp(a_img, b_img, sizeof a_img), 0, "F16 image embedding differs");
    cr_expect_eq(memcmp(a_txt, b_txt, sizeof a_txt), 0, "F16 text embedding differs");
    char dbf[4096];
    tu_tmpdir(dbf, sizeof dbf);
    make_tiny_variant(dbf, to_half, 2);
    embed_tiny(dbf, b_img, b_txt);
    for (int i = 0; i < 40; i++) cr_expect(isfinite(b_img[i]) && isfinite(b_txt[i]));
}

/* ------------------------------------------------------------------ configs */

static clip_status parse_cfg(const char *json, char *msg, size_t cap) {
    clip_config c;
    clip_error e = {0};
    clip_status st = clip_config_parse(json, strlen(json), "config.json", &c, &e);
    snprintf(msg, cap, "%s", e.msg);
    return st;
}

#define EXPECT_CFG_ERROR(json, needle)                                                             \
    do {                                                                                           \
        char m_[1024];                                                                             \
        cr_expect_neq(parse_cfg(json, m_, sizeof m_), CLIP_OK, "accepted: %s", json);              \
        cr_expect(strstr(m_, needle) != NULL, "message '%s' lacks '%s'", m_, needle);              \
    } while (0)

Test(config, defaults_and_fields) {
    clip_config c;
    clip_error e = {0};
    const char *j = "{\"text_config\":{\"hidden_act\":\"gelu\",\"eos_token_id\":2},"
                    "\"vision_config\":{\"image_size\":336,\"patch_size\":14,\"hidden_size\":1024,"
                    "\"num_hidden_layers\":24,\"num_attention_heads\":16,\"intermediate_size\":4096},"
                    "\"projection_dim\":768}";
    cr_assert_eq(clip_config_parse(j, strlen(j), "cfg", &c, &e), CLIP_OK, "%s", e.msg);
    cr_expect_eq(c.text.width, 512);
    cr_expect_eq(c.text.act, CLIP_ACT_GELU);
    cr_expect_eq(c.vision.act, CLIP_ACT_QUICK_GELU);
    cr_expect_eq(c.image_size, 336);
    cr_expect_eq(c.eos_token_id, 2);
    cr_expect_eq(c.embed_dim, 768);
    cr_expect_eq(c.context_length, 77);
    cr_expect(fabs(c.vision.eps - 1e-5) < 1e-12);
    /* absent eos_token_id: transformers' current default 49407 -> first-EOS pooling */
    cr_assert_eq(clip_config_parse("{}", 2, "cfg", &c, &e), CLIP_OK);
    cr_expect_eq(c.eos_token_id, 49407);
}

Test(config, pooling_rules) {
    clip_config c;
    clip_error e = {0};
    cr_assert_eq(clip_config_parse("{\"text_config\":{\"eos_token_id\":2}}", 34, "c", &c, &e),
                 CLIP_OK);
    int32_t ids[6] = {49406, 49407, 5, 49407, 49407, 0};
    cr_expect_eq(clip_pool_index(&c, ids, 6), 1); /* argmax, first on ties */
    int32_t noeos[3] = {49406, 7, 9};
    cr_expect_eq(clip_pool_index(&c, noeos, 3), 0);
    cr_assert_eq(clip_config_parse("{\"text_config\":{\"eos_token_id\":7}}", 34, "c", &c, &e),
                 CLIP_OK);
    cr_expect_eq(clip_pool_index(&c, noeos, 3), 1); /* first eos_token_id */
    int32_t none[3] = {1, 2, 3};
    cr_expect_eq(clip_pool_index(&c, none, 3), 0);
}

Test(config, bad_configs) {
    EXPECT_CFG_ERROR("{\"vision_config\":{\"hidden_size\":768,\"num_attention_heads\":7}}",
                     "does not divide");
    EXPECT_CFG_ERROR("{\"text_config\":{\"hidden_size\":0}}", "text_config.hidden_size = 0");
    EXPECT_CFG_ERROR("{\"text_config\":{\"num_hidden_layers\":-3}}", "num_hidden_layers");
    EXPECT_CFG_ERROR("{\"vision_config\":{\"intermediate_size\":1e12}}", "intermediate_size");
    EXPECT_CFG_ERROR("{\"vision_config\":{\"hidden_size\":\"big\"}}", "must be an integer");
    EXPECT_CFG_ERROR("{\"vision_config\":{\"hidden_act\":\"relu\"}}", "hidden_act");
    EXPECT_CFG_ERROR("{\"vision_config\":{\"image_size\":225}}", "multiple of patch_size");
    EXPECT_CFG_ERROR("{\"vision_config\":{\"layer_norm_eps\":-1}}", "layer_norm_eps");
    EXPECT_CFG_ERROR("{\"model_type\":\"bert\"}", "not a CLIP model");
    EXPECT_CFG_ERROR("{\"projection_dim\":0}", "projection_dim");
    EXPECT_CFG_ERROR("{\"vision_config\":{\"num_channels\":4}}", "num_channels");
    EXPECT_CFG_ERROR("{\"text_config\":[]}", "must be objects");
    EXPECT_CFG_ERROR("[]", "not a JSON object");
    EXPECT_CFG_ERROR("{\"text_config\":{", "invalid JSON");
    EXPECT_CFG_ERROR("{\"vision_config\":{\"image_size\":16384,\"patch_size\":1}}", "positions");
}

Test(model_load, missing_files) {
    char dir[4096], path[4200], msg[1024];
    tu_tmpdir(dir, sizeof dir);
    cr_expect_eq(load_dir(dir, msg, sizeof msg), CLIP_ERR_NOT_FOUND);
    cr_expect(strstr(msg, "config.json"), "%s", msg);
    snprintf(path, sizeof path, "%s/config.json", dir);
    tu_write_file(path, "{}", 2);
    cr_expect_eq(load_dir(dir, msg, sizeof msg), CLIP_ERR_NOT_FOUND);
    cr_expect(strstr(msg, "model.safetensors"), "%s", msg);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    tu_write_file(path, "garbage!garbage!", 16);
    cr_expect_eq(load_dir(dir, msg, sizeof msg), CLIP_ERR_FORMAT);
    cr_expect(strstr(msg, "model.safetensors"), "%s", msg);
    /* a config that does not match the weights: every tensor is reported by name */
    make_tiny_variant(dir, NULL, 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    tu_write_file(path, "{}", 2); /* defaults = ViT-B/32, the file is tiny */
    cr_expect_eq(load_dir(dir, msg, sizeof msg), CLIP_ERR_FORMAT);
    cr_expect(strstr(msg, "config.json implies"), "%s", msg);
}

/* ------------------------------------------------------------------ HF cache */

Test(resolve, hf_cache_layout) {
    char cache[4096], snap[4600], path[4800], dir[4096], cmd[16384];
    tu_tmpdir(cache, sizeof cache);
    snprintf(snap, sizeof snap, "%s/models--acme--tiny-clip/snapshots/0123abcd", cache);
    clip_error e = {0};
    cr_assert_eq(clip_mkdir_p(snap, &e), CLIP_OK, "%s", e.msg);
    snprintf(path, sizeof path, "%s/models--acme--tiny-clip/refs", cache);
    cr_assert_eq(clip_mkdir_p(path, &e), CLIP_OK);
    snprintf(path, sizeof path, "%s/models--acme--tiny-clip/refs/main", cache);
    tu_write_file(path, "0123abcd", 8);
    char src[4096];
    tu_shared_path(src, sizeof src, "golden/models/tiny-synth");
    snprintf(cmd, sizeof cmd, "ln -s '%s/config.json' '%s/model.safetensors' '%s/'", src, src, snap);
    cr_assert_eq(system(cmd), 0);
    setenv("HF_HUB_CACHE", cache, 1);
    cr_assert_eq(clip_resolve_model_dir("acme/tiny-clip", dir, sizeof dir, &e), CLIP_OK, "%s",
                 e.msg);
    cr_expect_str_eq(dir, snap);
    clip_model *m = NULL;
    cr_expect_eq(clip_model_load("acme/tiny-clip", NULL, &m, &e), CLIP_OK, "%s", e.msg);
    clip_model_free(m);
    /* HF_HOME/hub when HF_HUB_CACHE is unset */
    unsetenv("HF_HUB_CACHE");
    char home[4096];
    tu_tmpdir(home, sizeof home);
    snprintf(cmd, sizeof cmd, "ln -s '%s' '%s/hub'", cache, home);
    cr_assert_eq(system(cmd), 0);
    setenv("HF_HOME", home, 1);
    cr_expect_eq(clip_resolve_model_dir("acme/tiny-clip", dir, sizeof dir, &e), CLIP_OK, "%s",
                 e.msg);
    /* not found: the message says where it looked and how to download */
    cr_expect_eq(clip_resolve_model_dir("acme/absent", dir, sizeof dir, &e), CLIP_ERR_NOT_FOUND);
    cr_expect(strstr(e.msg, "models--acme--absent") && strstr(e.msg, "hf_download.sh"), "%s",
              e.msg);
    cr_expect_eq(clip_resolve_model_dir("a/b/c", dir, sizeof dir, &e), CLIP_ERR_NOT_FOUND);
    cr_expect(strstr(e.msg, "not a valid Hugging Face model id"), "%s", e.msg);
    cr_expect_eq(clip_resolve_model_dir("../absent-model", dir, sizeof dir, &e), CLIP_ERR_NOT_FOUND);
    /* a broken refs/main (revision without snapshot) is reported, not followed */
    snprintf(path, sizeof path, "%s/models--acme--tiny-clip/refs/main", cache);
    tu_write_file(path, "deadbeef", 8);
    cr_expect_eq(clip_resolve_model_dir("acme/tiny-clip", dir, sizeof dir, &e), CLIP_ERR_NOT_FOUND);
    unsetenv("HF_HOME");
}

Test(encode, invalid_arguments) {
    char dir[4096];
    tu_shared_path(dir, sizeof dir, "golden/models/tiny-synth");
    clip_model *m = NULL;
    clip_error e = {0};
    cr_assert_eq(clip_model_load(dir, NULL, &m, &e), CLIP_OK, "%s", e.msg);
    float out[80];
    int32_t ids[3] = {49406, 49408, 49407};
    cr_expect_eq(clip_encode_texts(m, ids, 1, 3, NULL, out, &e), CLIP_ERR_ARG);
    cr_expect(strstr(e.msg, "49408") && strstr(e.msg, "vocabulary"), "%s", e.msg);
    int32_t neg[2] = {-1, 49407};
    cr_expect_eq(clip_encode_texts(m, neg, 1, 2, NULL, out, &e), CLIP_ERR_ARG);
    int32_t *longids = calloc(78, sizeof(int32_t));
    cr_expect_eq(clip_encode_texts(m, longids, 1, 78, NULL, out, &e), CLIP_ERR_ARG);
    cr_expect(strstr(e.msg, "77"), "%s", e.msg);
    free(longids);
    cr_expect_eq(clip_encode_images(m, NULL, 1, NULL, out, &e), CLIP_ERR_ARG);
    cr_expect_eq(clip_encode_images(m, NULL, 0, NULL, out, &e), CLIP_OK);
    clip_model_free(m);
}
