/* table_io.c — streaming table I/O with pandas 1.5.3 semantics (see table_io.h).
 *
 * What pandas does, and where it is reproduced here:
 *
 *  Readers
 *   - jsonl (DataFlow-MM's reader): Python text mode splits lines at \n, \r\n and \r; each line
 *     is str.strip()'d (Unicode whitespace), blank lines are skipped, json.loads parses the rest
 *     and a line that fails is skipped with a warning. pd.DataFrame(records) then infers each
 *     column's dtype with lib.maybe_convert_objects (seen_update, seen_dtype): ints -> int64
 *     (uint64 above 2**63-1, object when mixed with negatives or beyond 64 bits), ints with
 *     None/NaN/missing -> float64, bool -> bool (object with anything else), strings, lists and
 *     dicts -> object. Its order rule (an int after a None is not range-checked) is kept.
 *   - json (pd.read_json): pandas' ujson decoder (NaN -> None, its fast and imprecise float
 *     decoding, its integer overflow rules: ujson_number), the same DataFrame inference, then
 *     _try_convert_data: object columns whose every value float() accepts become float64, and
 *     float64 columns whose values are all integral become int64 (strings "5" become 5).
 *   - csv (pd.read_csv, C engine): the tokenizer state machine (quotes, "" escapes, \r, \n,
 *     \r\n, blank and whitespace-only lines, the BOM, NUL-terminated words), the default NA
 *     strings, column name mangling, and the int64 -> uint64 -> float64 -> bool -> object
 *     cascade with pandas' own integer and float parsers (precise_xstrtod), including the
 *     failures that fall back to object without the NA filter.
 *   - iterrows(): without object or bool columns a row is one numeric array, so ints print as
 *     floats once a float64 column exists (schema_finalize, row_float).
 *  Writers (pandas_compat, or a format change)
 *   - to_json: ujson with double_precision=10 (table_format_double_ujson), NaN/inf -> null,
 *     strings escaped with "\/" and non-ASCII raw, keys without spaces, the indent=2 layout for
 *     json, "\n" after every jsonl record.
 *   - to_csv: Python's csv module, QUOTE_MINIMAL with "\n" line terminator (',', '"' and '\n'
 *     force quotes, '\r' does not; a lone empty field is written ""), floats as repr, NaN/None
 *     empty, lists/dicts as Python repr.
 *
 *  Knowingly not reproduced:
 *   - input pandas or DataFlow refuses as a whole (a later CSV record with too many fields, an
 *     unterminated quote, an integer ujson cannot hold, invalid UTF-8, nesting past Python's
 *     recursion limit, a non-object JSONL line or array element): here one invalid row each;
 *   - pandas' implicit index when the first CSV data row has one field more than the header
 *     (here an invalid row), and its tokenizer backtracking to the previous '\n' when a line
 *     that follows a bare '\r' starts with a space or tab (it re-reads earlier lines: one
 *     9-line test file came back as 131075 rows);
 *   - chunked CSV inference (low_memory: pandas infers per 2**18-row chunk of a narrow table;
 *     here over the whole file) and read_json's date conversion of date-named columns;
 *   - ujson's leniency (raw control characters in strings, leading zeros: here invalid JSON)
 *     and lone surrogate escapes (here U+FFFD);
 *   - Python's isprintable() for characters assigned after Unicode 15.0 (Python 3.11 knows
 *     14.0; the 15.0 additions are listed below, later ones count as printable via utf8proc).
 *  The verbatim writer drops blank lines and invalid rows; everything else is copied.
 */
#include "table_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#include "json.h"
#include "util.h"

#define DEFAULT_MAX_ROW ((size_t)64 << 20)
#define READ_CHUNK ((size_t)1 << 16)

/* ================================================================== formats */

static const char *const format_names[] = {"jsonl", "json", "csv"};

const char *table_format_name(table_format f) {
    return (unsigned)f < 3 ? format_names[f] : "?";
}

int table_format_from_name(const char *name, table_format *fmt) {
    for (int i = 0; i < 3; i++) {
        if (name && strcmp(name, format_names[i]) == 0) {
            *fmt = (table_format)i;
            return 1;
        }
    }
    return 0;
}

clip_status table_format_from_path(const char *path, table_format *fmt, clip_error *err) {
    if (!path || !*path) return clip_fail(err, CLIP_ERR_ARG, "empty table path");
    /* Python's path.split(".")[-1]: the last dot anywhere, even in a folder name. */
    const char *dot = strrchr(path, '.');
    const char *type = dot ? dot + 1 : path;
    if (table_format_from_name(type, fmt)) return CLIP_OK;
    return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                     "%s: unsupported file type '%s' (clipeval reads and writes jsonl, json, csv)",
                     path, type);
}

const char *table_dtype_name(table_dtype d) {
    switch (d) {
    case TD_INT64: return "int64";
    case TD_UINT64: return "uint64";
    case TD_FLOAT64: return "float64";
    case TD_BOOL: return "bool";
    case TD_OBJECT: return "object";
    }
    return "?";
}

/* ================================================================== Unicode, Python's view */

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

