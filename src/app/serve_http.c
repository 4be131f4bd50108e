/* serve_http.c — libmicrohttpd glue for `clipeval serve` (see serve_http.h).
 *
 * Threading: libmicrohttpd runs one thread per connection (up to --max-connections); a request
 * is parsed, decoded and waited for on its connection's thread while the batch workers run
 * the model. A slow client therefore holds only its own connection thread, never a model
 * worker, and --request-timeout bounds even that: libmicrohttpd's own timeout is an idle
 * timeout that a client trickling one byte at a time never hits, so sv_http_tick() closes
 * (shutdown(2)) connections whose current request has been arriving or leaving for too long.
 *
 * Per-connection state (struct conn) lives in libmicrohttpd's socket context and in a list
 * under h->mu; libmicrohttpd reports a connection closed before it closes the socket, and the
 * report takes h->mu, so sv_http_tick never shuts down a descriptor that was reused. */
#include "serve_http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#if MHD_VERSION < 0x00097002
typedef int MHD_RESULT;
#else
typedef enum MHD_Result MHD_RESULT;
#endif

enum { PH_RECV, PH_WORK, PH_SEND };

typedef struct conn {
    struct conn *prev, *next;
    int fd;
    int phase;    /* PH_*: the deadline runs in RECV and SEND, not while the model works */
    double since; /* when the phase began */
    int killed;
} conn;

typedef struct req {
    sv_endpoint ep;
    double t0;
    conn *c;
    clip_buf body;
    int too_large, oom; /* body refused while it still arrives: answered at its end */
    const char *allow;  /* 405: the Allow header */
    int answered;       /* a response is queued: counted in h->sending until completion */
    int refuse;         /* an error decided from the headers of a request without a body ... */
    const char *refuse_msg; /* ... answered after them, so the connection stays open */
} req;

struct sv_http {
    sv_http_options o;
    sv_api *api;
    struct MHD_Daemon *d;
    char addr[128];
    pthread_mutex_t mu;
    pthread_cond_t cv; /* in_flight / processing / sending went down */
    conn *conns;
    int n_conns, draining;
    int in_flight;  /* requests from their headers to their completion */
    int processing; /* of those, the ones being computed (decode, model) */
    int sending;    /* of those, the ones whose answer is queued but not yet all sent */
};

/* ------------------------------------------------------------------ helpers */

int sv_key_differs(const char *given, size_t given_len, const char *key, size_t key_len) {
    unsigned char d = given_len != key_len;
    for (size_t i = 0; i < key_len; i++)
        d |= (unsigned char)(key[i] ^ (i < given_len ? given[i] : 0));
    return d != 0;
}

static sv_endpoint route(const char *url) {
    if (!strcmp(url, "/v1/embeddings")) return SV_EP_EMBEDDINGS;
    if (!strcmp(url, "/v1/score")) return SV_EP_SCORE;
    if (!strcmp(url, "/health")) return SV_EP_HEALTH;
    if (!strcmp(url, "/v1/models")) return SV_EP_MODELS;
    if (!strcmp(url, "/metrics")) return SV_EP_METRICS;
    return SV_EP_OTHER;
}

static conn *conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? (conn *)ci->socket_context : NULL;
}

static void set_phase(sv_http *h, conn *c, int phase) {
    if (!c) return;
    pthread_mutex_lock(&h->mu);
    c->phase = phase;
    c->since = clip_now();
    pthread_mutex_unlock(&h->mu);
}

static int authorized(const sv_http *h, struct MHD_Connection *c) {
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!v || strncasecmp(v, "Bearer ", 7) != 0) return 0;
    v += 7;
    while (*v == ' ') v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
    return !sv_key_differs(v, n, h->o.api_key, h->o.api_key_len);
}

