/* compare.c — `clipeval compare A B` (see compare.h).
 *
 * B is the reference: relative errors are max |A - B| / max |B| per tensor. A tensor is within
 * tolerance when max |A - B| <= atol + rtol * max |B| (and, when a cosine bound is set, every
 * row's cosine is at least that bound). Stacked hidden states are judged index by index, each
 * against its own max |B|, because each index is the output of a different layer.
 *
 * Layouts that differ only by a convention are brought to one canonical [S, R, C] form
 * (stack/head, row, column) and the conversion is named in the report:
 *   - a batch dimension of 1 ([1, N, H] vs [N, H]);
 *   - heads split ([N, heads, head_dim] or [heads, N, head_dim]) vs merged [N, H];
 *   - attention probabilities [heads, N, N] vs [heads * N, N];
 *   - patch_conv as the Conv2d output [D, g, g], channels last [g, g, D] or one row per patch
 *     [g * g, D];
 *   - text rows: padded (77) vs unpadded (the real tokens) sequences, and, when both are
 *     padded, only the real tokens' rows are compared: backends differ on padded rows by design
 *     (HF masks padded keys, clipeval runs the causal mask only) and no padded row is pooled;
 *   - hidden states given as separate files <tower>.hidden_states.K.npy are stacked. */
#include "compare.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clip.h"
#include "json.h"
#include "npy.h"
#include "trace_names.h"
#include "util.h"

/* Default tolerances (README "Checking another backend against clipeval").
 * fp32: PyTorch's own fp32 run is within 1.04e-6 of max |ref| of its fp64 run at the outputs
 * (golden/README.md: vitb32-synth text_embeds 1.92e-7 of max 0.184; the other outputs 5.7e-7 ..
 * 1.0e-6); two independent fp32 backends then differ by about twice that, and the largest
 * clipeval-vs-HF difference over every golden/debug tensor is 2.3e-6 (ViT-B/32 patch_conv). The
 * preset is 1e-5: ~10x PyTorch's own error, 4x the largest difference seen, still far below what
 * a defect does (1e-3 of the scale or more).
 * bf16: a PyTorch bf16 forward of the eager CLIP graph on vitb32-synth (weights, activations,
 * LayerNorm and softmax in bf16; tools/hf_trace.py --precision bf16) against clipeval's fp32
 * trace, all 253 float tensors: worst max rel 3.55e-2 (an attn_probs), min row cosine
 * 1 - 4.9e-4. The preset is ~3x that: rtol 0.1, cosine 0.998. (bf16 weights alone, fp32
 * arithmetic, tools/round_weights.py: 1.28e-2, 1 - 7.3e-5.)
 * fp16: the bf16 preset scaled by the ratio of the unit roundoffs, 2^-11 / 2^-8 = 1/8 (fp16
 * weights alone measure 1.53e-3, 1 - 1.5e-6: inside it). */
#define FP32_RTOL 1e-5
#define BF16_RTOL 1e-1
#define BF16_COS 0.998
#define FP16_RTOL 1.25e-2
#define FP16_COS 0.99975

static const char *compare_help =
    "usage: clipeval compare A B [--precision fp32|bf16|fp16] [--rtol Y] [--atol X] [--cos Z]\n"
    "                            [--json]\n"
    "Compares two trace folders (clipeval trace, tools/hf_trace.py, or any folder of\n"
    "<name>.npy files in the golden/debug layout) tensor by tensor in forward order. B is the\n"
    "reference: a tensor is within tolerance when max|A-B| <= atol + rtol * max|B| (stacked\n"
    "hidden_states: per index) and, with --cos, every row's cosine is >= Z. Token ids, attention\n"
    "mask and pool index must be equal.\n"
    "Reports per tensor max abs error, max relative error (to max|B|), min cosine over rows and\n"
    "shape; then the first tensor out of tolerance in each tower and what it is computed from,\n"
    "and the tensors found in one folder only.\n"
    "Tolerance presets (--precision; default: from the manifests, else fp32):\n"
    "  fp32  rtol 1e-5 (10x PyTorch's own fp32-vs-fp64 error, golden/README.md)\n"
    "  bf16  rtol 0.1, cos 0.998 (~3x a bf16 PyTorch forward's worst on vitb32-synth)\n"
    "  fp16  rtol 0.0125, cos 0.99975 (bf16's scaled by the unit roundoff ratio 1/8)\n"
    "--rtol, --atol (default 0) and --cos (default: not checked for fp32) override the preset.\n"
    "Layout conventions handled and named in the report: batch dimension of 1, heads split vs\n"
    "merged, padded vs unpadded text rows (only real tokens' rows are compared), patch_conv as\n"
    "[D,g,g] or [g*g,D], hidden_states as one stacked file or one file per index.\n"
    "--json prints the report as one JSON object.\n"
    "Exit status: 0 all within tolerance, 1 out of tolerance, 2 unusable input.\n";

/* ------------------------------------------------------------------ folders */

typedef struct tensor {
    char name[128];
    npy_array a;
    char origin[160]; /* set when the folder gave it in another form (stacked files) */
} tensor;

typedef struct folder {
    const char *path;
    const char *tag; /* "A" or "B" */
    tensor *t;
    size_t n;
    char precision[16]; /* "fp32", "bf16", "fp16" or "" (from the manifest) */
    char about[256];    /* generator, device, precision: for the report header */
    long long text_len; /* manifest text_len, -1 when absent */
} folder;

static int report_error(const char *fmt, ...) CLIP_PRINTF(1, 2);
static int report_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "clipeval compare: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

static void folder_free(folder *f) {
    for (size_t i = 0; i < f->n; i++) npy_free(&f->t[i].a);
    free(f->t);
    f->t = NULL;
    f->n = 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const tensor *)a)->name, ((const tensor *)b)->name);
}

static tensor *find(const folder *f, const char *name) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

static void shape_str(const size_t *shape, int ndim, char *buf, size_t cap) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%zu", i ? "," : "", shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Shapes equal once every size-1 dimension is dropped ([] vs [1], [1,77] vs [77]). */
static int same_squeezed(const size_t *a, int na, const size_t *b, int nb) {
    int i = 0, j = 0;
    for (;;) {
        while (i < na && a[i] == 1) i++;
        while (j < nb && b[j] == 1) j++;
        if (i == na || j == nb) return i == na && j == nb;
        if (a[i++] != b[j++]) return 0;
    }
}