/* str.isspace(): bidirectional class WS/B/S or category Zs (fixed since long before 14.0). */
static int py_isspace(unsigned cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20);
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* str.isprintable() per character: not Cc, Cf, Cs, Co, Cn, Zl, Zp, or Zs other than ' '. */
static int py_isprintable(unsigned cp) {
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

static int utf8_valid(const char *s, size_t n) {
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

/* Python's str.strip(): [*b, *e) shrinks to the text without leading/trailing whitespace. */
static void py_strip(const char *s, size_t *b, size_t *e) {
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

/* ================================================================== number formats */

int table_format_double_ujson(double v, char *buf) {
    /* pandas' ultrajsonenc.c Buffer_AppendDoubleUnchecked with doublePrecision = 10. Its
     * threshold "(double)1e16 - 1" rounds to 1e16, so 1e16 itself is still written in full. */
    const double thres_max = (double)1e16 - 1;
    const double thres_min = 1e-15;
    const double pow10 = 1e10;
    int neg = 0;
    if (v < 0) { /* -0.0 is not < 0: it prints "0.0", as in pandas */
        neg = 1;
        v = -v;
    }
    if (!(v <= thres_max) || (v != 0.0 && v < thres_min)) /* NaN too: no cast of a NaN below */
        return snprintf(buf, 64, "%.10g", neg ? -v : v);
    unsigned long long whole = (unsigned long long)v;
    double tmp = (v - (double)whole) * pow10;
    unsigned long long frac = (unsigned long long)tmp;
    double diff = tmp - (double)frac;
    /* ujson's own rounding: half rounds up when frac is odd, or (oddly) when it is 0. */
    if (diff > 0.5)
        frac++;
    else if (diff == 0.5 && (frac == 0 || (frac & 1)))
        frac++;
    if ((double)frac >= pow10) {
        frac = 0;
        whole++;
    }
    char tmpd[40];
    int n = 0;
    if (frac) {
        int count = 10;
        while (frac % 10 == 0) {
            count--;
            frac /= 10;
        }
        do {
            count--;
            tmpd[n++] = (char)('0' + frac % 10);
        } while (frac /= 10);
        while (count-- > 0) tmpd[n++] = '0';
        tmpd[n++] = '.';
    } else {
        tmpd[n++] = '0';
        tmpd[n++] = '.';
    }
    do {
        tmpd[n++] = (char)('0' + whole % 10);
    } while (whole /= 10);
    if (neg) tmpd[n++] = '-';
    for (int i = 0; i < n; i++) buf[i] = tmpd[n - 1 - i];
    buf[n] = '\0';
    return n;
}

/* ================================================================== number parsing */

/* Python's float(str): strip Unicode whitespace, Unicode decimal digits count as digits,
 * underscores only between digits, inf/infinity/nan in any case. Returns 0 when float() would
 * raise ValueError. */
static int py_float_from_str(const char *s, size_t len, double *out) {
    size_t b = 0, e = len;
    if (!utf8_valid(s, len)) return 0;
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

static int isspace_ascii(int c) { return c == ' ' || (unsigned)(c - '\t') < 5; }
static int isdigit_ascii(int c) { return (unsigned)(c - '0') < 10; }

/* pandas 1.5.3 tokenizer.c precise_xstrtod (read_csv's default float converter) with
 * decimal '.', sci 'E', no thousands separator, trailing spaces skipped. Not correctly rounded:
 * up to 17 significant digits (leading zeros included) accumulate in a double, and one
 * multiplication or division by a power of ten scales them, as pandas does. */
static double pd_precise_xstrtod(const char *str, const char **endptr, int *error) {
    static const double e[] = {
        1.,    1e1,   1e2,   1e3,   1e4,   1e5,   1e6,   1e7,   1e8,   1e9,   1e10,  1e11,  1e12,
        1e13,  1e14,  1e15,  1e16,  1e17,  1e18,  1e19,  1e20,  1e21,  1e22,  1e23,  1e24,  1e25,
        1e26,  1e27,  1e28,  1e29,  1e30,  1e31,  1e32,  1e33,  1e34,  1e35,  1e36,  1e37,  1e38,
        1e39,  1e40,  1e41,  1e42,  1e43,  1e44,  1e45,  1e46,  1e47,  1e48,  1e49,  1e50,  1e51,
        1e52,  1e53,  1e54,  1e55,  1e56,  1e57,  1e58,  1e59,  1e60,  1e61,  1e62,  1e63,  1e64,
        1e65,  1e66,  1e67,  1e68,  1e69,  1e70,  1e71,  1e72,  1e73,  1e74,  1e75,  1e76,  1e77,
        1e78,  1e79,  1e80,  1e81,  1e82,  1e83,  1e84,  1e85,  1e86,  1e87,  1e88,  1e89,  1e90,
        1e91,  1e92,  1e93,  1e94,  1e95,  1e96,  1e97,  1e98,  1e99,  1e100, 1e101, 1e102, 1e103,
        1e104, 1e105, 1e106, 1e107, 1e108, 1e109, 1e110, 1e111, 1e112, 1e113, 1e114, 1e115, 1e116,
        1e117, 1e118, 1e119, 1e120, 1e121, 1e122, 1e123, 1e124, 1e125, 1e126, 1e127, 1e128, 1e129,
        1e130, 1e131, 1e132, 1e133, 1e134, 1e135, 1e136, 1e137, 1e138, 1e139, 1e140, 1e141, 1e142,
        1e143, 1e144, 1e145, 1e146, 1e147, 1e148, 1e149, 1e150, 1e151, 1e152, 1e153, 1e154, 1e155,
        1e156, 1e157, 1e158, 1e159, 1e160, 1e161, 1e162, 1e163, 1e164, 1e165, 1e166, 1e167, 1e168,
        1e169, 1e170, 1e171, 1e172, 1e173, 1e174, 1e175, 1e176, 1e177, 1e178, 1e179, 1e180, 1e181,
        1e182, 1e183, 1e184, 1e185, 1e186, 1e187, 1e188, 1e189, 1e190, 1e191, 1e192, 1e193, 1e194,
        1e195, 1e196, 1e197, 1e198, 1e199, 1e200, 1e201, 1e202, 1e203, 1e204, 1e205, 1e206, 1e207,
        1e208, 1e209, 1e210, 1e211, 1e212, 1e213, 1e214, 1e215, 1e216, 1e217, 1e218, 1e219, 1e220,
        1e221, 1e222, 1e223, 1e224, 1e225, 1e226, 1e227, 1e228, 1e229, 1e230, 1e231, 1e232, 1e233,
        1e234, 1e235, 1e236, 1e237, 1e238, 1e239, 1e240, 1e241, 1e242, 1e243, 1e244, 1e245, 1e246,
        1e247, 1e248, 1e249, 1e250, 1e251, 1e252, 1e253, 1e254, 1e255, 1e256, 1e257, 1e258, 1e259,
        1e260, 1e261, 1e262, 1e263, 1e264, 1e265, 1e266, 1e267, 1e268, 1e269, 1e270, 1e271, 1e272,
        1e273, 1e274, 1e275, 1e276, 1e277, 1e278, 1e279, 1e280, 1e281, 1e282, 1e283, 1e284, 1e285,
        1e286, 1e287, 1e288, 1e289, 1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298,
        1e299, 1e300, 1e301, 1e302, 1e303, 1e304, 1e305, 1e306, 1e307, 1e308};
    const int max_digits = 17;
    const char *p = str;
    double number = 0.;
    long long exponent = 0; /* pandas' int could overflow on absurd exponents; this cannot */
    int num_digits = 0, num_decimals = 0, negative = 0;
    while (isspace_ascii((unsigned char)*p)) p++;
    if (*p == '-' || *p == '+') negative = *p++ == '-';
    while (isdigit_ascii((unsigned char)*p)) {
        if (num_digits < max_digits) {
            number = number * 10. + (*p - '0');
            num_digits++;
        } else {
            ++exponent;
        }
        p++;
    }
    if (*p == '.') {
        p++;
        while (num_digits < max_digits && isdigit_ascii((unsigned char)*p)) {
            number = number * 10. + (*p - '0');
            p++;
            num_digits++;
            num_decimals++;
        }
        if (num_digits >= max_digits)
            while (isdigit_ascii((unsigned char)*p)) ++p;
        exponent -= num_decimals;
    }
    if (num_digits == 0) {
        *error = ERANGE;
        *endptr = str;
        return 0.0;
    }
    if (negative) number = -number;
    if (*p == 'e' || *p == 'E') {
        int eneg = 0, nd = 0;
        long long n = 0; /* at most 17 digits */
        ++p;
        if (*p == '-' || *p == '+') eneg = *p++ == '-';
        while (nd < max_digits && isdigit_ascii((unsigned char)*p)) {
            n = n * 10 + (*p - '0');
            nd++;
            p++;
        }
        exponent += eneg ? -n : n;
        if (nd == 0) p--;
    }
    if (exponent > 308) {
        *error = ERANGE;
        *endptr = p;
        return HUGE_VAL;
    } else if (exponent > 0) {
        number *= e[exponent];
    } else if (exponent < -308) {
        if (exponent < -616) {
            number = 0.;
        } else {
            number /= e[-308 - exponent];
            number /= e[308];
        }
    } else {
        number /= e[-exponent];
    }
    if (number == HUGE_VAL || number == -HUGE_VAL) *error = ERANGE;
    while (isspace_ascii((unsigned char)*p)) p++;
    *endptr = p;
    return number;
}

/* read_csv's float column parser: precise_xstrtod, or the inf spellings parsers.pyx accepts. */
static int pd_parse_double(const char *w, double *out) {
    int error = 0;
    const char *end;
    double d = pd_precise_xstrtod(w, &end, &error);
    if (error == 0 && end != w && *end == '\0') {
        *out = d;
        return 1;
    }
    if (!strcasecmp(w, "inf") || !strcasecmp(w, "+inf") || !strcasecmp(w, "infinity") ||
        !strcasecmp(w, "+infinity")) {
        *out = INFINITY;
        return 1;
    }
    if (!strcasecmp(w, "-inf") || !strcasecmp(w, "-infinity")) {
        *out = -INFINITY;
        return 1;
    }
    return 0;
}

enum { PD_OK = 0, PD_INVALID = 1, PD_OVERFLOW = 2 };

/* tokenizer.c str_to_int64: spaces, sign, digits (overflow is noticed before trailing junk),
 * spaces. */
static int pd_str_to_int64(const char *p, int64_t *out) {
    int neg = 0;
    uint64_t v = 0;
    const uint64_t lim_pos = (uint64_t)INT64_MAX, lim_neg = (uint64_t)INT64_MAX + 1;
    while (isspace_ascii((unsigned char)*p)) p++;
    if (*p == '-' || *p == '+') neg = *p++ == '-';
    if (!isdigit_ascii((unsigned char)*p)) return PD_INVALID;
    uint64_t lim = neg ? lim_neg : lim_pos;
    while (isdigit_ascii((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (lim - d) / 10) return PD_OVERFLOW;
        v = v * 10 + d;
        p++;
    }
    while (isspace_ascii((unsigned char)*p)) p++;
    if (*p) return PD_INVALID;
    if (neg)
        *out = v == lim_neg ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return PD_OK;
}

/* tokenizer.c str_to_uint64: a leading '-' only records "a signed value was seen". */
static int pd_str_to_uint64(const char *p, uint64_t *out, int *seen_sint, int *seen_uint) {
    uint64_t v = 0;
    while (isspace_ascii((unsigned char)*p)) p++;
    if (*p == '-') {
        *seen_sint = 1;
        *out = 0;
        return PD_OK;
    }
    if (*p == '+') p++;
    if (!isdigit_ascii((unsigned char)*p)) return PD_INVALID;
    while (isdigit_ascii((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return PD_OVERFLOW;
        v = v * 10 + d;
        p++;
    }
    while (isspace_ascii((unsigned char)*p)) p++;
    if (*p) return PD_INVALID;
    if (v > (uint64_t)INT64_MAX) *seen_uint = 1;
    *out = v;
    return PD_OK;
}

/* read_csv's bool words: the true/false sets, then a case-insensitive TRUE/FALSE. */
static int pd_parse_bool(const char *w, int *out) {
    if (!strcasecmp(w, "true")) {
        *out = 1;
        return 1;
    }
    if (!strcasecmp(w, "false")) {
        *out = 0;
        return 1;
    }
    return 0;
}

/* pandas 1.5.3 parsers.pyx STR_NA_VALUES ("None" joined the list only in pandas 2.0). */
static int pd_is_na(const char *w) {
    static const char *const na[] = {"",        "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN",
                                     "-NaN",    "-nan", "1.#IND",   "1.#QNAN", "<NA>", "N/A",
                                     "NA",      "NULL", "NaN",      "n/a",     "nan",  "null"};
    for (size_t i = 0; i < sizeof na / sizeof na[0]; i++)
        if (!strcmp(w, na[i])) return 1;
    return 0;
}

/* A number the way pandas' ujson decoder (read_json) produces it. */
typedef enum uj_kind { UJ_INT, UJ_UINT, UJ_DOUBLE, UJ_NONE, UJ_ERROR } uj_kind;
typedef struct uj_num {
    uj_kind kind;
    int64_t i;
    uint64_t u;
    double d;
    const char *msg;
} uj_num;

/* ultrajsondec.c decode_numeric without preciseFloat: integer digits in a uint64 whose overflow
 * checks only catch some wraparounds (so 30000000000000000000 silently becomes
 * 11553255926290448384, as in pandas), at most 15 fraction digits summed as a double, and
 * pow(10, exponent). NaN decodes to None. Input: a JSON number literal json.c accepted. */
static void ujson_number(const char *s, size_t n, uj_num *out) {
    static const double neg_pow10[] = {1.0,      0.1,       0.01,       0.001,      0.0001,
                                       0.00001,  0.000001,  0.0000001,  0.00000001, 0.000000001,
                                       1e-10,    1e-11,     1e-12,      1e-13,      1e-14,
                                       1e-15};
    size_t i = 0;
    int neg = 0;
    memset(out, 0, sizeof *out);
    if (i < n && s[i] == 'N') {
        out->kind = UJ_NONE;
        return;
    }
    if (i < n && s[i] == '-') {
        neg = 1;
        i++;
    }
    if (i < n && s[i] == 'I') {
        out->kind = UJ_DOUBLE;
        out->d = neg ? -INFINITY : INFINITY;
        return;
    }
    const uint64_t neg_limit = (uint64_t)INT64_MAX + 1;
    uint64_t v = 0;
    for (; i < n && isdigit_ascii((unsigned char)s[i]); i++) {
        uint64_t prev = v;
        v = v * 10u + (uint64_t)(s[i] - '0');
        if (!neg && prev > v) {
            out->kind = UJ_ERROR;
            out->msg = "Value is too big!";
            return;
        }
        if (neg && v > neg_limit) {
            out->kind = UJ_ERROR;
            out->msg = "Value is too small";
            return;
        }
    }
    if (i == n) {
        if (!neg && (v & ((uint64_t)1 << 63))) {
            out->kind = UJ_UINT;
            out->u = v;
        } else {
            out->kind = UJ_INT;
            out->i = neg ? (v == neg_limit ? INT64_MIN : -(int64_t)v) : (int64_t)v;
        }
        return;
    }
    double frc = 0.0;
    int count = 0;
    if (s[i] == '.') {
        for (i++; i < n && isdigit_ascii((unsigned char)s[i]); i++) {
            if (count < 15) {
                frc = frc * 10.0 + (double)(s[i] - '0');
                count++;
            }
        }
    }
    double d = ((double)v + frc * neg_pow10[count]) * (neg ? -1.0 : 1.0);
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        double eneg = 1.0, ev = 0.0;
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) eneg = s[i++] == '-' ? -1.0 : 1.0;
        for (; i < n && isdigit_ascii((unsigned char)s[i]); i++) ev = ev * 10.0 + (double)(s[i] - '0');
        d = d * pow(10.0, ev * eneg);
    }
    out->kind = UJ_DOUBLE;
    out->d = d;
}

/* ================================================================== buffered input */

/* One CSV field of the current record: its raw bytes (quotes included) and decoded value. */
typedef struct csv_field {
    size_t raw_start, raw_end; /* within src.raw */
    size_t val_start, val_len; /* within src.vals; val_len stops at a NUL, like pandas' words */
} csv_field;

enum { JS_START, JS_FIRST, JS_AFTER, JS_DONE };

typedef struct src {
    int fd;
    char *path;
    table_format fmt;
    size_t max_row;
    int max_depth;
    char *buf;
    size_t pos, len;
    int eof;
    size_t line;     /* physical line of the next byte (universal newlines) */
    size_t any;      /* bytes consumed so far (an empty file has none) */
    /* the current record */
    clip_buf raw;    /* JSONL line / CSV record (no terminator) / JSON element */
    int too_long;    /* raw holds only the first max_row bytes */
    size_t rec_line; /* line of its first byte */
    size_t rec_no;   /* 1-based record number (JSONL: lines, CSV: records, JSON: elements) */
    char term[3];    /* JSONL/CSV line terminator: "\n", "\r\n", "\r" or "" at the end */
    /* JSON arrays: head "...[", the bytes before each element (",\n  "), tail "\n]\n" */
    int jstate;
    clip_buf head, sep, tail;
    /* CSV */
    csv_field *fields;
    size_t nfields, fcap, fkeep; /* fields stored only up to fkeep (more fields = invalid) */
    size_t fstop;                /* this record's limit: fkeep, lowered once it is too long */
    clip_buf vals;
    int unterminated; /* EOF inside a quoted field */
    int bom;
} src;

static clip_status src_open(src *s, const char *path, table_format fmt, const table_limits *lim,
                            clip_error *err) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->fmt = fmt;
    s->max_row = lim && lim->max_row_bytes ? lim->max_row_bytes : DEFAULT_MAX_ROW;
    s->max_depth = lim && lim->max_depth > 0 ? lim->max_depth : JSON_DEFAULT_MAX_DEPTH;
    s->line = 1;
    s->fkeep = (size_t)-1;
    s->path = strdup(path);
    s->buf = malloc(READ_CHUNK);
    if (!s->path || !s->buf) return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", path);
    s->fd = open(path, O_RDONLY);
    if (s->fd < 0) {
        int e = errno;
        return clip_fail(err, e == ENOENT ? CLIP_ERR_NOT_FOUND : CLIP_ERR_IO, "%s: cannot open: %s",
                         path, strerror(e));
    }
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return clip_fail(err, CLIP_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return clip_fail(err, CLIP_ERR_IO, "%s: is a folder, not a %s file", path,
                         table_format_name(fmt));
    return CLIP_OK;
}

static void src_close(src *s) {
    if (s->fd >= 0) close(s->fd);
    free(s->path);
    free(s->buf);
    free(s->fields);
    clip_buf_free(&s->raw);
    clip_buf_free(&s->head);
    clip_buf_free(&s->sep);
    clip_buf_free(&s->tail);
    clip_buf_free(&s->vals);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

/* The next byte without consuming it: 0..255, -1 at the end, -2 on a read error (err set). */
static int src_peek(src *s, clip_error *err) {
    if (s->pos < s->len) return (unsigned char)s->buf[s->pos];
    if (s->eof) return -1;
    for (;;) {
        ssize_t r = read(s->fd, s->buf, READ_CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            clip_fail(err, CLIP_ERR_IO, "%s: read error: %s", s->path, strerror(errno));
            return -2;
        }
        s->pos = 0;
        s->len = (size_t)r;
        if (r == 0) {
            s->eof = 1;
            return -1;
        }
        return (unsigned char)s->buf[0];
    }
}

/* Consumes the byte src_peek returned, counting lines the way Python's universal newlines do
 * (\n, \r\n and a lone \r each end one line). */
static clip_status src_take(src *s, int c, clip_error *err) {
    s->pos++;
    s->any++;
    if (c == '\n') {
        s->line++;
    } else if (c == '\r') {
        int n = src_peek(s, err);
        if (n == -2) return CLIP_ERR_IO;
        if (n != '\n') s->line++;
    }
    return CLIP_OK;
}

/* Appends to the current record, keeping only the first max_row bytes. */
static clip_status raw_put(src *s, const char *p, size_t n, clip_error *err) {
    if (s->raw.len + n > s->max_row) {
        s->too_long = 1;
        n = s->max_row > s->raw.len ? s->max_row - s->raw.len : 0;
    }
    if (n && !clip_buf_append(&s->raw, p, n))
        return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
    return CLIP_OK;
}

static void rec_reset(src *s) {
    s->raw.len = 0;
    if (s->raw.data) s->raw.data[0] = '\0';
    s->too_long = 0;
    s->term[0] = '\0';
    s->nfields = 0;
    s->fstop = s->fkeep;
    s->vals.len = 0;
    s->unterminated = 0;
}

/* The length of the run of buffered bytes from pos that holds none of stop[0..nstop): the
 * tokenizers copy such runs in one go instead of byte by byte. Never crosses a line break
 * unless one is listed, so src_take keeps counting lines. */
static size_t src_run(const src *s, const char *stop, int nstop) {
    size_t i = s->pos;
    while (i < s->len) {
        char c = s->buf[i];
        int hit = 0;
        for (int k = 0; k < nstop && !hit; k++) hit = c == stop[k];
        if (hit) break;
        i++;
    }
    return i - s->pos;
}

/* Consumes n ordinary bytes from the buffer into the record. */
static clip_status src_copy_run(src *s, size_t n, clip_error *err) {
    clip_status st = raw_put(s, s->buf + s->pos, n, err);
    s->pos += n;
    s->any += n;
    return st;
}

/* ------------------------------------------------------------------ JSONL lines */

/* Reads one physical line (universal newlines) into raw; *got = 0 at the end of the file. */
static clip_status jsonl_next_line(src *s, int *got, clip_error *err) {
    rec_reset(s);
    *got = 0;
    s->rec_line = s->line;
    int any = 0;
    for (;;) {
        if (s->pos == s->len) {
            int c = src_peek(s, err);
            if (c == -2) return CLIP_ERR_IO;
            if (c == -1) break;
        }
        /* Copy the run up to the next line break in one go. */
        size_t i = s->pos;
        while (i < s->len && s->buf[i] != '\n' && s->buf[i] != '\r') i++;
        if (i > s->pos) {
            any = 1;
            clip_status st = raw_put(s, s->buf + s->pos, i - s->pos, err);
            if (st) return st;
            s->any += i - s->pos;
            s->pos = i;
            continue;
        }
        int c = (unsigned char)s->buf[s->pos];
        clip_status st = src_take(s, c, err);
        if (st) return st;
        any = 1;
        if (c == '\r') {
            int n = src_peek(s, err);
            if (n == -2) return CLIP_ERR_IO;
            if (n == '\n') {
                if ((st = src_take(s, n, err))) return st;
                memcpy(s->term, "\r\n", 3);
            } else {
                memcpy(s->term, "\r", 2);
            }
        } else {
            memcpy(s->term, "\n", 2);
        }
        break;
    }
    if (!any) return CLIP_OK;
    s->rec_no++;
    *got = 1;
    return CLIP_OK;
}

/* ------------------------------------------------------------------ JSON array elements */

static int json_ws(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static clip_status buf_put(src *s, clip_buf *b, int c, clip_error *err) {
    if (b->len >= s->max_row)
        return clip_fail(err, CLIP_ERR_LIMIT,
                         "%s: line %zu: more than %zu bytes of whitespace between array elements",
                         s->path, s->line, s->max_row);
    if (!clip_buf_putc(b, (char)c)) return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
    return CLIP_OK;
}

/* Reads JSON whitespace into b; returns the next byte (not consumed), -1 at the end, -2 on error. */
static int json_skip_ws(src *s, clip_buf *b, clip_error *err) {
    for (;;) {
        int c = src_peek(s, err);
        if (c < 0 || !json_ws(c)) return c;
        if (buf_put(s, b, c, err) || src_take(s, c, err)) return -2;
    }
}

/* Reads the rest of the file after the closing ']' into tail: only whitespace may follow. */
static clip_status json_read_tail(src *s, clip_error *err) {
    int c = json_skip_ws(s, &s->tail, err);
    if (c == -2) return err ? err->code : CLIP_ERR_IO;
    if (c >= 0)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: line %zu: extra data after the JSON array",
                         s->path, s->line);
    s->jstate = JS_DONE;
    return CLIP_OK;
}

/* Reads the next top-level element of the array into raw (the bytes before it into sep).
 * Element boundaries come from bracket and string tracking only; whether the element is valid
 * JSON is decided later by the parser, so a bad element is one invalid row while a broken array
 * (no '[', a missing comma, a trailing comma, an early end) is final. */
static clip_status json_next_elem(src *s, int *got, clip_error *err) {
    clip_status st;
    int c;
    *got = 0;
    rec_reset(s);
    s->sep.len = 0;
    if (s->jstate == JS_DONE) return CLIP_OK;
    if (s->jstate == JS_START) {
        c = json_skip_ws(s, &s->head, err);
        if (c == -2) return err ? err->code : CLIP_ERR_IO;
        if (c == -1)
            return clip_fail(err, CLIP_ERR_FORMAT, "%s: empty file (no JSON array)", s->path);
        if (c != '[')
            return clip_fail(err, CLIP_ERR_FORMAT,
                             "%s: line %zu: expected a JSON array of records ('['), found %s",
                             s->path, s->line, c == 0xEF ? "a UTF-8 BOM" : "something else");
        if ((st = buf_put(s, &s->head, c, err)) || (st = src_take(s, c, err))) return st;
        s->jstate = JS_FIRST;
    }
    c = json_skip_ws(s, &s->sep, err);
    if (c == -2) return err ? err->code : CLIP_ERR_IO;
    if (s->jstate == JS_AFTER) {
        if (c == ',') {
            if ((st = buf_put(s, &s->sep, c, err)) || (st = src_take(s, c, err))) return st;
            c = json_skip_ws(s, &s->sep, err);
            if (c == -2) return err ? err->code : CLIP_ERR_IO;
            if (c == ']')
                return clip_fail(err, CLIP_ERR_FORMAT,
                                 "%s: line %zu: trailing comma after element %zu of the JSON array",
                                 s->path, s->line, s->rec_no);
        } else if (c != ']' && c != -1) {
            return clip_fail(err, CLIP_ERR_FORMAT,
                             "%s: line %zu: expected ',' or ']' after element %zu of the JSON array",
                             s->path, s->line, s->rec_no);
        }
    }
    if (c == -1)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: line %zu: the JSON array is not closed",
                         s->path, s->line);
    if (c == ']' && (s->jstate == JS_FIRST || s->jstate == JS_AFTER)) {
        /* The tail keeps everything after the last element: whitespace, ']' and what follows. */
        if (s->sep.len && !clip_buf_append(&s->tail, s->sep.data, s->sep.len))
            return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
        s->sep.len = 0;
        if ((st = buf_put(s, &s->tail, c, err)) || (st = src_take(s, c, err))) return st;
        return json_read_tail(s, err);
    }
    /* One element: containers end at their matching bracket, scalars at ',', ']' or space. */
    s->rec_no++;
    s->rec_line = s->line;
    size_t depth = 0;
    int in_str = 0, esc = 0, started = 0;
    for (;;) {
        c = src_peek(s, err);
        if (c == -2) return CLIP_ERR_IO;
        if (c == -1)
            return clip_fail(err, CLIP_ERR_FORMAT,
                             "%s: element %zu (line %zu): the file ends inside this element",
                             s->path, s->rec_no, s->rec_line);
        if (!in_str && depth == 0 && started && (c == ',' || c == ']' || json_ws(c))) break;
        int done = 0;
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"') {
                in_str = 0;
                done = depth == 0;
            }
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) break; /* a stray closer: the parser will reject the element */
            done = --depth == 0;
        }
        char ch = (char)c;
        if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
        started = 1;
        if (done) break;
        size_t run = in_str ? (esc ? 0 : src_run(s, "\"\\\n\r", 4))
                            : src_run(s, "\"{}[], \t\n\r", 11);
        if (run && (st = src_copy_run(s, run, err))) return st;
    }
    s->jstate = JS_AFTER;
    *got = 1;
    return CLIP_OK;
}

/* ------------------------------------------------------------------ CSV records */

enum {
    CS_START_RECORD,
    CS_WHITESPACE_LINE,
    CS_EAT_CRNL_NOP,
    CS_START_FIELD,
    CS_IN_FIELD,
    CS_IN_QUOTED,
    CS_QUOTE_IN_QUOTED,
    CS_EAT_CRNL
};

static clip_status csv_begin_field(src *s, clip_error *err) {
    if (s->too_long && s->fstop > s->nfields) s->fstop = s->nfields; /* invalid: count only */
    if (s->nfields < s->fstop) {
        if (s->nfields == s->fcap) {
            size_t ncap = s->fcap ? s->fcap * 2 : 16;
            csv_field *nf = realloc(s->fields, ncap * sizeof *nf);
            if (!nf) return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
            s->fields = nf;
            s->fcap = ncap;
        }
        csv_field *f = &s->fields[s->nfields];
        f->raw_start = s->raw.len;
        f->val_start = s->vals.len;
        f->raw_end = f->val_len = 0;
    }
    return CLIP_OK;
}

/* Closes the current field; its value is NUL-terminated in vals (pandas' words are C strings,
 * so a NUL inside a field also ends its value there). */
static clip_status csv_end_field(src *s, clip_error *err) {
    if (s->nfields < s->fstop) {
        csv_field *f = &s->fields[s->nfields];
        f->raw_end = s->raw.len;
        if (!clip_buf_putc(&s->vals, '\0'))
            return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
        f->val_len = strlen(s->vals.data + f->val_start);
    }
    s->nfields++;
    return CLIP_OK;
}

static clip_status csv_val(src *s, int c, clip_error *err) {
    if (s->nfields >= s->fstop || s->too_long) return CLIP_OK;
    if (!clip_buf_putc(&s->vals, (char)c))
        return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
    return CLIP_OK;
}

/* Copies the run of field bytes up to the next byte in stop into the record and the value. */
static clip_status csv_copy_run(src *s, const char *stop, clip_error *err) {
    size_t n = src_run(s, stop, 3);
    if (!n) return CLIP_OK;
    if (s->nfields < s->fstop && !s->too_long && !clip_buf_append(&s->vals, s->buf + s->pos, n))
        return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", s->path);
    return src_copy_run(s, n, err);
}

/* Reads one CSV record with the pandas C tokenizer's rules for read_csv's defaults (',' and '"',
 * doublequote, lineterminator None so \n, \r\n and \r all end records, skip_blank_lines). The
 * raw bytes exclude the terminator; blank and whitespace-only lines between records are
 * skipped. *got = 0 at the end of the file. */
static clip_status csv_next_record(src *s, int *got, clip_error *err) {
    clip_status st;
    int state = CS_START_RECORD;
    rec_reset(s);
    *got = 0;
    if (s->any == 0) { /* CHECK_FOR_BOM: only at the very start of the file */
        int c = src_peek(s, err);
        if (c == -2) return CLIP_ERR_IO;
        if (c == 0xEF && s->len - s->pos >= 3 && (unsigned char)s->buf[s->pos + 1] == 0xBB &&
            (unsigned char)s->buf[s->pos + 2] == 0xBF) {
            s->pos += 3;
            s->any += 3;
            s->bom = 1;
        }
    }
    for (;;) {
        int c = src_peek(s, err);
        if (c == -2) return CLIP_ERR_IO;
        char ch = (char)c;
        switch (state) {
        case CS_START_RECORD:
            if (c == -1) return CLIP_OK;
            if (c == '\n' || c == '\r') {
                if ((st = src_take(s, c, err))) return st;
                state = c == '\r' ? CS_EAT_CRNL_NOP : CS_START_RECORD;
            } else if (c == ' ' || c == '\t') {
                s->rec_line = s->line;
                if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
                state = CS_WHITESPACE_LINE;
            } else {
                s->rec_line = s->line;
                state = CS_START_FIELD;
            }
            continue;
        case CS_WHITESPACE_LINE:
            if (c == -1) return CLIP_OK;
            if (c == '\n' || c == '\r') {
                s->raw.len = 0;
                s->too_long = 0;
                if ((st = src_take(s, c, err))) return st;
                state = c == '\r' ? CS_EAT_CRNL_NOP : CS_START_RECORD;
            } else if (c == ' ' || c == '\t') {
                if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
            } else {
                /* Not blank after all: pandas backtracks, so the spaces open the first field. */
                if ((st = csv_begin_field(s, err))) return st;
                if (s->nfields < s->fstop) {
                    s->fields[0].raw_start = 0;
                    for (size_t i = 0; i < s->raw.len; i++)
                        if ((st = csv_val(s, s->raw.data[i], err))) return st;
                }
                state = CS_IN_FIELD;
            }
            continue;
        case CS_EAT_CRNL_NOP:
            if (c == -1) return CLIP_OK;
            /* After a blank \r line pandas swallows a following '\n', and also a ','. */
            if (c == '\n' || c == ',') {
                if ((st = src_take(s, c, err))) return st;
            }
            state = CS_START_RECORD;
            continue;
        case CS_START_FIELD:
            if ((st = csv_begin_field(s, err))) return st;
            if (c == -1 || c == '\n' || c == '\r') {
                if ((st = csv_end_field(s, err))) return st;
                goto end_of_record;
            }
            if (c == ',' && (st = csv_end_field(s, err))) return st; /* an empty field */
            if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
            if (c == '"') {
                state = CS_IN_QUOTED;
            } else if (c != ',') {
                if ((st = csv_val(s, c, err)) || (st = csv_copy_run(s, ",\n\r", err))) return st;
                state = CS_IN_FIELD;
            }
            continue;
        case CS_IN_FIELD:
        case CS_QUOTE_IN_QUOTED:
            if (c == -1 || c == '\n' || c == '\r') {
                if ((st = csv_end_field(s, err))) return st;
                goto end_of_record;
            }
            if (c == ',' && (st = csv_end_field(s, err))) return st; /* the comma is not in it */
            if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
            if (c == ',') {
                state = CS_START_FIELD;
            } else if (c == '"' && state == CS_QUOTE_IN_QUOTED) {
                if ((st = csv_val(s, c, err))) return st; /* "" inside quotes */
                state = CS_IN_QUOTED;
            } else {
                /* Text after a closing quote, or a quote inside an unquoted field: literal. */
                if ((st = csv_val(s, c, err)) || (st = csv_copy_run(s, ",\n\r", err))) return st;
                state = CS_IN_FIELD;
            }
            continue;
        case CS_IN_QUOTED:
            if (c == -1) {
                s->unterminated = 1;
                if ((st = csv_end_field(s, err))) return st;
                s->rec_no++;
                *got = 1;
                return CLIP_OK;
            }
            if ((st = raw_put(s, &ch, 1, err)) || (st = src_take(s, c, err))) return st;
            if (c == '"') {
                state = CS_QUOTE_IN_QUOTED;
            } else if ((st = csv_val(s, c, err)) || (st = csv_copy_run(s, "\"\n\r", err))) {
                return st;
            }
            continue;
        default: break;
        }
        break;
    }
end_of_record:
    /* c is the terminator (or the end): consume \n, \r or \r\n. */
    {
        int c = src_peek(s, err);
        if (c == -2) return CLIP_ERR_IO;
        if (c == '\n') {
            if ((st = src_take(s, c, err))) return st;
            memcpy(s->term, "\n", 2);
        } else if (c == '\r') {
            if ((st = src_take(s, c, err))) return st;
            int n = src_peek(s, err);
            if (n == -2) return CLIP_ERR_IO;
            if (n == '\n') {
                if ((st = src_take(s, n, err))) return st;
                memcpy(s->term, "\r\n", 3);
            } else {
                memcpy(s->term, "\r", 2);
            }
        }
    }
    s->rec_no++;
    *got = 1;
    return CLIP_OK;
}

/* ================================================================== schema */

/* What pandas' lib.maybe_convert_objects has seen in a column (DataFrame(records)). */
enum {
    SEEN_NULL = 1,    /* None */
    SEEN_NAN = 2,     /* np.nan: a missing key */
    SEEN_BOOL = 4,
    SEEN_FLOAT = 8,
    SEEN_INT = 16,
    SEEN_UINT = 32,   /* an int in (2**63-1, 2**64) */
    SEEN_SINT = 64,   /* a negative int */
    SEEN_OBJECT = 128 /* str, list, dict, or ints that fit no numpy integer type */
};

/* read_csv's per-column parse attempts (first failure wins, as pandas stops at it). */
enum { TRY_OK = 0, TRY_INVALID = 1, TRY_OVERFLOW = 2 };

/* How the cells of a CSV column are held, from the attempt that succeeded. */
typedef enum csv_kind {
    CK_INT64,
    CK_INT64_NA, /* ints with NA: float64 */
    CK_UINT64,
    CK_FLOAT64,
    CK_BOOL,
    CK_BOOL_NA, /* bools with NA: object True/False/NaN */
    CK_OBJECT,
    CK_OBJECT_RAW /* uint64 conflict: object without the NA filter ("" and "NA" stay strings) */
} csv_kind;

typedef struct column {
    char *name;
    size_t len;
    size_t present; /* rows holding the key */
    unsigned seen;  /* SEEN_* */
    /* read_json's _try_convert_data: every value float()-convertible / all integral in int64 */
    unsigned char conv_ok, conv_int;
    /* read_csv attempts */
    unsigned char try_i64, try_u64, try_f64, try_bool, u_sint, u_uint, u_null, na;
    /* results */
    table_dtype dtype;
    csv_kind ck;
    unsigned char coerced; /* json: read_json turned the column numeric */
} column;

struct table_schema {
    table_format fmt;
    size_t rows, invalid;
    column *cols;
    size_t ncols, cap;
    size_t *slots; /* open addressing: column index + 1, 0 = empty */
    size_t nslots;
    int row_float; /* iterrows() upcasts every int to float (an all-numeric table with floats) */
    /* verbatim writing */
    int csv_bom;
    clip_buf csv_header; /* the header record's raw bytes */
    char csv_header_term[3];
    size_t csv_header_fields;
    clip_buf json_head, json_tail;
};

static uint64_t name_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int schema_lookup(const table_schema *s, const char *name, size_t len) {
    if (!s->nslots) return -1;
    size_t mask = s->nslots - 1;
    for (size_t i = (size_t)name_hash(name, len) & mask;; i = (i + 1) & mask) {
        size_t v = s->slots[i];
        if (!v) return -1;
        const column *c = &s->cols[v - 1];
        if (c->len == len && memcmp(c->name, name, len) == 0) return (int)(v - 1);
    }
}

static clip_status schema_rehash(table_schema *s, clip_error *err) {
    size_t n = s->nslots ? s->nslots * 2 : 64;
    size_t *slots = calloc(n, sizeof *slots);
    if (!slots) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (column table)");
    for (size_t c = 0; c < s->ncols; c++) {
        size_t i = (size_t)name_hash(s->cols[c].name, s->cols[c].len) & (n - 1);
        while (slots[i]) i = (i + 1) & (n - 1);
        slots[i] = c + 1;
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = n;
    return CLIP_OK;
}

/* Appends a column (the caller knows it is new). */
static clip_status schema_add(table_schema *s, const char *name, size_t len, int *col,
                              clip_error *err) {
    if (s->ncols >= (size_t)INT_MAX - 1)
        return clip_fail(err, CLIP_ERR_LIMIT, "more than %d columns", INT_MAX - 1);
    if (s->ncols == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 16;
        column *nc = realloc(s->cols, ncap * sizeof *nc);
        if (!nc) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (columns)");
        s->cols = nc;
        s->cap = ncap;
    }
    column *c = &s->cols[s->ncols];
    memset(c, 0, sizeof *c);
    c->name = malloc(len + 1);
    if (!c->name) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (column name)");
    memcpy(c->name, name, len);
    c->name[len] = '\0';
    c->len = len;
    c->conv_ok = c->conv_int = 1;
    *col = (int)s->ncols++;
    if (s->ncols * 2 > s->nslots) return schema_rehash(s, err);
    size_t mask = s->nslots - 1;
    size_t i = (size_t)name_hash(name, len) & mask;
    while (s->slots[i]) i = (i + 1) & mask;
    s->slots[i] = (size_t)*col + 1;
    return CLIP_OK;
}

size_t table_schema_rows(const table_schema *s) { return s ? s->rows : 0; }
size_t table_schema_invalid(const table_schema *s) { return s ? s->invalid : 0; }
size_t table_schema_columns(const table_schema *s) { return s ? s->ncols : 0; }
table_format table_schema_format(const table_schema *s) { return s->fmt; }

const char *table_schema_column(const table_schema *s, int col, size_t *len) {
    if (!s || col < 0 || (size_t)col >= s->ncols) return NULL;
    if (len) *len = s->cols[col].len;
    return s->cols[col].name;
}

int table_schema_find(const table_schema *s, const char *column) {
    if (!s || !column) return -1;
    return schema_lookup(s, column, strlen(column));
}

table_dtype table_schema_dtype(const table_schema *s, int col) {
    if (!s || col < 0 || (size_t)col >= s->ncols) return TD_OBJECT;
    return s->cols[col].dtype;
}

void table_schema_free(table_schema *s) {
    if (!s) return;
    for (size_t i = 0; i < s->ncols; i++) free(s->cols[i].name);
    free(s->cols);
    free(s->slots);
    clip_buf_free(&s->csv_header);
    clip_buf_free(&s->json_head);
    clip_buf_free(&s->json_tail);
    free(s);
}

/* ------------------------------------------------------------------ values as Python sees them */

/* The class of a JSON value for maybe_convert_objects. */
typedef enum pyclass { PY_NONE, PY_BOOL, PY_FLOAT, PY_INT, PY_OBJECT } pyclass;

/* The range of a Python int literal (json.loads: exact): its sign and whether it fits int64,
 * only uint64, or neither. */
typedef enum int_range { IR_INT64, IR_UINT64, IR_BIG } int_range;

static int_range int_literal_range(const char *s, size_t n, int *negative) {
    static const char i64max[] = "9223372036854775807", i64min[] = "9223372036854775808",
                      u64max[] = "18446744073709551615";
    int neg = n > 0 && s[0] == '-';
    if (neg) {
        s++;
        n--;
    }
    *negative = neg && !(n == 1 && s[0] == '0'); /* -0 is 0 */
    const char *lim = neg ? i64min : i64max;
    size_t ln = strlen(lim);
    if (n < ln || (n == ln && memcmp(s, lim, n) <= 0)) return IR_INT64;
    if (neg) return IR_BIG;
    size_t un = strlen(u64max);
    if (n < un || (n == un && memcmp(s, u64max, n) <= 0)) return IR_UINT64;
    return IR_BIG;
}

/* Folds one value into the column's maybe_convert_objects state, in row order: an int is
 * range-checked only while no None has been seen, exactly as pandas 1.5.3 does. */
static void seen_update(column *c, pyclass k, int negative, int uint_range, int big) {
    if (c->seen & SEEN_OBJECT) return;
    switch (k) {
    case PY_NONE: c->seen |= SEEN_NULL; break;
    case PY_BOOL: c->seen |= SEEN_BOOL; break;
    case PY_FLOAT: c->seen |= SEEN_FLOAT; break;
    case PY_OBJECT: c->seen |= SEEN_OBJECT; break;
    case PY_INT:
        c->seen |= SEEN_INT;
        if (!(c->seen & SEEN_NULL)) {
            if (negative && !big) c->seen |= SEEN_SINT;
            if (uint_range) c->seen |= SEEN_UINT;
            if (((c->seen & SEEN_UINT) && (c->seen & SEEN_SINT)) || big) c->seen |= SEEN_OBJECT;
        }
        break;
    }
}

static table_dtype seen_dtype(unsigned seen) {
    if (seen & SEEN_OBJECT) return TD_OBJECT;
    if (seen & (SEEN_NULL | SEEN_NAN)) {
        if (seen & SEEN_BOOL) return TD_OBJECT;
        if (seen & (SEEN_FLOAT | SEEN_INT | SEEN_NAN)) return TD_FLOAT64;
        return TD_OBJECT; /* only None */
    }
    if (seen & SEEN_BOOL) return (seen & (SEEN_FLOAT | SEEN_INT)) ? TD_OBJECT : TD_BOOL;
    if (seen & SEEN_FLOAT) return TD_FLOAT64;
    if (seen & SEEN_INT) return (seen & SEEN_UINT) ? TD_UINT64 : TD_INT64;
    return TD_OBJECT;
}

/* ------------------------------------------------------------------ one JSON row */

/* Which member holds each column in the current row (Python dict semantics: the last duplicate
 * wins), without clearing a per-column array for every row. */
typedef struct rowmap {
    size_t *stamp, *midx;
    size_t cap, gen;
    int *touched; /* the row's distinct columns, in first-seen order */
    size_t ntouched;
} rowmap;

static void rowmap_free(rowmap *m) {
    free(m->stamp);
    free(m->midx);
    free(m->touched);
    memset(m, 0, sizeof *m);
}

static clip_status rowmap_reserve(rowmap *m, size_t ncols, clip_error *err) {
    if (ncols <= m->cap) return CLIP_OK;
    size_t ncap = m->cap ? m->cap : 16;
    while (ncap < ncols) ncap *= 2;
    size_t *st = realloc(m->stamp, ncap * sizeof *st);
    if (st) m->stamp = st;
    size_t *mi = realloc(m->midx, ncap * sizeof *mi);
    if (mi) m->midx = mi;
    int *to = realloc(m->touched, ncap * sizeof *to);
    if (to) m->touched = to;
    if (!st || !mi || !to) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (row map)");
    memset(m->stamp + m->cap, 0, (ncap - m->cap) * sizeof *st);
    m->cap = ncap;
    return CLIP_OK;
}

/* Maps the members of root to columns; with add, unknown keys become new columns (scan),
 * otherwise they mean the file changed after the scan (*unknown = 1). */
static clip_status rowmap_build(rowmap *m, table_schema *s, const json_value *root, int add,
                                int *unknown, clip_error *err) {
    clip_status st;
    m->gen++;
    m->ntouched = 0;
    if ((st = rowmap_reserve(m, s->ncols, err))) return st;
    for (size_t i = 0; i < root->u.obj.n; i++) {
        const json_member *mb = &root->u.obj.members[i];
        int col = schema_lookup(s, mb->key, mb->key_len);
        if (col < 0) {
            if (!add) {
                *unknown = 1;
                return CLIP_OK;
            }
            if ((st = schema_add(s, mb->key, mb->key_len, &col, err)) ||
                (st = rowmap_reserve(m, s->ncols, err)))
                return st;
        }
        if (m->stamp[col] != m->gen) {
            m->stamp[col] = m->gen;
            m->touched[m->ntouched++] = col;
        }
        m->midx[col] = i;
    }
    return CLIP_OK;
}

/* Rewrites json.c's "what: invalid JSON at line L, column C: msg" for a row whose JSON text
 * starts `skipped` bytes into the line (JSONL lines are stripped first). */
static clip_status row_json_error(const src *s, clip_status code, const char *jmsg,
                                  size_t skipped, clip_error *err) {
    const char *p = strstr(jmsg, "invalid JSON at line ");
    size_t l = 1, c = 1;
    int off = 0;
    const char *msg = jmsg;
    if (p && sscanf(p, "invalid JSON at line %zu, column %zu: %n", &l, &c, &off) == 2 && off > 0)
        msg = p + off;
    if (s->fmt == TABLE_JSONL)
        return clip_fail(err, code, "%s: line %zu: invalid JSON at column %zu: %s", s->path,
                         s->rec_line, c + skipped, msg);
    return clip_fail(err, code, "%s: element %zu (line %zu): invalid JSON at line %zu, column %zu: %s",
                     s->path, s->rec_no, s->rec_line, s->rec_line + l - 1, c, msg);
}

static const char *row_where(const src *s, char *buf, size_t cap) {
    if (s->fmt == TABLE_JSON)
        snprintf(buf, cap, "%s: element %zu (line %zu)", s->path, s->rec_no, s->rec_line);
    else if (s->fmt == TABLE_CSV)
        snprintf(buf, cap, "%s: record %zu (line %zu)", s->path, s->rec_no, s->rec_line);
    else
        snprintf(buf, cap, "%s: line %zu", s->path, s->rec_line);
    return buf;
}

/* pandas' ujson decoder fails the whole read_json on an integer it cannot hold; here that makes
 * the element an invalid row. */
static const char *ujson_check(const json_value *v, const char *text) {
    if (v->type == JSON_NUMBER) {
        uj_num n;
        ujson_number(text + v->start, v->end - v->start, &n);
        return n.kind == UJ_ERROR ? n.msg : NULL;
    }
    if (v->type == JSON_ARRAY) {
        for (size_t i = 0; i < v->u.arr.n; i++) {
            const char *m = ujson_check(&v->u.arr.items[i], text);
            if (m) return m;
        }
    } else if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->u.obj.n; i++) {
            const char *m = ujson_check(&v->u.obj.members[i].value, text);
            if (m) return m;
        }
    }
    return NULL;
}

/* Parses the current JSONL line / JSON element. *blank = 1 for a JSONL line that strips to
 * nothing (skipped, not an error). On success *doc holds an object whose spans are relative to
 * raw + *off. Invalid rows return CLIP_ERR_FORMAT or CLIP_ERR_LIMIT. */
static clip_status parse_json_row(const src *s, json_doc **doc, size_t *off, int *blank,
                                  clip_error *err) {
    char where[4200];
    *doc = NULL;
    *blank = 0;
    *off = 0;
    const char *text = s->raw.data ? s->raw.data : "";
    size_t b = 0, e = s->raw.len;
    if (s->too_long)
        return clip_fail(err, CLIP_ERR_LIMIT, "%s: longer than %zu bytes (max_row_bytes)",
                         row_where(s, where, sizeof where), s->max_row);
    if (!utf8_valid(text, e))
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: invalid UTF-8", row_where(s, where, sizeof where));
    if (s->fmt == TABLE_JSONL) {
        py_strip(text, &b, &e);
        if (b == e) {
            *blank = 1;
            return CLIP_OK;
        }
    }
    clip_error jerr = {0};
    clip_status st = json_parse(text + b, e - b, "row", s->max_depth, doc, &jerr);
    if (st == CLIP_ERR_NOMEM)
        return clip_fail(err, st, "%s: out of memory", row_where(s, where, sizeof where));
    if (st) return row_json_error(s, st == CLIP_ERR_LIMIT ? st : CLIP_ERR_FORMAT, jerr.msg, b, err);
    const json_value *root = json_doc_root(*doc);
    if (root->type != JSON_OBJECT) {
        json_type t = root->type;
        json_doc_free(*doc);
        *doc = NULL;
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: not a JSON object (a record) but %s %s",
                         row_where(s, where, sizeof where), t == JSON_ARRAY ? "an" : "a",
                         json_type_name(t));
    }
    if (s->fmt == TABLE_JSON) {
        const char *m = ujson_check(root, text + b);
        if (m) {
            json_doc_free(*doc);
            *doc = NULL;
            return clip_fail(err, CLIP_ERR_FORMAT,
                             "%s: pandas' JSON decoder rejects a number: %s",
                             row_where(s, where, sizeof where), m);
        }
    }
    *off = b;
    return CLIP_OK;
}