/* Sends rep (taking its body) and records the request in the metrics. */
static MHD_RESULT respond(sv_http *h, struct MHD_Connection *c, req *r, sv_reply *rep) {
    static const char oom_body[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                   "\"server_error\",\"param\":null,\"code\":null}}\n";
    struct MHD_Response *res;
    int status = rep->status;
    if (rep->body.oom) {
        clip_buf_free(&rep->body);
        status = 500;
        res = MHD_create_response_from_buffer(sizeof oom_body - 1, (void *)oom_body,
                                              MHD_RESPMEM_PERSISTENT);
    } else if (!rep->body.data) {
        res = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        res = MHD_create_response_from_buffer(rep->body.len, rep->body.data,
                                              MHD_RESPMEM_MUST_FREE);
        if (res) rep->body.data = NULL; /* libmicrohttpd frees it */
    }
    clip_buf_free(&rep->body);
    if (!res) return MHD_NO;
    int ok = MHD_add_response_header(res, MHD_HTTP_HEADER_CONTENT_TYPE,
                                     rep->content_type ? rep->content_type : "application/json");
    if (rep->retry_after > 0) {
        char s[16];
        snprintf(s, sizeof s, "%d", rep->retry_after);
        ok = ok && MHD_add_response_header(res, MHD_HTTP_HEADER_RETRY_AFTER, s);
    }
    if (status == 401) ok = ok && MHD_add_response_header(res, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == 405 && r->allow) ok = ok && MHD_add_response_header(res, MHD_HTTP_HEADER_ALLOW, r->allow);
    pthread_mutex_lock(&h->mu);
    int draining = h->draining;
    pthread_mutex_unlock(&h->mu);
    if (draining) ok = ok && MHD_add_response_header(res, MHD_HTTP_HEADER_CONNECTION, "close");
    MHD_RESULT q = ok ? MHD_queue_response(c, (unsigned)status, res) : MHD_NO;
    MHD_destroy_response(res);
    if (q == MHD_YES) {
        pthread_mutex_lock(&h->mu);
        h->sending++;
        r->answered = 1;
        pthread_mutex_unlock(&h->mu);
    }
    sv_metrics_request(h->api->metrics, r->ep, status, clip_now() - r->t0);
    set_phase(h, r->c, PH_SEND);
    return q;
}

static MHD_RESULT respond_error(sv_http *h, struct MHD_Connection *c, req *r, int status,
                                const char *msg) {
    sv_reply rep;
    memset(&rep, 0, sizeof rep);
    sv_api_error(&rep, status, NULL, "%s", msg);
    if (status == 503) rep.retry_after = 1;
    return respond(h, c, r, &rep);
}

/* GET /health, /v1/models, /metrics */
static MHD_RESULT answer_get(sv_http *h, struct MHD_Connection *c, req *r) {
    sv_reply rep;
    memset(&rep, 0, sizeof rep);
    rep.status = 200;
    if (r->ep == SV_EP_HEALTH) {
        pthread_mutex_lock(&h->mu);
        int draining = h->draining;
        pthread_mutex_unlock(&h->mu);
        rep.status = draining ? 503 : 200;
        clip_buf_puts(&rep.body, draining ? "{\"status\":\"draining\"}\n" : "{\"status\":\"ok\"}\n");
    } else if (r->ep == SV_EP_MODELS) {
        sv_api_models(h->api, &rep);
    } else {
        sv_gauges g;
        memset(&g, 0, sizeof g);
        sv_batcher_gauges(h->api->batcher, g.queued, g.reserved);
        pthread_mutex_lock(&h->mu);
        g.in_flight = h->in_flight;
        g.connections = h->n_conns;
        pthread_mutex_unlock(&h->mu);
        sv_metrics_render(h->api->metrics, &g, &rep.body);
        rep.content_type = "text/plain; version=0.0.4; charset=utf-8";
    }
    return respond(h, c, r, &rep);
}

/* ------------------------------------------------------------------ callbacks */

/* First call: route, method, key and declared size, all before any body byte is read.
 * Then the body arrives in pieces; the last call (no data) does the work.
 * libmicrohttpd closes the connection after an answer given on the first call (it will not
 * read past an unread body), so that is done only for requests whose body we refuse; the
 * others are answered on the last call and keep their connection. */
static MHD_RESULT on_request(void *cls, struct MHD_Connection *c, const char *url,
                             const char *method, const char *version, const char *upload_data,
                             size_t *upload_data_size, void **con_cls) {
    (void)version;
    sv_http *h = cls;
    req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->t0 = clip_now();
        r->ep = route(url);
        r->c = conn_of(c);
        pthread_mutex_lock(&h->mu);
        h->in_flight++;
        int draining = h->draining;
        pthread_mutex_unlock(&h->mu);
        int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        int wants_post = r->ep == SV_EP_EMBEDDINGS || r->ep == SV_EP_SCORE;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        int has_body = (cl && strtoull(cl, NULL, 10) > 0) ||
                       MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
        if (draining) return respond_error(h, c, r, 503, "the server is shutting down");
        if (r->ep == SV_EP_OTHER) {
            r->refuse = 404;
            r->refuse_msg = "no such endpoint: the server answers POST /v1/embeddings, POST "
                            "/v1/score, GET /v1/models, GET /health and GET /metrics";
        } else if (wants_post ? strcmp(method, "POST") != 0 : !is_get) {
            r->allow = wants_post ? "POST" : "GET, HEAD";
            r->refuse = 405;
            r->refuse_msg = wants_post ? "this endpoint takes POST" : "this endpoint takes GET";
        } else if (h->o.api_key && r->ep != SV_EP_HEALTH && !authorized(h, c)) {
            r->refuse = 401;
            r->refuse_msg = "missing or wrong API key: send 'Authorization: Bearer <key>'";
        }
        if (r->refuse && has_body) return respond_error(h, c, r, r->refuse, r->refuse_msg);
        if (r->refuse || !wants_post) return MHD_YES; /* answered on the last call */
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || n > h->o.max_body) {
                char msg[160];
                snprintf(msg, sizeof msg, "request body of %s bytes is over the limit of %zu "
                         "(--max-body-bytes)", cl, h->o.max_body);
                return respond_error(h, c, r, 413, msg);
            }
            if (n && !clip_buf_reserve(&r->body, (size_t)n))
                return respond_error(h, c, r, 500, "out of memory for the request body");
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large || r->oom || r->refuse || !(r->ep == SV_EP_EMBEDDINGS ||
                                                     r->ep == SV_EP_SCORE))
            return MHD_YES; /* discarded; answered at the end */
        if (n > h->o.max_body - r->body.len) {
            r->too_large = 1;
            clip_buf_free(&r->body);
        } else if (!clip_buf_append(&r->body, upload_data, n)) {
            r->oom = 1;
            clip_buf_free(&r->body);
        }
        return MHD_YES;
    }
    if (r->refuse) return respond_error(h, c, r, r->refuse, r->refuse_msg);
    if (!(r->ep == SV_EP_EMBEDDINGS || r->ep == SV_EP_SCORE)) return answer_get(h, c, r);
    if (r->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body is over the limit of %zu bytes (--max-body-bytes)",
                 h->o.max_body);
        return respond_error(h, c, r, 413, msg);
    }
    if (r->oom) return respond_error(h, c, r, 500, "out of memory for the request body");
    set_phase(h, r->c, PH_WORK);
    pthread_mutex_lock(&h->mu);
    h->processing++;
    pthread_mutex_unlock(&h->mu);
    sv_reply rep;
    memset(&rep, 0, sizeof rep);
    const char *body = r->body.data ? r->body.data : "";
    if (r->ep == SV_EP_EMBEDDINGS)
        sv_api_embeddings(h->api, body, r->body.len, &rep);
    else
        sv_api_score(h->api, body, r->body.len, &rep);
    clip_buf_free(&r->body);
    /* queued first (counted in sending), then no longer processing: the drain never sees a
     * moment where this request is in neither count */
    MHD_RESULT q = respond(h, c, r, &rep);
    pthread_mutex_lock(&h->mu);
    h->processing--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return q;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)toe;
    sv_http *h = cls;
    req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    clip_buf_free(&r->body);
    conn *cn = r->c ? r->c : conn_of(c);
    int answered = r->answered;
    free(r);
    pthread_mutex_lock(&h->mu);
    h->in_flight--;
    h->sending -= answered;
    if (cn) {
        cn->phase = PH_RECV; /* the next request's clock starts now */
        cn->since = clip_now();
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    sv_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        conn *cn = calloc(1, sizeof *cn);
        *socket_context = cn;
        if (!cn) return; /* no deadline for this one; the idle timeout still applies */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        cn->fd = ci ? ci->connect_fd : -1;
        cn->phase = PH_RECV;
        cn->since = clip_now();
        pthread_mutex_lock(&h->mu);
        cn->next = h->conns;
        if (h->conns) h->conns->prev = cn;
        h->conns = cn;
        h->n_conns++;
        pthread_mutex_unlock(&h->mu);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn *cn = *socket_context;
        if (!cn) return;
        pthread_mutex_lock(&h->mu);
        if (cn->prev)
            cn->prev->next = cn->next;
        else
            h->conns = cn->next;
        if (cn->next) cn->next->prev = cn->prev;
        h->n_conns--;
        pthread_mutex_unlock(&h->mu);
        free(cn);
        *socket_context = NULL;
    }
}

