/* pytext.c — Python 3.11's view of Unicode text (see pytext.h). */
#include "pytext.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <utf8proc.h>

#include "json.h"


/* Code points that Unicode 15.0 assigned (utf8proc 2.8 knows them) but Python 3.11's Unicode
 * 14.0 does not: for Python they are unassigned (Cn), so not printable, not digits. */
static const uint32_t unicode15_new[][2] = {
    {0xcf3, 0xcf3},     {0xece, 0xece},     {0x10efd, 0x10eff}, {0x1123f, 0x11241},
    {0x11b00, 0x11b09}, {0x11f00, 0x11f10}, {0x11f12, 0x11f3a}, {0x11f3e, 0x11f59},
    {0x1342f, 0x1342f}, {0x13440, 0x13455}, {0x1b132, 0x1b132}, {0x1b155, 0x1b155},
    {0x1d2c0, 0x1d2d3}, {0x1df25, 0x1df2a}, {0x1e030, 0x1e06d}, {0x1e08f, 0x1e08f},
    {0x1e4d0, 0x1e4f9}, {0x1f6dc, 0x1f6dc}, {0x1f774, 0x1f776}, {0x1f77b, 0x1f77f},
    {0x1f7d9, 0x1f7d9}, {0x1fa75, 0x1fa77}, {0x1fa87, 0x1fa88}, {0x1faad, 0x1faaf},
    {0x1fabb, 0x1fabd}, {0x1fabf, 0x1fabf}, {0x1face, 0x1facf}, {0x1fada, 0x1fadb},
    {0x1fae8, 0x1fae8}, {0x1faf7, 0x1faf8}, {0x2b739, 0x2b739}, {0x31350, 0x323af}};

static int py_unassigned_new(unsigned cp) {
    for (size_t i = 0; i < sizeof unicode15_new / sizeof unicode15_new[0]; i++)
        if (cp >= unicode15_new[i][0] && cp <= unicode15_new[i][1]) return 1;
    return 0;
}

/* The set is fixed since long before Unicode 14.0. */
int py_isspace(unsigned cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20);
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* str.isprintable() per character: not Cc, Cf, Cs, Co, Cn, Zl, Zp, or Zs other than ' '. */
int py_isprintable(unsigned cp) {
    if (cp < 0x80) return cp >= 0x20 && cp < 0x7f;
    if (py_unassigned_new(cp)) return 0;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return 0;
    default: return 1;
    }
}

/* The decimal value of a Unicode Nd character (float() accepts "١٢"), or -1. Unicode encodes
 * every decimal digit set as a contiguous 0..9 run, so the value is the distance from the start
 * of the run of Nd characters, modulo 10 (some runs hold several sets back to back). */
static int py_decimal(unsigned cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9' ? (int)(cp - '0') : -1;
    if (py_unassigned_new(cp) || utf8proc_category((utf8proc_int32_t)cp) != UTF8PROC_CATEGORY_ND)
        return -1;
    unsigned start = cp;
    while (start > 0 && cp - start < 100 &&
           utf8proc_category((utf8proc_int32_t)(start - 1)) == UTF8PROC_CATEGORY_ND &&
           !py_unassigned_new(start - 1))
        start--;
    return (int)((cp - start) % 10);
}

int py_utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        unsigned cp;
        int k = json_utf8_decode(p + i, n - i, &cp);
        if (!k) return 0;
        i += (size_t)k;
    }
    return 1;
}

/* The code point ending at s[end-1] (valid UTF-8 assumed); sets *len. */
static unsigned utf8_last(const char *s, size_t end, int *len) {
    size_t i = end;
    int k = 0;
    while (i > 0 && k < 4) {
        i--;
        k++;
        if (((unsigned char)s[i] & 0xC0) != 0x80) break;
    }
    unsigned cp = 0;
    if (!json_utf8_decode((const unsigned char *)s + i, end - i, &cp)) {
        *len = 1;
        return 0xFFFD;
    }
    *len = (int)(end - i);
    return cp;
}

void py_strip(const char *s, size_t *b, size_t *e) {
    while (*b < *e) {
        unsigned cp;
        int k = json_utf8_decode((const unsigned char *)s + *b, *e - *b, &cp);
        if (!k || !py_isspace(cp)) break;
        *b += (size_t)k;
    }
    while (*e > *b) {
        int k;
        unsigned cp = utf8_last(s, *e, &k);
        if (!py_isspace(cp)) break;
        *e -= (size_t)k;
    }
}

/* Unicode whitespace stripped, Unicode decimal digits count as digits, underscores only between
 * digits, inf/infinity/nan in any case. */
int py_float_from_str(const char *s, size_t len, double *out) {
    size_t b = 0, e = len;
    if (!py_utf8_valid(s, len)) return 0;
    py_strip(s, &b, &e);
    if (b == e) return 0;
    char small[128];
    /* Out of memory on a numeric string this long reads as "not a number": the column stays
     * object, which is also what a failed conversion leaves in pandas. */
    char *a = e - b < sizeof small ? small : malloc(e - b + 1);
    if (!a) return 0;
    size_t n = 0;
    for (size_t i = b; i < e;) { /* to ASCII: digits mapped, anything else non-ASCII rejected */
        unsigned cp;
        int k = json_utf8_decode((const unsigned char *)s + i, e - i, &cp);
        if (cp == 0) { /* a NUL would end the C string early; float() rejects it */
            if (a != small) free(a);
            return 0;
        }
        if (cp < 0x80) {
            a[n++] = (char)cp;
        } else {
            int d = py_decimal(cp);
            if (d < 0) {
                if (a != small) free(a);
                return 0;
            }
            a[n++] = (char)('0' + d);
        }
        i += (size_t)k;
    }
    a[n] = '\0';
    const char *p = a;
    int ok = 0;
    int neg = 0;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (!strcasecmp(p, "inf") || !strcasecmp(p, "infinity")) {
        *out = neg ? -INFINITY : INFINITY;
        ok = 1;
    } else if (!strcasecmp(p, "nan")) {
        *out = NAN;
        ok = 1;
    } else {
        /* digitpart ("." digitpart?)? | "." digitpart, then an optional exponent; the digits are
         * copied without their underscores for strtod (correctly rounded, like Python). */
        char *c = a; /* compacted in place: never longer than the source */
        size_t o = 0;
        const char *q = a;
        if (*q == '+' || *q == '-') c[o++] = *q++;
        int mant = 0, bad = 0;
        for (int part = 0; part < 3 && !bad; part++) {
            if (part == 1) {
                if (*q != '.') continue;
                c[o++] = *q++;
            } else if (part == 2) {
                if (!mant || (*q != 'e' && *q != 'E')) break;
                c[o++] = *q++;
                if (*q == '+' || *q == '-') c[o++] = *q++;
                if (*q < '0' || *q > '9') bad = 1;
            }
            int prev_digit = 0;
            while (!bad) {
                if (*q >= '0' && *q <= '9') {
                    c[o++] = *q++;
                    prev_digit = 1;
                    if (part < 2) mant = 1;
                } else if (*q == '_' && prev_digit && q[1] >= '0' && q[1] <= '9') {
                    q++;
                    prev_digit = 0;
                } else {
                    break;
                }
            }
        }
        if (!bad && mant && *q == '\0') {
            c[o] = '\0';
            *out = strtod(c, NULL);
            ok = 1;
        }
    }
    if (a != small) free(a);
    return ok;
}

int py_blank(const char *s, size_t n) {
    size_t b = 0, e = n;
    py_strip(s, &b, &e);
    return b == e;
}
