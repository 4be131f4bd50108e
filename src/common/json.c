/* json.c — strict JSON reader with value spans (see json.h). */
#include "json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* All nodes and decoded strings of one document live in an arena of blocks, freed at once. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    union {
        double d;
        long long l;
        void *p;
    } data[];
} arena_block;

struct json_doc {
    arena_block *blocks;
    json_value root;
};

typedef struct parser {
    const char *s;
    size_t len, pos;
    const char *what;
    int max_depth;
    json_doc *doc;
    clip_error *err;
    /* scratch stacks of children being collected for open arrays/objects */
    json_value *vstack;
    size_t vn, vcap;
    json_member *mstack;
    size_t mn, mcap;
} parser;

static void *arena_alloc(json_doc *doc, size_t n) {
    n = (n + 15) & ~(size_t)15;
    arena_block *b = doc->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = doc->blocks;
        b->used = 0;
        b->cap = cap;
        doc->blocks = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static clip_status fail_at(parser *p, size_t pos, clip_status code, const char *msg) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos && i < p->len; i++) {
        if (p->s[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return clip_fail(p->err, code, "%s: invalid JSON at line %zu, column %zu: %s", p->what, line,
                     col, msg);
}

static clip_status oom(parser *p) {
    return clip_fail(p->err, CLIP_ERR_NOMEM, "%s: out of memory while parsing JSON", p->what);
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            p->pos++;
        else
            break;
    }
}

int json_utf8_decode(const unsigned char *s, size_t len, unsigned *cp) {
    if (len == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int n;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        c &= 0x1F;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        c &= 0x0F;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        c &= 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)n > len) return 0;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return n;
}

int json_utf8_encode(unsigned cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

/* Parses a string literal at p->pos (which is '"'); decoded copy goes to the arena. */
static clip_status parse_string(parser *p, const char **out, size_t *out_len) {
    size_t start = p->pos++;
    /* First find the end to size the copy: decoded length <= raw length. */
    size_t i = p->pos;
    while (i < p->len && p->s[i] != '"') {
        if (p->s[i] == '\\') i++;
        i++;
    }
    if (i >= p->len) return fail_at(p, start, CLIP_ERR_FORMAT, "unterminated string");
    char *dst = arena_alloc(p->doc, i - p->pos + 1);
    if (!dst) return oom(p);
    size_t n = 0;
    while (p->pos < i) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '\\') {
            char e = p->s[p->pos + 1];
            size_t epos = p->pos;
            p->pos += 2;
            switch (e) {
            case '"': dst[n++] = '"'; break;
            case '\\': dst[n++] = '\\'; break;
            case '/': dst[n++] = '/'; break;
            case 'b': dst[n++] = '\b'; break;
            case 'f': dst[n++] = '\f'; break;
            case 'n': dst[n++] = '\n'; break;
            case 'r': dst[n++] = '\r'; break;
            case 't': dst[n++] = '\t'; break;
            case 'u': {
                unsigned cp;
                if (p->pos + 4 > i || !hex4(p->s + p->pos, &cp))
                    return fail_at(p, epos, CLIP_ERR_FORMAT, "bad \\u escape");
                p->pos += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (p->pos + 6 <= i && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u' &&
                        hex4(p->s + p->pos + 2, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                        p->pos += 6;
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else {
                        cp = 0xFFFD; /* lone high surrogate */
                    }
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    cp = 0xFFFD; /* lone low surrogate */
                }
                n += (size_t)json_utf8_encode(cp, dst + n);
                break;
            }
            default: return fail_at(p, epos, CLIP_ERR_FORMAT, "bad escape in string");
            }
        } else if (c < 0x20) {
            return fail_at(p, p->pos, CLIP_ERR_FORMAT, "control character in string");
        } else if (c < 0x80) {
            dst[n++] = (char)c;
            p->pos++;
        } else {
            unsigned cp;
            int k = json_utf8_decode((const unsigned char *)p->s + p->pos, i - p->pos, &cp);
            if (!k) return fail_at(p, p->pos, CLIP_ERR_FORMAT, "invalid UTF-8 in string");
            memcpy(dst + n, p->s + p->pos, (size_t)k);
            n += (size_t)k;
            p->pos += (size_t)k;
        }
    }
    p->pos = i + 1;
    dst[n] = '\0';
    *out = dst;
    *out_len = n;
    return CLIP_OK;
}