/* Checks a CSV data record; invalid ones return CLIP_ERR_FORMAT / CLIP_ERR_LIMIT. */
static clip_status check_csv_record(const src *s, size_t header_fields, clip_error *err) {
    char where[4200];
    if (s->too_long)
        return clip_fail(err, CLIP_ERR_LIMIT, "%s: longer than %zu bytes (max_row_bytes)",
                         row_where(s, where, sizeof where), s->max_row);
    if (s->unterminated)
        return clip_fail(err, CLIP_ERR_FORMAT,
                         "%s: unterminated quoted field (the file ends inside it)",
                         row_where(s, where, sizeof where));
    if (!utf8_valid(s->raw.data ? s->raw.data : "", s->raw.len))
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: invalid UTF-8", row_where(s, where, sizeof where));
    if (header_fields && s->nfields > header_fields)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: %zu fields, but the header has %zu",
                         row_where(s, where, sizeof where), s->nfields, header_fields);
    return CLIP_OK;
}

/* ------------------------------------------------------------------ values */

typedef struct pyinfo {
    pyclass k;
    int negative, uint_range, big;
} pyinfo;

/* How json.loads (jsonl) or pandas' ujson (json) hands this value to maybe_convert_objects. */
static pyinfo py_classify(const json_value *v, const char *text, int ujson) {
    pyinfo r = {PY_OBJECT, 0, 0, 0};
    switch (v->type) {
    case JSON_NULL: r.k = PY_NONE; break;
    case JSON_TRUE:
    case JSON_FALSE: r.k = PY_BOOL; break;
    case JSON_NUMBER:
        if (ujson) {
            uj_num n;
            ujson_number(text + v->start, v->end - v->start, &n);
            if (n.kind == UJ_NONE) {
                r.k = PY_NONE;
            } else if (n.kind == UJ_DOUBLE) {
                r.k = PY_FLOAT;
            } else {
                r.k = PY_INT;
                r.negative = n.kind == UJ_INT && n.i < 0;
                r.uint_range = n.kind == UJ_UINT;
            }
        } else if (v->u.num.nonfinite || !v->u.num.is_int) {
            r.k = PY_FLOAT;
        } else {
            int_range ir = int_literal_range(text + v->start, v->end - v->start, &r.negative);
            r.k = PY_INT;
            r.uint_range = ir == IR_UINT64;
            r.big = ir == IR_BIG;
        }
        break;
    default: break;
    }
    return r;
}

