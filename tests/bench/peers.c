/* peers.c — build/bench_peers: clipeval's column of `make bench-peers` (tests/bench/peers.sh).
 *
 * It reads the flat inputs written by ../shared/bench/cpu/make_inputs.py and times the same
 * cells with the same rule as ../shared/bench/cpu/ort_run.js, so its figures sit next to ONNX
 * Runtime's in one table: warm-up calls, then timed calls until about TARGET_S seconds (5..40
 * calls), figure = items / median call time, plus the fraction of the machine that other
 * processes used meanwhile (/proc/stat busy time minus our own getrusage time).
 *
 * usage: bench_peers MODE [options]
 *   info      the CPU side (BLAS core, OPENBLAS_CORETYPE, CPUID) and, with --model, the kernel the
 *             model runs on at --precision and the FLOPs of one image; exit 3 when the model
 *             cannot run at that precision on this CPU (the column is then "unavailable")
 *   ceiling   GFLOP/s of a 1536^3 OpenBLAS sgemm: best of 5 samples
 *   validate  max |clipeval - HF fp64| and min cosine of image_embeds (val_pix.f32 -> val_img.f64)
 *             and text_embeds (val_ids.i64 + val_am.i64 -> val_txt.f64), each set in one call
 *   bench     the cells in --cells (img_bN, txt15_bN, txt77pad_bN, txtfull77_bN), one model load
 *   first     process start to the first image embedding: load + one image, and peak RSS
 *   stats GOT.f32 REF.f64   the same accuracy figures for another engine's embeddings (rows of
 *             --dim, default 512)
 * options: --model DIR --inputs DIR --precision fp32|bf16 --kernel auto|avx512|avx2|portable|openblas
 *          --threads N (default 2, as ONNX Runtime's intra-op threads) --cells a,b --out FILE.json
 * env:     TARGET_S (default 3), as ort_run.js.
 * The JSON result goes to --out (a one-line summary to stderr), else to stdout.
 * Inputs are little-endian, as make_inputs.py writes them and as x86-64 and arm64 are. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"
#include "clip.h"

#define PEERS_PAD_ID 49407 /* make_inputs.py's EOS = pad: clipeval pools at the first one */

static double g_t_main; /* bench_now() at main entry: the `first` mode's origin */

typedef struct args {
    const char *mode, *model, *inputs, *cells, *out, *kernel;
    const char *pos[2]; /* stats' two files */
    int npos;
    clip_precision precision;
    int threads, dim; /* dim: the embedding size, for stats */
} args;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_peers: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ------------------------------------------------------------------ output */

/* The JSON document of one run, built in memory so a failed run writes nothing. */
typedef struct out {
    char *s;
    size_t n, cap;
} out;

static void outf(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(out *o, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(o->s ? o->s + o->n : NULL, o->s ? o->cap - o->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) die("%s", "vsnprintf failed");
        if (o->s && o->n + (size_t)k < o->cap) {
            o->n += (size_t)k;
            return;
        }
        size_t cap = o->cap ? o->cap : 4096;
        while (cap <= o->n + (size_t)k) cap *= 2;
        char *s = realloc(o->s, cap);
        if (!s) die("%s", "out of memory");
        o->s = s;
        o->cap = cap;
        o->s[o->n] = 0;
    }
}

/* A JSON string: the few characters an error message or a path may hold are escaped. */
static void out_str(out *o, const char *s) {
    outf(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') outf(o, "\\%c", c);
        else if (c < 0x20) outf(o, "\\u%04x", c);
        else outf(o, "%c", c);
    }
    outf(o, "\"");
}

static void out_write(const out *o, const args *a, const char *summary) {
    if (!a->out) {
        fwrite(o->s, 1, o->n, stdout);
        return;
    }
    FILE *f = fopen(a->out, "w");
    if (!f || fwrite(o->s, 1, o->n, f) != o->n || fclose(f)) die("cannot write %s", a->out);
    if (summary) fprintf(stderr, "%s\n", summary);
}

