/* image.c — decoding to 8-bit RGB the way Pillow 9.4 (Debian bookworm, the reference) does
 * Image.open(f).convert("RGB"), spec §C.2.
 *
 * Why each format is decoded the way it is:
 *  - PNG: libpng with no colour transforms; samples are mapped to RGB by the rules of Pillow's
 *    PngImagePlugin + Convert.c (16-bit grey clipped, 16-bit colour keeps the high byte, palette
 *    entries past PLTE are Pillow's grey ramp, transparency ignored).
 *  - JPEG: libjpeg-turbo with the library defaults Pillow uses (ISLOW, fancy upsampling), CMYK
 *    inverted ("CMYK;I") and converted with Pillow's formula.
 *  - GIF: giflib for the LZW data; the canvas (size, fill, palette) follows GifImagePlugin.
 *    stb_image composites frames and zeroes transparent pixels, which Pillow does not.
 *  - WebP: libwebp's animation decoder, as Pillow's _webp module uses it (RGBA, no threads).
 *  - BMP: our own reader transcribing BmpImagePlugin, because stb_image scales 5/6-bit
 *    channels differently and accepts layouts Pillow refuses.
 *  - PNM: our own reader of binary P4/P5/P6, transcribing PpmImagePlugin (header tokens,
 *    maxval scaling with Python's rounding).
 *  - PSD: stb_image, only for the layout where it and Pillow agree (RGB, 8 bits, 3 channels).
 *  - TGA: our own reader transcribing TgaImagePlugin (stb_image's TGA differs from Pillow).
 * The format comes from the leading bytes, never from the file name.
 *
 * Errors: every failure returns a status and a message naming the file and the reason; libpng
 * and libjpeg report errors by longjmp, so each setjmp sits in a function whose mutable state
 * lives in a struct owned by its caller (locals changed after setjmp are indeterminate after
 * longjmp). Nothing is printed; no global mutable state.
 */
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gif_lib.h>
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/demux.h>

#include "clip.h"
#include "util.h"

#include "stb_psd.h"

#define DEFAULT_MAX_FILE_BYTES ((uint64_t)1 << 30)
#define JPEG_MAX_SCANS 1000 /* a real progressive JPEG has ~10; thousands only slow a decoder down */

void clip_decode_options_init(clip_decode_options *o) {
    memset(o, 0, sizeof *o);
    o->max_pixels = CLIP_PILLOW_MAX_PIXELS;
    o->max_file_bytes = DEFAULT_MAX_FILE_BYTES;
}

void clip_image_free(clip_image *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}

/* ------------------------------------------------------------------ shared helpers */

typedef struct dctx {
    const char *name; /* file name, or "<memory>", for messages */
    const uint8_t *data;
    size_t len;
    uint64_t max_pixels;
    int want_exif;   /* apply EXIF orientation */
    int orientation; /* EXIF orientation found by the decoder (0 = none) */
    clip_error *err;  /* never NULL: the caller's, or `own` when the caller passed none */
    clip_error own;   /* so that a failure's code survives without a caller's error */
} dctx;