/* The manifest is optional; when present it must be valid JSON and agree with the files. */
static int read_manifest(folder *f) {
    char path[4400];
    snprintf(path, sizeof path, "%s/manifest.json", f->path);
    if (!clip_is_file(path)) return 0;
    json_doc *doc;
    clip_error e = {0};
    if (json_parse_file(path, 64u << 20, 0, &doc, &e))
        return report_error("%s: %s: malformed manifest: %s", f->tag, path, e.msg);
    int rc = 0;
    const json_value *root = json_doc_root(doc);
    const char *s;
    long long v;
    if (root->type != JSON_OBJECT) {
        rc = report_error("%s: %s: malformed manifest: the top level is %s, not an object", f->tag,
                          path, json_type_name(root->type));
        goto done;
    }
    if (json_get_string(root, "precision", &s) == 1)
        snprintf(f->precision, sizeof f->precision, "%s", s);
    else if (json_get_string(root, "dtype", &s) == 1)
        snprintf(f->precision, sizeof f->precision, "%s",
                 !strcmp(s, "float32")    ? "fp32"
                 : !strcmp(s, "bfloat16") ? "bf16"
                 : !strcmp(s, "float16")  ? "fp16"
                                          : "");
    f->text_len = json_get_int(root, "text_len", &v) == 1 ? v : -1;
    {
        const char *gen = NULL, *ver = NULL, *dev = NULL;
        json_get_string(root, "generator", &gen);
        json_get_string(root, "clipeval_version", &ver);
        json_get_string(root, "device", &dev);
        snprintf(f->about, sizeof f->about, "%s%s%s%s%s%s%s", gen ? gen : "", ver ? " " : "",
                 ver ? ver : "", dev ? (gen ? ", " : "") : "", dev ? dev : "",
                 f->precision[0] && (gen || dev) ? ", " : "", f->precision);
    }
    const json_value *files = json_get(root, "files");
    if (!files) goto done;
    if (files->type != JSON_OBJECT) {
        rc = report_error("%s: %s: malformed manifest: \"files\" is %s, not an object", f->tag,
                          path, json_type_name(files->type));
        goto done;
    }
    for (size_t i = 0; i < files->u.obj.n && !rc; i++) {
        const json_member *mb = &files->u.obj.members[i];
        char name[160];
        size_t kl = strlen(mb->key);
        if (kl < 5 || kl - 4 >= sizeof name || strcmp(mb->key + kl - 4, ".npy") != 0) {
            rc = report_error("%s: %s: malformed manifest: file entry \"%.100s\" is not a "
                              ".npy name", f->tag, path, mb->key);
            break;
        }
        snprintf(name, sizeof name, "%.*s", (int)(kl - 4), mb->key);
        const tensor *t = find(f, name);
        if (!t) {
            rc = report_error("%s: %s lists %s, but the folder has no such file", f->tag, path,
                              mb->key);
            break;
        }
        const json_value *shp = json_get(&mb->value, "shape");
        if (!shp) continue;
        size_t want[NPY_MAX_DIMS];
        int nd = 0, ok = shp->type == JSON_ARRAY && shp->u.arr.n <= NPY_MAX_DIMS;
        for (size_t k = 0; ok && k < shp->u.arr.n; k++) {
            const json_value *d = &shp->u.arr.items[k];
            ok = d->type == JSON_NUMBER && d->u.num.is_int && d->u.num.d >= 0 && d->u.num.d < 1e15;
            if (ok) want[nd++] = (size_t)d->u.num.d;
        }
        if (!ok) {
            rc = report_error("%s: %s: malformed manifest: the shape of %s is not a list of sizes",
                              f->tag, path, mb->key);
        } else if (!same_squeezed(want, nd, t->a.shape, t->a.ndim)) {
            char s1[96], s2[96];
            shape_str(want, nd, s1, sizeof s1);
            shape_str(t->a.shape, t->a.ndim, s2, sizeof s2);
            rc = report_error("%s: %s says %s has shape %s, the file holds %s", f->tag, path,
                              mb->key, s1, s2);
        }
    }
done:
    json_doc_free(doc);
    return rc;
}

/* "<tower>.hidden_states.K.npy" files (one per index) -> one stacked tensor. */
static int stack_split_hidden(folder *f, const char *tower) {
    char prefix[64], stacked[64];
    int plen = snprintf(prefix, sizeof prefix, "%s.hidden_states.", tower);
    snprintf(stacked, sizeof stacked, "%s.hidden_states", tower);
    if (find(f, stacked)) return 0;
    size_t n = 0;
    for (size_t i = 0; i < f->n; i++)
        if (!strncmp(f->t[i].name, prefix, (size_t)plen)) n++;
    if (n == 0) return 0;
    tensor **parts = calloc(n, sizeof *parts);
    if (!parts) return report_error("out of memory");
    int rc = 0;
    for (size_t i = 0; i < f->n && !rc; i++) {
        const char *rest = f->t[i].name + plen;
        if (strncmp(f->t[i].name, prefix, (size_t)plen) != 0) continue;
        char *end;
        errno = 0;
        unsigned long k = strtoul(rest, &end, 10);
        if (*rest < '0' || *rest > '9' || *end || errno || k >= n || parts[k])
            rc = report_error("%s: %s/%s.npy: the split hidden states must be %s0 .. %s%zu",
                              f->tag, f->path, f->t[i].name, prefix, prefix, n - 1);
        else
            parts[k] = &f->t[i];
    }
    /* each part as [N, H] (a leading batch dimension of 1 is dropped) */
    size_t rows = 0, cols = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        const npy_array *a = &parts[k]->a;
        int nd = a->ndim, off = 0;
        while (nd - off > 2 && a->shape[off] == 1) off++;
        size_t r = nd - off == 2 ? a->shape[off] : 0, c = nd - off == 2 ? a->shape[off + 1] : 0;
        if (k == 0) {
            rows = r;
            cols = c;
        }
        if (!r || r != rows || c != cols || (a->dtype != NPY_F32 && a->dtype != NPY_F64))
            rc = report_error("%s: %s/%s.npy: every split hidden state must be a float [N, H] "
                              "array of the same shape", f->tag, f->path, parts[k]->name);
    }
    npy_array st = {0};
    if (!rc) {
        st.dtype = NPY_F64;
        st.ndim = 3;
        st.shape[0] = n;
        st.shape[1] = rows;
        st.shape[2] = cols;
        st.count = n * rows * cols;
        st.elem_size = 8;
        st.data = malloc(sizeof(double) * st.count);
        if (!st.data) rc = report_error("out of memory");
    }
    for (size_t k = 0; k < n && !rc; k++) {
        const npy_array *a = &parts[k]->a;
        double *d = (double *)st.data + k * rows * cols;
        for (size_t j = 0; j < rows * cols; j++)
            d[j] = a->dtype == NPY_F32 ? ((const float *)a->data)[j] : ((const double *)a->data)[j];
    }
    if (!rc) { /* the parts leave the list; the stacked tensor takes the first part's slot */
        tensor *keep = parts[0];
        for (size_t k = 1; k < n; k++) {
            npy_free(&parts[k]->a);
            parts[k]->name[0] = '\0';
        }
        npy_free(&keep->a);
        keep->a = st;
        snprintf(keep->name, sizeof keep->name, "%s", stacked);
        snprintf(keep->origin, sizeof keep->origin, "%s: stacked from %zu files %sK.npy", f->tag,
                 n, prefix);
        size_t w = 0;
        for (size_t i = 0; i < f->n; i++)
            if (f->t[i].name[0]) f->t[w++] = f->t[i];
        f->n = w;
        qsort(f->t, f->n, sizeof *f->t, by_name);
    }
    free(parts);
    return rc;
}

static int load_folder(folder *f) {
    struct stat st;
    if (stat(f->path, &st) != 0)
        return report_error("%s: %s: %s", f->tag, f->path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return report_error("%s: %s is not a folder (a trace is a folder of .npy files)", f->tag,
                            f->path);
    DIR *d = opendir(f->path);
    if (!d) return report_error("%s: %s: cannot list: %s", f->tag, f->path, strerror(errno));
    size_t cap = 0;
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l <= 4 || strcmp(de->d_name + l - 4, ".npy") != 0) continue;
        if (l - 4 >= sizeof f->t[0].name) {
            rc = report_error("%s: %s/%.60s...: file name too long", f->tag, f->path, de->d_name);
            break;
        }
        if (f->n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            tensor *nt = realloc(f->t, sizeof(tensor) * ncap);
            if (!nt) {
                rc = report_error("out of memory");
                break;
            }
            f->t = nt;
            cap = ncap;
        }
        tensor *t = &f->t[f->n];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%.*s", (int)(l - 4), de->d_name);
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", f->path, de->d_name);
        clip_error e = {0};
        if (npy_load(path, &t->a, &e))
            rc = report_error("%s: %s", f->tag, e.msg);
        else
            f->n++;
    }
    closedir(d);
    if (rc) return rc;
    if (f->n == 0)
        return report_error("%s: %s holds no tensors (no .npy files): not a trace folder", f->tag,
                            f->path);
    qsort(f->t, f->n, sizeof *f->t, by_name);
    f->text_len = -1;
    if ((rc = read_manifest(f))) return rc;
    if ((rc = stack_split_hidden(f, "vision")) || (rc = stack_split_hidden(f, "text"))) return rc;
    return 0;
}