static void on_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = '\0';
    fprintf(stderr, "clipeval serve: libmicrohttpd: %s\n", msg);
}

/* ------------------------------------------------------------------ lifecycle */

static int listen_on(const char *host, int port, char *addr, size_t cap, int *v6, clip_error *err) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g != 0) {
        clip_fail(err, CLIP_ERR_ARG, "cannot resolve --host '%s': %s", host, gai_strerror(g));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        clip_fail(err, CLIP_ERR_IO, "cannot create a socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        clip_fail(err, CLIP_ERR_IO, "cannot listen on %s port %d: %s", host, port, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char hb[NI_MAXHOST], sb[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, hb, sizeof hb, sb, sizeof sb,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        clip_fail(err, CLIP_ERR_IO, "cannot read the listening address: %s", strerror(errno));
        close(fd);
        return -1;
    }
    snprintf(addr, cap, *v6 ? "[%s]:%s" : "%s:%s", hb, sb);
    return fd;
}

clip_status sv_http_start(const sv_http_options *o, sv_api *api, sv_http **out, clip_error *err) {
    *out = NULL;
    sv_http *h = clip_calloc(1, sizeof *h, "the HTTP server", err);
    if (!h) return CLIP_ERR_NOMEM;
    h->o = *o;
    h->api = api;
    pthread_condattr_t ca;
    int ok = pthread_condattr_init(&ca) == 0;
    if (ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0) {
        pthread_condattr_destroy(&ca);
        ok = 0;
    }
    if (!ok || pthread_mutex_init(&h->mu, NULL) != 0) {
        if (ok) pthread_condattr_destroy(&ca);
        free(h);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot create the server's mutex");
    }
    ok = pthread_cond_init(&h->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        return clip_fail(err, CLIP_ERR_NOMEM, "cannot create the server's condition variable");
    }
    int v6 = 0;
    int fd = listen_on(o->host, o->port, h->addr, sizeof h->addr, &v6, err);
    if (fd < 0) {
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return err ? err->code : CLIP_ERR_IO;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, on_log, h, /* first: it logs the rest */
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->idle_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_END);
    if (!h->d) {
        close(fd);
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return clip_fail(err, CLIP_ERR_IO, "libmicrohttpd could not start on %s", o->host);
    }
    *out = h;
    return CLIP_OK;
}

