/* bench_serve.c — `clipeval serve` under load on loopback (make bench-serve).
 *
 * For single-text and single-image /v1/embeddings requests at concurrency 1, 8 and 64 it
 * reports requests/s and p50/p99 latency (a small client of ours: one thread and one keep-alive
 * connection per concurrent client, a fixed number of requests, every answer checked), and in
 * the same run:
 *   - the offline throughput of the same inputs on the path `clipeval embed` takes (decode or
 *     tokenize everything, then one model call), in this process through clip.h;
 *   - the bare model call for one input (tokenize or decode+preprocess, then encode), whose p50
 *     the server's p50 at concurrency 1 is compared with.
 * Every request carries an input no other request has, so batching cannot profit from
 * deduplication. The figures are ratios measured in one run; the machine is shared, so the
 * absolute numbers are noisy.
 *
 * usage: bench_serve --model DIR [--cli PATH] [--requests N] [--max-seconds S]
 *   --requests N     text requests at concurrency 64 (default 256); images and lower
 *                    concurrency use fewer (see main)
 *   --max-seconds S  stop issuing requests in one configuration after S seconds (default 10) */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <png.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clip.h"
#include "serve_request.h"
#include "util.h"

#define IMG_W 480
#define IMG_H 360

static void die(const char *what) {
    fprintf(stderr, "bench_serve: %s\n", what);
    exit(1);
}

/* ------------------------------------------------------------------ inputs */

static void png_write(png_structp p, png_bytep data, png_size_t n) {
    if (!clip_buf_append((clip_buf *)png_get_io_ptr(p), data, n)) png_error(p, "out of memory");
}
static void png_flush(png_structp p) { (void)p; }

/* A distinct smooth RGB image per seed (a camera-like size; it compresses like a photo would
 * not, but decoding and resizing cost the same). */
