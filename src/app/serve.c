/* serve.c — `clipeval serve`: options, start-up, and the lifecycle.
 *
 * Signals: SIGTERM, SIGINT and SIGHUP are blocked before any thread exists (so every thread
 * inherits the mask) and the main thread takes them with sigtimedwait(). There is no signal
 * handler and so no global state at all; between signals the main thread closes connections
 * past --request-timeout. SIGTERM/SIGINT: stop accepting, let requests in flight finish for up
 * to --drain-timeout seconds, cancel what is still queued, wait for the model calls running,
 * exit 0. A second SIGTERM skips the wait. SIGHUP is logged and ignored. */
#include "serve.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clip.h"
#include "serve_api.h"
#include "serve_batch.h"
#include "serve_http.h"
#include "serve_metrics.h"
#include "util.h"

static const char *serve_help =
    "usage: clipeval serve [--model DIR|ID] [options]\n"
    "An HTTP/1.1 server for embeddings and DataFlow scores (JSON, UTF-8):\n"
    "  POST /v1/embeddings  OpenAI-compatible: {\"input\": \"text\" | [\"text\", {\"image\": \"<base64>\"},\n"
    "                       \"data:image/png;base64,...\", ...], \"encoding_format\": \"float\"|\"base64\"}\n"
    "  POST /v1/score       {\"pairs\": [{\"image\": \"<base64 or data URI>\", \"text\": \"...\"}]}\n"
    "                       -> {\"scores\": [...], \"errors\": [null | \"reason\", ...]}\n"
    "  GET  /health, /v1/models, /metrics (Prometheus)\n"
    "options (defaults in brackets):\n"
    "  --model DIR|ID        model folder or HF model id [openai/clip-vit-base-patch32]\n"
    "  --model-name NAME     the name reported in responses and /v1/models [the --model value]\n"
    "  --host ADDR           address to bind [127.0.0.1]\n"
    "  --port N              port, 0 = any free port [8080]\n"
    "  --device D            auto|cpu|cuda [auto: CUDA when built with it and present]\n"
    "  --precision P         fp32|bf16|fp16 [fp32]\n"
    "  --threads N           CPU threads per model call [all cores]\n"
    "  --max-batch N         inputs merged into one model call [64]\n"
    "  --max-wait-ms N       how long a call waits for inputs other requests are still\n"
    "                        preparing; a lone request never waits [5]\n"
    "  --max-queue N         inputs of each kind (texts, images) admitted at once; more gives\n"
    "                        429 with Retry-After; also the most inputs per request [1024]\n"
    "  --max-body-bytes N    request body limit, k/M/G suffixes allowed (413 above) [32MiB]\n"
    "  --max-image-pixels N  larger images are refused [178956970, Pillow's limit]\n"
    "  --decode-threads N    images decoded at once [all cores]\n"
    "  --max-connections N   open connections [256]\n"
    "  --idle-timeout S      close idle connections after S seconds [15]\n"
    "  --request-timeout S   a request must arrive and its answer leave within S seconds,\n"
    "                        counted from the connection's previous answer (time spent\n"
    "                        waiting for the model does not count) [60]\n"
    "  --drain-timeout S     on SIGTERM, how long requests in flight may take [30]\n"
    "  --api-key-file F      require 'Authorization: Bearer <key>' (all but /health) with\n"
    "                        the key in F (one line)\n"
    "  --allow-paths DIR     accept {\"image_path\": ...} inside DIR (symbolic links resolved);\n"
    "                        without it the server never reads files named by a request\n"
    "  --ready-file F        write HOST:PORT to F once listening\n"
    "  --test-hold-fifo F    testing only: model calls wait for a byte on the FIFO F\n"
    "Prints 'clipeval serve: listening on HOST:PORT' on stdout when ready. SIGTERM or SIGINT:\n"
    "stop accepting, finish requests in flight, exit 0. SIGHUP is ignored.\n"
    "Unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set, the server restarts itself with\n"
    "OMP_WAIT_POLICY=PASSIVE: idle model threads then sleep instead of spinning, which would\n"
    "starve the connection threads.\n";

typedef struct serve_args {
    const char *model, *model_name, *host, *key_file, *allow, *ready_file, *hold_fifo;
    int port, threads, max_batch, max_wait_ms, max_queue, decode_threads, max_connections;
    int idle_timeout, request_timeout, drain_timeout;
    unsigned long long max_body, max_pixels;
    clip_device device;
    clip_precision precision;
} serve_args;

