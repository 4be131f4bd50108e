/* pyvalue.c — JSON values as the Python objects json.loads / ujson make of them, and each
 * cell as pandas holds it once the column's dtype is applied. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ JSON values as Python objects */


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

/* How json.loads (jsonl) or pandas' ujson (json) hands this value to maybe_convert_objects. */
pyinfo py_classify(const json_value *v, const char *text, int ujson) {
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
double py_number_value(const json_value *v, const char *text, int ujson, int *is_none) {
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
int py_to_float(const json_value *v, const char *text, double *out) {
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

int integral_int64(double f) {
    return isfinite(f) && f == floor(f) && f >= -9223372036854775808.0 &&
           f < 9223372036854775808.0;
}

/* ------------------------------------------------------------------ cells as pandas holds them */


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

void csv_held(const column *c, const char *w, int missing, held *h) {
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

void json_held(const column *c, const json_value *v, const char *text, int ujson, held *h) {
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
