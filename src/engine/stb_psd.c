/* stb_psd.c — the only translation unit that compiles stb_image, with every stbi_* function
 * static (STB_IMAGE_STATIC), so libclip.a never clashes with a program's own stb_image. It serves
 * only PSD: every other format has a decoder closer to Pillow in image.c. */
#if defined(__GNUC__)
/* stb_image declares static functions that the formats switched off below never define. */
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#endif
#define STBI_NO_STDIO
#define STBI_NO_JPEG
#define STBI_NO_PNG
#define STBI_NO_BMP
#define STBI_NO_GIF
#define STBI_NO_HDR
#define STBI_NO_PIC
#define STBI_NO_PNM
#define STBI_NO_TGA
#define STBI_NO_LINEAR
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include "stb_image.h"

#include "stb_psd.h"

unsigned char *clip_stb_psd_rgb(const void *data, int len, int *w, int *h, const char **why) {
    int comp = 0;
    unsigned char *px = stbi_load_from_memory(data, len, w, h, &comp, 3);
    if (!px) *why = stbi_failure_reason();
    return px;
}

void clip_stb_free(void *p) { stbi_image_free(p); }