static int usage(const char *fmt, const char *arg) {
    fprintf(stderr, "clipeval serve: ");
    fprintf(stderr, fmt, arg ? arg : "");
    fprintf(stderr, "\n(run `clipeval serve --help` for usage)\n");
    return 2;
}

static int fail_start(const char *what, const clip_error *e) {
    fprintf(stderr, "clipeval serve: error: %s%s\n", what, e ? e->msg : "");
    return 1;
}

static int parse_int(const char *s, int min, int max, int *out) {
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) return 0;
    *out = (int)v;
    return 1;
}

int serve_parse_size(const char *s, unsigned long long *out) {
    if (!s || *s < '0' || *s > '9') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return 0;
    int shift = 0;
    if (!strcasecmp(end, "k") || !strcmp(end, "KiB"))
        shift = 10;
    else if (!strcasecmp(end, "m") || !strcmp(end, "MiB"))
        shift = 20;
    else if (!strcasecmp(end, "g") || !strcmp(end, "GiB"))
        shift = 30;
    else if (*end)
        return 0;
    if (shift && v > (ULLONG_MAX >> shift)) return 0;
    *out = v << shift;
    return 1;
}

static int parse_args(int argc, char **argv, serve_args *a) {
    memset(a, 0, sizeof *a);
    a->model = "openai/clip-vit-base-patch32";
    a->host = "127.0.0.1";
    a->port = 8080;
    a->device = CLIP_DEVICE_AUTO;
    a->precision = CLIP_PRECISION_FP32;
    a->max_batch = 64;
    a->max_wait_ms = 5;
    a->max_queue = 1024;
    a->max_body = 32ull << 20;
    a->max_pixels = 0; /* Pillow's limit (clip_decode_options_init) */
    a->max_connections = 256;
    a->idle_timeout = 15;
    a->request_timeout = 60;
    a->drain_timeout = 30;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL(name) (!strcmp(o, name) && v && ++i)
#define INT(name, field, lo, hi)                                                                   \
    else if (VAL(name)) {                                                                          \
        if (!parse_int(v, lo, hi, &a->field)) return usage("bad " name " '%s'", v);                \
    }
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(serve_help, stdout);
            return -1;
        } else if (VAL("--model")) {
            a->model = v;
        } else if (VAL("--model-name")) {
            a->model_name = v;
        } else if (VAL("--host")) {
            a->host = v;
        } else if (VAL("--api-key-file")) {
            a->key_file = v;
        } else if (VAL("--allow-paths")) {
            a->allow = v;
        } else if (VAL("--ready-file")) {
            a->ready_file = v;
        } else if (VAL("--test-hold-fifo")) {
            a->hold_fifo = v;
        } else if (VAL("--device")) {
            if (clip_device_parse(v, &a->device, NULL))
                return usage("bad --device '%s' (cpu, cuda or auto)", v);
        } else if (VAL("--precision")) {
            clip_error e = {0};
            if (clip_precision_parse(v, &a->precision, &e)) return usage("%s", e.msg);
        } else if (VAL("--max-body-bytes")) {
            if (!serve_parse_size(v, &a->max_body) || a->max_body == 0 ||
                a->max_body > (1ull << 40))
                return usage("bad --max-body-bytes '%s' (bytes, or with a k/M/G suffix)", v);
        } else if (VAL("--max-image-pixels")) {
            if (!serve_parse_size(v, &a->max_pixels) || a->max_pixels == 0)
                return usage("bad --max-image-pixels '%s'", v);
        }
        INT("--port", port, 0, 65535)
        INT("--threads", threads, 1, 4096)
        INT("--max-batch", max_batch, 1, 4096)
        INT("--max-wait-ms", max_wait_ms, 0, 60000)
        INT("--max-queue", max_queue, 1, 1 << 20)
        INT("--decode-threads", decode_threads, 1, 4096)
        INT("--max-connections", max_connections, 1, 65536)
        INT("--idle-timeout", idle_timeout, 1, 86400)
        INT("--request-timeout", request_timeout, 1, 86400)
        INT("--drain-timeout", drain_timeout, 0, 86400)
        else return usage("unknown or incomplete option '%s'", o);
#undef INT
#undef VAL
    }
    if (!a->model_name) a->model_name = a->model;
    if (!a->decode_threads) a->decode_threads = clip_num_cores();
    return 0;
}