const char *sv_http_address(const sv_http *h) { return h->addr; }

void sv_http_tick(sv_http *h) {
    if (h->o.request_timeout_s <= 0) return;
    int killed = 0;
    double now = clip_now();
    pthread_mutex_lock(&h->mu);
    for (conn *c = h->conns; c; c = c->next)
        if (!c->killed && c->phase != PH_WORK && c->fd >= 0 &&
            now - c->since > h->o.request_timeout_s) {
            /* libmicrohttpd's thread sees the shutdown, closes and reports CLOSED (under mu) */
            shutdown(c->fd, SHUT_RDWR);
            c->killed = 1;
            killed++;
        }
    pthread_mutex_unlock(&h->mu);
    for (int i = 0; i < killed; i++) sv_metrics_timeout(h->api->metrics);
}

void sv_http_drain_begin(sv_http *h) {
    pthread_mutex_lock(&h->mu);
    int was = h->draining;
    h->draining = 1;
    pthread_mutex_unlock(&h->mu);
    if (was) return;
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

static int busy(const sv_http *h, int all) {
    return all ? h->in_flight : h->processing + h->sending;
}

int sv_http_wait(sv_http *h, double seconds, int all) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = ts.tv_nsec + (long long)(seconds * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    pthread_mutex_lock(&h->mu);
    while (busy(h, all) > 0)
        if (pthread_cond_timedwait(&h->cv, &h->mu, &ts) == ETIMEDOUT) break;
    int left = busy(h, all);
    pthread_mutex_unlock(&h->mu);
    return left;
}

void sv_http_stop(sv_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
