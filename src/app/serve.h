/* serve.h — `clipeval serve`: an HTTP embedding and scoring server over one model.
 * Options, start-up and the signal-driven lifecycle are in serve.c; the HTTP side in
 * serve_http.c, the endpoints in serve_api.c, the batching in serve_batch.c. */
#ifndef CLIP_SERVE_H
#define CLIP_SERVE_H

/* argv holds the options after "serve". Returns the process exit status: 0 after a clean
 * SIGTERM/SIGINT shutdown, 1 when start-up fails, 2 for a usage error. */
int serve_main(int argc, char **argv);

/* "32MiB", "512k", "1048576" -> bytes (k/M/G and KiB/MiB/GiB are powers of 1024).
 * Returns 1 on success. */
int serve_parse_size(const char *s, unsigned long long *out);

#endif