static uint16_t rd16le(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t rd16be(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32be(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Refuses empty images and those above max_pixels (Pillow's DecompressionBombError), from the
 * header alone, before any pixel buffer exists. */
static clip_status check_size(dctx *d, const char *fmt, uint64_t w, uint64_t h) {
    if (w == 0 || h == 0)
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: %s image has no pixels (%llux%llu)", d->name,
                         fmt, (unsigned long long)w, (unsigned long long)h);
    if (w > INT_MAX || h > INT_MAX || w * h > d->max_pixels)
        return clip_fail(d->err, CLIP_ERR_LIMIT,
                         "%s: %s image is %llux%llu, more than the limit of %llu pixels "
                         "(Pillow's decompression-bomb threshold by default)",
                         d->name, fmt, (unsigned long long)w, (unsigned long long)h,
                         (unsigned long long)d->max_pixels);
    return CLIP_OK;
}

/* check_size() has bounded w*h, so w*h*3 fits a size_t on 64-bit hosts; still checked. */
static uint8_t *alloc_rgb(dctx *d, int w, int h) {
    size_t n;
    if (!clip_mul_size((size_t)w, (size_t)h, &n) || !clip_mul_size(n, 3, &n)) {
        clip_fail(d->err, CLIP_ERR_LIMIT, "%s: image of %dx%d is too large", d->name, w, h);
        return NULL;
    }
    uint8_t *p = malloc(n);
    if (!p)
        clip_fail(d->err, CLIP_ERR_NOMEM, "%s: cannot allocate %zu bytes for %dx%d pixels", d->name,
                  n, w, h);
    return p;
}

/* Pillow's palettes start as the grey ramp (ImagingPaletteNew) and the file's entries overwrite
 * the first ones: an index past the file's palette shows as grey (i, i, i). */
static void palette_ramp(uint8_t pal[256][3]) {
    for (int i = 0; i < 256; i++) pal[i][0] = pal[i][1] = pal[i][2] = (uint8_t)i;
}

/* ------------------------------------------------------------------ EXIF orientation */

/* Tag 0x0112 of IFD0, read as Pillow's Exif.load + ImageFileDirectory_v2 do: a tag whose data
 * is out of range ends the directory, the last copy of a tag wins, the first value of a multi-
 * valued tag is used, and integer, rational and float types all compare equal to 1..8 (Python
 * dict lookup). Anything unreadable means "no orientation". */
static int exif_orientation(const uint8_t *p, size_t n) {
    if (n >= 6 && !memcmp(p, "Exif\0\0", 6)) {
        p += 6;
        n -= 6;
    }
    if (n < 8) return 0;
    int le;
    if (!memcmp(p, "II*\0", 4) || !memcmp(p, "II\0*", 4))
        le = 1;
    else if (!memcmp(p, "MM\0*", 4) || !memcmp(p, "MM*\0", 4) || !memcmp(p, "MM\0+", 4))
        le = 0;
    else
        return 0; /* includes BigTIFF ("II+\0"), which Pillow reads with 8-byte offsets */
#define U16(q) (le ? rd16le(q) : rd16be(q))
#define U32(q) (le ? rd32le(q) : rd32be(q))
    size_t ifd = U32(p + 4);
    if (ifd > n || n - ifd < 2) return 0;
    unsigned count = U16(p + ifd);
    int found = 0;
    unsigned type = 0;
    const uint8_t *val = NULL;
    for (unsigned i = 0; i < count; i++) {
        size_t e = ifd + 2 + (size_t)i * 12;
        if (e > n || n - e < 12) break;
        unsigned tag = U16(p + e), typ = U16(p + e + 2);
        uint32_t cnt = U32(p + e + 4);
        static const unsigned unit[13] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8};
        if (typ == 0 || typ > 12) continue; /* types Pillow does not load are skipped */
        uint64_t size = (uint64_t)cnt * unit[typ];
        const uint8_t *data = p + e + 8;
        if (size > 4) {
            uint32_t off = U32(p + e + 8);
            if (off > n || n - off < size) break; /* Pillow's _safe_read raises: IFD ends */
            data = p + off;
        }
        if (size == 0) continue;
        if (tag == 0x0112) {
            found = 1;
            type = typ;
            val = data;
        }
    }
    if (!found) return 0;
    long long v;
    switch (type) {
    case 3: v = U16(val); break;                     /* SHORT */
    case 4: v = U32(val); break;                     /* LONG */
    case 6: v = (int8_t)val[0]; break;               /* SBYTE */
    case 8: v = (int16_t)U16(val); break;            /* SSHORT */
    case 9: v = (int32_t)U32(val); break;            /* SLONG */
    case 5:                                          /* RATIONAL: IFDRational(6, 1) == 6 */
    case 10: {                                       /* SRATIONAL */
        long long num = type == 5 ? (long long)U32(val) : (long long)(int32_t)U32(val);
        long long den = type == 5 ? (long long)U32(val + 4) : (long long)(int32_t)U32(val + 4);
        if (den == 0 || num % den != 0) return 0;
        v = num / den;
        break;
    }
    case 11: { /* FLOAT: 6.0 == 6 */
        uint32_t bits = U32(val);
        float f;
        memcpy(&f, &bits, 4);
        if (!(f >= 1 && f <= 8) || f != (float)(int)f) return 0;
        v = (int)f;
        break;
    }
    case 12: { /* DOUBLE */
        uint64_t bits = (uint64_t)U32(val + (le ? 4 : 0)) << 32 | U32(val + (le ? 0 : 4));
        double f;
        memcpy(&f, &bits, 8);
        if (!(f >= 1 && f <= 8) || f != (double)(int)f) return 0;
        v = (int)f;
        break;
    }
    default: return 0; /* BYTE, ASCII, UNDEFINED load as bytes/str: never equal to 1..8 */
    }
#undef U16
#undef U32
    return v >= 1 && v <= 8 ? (int)v : 0;
}

/* ImageOps.exif_transpose: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE,
 * 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90 (Pillow rotates counter-clockwise). */
static clip_status apply_orientation(dctx *d, clip_image *img, int orientation) {
    if (orientation < 2 || orientation > 8) return CLIP_OK;
    int w = img->width, h = img->height;
    int swap = orientation >= 5;
    int ow = swap ? h : w, oh = swap ? w : h;
    uint8_t *out = alloc_rgb(d, ow, oh);
    if (!out) return d->err->code;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            switch (orientation) {
            case 2: sx = w - 1 - x; sy = y; break;
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;
            case 4: sx = x; sy = h - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = h - 1 - x; break;
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;
            default: sx = w - 1 - y; sy = x; break; /* 8 */
            }
            memcpy(out + ((size_t)y * ow + x) * 3, img->rgb + ((size_t)sy * w + sx) * 3, 3);
        }
    free(img->rgb);
    img->rgb = out;
    img->width = ow;
    img->height = oh;
    return CLIP_OK;
}

/* ------------------------------------------------------------------ PNG (libpng) */

typedef struct png_state {
    jmp_buf jb;
    char msg[256];
    dctx *d;
    size_t pos;
    png_structp png;
    png_infop info;
    uint8_t *raw;    /* whole image, interlaced files only */
    png_bytep *rows; /* row pointers into raw */
    uint8_t *row;    /* one row, non-interlaced files */
    uint8_t *rgb;
    int width, height;
    int image_done;  /* all rows decoded: later errors (after the image data) are ignored */
    clip_status status; /* set when we, not libpng, stop the decode */
} png_state;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_state *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    longjmp(s->jb, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* Pillow ignores what libpng only warns about */
}

static void png_on_read(png_structp png, png_bytep out, size_t n) {
    png_state *s = png_get_io_ptr(png);
    if (n > s->d->len - s->pos) png_error(png, "file is truncated");
    memcpy(out, s->d->data + s->pos, n);
    s->pos += n;
}

/* One row of raw samples (1/2/4-bit samples already unpacked to bytes) to RGB, by Pillow's
 * rawmodes: "1" 0/255, "L;2" x85, "L;4" x17, "I;16B" clipped to 255, "*;16B" high bytes,
 * "LA"/"RGBA" alpha dropped, "P" palette lookup. */
static void png_row_to_rgb(const uint8_t *s, uint8_t *o, int w, int ct, int depth,
                           const uint8_t pal[256][3]) {
    int x;
    switch (ct) {
    case PNG_COLOR_TYPE_GRAY:
        for (x = 0; x < w; x++) {
            unsigned v;
            switch (depth) {
            case 1: v = s[x] ? 255 : 0; break;
            case 2: v = s[x] * 85u; break;
            case 4: v = s[x] * 17u; break;
            case 8: v = s[x]; break;
            default: v = (unsigned)(s[2 * x] << 8 | s[2 * x + 1]); v = v > 255 ? 255 : v; break;
            }
            o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = (uint8_t)v;
        }
        break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: {
        int step = depth == 16 ? 4 : 2;
        for (x = 0; x < w; x++) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = s[step * x];
        break;
    }
    case PNG_COLOR_TYPE_RGB:
    case PNG_COLOR_TYPE_RGB_ALPHA: {
        int bps = depth == 16 ? 2 : 1, ch = ct == PNG_COLOR_TYPE_RGB ? 3 : 4;
        for (x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) o[3 * x + c] = s[(ch * x + c) * bps];
        break;
    }
    default: /* palette */
        for (x = 0; x < w; x++) memcpy(o + 3 * x, pal[s[x]], 3);
        break;
    }
}

/* Ancillary chunks that cannot change the pixels Pillow produces; skipping them spares
 * libpng's validation (ICC profiles, text decompression). eXIf is added when not wanted. */
static const png_byte PNG_IGNORED[] = "bKGD\0cHRM\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0pHYs\0"
                                      "sBIT\0sCAL\0sPLT\0sRGB\0tEXt\0tIME\0tRNS\0zTXt\0eXIf";

static int png_run(png_state *s) {
    dctx *d = s->d;
    if (setjmp(s->jb)) return s->image_done ? 0 : -1;
    s->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s, png_on_error, png_on_warning);
    if (!s->png) {
        snprintf(s->msg, sizeof s->msg, "cannot create the libpng reader");
        return -1;
    }
    s->info = png_create_info_struct(s->png);
    if (!s->info) png_error(s->png, "cannot create the libpng info struct");
    png_set_read_fn(s->png, s, png_on_read);
    /* Size limits are ours (max_pixels), not libpng's 1e6 x 1e6 default. */
    png_set_user_limits(s->png, 0x7fffffff, 0x7fffffff);
    /* Pillow verifies the CRC of every chunk before the image data, ancillary ones too. */
    png_set_crc_action(s->png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
    png_set_keep_unknown_chunks(s->png, PNG_HANDLE_CHUNK_NEVER, PNG_IGNORED,
                                (int)(sizeof PNG_IGNORED / 5) - (d->want_exif ? 1 : 0));
    png_read_info(s->png, s->info);

    png_uint_32 w, h;
    int depth, ct, interlace;
    png_get_IHDR(s->png, s->info, &w, &h, &depth, &ct, &interlace, NULL, NULL);
    if ((s->status = check_size(d, "PNG", w, h))) return -1;
    s->width = (int)w;
    s->height = (int)h;
    /* Pillow reads the image data without checking the IDAT CRCs. */
    png_set_crc_action(s->png, PNG_CRC_QUIET_USE, PNG_CRC_ERROR_QUIT);
    if (depth < 8) png_set_packing(s->png);
    int passes = png_set_interlace_handling(s->png);
    png_read_update_info(s->png, s->info);
    size_t rowbytes = png_get_rowbytes(s->png, s->info);

    uint8_t pal[256][3];
    palette_ramp(pal);
    if (ct == PNG_COLOR_TYPE_PALETTE) {
        png_colorp plte = NULL;
        int n = 0;
        if (png_get_PLTE(s->png, s->info, &plte, &n) && plte)
            for (int i = 0; i < n && i < 256; i++) {
                pal[i][0] = plte[i].red;
                pal[i][1] = plte[i].green;
                pal[i][2] = plte[i].blue;
            }
    }
    if (!(s->rgb = alloc_rgb(d, s->width, s->height))) {
        s->status = d->err->code;
        return -1;
    }
    size_t out_stride = (size_t)s->width * 3;
    if (passes > 1) {
        /* Adam7: libpng needs the whole image to de-interlace. */
        size_t total;
        if (!clip_mul_size(rowbytes, (size_t)s->height, &total) ||
            !(s->raw = malloc(total ? total : 1)) ||
            !(s->rows = malloc((size_t)s->height * sizeof *s->rows))) {
            s->status = clip_fail(d->err, CLIP_ERR_NOMEM, "%s: PNG: cannot allocate %dx%d rows",
                                  d->name, s->width, s->height);
            return -1;
        }
        for (int y = 0; y < s->height; y++) s->rows[y] = s->raw + (size_t)y * rowbytes;
        png_read_image(s->png, s->rows);
        for (int y = 0; y < s->height; y++)
            png_row_to_rgb(s->rows[y], s->rgb + (size_t)y * out_stride, s->width, ct, depth, pal);
    } else {
        if (!(s->row = malloc(rowbytes ? rowbytes : 1))) {
            s->status = clip_fail(d->err, CLIP_ERR_NOMEM, "%s: PNG: cannot allocate a row",
                                  d->name);
            return -1;
        }
        for (int y = 0; y < s->height; y++) {
            png_read_row(s->png, s->row, NULL);
            png_row_to_rgb(s->row, s->rgb + (size_t)y * out_stride, s->width, ct, depth, pal);
        }
    }
    s->image_done = 1;

    if (d->want_exif) {
        png_uint_32 n = 0;
        png_bytep exif = NULL;
        /* Pillow's PNG getexif() loads the whole file, so an eXIf after IDAT counts; errors in
         * that trailing part are ignored (setjmp above returns success once image_done). */
        if (!png_get_eXIf_1(s->png, s->info, &n, &exif) || !exif) {
            png_read_end(s->png, s->info);
            if (!png_get_eXIf_1(s->png, s->info, &n, &exif)) exif = NULL;
        }
        if (exif) d->orientation = exif_orientation(exif, n);
    }
    return 0;
}

static clip_status decode_png(dctx *d, clip_image *out) {
    /* Pillow checks the IHDR size when the file is opened; libpng would first read every chunk
     * up to the image data. IHDR must be the first chunk, so look at it directly. */
    if (d->len >= 24 && !memcmp(d->data + 12, "IHDR", 4)) {
        clip_status st = check_size(d, "PNG", rd32be(d->data + 16), rd32be(d->data + 20));
        if (st) return st;
    }
    png_state s;
    memset(&s, 0, sizeof s);
    s.d = d;
    int rc = png_run(&s);
    if (s.png) png_destroy_read_struct(&s.png, s.info ? &s.info : NULL, NULL);
    free(s.raw);
    free(s.rows);
    free(s.row);
    if (rc != 0) {
        free(s.rgb);
        if (s.status) return s.status;
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: corrupt or truncated PNG: %s", d->name,
                         s.msg);
    }
    out->width = s.width;
    out->height = s.height;
    out->rgb = s.rgb;
    return CLIP_OK;
}

