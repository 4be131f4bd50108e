/* serve_http.h — the HTTP side of `clipeval serve` on libmicrohttpd: routing, the API key,
 * body limits, per-request deadlines and the graceful drain. The endpoints' work is in
 * serve_api.c. */
#ifndef CLIP_SERVE_HTTP_H
#define CLIP_SERVE_HTTP_H

#include <stddef.h>

#include "clip.h"
#include "serve_api.h"

typedef struct sv_http_options {
    const char *host;      /* numeric address or name to bind */
    int port;              /* 0: any free port */
    size_t max_body;       /* bytes; a larger body is answered 413 */
    int max_connections;
    int idle_timeout_s;    /* an idle connection is closed after this */
    int request_timeout_s; /* a request must arrive (and its answer leave) within this */
    const char *api_key;   /* NULL: no key; else "Authorization: Bearer <key>" on all but /health */
    size_t api_key_len;
} sv_http_options;

typedef struct sv_http sv_http;

/* Binds, listens and starts serving (one thread per connection). */
clip_status sv_http_start(const sv_http_options *o, sv_api *api, sv_http **out, clip_error *err);
/* "127.0.0.1:8080" or "[::1]:8080": where it listens. */
const char *sv_http_address(const sv_http *h);

/* Closes connections whose request is past --request-timeout (slow senders and readers; the
 * time a request waits for the model does not count). Call it a few times a second. */
void sv_http_tick(sv_http *h);

/* Drain: stop accepting connections; requests that arrive on open ones get 503 and the
 * connection is closed; /health answers 503. */
void sv_http_drain_begin(sv_http *h);
/* Waits up to `seconds` until no request is in flight (all), or until none is being computed
 * or having its answer sent (!all: requests still arriving are not waited for). Returns the
 * number left. */
int sv_http_wait(sv_http *h, double seconds, int all);
/* Stops the daemon (closing every connection) and frees h. */
void sv_http_stop(sv_http *h);

/* Constant-time comparison of a presented key with the expected one (0 = equal): the time
 * depends only on the expected key's length. */
int sv_key_differs(const char *given, size_t given_len, const char *key, size_t key_len);

#endif
