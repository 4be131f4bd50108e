/* numbers.c — pandas' number parsers (read_csv's tokenizer.c, read_json's ujson decoder)
 * and ujson's double formatting (to_json). */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ to_json's doubles */

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

/* ------------------------------------------------------------------ read_csv's parsers */

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
int pd_parse_double(const char *w, double *out) {
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

/* tokenizer.c str_to_int64: spaces, sign, digits (overflow is noticed before trailing junk),
 * spaces. */
int pd_str_to_int64(const char *p, int64_t *out) {
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
int pd_str_to_uint64(const char *p, uint64_t *out, int *seen_sint, int *seen_uint) {
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
int pd_parse_bool(const char *w, int *out) {
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
int pd_is_na(const char *w) {
    static const char *const na[] = {"",        "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN",
                                     "-NaN",    "-nan", "1.#IND",   "1.#QNAN", "<NA>", "N/A",
                                     "NA",      "NULL", "NaN",      "n/a",     "nan",  "null"};
    for (size_t i = 0; i < sizeof na / sizeof na[0]; i++)
        if (!strcmp(w, na[i])) return 1;
    return 0;
}

/* ------------------------------------------------------------------ read_json's numbers */

/* ultrajsondec.c decode_numeric without preciseFloat: integer digits in a uint64 whose overflow
 * checks only catch some wraparounds (so 30000000000000000000 silently becomes
 * 11553255926290448384, as in pandas), at most 15 fraction digits summed as a double, and
 * pow(10, exponent). NaN decodes to None. Input: a JSON number literal json.c accepted. */
void ujson_number(const char *s, size_t n, uj_num *out) {
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