/* ------------------------------------------------------------------ canonical layouts */

/* A side of a comparison in [S, R, C] form (stack or head, row, column), as doubles. */
typedef struct canon {
    size_t S, R, C;
    double *v;
} canon;

static double elem(const npy_array *a, size_t i) {
    switch (a->dtype) {
    case NPY_F32: return ((const float *)a->data)[i];
    case NPY_F64: return ((const double *)a->data)[i];
    case NPY_I32: return ((const int32_t *)a->data)[i];
    case NPY_I64: return (double)((const int64_t *)a->data)[i];
    case NPY_U8: return ((const uint8_t *)a->data)[i];
    case NPY_I8: return ((const int8_t *)a->data)[i];
    case NPY_BOOL: return ((const uint8_t *)a->data)[i] != 0;
    }
    return NAN;
}

/* Leading size-1 dimensions dropped while the rank is above `rank`. */
static int squeeze_to(const npy_array *a, int rank, size_t *shape) {
    int off = 0;
    while (a->ndim - off > rank && a->shape[off] == 1) off++;
    for (int i = off; i < a->ndim; i++) shape[i - off] = a->shape[i];
    return a->ndim - off;
}

static int min_rank(trace_kind k) {
    switch (k) {
    case TK_PIXELS: case TK_STACK: case TK_PROBS: return 3;
    case TK_ROWS: case TK_ROWS_HEADS: case TK_PATCH: return 2;
    case TK_IDS: case TK_VEC: return 1;
    case TK_POOL_INDEX: return 0;
    case TK_OTHER: return 0;
    }
    return 0;
}

/* Splitting into heads: 0 = [N, heads, head_dim] (a reshape of [N, H]), 1 = [heads, N, hd]. */
static int heads_first(const size_t *s, const size_t *o, int ond) {
    if (ond == 2) {
        size_t N = o[0], H = o[1];
        int nmaj = s[1] * s[2] == H, hfirst = s[0] * s[2] == H;
        if (nmaj && hfirst) return s[0] != N && s[1] == N;
        return !nmaj && hfirst;
    }
    if (ond == 3 && !(s[0] == o[0] && s[1] == o[1]) && s[0] == o[1] && s[1] == o[0])
        return s[0] < s[1]; /* CLIP has fewer heads than tokens */
    return 0;
}

/* Brings one side to [S, R, C]; `o`/`ond` is the other side's squeezed shape (to tell
 * ambiguous layouts apart). Writes what was converted into `how` ("" when nothing). */
static int canonicalise(const npy_array *a, trace_kind kind, const size_t *o, int ond, canon *c,
                        char *how, size_t how_cap) {
    size_t s[NPY_MAX_DIMS];
    int nd = squeeze_to(a, min_rank(kind), s);
    how[0] = '\0';
    char given[96];
    shape_str(a->shape, a->ndim, given, sizeof given);
    if (nd < a->ndim) snprintf(how, how_cap, "batch dimension of 1 dropped (%s)", given);
    if (kind == TK_STACK && nd == 4 && s[1] == 1) { /* torch.stack of [1, N, H] states */
        s[1] = s[2];
        s[2] = s[3];
        nd = 3;
        snprintf(how, how_cap, "batch dimension of 1 dropped (%s)", given);
    }
    size_t count = a->count;
    c->v = malloc(sizeof(double) * (count ? count : 1));
    if (!c->v) return -1;
    int transpose = 0; /* 1: [X, Y, Z] -> [Y, X, Z] rows; 2: [D, np] -> [np, D] */
    size_t X = 0, Y = 0, Z = 0;
    switch (kind) {
    case TK_ROWS_HEADS:
        if (nd == 3) {
            if (heads_first(s, o, ond)) {
                transpose = 1;
                X = s[0], Y = s[1], Z = s[2];
                c->S = 1, c->R = s[1], c->C = s[0] * s[2];
                snprintf(how, how_cap, "heads split, heads first %s [heads, N, head_dim]", given);
            } else {
                c->S = 1, c->R = s[0], c->C = s[1] * s[2];
                snprintf(how, how_cap, "heads split %s [N, heads, head_dim]", given);
            }
            break;
        }
        /* fall through */
    case TK_ROWS:
        if (nd == 2)
            c->S = 1, c->R = s[0], c->C = s[1];
        else
            goto generic;
        break;
    case TK_PROBS:
        if (nd == 3)
            c->S = s[0], c->R = s[1], c->C = s[2];
        else if (nd == 2 && s[1] && s[0] % s[1] == 0) {
            c->S = s[0] / s[1], c->R = s[1], c->C = s[1];
            snprintf(how, how_cap, "heads merged %s [heads*N, N]", given);
        } else
            goto generic;
        break;
    case TK_STACK:
        if (nd != 3) goto generic;
        c->S = s[0], c->R = s[1], c->C = s[2];
        break;
    case TK_PATCH:
        if (nd == 2) {
            c->S = 1, c->R = s[0], c->C = s[1];
            if (ond == 3) snprintf(how, how_cap, "one row per patch %s [g*g, D]", given);
        } else if (nd == 3 && s[1] == s[2] && !(s[0] == s[1] && ond == 3 && o[2] != o[1])) {
            transpose = 2; /* the Conv2d output [D, g, g] */
            X = s[0], Y = s[1] * s[2];
            c->S = 1, c->R = Y, c->C = X;
            if (ond == 2) snprintf(how, how_cap, "Conv2d layout %s [D, g, g]", given);
        } else if (nd == 3 && s[0] == s[1]) {
            c->S = 1, c->R = s[0] * s[1], c->C = s[2];
            snprintf(how, how_cap, "channels last %s [g, g, D]", given);
        } else
            goto generic;
        break;
    case TK_PIXELS:
        if (nd != 3) goto generic;
        c->S = 1, c->R = s[0] * s[1], c->C = s[2];
        break;
    case TK_VEC: case TK_IDS: case TK_POOL_INDEX:
        if (nd > 1) goto generic;
        c->S = 1, c->R = 1, c->C = nd ? s[0] : 1;
        break;
    case TK_OTHER:
    generic:
        c->S = 1;
        c->C = nd ? s[nd - 1] : 1;
        c->R = c->C ? count / c->C : 0;
        break;
    }
    if (transpose == 1) { /* [heads, N, hd] -> [N, heads * hd] */
        for (size_t x = 0; x < X; x++)
            for (size_t y = 0; y < Y; y++)
                for (size_t z = 0; z < Z; z++)
                    c->v[(y * X + x) * Z + z] = elem(a, (x * Y + y) * Z + z);
    } else if (transpose == 2) { /* [D, g*g] -> [g*g, D] */
        for (size_t x = 0; x < X; x++)
            for (size_t y = 0; y < Y; y++) c->v[y * X + x] = elem(a, x * Y + y);
    } else {
        for (size_t i = 0; i < count; i++) c->v[i] = elem(a, i);
    }
    return 0;
}