/* ------------------------------------------------------------------ inputs */

/* Reads a file whole; *count = its size in elements of `elem` bytes. */
static void *read_path(const char *path, size_t elem, size_t *count) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s (make_inputs.py writes the inputs)", path);
    if (fseek(f, 0, SEEK_END)) die("cannot seek %s", path);
    long len = ftell(f);
    rewind(f);
    if (len <= 0 || (size_t)len % elem) die("%s: size is not a positive multiple of the element", path);
    void *p = malloc((size_t)len);
    if (!p) die("out of memory reading %s", path);
    if (fread(p, 1, (size_t)len, f) != (size_t)len) die("short read on %s", path);
    fclose(f);
    *count = (size_t)len / elem;
    return p;
}

/* inputs/NAME, as make_inputs.py wrote it. */
static void *read_input(const args *a, const char *name, size_t elem, size_t *count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", a->inputs, name);
    return read_path(path, elem, count);
}

/* int64 ids [rows, L] -> int32, checked against the vocabulary. With `mask`, every position up to
 * and including the pooled one must be attended: clipeval takes no attention mask (causal
 * attention makes later positions irrelevant), so a mask with holes before the pool would make
 * the two engines compute different things. */
static int32_t *ids_to_i32(const clip_model *m, const int64_t *ids, const int64_t *mask, size_t rows,
                           int L, const char *name) {
    int vocab = clip_model_get_info(m)->vocab_size;
    int32_t *r = malloc(sizeof(int32_t) * rows * (size_t)L);
    if (!r) die("out of memory");
    for (size_t i = 0; i < rows * (size_t)L; i++) {
        if (ids[i] < 0 || ids[i] >= vocab) die("%s: token id out of the vocabulary", name);
        r[i] = (int32_t)ids[i];
    }
    if (mask)
        for (size_t b = 0; b < rows; b++) {
            int pool = clip_text_pool_index(m, r + b * (size_t)L, L);
            for (int j = 0; j <= pool; j++)
                if (mask[b * (size_t)L + (size_t)j] != 1)
                    die("%s: the attention mask is 0 before the pooled position (clipeval has no "
                        "attention mask)", name);
        }
    return r;
}

/* ------------------------------------------------------------------ machine */

/* CPU seconds all CPUs spent busy since boot, as ort_run.js counts them (guest time is already
 * in user). */
static double sys_busy_s(void) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[10] = {0};
    if (!f) return 0;
    int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (k < 4) return 0;
    unsigned long long busy = 0;
    for (int i = 0; i < 8; i++)
        if (i != 3 && i != 4) busy += v[i];
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

static double own_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static int ncpu(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* /proc/self/status VmHWM in MiB, as ort_run.js reads it (-1 where there is no /proc). */
static double vm_hwm_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double r = -1;
    if (!f) return r;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) r = atof(line + 6) / 1024.0;
    fclose(f);
    return r;
}

/* ------------------------------------------------------------------ model */

static clip_model *load(const args *a, clip_error *e) {
    clip_model_options o;
    clip_model_options_init(&o);
    o.device = CLIP_DEVICE_CPU;
    o.n_threads = a->threads;
    o.precision = a->precision;
    static const char *const names[] = {"auto", "avx512", "avx2", "portable", "openblas"};
    o.cpu_kernel = CLIP_CPU_KERNEL_AUTO;
    for (int i = 0; i < 5; i++)
        if (!strcmp(a->kernel, names[i])) o.cpu_kernel = (clip_cpu_kernel)i;
    clip_model *m = NULL;
    return clip_model_load(a->model, &o, &m, e) ? NULL : m;
}

static clip_model *load_or_die(const args *a) {
    clip_error e = {0};
    clip_model *m = load(a, &e);
    if (!m) die("%s", e.msg);
    return m;
}

