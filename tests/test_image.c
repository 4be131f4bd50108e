/* test_image.c — decoding and preprocessing against Pillow 9.4 + HF (../shared/golden/images):
 * every golden image bit-exact (decoded RGB, resized uint8, pixel_values), the small seed files
 * of tests/fuzz/corpus/image against Pillow's own decoding, config loading, and error paths on
 * files the tests write themselves. */
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "clip.h"
#include "json.h"
#include "testutil.h"
#include "util.h"

/* ------------------------------------------------------------------ sha256 (FIPS 180-4) */

typedef struct sha256_ctx {
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t len;
} sha256_ctx;

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static void sha256_block(sha256_ctx *c, const uint8_t *p) {
    uint32_t w[64], s[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(s, c->h, sizeof s);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = s[7] + (ROR(s[4], 6) ^ ROR(s[4], 11) ^ ROR(s[4], 25)) +
                      ((s[4] & s[5]) ^ (~s[4] & s[6])) + K256[i] + w[i];
        uint32_t t2 = (ROR(s[0], 2) ^ ROR(s[0], 13) ^ ROR(s[0], 22)) +
                      ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
        memmove(s + 1, s, 7 * sizeof *s);
        s[4] += t1;
        s[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) c->h[i] += s[i];
}

static void sha256_hex(const void *data, size_t n, char out[65]) {
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    sha256_ctx c;
    const uint8_t *p = data;
    memcpy(c.h, H0, sizeof H0);
    c.len = (uint64_t)n * 8;
    for (; n >= 64; n -= 64, p += 64) sha256_block(&c, p);
    uint8_t tail[128] = {0};
    memcpy(tail, p, n);
    tail[n] = 0x80;
    size_t tl = n + 9 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++) tail[tl - 1 - i] = (uint8_t)(c.len >> (8 * i));
    for (size_t off = 0; off < tl; off += 64) sha256_block(&c, tail + off);
    for (int i = 0; i < 8; i++) snprintf(out + 8 * i, 9, "%08x", c.h[i]);
}

Test(images, sha256_self_check) {
    char h[65];
    sha256_hex("abc", 3, h);
    cr_assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_hex("", 0, h);
    cr_assert_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *s56 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(s56, strlen(s56), h);
    cr_assert_str_eq(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* ------------------------------------------------------------------ golden helpers */

static const char *jstr(const json_value *o, const char *key) {
    const json_value *v = json_get(o, key);
    return v && v->type == JSON_STRING ? v->u.str.s : NULL;
}

static const json_value *jobj(const json_value *o, const char *key) {
    const json_value *v = json_get(o, key);
    return v && v->type == JSON_OBJECT ? v : NULL;
}

/* Loads golden/images/<file> as an npy array, asserting its element type. */
static void load_golden_npy(const char *file, npy_dtype dt, npy_array *a) {
    char rel[512], path[4096];
    snprintf(rel, sizeof rel, "golden/images/%s", file);
    tu_shared_path(path, sizeof path, rel);
    tu_load_npy(path, a);
    cr_assert_eq(a->dtype, dt, "%s: dtype %s", file, npy_dtype_name(a->dtype));
}

/* Counts bytes that differ between ours and the golden npy (and checks the shape). */
static size_t diff_u8(const npy_array *a, const uint8_t *ours, size_t h, size_t w) {
    cr_assert_eq(a->ndim, 3);
    cr_assert(a->shape[0] == h && a->shape[1] == w && a->shape[2] == 3,
              "golden shape %zux%zux%zu, ours %zux%zux3", a->shape[0], a->shape[1], a->shape[2], h,
              w);
    size_t d = 0;
    const uint8_t *g = a->data;
    for (size_t i = 0; i < a->count; i++) d += g[i] != ours[i];
    return d;
}

typedef struct golden_stats {
    int images, rgb_ok, resized_ok, pv_ok;
} golden_stats;

/* One line of index.jsonl: decode, resize, crop, normalise; every stage compared. */
static void check_golden_image(const json_value *row, golden_stats *gs) {
    const char *name = jstr(row, "name"), *file = jstr(row, "file");
    cr_assert(name && file, "index.jsonl row without name/file");
    char rel[512], path[4096], h[65];
    snprintf(rel, sizeof rel, "golden/images/%s", file);
    tu_shared_path(path, sizeof path, rel);

    clip_image img = {0};
    clip_error e = {0};
    cr_assert_eq(clip_image_decode_file(path, NULL, &img, &e), CLIP_OK, "%s: %s", name, e.msg);
    const json_value *rgb = jobj(row, "rgb");
    cr_assert_not_null(rgb);
    size_t npx = (size_t)img.width * img.height;
    sha256_hex(img.rgb, npx * 3, h);
    int rgb_ok = jstr(rgb, "sha256") && !strcmp(h, jstr(rgb, "sha256"));
    cr_expect(rgb_ok, "%s: decoded RGB sha256 %s, golden %s", name, h, jstr(rgb, "sha256"));
    if (jstr(rgb, "file")) {
        npy_array a;
        load_golden_npy(jstr(rgb, "file"), NPY_U8, &a);
        size_t d = diff_u8(&a, img.rgb, (size_t)img.height, (size_t)img.width);
        cr_expect_eq(d, 0, "%s: %zu decoded bytes differ from %s", name, d, jstr(rgb, "file"));
        rgb_ok = rgb_ok && d == 0;
        npy_free(&a);
    }

    /* HF's own result, or the documented channels-last result for 1- and 3-pixel-high images. */
    const json_value *exp = jobj(row, "expected");
    const json_value *hf = jobj(row, "hf");
    const json_value *ref = exp ? exp : hf;
    cr_assert_not_null(ref, "%s: no hf/expected entry", name);

    clip_image_config cfg;
    clip_image_config_default(&cfg);
    float *pv = malloc(sizeof(float) * 3 * 224 * 224);
    cr_assert_not_null(pv);
    clip_image rs = {0};
    cr_assert_eq(clip_image_preprocess(&img, &cfg, NULL, pv, &rs, &e), CLIP_OK, "%s: %s", name,
                 e.msg);

    int resized_ok = 1;
    const json_value *r = jobj(ref, "resized");
    if (r && jstr(r, "sha256")) {
        sha256_hex(rs.rgb, (size_t)rs.width * rs.height * 3, h);
        cr_expect_str_eq(h, jstr(r, "sha256"), "%s: resized sha256", name);
        resized_ok = resized_ok && !strcmp(h, jstr(r, "sha256"));
    }
    if (r && jstr(r, "file")) {
        npy_array a;
        load_golden_npy(jstr(r, "file"), NPY_U8, &a);
        size_t d = diff_u8(&a, rs.rgb, (size_t)rs.height, (size_t)rs.width);
        cr_expect_eq(d, 0, "%s: %zu resized bytes differ from %s", name, d, jstr(r, "file"));
        resized_ok = resized_ok && d == 0;
        npy_free(&a);
    }
    const json_value *c = jobj(ref, "cropped");
    if (c && jstr(c, "file")) {
        /* Only the 224x224 centre crop is stored (HWC): take it from our resized image. */
        const char *layout = jstr(c, "layout");
        cr_assert(!layout || !strcmp(layout, "HWC"), "%s: crop layout %s", name, layout);
        int top = (rs.height - 224) / 2, left = (rs.width - 224) / 2;
        uint8_t *crop = malloc(224 * 224 * 3);
        cr_assert_not_null(crop);
        for (int y = 0; y < 224; y++)
            memcpy(crop + (size_t)y * 224 * 3, rs.rgb + ((size_t)(top + y) * rs.width + left) * 3,
                   224 * 3);
        npy_array a;
        load_golden_npy(jstr(c, "file"), NPY_U8, &a);
        size_t d = diff_u8(&a, crop, 224, 224);
        cr_expect_eq(d, 0, "%s: %zu cropped bytes differ from %s", name, d, jstr(c, "file"));
        resized_ok = resized_ok && d == 0;
        npy_free(&a);
        free(crop);
    }

    const json_value *p = jobj(ref, "pixel_values");
    cr_assert(p && jstr(p, "file") && jstr(p, "sha256"), "%s: no pixel_values entry", name);
    sha256_hex(pv, sizeof(float) * 3 * 224 * 224, h);
    int pv_ok = !strcmp(h, jstr(p, "sha256"));
    cr_expect(pv_ok, "%s: pixel_values sha256 %s, golden %s", name, h, jstr(p, "sha256"));
    npy_array a;
    load_golden_npy(jstr(p, "file"), NPY_F32, &a);
    cr_assert(a.count == 3 * 224 * 224, "%s: golden pixel_values has %zu values", name, a.count);
    size_t d = 0;
    for (size_t i = 0; i < a.count; i++)
        d += memcmp((const float *)a.data + i, pv + i, sizeof(float)) != 0;
    cr_expect_eq(d, 0, "%s: %zu of %zu pixel_values differ", name, d, a.count);
    pv_ok = pv_ok && d == 0;
    npy_free(&a);

    gs->images++;
    gs->rgb_ok += rgb_ok;
    gs->resized_ok += resized_ok;
    gs->pv_ok += pv_ok;
    free(pv);
    clip_image_free(&rs);
    clip_image_free(&img);
}

/* Calls fn for every line of golden/images/index.jsonl. */
static int for_each_golden(void (*fn)(const json_value *, void *), void *user) {
    char path[4096];
    tu_shared_path(path, sizeof path, "golden/images/index.jsonl");
    char *data;
    size_t len;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(path, 0, &data, &len, &e), CLIP_OK, "%s", e.msg);
    int n = 0;
    for (char *line = data; line < data + len;) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
        if (ll > 0) {
            json_doc *doc;
            cr_assert_eq(json_parse(line, ll, "index.jsonl", 0, &doc, &e), CLIP_OK, "%s", e.msg);
            fn(json_doc_root(doc), user);
            json_doc_free(doc);
            n++;
        }
        line += ll + 1;
    }
    free(data);
    return n;
}