/* The key: the file's first line without surrounding whitespace; printable ASCII only. */
static int read_key(const char *path, char **key, size_t *len) {
    clip_error e = {0};
    char *data;
    size_t n;
    if (clip_read_file(path, 4096, &data, &n, &e))
        return fail_start("--api-key-file: ", &e);
    size_t a = 0;
    while (a < n && (data[a] == ' ' || data[a] == '\t')) a++;
    size_t b = a;
    while (b < n && data[b] != '\n' && data[b] != '\r') b++;
    while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\t')) b--;
    for (size_t i = a; i < b; i++)
        if ((unsigned char)data[i] < 0x21 || (unsigned char)data[i] > 0x7e) {
            free(data);
            fprintf(stderr, "clipeval serve: error: --api-key-file %s: the key must be printable "
                            "ASCII without spaces\n", path);
            return 1;
        }
    if (b == a) {
        free(data);
        fprintf(stderr, "clipeval serve: error: --api-key-file %s: the key is empty\n", path);
        return 1;
    }
    memmove(data, data + a, b - a);
    data[b - a] = '\0';
    *key = data;
    *len = b - a;
    return 0;
}

static int write_ready_file(const char *path, const char *addr) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f && fprintf(f, "%s\n", addr) > 0;
    if (f && fclose(f) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) {
        fprintf(stderr, "clipeval serve: error: cannot write --ready-file %s: %s\n", path,
                strerror(errno));
        unlink(tmp);
    }
    return ok;
}

typedef struct server {
    clip_model *model;
    clip_tokenizer *tok;
    sv_metrics *metrics;
    sv_api api;
    int api_ok;
    sv_batcher *batcher;
    sv_http *http;
    char *key;
    char allow[PATH_MAX];
    int hold_fd;
} server;

static void server_free(server *s) {
    sv_http_stop(s->http);
    sv_batcher_free(s->batcher);
    if (s->api_ok) sv_api_destroy(&s->api);
    sv_metrics_free(s->metrics);
    clip_tokenizer_free(s->tok);
    clip_model_free(s->model);
    free(s->key);
    if (s->hold_fd >= 0) close(s->hold_fd);
}

/* Everything up to listening. Returns 0, or the exit status. */
static int server_start(const serve_args *a, server *s) {
    clip_error e = {0};
    size_t key_len = 0;
    if (a->key_file && read_key(a->key_file, &s->key, &key_len)) return 1;
    if (a->allow) {
        errno = 0;
        if (!realpath(a->allow, s->allow) || !clip_is_dir(s->allow)) {
            fprintf(stderr, "clipeval serve: error: --allow-paths %s: not a folder (%s)\n",
                    a->allow, errno ? strerror(errno) : "not a directory");
            return 1;
        }
    }
    if (a->hold_fifo) {
        /* O_RDWR: opening does not wait for a writer, and a writer closing is not EOF */
        s->hold_fd = open(a->hold_fifo, O_RDWR | O_CLOEXEC);
        if (s->hold_fd < 0) {
            fprintf(stderr, "clipeval serve: error: --test-hold-fifo %s: %s\n", a->hold_fifo,
                    strerror(errno));
            return 1;
        }
    }
    clip_model_options mo;
    clip_model_options_init(&mo);
    mo.device = a->device;
    mo.n_threads = a->threads;
    mo.precision = a->precision;
    if (clip_model_load(a->model, &mo, &s->model, &e)) return fail_start("", &e);
    const clip_model_info *info = clip_model_get_info(s->model);
    clip_image_config icfg;
    if (clip_tokenizer_load(info->dir, &s->tok, &e) || clip_image_config_load(info->dir, &icfg, &e))
        return fail_start("", &e);
    if (sv_metrics_new(&s->metrics, &e)) return fail_start("", &e);
    if (sv_api_init(&s->api, s->model, s->tok, &icfg, a->decode_threads, a->max_pixels,
                    (size_t)a->max_body, &e))
        return fail_start("", &e);
    s->api_ok = 1;
    sv_batcher_options bo = {a->max_batch, a->max_wait_ms, a->max_queue, s->hold_fd};
    if (sv_batcher_start(s->model, s->api.ctx, &bo, s->metrics, &s->batcher, &e))
        return fail_start("", &e);
    s->api.batcher = s->batcher;
    s->api.metrics = s->metrics;
    s->api.model_name = a->model_name;
    s->api.allow_dir = a->allow ? s->allow : NULL;
    s->api.max_inputs = (size_t)a->max_queue;
    sv_http_options ho = {a->host, a->port, (size_t)a->max_body, a->max_connections,
                          a->idle_timeout, a->request_timeout, s->key, key_len};
    if (sv_http_start(&ho, &s->api, &s->http, &e)) return fail_start("", &e);
    fprintf(stderr,
            "clipeval serve: model %s (%s, %s, %s, embedding dim %d), max batch %d, max wait "
            "%d ms, max queue %d, max body %llu bytes, OMP_WAIT_POLICY=%s%s%s\n",
            a->model_name, info->dir, info->device, clip_precision_name(info->precision),
            info->embed_dim, a->max_batch, a->max_wait_ms, a->max_queue, a->max_body,
            getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(default)",
            s->key ? ", API key required" : "", a->allow ? ", image paths allowed" : "");
    /* the ready file first: whoever reads the line may look for the file at once */
    if (a->ready_file && !write_ready_file(a->ready_file, sv_http_address(s->http))) return 1;
    printf("clipeval serve: listening on %s\n", sv_http_address(s->http));
    fflush(stdout);
    return 0;
}