static void encode_images(const clip_model *m, const float *px, int n, float *outv) {
    clip_error e = {0};
    if (clip_encode_images(m, px, n, NULL, outv, &e)) die("%s", e.msg);
}

static void encode_texts(const clip_model *m, const int32_t *ids, int n, int L, float *outv) {
    clip_error e = {0};
    if (clip_encode_texts(m, ids, n, L, NULL, outv, &e)) die("%s", e.msg);
}

/* ------------------------------------------------------------------ accuracy */

typedef struct acc {
    double max_abs, min_cos;
    size_t n, worst_row;
} acc;

static acc accuracy(const float *got, const double *ref, size_t n, int dim) {
    acc r = {0, 2, n, 0};
    for (size_t i = 0; i < n; i++) {
        double dot = 0, gg = 0, rr = 0;
        for (int j = 0; j < dim; j++) {
            double g = got[i * (size_t)dim + (size_t)j], f = ref[i * (size_t)dim + (size_t)j];
            if (fabs(g - f) > r.max_abs || g != g) r.max_abs = g != g ? INFINITY : fabs(g - f);
            dot += g * f;
            gg += g * g;
            rr += f * f;
        }
        double c = dot / sqrt(gg * rr);
        /* a NaN cosine is the worst, and stays so */
        if (r.min_cos == r.min_cos && (c != c || c < r.min_cos)) {
            r.min_cos = c;
            r.worst_row = i;
        }
    }
    return r;
}

/* A number as JSON, with the literals Python's json module reads for what C cannot print there. */
static void out_num(out *o, const char *fmt, double v) {
    if (v != v) outf(o, "NaN");
    else if (isinf(v)) outf(o, v > 0 ? "Infinity" : "-Infinity");
    else outf(o, fmt, v);
}

static void out_acc(out *o, const char *key, acc r) {
    outf(o, " \"%s\": {\"n\": %zu, \"max_abs\": ", key, r.n);
    out_num(o, "%.6g", r.max_abs);
    outf(o, ", \"min_cos\": ");
    out_num(o, "%.10f", r.min_cos);
    outf(o, ", \"worst_row\": %zu}", r.worst_row);
}

static void head(out *o, const clip_model *m) {
    const clip_model_info *i = clip_model_get_info(m);
    outf(o, "{\n \"engine\": \"clipeval %s\",\n \"precision\": \"%s\",\n \"kernel\": \"%s\",\n"
            " \"threads\": %d,\n", clip_version(), clip_precision_name(i->precision), i->cpu_kernel,
         i->n_threads);
}

static int mode_validate(const args *a) {
    clip_model *m = load_or_die(a);
    const clip_model_info *info = clip_model_get_info(m);
    int E = info->embed_dim, S = info->image_size;
    size_t npx, nri, nids, nam, nrt;
    float *px = read_input(a, "val_pix.f32", sizeof(float), &npx);
    double *ri = read_input(a, "val_img.f64", sizeof(double), &nri);
    int64_t *ids = read_input(a, "val_ids.i64", sizeof(int64_t), &nids);
    int64_t *am = read_input(a, "val_am.i64", sizeof(int64_t), &nam);
    double *rt = read_input(a, "val_txt.f64", sizeof(double), &nrt);
    size_t ni = nri / (size_t)E, nt = nrt / (size_t)E, L = nt ? nids / nt : 0; /* 77: padded */
    if (nri % (size_t)E || npx != ni * 3 * (size_t)S * S)
        die("val_pix.f32 and val_img.f64 disagree on the number of images");
    if (nrt % (size_t)E || !nt || nids % nt || nam != nids)
        die("val_ids.i64, val_am.i64 and val_txt.f64 disagree on the number of texts");
    float *gi = malloc(sizeof(float) * ni * (size_t)E), *gt = malloc(sizeof(float) * nt * (size_t)E);
    if (!gi || !gt) die("out of memory");
    int32_t *ids32 = ids_to_i32(m, ids, am, nt, (int)L, "val_ids.i64");
    encode_images(m, px, (int)ni, gi);
    encode_texts(m, ids32, (int)nt, (int)L, gt);
    acc ai = accuracy(gi, ri, ni, E), at = accuracy(gt, rt, nt, E);
    out o = {0};
    head(&o, m);
    out_acc(&o, "image_embeds", ai);
    outf(&o, ",\n");
    out_acc(&o, "text_embeds", at);
    outf(&o, "\n}\n");
    char sum[256];
    snprintf(sum, sizeof sum, "clipeval %s validate: images max %.3g min cos %.7f, texts max %.3g "
             "min cos %.7f", clip_precision_name(info->precision), ai.max_abs, ai.min_cos,
             at.max_abs, at.min_cos);
    out_write(&o, a, sum);
    free(o.s);
    free(px);
    free(ri);
    free(ids);
    free(am);
    free(rt);
    free(gi);
    free(gt);
    free(ids32);
    clip_model_free(m);
    return 0;
}