/* Keeps rows [0, R) and columns [0, C) of every stack slice. */
static void crop(canon *c, size_t R, size_t C) {
    if (R == c->R && C == c->C) return;
    for (size_t s = 0; s < c->S; s++)
        for (size_t r = 0; r < R; r++)
            memmove(c->v + (s * R + r) * C, c->v + (s * c->R + r) * c->C, sizeof(double) * C);
    c->R = R;
    c->C = C;
}

/* ------------------------------------------------------------------ comparing */

typedef struct metrics {
    double max_abs, max_ref, rel, min_cos;
    int within;
} metrics;

typedef struct entry {
    const char *name;
    const tensor *ta, *tb;
    trace_name pos;
    int mismatch;         /* shapes that no convention reconciles */
    char why[320];        /* the mismatch */
    char notes[3][240];   /* conventions applied */
    int n_notes;
    size_t S, R, C;       /* compared shape */
    metrics m;            /* the whole tensor (stacked: the worst index) */
    metrics *idx;         /* stacked: per index */
    int first_bad;        /* stacked: first index out of tolerance, -1 */
} entry;

typedef struct tol {
    const char *preset;
    const char *preset_source;
    double rtol, atol, cos;
} tol;

static void add_note(entry *e, const char *fmt, ...) CLIP_PRINTF(2, 3);
static void add_note(entry *e, const char *fmt, ...) {
    if (e->n_notes >= 3) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->notes[e->n_notes++], sizeof e->notes[0], fmt, ap);
    va_end(ap);
}

/* Metrics of [R, C] rows at a and b (b = reference). */
static void measure(const double *a, const double *b, size_t n_rows, size_t C, metrics *m) {
    double mx = 0, ref = 0, mc = 1;
    for (size_t r = 0; r < n_rows; r++) {
        const double *x = a + r * C, *y = b + r * C;
        double dot = 0, nx = 0, ny = 0;
        for (size_t j = 0; j < C; j++) {
            double d = fabs(x[j] - y[j]);
            if (x[j] != y[j] && !(d <= mx)) mx = isnan(d) ? INFINITY : d; /* NaN counts as inf */
            if (fabs(y[j]) > ref) ref = fabs(y[j]); /* a NaN reference is caught by mx */
            dot += x[j] * y[j];
            nx += x[j] * x[j];
            ny += y[j] * y[j];
        }
        double cs = nx == 0 && ny == 0 ? 1.0 : (nx == 0 || ny == 0 ? 0.0 : dot / sqrt(nx * ny));
        if (!(cs >= mc)) mc = cs; /* NaN propagates as the minimum */
    }
    m->max_abs = mx;
    m->max_ref = ref;
    m->rel = mx == 0 ? 0 : (ref > 0 ? mx / ref : INFINITY);
    m->min_cos = mc;
}

static void judge(metrics *m, int exact, const tol *t) {
    if (exact) {
        m->within = m->max_abs == 0;
        return;
    }
    m->within = m->max_abs <= t->atol + t->rtol * m->max_ref && !isnan(m->max_ref);
    if (t->cos > -1 && !(m->min_cos >= t->cos)) m->within = 0;
}

/* The number of real text tokens, from the inputs of either folder (B first); 0 unknown. */
static size_t real_text_rows(const folder *A, const folder *B) {
    const folder *fs[2] = {B, A};
    for (int i = 0; i < 2; i++) {
        const tensor *t = find(fs[i], "text.attention_mask");
        if (t) {
            size_t n = 0;
            for (size_t k = 0; k < t->a.count; k++) n += elem(&t->a, k) != 0;
            if (n) return n;
        }
    }
    for (int i = 0; i < 2; i++) {
        const tensor *t = find(fs[i], "text.pool_index");
        if (t && t->a.count == 1 && elem(&t->a, 0) >= 0) return (size_t)elem(&t->a, 0) + 1;
    }
    for (int i = 0; i < 2; i++)
        if (fs[i]->text_len > 0) return (size_t)fs[i]->text_len;
    return 0;
}

static int compare_entry(entry *e, size_t real_rows, const tol *t) {
    trace_name_parse(e->name, &e->pos);
    e->first_bad = -1;
    const npy_array *a = &e->ta->a, *b = &e->tb->a;
    size_t sa[NPY_MAX_DIMS], sb[NPY_MAX_DIMS];
    int na = squeeze_to(a, min_rank(e->pos.kind), sa),
        nb = squeeze_to(b, min_rank(e->pos.kind), sb);
    canon ca = {0}, cb = {0};
    char how_a[200], how_b[200];
    if (canonicalise(a, e->pos.kind, sb, nb, &ca, how_a, sizeof how_a) ||
        canonicalise(b, e->pos.kind, sa, na, &cb, how_b, sizeof how_b)) {
        free(ca.v);
        free(cb.v);
        return report_error("out of memory comparing %s", e->name);
    }
    if (e->ta->origin[0]) add_note(e, "%s", e->ta->origin);
    if (e->tb->origin[0]) add_note(e, "%s", e->tb->origin);
    if (strcmp(how_a, how_b) != 0) { /* a convention only matters when the sides differ */
        if (how_a[0]) add_note(e, "A: %s", how_a);
        if (how_b[0]) add_note(e, "B: %s", how_b);
    }
    int text_rows = e->pos.tower == TRACE_TEXT &&
                    (e->pos.kind == TK_ROWS || e->pos.kind == TK_ROWS_HEADS ||
                     e->pos.kind == TK_STACK || e->pos.kind == TK_PROBS);
    if (text_rows && ca.S == cb.S && (ca.R != cb.R || (real_rows && ca.R > real_rows))) {
        size_t keep = ca.R < cb.R ? ca.R : cb.R;
        size_t kc = ca.C, kcb = cb.C;
        if (e->pos.kind == TK_PROBS) kc = kcb = ca.C < cb.C ? ca.C : cb.C; /* keys: same axis */
        if (real_rows && keep < real_rows) {
            e->mismatch = 1;
            snprintf(e->why, sizeof e->why, "%s has %zu text rows, the text has %zu real tokens",
                     ca.R < cb.R ? "A" : "B", keep, real_rows);
        } else {
            if (ca.R != cb.R)
                add_note(e, "padded vs unpadded text rows: A has %zu, B %zu", ca.R, cb.R);
            if (real_rows && keep > real_rows) keep = real_rows;
            if (real_rows)
                add_note(e, "text rows 0..%zu compared (the real tokens; padded rows are never "
                            "pooled and follow each backend's masking)", keep - 1);
            crop(&ca, keep, kc);
            crop(&cb, keep, kcb);
        }
    } else if (e->pos.kind == TK_IDS && ca.C != cb.C) {
        size_t keep = ca.C < cb.C ? ca.C : cb.C;
        add_note(e, "padded vs unpadded ids: A has %zu, B %zu; positions 0..%zu compared", ca.C,
                 cb.C, keep - 1);
        crop(&ca, 1, keep);
        crop(&cb, 1, keep);
    }
    if (!e->mismatch && (ca.S != cb.S || ca.R != cb.R || ca.C != cb.C)) {
        char s1[96], s2[96];
        shape_str(a->shape, a->ndim, s1, sizeof s1);
        shape_str(b->shape, b->ndim, s2, sizeof s2);
        e->mismatch = 1;
        snprintf(e->why, sizeof e->why, "shapes %s (A) and %s (B) do not match under any "
                 "convention", s1, s2);
    }
    e->S = cb.S, e->R = cb.R, e->C = cb.C;
    if (!e->mismatch) {
        if (e->pos.kind == TK_STACK) { /* every index is the output of its own layer */
            e->idx = calloc(e->S, sizeof *e->idx);
            if (!e->idx) {
                free(ca.v);
                free(cb.v);
                return report_error("out of memory");
            }
            e->m.within = 1;
            for (size_t k = 0; k < e->S; k++) {
                metrics *m = &e->idx[k];
                measure(ca.v + k * e->R * e->C, cb.v + k * e->R * e->C, e->R, e->C, m);
                judge(m, 0, t);
                if (k == 0 || !(m->max_abs <= e->m.max_abs)) e->m.max_abs = m->max_abs;
                if (k == 0 || !(m->rel <= e->m.rel)) e->m.rel = m->rel;
                if (k == 0 || !(m->max_ref <= e->m.max_ref)) e->m.max_ref = m->max_ref;
                if (k == 0 || !(m->min_cos >= e->m.min_cos)) e->m.min_cos = m->min_cos;
                if (!m->within && e->first_bad < 0) e->first_bad = (int)k;
                e->m.within &= m->within;
            }
        } else {
            measure(ca.v, cb.v, e->S * e->R, e->C, &e->m);
            judge(&e->m, e->pos.exact, t);
        }
    }
    free(ca.v);
    free(cb.v);
    return 0;
}