/* The Python float a JSON number is (json.loads: exact ints, correctly rounded floats; ujson:
 * its own decoding). *is_none for ujson's NaN. */
static double py_number_value(const json_value *v, const char *text, int ujson, int *is_none) {
    *is_none = 0;
    if (!ujson) return v->u.num.is_int && v->u.num.d == 0 ? 0.0 : v->u.num.d; /* float(-0) */
    uj_num n;
    ujson_number(text + v->start, v->end - v->start, &n);
    switch (n.kind) {
    case UJ_INT: return (double)n.i;
    case UJ_UINT: return (double)n.u;
    case UJ_DOUBLE: return n.d;
    default: *is_none = 1; return NAN;
    }
}

/* read_json's data.astype("float64") of one cell: None -> NaN, bool -> 1.0/0.0, numbers,
 * strings through float(); lists/dicts fail. */
static int py_to_float(const json_value *v, const char *text, double *out) {
    int none;
    switch (v->type) {
    case JSON_NULL: *out = NAN; return 1;
    case JSON_TRUE: *out = 1.0; return 1;
    case JSON_FALSE: *out = 0.0; return 1;
    case JSON_NUMBER: *out = py_number_value(v, text, 1, &none); return 1;
    case JSON_STRING: return py_float_from_str(v->u.str.s, v->u.str.len, out);
    default: return 0;
    }
}