/* Waits for SIGTERM/SIGINT, then drains. */
static void run_until_signal(const serve_args *a, server *s, const sigset_t *set) {
    struct timespec tick = {0, 250 * 1000000L};
    for (;;) {
        int sig = sigtimedwait(set, NULL, &tick);
        if (sig < 0) {
            sv_http_tick(s->http);
            continue;
        }
        if (sig == SIGHUP) {
            fprintf(stderr, "clipeval serve: SIGHUP: nothing to reload, ignored\n");
            continue;
        }
        fprintf(stderr, "clipeval serve: %s: draining (up to %d s)\n", strsignal(sig),
                a->drain_timeout);
        break;
    }
    sv_http_drain_begin(s->http);
    double deadline = clip_now() + a->drain_timeout;
    struct timespec zero = {0, 0};
    int left = 1;
    while (left > 0 && clip_now() < deadline) {
        left = sv_http_wait(s->http, 0.25, 1);
        sv_http_tick(s->http);
        int sig = sigtimedwait(set, NULL, &zero);
        if (sig == SIGTERM || sig == SIGINT) {
            fprintf(stderr, "clipeval serve: second %s: not waiting any longer\n", strsignal(sig));
            break;
        }
    }
    left = sv_http_wait(s->http, 0, 1);
    if (left > 0) {
        /* Cancel what is queued (those requests are answered 503); what a worker is encoding
         * finishes. Then wait until every answer is sent (a slow reader is cut by the request
         * deadline); requests still arriving are cut when the daemon stops. */
        fprintf(stderr, "clipeval serve: %d requests still in flight: cancelling\n", left);
        sv_batcher_close(s->batcher);
        while (sv_http_wait(s->http, 0.25, 0) > 0) sv_http_tick(s->http);
    }
}

/* OpenMP's default makes idle team threads spin after every parallel region. In a server the
 * connection threads need that CPU between model calls, and on a busy machine the spinning
 * turned a 26 ms single-text request into 860 ms (p50, ViT-B/32, 2 shared cores; see README).
 * libgomp reads the policy once, when the program starts, so the server starts itself again
 * with OMP_WAIT_POLICY=PASSIVE unless the user chose a policy (OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT set). If that fails it goes on with the default and says so. */
static void prefer_passive_openmp(int argc, char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    char **nargv = calloc((size_t)argc + 3, sizeof *nargv);
    if (!nargv) return;
    nargv[0] = "clipeval";
    nargv[1] = "serve";
    for (int i = 0; i < argc; i++) nargv[i + 2] = argv[i];
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0) {
        fflush(NULL);
        execv("/proc/self/exe", nargv);
        fprintf(stderr, "clipeval serve: warning: cannot restart with OMP_WAIT_POLICY=PASSIVE "
                        "(%s); idle model threads will spin\n", strerror(errno));
        unsetenv("OMP_WAIT_POLICY");
    }
    free(nargv);
}

int serve_main(int argc, char **argv) {
    serve_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    prefer_passive_openmp(argc, argv);
    /* Before any thread exists (the model load may start OpenMP's): every thread inherits it. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        fprintf(stderr, "clipeval serve: error: cannot block signals\n");
        return 1;
    }
    /* a client that goes away mid-answer must be an error on that connection, not a kill */
    signal(SIGPIPE, SIG_IGN);
    server s;
    memset(&s, 0, sizeof s);
    s.hold_fd = -1;
    rc = server_start(&a, &s);
    if (!rc) {
        run_until_signal(&a, &s, &set);
        fprintf(stderr, "clipeval serve: stopped\n");
    }
    server_free(&s);
    return rc;
}