static void golden_cb(const json_value *row, void *user) { check_golden_image(row, user); }

Test(images, golden_index_bit_exact, .timeout = 300) {
    golden_stats gs = {0};
    int n = for_each_golden(golden_cb, &gs);
    cr_assert_gt(n, 30, "index.jsonl has only %d images", n);
    cr_log_info("golden images: %d; decoded RGB exact %d, resized exact %d, pixel_values exact %d",
                gs.images, gs.rgb_ok, gs.resized_ok, gs.pv_ok);
    cr_expect_eq(gs.rgb_ok, gs.images);
    cr_expect_eq(gs.resized_ok, gs.images);
    cr_expect_eq(gs.pv_ok, gs.images);
}

/* The real openai/clip-vit-base-patch32 preprocessor_config.json (old style) gives the defaults. */
Test(images, config_real_checkpoint_equals_default) {
    char dir[4096];
    tu_shared_path(dir, sizeof dir, "models/clip-vit-base-patch32");
    clip_image_config a, b;
    clip_error e = {0};
    cr_assert_eq(clip_image_config_load(dir, &a, &e), CLIP_OK, "%s", e.msg);
    clip_image_config_default(&b);
    cr_assert(a.do_resize && a.do_center_crop && a.do_rescale && a.do_normalize && a.do_convert_rgb);
    cr_assert_eq(a.shortest_edge, 224);
    cr_assert_eq(a.crop_height, 224);
    cr_assert_eq(a.crop_width, 224);
    cr_assert_eq(a.resample, 3);
    cr_assert(a.rescale_factor == b.rescale_factor);
    cr_assert(!memcmp(a.mean, b.mean, sizeof a.mean) && !memcmp(a.std, b.std, sizeof a.std));
}