/* ------------------------------------------------------------------ JPEG (libjpeg-turbo) */

typedef struct jpeg_state {
    struct jpeg_error_mgr pub; /* first: libjpeg hands us &pub */
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 64];
    dctx *d;
    struct jpeg_decompress_struct cinfo;
    struct jpeg_progress_mgr progress;
    int created;
    uint8_t *row, *rgb;
    int width, height;
    clip_status status;
} jpeg_state;

static void jpeg_on_error(j_common_ptr c) {
    jpeg_state *s = (jpeg_state *)c->err;
    (*c->err->format_message)(c, s->msg);
    longjmp(s->jb, 1);
}

/* Pillow feeds libjpeg through a suspending source and raises "image file is truncated" when
 * the file ends before the decoder is done; libjpeg's memory source instead warns
 * JWRN_JPEG_EOF and pads with an EOI marker, so that warning is our truncation error. Other
 * warnings (corrupt data that libjpeg recovers from) are ignored, as Pillow ignores them. */
static void jpeg_on_message(j_common_ptr c, int level) {
    if (level < 0) {
        if (c->err->msg_code == JWRN_JPEG_EOF) {
            jpeg_state *s = (jpeg_state *)c->err;
            snprintf(s->msg, sizeof s->msg, "file is truncated (premature end of JPEG data)");
            longjmp(s->jb, 1);
        }
        c->err->num_warnings++;
    }
}

static void jpeg_on_output(j_common_ptr c) { (void)c; }

static void jpeg_on_progress(j_common_ptr c) {
    if (!c->is_decompressor) return;
    j_decompress_ptr dc = (j_decompress_ptr)c;
    if (dc->input_scan_number > JPEG_MAX_SCANS) {
        jpeg_state *s = (jpeg_state *)c->err;
        snprintf(s->msg, sizeof s->msg, "more than %d scans", JPEG_MAX_SCANS);
        longjmp(s->jb, 1);
    }
}

static int jpeg_run(jpeg_state *s) {
    dctx *d = s->d;
    struct jpeg_decompress_struct *ci = &s->cinfo;
    ci->err = jpeg_std_error(&s->pub);
    s->pub.error_exit = jpeg_on_error;
    s->pub.emit_message = jpeg_on_message;
    s->pub.output_message = jpeg_on_output;
    if (setjmp(s->jb)) return -1;
    jpeg_create_decompress(ci);
    s->created = 1;
    s->progress.progress_monitor = jpeg_on_progress;
    ci->progress = &s->progress;
    jpeg_mem_src(ci, d->data, (unsigned long)d->len);
    if (d->want_exif) jpeg_save_markers(ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(ci, TRUE);

    int nc = ci->num_components;
    if (nc != 1 && nc != 3 && nc != 4) {
        s->status = clip_fail(d->err, CLIP_ERR_UNSUPPORTED,
                              "%s: JPEG with %d components (Pillow handles 1, 3 or 4)", d->name,
                              nc);
        return -1;
    }
    if ((s->status = check_size(d, "JPEG", ci->image_width, ci->image_height))) return -1;
    /* Pillow's settings: L, RGB or CMYK out, library defaults otherwise. */
    ci->out_color_space = nc == 1 ? JCS_GRAYSCALE : nc == 3 ? JCS_RGB : JCS_CMYK;
    ci->dct_method = JDCT_ISLOW;
    ci->do_fancy_upsampling = TRUE;
    ci->scale_num = ci->scale_denom = 1;
    jpeg_start_decompress(ci);

    s->width = (int)ci->output_width;
    s->height = (int)ci->output_height;
    int oc = ci->output_components;
    if (!(s->rgb = alloc_rgb(d, s->width, s->height)) ||
        !(s->row = malloc((size_t)s->width * (size_t)oc))) {
        s->status = clip_fail(d->err, CLIP_ERR_NOMEM, "%s: JPEG: cannot allocate %dx%d pixels",
                              d->name, s->width, s->height);
        return -1;
    }
    while (ci->output_scanline < ci->output_height) {
        uint8_t *o = s->rgb + (size_t)ci->output_scanline * s->width * 3;
        JSAMPROW r = s->row;
        if (jpeg_read_scanlines(ci, &r, 1) != 1) {
            snprintf(s->msg, sizeof s->msg, "decoder stopped before the last row");
            return -1;
        }
        const uint8_t *p = s->row;
        if (oc == 3) {
            memcpy(o, p, (size_t)s->width * 3);
        } else if (oc == 1) {
            for (int x = 0; x < s->width; x++) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = p[x];
        } else {
            /* "CMYK;I" (Adobe polarity: Pillow inverts every sample), then Convert.c cmyk2rgb:
             * nk = 255 - K, channel = nk - MULDIV255(C, nk). */
            for (int x = 0; x < s->width; x++) {
                int k = 255 - p[4 * x + 3], nk = 255 - k;
                for (int c = 0; c < 3; c++) {
                    int v = 255 - p[4 * x + c], t = v * nk + 128;
                    int m = ((t >> 8) + t) >> 8;
                    int r2 = nk - m;
                    o[3 * x + c] = (uint8_t)(r2 < 0 ? 0 : r2 > 255 ? 255 : r2);
                }
            }
        }
    }
    if (d->want_exif) {
        /* Pillow keeps the first APP1 that starts with "Exif\0". */
        for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next)
            if (m->marker == JPEG_APP0 + 1 && m->data_length >= 5 &&
                !memcmp(m->data, "Exif\0", 5)) {
                d->orientation = exif_orientation(m->data, m->data_length);
                break;
            }
    }
    /* No jpeg_finish_decompress: what follows the last scan line (EOI, trailing bytes) does
     * not change the image, and Pillow does not require it either. */
    return 0;
}

static clip_status decode_jpeg(dctx *d, clip_image *out) {
    jpeg_state *s = calloc(1, sizeof *s);
    if (!s) return clip_fail(d->err, CLIP_ERR_NOMEM, "%s: out of memory", d->name);
    s->d = d;
    int rc = jpeg_run(s);
    if (s->created) jpeg_destroy_decompress(&s->cinfo);
    free(s->row);
    clip_status st = CLIP_OK;
    if (rc != 0) {
        free(s->rgb);
        st = s->status ? s->status
                       : clip_fail(d->err, CLIP_ERR_FORMAT, "%s: corrupt or truncated JPEG: %s",
                                   d->name, s->msg);
    } else {
        out->width = s->width;
        out->height = s->height;
        out->rgb = s->rgb;
    }
    free(s);
    return st;
}