/* ------------------------------------------------------------------ forward order, drift */

typedef struct point {
    const entry *e;
    int k;          /* stacked index, -1 */
    trace_name pos;
    char label[128];
    int within;
    double rel;
    const metrics *m; /* NULL for a shape mismatch */
} point;

static int point_order(const void *pa, const void *pb) {
    const point *a = pa, *b = pb;
    if (a->pos.tower != b->pos.tower) return a->pos.tower < b->pos.tower ? -1 : 1;
    if (a->pos.layer != b->pos.layer) return a->pos.layer < b->pos.layer ? -1 : 1;
    if (a->pos.step != b->pos.step) return a->pos.step < b->pos.step ? -1 : 1;
    int c = strcmp(a->e->name, b->e->name);
    return c ? c : (a->k < b->k ? -1 : a->k > b->k);
}

static int entry_order(const void *pa, const void *pb) {
    const entry *a = pa, *b = pb;
    if (a->pos.tower != b->pos.tower) return a->pos.tower < b->pos.tower ? -1 : 1;
    if (a->pos.layer != b->pos.layer) return a->pos.layer < b->pos.layer ? -1 : 1;
    if (a->pos.step != b->pos.step) return a->pos.step < b->pos.step ? -1 : 1;
    return strcmp(a->name, b->name);
}

static const char *tower_name(trace_tower t) {
    return t == TRACE_VISION ? "vision" : t == TRACE_TEXT ? "text" : "other";
}

static void fmt_g(double v, char *buf, size_t cap) {
    if (isnan(v))
        snprintf(buf, cap, "nan");
    else if (isinf(v))
        snprintf(buf, cap, "inf");
    else if (v == 0)
        snprintf(buf, cap, "0");
    else
        snprintf(buf, cap, "%.2g", v);
}

/* "the output of layer 5" for hidden_states[6]. */
static void stack_meaning(const char *name, int k, char *buf, size_t cap) {
    if (k == 0)
        snprintf(buf, cap, ", the encoder input (%s)",
                 !strncmp(name, "vision", 6) ? "pre_layrnorm output"
                                             : "token + position embeddings");
    else
        snprintf(buf, cap, ", the output of layer %d", k - 1);
}

typedef struct drift {
    int found;
    const point *p;
    int later_out; /* further points of the tower out of tolerance */
    char message[1400];
} drift;

static void describe_drift(const point *pts, size_t np, size_t first, const tol *t, int stack_len,
                           drift *d) {
    const point *p = &pts[first];
    d->found = 1;
    d->p = p;
    d->later_out = 0;
    for (size_t i = first + 1; i < np && pts[i].pos.tower == p->pos.tower; i++)
        d->later_out += !pts[i].within;
    char meaning[96] = "", rel[32], lim[32], ab[32], at[32], ref[32];
    if (p->k >= 0) stack_meaning(p->e->name, p->k, meaning, sizeof meaning);
    fmt_g(p->rel, rel, sizeof rel);
    fmt_g(t->rtol, lim, sizeof lim);
    fmt_g(t->atol, at, sizeof at);
    size_t o = 0, cap = sizeof d->message;
#define PUT(...) o += (size_t)snprintf(d->message + o, o < cap ? cap - o : 0, __VA_ARGS__)
    PUT("drift starts in %s%s", p->label, meaning);
    if (!p->m) {
        PUT(" (%s)", p->e->why);
    } else if (p->pos.exact || p->pos.kind == TK_PIXELS) {
        PUT(" (the inputs differ: the two traces were not made from the same %s)",
            p->pos.kind == TK_PIXELS ? "image" : "text");
    } else if (!(p->m->max_abs <= t->atol + t->rtol * p->m->max_ref)) {
        if (t->atol > 0) {
            fmt_g(p->m->max_abs, ab, sizeof ab);
            fmt_g(p->m->max_ref, ref, sizeof ref);
            PUT(" (max abs %s > %s + %s x max|B| %s)", ab, at, lim, ref);
        } else {
            PUT(" (max rel %s > %s)", rel, lim);
        }
    } else {
        PUT(" (min row cosine %.9f < %.9g)", p->m->min_cos, t->cos);
    }
    char in[2][128];
    int nin = trace_point_inputs(p->e->name, p->k, stack_len, in), compared = 0;
    for (int j = 0; j < nin; j++) {
        const point *q = NULL;
        for (size_t i = 0; i < np; i++)
            if (!strcmp(pts[i].label, in[j])) q = &pts[i];
        PUT("%s%s %s", j == 0 ? (nin > 1 ? "; its inputs: " : "; its input ") : ", ", in[j],
            q ? "" : "is not in both folders");
        if (q) {
            compared++;
            char r[32];
            fmt_g(q->rel, r, sizeof r);
            if (q->within && q->rel == 0)
                PUT("agrees exactly");
            else if (q->within)
                PUT("agrees to %s", r);
            else
                PUT("is out of tolerance too (%s)", r);
        }
    }
    if (!compared) {
        const point *prev = NULL;
        for (size_t i = first; i-- > 0 && pts[i].pos.tower == p->pos.tower;)
            if (pts[i].within) {
                prev = &pts[i];
                break;
            }
        if (prev) {
            char r[32];
            fmt_g(prev->rel, r, sizeof r);
            PUT("; the last tensor compared before it, %s, agrees %s%s", prev->label,
                prev->rel == 0 ? "exactly" : "to ", prev->rel == 0 ? "" : r);
        } else {
            PUT("; it is the first %s tensor the folders have in common",
                tower_name(p->pos.tower));
        }
    }
    if (d->later_out)
        PUT("; %d later %s tensor%s out of tolerance too", d->later_out,
            tower_name(p->pos.tower), d->later_out == 1 ? " is" : "s are");
#undef PUT
}

/* ------------------------------------------------------------------ reports */

static void json_num(clip_buf *b, double v) {
    char buf[32];
    if (!isfinite(v)) {
        clip_buf_puts(b, "null");
        return;
    }
    clip_format_double_repr(v, buf);
    clip_buf_puts(b, buf);
}