static int integral_int64(double f) {
    return isfinite(f) && f == floor(f) && f >= -9223372036854775808.0 &&
           f < 9223372036854775808.0;
}

/* ------------------------------------------------------------------ CSV inference */

static void csv_update(column *c, const char *w) {
    int na = pd_is_na(w);
    if (na) c->na = 1;
    if (c->try_i64 == TRY_OK && !na) {
        int64_t v;
        int r = pd_str_to_int64(w, &v);
        if (r) c->try_i64 = r == PD_OVERFLOW ? TRY_OVERFLOW : TRY_INVALID;
    }
    /* The uint64 attempt only matters once int64 overflowed; it runs over every word in order
     * and, like pandas, stops at its first failure. */
    if (c->try_u64 == TRY_OK) {
        if (na) {
            c->u_null = 1;
        } else {
            uint64_t u;
            int si = 0, ui = 0;
            int r = pd_str_to_uint64(w, &u, &si, &ui);
            if (r) {
                c->try_u64 = r == PD_OVERFLOW ? TRY_OVERFLOW : TRY_INVALID;
            } else {
                c->u_sint |= (unsigned char)si;
                c->u_uint |= (unsigned char)ui;
            }
        }
    }
    if (c->try_f64 == TRY_OK && !na) {
        double d;
        if (!pd_parse_double(w, &d)) c->try_f64 = TRY_INVALID;
    }
    if (c->try_bool == TRY_OK && !na) {
        int b;
        if (!pd_parse_bool(w, &b)) c->try_bool = TRY_INVALID;
    }
}

/* parsers.pyx _convert_tokens: int64, then (on overflow) uint64, float64, bool, object. */
static csv_kind csv_finalize_kind(const column *c) {
    if (c->try_i64 == TRY_OK) return c->na ? CK_INT64_NA : CK_INT64;
    if (c->try_i64 == TRY_OVERFLOW) {
        if (c->try_u64 == TRY_OVERFLOW) return CK_OBJECT; /* OverflowError */
        if (c->try_u64 == TRY_OK) {
            if (c->u_uint && (c->u_sint || c->u_null)) return CK_OBJECT_RAW; /* ValueError */
            if (c->u_sint) return CK_OBJECT;                                  /* OverflowError */
            return CK_UINT64;
        }
    }
    if (c->try_f64 == TRY_OK) return CK_FLOAT64;
    if (c->try_bool == TRY_OK) return c->na ? CK_BOOL_NA : CK_BOOL;
    return CK_OBJECT;
}

static table_dtype csv_kind_dtype(csv_kind k) {
    switch (k) {
    case CK_INT64: return TD_INT64;
    case CK_INT64_NA: return TD_FLOAT64;
    case CK_UINT64: return TD_UINT64;
    case CK_FLOAT64: return TD_FLOAT64;
    case CK_BOOL: return TD_BOOL;
    default: return TD_OBJECT;
    }
}

/* ------------------------------------------------------------------ CSV header names */

/* A small string map for pandas' duplicate-name mangling ("a", "a" -> "a", "a.1"). */
typedef struct smap_ent {
    char *k;
    size_t n;
    size_t count;   /* pandas' `counts` dict */
    size_t present; /* occurrences in the header as renamed so far (`col in this_header`) */
} smap_ent;
typedef struct smap {
    smap_ent *e;
    size_t cap, used;
} smap;

static void smap_free(smap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->e[i].k);
    free(m->e);
    memset(m, 0, sizeof *m);
}

/* Finds or inserts k. An insertion may move the entries: earlier pointers become invalid. */
static smap_ent *smap_get(smap *m, const char *k, size_t n, clip_error *err) {
    if (m->cap) {
        size_t j = (size_t)name_hash(k, n) & (m->cap - 1);
        for (; m->e[j].k; j = (j + 1) & (m->cap - 1))
            if (m->e[j].n == n && memcmp(m->e[j].k, k, n) == 0) return &m->e[j];
    }
    if ((m->used + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        smap_ent *ne = calloc(ncap, sizeof *ne);
        if (!ne) {
            clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header names)");
            return NULL;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->e[i].k) continue;
            size_t j = (size_t)name_hash(m->e[i].k, m->e[i].n) & (ncap - 1);
            while (ne[j].k) j = (j + 1) & (ncap - 1);
            ne[j] = m->e[i];
        }
        free(m->e);
        m->e = ne;
        m->cap = ncap;
    }
    size_t j = (size_t)name_hash(k, n) & (m->cap - 1);
    while (m->e[j].k) j = (j + 1) & (m->cap - 1);
    m->e[j].k = malloc(n + 1);
    if (!m->e[j].k) {
        clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header names)");
        return NULL;
    }
    memcpy(m->e[j].k, k, n);
    m->e[j].k[n] = '\0';
    m->e[j].n = n;
    m->e[j].count = m->e[j].present = 0;
    m->used++;
    return &m->e[j];
}

/* Column names from the header record: "Unnamed: i" for empty names, then pandas 1.5.3's
 * mangle_dupe_cols (named columns first, then the unnamed ones). */
static clip_status csv_header_columns(table_schema *s, const src *in, clip_error *err) {
    size_t h = in->nfields;
    clip_status st = CLIP_OK;
    clip_buf *names = calloc(h ? h : 1, sizeof *names);
    size_t *order = malloc((h ? h : 1) * sizeof *order);
    smap m = {0};
    if (!names || !order) {
        st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header)");
        goto done;
    }
    size_t no = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < h; i++) {
            const csv_field *f = &in->fields[i];
            int unnamed = f->val_len == 0;
            if (pass == 0) {
                if (unnamed ? !clip_buf_printf(&names[i], "Unnamed: %zu", i)
                            : !clip_buf_append(&names[i], in->vals.data + f->val_start, f->val_len)) {
                    st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header)");
                    goto done;
                }
                smap_ent *e = smap_get(&m, names[i].data, names[i].len, err);
                if (!e) {
                    st = CLIP_ERR_NOMEM;
                    goto done;
                }
                e->present++;
            }
            if ((pass == 0) != unnamed) order[no++] = i;
        }
    }
    for (size_t o = 0; o < h; o++) {
        size_t i = order[o];
        clip_buf col = {0};
        smap_ent *e = smap_get(&m, names[i].data, names[i].len, err);
        if (!e) {
            st = CLIP_ERR_NOMEM;
            goto done;
        }
        size_t cur = e->count;
        int renamed = cur > 0;
        while (cur > 0) {
            e = smap_get(&m, names[i].data, names[i].len, err); /* re-fetched: inserts move */
            e->count = cur + 1;
            col.len = 0;
            if (!clip_buf_append(&col, names[i].data, names[i].len) ||
                !clip_buf_printf(&col, ".%zu", cur) ||
                !(e = smap_get(&m, col.data, col.len, err))) {
                clip_buf_free(&col);
                st = clip_fail(err, CLIP_ERR_NOMEM, "out of memory (header)");
                goto done;
            }
            cur = e->present ? cur + 1 : e->count;
        }
        if (renamed) {
            smap_ent *old = smap_get(&m, names[i].data, names[i].len, err);
            old->present--;
            clip_buf_free(&names[i]);
            names[i] = col;
            e = smap_get(&m, names[i].data, names[i].len, err);
            e->present++;
        }
        e->count = cur + 1;
    }
    for (size_t i = 0; i < h; i++) {
        int c;
        if (schema_lookup(s, names[i].data, names[i].len) >= 0) {
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: duplicate column name after mangling", in->path);
            goto done;
        }
        if ((st = schema_add(s, names[i].data, names[i].len, &c, err))) goto done;
    }
done:
    if (names)
        for (size_t i = 0; i < h; i++) clip_buf_free(&names[i]);
    free(names);
    free(order);
    smap_free(&m);
    return st;
}

/* ------------------------------------------------------------------ pass 1 */

/* A row-level failure: counted and skipped with skip_invalid, else the scan stops. */
static int row_error(clip_status st) { return st == CLIP_ERR_FORMAT || st == CLIP_ERR_LIMIT; }

static clip_status scan_json(table_schema *s, src *in, int skip_invalid, clip_error *err) {
    clip_status st = CLIP_OK;
    rowmap m = {0};
    int ujson = s->fmt == TABLE_JSON;
    for (;;) {
        int got, blank;
        st = ujson ? json_next_elem(in, &got, err) : jsonl_next_line(in, &got, err);
        if (st || !got) break;
        json_doc *doc;
        size_t off;
        st = parse_json_row(in, &doc, &off, &blank, err);
        if (st) {
            if (!row_error(st) || !skip_invalid) break;
            s->invalid++;
            st = CLIP_OK;
            continue;
        }
        if (blank) continue;
        const json_value *root = json_doc_root(doc);
        const char *text = in->raw.data + off;
        st = rowmap_build(&m, s, root, 1, NULL, err);
        for (size_t t = 0; !st && t < m.ntouched; t++) {
            column *c = &s->cols[m.touched[t]];
            const json_value *v = &root->u.obj.members[m.midx[m.touched[t]]].value;
            pyinfo pi = py_classify(v, text, ujson);
            seen_update(c, pi.k, pi.negative, pi.uint_range, pi.big);
            c->present++;
            if (ujson && c->conv_ok) {
                double f;
                if (!py_to_float(v, text, &f))
                    c->conv_ok = 0;
                else if (!integral_int64(f))
                    c->conv_int = 0;
            }
        }
        json_doc_free(doc);
        if (st) break;
        s->rows++;
    }
    rowmap_free(&m);
    if (st) return st;
    if (s->fmt == TABLE_JSONL && s->rows == 0) {
        if (in->any == 0) return clip_fail(err, CLIP_ERR_FORMAT, "%s: empty file", in->path);
        /* DataFlow's reader raises ValueError when no record is left. */
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: no valid JSON record (%zu invalid line%s)",
                         in->path, s->invalid, s->invalid == 1 ? "" : "s");
    }
    if (s->fmt == TABLE_JSON) {
        if (!clip_buf_append(&s->json_head, in->head.data ? in->head.data : "", in->head.len) ||
            !clip_buf_append(&s->json_tail, in->tail.data ? in->tail.data : "", in->tail.len))
            return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    return CLIP_OK;
}