/* ------------------------------------------------------------------ GIF (giflib) */

typedef struct mem_reader {
    const uint8_t *data;
    size_t len, pos;
} mem_reader;

static int gif_on_read(GifFileType *g, GifByteType *buf, int n) {
    mem_reader *r = g->UserData;
    size_t k = n < 0 ? 0 : (size_t)n;
    if (k > r->len - r->pos) k = r->len - r->pos;
    memcpy(buf, r->data + r->pos, k);
    r->pos += k;
    return (int)k;
}

/* Frame 0 as GifImagePlugin loads it: the canvas is the logical screen, grown to hold the
 * frame when it sticks out; pixels outside the frame are index 0, or the frame's transparent
 * index when it has one; the frame's local palette, else the global one, else grey (mode L);
 * transparency itself is ignored by convert("RGB"). */
static clip_status decode_gif(dctx *d, clip_image *out) {
    mem_reader rd = {d->data, d->len, 0};
    int gerr = 0;
    clip_status st = CLIP_OK;
    uint8_t *idx = NULL, *rgb = NULL;
    GifFileType *g = DGifOpen(&rd, gif_on_read, &gerr);
    if (!g)
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: corrupt or truncated GIF: %s", d->name,
                         GifErrorString(gerr));
    int transparency = -1;
    for (;;) {
        GifRecordType rt;
        if (DGifGetRecordType(g, &rt) == GIF_ERROR) goto gif_error;
        if (rt == TERMINATE_RECORD_TYPE) {
            st = clip_fail(d->err, CLIP_ERR_FORMAT, "%s: GIF has no image", d->name);
            goto done;
        }
        if (rt == EXTENSION_RECORD_TYPE) {
            int code;
            GifByteType *ext = NULL;
            if (DGifGetExtension(g, &code, &ext) == GIF_ERROR) goto gif_error;
            if (code == GRAPHICS_EXT_FUNC_CODE && ext) {
                /* ext[0] is the block length; Pillow reads flags at [1], the index at [4]. */
                if (ext[0] < 1 || ((ext[1] & 1) && ext[0] < 4)) {
                    st = clip_fail(d->err, CLIP_ERR_FORMAT,
                                   "%s: GIF graphic control block is too short", d->name);
                    goto done;
                }
                if (ext[1] & 1) transparency = ext[4];
            }
            while (ext) {
                if (DGifGetExtensionNext(g, &ext) == GIF_ERROR) goto gif_error;
            }
            continue;
        }
        if (rt != IMAGE_DESC_RECORD_TYPE) continue;
        if (DGifGetImageDesc(g) == GIF_ERROR) goto gif_error;
        break;
    }
    {
        GifImageDesc *im = &g->Image;
        uint64_t x1 = (uint64_t)im->Left + (uint64_t)im->Width;
        uint64_t y1 = (uint64_t)im->Top + (uint64_t)im->Height;
        uint64_t cw = (uint64_t)g->SWidth > x1 ? (uint64_t)g->SWidth : x1;
        uint64_t ch = (uint64_t)g->SHeight > y1 ? (uint64_t)g->SHeight : y1;
        if ((st = check_size(d, "GIF", cw, ch))) goto done;
        int w = (int)cw, h = (int)ch;
        uint8_t pal[256][3];
        palette_ramp(pal);
        const ColorMapObject *cm = im->ColorMap ? im->ColorMap : g->SColorMap;
        if (cm && cm->Colors)
            for (int i = 0; i < cm->ColorCount && i < 256; i++) {
                pal[i][0] = cm->Colors[i].Red;
                pal[i][1] = cm->Colors[i].Green;
                pal[i][2] = cm->Colors[i].Blue;
            }
        idx = malloc((size_t)w * (size_t)h);
        if (!idx) {
            st = clip_fail(d->err, CLIP_ERR_NOMEM, "%s: GIF: cannot allocate %dx%d", d->name, w,
                           h);
            goto done;
        }
        memset(idx, transparency >= 0 ? transparency : 0, (size_t)w * (size_t)h);
        if (im->Width > 0 && im->Height > 0) {
            static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
            int npass = im->Interlace ? 4 : 1;
            for (int p = 0; p < npass; p++)
                for (int y = im->Interlace ? start[p] : 0; y < im->Height;
                     y += im->Interlace ? step[p] : 1) {
                    GifPixelType *row = idx + (size_t)(im->Top + y) * w + im->Left;
                    if (DGifGetLine(g, row, im->Width) == GIF_ERROR) goto gif_error;
                }
        }
        if (!(rgb = alloc_rgb(d, w, h))) {
            st = d->err->code;
            goto done;
        }
        for (size_t i = 0; i < (size_t)w * (size_t)h; i++) memcpy(rgb + 3 * i, pal[idx[i]], 3);
        out->width = w;
        out->height = h;
        out->rgb = rgb;
        rgb = NULL;
        goto done;
    }
gif_error:
    st = clip_fail(d->err, CLIP_ERR_FORMAT, "%s: corrupt or truncated GIF: %s", d->name,
                   GifErrorString(g->Error));
done:
    free(idx);
    free(rgb);
    DGifCloseFile(g, &gerr);
    return st;
}

/* ------------------------------------------------------------------ WebP (libwebp) */

/* Pillow 9.4 (built with WebPAnimDecoder) decodes every WebP, still or animated, through the
 * animation decoder in RGBA without threads: the first frame composited on a transparent
 * canvas; convert("RGB") drops alpha. */
static clip_status decode_webp(dctx *d, clip_image *out) {
    WebPBitstreamFeatures f;
    VP8StatusCode vs = WebPGetFeatures(d->data, d->len, &f);
    if (vs == VP8_STATUS_NOT_ENOUGH_DATA)
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated WebP", d->name);
    if (vs != VP8_STATUS_OK)
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: corrupt WebP (libwebp status %d)", d->name,
                         (int)vs);
    clip_status st = check_size(d, "WebP", (uint64_t)f.width, (uint64_t)f.height);
    if (st) return st;
    WebPData wd = {d->data, d->len};
    WebPAnimDecoderOptions ao;
    if (!WebPAnimDecoderOptionsInit(&ao))
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: libwebp version mismatch", d->name);
    ao.color_mode = MODE_RGBA;
    ao.use_threads = 0;
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, &ao);
    if (!dec)
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: corrupt or truncated WebP", d->name);
    WebPAnimInfo ai;
    uint8_t *buf = NULL, *rgb = NULL;
    int ts = 0;
    if (!WebPAnimDecoderGetInfo(dec, &ai)) {
        st = clip_fail(d->err, CLIP_ERR_FORMAT, "%s: corrupt WebP", d->name);
    } else if (!(st = check_size(d, "WebP", ai.canvas_width, ai.canvas_height))) {
        if (!WebPAnimDecoderGetNext(dec, &buf, &ts) || !buf) {
            st = clip_fail(d->err, CLIP_ERR_FORMAT, "%s: corrupt or truncated WebP image data",
                           d->name);
        } else if (!(rgb = alloc_rgb(d, (int)ai.canvas_width, (int)ai.canvas_height))) {
            st = d->err->code;
        } else {
            size_t n = (size_t)ai.canvas_width * ai.canvas_height;
            for (size_t i = 0; i < n; i++) memcpy(rgb + 3 * i, buf + 4 * i, 3);
            out->width = (int)ai.canvas_width;
            out->height = (int)ai.canvas_height;
            out->rgb = rgb;
            /* Pillow's info["exif"]: the first EXIF chunk of an extended (VP8X) file. */
            const WebPDemuxer *dmux = d->want_exif ? WebPAnimDecoderGetDemuxer(dec) : NULL;
            WebPChunkIterator it;
            if (dmux && WebPDemuxGetChunk(dmux, "EXIF", 1, &it)) {
                d->orientation = exif_orientation(it.chunk.bytes, it.chunk.size);
                WebPDemuxReleaseChunkIterator(&it);
            }
        }
    }
    WebPAnimDecoderDelete(dec);
    return st;
}

/* ------------------------------------------------------------------ BMP (BmpImagePlugin) */