static int mode_stats(const args *a) {
    if (a->npos != 2) die("stats needs GOT.f32 REF.f64");
    size_t ng, nr;
    float *g = read_path(a->pos[0], sizeof(float), &ng);
    double *r = read_path(a->pos[1], sizeof(double), &nr);
    int E = a->dim;
    if (ng != nr || ng % (size_t)E) {
        free(g);
        free(r);
        die("%s and %s differ in size (or are not rows of %d)", a->pos[0], a->pos[1], E);
    }
    acc s = accuracy(g, r, ng / (size_t)E, E);
    out o = {0};
    outf(&o, "{\n");
    out_acc(&o, "embeds", s);
    outf(&o, "\n}\n");
    out_write(&o, a, NULL);
    free(o.s);
    free(g);
    free(r);
    return 0;
}

/* ------------------------------------------------------------------ timing */

typedef struct job {
    const clip_model *m;
    const float *px; /* images, else texts */
    const int32_t *ids;
    int batch, len;
    float *outv;
} job;

static void run_job(const job *j) {
    if (j->px) encode_images(j->m, j->px, j->batch, j->outv);
    else encode_texts(j->m, j->ids, j->batch, j->len, j->outv);
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* ort_run.js timeCell: `warmup` calls, one timed call, then enough for ~TARGET_S seconds. */
static void time_cell(out *o, const char *name, const job *j, int warmup, double target_s, int first) {
    const char *prec = clip_precision_name(clip_model_get_info(j->m)->precision);
    for (int i = 0; i < warmup; i++) run_job(j);
    double b0 = sys_busy_s(), o0 = own_cpu_s(), w0 = bench_now(), times[40];
    double t = bench_now();
    run_job(j);
    times[0] = bench_now() - t;
    double want = ceil(target_s / times[0]); /* clamped before the cast: it may be huge */
    int reps = want < 5 ? 5 : want > 40 ? 40 : (int)want;
    for (int i = 1; i < reps; i++) {
        t = bench_now();
        run_job(j);
        times[i] = bench_now() - t;
    }
    double wall = bench_now() - w0, own = own_cpu_s() - o0;
    double foreign = sys_busy_s() - b0 - own;
    if (foreign < 0) foreign = 0;
    double sorted[40];
    memcpy(sorted, times, sizeof(double) * (size_t)reps);
    qsort(sorted, (size_t)reps, sizeof(double), cmp_double);
    double med = reps % 2 ? sorted[reps / 2] : (sorted[reps / 2 - 1] + sorted[reps / 2]) / 2;
    int n = ncpu();
    outf(o, "%s  \"%s\": {\"items\": %d, \"reps\": %d, \"median_s\": %.6g, \"min_s\": %.6g, "
            "\"per_s\": %.6g, \"per_s_best\": %.6g, \"own_util\": %.4f, \"foreign_frac\": %.4f, "
            "\"times\": [", first ? "" : ",\n", name, j->batch, reps, med, sorted[0],
         j->batch / med, j->batch / sorted[0], own / (n * wall), foreign / (n * wall));
    for (int i = 0; i < reps; i++) outf(o, "%s%.6g", i ? ", " : "", times[i]);
    outf(o, "]}");
    fprintf(stderr, "clipeval %s %s: %.2f/s (best %.2f, %d reps, foreign %.1f%%)\n", prec, name, j->batch / med,
            j->batch / sorted[0], reps, 100 * foreign / (n * wall));
}

static int mode_bench(const args *a) {
    const char *env = getenv("TARGET_S");
    double target_s = env && *env ? atof(env) : 3;
    if (!(target_s > 0)) die("TARGET_S must be a positive number of seconds, not '%s'", env);
    double t0 = bench_now();
    clip_model *m = load_or_die(a);
    double load_s = bench_now() - t0;
    const clip_model_info *info = clip_model_get_info(m);
    int E = info->embed_dim, S = info->image_size;
    size_t npx;
    float *px = read_input(a, "pix32.f32", sizeof(float), &npx);
    size_t per = (size_t)3 * S * S, have = npx / per;
    float *outv = malloc(sizeof(float) * (size_t)E * 64);
    if (!outv) die("out of memory");
    out o = {0};
    head(&o, m);
    outf(&o, " \"load_s\": %.4f,\n \"cells\": {\n", load_s);
    char cells[512];
    snprintf(cells, sizeof cells, "%s", a->cells);
    int first = 1;
    for (char *save = NULL, *c = strtok_r(cells, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
        int b = 0;
        char kind[32];
        if (sscanf(c, "img_b%d", &b) == 1 && b > 0) {
            if ((size_t)b > have || b > 64) die("cell %s: pix32.f32 holds fewer images", c);
            job j = {m, px, NULL, b, 0, outv};
            time_cell(&o, c, &j, b == 1 ? 3 : 2, target_s, first);
        } else if (sscanf(c, "%31[a-z0-9]_b%d", kind, &b) == 2 && b > 0 && b <= 64 &&
                   (!strcmp(kind, "txt15") || !strcmp(kind, "txt77pad") || !strcmp(kind, "txtfull77"))) {
            const char *fi = !strcmp(kind, "txt15") ? "ids15.i64" : !strcmp(kind, "txt77pad") ? "ids77.i64"
                                                                                            : "idsfull.i64";
            const char *fa = !strcmp(kind, "txt15") ? "am15.i64" : !strcmp(kind, "txt77pad") ? "am77.i64"
                                                                                           : "amfull.i64";
            int L = !strcmp(kind, "txt15") ? 15 : 77;
            size_t nids, nam;
            int64_t *ids = read_input(a, fi, sizeof(int64_t), &nids);
            int64_t *am = read_input(a, fa, sizeof(int64_t), &nam);
            if (nids != nam || nids % (size_t)L || nids / (size_t)L < (size_t)b)
                die("cell %s: %s holds fewer rows", c, fi);
            int32_t *ids32 = ids_to_i32(m, ids, am, (size_t)b, L, fi);
            job j = {m, NULL, ids32, b, L, outv};
            time_cell(&o, c, &j, 2, target_s, first);
            free(ids);
            free(am);
            free(ids32);
        } else {
            die("unknown cell '%s' (img_bN, txt15_bN, txt77pad_bN, txtfull77_bN; N <= 64)", c);
        }
        first = 0;
    }
    outf(&o, "\n },\n \"vm_hwm_mb\": %.1f\n}\n", vm_hwm_mb());
    out_write(&o, a, NULL);
    free(o.s);
    free(px);
    free(outv);
    clip_model_free(m);
    return 0;
}

/* One process: read one image, load the model, embed the image; times from main() entry, so
 * reading the input and loading the library's data are inside, as in ort_run.js `first`. */
static int mode_first(const args *a) {
    size_t npx, nri;
    float *px = read_input(a, "val_pix.f32", sizeof(float), &npx);
    double *ri = read_input(a, "val_img.f64", sizeof(double), &nri);
    double t_start = bench_now();
    clip_model *m = load_or_die(a);
    double t_loaded = bench_now();
    const clip_model_info *info = clip_model_get_info(m);
    int E = info->embed_dim;
    if (npx < (size_t)3 * info->image_size * info->image_size || nri < (size_t)E)
        die("val_pix.f32 / val_img.f64 are too short");
    float *outv = malloc(sizeof(float) * (size_t)E);
    if (!outv) die("out of memory");
    encode_images(m, px, 1, outv);
    double t_done = bench_now();
    acc r = accuracy(outv, ri, 1, E);
    out o = {0};
    head(&o, m);
    outf(&o, " \"main_to_load_start_s\": %.4f,\n \"load_s\": %.4f,\n \"first_run_s\": %.4f,\n"
             " \"main_to_result_s\": %.4f,\n \"max_abs_vs_f64\": ",
         t_start - g_t_main, t_loaded - t_start, t_done - t_loaded, t_done - g_t_main);
    out_num(&o, "%.6g", r.max_abs);
    outf(&o, ",\n \"vm_hwm_mb\": %.1f\n}\n", vm_hwm_mb());
    char sum[160];
    snprintf(sum, sizeof sum, "clipeval %s first: %.3f s to the first embedding, peak RSS %.0f MiB",
             clip_precision_name(info->precision), t_done - g_t_main, vm_hwm_mb());
    out_write(&o, a, sum);
    free(o.s);
    free(px);
    free(ri);
    free(outv);
    clip_model_free(m);
    return 0;
}

static int mode_ceiling(const args *a) {
    double b0 = sys_busy_s(), o0 = own_cpu_s(), w0 = bench_now(), best = 0, s[5];
    for (int i = 0; i < 5; i++) {
        s[i] = sgemm_ceiling(1536);
        if (s[i] > best) best = s[i];
    }
    double wall = bench_now() - w0, foreign = sys_busy_s() - b0 - (own_cpu_s() - o0);
    out o = {0};
    outf(&o, "{\n \"sgemm_n\": 1536,\n \"sgemm_gflops\": %.2f,\n \"samples\": [%.2f, %.2f, %.2f, "
             "%.2f, %.2f],\n \"foreign_frac\": %.4f\n}\n", best, s[0], s[1], s[2], s[3], s[4],
         (foreign < 0 ? 0 : foreign) / (ncpu() * wall));
    char sum[96];
    snprintf(sum, sizeof sum, "sgemm ceiling: %.1f GFLOP/s", best);
    out_write(&o, a, sum);
    free(o.s);
    return best > 0 ? 0 : 1;
}

static int mode_info(const args *a) {
    clip_runtime_info r;
    clip_runtime_info_get(&r);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    out o = {0};
    outf(&o, "{\n \"clipeval\": ");
    out_str(&o, clip_version());
    outf(&o, ",\n \"blas\": ");
    out_str(&o, r.blas);
    outf(&o, ",\n \"blas_core\": ");
    out_str(&o, r.blas_core);
    outf(&o, ",\n \"openblas_coretype_env\": ");
    if (ct) out_str(&o, ct);
    else outf(&o, "null");
    outf(&o, ",\n \"blas_warning\": ");
    out_str(&o, r.warning);
    outf(&o, ",\n \"cores\": %d,\n \"avx2\": %d,\n \"fma\": %d,\n \"avx512f\": %d,\n"
             " \"avx512bf16\": %d", r.cores, r.avx2, r.fma, r.avx512f, r.avx512bf16);
    int rc = 0;
    if (a->model) {
        clip_error e = {0};
        clip_model *m = load(a, &e);
        outf(&o, ",\n \"precision\": \"%s\",\n \"model\": ", clip_precision_name(a->precision));
        if (m) {
            const clip_model_info *i = clip_model_get_info(m);
            outf(&o, "{\"kernel\": \"%s\", \"threads\": %d, \"image_gflop\": %.4f, "
                     "\"text77_gflop\": %.4f}", i->cpu_kernel, i->n_threads, image_flops(i) / 1e9,
                 text_flops(i, 77) / 1e9);
            clip_model_free(m);
        } else {
            outf(&o, "null,\n \"error\": ");
            out_str(&o, e.msg);
            rc = 3;
        }
    }
    outf(&o, "\n}\n");
    out_write(&o, a, NULL);
    free(o.s);
    return rc;
}

/* ------------------------------------------------------------------ main */

static int usage(const char *why) {
    if (why) fprintf(stderr, "bench_peers: %s\n", why);
    fprintf(stderr,
            "usage: bench_peers info|ceiling|validate|bench|first [--model DIR] [--inputs DIR]\n"
            "                   [--precision fp32|bf16] [--kernel auto|avx512|avx2|portable|openblas]\n"
            "                   [--threads N] [--cells a,b,...] [--out FILE.json]\n"
            "       bench_peers stats GOT.f32 REF.f64 [--dim 512] [--out FILE.json]\n"
            "(normally run by tests/bench/peers.sh: make bench-peers)\n");
    return 2;
}

int main(int argc, char **argv) {
    g_t_main = bench_now();
    args a = {0};
    a.threads = 2;
    a.dim = 512;
    a.kernel = "auto";
    a.cells = "img_b1,img_b8,img_b32,txt77pad_b32,txt15_b32,txtfull77_b32";
    a.precision = CLIP_PRECISION_FP32;
    if (argc < 2) return usage(NULL);
    a.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (k[0] != '-' || k[1] != '-') {
            if (a.npos == 2) return usage("too many arguments");
            a.pos[a.npos++] = k;
            continue;
        }
        if (!v) return usage("an option lacks its value");
        i++;
        if (!strcmp(k, "--model")) a.model = v;
        else if (!strcmp(k, "--inputs")) a.inputs = v;
        else if (!strcmp(k, "--cells")) a.cells = v;
        else if (!strcmp(k, "--out")) a.out = v;
        else if (!strcmp(k, "--threads")) {
            a.threads = atoi(v);
            if (a.threads < 1) return usage("--threads must be >= 1");
        } else if (!strcmp(k, "--dim")) {
            a.dim = atoi(v);
            if (a.dim < 1) return usage("--dim must be >= 1");
        } else if (!strcmp(k, "--kernel")) {
            if (strcmp(v, "auto") && strcmp(v, "avx512") && strcmp(v, "avx2") && strcmp(v, "portable") &&
                strcmp(v, "openblas"))
                return usage("--kernel: auto, avx512, avx2, portable or openblas");
            a.kernel = v;
        } else if (!strcmp(k, "--precision")) {
            clip_error e = {0};
            if (clip_precision_parse(v, &a.precision, &e)) return usage(e.msg);
        } else {
            return usage("unknown option");
        }
    }
    static const char *const modes[] = {"info", "ceiling", "validate", "bench", "first", "stats"};
    int known = 0;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) known |= !strcmp(a.mode, modes[i]);
    if (!known) return usage("unknown mode");
    int needs_model = strcmp(a.mode, "info") && strcmp(a.mode, "ceiling") && strcmp(a.mode, "stats");
    int needs_inputs = needs_model;
    if (needs_model && !a.model) return usage("--model is required");
    if (needs_inputs && !a.inputs) return usage("--inputs is required");
    if (!strcmp(a.mode, "info")) return mode_info(&a);
    if (!strcmp(a.mode, "ceiling")) return mode_ceiling(&a);
    if (!strcmp(a.mode, "validate")) return mode_validate(&a);
    if (!strcmp(a.mode, "bench")) return mode_bench(&a);
    if (!strcmp(a.mode, "first")) return mode_first(&a);
    return mode_stats(&a);
}
