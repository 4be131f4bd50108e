/* stb_psd.h — the merged RGB image of a PSD file, decoded by stb_image (image.c validates the
 * header and the sizes first). */
#ifndef CLIP_STB_PSD_H
#define CLIP_STB_PSD_H

/* 8-bit RGB, w*h*3 bytes; NULL with a reason in *why on failure. Free with clip_stb_free. */
unsigned char *clip_stb_psd_rgb(const void *data, int len, int *w, int *h, const char **why);
void clip_stb_free(void *p);

#endif