/* Pillow rawmodes a BMP row can be unpacked with. */
typedef enum bmp_raw {
    RAW_1, RAW_P1, RAW_P4, RAW_P, RAW_L, RAW_BGR15, RAW_BGR16, RAW_BGR, RAW_BGRX, RAW_XBGR,
    RAW_RGBX
} bmp_raw;

static int bmp_raw_bits(bmp_raw r) {
    switch (r) {
    case RAW_1: case RAW_P1: return 1;
    case RAW_P4: return 4;
    case RAW_P: case RAW_L: return 8;
    case RAW_BGR15: case RAW_BGR16: return 16;
    case RAW_BGR: return 24;
    default: return 32;
    }
}

static void bmp_unpack(bmp_raw r, const uint8_t *s, uint8_t *o, int w, const uint8_t pal[256][3]) {
    for (int x = 0; x < w; x++, o += 3) {
        unsigned v;
        switch (r) {
        case RAW_1: v = (s[x >> 3] >> (7 - (x & 7))) & 1 ? 255 : 0; o[0] = o[1] = o[2] = (uint8_t)v; break;
        case RAW_P1: memcpy(o, pal[(s[x >> 3] >> (7 - (x & 7))) & 1], 3); break;
        case RAW_P4: memcpy(o, pal[(s[x >> 1] >> ((x & 1) ? 0 : 4)) & 15], 3); break;
        case RAW_P: memcpy(o, pal[s[x]], 3); break;
        case RAW_L: o[0] = o[1] = o[2] = s[x]; break;
        case RAW_BGR15: /* Unpack.c ImagingUnpackBGR15: 5 bits scaled by 255/31 (truncated) */
            v = rd16le(s + 2 * x);
            o[2] = (uint8_t)((v & 31) * 255 / 31);
            o[1] = (uint8_t)(((v >> 5) & 31) * 255 / 31);
            o[0] = (uint8_t)(((v >> 10) & 31) * 255 / 31);
            break;
        case RAW_BGR16: /* ImagingUnpackBGR16: 5/6/5 bits */
            v = rd16le(s + 2 * x);
            o[2] = (uint8_t)((v & 31) * 255 / 31);
            o[1] = (uint8_t)(((v >> 5) & 63) * 255 / 63);
            o[0] = (uint8_t)(((v >> 11) & 31) * 255 / 31);
            break;
        case RAW_BGR: o[0] = s[3 * x + 2]; o[1] = s[3 * x + 1]; o[2] = s[3 * x]; break;
        case RAW_BGRX: o[0] = s[4 * x + 2]; o[1] = s[4 * x + 1]; o[2] = s[4 * x]; break;
        case RAW_XBGR: o[0] = s[4 * x + 3]; o[1] = s[4 * x + 2]; o[2] = s[4 * x + 1]; break;
        case RAW_RGBX: o[0] = s[4 * x]; o[1] = s[4 * x + 1]; o[2] = s[4 * x + 2]; break;
        }
    }
}

/* BmpRleDecoder (Pillow 9.4, Python) transcribed, quirks included: runs are clipped to the row,
 * absolute runs are not, "delta" skips two bytes before reading (right, up), and the pad byte
 * after an absolute run depends on the absolute file offset. Writes at most cap indices. */
static clip_status bmp_rle(dctx *d, size_t pos, int w, int h, int rle4, uint8_t *buf,
                           size_t *produced) {
    size_t cap = (size_t)w * (size_t)h, len = 0, x = 0;
    const uint8_t *p = d->data;
    size_t n = d->len;
#define PUT(v)                          \
    do {                                \
        if (len < cap) buf[len] = (v);  \
        len++;                          \
    } while (0)
    while (len < cap) {
        if (pos + 2 > n) break;
        unsigned num = p[pos], byte = p[pos + 1];
        pos += 2;
        if (num) {
            if (x + num > (size_t)w) num = x < (size_t)w ? (unsigned)(w - x) : 0;
            for (unsigned i = 0; i < num; i++)
                PUT(rle4 ? (uint8_t)(i % 2 == 0 ? byte >> 4 : byte & 15) : (uint8_t)byte);
            x += num;
        } else if (byte == 0) {
            while (len % (size_t)w) PUT(0);
            x = 0;
        } else if (byte == 1) {
            break;
        } else if (byte == 2) {
            if (pos + 2 > n) break;
            pos += 2;
            if (pos + 2 > n)
                return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: BMP RLE delta is truncated",
                                 d->name);
            size_t skip = p[pos] + (size_t)p[pos + 1] * (size_t)w;
            pos += 2;
            if (len < cap) memset(buf + len, 0, skip < cap - len ? skip : cap - len);
            len += skip;
            x = len % (size_t)w;
        } else {
            size_t count = rle4 ? byte / 2 : byte, got = count <= n - pos ? count : n - pos;
            for (size_t i = 0; i < got; i++) {
                if (rle4) {
                    PUT(p[pos + i] >> 4);
                    PUT(p[pos + i] & 15);
                } else {
                    PUT(p[pos + i]);
                }
            }
            pos += got;
            if (got < count) break;
            x += byte;
            if (pos % 2) pos++;
        }
    }
#undef PUT
    *produced = len;
    return CLIP_OK;
}