static void make_png(int seed, clip_buf *out) {
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    unsigned char *row = malloc(3 * IMG_W);
    if (!p || !info || !row) die("libpng");
    if (setjmp(png_jmpbuf(p))) die("libpng write failed");
    png_set_write_fn(p, out, png_write, png_flush);
    png_set_compression_level(p, 1);
    png_set_IHDR(p, info, IMG_W, IMG_H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(p, info);
    for (int y = 0; y < IMG_H; y++) {
        for (int x = 0; x < IMG_W; x++) {
            row[3 * x] = (unsigned char)(x + seed * 37);
            row[3 * x + 1] = (unsigned char)(y * 2 + seed * 11);
            row[3 * x + 2] = (unsigned char)((x * y) / 64 + seed * 5);
        }
        png_write_row(p, row);
    }
    png_write_end(p, info);
    png_destroy_write_struct(&p, &info);
    free(row);
}

typedef struct inputs {
    int n;
    char **text;       /* distinct texts */
    clip_buf *png;     /* distinct PNG files */
    clip_buf *req_text, *req_image; /* whole HTTP requests */
} inputs;

static void http_request(clip_buf *req, const char *body, size_t len) {
    clip_buf_printf(req, "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         "application/json\r\nContent-Length: %zu\r\n\r\n", len);
    clip_buf_append(req, body, len);
}

static void make_inputs(int n, inputs *in) {
    in->n = n;
    in->text = calloc((size_t)n, sizeof *in->text);
    in->png = calloc((size_t)n, sizeof *in->png);
    in->req_text = calloc((size_t)n, sizeof *in->req_text);
    in->req_image = calloc((size_t)n, sizeof *in->req_image);
    if (!in->text || !in->png || !in->req_text || !in->req_image) die("out of memory");
    static const char *things[] = {"cat", "dog", "red car", "mountain lake", "bowl of fruit",
                                   "city street at night", "old bicycle", "child with a kite"};
    for (int i = 0; i < n; i++) {
        char t[160];
        snprintf(t, sizeof t, "a photo of a %s, picture number %d", things[i % 8], i);
        in->text[i] = strdup(t);
        make_png(i, &in->png[i]);
        clip_buf body = {0};
        clip_buf_printf(&body, "{\"input\": \"%s\"}", t);
        http_request(&in->req_text[i], body.data, body.len);
        clip_buf_free(&body);
        char *b64 = malloc(sv_base64_len(in->png[i].len) + 1);
        if (!in->text[i] || !b64) die("out of memory");
        sv_base64_encode((unsigned char *)in->png[i].data, in->png[i].len, b64);
        clip_buf_puts(&body, "{\"input\": [{\"image\": \"");
        clip_buf_append(&body, b64, sv_base64_len(in->png[i].len));
        clip_buf_puts(&body, "\"}]}");
        free(b64);
        http_request(&in->req_image[i], body.data, body.len);
        clip_buf_free(&body);
        if (in->png[i].oom || in->req_text[i].oom || in->req_image[i].oom) die("out of memory");
    }
}

/* ------------------------------------------------------------------ offline and bare */

typedef struct lib {
    clip_model *m;
    clip_tokenizer *tok;
    clip_image_config icfg;
    clip_decode_options dopt;
    int ctx, S, dim;
} lib;

static void tokenize(const lib *L, char **texts, int n, int32_t *ids) {
    clip_error e = {0};
    size_t *lens = malloc(sizeof(size_t) * (size_t)n);
    if (!lens) die("out of memory");
    for (int i = 0; i < n; i++) lens[i] = strlen(texts[i]);
    if (clip_tokenize_batch(L->tok, (const char *const *)texts, lens, n, L->ctx, ids, NULL, &e))
        die(e.msg);
    free(lens);
}

static void decode(const lib *L, const clip_buf *png, float *px) {
    clip_image img = {0};
    clip_error e = {0};
    if (clip_image_decode_memory(png->data, png->len, &L->dopt, &img, &e) ||
        clip_image_preprocess(&img, &L->icfg, &L->dopt, px, NULL, &e))
        die(e.msg);
    clip_image_free(&img);
}

/* `clipeval embed`'s path over n inputs from `first`: prepare all, one model call. Inputs/s. */
static double offline(const lib *L, const inputs *in, int first, int n, int image) {
    size_t per = image ? (size_t)3 * L->S * L->S : (size_t)L->ctx;
    void *buf = malloc((image ? sizeof(float) : sizeof(int32_t)) * per * (size_t)n);
    float *out = malloc(sizeof(float) * (size_t)L->dim * (size_t)n);
    if (!buf || !out) die("out of memory");
    clip_error e = {0};
    double t0 = clip_now();
    if (image) {
        for (int i = 0; i < n; i++) decode(L, &in->png[first + i], (float *)buf + per * i);
        if (clip_encode_images(L->m, buf, n, NULL, out, &e)) die(e.msg);
    } else {
        tokenize(L, in->text + first, n, buf);
        if (clip_encode_texts(L->m, buf, n, L->ctx, NULL, out, &e)) die(e.msg);
    }
    double dt = clip_now() - t0;
    free(buf);
    free(out);
    return n / dt;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int k = (int)(p * (n - 1) + 0.5);
    return v[k < n ? k : n - 1];
}

/* ------------------------------------------------------------------ the server */

static pid_t start_server(const char *cli, const char *model, int *port) {
    int fds[2];
    if (pipe(fds) != 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(cli, cli, "serve", "--model", model, "--port", "0", "--device", "cpu", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[512];
    /* blocks until the server is ready (or exits: EOF) */
    if (!f || !fgets(line, sizeof line, f)) die("the server did not start");
    char *colon = strrchr(line, ':');
    if (!strstr(line, "listening on") || !colon) die("unexpected first line from the server");
    *port = atoi(colon + 1);
    fclose(f);
    return pid;
}

typedef struct load {
    int port;
    const clip_buf *reqs; /* one request per index */
    int first, total;
    double max_seconds, t_start;
    pthread_mutex_t mu;
    int next, done, failed;
    double *lat;
    char err[256];
} load;

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static const char *find_header(const char *head, const char *end, const char *name) {
    size_t n = strlen(name);
    for (const char *p = head; p + n <= end; p++)
        if (!strncasecmp(p, name, n)) return p;
    return NULL;
}

/* Sends one request and reads its answer; returns the HTTP status (0 on a transport error). */
static int exchange(int fd, const clip_buf *req, clip_buf *resp) {
    for (size_t off = 0; off < req->len;) {
        ssize_t k = send(fd, req->data + off, req->len - off, MSG_NOSIGNAL);
        if (k <= 0) return 0;
        off += (size_t)k;
    }
    resp->len = 0;
    size_t head = 0, need = 0;
    for (;;) {
        if (!clip_buf_reserve(resp, 65536)) return 0;
        ssize_t k = recv(fd, resp->data + resp->len, 65536, 0);
        if (k <= 0) return 0;
        resp->len += (size_t)k;
        resp->data[resp->len] = '\0';
        if (!head) {
            char *end = strstr(resp->data, "\r\n\r\n");
            if (!end) continue;
            head = (size_t)(end - resp->data) + 4;
            const char *cl = find_header(resp->data, end, "\r\nContent-Length:");
            if (!cl || cl > end) return 0;
            need = head + strtoul(cl + 17, NULL, 10);
        }
        if (resp->len >= need) break;
    }
    int status = 0;
    if (sscanf(resp->data, "HTTP/1.1 %d", &status) != 1) return 0;
    if (status == 200 && !strstr(resp->data + head, "\"embedding\"")) return 0;
    return status;
}

static void *client(void *arg) {
    load *l = arg;
    int fd = connect_to(l->port);
    clip_buf resp = {0};
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int i = l->next < l->total && !l->failed && clip_now() - l->t_start < l->max_seconds
                    ? l->next++
                    : -1;
        pthread_mutex_unlock(&l->mu);
        if (i < 0) break;
        double t0 = clip_now();
        int st = fd >= 0 ? exchange(fd, &l->reqs[l->first + i], &resp) : 0;
        double dt = clip_now() - t0;
        pthread_mutex_lock(&l->mu);
        if (st != 200) {
            l->failed = 1;
            snprintf(l->err, sizeof l->err, "request %d: status %d", i, st);
        } else {
            l->lat[l->done++] = dt;
        }
        pthread_mutex_unlock(&l->mu);
    }
    if (fd >= 0) close(fd);
    clip_buf_free(&resp);
    return NULL;
}

typedef struct result {
    int requests;
    double rps, p50, p99;
} result;

static result run_load(int port, const clip_buf *reqs, int first, int total, int conc,
                       double max_seconds) {
    load l;
    memset(&l, 0, sizeof l);
    l.port = port;
    l.reqs = reqs;
    l.first = first;
    l.total = total;
    l.max_seconds = max_seconds;
    l.lat = calloc((size_t)total, sizeof *l.lat);
    pthread_t *th = calloc((size_t)conc, sizeof *th);
    if (!l.lat || !th || pthread_mutex_init(&l.mu, NULL)) die("out of memory");
    l.t_start = clip_now();
    for (int c = 0; c < conc; c++)
        if (pthread_create(&th[c], NULL, client, &l)) die("pthread_create");
    for (int c = 0; c < conc; c++) pthread_join(th[c], NULL);
    double wall = clip_now() - l.t_start;
    if (l.failed) die(l.err);
    result r = {l.done, l.done / wall, pct(l.lat, l.done, 0.5), pct(l.lat, l.done, 0.99)};
    pthread_mutex_destroy(&l.mu);
    free(l.lat);
    free(th);
    return r;
}

/* Concurrency 1, paired with the bare model call: n times, one input prepared and encoded in
 * this process (tokenize, or decode + preprocess; then encode), then one request to the idle
 * server with the next input. Interleaving makes both see the same machine. */
static void paired_c1(const lib *L, const inputs *in, const clip_buf *reqs, int port, int first,
                      int n, int image, double max_seconds, double *bare_p50, result *server) {
    double *lb = malloc(sizeof(double) * (size_t)n), *ls = malloc(sizeof(double) * (size_t)n);
    float *px = malloc(sizeof(float) * 3 * (size_t)L->S * L->S);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)L->ctx);
    float *out = malloc(sizeof(float) * (size_t)L->dim);
    int fd = connect_to(port);
    clip_buf resp = {0};
    if (!lb || !ls || !px || !ids || !out || fd < 0) die("out of memory or no connection");
    clip_error e = {0};
    double t_start = clip_now(), busy = 0;
    int done = 0;
    for (int i = 0; i < n && clip_now() - t_start < max_seconds; i++, done++) {
        int a = first + 2 * i, b = a + 1;
        double t0 = clip_now();
        if (image) {
            decode(L, &in->png[a], px);
            if (clip_encode_images(L->m, px, 1, NULL, out, &e)) die(e.msg);
        } else {
            tokenize(L, in->text + a, 1, ids);
            if (clip_encode_texts(L->m, ids, 1, L->ctx, NULL, out, &e)) die(e.msg);
        }
        double t1 = clip_now();
        if (exchange(fd, &reqs[b], &resp) != 200) die("a request at concurrency 1 failed");
        double t2 = clip_now();
        lb[i] = t1 - t0;
        ls[i] = t2 - t1;
        busy += t2 - t1;
    }
    close(fd);
    clip_buf_free(&resp);
    *bare_p50 = pct(lb, done, 0.5);
    server->requests = done;
    server->rps = done / busy;
    server->p50 = pct(ls, done, 0.5);
    server->p99 = pct(ls, done, 0.99);
    free(lb);
    free(ls);
    free(px);
    free(ids);
    free(out);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    /* The server runs OpenMP with passive waiting (serve.c says why); the in-process figures
     * it is compared with get the same policy, read by libgomp at start-up: start again. */
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT") &&
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0) {
        execv("/proc/self/exe", argv);
        die("cannot restart with OMP_WAIT_POLICY=PASSIVE");
    }
    const char *model = NULL, *cli = NULL;
    int n64 = 256;
    double max_seconds = 10;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--cli") && i + 1 < argc)
            cli = argv[++i];
        else if (!strcmp(argv[i], "--requests") && i + 1 < argc)
            n64 = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc)
            max_seconds = atof(argv[++i]);
        else
            die("usage: bench_serve --model DIR [--cli PATH] [--requests N] [--max-seconds S]");
    }
    char clipath[4096];
    if (!cli) {
        const char *b = getenv("CLIPEVAL_BUILD");
        snprintf(clipath, sizeof clipath, "%s/clipeval", b && *b ? b : "build");
        cli = clipath;
    }
    if (!model || n64 < 64) die("--model is required (and --requests >= 64)");
    signal(SIGPIPE, SIG_IGN);

    lib L;
    memset(&L, 0, sizeof L);
    clip_error e = {0};
    clip_model_options mo;
    clip_model_options_init(&mo);
    if (clip_model_load(model, &mo, &L.m, &e)) die(e.msg);
    const clip_model_info *info = clip_model_get_info(L.m);
    if (clip_tokenizer_load(info->dir, &L.tok, &e) ||
        clip_image_config_load(info->dir, &L.icfg, &e))
        die(e.msg);
    clip_decode_options_init(&L.dopt);
    L.ctx = clip_tokenizer_max_length(L.tok) < info->context_length
                ? clip_tokenizer_max_length(L.tok)
                : info->context_length;
    L.S = info->image_size;
    L.dim = info->embed_dim;

    const int conc[3] = {1, 8, 64};
    /* requests per configuration: texts n64 at concurrency 64, images a quarter (an image
     * costs several texts); concurrency 8 half of that, concurrency 1 an eighth (at least 16) */
    int count[2][3];
    for (int k = 0; k < 2; k++) {
        int c64 = k ? n64 / 4 : n64;
        count[k][2] = c64;
        count[k][1] = c64 / 2;
        count[k][0] = c64 / 8 < 16 ? 16 : c64 / 8;
    }
    int warm = 4;
    /* disjoint input ranges per kind: warm-up, concurrency 1 (bare + server), 8, 64 */
    int total = warm + 2 * count[0][0] + count[0][1] + count[0][2];
    fprintf(stderr, "bench_serve: preparing %d distinct texts and %dx%d PNG images...\n", total,
            IMG_W, IMG_H);
    inputs in;
    make_inputs(total, &in);

    int port = 0;
    pid_t pid = start_server(cli, model, &port);
    fprintf(stderr, "bench_serve: server on port %d\n", port);
    /* Each server figure is measured next to the in-process one it is compared with (the
     * machine is shared: what runs beside us changes within a minute). The server is idle
     * while this process computes, and this process is idle while the server is loaded. */
    double off[2], bare_p50[2];
    result res[2][3];
    for (int k = 0; k < 2; k++) {
        const clip_buf *reqs = k ? in.req_image : in.req_text;
        offline(&L, &in, 0, warm, k); /* warm-up: first touch of weights, thread pools */
        run_load(port, reqs, 0, warm, 1, max_seconds);
        int first = warm;
        fprintf(stderr, "bench_serve: %s, concurrency 1 (and bare calls)...\n",
                k ? "images" : "texts");
        paired_c1(&L, &in, reqs, port, first, count[k][0], k, max_seconds, &bare_p50[k],
                  &res[k][0]);
        first += 2 * count[k][0];
        for (int c = 1; c < 3; c++) {
            fprintf(stderr, "bench_serve: %s, concurrency %d...\n", k ? "images" : "texts",
                    conc[c]);
            res[k][c] = run_load(port, reqs, first, count[k][c], conc[c], max_seconds);
            if (c == 2) off[k] = offline(&L, &in, first, res[k][c].requests, k);
            first += count[k][c];
        }
    }
    clip_model_free(L.m);
    clip_tokenizer_free(L.tok);
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("the server did not exit cleanly");

    clip_runtime_info rt;
    clip_runtime_info_get(&rt);
    printf("\nclipeval serve on %s (%s, %d cores, embedding dim %d, OMP_WAIT_POLICY=%s), one "
           "input per request, loopback; shared machine, noisy figures\n\n",
           model, rt.blas_core, rt.cores, L.dim,
           getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(default)");
    printf("| request      | conc | requests | req/s   | p50 ms  | p99 ms  |\n");
    printf("|--------------|------|----------|---------|---------|---------|\n");
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < 3; c++)
            printf("| %-12s | %4d | %8d | %7.1f | %7.2f | %7.2f |\n", k ? "single image" : "single text",
                   conc[c], res[k][c].requests, res[k][c].rps, res[k][c].p50 * 1e3,
                   res[k][c].p99 * 1e3);
    printf("\n| request      | offline embed inputs/s | server c=64 req/s | ratio | bare call p50 ms "
           "| server c=1 p50 ms | ratio |\n");
    printf("|--------------|------------------------|-------------------|-------|------------------"
           "|-------------------|-------|\n");
    for (int k = 0; k < 2; k++)
        printf("| %-12s | %22.1f | %17.1f | %5.2f | %16.2f | %17.2f | %5.2f |\n",
               k ? "single image" : "single text", off[k], res[k][2].rps, res[k][2].rps / off[k],
               bare_p50[k] * 1e3, res[k][0].p50 * 1e3, res[k][0].p50 / bare_p50[k]);
    printf("\ngoals: server/offline >= 0.9 at c=64; server p50 at c=1 <= 1.2 x bare call\n");
    for (int i = 0; i < in.n; i++) {
        free(in.text[i]);
        clip_buf_free(&in.png[i]);
        clip_buf_free(&in.req_text[i]);
        clip_buf_free(&in.req_image[i]);
    }
    free(in.text);
    free(in.png);
    free(in.req_text);
    free(in.req_image);
    return 0;
}