static clip_status scan_csv(table_schema *s, src *in, int skip_invalid, clip_error *err) {
    int got;
    clip_status st = csv_next_record(in, &got, err);
    if (st) return st;
    if (!got)
        return clip_fail(err, CLIP_ERR_FORMAT, "%s: %s (no header row: no columns to parse)",
                         in->path, in->any ? "only blank lines" : "empty file");
    if ((st = check_csv_record(in, 0, err))) return st; /* a bad header is fatal */
    if ((st = csv_header_columns(s, in, err))) return st;
    s->csv_bom = in->bom;
    s->csv_header_fields = in->nfields;
    memcpy(s->csv_header_term, in->term, sizeof s->csv_header_term);
    if (!clip_buf_append(&s->csv_header, in->raw.data ? in->raw.data : "", in->raw.len))
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    size_t h = s->csv_header_fields;
    in->fkeep = h + 1; /* more fields only make the record invalid: do not store them */
    for (;;) {
        if ((st = csv_next_record(in, &got, err)) || !got) break;
        if ((st = check_csv_record(in, h, err))) {
            if (!row_error(st) || !skip_invalid) break;
            s->invalid++;
            st = CLIP_OK;
            continue;
        }
        for (size_t j = 0; j < h; j++) {
            const char *w = j < in->nfields ? in->vals.data + in->fields[j].val_start : "";
            csv_update(&s->cols[j], w);
        }
        s->rows++;
    }
    return st;
}

/* The dtypes, once every row has been seen. */
static void schema_finalize(table_schema *s) {
    int any_obj = 0, any_bool = 0, any_float = 0, any_i64 = 0, any_u64 = 0;
    for (size_t i = 0; i < s->ncols; i++) {
        column *c = &s->cols[i];
        if (s->fmt == TABLE_CSV) {
            /* read_csv gives an empty table object columns. */
            c->ck = s->rows ? csv_finalize_kind(c) : CK_OBJECT;
            c->dtype = csv_kind_dtype(c->ck);
        } else {
            if (c->present < s->rows) {
                c->seen |= SEEN_NAN; /* dicts_to_array fills missing keys with np.nan */
                c->conv_int = 0;
            }
            c->dtype = seen_dtype(c->seen);
            if (s->fmt == TABLE_JSON) {
                /* read_json's _try_convert_data: object -> float64 when float() takes every
                 * value, then float64 -> int64 when every value is integral. */
                if (c->dtype == TD_OBJECT && c->conv_ok) {
                    c->dtype = TD_FLOAT64;
                    c->coerced = 1;
                }
                if (c->dtype == TD_FLOAT64 && c->conv_int) {
                    c->dtype = TD_INT64;
                    c->coerced = 1;
                }
            }
        }
        any_obj |= c->dtype == TD_OBJECT;
        any_bool |= c->dtype == TD_BOOL;
        any_float |= c->dtype == TD_FLOAT64;
        any_i64 |= c->dtype == TD_INT64;
        any_u64 |= c->dtype == TD_UINT64;
    }
    /* iterrows() builds each row from df.values: without object or bool columns that array is
     * float64 as soon as one column is float64 or int64 meets uint64. */
    s->row_float = !any_obj && !any_bool && (any_float || (any_i64 && any_u64));
}

clip_status table_scan(const char *path, table_format fmt, const table_limits *lim,
                       int skip_invalid, table_schema **out, clip_error *err) {
    *out = NULL;
    if (!path) return clip_fail(err, CLIP_ERR_ARG, "table_scan: no path");
    if ((unsigned)fmt > TABLE_CSV) return clip_fail(err, CLIP_ERR_ARG, "%s: bad table format", path);
    table_schema *s = calloc(1, sizeof *s);
    if (!s) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    s->fmt = fmt;
    src in;
    clip_status st = src_open(&in, path, fmt, lim, err);
    if (!st) st = fmt == TABLE_CSV ? scan_csv(s, &in, skip_invalid, err)
                                   : scan_json(s, &in, skip_invalid, err);
    src_close(&in);
    if (st) {
        table_schema_free(s);
        return st;
    }
    schema_finalize(s);
    *out = s;
    return CLIP_OK;
}

/* ================================================================== pass 2: rows */

struct table_row {
    table_reader *r;
    size_t line;
    const json_value *root; /* JSON sources: the record object, spans relative to text */
    const char *text;
};

struct table_reader {
    src in;
    const table_schema *s;
    clip_status fatal; /* sticky */
    char fatal_msg[sizeof(((clip_error *)0)->msg)];
    int skippable, have_raw, header_done;
    rowmap m;
    json_doc *doc;
    table_row row;
};

clip_status table_reader_open(const char *path, table_format fmt, const table_schema *s,
                              const table_limits *lim, table_reader **out, clip_error *err) {
    *out = NULL;
    if (!path || !s) return clip_fail(err, CLIP_ERR_ARG, "table_reader_open: no path or schema");
    if (s->fmt != fmt)
        return clip_fail(err, CLIP_ERR_ARG, "%s: the schema was scanned as %s, not %s", path,
                         table_format_name(s->fmt), table_format_name(fmt));
    table_reader *r = calloc(1, sizeof *r);
    if (!r) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    clip_status st = src_open(&r->in, path, fmt, lim, err);
    if (st) {
        src_close(&r->in);
        free(r);
        return st;
    }
    r->s = s;
    r->row.r = r;
    *out = r;
    return CLIP_OK;
}

void table_reader_close(table_reader *r) {
    if (!r) return;
    json_doc_free(r->doc);
    rowmap_free(&r->m);
    src_close(&r->in);
    free(r);
}

int table_reader_skippable(const table_reader *r) { return r && !r->fatal && r->skippable; }

const char *table_reader_last_raw(const table_reader *r, size_t *len) {
    if (!r || !r->have_raw) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = r->in.raw.len;
    return r->in.raw.data ? r->in.raw.data : "";
}

static clip_status reader_fatal(table_reader *r, clip_status st, clip_error *err) {
    r->fatal = st;
    if (err) snprintf(r->fatal_msg, sizeof r->fatal_msg, "%s", err->msg);
    return st;
}

clip_status table_reader_next(table_reader *r, table_row **row, clip_error *err) {
    *row = NULL;
    if (!r) return clip_fail(err, CLIP_ERR_ARG, "table_reader_next: no reader");
    if (r->fatal) return clip_fail(err, r->fatal, "%s", r->fatal_msg);
    json_doc_free(r->doc);
    r->doc = NULL;
    r->skippable = r->have_raw = 0;
    src *in = &r->in;
    clip_status st;
    int got;
    if (in->fmt == TABLE_CSV) {
        size_t h = r->s->csv_header_fields;
        if (!r->header_done) {
            if ((st = csv_next_record(in, &got, err))) return reader_fatal(r, st, err);
            if (!got || in->nfields != h) {
                st = clip_fail(err, CLIP_ERR_FORMAT, "%s: the header changed since the scan", in->path);
                return reader_fatal(r, st, err);
            }
            in->fkeep = h + 1;
            r->header_done = 1;
        }
        if ((st = csv_next_record(in, &got, err))) return reader_fatal(r, st, err);
        if (!got) return CLIP_OK;
        if ((st = check_csv_record(in, h, err))) {
            if (!row_error(st)) return reader_fatal(r, st, err);
            r->skippable = r->have_raw = 1;
            return st;
        }
        r->row.line = in->rec_line;
        r->row.root = NULL;
        r->row.text = in->raw.data ? in->raw.data : "";
        *row = &r->row;
        return CLIP_OK;
    }
    for (;;) {
        st = in->fmt == TABLE_JSON ? json_next_elem(in, &got, err) : jsonl_next_line(in, &got, err);
        if (st) return reader_fatal(r, st, err);
        if (!got) return CLIP_OK;
        size_t off;
        int blank, unknown = 0;
        st = parse_json_row(in, &r->doc, &off, &blank, err);
        if (st) {
            if (!row_error(st)) return reader_fatal(r, st, err);
            r->skippable = r->have_raw = 1;
            return st;
        }
        if (blank) continue;
        const json_value *root = json_doc_root(r->doc);
        /* The schema is not changed (add = 0): the const cast only reaches rowmap_build. */
        if ((st = rowmap_build(&r->m, (table_schema *)r->s, root, 0, &unknown, err)))
            return reader_fatal(r, st, err);
        if (unknown) {
            char where[4200];
            st = clip_fail(err, CLIP_ERR_FORMAT, "%s: a key that was not there when the file was "
                           "scanned (the file changed)", row_where(in, where, sizeof where));
            return reader_fatal(r, st, err);
        }
        r->row.line = in->fmt == TABLE_JSON ? in->rec_no : in->rec_line;
        r->row.root = root;
        r->row.text = in->raw.data + off;
        *row = &r->row;
        return CLIP_OK;
    }
}

size_t table_row_line(const table_row *row) { return row ? row->line : 0; }

/* The JSON value of a column in this row, NULL when the key is absent. */
static const json_value *row_cell(const table_row *row, int col) {
    const rowmap *m = &row->r->m;
    if (!row->root || col < 0 || (size_t)col >= m->cap || m->stamp[col] != m->gen) return NULL;
    return &row->root->u.obj.members[m->midx[col]].value;
}

/* ------------------------------------------------------------------ cells as pandas holds them */

typedef enum hkind {
    H_MISSING,  /* absent key/field: NaN */
    H_NULL_NAN, /* null or NA string held as NaN */
    H_NONE,     /* None (null in an object column) */
    H_BOOL,
    H_INT,      /* digits in s/n */
    H_FLOAT,
    H_STR,
    H_LIST,
    H_DICT
} hkind;

typedef struct held {
    hkind k;
    int b;
    double d;
    const char *s;
    size_t n;
    const json_value *jv; /* H_LIST / H_DICT */
    char num[32];
} held;

static void held_i64(held *h, int64_t v) {
    h->k = H_INT;
    h->n = (size_t)snprintf(h->num, sizeof h->num, "%lld", (long long)v);
    h->s = h->num;
}

static void held_u64(held *h, uint64_t v) {
    h->k = H_INT;
    h->n = (size_t)snprintf(h->num, sizeof h->num, "%llu", (unsigned long long)v);
    h->s = h->num;
}

/* A Python int from a JSON literal: its digits ("-0" is 0). */
static void held_int_literal(held *h, const char *t, size_t n) {
    h->k = H_INT;
    if (n == 2 && t[0] == '-' && t[1] == '0') {
        t++;
        n = 1;
    }
    h->s = t;
    h->n = n;
}

static void csv_held(const column *c, const char *w, int missing, held *h) {
    int na = c->ck != CK_OBJECT_RAW && pd_is_na(w);
    hkind nan_kind = missing ? H_MISSING : H_NULL_NAN;
    int64_t i = 0;
    uint64_t u = 0;
    int si = 0, ui = 0;
    switch (c->ck) {
    case CK_INT64:
        pd_str_to_int64(w, &i);
        held_i64(h, i);
        return;
    case CK_INT64_NA:
        if (na) break;
        pd_str_to_int64(w, &i);
        h->k = H_FLOAT;
        h->d = (double)i;
        return;
    case CK_UINT64:
        pd_str_to_uint64(w, &u, &si, &ui);
        held_u64(h, u);
        return;
    case CK_FLOAT64:
        if (na) break;
        h->k = H_FLOAT;
        if (!pd_parse_double(w, &h->d)) h->d = NAN;
        return;
    case CK_BOOL:
    case CK_BOOL_NA:
        if (na) break;
        h->k = H_BOOL;
        pd_parse_bool(w, &h->b);
        return;
    case CK_OBJECT:
    case CK_OBJECT_RAW:
        if (na) break;
        h->k = H_STR;
        h->s = w;
        h->n = strlen(w);
        return;
    }
    h->k = nan_kind;
}

static void json_held(const column *c, const json_value *v, const char *text, int ujson, held *h) {
    if (!v) {
        h->k = H_MISSING;
        return;
    }
    int none = 0;
    if (c->coerced) { /* read_json made the column float64 or int64: every cell converts */
        double f = NAN;
        py_to_float(v, text, &f);
        if (c->dtype == TD_INT64) { /* integral by the scan; 0 only if the file changed since */
            held_i64(h, integral_int64(f) ? (int64_t)f : 0);
            return;
        }
        if (v->type == JSON_NUMBER) py_number_value(v, text, ujson, &none);
        h->k = v->type == JSON_NULL || none ? H_NULL_NAN : H_FLOAT;
        h->d = f;
        return;
    }
    switch (v->type) {
    case JSON_NULL: h->k = c->dtype == TD_OBJECT ? H_NONE : H_NULL_NAN; return;
    case JSON_TRUE:
    case JSON_FALSE:
        h->k = H_BOOL;
        h->b = v->type == JSON_TRUE;
        return;
    case JSON_STRING:
        h->k = H_STR;
        h->s = v->u.str.s;
        h->n = v->u.str.len;
        return;
    case JSON_ARRAY:
    case JSON_OBJECT:
        h->k = v->type == JSON_ARRAY ? H_LIST : H_DICT;
        h->jv = v;
        return;
    case JSON_NUMBER: break;
    }
    if (ujson) {
        uj_num n;
        ujson_number(text + v->start, v->end - v->start, &n);
        if (n.kind == UJ_NONE) {
            h->k = c->dtype == TD_OBJECT ? H_NONE : H_NULL_NAN;
        } else if (c->dtype == TD_FLOAT64 || n.kind == UJ_DOUBLE) {
            h->k = H_FLOAT;
            h->d = py_number_value(v, text, 1, &none);
        } else if (n.kind == UJ_UINT) {
            held_u64(h, n.u);
        } else {
            held_i64(h, n.i);
        }
        return;
    }
    if (c->dtype == TD_FLOAT64 || v->u.num.nonfinite || !v->u.num.is_int) {
        h->k = H_FLOAT;
        h->d = py_number_value(v, text, 0, &none);
    } else {
        held_int_literal(h, text + v->start, v->end - v->start);
    }
}

static void row_held(const table_row *row, int col, held *h) {
    const table_reader *r = row->r;
    const column *c = &r->s->cols[col];
    memset(h, 0, sizeof *h);
    if (r->in.fmt == TABLE_CSV) {
        const src *in = &r->in;
        int missing = (size_t)col >= in->nfields;
        const char *w = missing ? "" : in->vals.data + in->fields[col].val_start;
        csv_held(c, w, missing, h);
    } else {
        json_held(c, row_cell(row, col), row->text, r->in.fmt == TABLE_JSON, h);
    }
}

static int valid_col(const table_row *row, int col) {
    return row && col >= 0 && (size_t)col < row->r->s->ncols;
}