static clip_status decode_bmp(dctx *d, clip_image *out) {
    const uint8_t *p = d->data;
    size_t n = d->len;
    char fmtmsg[] = "BMP";
    if (n < 18) return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated BMP header", d->name);
    uint64_t offset = rd32le(p + 10);
    uint32_t hs = rd32le(p + 14);
    if (hs != 12 && hs != 40 && hs != 64 && hs != 108 && hs != 124)
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: unsupported BMP header type (%u)",
                         d->name, (unsigned)hs);
    if (n - 18 < hs - 4) return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated BMP header", d->name);
    const uint8_t *hd = p + 18;
    size_t pos = 14 + (size_t)hs;
    uint64_t w, h, colors = 0;
    unsigned bits, compression = 0, pad;
    int direction = -1;
    uint32_t mask[4] = {0, 0, 0, 0};
    if (hs == 12) {
        w = rd16le(hd);
        h = rd16le(hd + 2);
        bits = rd16le(hd + 6);
        pad = 3;
    } else {
        int y_flip = hd[7] == 0xFF;
        direction = y_flip ? 1 : -1;
        w = rd32le(hd);
        h = y_flip ? ((uint64_t)1 << 32) - rd32le(hd + 4) : rd32le(hd + 4);
        bits = rd16le(hd + 10);
        compression = rd32le(hd + 12);
        colors = rd32le(hd + 28);
        pad = 4;
        if (compression == 3) {
            if (hs >= 56) {
                for (int i = 0; i < 4; i++) mask[i] = rd32le(hd + 36 + 4 * i);
            } else {
                if (n - pos < 12)
                    return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated BMP bit masks",
                                     d->name);
                for (int i = 0; i < 3; i++) mask[i] = rd32le(p + pos + 4 * i);
                pos += 12;
            }
        }
    }
    clip_status st = check_size(d, fmtmsg, w, h);
    if (st) return st;
    if (!colors) colors = bits < 64 ? (uint64_t)1 << bits : UINT64_MAX;
    if (offset == 14 + (uint64_t)hs && bits <= 8) offset += 4 * colors;

    bmp_raw raw;
    int palettised = bits == 1 || bits == 4 || bits == 8;
    switch (bits) {
    case 1: raw = RAW_P1; break;
    case 4: raw = RAW_P4; break;
    case 8: raw = RAW_P; break;
    case 16: raw = RAW_BGR15; break;
    case 24: raw = RAW_BGR; break;
    case 32: raw = RAW_BGRX; break;
    default:
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: unsupported BMP pixel depth (%u)",
                         d->name, bits);
    }
    int rle = 0;
    if (compression == 3) {
        /* Pillow's table of supported masks; anything else is refused. */
        uint32_t r = mask[0], g = mask[1], b = mask[2], a = mask[3];
        int ok = 0;
        if (bits == 32) {
            ok = 1;
            if (r == 0xFF0000 && g == 0xFF00 && b == 0xFF && (a == 0 || a == 0xFF000000)) raw = RAW_BGRX;
            else if (r == 0xFF000000 && g == 0xFF0000 && b == 0xFF00 && (a == 0 || a == 0xFF)) raw = RAW_XBGR;
            else if (r == 0xFF && g == 0xFF00 && b == 0xFF0000 && a == 0xFF000000) raw = RAW_RGBX;
            else if (!r && !g && !b && !a) raw = RAW_BGRX;
            else ok = 0;
        } else if (bits == 24) {
            ok = r == 0xFF0000 && g == 0xFF00 && b == 0xFF;
        } else if (bits == 16) {
            ok = 1;
            if (r == 0xF800 && g == 0x7E0 && b == 0x1F) raw = RAW_BGR16;
            else if (r == 0x7C00 && g == 0x3E0 && b == 0x1F) raw = RAW_BGR15;
            else ok = 0;
        }
        if (!ok)
            return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: unsupported BMP bitfields layout",
                             d->name);
    } else if (compression == 1 || compression == 2) {
        rle = (int)compression;
    } else if (compression != 0) {
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: unsupported BMP compression (%u)",
                         d->name, compression);
    }

    uint8_t pal[256][3];
    palette_ramp(pal);
    int mode_grey = 0; /* Pillow's "1" or "L" instead of "P" */
    if (palettised) {
        if (colors == 0 || colors > 65536)
            return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: unsupported BMP palette size (%llu)",
                             d->name, (unsigned long long)colors);
        size_t want = (size_t)(pad * colors), have = pos < n ? n - pos : 0;
        if (have > want) have = want;
        const uint8_t *pb = p + (pos < n ? pos : n);
        pos += have;
        /* A palette that is exactly black/white (2 colours) or the grey ramp makes Pillow
         * drop it and read the pixels as "1" or "L" (bytes, whatever `bits` says). */
        int grey = 1;
        for (uint64_t i = 0; i < colors; i++) {
            unsigned val = colors == 2 ? (i ? 255u : 0u) : (unsigned)(i & 255);
            size_t at = (size_t)i * pad;
            if (at + 3 > have || pb[at] != val || pb[at + 1] != val || pb[at + 2] != val) {
                grey = 0;
                break;
            }
        }
        if (grey) {
            mode_grey = colors == 2 ? 1 : 2;
            raw = colors == 2 ? RAW_1 : RAW_L;
        } else {
            size_t entries = have / pad;
            if (entries > 256)
                return clip_fail(d->err, CLIP_ERR_UNSUPPORTED,
                                 "%s: BMP palette has more than 256 entries", d->name);
            for (size_t i = 0; i < entries; i++) {
                pal[i][0] = pb[i * pad + 2];
                pal[i][1] = pb[i * pad + 1];
                pal[i][2] = pb[i * pad];
            }
        }
    } else if (rle) {
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: RLE-compressed BMP with %u bits",
                         d->name, bits);
    }
    size_t data_at = offset ? (size_t)(offset < n ? offset : n) : pos;
    if (offset > n) data_at = n;
    int iw = (int)w, ih = (int)h;
    uint8_t *rgb = alloc_rgb(d, iw, ih);
    if (!rgb) return d->err->code;

    if (rle) {
        if (mode_grey == 1) {
            free(rgb);
            return clip_fail(d->err, CLIP_ERR_UNSUPPORTED,
                             "%s: RLE BMP with a black/white palette (Pillow cannot read it)",
                             d->name);
        }
        uint8_t *buf = malloc((size_t)iw * (size_t)ih);
        size_t produced = 0;
        if (!buf) {
            free(rgb);
            return clip_fail(d->err, CLIP_ERR_NOMEM, "%s: BMP: out of memory", d->name);
        }
        st = bmp_rle(d, data_at, iw, ih, rle == 2, buf, &produced);
        if (!st && produced < (size_t)iw * (size_t)ih)
            st = clip_fail(d->err, CLIP_ERR_FORMAT, "%s: BMP RLE data ends after %zu of %zu pixels",
                           d->name, produced, (size_t)iw * (size_t)ih);
        if (!st)
            for (int y = 0; y < ih; y++) {
                int oy = direction < 0 ? ih - 1 - y : y;
                bmp_unpack(mode_grey ? RAW_L : RAW_P, buf + (size_t)y * iw,
                           rgb + (size_t)oy * iw * 3, iw, pal);
            }
        free(buf);
        if (st) {
            free(rgb);
            return st;
        }
    } else {
        size_t rowbytes = ((size_t)iw * bmp_raw_bits(raw) + 7) / 8;
        size_t stride = (((size_t)iw * bits + 31) >> 3) & ~(size_t)3;
        if (stride < rowbytes) {
            free(rgb);
            return clip_fail(d->err, CLIP_ERR_UNSUPPORTED,
                             "%s: BMP rows are shorter than Pillow's reading of them (%u bits, "
                             "grey palette)",
                             d->name, bits);
        }
        /* Rows are rowbytes long, stride apart; the last one needs no padding (RawDecode.c). */
        size_t need = (size_t)(ih - 1) * stride + rowbytes;
        if (data_at > n || n - data_at < need) {
            free(rgb);
            return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated BMP pixel data", d->name);
        }
        for (int y = 0; y < ih; y++) {
            int oy = direction < 0 ? ih - 1 - y : y;
            bmp_unpack(raw, p + data_at + (size_t)y * stride, rgb + (size_t)oy * iw * 3, iw, pal);
        }
    }
    out->width = iw;
    out->height = ih;
    out->rgb = rgb;
    return CLIP_OK;
}

/* ------------------------------------------------------------------ PNM (PpmImagePlugin) */

/* PpmImagePlugin._read_token: skip leading whitespace, '#' comments run to CR/LF, a token ends
 * at whitespace (consumed) and has at most 10 characters. Returns the value or -1. */
static long long pnm_token(const uint8_t *p, size_t n, size_t *pos) {
    char tok[16];
    size_t len = 0;
    while (len <= 10) {
        if (*pos >= n) break;
        uint8_t c = p[(*pos)++];
        if (c == ' ' || (c >= 9 && c <= 13)) {
            if (!len) continue;
            break;
        }
        if (c == '#') {
            while (*pos < n && p[*pos] != '\r' && p[*pos] != '\n') (*pos)++;
            if (*pos < n) (*pos)++;
            continue;
        }
        tok[len++] = (char)c;
    }
    if (len == 0 || len > 10) return -1;
    long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (i == 0 && tok[i] == '+' && len > 1) continue;
        if (tok[i] < '0' || tok[i] > '9') return -1;
        v = v * 10 + (tok[i] - '0');
    }
    return v;
}

/* Binary PBM/PGM/PPM (P4, P5, P6). maxval 255 (and 65535 for P5) are read raw; other maxvals
 * go through Pillow's PpmDecoder: min(out_max, round(value / maxval * out_max)) with Python's
 * round-half-even, out_max 65535 for grey above 255 (mode "I", later clipped to 255 by
 * convert("RGB")) and 255 otherwise. The plain-text variants P1-P3 are not supported. */