/* load_image(path) applies EXIF orientation: index field hf_exif_applied of edge_jpeg_exif6. */
Test(images, golden_exif_transpose) {
    char path[4096], h[65];
    tu_shared_path(path, sizeof path, "golden/images/edge_jpeg_exif6.jpg");
    clip_decode_options o;
    clip_decode_options_init(&o);
    o.exif_transpose = 1;
    clip_image img = {0};
    clip_error e = {0};
    cr_assert_eq(clip_image_decode_file(path, &o, &img, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(img.width, 200);
    cr_assert_eq(img.height, 300);
    clip_image_config cfg;
    clip_image_config_default(&cfg);
    float *pv = malloc(sizeof(float) * 3 * 224 * 224);
    cr_assert_not_null(pv);
    cr_assert_eq(clip_image_preprocess(&img, &cfg, &o, pv, NULL, &e), CLIP_OK, "%s", e.msg);
    sha256_hex(pv, sizeof(float) * 3 * 224 * 224, h);
    cr_assert_str_eq(h, "a51d01923e4299749579d233cfc94b33d8a0a04d91acfd45b883334a54178640");
    free(pv);
    clip_image_free(&img);
    /* Off by default: the stored 300x200 orientation (DataFlow / PIL-object parity). */
    cr_assert_eq(clip_image_decode_file(path, NULL, &img, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(img.width, 300);
    clip_image_free(&img);
}

/* ------------------------------------------------------------------ seed files vs Pillow */

/* sha256 of np.array(Image.open(f).convert("RGB")) (after ImageOps.exif_transpose for the
 * *exif* files) with Debian's Pillow 9.4.0, for the seeds in tests/fuzz/corpus/image. */
static const struct seed {
    const char *file;
    int exif;
    int w, h;
    const char *sha256;
} SEEDS[] = {
    {"bmp_16_555.bmp", 0, 7, 5, "ef8f51a38118224235c15255e201a306120f1bc8311cc0b1efa9aa5185ab2f8e"},
    {"bmp_16_565.bmp", 0, 7, 5, "395b953dd6b08ae8008185a569a07dd804346511a48ade3450fd3fa1fb66625a"},
    {"bmp_24_os2.bmp", 0, 7, 5, "57e076dae6de0100c06f566a4a854ac90881c4579a7f4ad381c261b1f3437089"},
    {"bmp_24_topdown.bmp", 0, 7, 5, "23a72fcc9e3209668da8724490dec090436759377973dc8e571193cf7a16aa33"},
    {"bmp_32_xbgr_v5.bmp", 0, 7, 5, "6ae34e47fbe7980088b00d883c3129ffc2e9ca7c70f52362882dd262325ce8fe"},
    {"bmp_4_short_palette.bmp", 0, 7, 5, "95dd6e4fc62221c48a7785743a8fa88c93ee99409f4f8883cb1231d6dabce481"},
    {"bmp_8_bw_palette.bmp", 0, 7, 5, "5cf01f601fa057342ef9dc8a7bde96f0c67339ea6e46efc3abc7a796229ef611"},
    {"bmp_8_grey_palette.bmp", 0, 7, 5, "a28e339bf6f7296135f662a6df5e0cc27f6da73d76c7b51d024dcbbc7c18b520"},
    {"bmp_rle4.bmp", 0, 11, 6, "08d9f45c84036a1f99047139690b5ebc9c588001bf0f682af2d30641a2080f3b"},
    {"bmp_rle8.bmp", 0, 11, 6, "6303887918d21a7c2e1e78ff585ec7a41ee42a04920f1fe0b60e9afad95d8036"},
    {"gif_frame_grows_canvas.gif", 0, 8, 6, "c21add17ae295e12c23bf38d83867e0fa72ee71f455ac35514a5b897436491b7"},
    {"gif_index_past_palette.gif", 0, 6, 5, "722b72409a37de30d06bfa2ae449dbc9386918af5b76c1ba83d45e2ed5380501"},
    {"gif_interlaced.gif", 0, 6, 11, "70ef66e6bd4818debdfbfe507dd05c7bb7abcf5f14b5469b43a1d882bb6beb6f"},
    {"gif_pillow.gif", 0, 10, 12, "a2f25aaf01bd851e6cbc305183000420ba6a377097a9d7f9d061cebead323ad0"},
    {"jpg_cmyk.jpg", 0, 24, 16, "83178ebe5b58ac9347f582b87485c38a0783494ec44c9db37d63d2c198ddf643"},
    {"jpg_exif1.jpg", 1, 9, 5, "1145914532f689faba95a2072f06ff5ef328615b743afb0eab5d81a87b270548"},
    {"jpg_exif2.jpg", 1, 9, 5, "f67c56b77481c0df9bb814ddede8dd5853a0c63eacb253819218538e4f5a9299"},
    {"jpg_exif3.jpg", 1, 9, 5, "3718ec01022f1755094231809fdc77dc2b6859b43e46356ebcef131165e95c72"},
    {"jpg_exif4.jpg", 1, 9, 5, "53e41a99ee68709ceaedd928456e6991db6c67a73f2867b264d837d1fa38778a"},
    {"jpg_exif5.jpg", 1, 5, 9, "b79c9dfc68e38e5af79ef33578cf1c6ac0d5bf775346bc296f093b7a97224bfd"},
    {"jpg_exif6.jpg", 1, 5, 9, "6417d0565360c6d796a1a88dad6c6ad2754a05310fcc8787703ec9e6a12f616d"},
    {"jpg_exif7.jpg", 1, 5, 9, "2f48da1a6344d014604043eb01b02813075dfd2935415645401af35893f5cee0"},
    {"jpg_exif8.jpg", 1, 5, 9, "30d33aeaa5515f8d03d59fe975ba3cee2f9e7a6b20c54fb62787b64f025fb3a4"},
    {"jpg_gray.jpg", 0, 24, 16, "288471b749300feaf57d6cd82e68fbe5c21fc55cd5a6a2952ba0c9ef32120971"},
    {"jpg_progressive.jpg", 0, 24, 16, "8b5dc0632f7853c695e13af06c67769bdca7b1defc1e7090c67cc80a18dfe80a"},
    {"jpg_ss0.jpg", 0, 24, 16, "ac4ca4e72d989df1fe7f33b281f5655d2d459d88ad7e0677673090af887a877e"},
    {"jpg_ss1.jpg", 0, 24, 16, "98affe6860818fc47a2b2fb3bb3904088b3518bfda2fed351acdb03635630818"},
    {"jpg_ss2.jpg", 0, 24, 16, "8b5dc0632f7853c695e13af06c67769bdca7b1defc1e7090c67cc80a18dfe80a"},
    {"p4.pbm", 0, 11, 3, "aec6bdbd36e0cfead04cd614adc1cf88774d43312676174a473f6a5e099b8d28"},
    {"p5_15.pgm", 0, 7, 5, "01d48b050d8f650937f939babd78ab5d3615572aacb01f5247d5fb730fbc9cc3"},
    {"p5_65535.pgm", 0, 7, 5, "b3975f72da0a05abaf1dfea2fb44172fb2538acf938492a9536b2d557f4765c2"},
    {"p6_1000.ppm", 0, 7, 5, "e81c5f11e7f4952073231adaa05ef1e280782405c6fb6bbb105e44cc6aa455e7"},
    {"p6_255.ppm", 0, 7, 5, "472a3530356b366d9b588998ba2c05ac57434a22e55bad430146cff086ebf8f1"},
    {"p6_comment.ppm", 0, 7, 5, "472a3530356b366d9b588998ba2c05ac57434a22e55bad430146cff086ebf8f1"},
    {"png_ct2_16.png", 0, 11, 6, "1600cb12d8a323db8959928f1450716e686c47d044b1fb99440d5b3384150d65"},
    {"png_ct4_16.png", 0, 11, 6, "4933ae9b85a18cb1dbe6bb9ab1168f58f7f2e846ba941095f1cbc3f4892d3430"},
    {"png_ct6_16.png", 0, 11, 6, "07016bda276a1554d393841663ee89104f210e0777250606d05fbc9dcce093c7"},
    {"png_exif6_after_idat.png", 1, 5, 9, "d9077b39b89c18709a06586e6aa77c8aa7c63281647754c800c5a389719b4bd0"},
    {"png_gray1.png", 0, 11, 6, "9b87f83baafe12a462577e1844cbcd80f51487abffc7d18be9234cecdbbd9de2"},
    {"png_gray16.png", 0, 11, 6, "17d410710089679353ec2d14c8fc5529279f389e78da3dd6f86e021461c660b8"},
    {"png_gray2.png", 0, 11, 6, "ec0fcc221e32d9e5964e6901d307ab942fb2e64229ebcd3a828e06dcd7d2cee7"},
    {"png_gray4.png", 0, 11, 6, "44a667da94b88484e9ba4ccc7da342bd46afabd5f2e1c74ebadfcd2fd525b100"},
    {"png_pal4_short_trns.png", 0, 11, 6, "5932fc811ab9132d5fa8f68faaefa48d5c6a6358be3f863bf59b8d278617896a"},
    {"png_rgba.png", 0, 11, 6, "36bc716346f7f5daee1154739c66b7d4da1277a42f5076a21e34c67856cbeeaf"},
    {"psd_raw.psd", 0, 7, 5, "07c44bd84c4274d76003caa1568a559fe419ce058fbfce767d4c8ec9b439909e"},
    {"psd_rle.psd", 0, 7, 5, "07c44bd84c4274d76003caa1568a559fe419ce058fbfce767d4c8ec9b439909e"},
    {"tga_bgr15_flipx.tga", 0, 13, 7, "7b63836185d5e0dfa0c10e536180bcb18471025c8b4a811540711533dacd1caf"},
    {"tga_bgr15_topright.tga", 0, 13, 7, "1b4daa5464b6fa5217f839e382cf97a4b975e8548b4be9318619c62d54429371"},
    {"tga_bilevel.tga", 0, 37, 23, "634f611903507aa6cb89bd3d4264ce92ddc51a8d954ff59993bfeb4b7d5c6746"},
    {"tga_cmap16_start5.tga", 0, 13, 7, "8aa191aef88d146ed2e1714c9afc77558f14354fa39599eb36120421d1b73059"},
    {"tga_cmap24_start5.tga", 0, 13, 7, "76748b12fd949a94c195c5d2c8f24d0e42bc75a025ddc60386b8ef2527d769ee"},
    {"tga_gray.tga", 0, 37, 23, "02b473f7e1f9df45aa5b5cab6d9d6a0bf1d9f648243a899d5bb589dc7cc61c71"},
    {"tga_gray_alpha_rle.tga", 0, 37, 23, "02b473f7e1f9df45aa5b5cab6d9d6a0bf1d9f648243a899d5bb589dc7cc61c71"},
    {"tga_pal_no_cmap.tga", 0, 13, 7, "4718547efe27a2c543a3404dea7e1eb40b3ff1f8fa84de311ad1a5ac9e131eb7"},
    {"tga_pal_rle.tga", 0, 37, 23, "7e4ffa7b383aeef855d05235d105c916b1184acd4cbe1a204c16c1fa32b429f8"},
    {"tga_rgb_rle_bottomup.tga", 0, 37, 23, "448335ea2bb34e78589a389085c185a2bd3ffab43ac62f9597ee96c5c2c32dc0"},
    {"tga_rgba_topdown.tga", 0, 37, 23, "448335ea2bb34e78589a389085c185a2bd3ffab43ac62f9597ee96c5c2c32dc0"},
    {"webp_exif8.webp", 1, 5, 9, "55c922d75d0f4b84ec3b0fca13d4756e833b7a32b9a7b9cb03011842de8baea7"},
    {"webp_lossless.webp", 0, 16, 12, "2a8d630d97cf36cf25e7de470757e1cba92902391e57f51343d2179dc3e84133"},
    {"webp_lossy.webp", 0, 16, 12, "f83d41b2ea4b5051bcec342d995ab1a1dd778d3fd8d381a2295bafe9a608135d"},
    {"webp_lossy_alpha.webp", 0, 16, 12, "3849584146c68082cc31db816a4c1e6954b88c825fa7b4acafce53122966bacc"},
};

static void seed_path(char *out, size_t cap, const char *file) {
    const char *src = getenv("CLIPEVAL_SRC");
    snprintf(out, cap, "%s/tests/fuzz/corpus/image/%s", src && *src ? src : ".", file);
    if (!tu_exists(out)) {
        if (tu_under_ci()) cr_assert_fail("seed file missing: %s (run from the repo root)", out);
        cr_skip_test("seed file missing: %s (run from the repo root)", out);
    }
}

Test(images, seeds_match_pillow) {
    int n = (int)(sizeof SEEDS / sizeof SEEDS[0]), ok = 0;
    for (int i = 0; i < n; i++) {
        char path[4096], h[65];
        seed_path(path, sizeof path, SEEDS[i].file);
        clip_decode_options o;
        clip_decode_options_init(&o);
        o.exif_transpose = SEEDS[i].exif;
        clip_image img = {0};
        clip_error e = {0};
        clip_status st = clip_image_decode_file(path, &o, &img, &e);
        cr_expect_eq(st, CLIP_OK, "%s: %s", SEEDS[i].file, e.msg);
        if (st) continue;
        sha256_hex(img.rgb, (size_t)img.width * img.height * 3, h);
        int good = img.width == SEEDS[i].w && img.height == SEEDS[i].h && !strcmp(h, SEEDS[i].sha256);
        cr_expect(good, "%s: %dx%d %s, Pillow %dx%d %s", SEEDS[i].file, img.width, img.height, h,
                  SEEDS[i].w, SEEDS[i].h, SEEDS[i].sha256);
        ok += good;
        clip_image_free(&img);
    }
    cr_log_info("seed files equal to Pillow: %d/%d", ok, n);
}

/* TGA files Pillow 9.4 refuses are refused too (a clear error, never a guess). */
Test(images, tga_pillow_refusals) {
    static const struct {
        const char *file, *needle;
    } bad[] = {{"tga_bad_rle_crosses_row.tga", "crosses a row end"},
               {"tga_bad_cmap32.tga", "32-bit colour map"},
               {"tga_bad_truncated.tga", "truncated"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[4096];
        seed_path(path, sizeof path, bad[i].file);
        clip_image img = {0};
        clip_error e = {0};
        cr_expect_neq(clip_image_decode_file(path, NULL, &img, &e), CLIP_OK, "%s decoded", bad[i].file);
        cr_expect(strstr(e.msg, bad[i].needle) != NULL, "%s: %s", bad[i].file, e.msg);
        clip_image_free(&img);
    }
}

/* The format is taken from the bytes: a PNG named .jpg still decodes. */
Test(images, format_from_magic_not_name) {
    char src[4096], dir[4096], dst[4200];
    seed_path(src, sizeof src, "png_rgba.png");
    tu_tmpdir(dir, sizeof dir);
    snprintf(dst, sizeof dst, "%s/really_a_png.jpg", dir);
    char *data;
    size_t len;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(src, 0, &data, &len, &e), CLIP_OK, "%s", e.msg);
    tu_write_file(dst, data, len);
    clip_image a = {0}, b = {0};
    cr_assert_eq(clip_image_decode_file(dst, NULL, &a, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(clip_image_decode_memory(data, len, NULL, &b, &e), CLIP_OK, "%s", e.msg);
    cr_assert(a.width == b.width && a.height == b.height &&
              !memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3));
    clip_image_free(&a);
    clip_image_free(&b);
    free(data);
    unlink(dst);
    rmdir(dir);
}

/* ------------------------------------------------------------------ preprocessing details */

/* A 2x2 image with do_resize off is padded with zeros (HF center_crop), and the table values of
 * spec §C.6 come out at the ends of the range. */
Test(images, crop_pads_with_zero_and_lut_endpoints) {
    uint8_t px[2 * 2 * 3] = {255, 255, 255, 128, 128, 128, 0, 0, 0, 10, 20, 30};
    clip_image img = {2, 2, px};
    clip_image_config cfg;
    clip_image_config_default(&cfg);
    cfg.do_resize = 0;
    cfg.crop_height = cfg.crop_width = 5;
    float out[3 * 25];
    clip_error e = {0};
    cr_assert_eq(clip_image_preprocess(&img, &cfg, NULL, out, NULL, &e), CLIP_OK, "%s", e.msg);
    /* ceil((5 - 2) / 2) = 2: the image sits at rows/cols 2..3. */
    cr_assert_eq(out[0], -1.7922625541687012f);           /* R of a padded 0 */
    cr_assert_eq(out[2 * 5 + 2], 1.9303361177444458f);    /* R of 255 at (2, 2) */
    cr_assert_eq(out[2 * 5 + 3], 0.07633614540100098f);   /* R of 128 at (2, 3) */
    cr_assert_eq(out[25 + 0], -1.7520971298217773f);      /* G of 0 */
    cr_assert_eq(out[25 + 2 * 5 + 2], 2.0748836994171143f); /* G of 255 */
    cr_assert_eq(out[50 + 2 * 5 + 2], 2.1458969116210938f); /* B of 255 */
    cr_assert_eq(out[50 + 0], -1.480219841003418f);       /* B of 0 */
}

/* Spec §C.3 examples of the output size, through the `resized` output. */
Test(images, resize_output_sizes) {
    static const int cases[][4] = {{640, 480, 298, 224}, {480, 640, 224, 298}, {1000, 667, 335, 224},
                                   {427, 640, 224, 335}, {225, 300, 224, 298}, {224, 224, 224, 224}};
    clip_image_config cfg;
    clip_image_config_default(&cfg);
    float *out = malloc(sizeof(float) * 3 * 224 * 224);
    cr_assert_not_null(out);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int w = cases[i][0], h = cases[i][1];
        uint8_t *px = calloc((size_t)w * h, 3);
        cr_assert_not_null(px);
        for (size_t k = 0; k < (size_t)w * h * 3; k++) px[k] = (uint8_t)(k * 2654435761u >> 24);
        clip_image img = {w, h, px}, rs = {0};
        clip_error e = {0};
        cr_assert_eq(clip_image_preprocess(&img, &cfg, NULL, out, &rs, &e), CLIP_OK, "%s", e.msg);
        cr_expect(rs.width == cases[i][2] && rs.height == cases[i][3], "%dx%d -> %dx%d", w, h,
                  rs.width, rs.height);
        if (w == 224 && h == 224) cr_expect(!memcmp(rs.rgb, px, (size_t)w * h * 3), "no-op resize");
        clip_image_free(&rs);
        free(px);
    }
    free(out);
}

/* The output window (no `resized` requested) equals the crop of the full resize. */
Test(images, windowed_resize_equals_full) {
    static const int sizes[][2] = {{1000, 3}, {3, 1000}, {640, 480}, {31, 17}, {2000, 40}, {7, 3000}};
    clip_image_config cfg;
    clip_image_config_default(&cfg);
    float *a = malloc(sizeof(float) * 3 * 224 * 224), *b = malloc(sizeof(float) * 3 * 224 * 224);
    cr_assert(a && b);
    for (int tall = 0; tall < 2; tall++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            int w = sizes[i][0], h = sizes[i][1];
            uint8_t *px = malloc((size_t)w * h * 3);
            cr_assert_not_null(px);
            for (size_t k = 0; k < (size_t)w * h * 3; k++) px[k] = (uint8_t)((k * 7919u) ^ (k >> 5));
            clip_image img = {w, h, px}, rs = {0};
            clip_decode_options o;
            clip_decode_options_init(&o);
            o.pillow_tall_rule = tall;
            clip_error e = {0};
            cr_assert_eq(clip_image_preprocess(&img, &cfg, &o, a, &rs, &e), CLIP_OK, "%s", e.msg);
            cr_assert_eq(clip_image_preprocess(&img, &cfg, &o, b, NULL, &e), CLIP_OK, "%s", e.msg);
            cr_expect(!memcmp(a, b, sizeof(float) * 3 * 224 * 224), "%dx%d tall=%d", w, h, tall);
            clip_image_free(&rs);
            free(px);
        }
    free(a);
    free(b);
}

/* ------------------------------------------------------------------ configuration files */

static void write_config(char *dir, size_t cap, const char *json) {
    char path[4200];
    tu_tmpdir(dir, cap);
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    tu_write_file(path, json, strlen(json));
}

static void remove_config(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    unlink(path);
    rmdir(dir);
}

Test(images, config_new_style_336) {
    char dir[4096];
    write_config(dir, sizeof dir,
                 "{\"size\": {\"shortest_edge\": 336}, \"crop_size\": {\"height\": 336, \"width\": "
                 "320}, \"do_rescale\": true, \"rescale_factor\": 0.00392156862745098, "
                 "\"image_mean\": [0.5, 0.5, 0.5], \"image_std\": 0.25, \"resample\": 3, "
                 "\"image_processor_type\": \"CLIPImageProcessor\"}");
    clip_image_config c;
    clip_error e = {0};
    cr_assert_eq(clip_image_config_load(dir, &c, &e), CLIP_OK, "%s", e.msg);
    cr_assert_eq(c.shortest_edge, 336);
    cr_assert_eq(c.crop_height, 336);
    cr_assert_eq(c.crop_width, 320);
    cr_assert(c.mean[1] == 0.5f && c.std[2] == 0.25f);
    cr_assert(c.do_center_crop && c.do_normalize); /* HF defaults when absent */
    remove_config(dir);
}

Test(images, config_errors) {
    static const struct {
        const char *json;
        clip_status code;
        const char *needle;
    } cases[] = {
        {"{\"resample\": 2}", CLIP_ERR_UNSUPPORTED, "BILINEAR"},
        {"{\"resample\": 0}", CLIP_ERR_UNSUPPORTED, "resample"},
        {"{\"size\": {\"height\": 224, \"width\": 224}}", CLIP_ERR_UNSUPPORTED, "shortest_edge"},
        {"{\"size\": \"224\"}", CLIP_ERR_CONFIG, "size"},
        {"{\"crop_size\": -3}", CLIP_ERR_CONFIG, "crop_size"},
        {"{\"image_mean\": [0.5, 0.5]}", CLIP_ERR_CONFIG, "image_mean"},
        {"{\"image_std\": [0.5, 0, 0.5]}", CLIP_ERR_CONFIG, "image_std"},
        {"{\"do_resize\": \"yes\"}", CLIP_ERR_CONFIG, "do_resize"},
        {"[224]", CLIP_ERR_CONFIG, "object"},
        {"{\"size\": 224,", CLIP_ERR_FORMAT, "preprocessor_config.json"},
        {"{\"size\": 224} trailing", CLIP_ERR_FORMAT, "preprocessor_config.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[4096];
        write_config(dir, sizeof dir, cases[i].json);
        clip_image_config c;
        clip_image_config_default(&c);
        clip_image_config before = c;
        clip_error e = {0};
        clip_status st = clip_image_config_load(dir, &c, &e);
        cr_expect_eq(st, cases[i].code, "%s: status %d (%s)", cases[i].json, st, e.msg);
        cr_expect(strstr(e.msg, cases[i].needle) != NULL, "%s: message '%s' lacks '%s'",
                  cases[i].json, e.msg, cases[i].needle);
        cr_expect(!memcmp(&c, &before, sizeof c), "%s: config changed on error", cases[i].json);
        remove_config(dir);
    }
    clip_image_config c;
    clip_error e = {0};
    cr_assert_eq(clip_image_config_load("/nonexistent-clipeval-dir", &c, &e), CLIP_ERR_NOT_FOUND,
                 "%s", e.msg);
    /* A config the preprocessor cannot use is refused there too. */
    uint8_t px[3] = {1, 2, 3};
    clip_image img = {1, 1, px};
    clip_image_config_default(&c);
    c.resample = 1;
    float out[3 * 224 * 224];
    cr_assert_eq(clip_image_preprocess(&img, &c, NULL, out, NULL, &e), CLIP_ERR_UNSUPPORTED);
    cr_assert(strstr(e.msg, "LANCZOS"), "%s", e.msg);
}

/* ------------------------------------------------------------------ error paths */

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void put32be(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static size_t png_chunk(uint8_t *p, const char *type, const uint8_t *data, uint32_t n) {
    put32be(p, n);
    memcpy(p + 4, type, 4);
    if (n) memcpy(p + 8, data, n);
    put32be(p + 8 + n, crc32_of(p + 4, 4 + (size_t)n));
    return 12 + (size_t)n;
}

/* A minimal valid 4x4 RGB PNG (zlib stored block) built here, so the tests need no files;
 * without IDAT it is only a header. */
static size_t make_png(uint8_t *out, uint32_t w, uint32_t h, int with_idat) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13] = {0}, idat[256];
    size_t n = 0;
    memcpy(out, sig, 8);
    n = 8;
    put32be(ihdr, w);
    put32be(ihdr + 4, h);
    ihdr[8] = 8;
    ihdr[9] = 2;
    n += png_chunk(out + n, "IHDR", ihdr, 13);
    if (with_idat) {
        /* rows: filter byte 0 + 4 RGB pixels; one stored deflate block; Adler-32 */
        uint8_t raw[4 * 13];
        for (int i = 0; i < 52; i++) raw[i] = i % 13 == 0 ? 0 : (uint8_t)(i * 37);
        size_t k = 0;
        idat[k++] = 0x78;
        idat[k++] = 0x01;
        idat[k++] = 0x01;
        idat[k++] = 52;
        idat[k++] = 0;
        idat[k++] = (uint8_t)~52;
        idat[k++] = 0xFF;
        memcpy(idat + k, raw, 52);
        k += 52;
        uint32_t a = 1, b = 0;
        for (int i = 0; i < 52; i++) {
            a = (a + raw[i]) % 65521;
            b = (b + a) % 65521;
        }
        put32be(idat + k, b << 16 | a);
        k += 4;
        n += png_chunk(out + n, "IDAT", idat, (uint32_t)k);
    }
    n += png_chunk(out + n, "IEND", NULL, 0);
    return n;
}

/* Decodes `len` bytes written to a temp file; expects `code` and the file name in the message. */
static void expect_file_error(const char *label, const void *data, size_t len,
                              const clip_decode_options *o, clip_status code, const char *needle) {
    char dir[4096], path[4200];
    tu_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/%s", dir, label);
    tu_write_file(path, data, len);
    clip_image img = {(int)0xdead, 0, (uint8_t *)(uintptr_t)1};
    clip_error e = {0};
    clip_status st = clip_image_decode_file(path, o, &img, &e);
    cr_expect_eq(st, code, "%s: status %s, expected %s (%s)", label, clip_status_name(st),
                 clip_status_name(code), e.msg);
    cr_expect(strstr(e.msg, path) != NULL, "%s: message does not name the file: %s", label, e.msg);
    if (needle) cr_expect(strstr(e.msg, needle) != NULL, "%s: '%s' lacks '%s'", label, e.msg, needle);
    cr_expect(img.rgb == NULL && img.width == 0, "%s: partial image returned", label);
    unlink(path);
    rmdir(dir);
}

Test(image_errors, png_valid_baseline) {
    uint8_t buf[512];
    size_t n = make_png(buf, 4, 4, 1);
    clip_image img;
    clip_error e = {0};
    cr_assert_eq(clip_image_decode_memory(buf, n, NULL, &img, &e), CLIP_OK, "%s", e.msg);
    cr_assert(img.width == 4 && img.height == 4 && img.rgb[0] == 37);
    clip_image_free(&img);
}

Test(image_errors, truncated_png) {
    uint8_t buf[512];
    size_t n = make_png(buf, 4, 4, 1);
    expect_file_error("trunc.png", buf, n - 12 - 30, NULL, CLIP_ERR_FORMAT, "truncated");
    expect_file_error("header_only.png", buf, 20, NULL, CLIP_ERR_FORMAT, "PNG");
}

Test(image_errors, png_bad_crc) {
    uint8_t buf[512];
    size_t n = make_png(buf, 4, 4, 1);
    buf[8 + 8 + 13] ^= 0x55; /* IHDR CRC: Pillow refuses it too */
    expect_file_error("badcrc.png", buf, n, NULL, CLIP_ERR_FORMAT, "CRC");
}

Test(image_errors, garbage_empty_directory_missing) {
    const char garbage[] = "this is not an image, just some text bytes";
    expect_file_error("garbage.png", garbage, sizeof garbage - 1, NULL, CLIP_ERR_UNSUPPORTED,
                      "unknown image format");
    expect_file_error("empty.jpg", "", 0, NULL, CLIP_ERR_FORMAT, "empty");
    const uint8_t tiff[] = {'I', 'I', 42, 0, 8, 0, 0, 0};
    expect_file_error("x.tif", tiff, sizeof tiff, NULL, CLIP_ERR_UNSUPPORTED, "TIFF");
    const char p3[] = "P3\n1 1\n255\n1 2 3\n";
    expect_file_error("plain.ppm", p3, sizeof p3 - 1, NULL, CLIP_ERR_UNSUPPORTED, "P3");
    char dir[4096];
    tu_tmpdir(dir, sizeof dir);
    clip_image img;
    clip_error e = {0};
    cr_expect_eq(clip_image_decode_file(dir, NULL, &img, &e), CLIP_ERR_IO, "%s", e.msg);
    cr_expect(strstr(e.msg, dir) != NULL, "%s", e.msg);
    rmdir(dir);
    cr_expect_eq(clip_image_decode_file("/nonexistent/clipeval.png", NULL, &img, &e),
                 CLIP_ERR_NOT_FOUND, "%s", e.msg);
    cr_expect_eq(clip_image_decode_memory(NULL, 0, NULL, &img, &e), CLIP_ERR_FORMAT, "%s", e.msg);
}

/* Headers claiming 100000x100000 (or the format's maximum) fail with CLIP_ERR_LIMIT from the
 * header alone: a 30 GB buffer is never requested (that would be CLIP_ERR_NOMEM, or a decode
 * failing on the missing pixel data). How fast they fail is a figure of `make bench`
 * (bench_images.c), never a test: the machines are shared and noisy. */
Test(image_errors, huge_declared_sizes) {
    uint8_t buf[512];
    size_t n = make_png(buf, 100000, 100000, 0);
    expect_file_error("huge.png", buf, n, NULL, CLIP_ERR_LIMIT, "100000x100000");

    static const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x00, 1, 1, 1, 1, 1, 1, 1, 1,
                                  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0xFF, 0xC0, 0x00, 0x0B, 0x08,
                                  0xFD, 0xE8, 0xFD, 0xE8, 0x01, 0x01, 0x11, 0x00, 0xFF, 0xC4, 0x00,
                                  0x14, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                  0x00, 0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00,
                                  0x00, 0x00, 0xFF, 0xD9};
    expect_file_error("huge.jpg", jpg, sizeof jpg, NULL, CLIP_ERR_LIMIT, "65000x65000");

    static const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0, 0,
                                  ',', 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, ';'};
    expect_file_error("huge.gif", gif, sizeof gif, NULL, CLIP_ERR_LIMIT, "65535x65535");

    uint8_t bmp[54] = {'B', 'M'};
    bmp[10] = 54;
    bmp[14] = 40;
    uint32_t big = 100000;
    memcpy(bmp + 18, &big, 4);
    memcpy(bmp + 22, &big, 4);
    bmp[26] = 1;
    bmp[28] = 24;
    expect_file_error("huge.bmp", bmp, sizeof bmp, NULL, CLIP_ERR_LIMIT, "100000x100000");

    /* VP8X canvas 16384x16384 = 268M pixels > 178,956,970 */
    static const uint8_t webp[] = {'R', 'I', 'F', 'F', 22, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P',
                                   '8', 'X', 10, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0x3F, 0, 0xFF, 0x3F, 0};
    expect_file_error("huge.webp", webp, sizeof webp, NULL, CLIP_ERR_LIMIT, "16384x16384");

    /* A caller's smaller limit applies the same way. */
    clip_decode_options o;
    clip_decode_options_init(&o);
    o.max_pixels = 15;
    n = make_png(buf, 4, 4, 1);
    expect_file_error("limit16.png", buf, n, &o, CLIP_ERR_LIMIT, "4x4");
    clip_decode_options_init(&o);
    o.max_file_bytes = 10;
    expect_file_error("limitbytes.png", buf, n, &o, CLIP_ERR_LIMIT, "limit");
}

static void *read_seed(const char *name, size_t *len) {
    char path[4096];
    seed_path(path, sizeof path, name);
    char *data;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(path, 0, &data, len, &e), CLIP_OK, "%s", e.msg);
    return data;
}

/* Every seed cut short at several points is an error, never a crash or a partial image. */
Test(image_errors, truncated_files_of_every_format) {
    static const char *const names[] = {"jpg_ss2.jpg", "jpg_progressive.jpg", "gif_pillow.gif",
                                        "webp_lossy.webp", "webp_lossless.webp", "bmp_16_555.bmp",
                                        "bmp_rle8.bmp", "psd_rle.psd", "png_ct6_16.png",
                                        "p6_1000.ppm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t len;
        uint8_t *data = read_seed(names[i], &len);
        size_t cuts[] = {len / 2, len * 3 / 4, 40};
        for (size_t c = 0; c < 3; c++) {
            char label[128];
            snprintf(label, sizeof label, "cut%zu_%s", cuts[c], names[i]);
            expect_file_error(label, data, cuts[c], NULL, CLIP_ERR_FORMAT, NULL);
        }
        free(data);
    }
}

Test(image_errors, truncated_jpeg_message) {
    size_t len;
    uint8_t *data = read_seed("jpg_ss0.jpg", &len);
    expect_file_error("trunc.jpg", data, len - 200, NULL, CLIP_ERR_FORMAT, "truncated");
    free(data);
}

/* ------------------------------------------------------------------ threads */

typedef struct thread_job {
    const uint8_t *data;
    size_t len;
    float *out;
    clip_status st;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    clip_image_config cfg;
    clip_image_config_default(&cfg);
    for (int rep = 0; rep < 3 && j->st == CLIP_OK; rep++) {
        clip_image img;
        j->st = clip_image_decode_memory(j->data, j->len, NULL, &img, NULL);
        if (j->st == CLIP_OK) {
            j->st = clip_image_preprocess(&img, &cfg, NULL, j->out, NULL, NULL);
            clip_image_free(&img);
        }
    }
    return NULL;
}

/* Decoders and the preprocessor keep no global state: concurrent calls give the serial result. */
Test(threads, image_decode_preprocess_parallel) {
    static const char *const names[] = {"jpg_ss2.jpg", "png_ct6_16.png", "gif_pillow.gif",
                                        "webp_lossy.webp", "bmp_rle4.bmp", "psd_raw.psd"};
    enum { N = sizeof names / sizeof names[0] };
    thread_job jobs[N];
    pthread_t th[N];
    const size_t nf = 3 * 224 * 224;
    for (int i = 0; i < N; i++) {
        jobs[i].data = read_seed(names[i], &jobs[i].len);
        jobs[i].out = malloc(nf * sizeof(float));
        jobs[i].st = CLIP_OK;
        cr_assert_not_null(jobs[i].out);
    }
    for (int i = 0; i < N; i++) cr_assert_eq(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    float *serial = malloc(nf * sizeof(float));
    cr_assert_not_null(serial);
    for (int i = 0; i < N; i++) {
        cr_expect_eq(jobs[i].st, CLIP_OK, "%s", names[i]);
        thread_job one = {jobs[i].data, jobs[i].len, serial, CLIP_OK};
        thread_main(&one);
        cr_expect(!memcmp(serial, jobs[i].out, nf * sizeof(float)), "%s differs", names[i]);
        free((void *)jobs[i].data);
        free(jobs[i].out);
    }
    free(serial);
}

/* Without a clip_error from the caller, a failure still returns its own code (it was reported
 * as CLIP_ERR_NOMEM in places): the same status with and without `err`. */
Test(image_errors, status_without_error_struct) {
    uint8_t buf[512];
    clip_image img;
    clip_error e = {0};
    size_t n = make_png(buf, 100000, 100000, 0);
    cr_expect_eq(clip_image_decode_memory(buf, n, NULL, &img, NULL), CLIP_ERR_LIMIT);
    n = make_png(buf, 4, 4, 1);
    cr_expect_eq(clip_image_decode_memory(buf, n - 42, NULL, &img, NULL), CLIP_ERR_FORMAT);
    static const char *const names[] = {"jpg_ss2.jpg", "gif_pillow.gif", "webp_lossy.webp",
                                        "bmp_rle8.bmp", "psd_rle.psd", "p6_1000.ppm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t len;
        void *data = read_seed(names[i], &len);
        for (size_t cut = 1; cut < len; cut += len / 7 + 1) {
            clip_status with = clip_image_decode_memory(data, cut, NULL, &img, &e);
            if (with == CLIP_OK) clip_image_free(&img);
            clip_status without = clip_image_decode_memory(data, cut, NULL, &img, NULL);
            if (without == CLIP_OK) clip_image_free(&img);
            cr_expect_eq(with, without, "%s cut at %zu: %s with err, %s without", names[i], cut,
                         clip_status_name(with), clip_status_name(without));
        }
        free(data);
    }
}