table_kind table_row_kind(const table_row *row, int col) {
    if (!valid_col(row, col)) return TK_MISSING;
    held h;
    row_held(row, col, &h);
    switch (h.k) {
    case H_MISSING: return TK_MISSING;
    case H_NULL_NAN:
    case H_NONE: return TK_NULL;
    case H_BOOL: return TK_BOOL;
    case H_INT: return TK_INT;
    case H_FLOAT: return TK_FLOAT;
    case H_STR: return TK_STRING;
    case H_LIST: return TK_LIST;
    case H_DICT: return TK_DICT;
    }
    return TK_MISSING;
}

const char *table_row_string(const table_row *row, int col, size_t *len) {
    if (len) *len = 0;
    if (!valid_col(row, col)) return NULL;
    held h;
    row_held(row, col, &h);
    if (h.k != H_STR) return NULL;
    if (len) *len = h.n;
    return h.s;
}

/* ------------------------------------------------------------------ Python dicts */

/* A JSON object as the Python dict json.loads/ujson builds: each key once, at the position of
 * its first occurrence, holding the value of its last occurrence. */
typedef struct dict_view {
    size_t n;
    size_t *first, *last; /* member indices */
} dict_view;

typedef struct key_ref {
    const char *k;
    size_t len, idx;
} key_ref;

static int key_ref_cmp(const void *a, const void *b) {
    const key_ref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->k, y->k, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void dict_view_free(dict_view *d) {
    free(d->first);
    free(d->last);
    memset(d, 0, sizeof *d);
}

static clip_status dict_view_build(const json_value *obj, dict_view *d, clip_error *err) {
    size_t n = obj->u.obj.n;
    const json_member *m = obj->u.obj.members;
    memset(d, 0, sizeof *d);
    d->first = malloc((n ? n : 1) * sizeof *d->first);
    d->last = malloc((n ? n : 1) * sizeof *d->last);
    if (!d->first || !d->last) {
        dict_view_free(d);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (object)");
    }
    if (n <= 16) { /* the common small object: quadratic is cheapest */
        for (size_t i = 0; i < n; i++) {
            int dup = 0;
            for (size_t j = 0; j < i && !dup; j++)
                dup = m[j].key_len == m[i].key_len && !memcmp(m[j].key, m[i].key, m[i].key_len);
            if (dup) continue;
            size_t last = i;
            for (size_t j = i + 1; j < n; j++)
                if (m[j].key_len == m[i].key_len && !memcmp(m[j].key, m[i].key, m[i].key_len))
                    last = j;
            d->first[d->n] = i;
            d->last[d->n++] = last;
        }
        return CLIP_OK;
    }
    key_ref *refs = malloc(n * sizeof *refs);
    size_t *last_of = malloc(n * sizeof *last_of); /* by first index; n = not a first */
    if (!refs || !last_of) {
        free(refs);
        free(last_of);
        dict_view_free(d);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (object)");
    }
    for (size_t i = 0; i < n; i++) {
        refs[i] = (key_ref){m[i].key, m[i].key_len, i};
        last_of[i] = n;
    }
    qsort(refs, n, sizeof *refs, key_ref_cmp);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && refs[j + 1].len == refs[i].len && !memcmp(refs[j + 1].k, refs[i].k, refs[i].len)) j++;
        last_of[refs[i].idx] = refs[j].idx;
        i = j + 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (last_of[i] == n) continue;
        d->first[d->n] = i;
        d->last[d->n++] = last_of[i];
    }
    free(refs);
    free(last_of);
    return CLIP_OK;
}

/* ------------------------------------------------------------------ Python repr / str */

static int oom_status(clip_buf *b, clip_error *err) {
    return b->oom ? clip_fail(err, CLIP_ERR_NOMEM, "out of memory (text)") : CLIP_OK;
}

/* repr(str): '...' unless the text has ' and no ", the escapes of unicode_repr, printable
 * non-ASCII kept as is. */
static void py_repr_str(clip_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    int sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    clip_buf_putc(b, q);
    for (size_t i = 0; i < n;) {
        unsigned cp;
        int k = json_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (!k) { /* not produced by the parsers; shown as a raw byte escape */
            cp = (unsigned char)s[i];
            k = 1;
        }
        char e[12];
        if (cp == (unsigned char)q || cp == '\\') {
            e[0] = '\\';
            e[1] = (char)cp;
            clip_buf_append(b, e, 2);
        } else if (cp == '\t') {
            clip_buf_puts(b, "\\t");
        } else if (cp == '\n') {
            clip_buf_puts(b, "\\n");
        } else if (cp == '\r') {
            clip_buf_puts(b, "\\r");
        } else if (cp < 0x20 || cp == 0x7f) {
            clip_buf_printf(b, "\\x%c%c", hex[cp >> 4], hex[cp & 15]);
        } else if (cp < 0x7f || (k > 1 && py_isprintable(cp))) {
            clip_buf_append(b, s + i, (size_t)k);
        } else if (cp <= 0xff) {
            clip_buf_printf(b, "\\x%02x", cp);
        } else if (cp <= 0xffff) {
            clip_buf_printf(b, "\\u%04x", cp);
        } else {
            clip_buf_printf(b, "\\U%08x", cp);
        }
        i += (size_t)k;
    }
    clip_buf_putc(b, q);
}

static void py_repr_float(clip_buf *b, double d) {
    char tmp[40];
    int n = clip_format_double_repr(d, tmp);
    clip_buf_append(b, tmp, (size_t)n);
}

/* A number nested in a list/dict as Python holds it: no column dtype applies (object). */
static void number_held(const json_value *v, const char *text, int ujson, held *h) {
    column c = {0};
    c.dtype = TD_OBJECT;
    memset(h, 0, sizeof *h);
    json_held(&c, v, text, ujson, h);
}

/* repr() of a nested JSON value as the Python object json.loads (or ujson) made of it. */
static clip_status py_repr_json(clip_buf *b, const json_value *v, const char *text, int ujson,
                                clip_error *err) {
    clip_status st;
    switch (v->type) {
    case JSON_NULL: clip_buf_puts(b, "None"); break;
    case JSON_TRUE: clip_buf_puts(b, "True"); break;
    case JSON_FALSE: clip_buf_puts(b, "False"); break;
    case JSON_STRING: py_repr_str(b, v->u.str.s, v->u.str.len); break;
    case JSON_NUMBER: {
        held h;
        number_held(v, text, ujson, &h);
        if (h.k == H_INT)
            clip_buf_append(b, h.s, h.n);
        else if (h.k == H_FLOAT)
            py_repr_float(b, h.d);
        else
            clip_buf_puts(b, "None");
        break;
    }
    case JSON_ARRAY:
        clip_buf_putc(b, '[');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) clip_buf_puts(b, ", ");
            if ((st = py_repr_json(b, &v->u.arr.items[i], text, ujson, err))) return st;
        }
        clip_buf_putc(b, ']');
        break;
    case JSON_OBJECT: {
        dict_view d;
        if ((st = dict_view_build(v, &d, err))) return st;
        clip_buf_putc(b, '{');
        for (size_t i = 0; i < d.n; i++) {
            const json_member *k = &v->u.obj.members[d.first[i]];
            if (i) clip_buf_puts(b, ", ");
            py_repr_str(b, k->key, k->key_len);
            clip_buf_puts(b, ": ");
            if ((st = py_repr_json(b, &v->u.obj.members[d.last[i]].value, text, ujson, err))) {
                dict_view_free(&d);
                return st;
            }
        }
        clip_buf_putc(b, '}');
        dict_view_free(&d);
        break;
    }
    }
    return oom_status(b, err);
}

/* str() of a held value; row_float applies iterrows()' float upcast to ints. */
static clip_status held_str(clip_buf *b, const held *h, const char *text, int ujson, int row_float,
                            clip_error *err) {
    switch (h->k) {
    case H_MISSING:
    case H_NULL_NAN: clip_buf_puts(b, "nan"); break;
    case H_NONE: clip_buf_puts(b, "None"); break;
    case H_BOOL: clip_buf_puts(b, h->b ? "True" : "False"); break;
    case H_INT:
        if (row_float) {
            char tmp[64];
            if (h->n < sizeof tmp) {
                memcpy(tmp, h->s, h->n);
                tmp[h->n] = '\0';
                py_repr_float(b, strtod(tmp, NULL));
                break;
            }
        }
        clip_buf_append(b, h->s, h->n);
        break;
    case H_FLOAT: py_repr_float(b, h->d); break;
    case H_STR: clip_buf_append(b, h->s, h->n); break;
    case H_LIST:
    case H_DICT: return py_repr_json(b, h->jv, text, ujson, err);
    }
    return oom_status(b, err);
}

clip_status table_row_text(const table_row *row, const table_schema *s, int col, clip_buf *out,
                           clip_error *err) {
    if (!row || !out) return clip_fail(err, CLIP_ERR_ARG, "table_row_text: no row or buffer");
    if (s && s != row->r->s)
        return clip_fail(err, CLIP_ERR_ARG, "table_row_text: the row comes from another schema");
    if (!valid_col(row, col))
        return clip_fail(err, CLIP_ERR_ARG, "table_row_text: no column %d", col);
    out->len = 0;
    if (!clip_buf_reserve(out, 1)) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (text)");
    out->data[0] = '\0';
    held h;
    row_held(row, col, &h);
    return held_str(out, &h, row->text, row->r->in.fmt == TABLE_JSON, row->r->s->row_float, err);
}

/* ------------------------------------------------------------------ pandas' ujson output */

static void ujson_indent(clip_buf *b, int indent, int level) {
    if (indent <= 0) return;
    for (int i = 0; i < level * indent; i++) clip_buf_putc(b, ' ');
}

static void ujson_double(clip_buf *b, double d) {
    char tmp[64];
    if (!isfinite(d)) { /* objToJSON writes NaN and inf as null */
        clip_buf_puts(b, "null");
        return;
    }
    clip_buf_append(b, tmp, (size_t)table_format_double_ujson(d, tmp));
}

/* A nested JSON value as ujson encodes the Python object (indent > 0: the indent=2 layout,
 * `level` being the nesting level of v). */
static clip_status ujson_json(clip_buf *b, const json_value *v, const char *text, int ujson,
                              int indent, int level, clip_error *err) {
    clip_status st;
    switch (v->type) {
    case JSON_NULL: clip_buf_puts(b, "null"); break;
    case JSON_TRUE: clip_buf_puts(b, "true"); break;
    case JSON_FALSE: clip_buf_puts(b, "false"); break;
    case JSON_STRING: json_write_string(b, v->u.str.s, v->u.str.len, 1); break;
    case JSON_NUMBER: {
        held h;
        number_held(v, text, ujson, &h);
        if (h.k == H_INT)
            clip_buf_append(b, h.s, h.n);
        else if (h.k == H_FLOAT)
            ujson_double(b, h.d);
        else
            clip_buf_puts(b, "null");
        break;
    }
    case JSON_ARRAY:
        clip_buf_putc(b, '[');
        if (indent) clip_buf_putc(b, '\n');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) {
                clip_buf_putc(b, ',');
                if (indent) clip_buf_putc(b, '\n');
            }
            ujson_indent(b, indent, level + 1);
            if ((st = ujson_json(b, &v->u.arr.items[i], text, ujson, indent, level + 1, err)))
                return st;
        }
        if (indent) clip_buf_putc(b, '\n');
        ujson_indent(b, indent, level);
        clip_buf_putc(b, ']');
        break;
    case JSON_OBJECT: {
        dict_view d;
        if ((st = dict_view_build(v, &d, err))) return st;
        clip_buf_putc(b, '{');
        if (indent) clip_buf_putc(b, '\n');
        for (size_t i = 0; i < d.n; i++) {
            const json_member *k = &v->u.obj.members[d.first[i]];
            if (i) {
                clip_buf_putc(b, ',');
                if (indent) clip_buf_putc(b, '\n');
            }
            ujson_indent(b, indent, level + 1);
            json_write_string(b, k->key, k->key_len, 1);
            clip_buf_putc(b, ':');
            if ((st = ujson_json(b, &v->u.obj.members[d.last[i]].value, text, ujson, indent,
                                 level + 1, err))) {
                dict_view_free(&d);
                return st;
            }
        }
        if (indent) clip_buf_putc(b, '\n');
        ujson_indent(b, indent, level);
        clip_buf_putc(b, '}');
        dict_view_free(&d);
        break;
    }
    }
    return oom_status(b, err);
}

static clip_status held_json(clip_buf *b, const held *h, const char *text, int ujson, int indent,
                             int level, clip_error *err) {
    switch (h->k) {
    case H_MISSING:
    case H_NULL_NAN:
    case H_NONE: clip_buf_puts(b, "null"); break;
    case H_BOOL: clip_buf_puts(b, h->b ? "true" : "false"); break;
    case H_INT: clip_buf_append(b, h->s, h->n); break;
    case H_FLOAT: ujson_double(b, h->d); break;
    case H_STR: json_write_string(b, h->s, h->n, 1); break;
    case H_LIST:
    case H_DICT: return ujson_json(b, h->jv, text, ujson, indent, level, err);
    }
    return oom_status(b, err);
}

/* ------------------------------------------------------------------ Python's csv output */

/* QUOTE_MINIMAL with lineterminator "\n": quote when the field holds ',', '"' or '\n'. The
 * verbatim writer also quotes '\r', which pandas' reader would otherwise take as a line end. */
static void csv_field_out(clip_buf *b, const char *s, size_t n, int quote_cr) {
    int q = 0;
    for (size_t i = 0; i < n && !q; i++)
        q = s[i] == ',' || s[i] == '"' || s[i] == '\n' || (quote_cr && s[i] == '\r');
    if (!q) {
        clip_buf_append(b, s, n);
        return;
    }
    clip_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') clip_buf_putc(b, '"');
        clip_buf_putc(b, s[i]);
    }
    clip_buf_putc(b, '"');
}

/* to_csv's text of a cell: NaN/None empty, floats repr, lists/dicts repr (str()). */
static clip_status held_csv_text(clip_buf *b, const held *h, const char *text, int ujson,
                                 clip_error *err) {
    switch (h->k) {
    case H_MISSING:
    case H_NULL_NAN:
    case H_NONE: break; /* isna(): na_rep "" */
    case H_FLOAT:
        if (isnan(h->d)) break;
        return held_str(b, h, text, ujson, 0, err);
    default: return held_str(b, h, text, ujson, 0, err);
    }
    return oom_status(b, err);
}

/* ================================================================== writer */