static void json_str(clip_buf *b, const char *s) { json_write_string(b, s, strlen(s), 0); }

static void json_shape(clip_buf *b, const npy_array *a) {
    clip_buf_putc(b, '[');
    for (int i = 0; i < a->ndim; i++) clip_buf_printf(b, "%s%zu", i ? "," : "", a->shape[i]);
    clip_buf_putc(b, ']');
}

static void json_names(clip_buf *b, const char *const *names, size_t n) {
    clip_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i) clip_buf_putc(b, ',');
        json_str(b, names[i]);
    }
    clip_buf_putc(b, ']');
}

static void json_metrics(clip_buf *b, const metrics *m) {
    clip_buf_puts(b, "\"max_abs\":");
    json_num(b, m->max_abs);
    clip_buf_puts(b, ",\"max_rel\":");
    json_num(b, m->rel);
    clip_buf_puts(b, ",\"max_ref\":");
    json_num(b, m->max_ref);
    clip_buf_puts(b, ",\"min_cos\":");
    json_num(b, m->min_cos);
    clip_buf_printf(b, ",\"within\":%s", m->within ? "true" : "false");
}

static const char *verdict(const entry *e) {
    if (e->mismatch) return "SHAPE";
    if (e->m.within) return "ok";
    return e->pos.exact ? "DIFFERS" : "OUT";
}

/* Names outside and inside the layers; per-layer names present in the same layers are folded
 * into one item: "vision.layer{1..11}.{layer_norm1,q_proj,...}". */
typedef struct name_group {
    char prefix[64], part[64];
    int layers[256];
    int n_layers, step, merged;
    trace_name pos;
} name_group;

static void layer_ranges(const int *k, int n, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && o < cap;) {
        int j = i;
        while (j + 1 < n && k[j + 1] == k[j] + 1) j++;
        if (j > i)
            o += (size_t)snprintf(buf + o, cap - o, "%s%d..%d", i ? "," : "", k[i], k[j]);
        else
            o += (size_t)snprintf(buf + o, cap - o, "%s%d", i ? "," : "", k[i]);
        i = j + 1;
    }
}