static clip_status decode_pnm(dctx *d, clip_image *out) {
    const uint8_t *p = d->data;
    size_t n = d->len, pos = 2;
    int kind = p[1] - '0';
    if (kind < 4 || kind > 6)
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED,
                         "%s: plain-text PNM (P%d) is not supported; binary P4/P5/P6 are",
                         d->name, kind);
    if (n < 3 || !(p[2] == ' ' || (p[2] >= 9 && p[2] <= 13)))
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: not a PNM file", d->name);
    pos = 3;
    long long w = pnm_token(p, n, &pos), h = w < 0 ? -1 : pnm_token(p, n, &pos), maxval = 1;
    if (kind != 4 && h >= 0) maxval = pnm_token(p, n, &pos);
    if (w < 0 || h < 0 || maxval < 0)
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: bad or truncated PNM header", d->name);
    if (maxval < 1 || maxval > 65535)
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: PNM maxval %lld is out of range", d->name,
                         maxval);
    clip_status st = check_size(d, "PNM", (uint64_t)w, (uint64_t)h);
    if (st) return st;
    int iw = (int)w, ih = (int)h, bands = kind == 6 ? 3 : 1, bps = maxval > 255 ? 2 : 1;
    uint64_t need = kind == 4 ? (uint64_t)((iw + 7) / 8) * ih : (uint64_t)iw * ih * bands * bps;
    if (need > n - pos) return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated PNM data", d->name);
    uint8_t *rgb = alloc_rgb(d, iw, ih);
    if (!rgb) return d->err->code;
    const uint8_t *s = p + pos;
    double out_max = kind == 5 && maxval > 255 ? 65535.0 : 255.0;
    for (int y = 0; y < ih; y++)
        for (int x = 0; x < iw; x++) {
            uint8_t *o = rgb + ((size_t)y * iw + x) * 3;
            if (kind == 4) { /* "1;I": a set bit is black */
                int bit = (s[(size_t)y * ((iw + 7) / 8) + x / 8] >> (7 - x % 8)) & 1;
                o[0] = o[1] = o[2] = bit ? 0 : 255;
                continue;
            }
            for (int b = 0; b < bands; b++) {
                size_t at = (((size_t)y * iw + x) * bands + b) * bps;
                unsigned v = bps == 1 ? s[at] : (unsigned)(s[at] << 8 | s[at + 1]);
                if (maxval != 255 && !(kind == 5 && maxval == 65535)) {
                    double q = rint((double)v / (double)maxval * out_max);
                    v = q > out_max ? (unsigned)out_max : (unsigned)q;
                }
                o[b] = (uint8_t)(v > 255 ? 255 : v);
            }
            if (bands == 1) o[1] = o[2] = o[0];
        }
    out->width = iw;
    out->height = ih;
    out->rgb = rgb;
    return CLIP_OK;
}

/* ------------------------------------------------------------------ PSD (stb_image) */

/* Pillow opens the merged image of a PSD. stb_image agrees with it for 8-bit RGB with exactly
 * three channels; with an alpha channel stb "un-mattes" the colours, and it refuses other
 * colour modes, so the rest is refused here rather than decoded differently. */
static clip_status decode_psd(dctx *d, clip_image *out) {
    const uint8_t *p = d->data;
    if (d->len < 26) return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated PSD header", d->name);
    unsigned channels = rd16be(p + 12), depth = rd16be(p + 22), mode = rd16be(p + 24);
    uint32_t h = rd32be(p + 14), w = rd32be(p + 18);
    if (rd16be(p + 4) != 1)
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: PSB / unknown PSD version", d->name);
    if (mode != 3 || depth != 8 || channels != 3)
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED,
                         "%s: PSD with colour mode %u, %u bits, %u channels: only 8-bit RGB "
                         "without alpha is supported",
                         d->name, mode, depth, channels);
    clip_status st = check_size(d, "PSD", w, h);
    if (st) return st;
    /* stb_image reads past the end as zeros; Pillow raises. Check that the merged image is all
     * there: three length-prefixed sections, then the compression and the channel data. */
    size_t pos = 26, n = d->len;
    for (int sec = 0; sec < 3; sec++) {
        if (n - pos < 4) goto truncated;
        uint32_t sl = rd32be(p + pos);
        pos += 4;
        if (n - pos < sl) goto truncated;
        pos += sl;
    }
    if (n - pos < 2) goto truncated;
    unsigned compression = rd16be(p + pos);
    pos += 2;
    uint64_t need = 0, rows = (uint64_t)h * channels;
    if (compression == 0) {
        need = (uint64_t)w * h * channels;
    } else if (compression == 1) {
        if ((n - pos) / 2 < rows) goto truncated;
        for (uint64_t r = 0; r < rows; r++) need += rd16be(p + pos + 2 * r);
        need += 2 * rows;
    } else {
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: PSD compression %u", d->name, compression);
    }
    if (need > n - pos) goto truncated;
    if (d->len > INT_MAX) return clip_fail(d->err, CLIP_ERR_LIMIT, "%s: PSD too large", d->name);
    int x = 0, y = 0;
    const char *why = "";
    unsigned char *px = clip_stb_psd_rgb(d->data, (int)d->len, &x, &y, &why);
    if (!px)
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: corrupt or truncated PSD: %s", d->name, why);
    if ((uint32_t)x != w || (uint32_t)y != h) {
        clip_stb_free(px);
        return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: PSD size mismatch", d->name);
    }
    uint8_t *rgb = alloc_rgb(d, x, y);
    if (!rgb) {
        clip_stb_free(px);
        return d->err->code;
    }
    memcpy(rgb, px, (size_t)x * y * 3);
    clip_stb_free(px);
    out->width = x;
    out->height = y;
    out->rgb = rgb;
    return CLIP_OK;
truncated:
    return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated PSD", d->name);
}

/* ------------------------------------------------------------------ TGA */

/* Pillow's "BGR;15"/"BGR;5" unpacking of a little-endian 16-bit pixel: 5 bits per channel,
 * blue lowest, each scaled as v * 255 / 31 (Unpack.c ImagingUnpackBGR15). */
static void tga_bgr15(const uint8_t *q, uint8_t *o) {
    unsigned v = (unsigned)(q[0] | q[1] << 8);
    o[0] = (uint8_t)(((v >> 10) & 31) * 255 / 31);
    o[1] = (uint8_t)(((v >> 5) & 31) * 255 / 31);
    o[2] = (uint8_t)((v & 31) * 255 / 31);
}

/* Targa, transcribing TgaImagePlugin (9.4): there is no magic number, so a file is TGA when its
 * header passes Pillow's own checks (tried last, as Pillow tries its TGA plugin late); image
 * types 1/2/3 and their RLE forms 9/10/11; depths 8 (palette or grey), 16 (BGR;5, or grey +
 * alpha), 24 (BGR), 32 (BGRA, alpha dropped), 1 (bilevel, uncompressed); the origin bits pick
 * bottom-up rows and a horizontal flip; the colour map (16/24 bits; 32 fails in Pillow) comes
 * after `start` black entries, over Pillow's grey ramp; RLE packets may not cross a row end. Returns CLIP_ERR_UNSUPPORTED with `*not_tga` set when
 * the header is not a TGA header at all. */