static int lit(parser *p, const char *w) {
    size_t n = strlen(w);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, w, n) == 0) {
        p->pos += n;
        return 1;
    }
    return 0;
}

static clip_status parse_number(parser *p, json_value *v) {
    size_t start = p->pos;
    size_t i = p->pos;
    int is_int = 1;
    if (i < p->len && p->s[i] == '-') i++;
    if (i < p->len && p->s[i] == 'I') { /* -Infinity */
        p->pos = i;
        if (!lit(p, "Infinity")) return fail_at(p, start, CLIP_ERR_FORMAT, "bad number");
        v->type = JSON_NUMBER;
        v->u.num.d = -INFINITY;
        v->u.num.is_int = 0;
        v->u.num.nonfinite = 1;
        return CLIP_OK;
    }
    if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
        return fail_at(p, start, CLIP_ERR_FORMAT, "bad number");
    if (p->s[i] == '0') {
        i++;
    } else {
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    if (i < p->len && p->s[i] == '.') {
        is_int = 0;
        i++;
        if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
            return fail_at(p, start, CLIP_ERR_FORMAT, "bad number: digit expected after '.'");
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        is_int = 0;
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
            return fail_at(p, start, CLIP_ERR_FORMAT, "bad number: digit expected in exponent");
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    /* strtod needs a terminated copy; numbers are short, but do not trust that. */
    char small[64];
    size_t n = i - start;
    char *tmp = n < sizeof small ? small : malloc(n + 1);
    if (!tmp) return oom(p);
    memcpy(tmp, p->s + start, n);
    tmp[n] = '\0';
    v->type = JSON_NUMBER;
    v->u.num.d = strtod(tmp, NULL);
    v->u.num.is_int = is_int;
    v->u.num.nonfinite = 0;
    if (tmp != small) free(tmp);
    p->pos = i;
    return CLIP_OK;
}

static clip_status parse_value(parser *p, json_value *v, int depth);

static clip_status push_value(parser *p, const json_value *v) {
    if (p->vn == p->vcap) {
        size_t ncap = p->vcap ? p->vcap * 2 : 64;
        json_value *nv = realloc(p->vstack, ncap * sizeof *nv);
        if (!nv) return oom(p);
        p->vstack = nv;
        p->vcap = ncap;
    }
    p->vstack[p->vn++] = *v;
    return CLIP_OK;
}

static clip_status push_member(parser *p, const json_member *m) {
    if (p->mn == p->mcap) {
        size_t ncap = p->mcap ? p->mcap * 2 : 64;
        json_member *nm = realloc(p->mstack, ncap * sizeof *nm);
        if (!nm) return oom(p);
        p->mstack = nm;
        p->mcap = ncap;
    }
    p->mstack[p->mn++] = *m;
    return CLIP_OK;
}

static clip_status parse_array(parser *p, json_value *v, int depth) {
    size_t base = p->vn;
    p->pos++; /* '[' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
    } else {
        for (;;) {
            json_value item;
            clip_status st = parse_value(p, &item, depth + 1);
            if (st) return st;
            if ((st = push_value(p, &item))) return st;
            skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->pos < p->len && p->s[p->pos] == ']') {
                p->pos++;
                break;
            }
            return fail_at(p, p->pos, CLIP_ERR_FORMAT, "expected ',' or ']' in array");
        }
    }
    size_t n = p->vn - base;
    v->type = JSON_ARRAY;
    v->u.arr.n = n;
    v->u.arr.items = NULL;
    if (n) {
        size_t bytes;
        if (!clip_mul_size(n, sizeof(json_value), &bytes)) return oom(p);
        v->u.arr.items = arena_alloc(p->doc, bytes);
        if (!v->u.arr.items) return oom(p);
        memcpy(v->u.arr.items, p->vstack + base, bytes);
    }
    p->vn = base;
    return CLIP_OK;
}

static clip_status parse_object(parser *p, json_value *v, int depth) {
    size_t base = p->mn;
    p->pos++; /* '{' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
    } else {
        for (;;) {
            json_member m;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return fail_at(p, p->pos, CLIP_ERR_FORMAT, "expected a string key in object");
            m.key_start = p->pos;
            clip_status st = parse_string(p, &m.key, &m.key_len);
            if (st) return st;
            m.key_end = p->pos;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':')
                return fail_at(p, p->pos, CLIP_ERR_FORMAT, "expected ':' after object key");
            p->pos++;
            if ((st = parse_value(p, &m.value, depth + 1))) return st;
            if ((st = push_member(p, &m))) return st;
            skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->pos < p->len && p->s[p->pos] == '}') {
                p->pos++;
                break;
            }
            return fail_at(p, p->pos, CLIP_ERR_FORMAT, "expected ',' or '}' in object");
        }
    }
    size_t n = p->mn - base;
    v->type = JSON_OBJECT;
    v->u.obj.n = n;
    v->u.obj.members = NULL;
    if (n) {
        size_t bytes;
        if (!clip_mul_size(n, sizeof(json_member), &bytes)) return oom(p);
        v->u.obj.members = arena_alloc(p->doc, bytes);
        if (!v->u.obj.members) return oom(p);
        memcpy(v->u.obj.members, p->mstack + base, bytes);
    }
    p->mn = base;
    return CLIP_OK;
}

static clip_status parse_value(parser *p, json_value *v, int depth) {
    skip_ws(p);
    memset(v, 0, sizeof *v);
    v->start = p->pos;
    if (p->pos >= p->len) return fail_at(p, p->pos, CLIP_ERR_FORMAT, "unexpected end of input");
    clip_status st = CLIP_OK;
    char c = p->s[p->pos];
    if ((c == '[' || c == '{') && depth >= p->max_depth) {
        char msg[96];
        snprintf(msg, sizeof msg, "nesting deeper than %d levels", p->max_depth);
        return fail_at(p, p->pos, CLIP_ERR_LIMIT, msg);
    }
    switch (c) {
    case '{': st = parse_object(p, v, depth); break;
    case '[': st = parse_array(p, v, depth); break;
    case '"':
        v->type = JSON_STRING;
        st = parse_string(p, &v->u.str.s, &v->u.str.len);
        break;
    case 't':
        if (!lit(p, "true")) return fail_at(p, p->pos, CLIP_ERR_FORMAT, "unexpected character");
        v->type = JSON_TRUE;
        break;
    case 'f':
        if (!lit(p, "false")) return fail_at(p, p->pos, CLIP_ERR_FORMAT, "unexpected character");
        v->type = JSON_FALSE;
        break;
    case 'n':
        if (!lit(p, "null")) return fail_at(p, p->pos, CLIP_ERR_FORMAT, "unexpected character");
        v->type = JSON_NULL;
        break;
    case 'N':
        if (!lit(p, "NaN")) return fail_at(p, p->pos, CLIP_ERR_FORMAT, "unexpected character");
        v->type = JSON_NUMBER;
        v->u.num.d = NAN;
        v->u.num.nonfinite = 1;
        break;
    case 'I':
        if (!lit(p, "Infinity"))
            return fail_at(p, p->pos, CLIP_ERR_FORMAT, "unexpected character");
        v->type = JSON_NUMBER;
        v->u.num.d = INFINITY;
        v->u.num.nonfinite = 1;
        break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            st = parse_number(p, v);
        } else {
            return fail_at(p, p->pos, CLIP_ERR_FORMAT, "unexpected character");
        }
    }
    v->end = p->pos;
    return st;
}

clip_status json_parse(const char *text, size_t len, const char *what, int max_depth,
                       json_doc **out, clip_error *err) {
    *out = NULL;
    json_doc *doc = calloc(1, sizeof *doc);
    if (!doc) return clip_fail(err, CLIP_ERR_NOMEM, "%s: out of memory", what);
    parser p = {.s = text, .len = len, .what = what ? what : "JSON",
                .max_depth = max_depth > 0 ? max_depth : JSON_DEFAULT_MAX_DEPTH, .doc = doc,
                .err = err};
    clip_status st = parse_value(&p, &doc->root, 0);
    if (!st) {
        skip_ws(&p);
        if (p.pos != p.len) st = fail_at(&p, p.pos, CLIP_ERR_FORMAT, "extra data after the value");
    }
    free(p.vstack);
    free(p.mstack);
    if (st) {
        json_doc_free(doc);
        return st;
    }
    *out = doc;
    return CLIP_OK;
}

const json_value *json_doc_root(const json_doc *doc) { return &doc->root; }

void json_doc_free(json_doc *doc) {
    if (!doc) return;
    arena_block *b = doc->blocks;
    while (b) {
        arena_block *n = b->next;
        free(b);
        b = n;
    }
    free(doc);
}

clip_status json_parse_file(const char *path, size_t max_bytes, int max_depth, json_doc **out,
                            clip_error *err) {
    char *data;
    size_t len;
    *out = NULL;
    clip_status st = clip_read_file(path, max_bytes, &data, &len, err);
    if (st) return st;
    st = json_parse(data, len, path, max_depth, out, err);
    free(data);
    return st;
}

const json_value *json_get(const json_value *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (size_t i = obj->u.obj.n; i-- > 0;) {
        const json_member *m = &obj->u.obj.members[i];
        if (m->key_len == kl && memcmp(m->key, key, kl) == 0) return &m->value;
    }
    return NULL;
}

int json_get_int(const json_value *obj, const char *key, long long *out) {
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_NUMBER || v->u.num.nonfinite) return -1;
    double d = v->u.num.d;
    if (d != floor(d) || d < -9.2e18 || d > 9.2e18) return -1;
    *out = (long long)d;
    return 1;
}

int json_get_number(const json_value *obj, const char *key, double *out) {
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_NUMBER) return -1;
    *out = v->u.num.d;
    return 1;
}

int json_get_bool(const json_value *obj, const char *key, int *out) {
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_TRUE && v->type != JSON_FALSE) return -1;
    *out = v->type == JSON_TRUE;
    return 1;
}

int json_get_string(const json_value *obj, const char *key, const char **out) {
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_STRING) return -1;
    *out = v->u.str.s;
    return 1;
}

const char *json_type_name(json_type t) {
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_FALSE:
    case JSON_TRUE: return "boolean";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "?";
}

int json_write_string(clip_buf *b, const char *s, size_t len, int escape_slash) {
    static const char hex[] = "0123456789abcdef";
    if (!clip_buf_putc(b, '"')) return 0;
    size_t run = 0; /* start of the pending unescaped run */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char ubuf[7];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '/' && escape_slash)
            esc = "\\/";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\b')
            esc = "\\b";
        else if (c == '\f')
            esc = "\\f";
        else if (c < 0x20) {
            ubuf[0] = '\\';
            ubuf[1] = 'u';
            ubuf[2] = '0';
            ubuf[3] = '0';
            ubuf[4] = hex[c >> 4];
            ubuf[5] = hex[c & 15];
            ubuf[6] = '\0';
            esc = ubuf;
        }
        if (esc) {
            if (!clip_buf_append(b, s + run, i - run) || !clip_buf_puts(b, esc)) return 0;
            run = i + 1;
        }
    }
    return clip_buf_append(b, s + run, len - run) && clip_buf_putc(b, '"');
}
