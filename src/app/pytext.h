/* pytext.h — Python 3.11's view of Unicode text, where DataFlow's Python code decides what a
 * byte string means: str.isspace(), str.strip(), str.isprintable() (for repr) and float(str).
 * Used by the table readers (pandas semantics) and by the scorer (DataFlow's blank-text rule). */
#ifndef CLIP_PYTEXT_H
#define CLIP_PYTEXT_H

#include <stddef.h>

/* str.isspace() of one code point: bidirectional class WS/B/S or category Zs. */
int py_isspace(unsigned cp);
/* str.isprintable() of one code point (Unicode 14.0, Python 3.11's tables). */
int py_isprintable(unsigned cp);
/* 1 when s[0..n) is valid UTF-8. */
int py_utf8_valid(const char *s, size_t n);
/* str.strip(): [*b, *e) shrinks to the text without leading/trailing whitespace (an invalid
 * byte is not whitespace). */
void py_strip(const char *s, size_t *b, size_t *e);
/* DataFlow's `not text or text.strip() == ""`. */
int py_blank(const char *s, size_t n);
/* float(str): 0 when Python would raise ValueError. */
int py_float_from_str(const char *s, size_t len, double *out);

#endif