static clip_status decode_tga(dctx *d, clip_image *out, int *not_tga) {
    const uint8_t *p = d->data;
    size_t n = d->len;
    *not_tga = 1;
    if (n < 18) return CLIP_ERR_UNSUPPORTED;
    unsigned id_len = p[0], cmap_type = p[1], type = p[2], depth = p[16], flags = p[17];
    unsigned w = rd16le(p + 12), h = rd16le(p + 14);
    if (cmap_type > 1 || w == 0 || h == 0 ||
        !(depth == 1 || depth == 8 || depth == 16 || depth == 24 || depth == 32) ||
        !(type == 1 || type == 2 || type == 3 || type == 9 || type == 10 || type == 11))
        return CLIP_ERR_UNSUPPORTED;
    *not_tga = 0;
    unsigned base = type & 7;
    int rle = (type & 8) != 0;
    /* MODES of TgaImagePlugin: other type/depth pairs open but cannot be decoded */
    int known = (base == 1 && depth == 8) || (base == 3 && (depth == 1 || depth == 8 || depth == 16)) ||
                (base == 2 && (depth == 16 || depth == 24 || depth == 32));
    if (!known || (rle && depth == 1))
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: TGA image type %u with %u bits per "
                         "pixel cannot be decoded (Pillow cannot either)", d->name, type, depth);
    clip_status st = check_size(d, "TGA", w, h);
    if (st) return st;
    size_t pos = 18 + id_len;
    uint8_t pal[256][3];
    palette_ramp(pal);
    if (cmap_type) {
        unsigned start = rd16le(p + 3), size = rd16le(p + 5), mdepth = p[7];
        unsigned eb = mdepth == 16 ? 2 : mdepth == 24 ? 3 : mdepth == 32 ? 4 : 0;
        if (eb == 4) /* Pillow 9.4 fails on it: "unrecognized raw mode" (BGRA palette) */
            return clip_fail(d->err, CLIP_ERR_UNSUPPORTED,
                             "%s: TGA with a 32-bit colour map (Pillow cannot read it)", d->name);
        if (eb) {
            /* the plugin prepends `start` zero entries: those indices are black */
            for (unsigned i = 0; i < start && i < 256; i++) pal[i][0] = pal[i][1] = pal[i][2] = 0;
            if (pos > n || (size_t)size * eb > n - pos)
                return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated TGA colour map", d->name);
            for (unsigned i = 0; i < size && start + i < 256; i++) {
                const uint8_t *q = p + pos + (size_t)i * eb;
                if (eb == 2) {
                    tga_bgr15(q, pal[start + i]);
                } else {
                    pal[start + i][0] = q[2];
                    pal[start + i][1] = q[1];
                    pal[start + i][2] = q[0];
                }
            }
            pos += (size_t)size * eb;
        }
    }
    if (pos > n) return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated TGA header", d->name);
    size_t bpp = depth == 1 ? 0 : depth / 8, npix = (size_t)w * h;
    size_t row_bytes = depth == 1 ? (w + 7) / 8 : (size_t)w * bpp;
    /* the pixel stream, in file order (rows bottom-up unless the top-origin bit is set) */
    uint8_t *raw = NULL;
    const uint8_t *src;
    if (!rle) {
        if ((uint64_t)row_bytes * h > n - pos)
            return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated TGA data", d->name);
        src = p + pos;
    } else {
        raw = malloc(npix * bpp);
        if (!raw) return clip_fail(d->err, CLIP_ERR_NOMEM, "%s: out of memory", d->name);
        size_t got = 0;
        while (got < npix) {
            if (pos >= n) {
                free(raw);
                return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated TGA RLE data", d->name);
            }
            unsigned hdr = p[pos++], count = (hdr & 0x7F) + 1;
            /* Pillow 9.4's TgaRleDecode refuses a packet that runs past the end of a row */
            if (got % w + count > w) {
                free(raw);
                return clip_fail(d->err, CLIP_ERR_FORMAT,
                                 "%s: TGA RLE packet crosses a row end (buffer overrun)", d->name);
            }
            size_t take = count;
            if (hdr & 0x80) { /* one pixel, repeated */
                if (bpp > n - pos) {
                    free(raw);
                    return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated TGA RLE data", d->name);
                }
                for (size_t k = 0; k < take; k++) memcpy(raw + (got + k) * bpp, p + pos, bpp);
                pos += bpp;
            } else { /* count literal pixels */
                if ((size_t)count * bpp > n - pos) {
                    free(raw);
                    return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: truncated TGA RLE data", d->name);
                }
                memcpy(raw + got * bpp, p + pos, take * bpp);
                pos += (size_t)count * bpp;
            }
            got += take;
        }
        src = raw;
    }
    uint8_t *rgb = alloc_rgb(d, (int)w, (int)h);
    if (!rgb) {
        free(raw);
        return d->err->code;
    }
    int top_down = (flags & 0x20) != 0, flip_x = (flags & 0x10) != 0;
    for (unsigned r = 0; r < h; r++) {
        const uint8_t *row = src + (size_t)r * row_bytes;
        unsigned y = top_down ? r : h - 1 - r;
        for (unsigned x = 0; x < w; x++) {
            uint8_t *o = rgb + ((size_t)y * w + (flip_x ? w - 1 - x : x)) * 3;
            const uint8_t *q = row + (size_t)x * bpp;
            if (depth == 1) {
                o[0] = o[1] = o[2] = (row[x / 8] >> (7 - x % 8)) & 1 ? 255 : 0;
            } else if (base == 1) {
                memcpy(o, pal[q[0]], 3);
            } else if (base == 3) {
                o[0] = o[1] = o[2] = q[0]; /* "L", or "LA" with its alpha dropped */
            } else if (depth == 16) {
                tga_bgr15(q, o);
            } else {
                o[0] = q[2];
                o[1] = q[1];
                o[2] = q[0];
            }
        }
    }
    free(raw);
    out->width = (int)w;
    out->height = (int)h;
    out->rgb = rgb;
    return CLIP_OK;
}

/* ------------------------------------------------------------------ dispatch */

static clip_status decode_any(dctx *d, clip_image *out) {
    const uint8_t *p = d->data;
    size_t n = d->len;
    if (n == 0) return clip_fail(d->err, CLIP_ERR_FORMAT, "%s: empty file", d->name);
    if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return decode_png(d, out);
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return decode_jpeg(d, out);
    if (n >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6))) return decode_gif(d, out);
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return decode_webp(d, out);
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return decode_bmp(d, out);
    if (n >= 4 && !memcmp(p, "8BPS", 4)) return decode_psd(d, out);
    if (n >= 2 && p[0] == 'P' && p[1] >= '1' && p[1] <= '6') return decode_pnm(d, out);

    const char *known = NULL;
    if (n >= 4 && (!memcmp(p, "II*\0", 4) || !memcmp(p, "MM\0*", 4))) known = "TIFF";
    else if (n >= 12 && !memcmp(p + 4, "ftyp", 4)) known = "HEIF/AVIF";
    else if (n >= 12 && !memcmp(p, "\0\0\0\x0cjP  ", 8)) known = "JPEG 2000";
    else if (n >= 4 && !memcmp(p, "\0\0\1\0", 4)) known = "ICO";
    else if (n >= 4 && !memcmp(p, "%PDF", 4)) known = "PDF";
    if (known)
        return clip_fail(d->err, CLIP_ERR_UNSUPPORTED, "%s: %s images are not supported", d->name,
                         known);
    int not_tga;
    clip_status st = decode_tga(d, out, &not_tga);
    if (!not_tga) return st;
    char hex[3 * 8 + 1] = "";
    for (size_t i = 0; i < n && i < 8; i++) snprintf(hex + 3 * i, 4, "%02x ", p[i]);
    if (hex[0]) hex[strlen(hex) - 1] = '\0';
    return clip_fail(d->err, CLIP_ERR_UNSUPPORTED,
                     "%s: unknown image format (first bytes: %s); supported: PNG, JPEG, GIF, "
                     "WebP, BMP, PNM, PSD, TGA",
                     d->name, hex);
}

static clip_status decode_named(const char *name, const void *data, size_t len,
                                const clip_decode_options *o, clip_image *out, clip_error *err) {
    clip_decode_options def;
    if (!o) {
        clip_decode_options_init(&def);
        o = &def;
    }
    dctx d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.data = data;
    d.len = len;
    d.max_pixels = o->max_pixels ? o->max_pixels : CLIP_PILLOW_MAX_PIXELS;
    d.want_exif = o->exif_transpose != 0;
    d.err = err ? err : &d.own;
    uint64_t max_bytes = o->max_file_bytes ? o->max_file_bytes : DEFAULT_MAX_FILE_BYTES;
    if ((uint64_t)len > max_bytes)
        return clip_fail(err, CLIP_ERR_LIMIT, "%s: %zu bytes, above the limit of %llu bytes", name,
                         len, (unsigned long long)max_bytes);
    clip_image img = {0};
    clip_status st = decode_any(&d, &img);
    if (st == CLIP_OK && d.want_exif && d.orientation > 1) st = apply_orientation(&d, &img, d.orientation);
    if (st != CLIP_OK) {
        clip_image_free(&img);
        return st;
    }
    *out = img;
    return CLIP_OK;
}

clip_status clip_image_decode_memory(const void *data, size_t len, const clip_decode_options *o,
                                     clip_image *out, clip_error *err) {
    if (!out) return clip_fail(err, CLIP_ERR_ARG, "clip_image_decode_memory: NULL output");
    memset(out, 0, sizeof *out);
    if (!data && len) return clip_fail(err, CLIP_ERR_ARG, "clip_image_decode_memory: NULL data");
    return decode_named("<memory>", data ? data : "", len, o, out, err);
}

clip_status clip_image_decode_file(const char *path, const clip_decode_options *o, clip_image *out,
                                   clip_error *err) {
    if (!out || !path) return clip_fail(err, CLIP_ERR_ARG, "clip_image_decode_file: NULL argument");
    memset(out, 0, sizeof *out);
    uint64_t max_bytes = o && o->max_file_bytes ? o->max_file_bytes : DEFAULT_MAX_FILE_BYTES;
    char *data = NULL;
    size_t len = 0;
    clip_status st = clip_read_file(path, (size_t)max_bytes, &data, &len, err);
    if (st) return st;
    st = decode_named(path, data, len, o, out, err);
    free(data);
    return st;
}