static int int_order(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

static int group_order(const void *pa, const void *pb) {
    const name_group *a = pa, *b = pb;
    if (a->pos.tower != b->pos.tower) return a->pos.tower < b->pos.tower ? -1 : 1;
    if (a->pos.layer != b->pos.layer) return a->pos.layer < b->pos.layer ? -1 : 1;
    if (a->pos.step != b->pos.step) return a->pos.step < b->pos.step ? -1 : 1;
    return strcmp(a->prefix, b->prefix);
}

static void print_names(const char *title, const char *const *names, size_t n) {
    printf("%s (%zu)%s", title, n, n ? ":" : "");
    name_group *g = calloc(n ? n : 1, sizeof *g);
    size_t ng = 0;
    for (size_t i = 0; g && i < n; i++) {
        trace_name tn;
        trace_name_parse(names[i], &tn);
        const char *dot = strchr(names[i], '.'), *sub = dot ? strchr(dot + 1, '.') : NULL;
        name_group *x = NULL;
        if (tn.tower != TRACE_OTHER && tn.layer >= 0 && tn.layer < TRACE_LAYER_POST && sub &&
            (size_t)(dot - names[i]) < sizeof x->prefix && strlen(sub + 1) < sizeof x->part) {
            for (size_t j = 0; j < ng && !x; j++)
                if (g[j].n_layers && !strncmp(g[j].prefix, names[i], (size_t)(dot - names[i])) &&
                    !g[j].prefix[dot - names[i]] && !strcmp(g[j].part, sub + 1) &&
                    g[j].n_layers < 256)
                    x = &g[j];
            if (!x) {
                x = &g[ng++];
                snprintf(x->prefix, sizeof x->prefix, "%.*s", (int)(dot - names[i]), names[i]);
                snprintf(x->part, sizeof x->part, "%s", sub + 1);
                x->pos = tn;
            }
            x->layers[x->n_layers++] = tn.layer;
            if (tn.layer < x->pos.layer) x->pos.layer = tn.layer;
        } else {
            x = &g[ng++];
            snprintf(x->prefix, sizeof x->prefix, "%.63s", names[i]);
            x->pos = tn;
        }
    }
    char (*items)[1024] = g ? calloc(ng ? ng : 1, sizeof *items) : NULL;
    size_t ni = 0;
    if (items) {
        for (size_t i = 0; i < ng; i++)
            if (g[i].n_layers) qsort(g[i].layers, (size_t)g[i].n_layers, sizeof(int), int_order);
        qsort(g, ng, sizeof *g, group_order);
        for (size_t i = 0; i < ng; i++) {
            if (g[i].merged) continue;
            char *it = items[ni++];
            if (!g[i].n_layers) {
                snprintf(it, sizeof *items, "%s", g[i].prefix);
                continue;
            }
            /* every part found in exactly the same layers joins this item */
            char parts[700] = "";
            size_t o = 0;
            int np = 0;
            for (size_t j = i; j < ng; j++) {
                if (g[j].merged || !g[j].n_layers || strcmp(g[j].prefix, g[i].prefix) ||
                    g[j].n_layers != g[i].n_layers ||
                    memcmp(g[j].layers, g[i].layers, sizeof(int) * (size_t)g[i].n_layers))
                    continue;
                g[j].merged = 1;
                if (o < sizeof parts)
                    o += (size_t)snprintf(parts + o, sizeof parts - o, "%s%s", np ? "," : "",
                                          g[j].part);
                np++;
            }
            char range[256];
            layer_ranges(g[i].layers, g[i].n_layers, range, sizeof range);
            snprintf(it, sizeof *items, "%s.layer%s%s%s.%s%s%s", g[i].prefix,
                     g[i].n_layers > 1 ? "{" : "", range, g[i].n_layers > 1 ? "}" : "",
                     np > 1 ? "{" : "", parts, np > 1 ? "}" : "");
        }
    } else { /* out of memory: the plain list */
        for (size_t i = 0; i < n; i++) printf(" %s", names[i]);
    }
    size_t col = 100;
    for (size_t i = 0; i < ni; i++) {
        size_t l = strlen(items[i]) + 2;
        if (col + l > 100) {
            printf("\n   ");
            col = 3;
        }
        printf(" %s%s", items[i], i + 1 < ni ? "," : "");
        col += l;
    }
    printf("\n");
    free(items);
    free(g);
}

typedef struct report {
    const folder *A, *B;
    const tol *t;
    entry *e;
    size_t ne;
    const char **only_a, **only_b;
    size_t n_only_a, n_only_b;
    drift drifts[3];
    size_t n_out;
    size_t real_rows;
} report;

static void print_text(const report *r) {
    printf("A  %s%s%s%s\n", r->A->path, r->A->about[0] ? " (" : "", r->A->about,
           r->A->about[0] ? ")" : "");
    printf("B  %s (the reference%s%s)\n", r->B->path, r->B->about[0] ? "; " : "", r->B->about);
    char rt[32], at[32];
    fmt_g(r->t->rtol, rt, sizeof rt);
    fmt_g(r->t->atol, at, sizeof at);
    printf("tolerance  %s preset%s: max|A-B| <= %s%s%s x max|B| per tensor (stacked: per index)",
           r->t->preset, r->t->preset_source, r->t->atol > 0 ? at : "", r->t->atol > 0 ? " + " : "",
           rt);
    if (r->t->cos > -1)
        printf(", row cosine >= %.9g", r->t->cos);
    else
        printf(", cosine reported, not checked");
    printf("; ids, mask, pool index exact\n\n");
    int w = 6;
    for (size_t i = 0; i < r->ne; i++)
        if ((int)strlen(r->e[i].name) > w) w = (int)strlen(r->e[i].name);
    printf("%-*s  %-14s %9s %9s %12s  %s\n", w, "tensor", "shape (B)", "max abs", "max rel",
           "min cos", "verdict");
    for (size_t i = 0; i < r->ne; i++) {
        const entry *e = &r->e[i];
        char shp[64], ab[32], rl[32];
        shape_str(e->tb->a.shape, e->tb->a.ndim, shp, sizeof shp);
        if (e->mismatch) {
            printf("%-*s  %-14s %9s %9s %12s  %s\n", w, e->name, shp, "-", "-", "-", verdict(e));
            continue;
        }
        fmt_g(e->m.max_abs, ab, sizeof ab);
        fmt_g(e->m.rel, rl, sizeof rl);
        printf("%-*s  %-14s %9s %9s %12.9f  %s", w, e->name, shp, ab, rl, e->m.min_cos,
               verdict(e));
        if (e->first_bad >= 0) {
            char meaning[96];
            stack_meaning(e->name, e->first_bad, meaning, sizeof meaning);
            printf(" from [%d]%s", e->first_bad, meaning);
        }
        printf("\n");
    }
    /* conventions: each distinct note once, with the tensors it applied to */
    int any = 0;
    for (size_t i = 0; i < r->ne; i++)
        for (int j = 0; j < r->e[i].n_notes; j++) {
            const char *note = r->e[i].notes[j];
            int seen = 0;
            for (size_t k = 0; k < i && !seen; k++)
                for (int q = 0; q < r->e[k].n_notes; q++)
                    if (!strcmp(r->e[k].notes[q], note)) seen = 1;
            if (seen) continue;
            if (!any++) printf("\nconventions applied:\n");
            size_t count = 0;
            const char *first = NULL;
            for (size_t k = i; k < r->ne; k++)
                for (int q = 0; q < r->e[k].n_notes; q++)
                    if (!strcmp(r->e[k].notes[q], note)) {
                        if (!first) first = r->e[k].name;
                        count++;
                    }
            if (count == 1)
                printf("  %s: %s\n", first, note);
            else
                printf("  %s (%zu tensors, %s ...)\n", note, count, first);
        }
    for (size_t i = 0; i < r->ne; i++)
        if (r->e[i].mismatch) {
            if (!any++) printf("\n");
            printf("  %s: %s\n", r->e[i].name, r->e[i].why);
        }
    printf("\n");
    print_names("only in A", r->only_a, r->n_only_a);
    print_names("only in B", r->only_b, r->n_only_b);
    printf("\n");
    for (int t = 0; t < 3; t++) {
        const drift *d = &r->drifts[t];
        int present = 0;
        for (size_t i = 0; i < r->ne; i++) present |= r->e[i].pos.tower == (trace_tower)t;
        if (!present) continue;
        if (d->found)
            printf("%s: %s\n", tower_name((trace_tower)t), d->message);
        else
            printf("%s: every tensor within tolerance\n", tower_name((trace_tower)t));
    }
    if (r->n_out)
        printf("result: %zu of %zu common tensors out of tolerance (exit 1)\n", r->n_out, r->ne);
    else
        printf("result: all %zu common tensors within tolerance (exit 0)\n", r->ne);
}

static int print_json(const report *r) {
    clip_buf b = {0};
    clip_buf_puts(&b, "{\"a\":");
    json_str(&b, r->A->path);
    clip_buf_puts(&b, ",\"b\":");
    json_str(&b, r->B->path);
    clip_buf_puts(&b, ",\"reference\":\"b\",\"tolerance\":{\"preset\":");
    json_str(&b, r->t->preset);
    clip_buf_puts(&b, ",\"rtol\":");
    json_num(&b, r->t->rtol);
    clip_buf_puts(&b, ",\"atol\":");
    json_num(&b, r->t->atol);
    clip_buf_puts(&b, ",\"cos\":");
    if (r->t->cos > -1)
        json_num(&b, r->t->cos);
    else
        clip_buf_puts(&b, "null");
    clip_buf_printf(&b, "},\"real_text_rows\":%zu,\"tensors\":[", r->real_rows);
    for (size_t i = 0; i < r->ne; i++) {
        const entry *e = &r->e[i];
        clip_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        json_str(&b, e->name);
        clip_buf_puts(&b, ",\"shape_a\":");
        json_shape(&b, &e->ta->a);
        clip_buf_puts(&b, ",\"shape_b\":");
        json_shape(&b, &e->tb->a);
        const char *status = e->mismatch ? "shape" : (e->m.within ? "ok" : "out");
        clip_buf_printf(&b, ",\"status\":\"%s\"", status);
        if (e->mismatch) {
            clip_buf_puts(&b, ",\"why\":");
            json_str(&b, e->why);
        } else {
            clip_buf_printf(&b, ",\"compared\":[%zu,%zu,%zu],", e->S, e->R, e->C);
            json_metrics(&b, &e->m);
        }
        clip_buf_puts(&b, ",\"conventions\":[");
        for (int j = 0; j < e->n_notes; j++) {
            if (j) clip_buf_putc(&b, ',');
            json_str(&b, e->notes[j]);
        }
        clip_buf_putc(&b, ']');
        if (e->idx) {
            clip_buf_puts(&b, ",\"first_divergent_index\":");
            if (e->first_bad >= 0)
                clip_buf_printf(&b, "%d", e->first_bad);
            else
                clip_buf_puts(&b, "null");
            clip_buf_puts(&b, ",\"per_index\":[");
            for (size_t k = 0; k < e->S; k++) {
                clip_buf_printf(&b, "%s{\"index\":%zu,", k ? "," : "", k);
                json_metrics(&b, &e->idx[k]);
                clip_buf_putc(&b, '}');
            }
            clip_buf_putc(&b, ']');
        }
        clip_buf_putc(&b, '}');
    }
    clip_buf_puts(&b, "],\"only_in_a\":");
    json_names(&b, r->only_a, r->n_only_a);
    clip_buf_puts(&b, ",\"only_in_b\":");
    json_names(&b, r->only_b, r->n_only_b);
    clip_buf_puts(&b, ",\"drift\":{");
    int first = 1;
    for (int t = 0; t < 3; t++) {
        const drift *d = &r->drifts[t];
        int present = 0;
        for (size_t i = 0; i < r->ne; i++) present |= r->e[i].pos.tower == (trace_tower)t;
        if (!present) continue;
        clip_buf_printf(&b, "%s\"%s\":", first ? "" : ",", tower_name((trace_tower)t));
        first = 0;
        if (!d->found) {
            clip_buf_puts(&b, "null");
            continue;
        }
        clip_buf_puts(&b, "{\"tensor\":");
        json_str(&b, d->p->e->name);
        clip_buf_puts(&b, ",\"index\":");
        if (d->p->k >= 0)
            clip_buf_printf(&b, "%d", d->p->k);
        else
            clip_buf_puts(&b, "null");
        clip_buf_puts(&b, ",\"point\":");
        json_str(&b, d->p->label);
        clip_buf_printf(&b, ",\"later_out\":%d,\"message\":", d->later_out);
        json_str(&b, d->message);
        clip_buf_putc(&b, '}');
    }
    clip_buf_printf(&b, "},\"out_of_tolerance\":%zu,\"compared\":%zu,\"exit_status\":%d}\n",
                    r->n_out, r->ne, r->n_out ? 1 : 0);
    int rc = 0;
    if (b.oom)
        rc = report_error("out of memory writing the JSON report");
    else
        fwrite(b.data, 1, b.len, stdout);
    clip_buf_free(&b);
    return rc;
}

/* ------------------------------------------------------------------ the command */

static int usage(const char *fmt, const char *arg) {
    fprintf(stderr, "clipeval compare: ");
    fprintf(stderr, fmt, arg ? arg : "");
    fprintf(stderr, "\n(run `clipeval compare --help` for usage)\n");
    return 2;
}

static int parse_num(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = s && *s ? strtod(s, &end) : NAN;
    if (!s || !*s || errno || *end || !(v >= lo && v <= hi)) return 0;
    *out = v;
    return 1;
}

static int set_preset(tol *t, const char *name) {
    if (!strcmp(name, "fp32")) {
        t->preset = "fp32", t->rtol = FP32_RTOL, t->cos = -2;
    } else if (!strcmp(name, "bf16")) {
        t->preset = "bf16", t->rtol = BF16_RTOL, t->cos = BF16_COS;
    } else if (!strcmp(name, "fp16")) {
        t->preset = "fp16", t->rtol = FP16_RTOL, t->cos = FP16_COS;
    } else {
        return 0;
    }
    return 1;
}

/* The looser precision of the two manifests. */
static const char *manifest_precision(const folder *A, const folder *B, const char **src) {
    static const char *order[] = {"bf16", "fp16"};
    for (int i = 0; i < 2; i++) {
        if (!strcmp(A->precision, order[i])) {
            *src = " (from A's manifest)";
            return order[i];
        }
        if (!strcmp(B->precision, order[i])) {
            *src = " (from B's manifest)";
            return order[i];
        }
    }
    *src = "";
    return "fp32";
}

int compare_command(int argc, char **argv) {
    const char *paths[2] = {NULL, NULL}, *precision = NULL;
    double rtol = -1, atol = -1, cosb = -2;
    int as_json = 0, npaths = 0;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL(name) (!strcmp(o, name) && v && ++i)
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(compare_help, stdout);
            return 0;
        } else if (VAL("--rtol")) {
            if (!parse_num(v, 0, 1e30, &rtol)) return usage("bad --rtol '%s' (a number >= 0)", v);
        } else if (VAL("--atol")) {
            if (!parse_num(v, 0, 1e30, &atol)) return usage("bad --atol '%s' (a number >= 0)", v);
        } else if (VAL("--cos")) {
            if (!parse_num(v, -1, 1, &cosb)) return usage("bad --cos '%s' (-1 .. 1)", v);
        } else if (VAL("--precision")) {
            tol probe;
            if (!set_preset(&probe, v))
                return usage("bad --precision '%s' (fp32, bf16 or fp16)", v);
            precision = v;
        } else if (!strcmp(o, "--json")) {
            as_json = 1;
        } else if (o[0] == '-' && o[1]) {
            return usage("unknown or incomplete option '%s'", o);
        } else if (npaths < 2) {
            paths[npaths++] = o;
        } else {
            return usage("more than two folders given ('%s')", o);
        }
#undef VAL
    }
    if (npaths != 2) return usage("give two trace folders: clipeval compare A B%s", "");
    folder A = {0}, B = {0};
    A.path = paths[0], A.tag = "A";
    B.path = paths[1], B.tag = "B";
    int rc = load_folder(&A);
    if (!rc) rc = load_folder(&B);
    tol t = {0};
    const char *src = " (--precision)";
    if (!precision) precision = manifest_precision(&A, &B, &src);
    set_preset(&t, precision);
    t.preset_source = src;
    if (rtol >= 0) t.rtol = rtol;
    if (atol >= 0) t.atol = atol;
    if (cosb > -2) t.cos = cosb;
    report r = {0};
    r.A = &A, r.B = &B, r.t = &t;
    if (!rc) {
        r.e = calloc(A.n, sizeof *r.e);
        r.only_a = calloc(A.n, sizeof *r.only_a);
        r.only_b = calloc(B.n, sizeof *r.only_b);
        if (!r.e || !r.only_a || !r.only_b) rc = report_error("out of memory");
    }
    for (size_t i = 0; i < A.n && !rc; i++) {
        const tensor *tb = find(&B, A.t[i].name);
        if (!tb) {
            r.only_a[r.n_only_a++] = A.t[i].name;
            continue;
        }
        r.e[r.ne].name = A.t[i].name;
        r.e[r.ne].ta = &A.t[i];
        r.e[r.ne].tb = tb;
        r.ne++;
    }
    for (size_t i = 0; i < B.n && !rc; i++)
        if (!find(&A, B.t[i].name)) r.only_b[r.n_only_b++] = B.t[i].name;
    if (!rc && r.ne == 0)
        rc = report_error("%s and %s have no tensor name in common (A has %s..., B has %s...)",
                          A.path, B.path, A.t[0].name, B.t[0].name);
    r.real_rows = rc ? 0 : real_text_rows(&A, &B);
    for (size_t i = 0; i < r.ne && !rc; i++) rc = compare_entry(&r.e[i], r.real_rows, &t);
    point *pts = NULL;
    size_t np = 0;
    if (!rc) {
        qsort(r.e, r.ne, sizeof *r.e, entry_order);
        size_t cap = 0;
        for (size_t i = 0; i < r.ne; i++) cap += r.e[i].idx ? r.e[i].S : 1;
        pts = calloc(cap ? cap : 1, sizeof *pts);
        if (!pts) rc = report_error("out of memory");
        for (size_t i = 0; i < r.ne && !rc; i++) {
            entry *e = &r.e[i];
            size_t n = e->idx ? e->S : 1;
            for (size_t k = 0; k < n; k++) {
                point *p = &pts[np++];
                p->e = e;
                p->k = e->idx ? (int)k : -1;
                if (e->idx)
                    trace_name_stack_point(e->pos.tower, (int)k, &p->pos);
                else
                    p->pos = e->pos;
                trace_point_label(e->name, p->k, p->label, sizeof p->label);
                p->m = e->mismatch ? NULL : e->idx ? &e->idx[k] : &e->m;
                p->within = p->m && p->m->within;
                p->rel = p->m ? p->m->rel : INFINITY;
            }
            r.n_out += e->mismatch || !e->m.within;
        }
        qsort(pts, np, sizeof *pts, point_order);
        for (size_t i = 0; i < np; i++) {
            trace_tower tw = pts[i].pos.tower;
            if (pts[i].within || r.drifts[tw].found) continue;
            int stack_len = 0;
            for (size_t j = 0; j < r.ne; j++)
                if (r.e[j].pos.tower == tw && r.e[j].idx) stack_len = (int)r.e[j].S;
            describe_drift(pts, np, i, &t, stack_len, &r.drifts[tw]);
        }
        if (as_json)
            rc = print_json(&r);
        else
            print_text(&r);
        if (!rc && fflush(stdout) != 0)
            rc = report_error("writing the report: %s", strerror(errno));
        if (!rc) rc = r.n_out ? 1 : 0;
    }
    free(pts);
    for (size_t i = 0; i < r.ne; i++) free(r.e[i].idx);
    free(r.e);
    free(r.only_a);
    free(r.only_b);
    folder_free(&A);
    folder_free(&B);
    return rc;
}