struct table_writer {
    char *path, *tmp, *dir;
    FILE *f;
    table_write_options o;
    char *key;
    size_t keylen;
    const table_schema *s;
    int verbatim;  /* default mode, same format: copy rows, change only the score */
    int score_col; /* the key's column in the schema, or -1 */
    size_t nrows;
    clip_buf line;
};

/* The permissions a plain open() would give a new file (0666 minus the umask), read without
 * changing the process umask; the target's own mode when it already exists. */
static mode_t new_file_mode(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) return st.st_mode & 07777;
    mode_t mask = 022;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            unsigned m;
            if (sscanf(line, "Umask: %o", &m) == 1) {
                mask = (mode_t)m;
                break;
            }
        }
        fclose(f);
    }
    return 0666 & ~mask;
}

static void writer_free(table_writer *w) {
    if (!w) return;
    free(w->path);
    free(w->tmp);
    free(w->dir);
    free(w->key);
    clip_buf_free(&w->line);
    free(w);
}

static clip_status writer_put(table_writer *w, const clip_buf *b, clip_error *err) {
    if (b->oom) return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", w->path);
    if (b->len && fwrite(b->data, 1, b->len, w->f) != b->len)
        return clip_fail(err, CLIP_ERR_IO, "%s: write error: %s", w->tmp, strerror(errno));
    return CLIP_OK;
}

/* The score as the output shows it: Python repr (verbatim), or pandas' float64 column. */
static void score_text(clip_buf *b, const table_writer *w, double score) {
    if (!w->verbatim) {
        if (w->o.fmt == TABLE_CSV)
            py_repr_float(b, score);
        else
            ujson_double(b, score);
    } else if (w->o.fmt != TABLE_CSV && !isfinite(score)) {
        clip_buf_puts(b, isnan(score) ? "NaN" : score > 0 ? "Infinity" : "-Infinity");
    } else {
        py_repr_float(b, score);
    }
}

clip_status table_writer_open(const char *path, const table_write_options *o,
                              const table_schema *s, table_format in_fmt, table_writer **out,
                              clip_error *err) {
    *out = NULL;
    if (!path || !*path || !o || !s || !o->score_key || !*o->score_key)
        return clip_fail(err, CLIP_ERR_ARG, "table_writer_open: missing path, options, schema or key");
    if ((unsigned)o->fmt > TABLE_CSV || s->fmt != in_fmt)
        return clip_fail(err, CLIP_ERR_ARG, "%s: output format or input format does not match the schema", path);
    table_writer *w = calloc(1, sizeof *w);
    if (!w) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    w->o = *o;
    w->s = s;
    w->path = strdup(path);
    w->key = strdup(o->score_key);
    const char *slash = strrchr(path, '/');
    w->dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!w->path || !w->key || !w->dir) {
        writer_free(w);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    w->keylen = strlen(w->key);
    w->score_col = schema_lookup(s, w->key, w->keylen);
    w->verbatim = !o->pandas_compat && o->fmt == in_fmt;
    clip_status st = clip_mkdir_p(w->dir, err);
    if (st) {
        writer_free(w);
        return st;
    }
    const char *base = slash ? slash + 1 : path;
    clip_buf t = {0};
    clip_buf_printf(&t, "%s/.%s.tmp-XXXXXX", w->dir, base);
    if (t.oom) {
        clip_buf_free(&t);
        writer_free(w);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    w->tmp = t.data;
    mode_t mode = new_file_mode(path);
    int fd = mkstemp(w->tmp);
    if (fd < 0) {
        st = clip_fail(err, CLIP_ERR_IO, "%s: cannot create a temporary file in %s: %s", path,
                       w->dir, strerror(errno));
        writer_free(w);
        return st;
    }
    if (fchmod(fd, mode) != 0 || !(w->f = fdopen(fd, "wb"))) {
        st = clip_fail(err, CLIP_ERR_IO, "%s: %s", w->tmp, strerror(errno));
        close(fd);
        unlink(w->tmp);
        writer_free(w);
        return st;
    }
    /* What comes before the first row. */
    clip_buf *b = &w->line;
    b->len = 0;
    if (w->verbatim && o->fmt == TABLE_CSV) {
        if (s->csv_bom) clip_buf_puts(b, "\xEF\xBB\xBF");
        clip_buf_append(b, s->csv_header.data ? s->csv_header.data : "", s->csv_header.len);
        if (w->score_col < 0) {
            clip_buf_putc(b, ',');
            csv_field_out(b, w->key, w->keylen, 1);
        }
        clip_buf_puts(b, s->csv_header_term);
    } else if (!w->verbatim && o->fmt == TABLE_JSON) {
        clip_buf_puts(b, "[\n");
    } else if (!w->verbatim && o->fmt == TABLE_CSV) {
        size_t n = s->ncols + (w->score_col < 0);
        for (size_t c = 0; c < n; c++) {
            const char *name = c < s->ncols ? s->cols[c].name : w->key;
            size_t len = c < s->ncols ? s->cols[c].len : w->keylen;
            if (c) clip_buf_putc(b, ',');
            if (n == 1 && len == 0)
                clip_buf_puts(b, "\"\"");
            else
                csv_field_out(b, name, len, 0);
        }
        clip_buf_putc(b, '\n');
    }
    if ((st = writer_put(w, b, err))) {
        table_writer_abort(w);
        return st;
    }
    *out = w;
    return CLIP_OK;
}

/* A JSON object's text with the score member set: existing members named key get the new value
 * in place; otherwise the member is added after the last one, with the object's own separator
 * and indentation when mimic is set (JSON arrays), compact otherwise (JSONL). */
static void object_with_score(clip_buf *b, const char *text, const json_value *root,
                              const char *key, size_t keylen, const char *val, size_t vlen,
                              int mimic) {
    const json_member *m = root->u.obj.members;
    size_t n = root->u.obj.n, pos = root->start;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].key_len != keylen || memcmp(m[i].key, key, keylen)) continue;
        clip_buf_append(b, text + pos, m[i].value.start - pos);
        clip_buf_append(b, val, vlen);
        pos = m[i].value.end;
        found = 1;
    }
    if (found) {
        clip_buf_append(b, text + pos, root->end - pos);
        return;
    }
    size_t at = n ? m[n - 1].value.end : root->start + 1;
    clip_buf_append(b, text + root->start, at - root->start);
    if (n) {
        if (mimic && n >= 2) {
            clip_buf_append(b, text + m[n - 2].value.end, m[n - 1].key_start - m[n - 2].value.end);
        } else {
            clip_buf_putc(b, ',');
            /* One member shows no separator: reuse the line break and indentation before it,
             * or on one line a space when its key and value are spaced. */
            const char *ws = text + root->start + 1;
            size_t wn = m[0].key_start - root->start - 1;
            if (mimic && memchr(ws, '\n', wn))
                clip_buf_append(b, ws, wn);
            else if (mimic && memchr(text + m[0].key_end, ' ', m[0].value.start - m[0].key_end))
                clip_buf_putc(b, ' ');
        }
    }
    json_write_string(b, key, keylen, 0);
    if (n && mimic)
        clip_buf_append(b, text + m[n - 1].key_end, m[n - 1].value.start - m[n - 1].key_end);
    else
        clip_buf_putc(b, ':');
    clip_buf_append(b, val, vlen);
    clip_buf_append(b, text + at, root->end - at);
}

static clip_status row_verbatim(table_writer *w, const table_row *row, const char *val,
                                size_t vlen, clip_buf *b) {
    const src *in = &row->r->in;
    const char *raw = in->raw.data ? in->raw.data : "";
    if (in->fmt == TABLE_CSV) {
        size_t f = in->nfields, h = w->s->csv_header_fields;
        int k = w->score_col;
        if (k >= 0 && (size_t)k < f) {
            clip_buf_append(b, raw, in->fields[k].raw_start);
            clip_buf_append(b, val, vlen);
            clip_buf_append(b, raw + in->fields[k].raw_end, in->raw.len - in->fields[k].raw_end);
        } else {
            /* Short records get empty fields up to the score's column. */
            size_t pad = k >= 0 ? (size_t)k - f : h - f;
            clip_buf_append(b, raw, in->raw.len);
            for (size_t i = 0; i <= pad; i++) clip_buf_putc(b, ',');
            clip_buf_append(b, val, vlen);
        }
        clip_buf_puts(b, in->term);
        return CLIP_OK;
    }
    size_t off = (size_t)(row->text - raw);
    const json_value *root = row->root;
    if (in->fmt == TABLE_JSON) {
        const char *sep = in->sep.data ? in->sep.data : "";
        size_t slen = in->sep.len;
        if (w->nrows == 0) {
            /* The first row written follows the array's '[' even if earlier elements were
             * skipped: keep the spacing after their comma, not the comma. */
            const char *comma = memchr(sep, ',', slen);
            if (comma) {
                slen -= (size_t)(comma + 1 - sep);
                sep = comma + 1;
            }
            clip_buf_append(b, w->s->json_head.data ? w->s->json_head.data : "", w->s->json_head.len);
        }
        clip_buf_append(b, sep, slen);
    }
    clip_buf_append(b, raw, off + root->start);
    object_with_score(b, row->text, root, w->key, w->keylen, val, vlen, in->fmt == TABLE_JSON);
    clip_buf_append(b, raw + off + root->end, in->raw.len - off - root->end);
    if (in->fmt == TABLE_JSONL) clip_buf_puts(b, in->term);
    return CLIP_OK;
}

static clip_status row_pandas(table_writer *w, const table_row *row, double score, clip_buf *b,
                              clip_error *err) {
    const table_schema *s = w->s;
    int ujson = row->r->in.fmt == TABLE_JSON;
    size_t n = s->ncols + (w->score_col < 0);
    clip_status st;
    if (w->o.fmt == TABLE_CSV) {
        for (size_t c = 0; c < n; c++) {
            if (c) clip_buf_putc(b, ',');
            clip_buf cell = {0};
            if (c >= s->ncols || (int)c == w->score_col) {
                score_text(&cell, w, score);
            } else {
                held h;
                row_held(row, (int)c, &h);
                if ((st = held_csv_text(&cell, &h, row->text, ujson, err))) {
                    clip_buf_free(&cell);
                    return st;
                }
            }
            if (n == 1 && cell.len == 0)
                clip_buf_puts(b, "\"\"");
            else
                csv_field_out(b, cell.data ? cell.data : "", cell.len, 0);
            int oom = cell.oom;
            clip_buf_free(&cell);
            if (oom) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
        }
        clip_buf_putc(b, '\n');
        return oom_status(b, err);
    }
    int indent = w->o.fmt == TABLE_JSON ? 2 : 0;
    if (indent) {
        if (w->nrows) clip_buf_puts(b, ",\n");
        clip_buf_puts(b, "  {\n");
    } else {
        clip_buf_putc(b, '{');
    }
    for (size_t c = 0; c < n; c++) {
        if (c) clip_buf_puts(b, indent ? ",\n" : ",");
        ujson_indent(b, indent, 2);
        if (c < s->ncols)
            json_write_string(b, s->cols[c].name, s->cols[c].len, 1);
        else
            json_write_string(b, w->key, w->keylen, 1);
        clip_buf_putc(b, ':');
        if (c >= s->ncols || (int)c == w->score_col) {
            score_text(b, w, score);
        } else {
            held h;
            row_held(row, (int)c, &h);
            if ((st = held_json(b, &h, row->text, ujson, indent, 2, err))) return st;
        }
    }
    clip_buf_puts(b, indent ? "\n  }" : "}\n");
    return oom_status(b, err);
}

clip_status table_writer_row(table_writer *w, const table_row *row, double score,
                             clip_error *err) {
    if (!w || !row) return clip_fail(err, CLIP_ERR_ARG, "table_writer_row: no writer or row");
    if (row->r->s != w->s)
        return clip_fail(err, CLIP_ERR_ARG, "table_writer_row: the row comes from another schema");
    clip_buf *b = &w->line;
    b->len = 0;
    clip_status st;
    if (w->verbatim) {
        clip_buf val = {0};
        score_text(&val, w, score);
        st = val.oom ? clip_fail(err, CLIP_ERR_NOMEM, "out of memory")
                     : row_verbatim(w, row, val.data, val.len, b);
        clip_buf_free(&val);
    } else {
        st = row_pandas(w, row, score, b, err);
    }
    if (!st) st = writer_put(w, b, err);
    if (!st) w->nrows++;
    return st;
}

void table_writer_abort(table_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp) unlink(w->tmp);
    writer_free(w);
}

clip_status table_writer_commit(table_writer *w, clip_error *err) {
    if (!w) return clip_fail(err, CLIP_ERR_ARG, "table_writer_commit: no writer");
    clip_buf *b = &w->line;
    b->len = 0;
    const table_schema *s = w->s;
    if (w->verbatim && w->o.fmt == TABLE_JSON) {
        if (!w->nrows)
            clip_buf_append(b, s->json_head.data ? s->json_head.data : "", s->json_head.len);
        clip_buf_append(b, s->json_tail.data ? s->json_tail.data : "", s->json_tail.len);
    } else if (!w->verbatim && w->o.fmt == TABLE_JSON) {
        clip_buf_puts(b, "\n]");
    } else if (!w->verbatim && w->o.fmt == TABLE_JSONL && !w->nrows) {
        clip_buf_putc(b, '\n'); /* to_json(lines=True) of an empty frame */
    }
    clip_status st = writer_put(w, b, err);
    if (!st && (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0))
        st = clip_fail(err, CLIP_ERR_IO, "%s: cannot flush: %s", w->tmp, strerror(errno));
    int rc = fclose(w->f);
    w->f = NULL;
    if (!st && rc != 0) st = clip_fail(err, CLIP_ERR_IO, "%s: cannot close: %s", w->tmp, strerror(errno));
    if (!st && rename(w->tmp, w->path) != 0)
        st = clip_fail(err, CLIP_ERR_IO, "%s: cannot rename the temporary file over it: %s",
                       w->path, strerror(errno));
    if (st) {
        table_writer_abort(w);
        return st;
    }
    /* The rename is durable only once the folder itself is synced. */
    int dfd = open(w->dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL)
            st = clip_fail(err, CLIP_ERR_IO, "%s: cannot sync the folder: %s", w->dir, strerror(errno));
        close(dfd);
    }
    writer_free(w);
    return st;
}
