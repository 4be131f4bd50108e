/* failures.c — failed rows, told once each (see failures.h). */
#include "failures.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

typedef struct fkey {
    failure_kind kind;
    char *key, *reason;
    size_t rows, first_line;
    uint64_t hash;
} fkey;

typedef struct fclass {
    char *why;
    size_t rows, keys;
} fclass;

struct failures {
    fkey *keys; /* in order of first appearance */
    size_t nkeys, capkeys;
    size_t *slots; /* open addressing: key index + 1 */
    size_t nslots;
    size_t untracked_rows; /* rows whose key did not fit FAILURES_MAX_KEYS */
    fclass *classes;
    size_t nclasses, capclasses;
    char *first_image;
    int first_relative;
    outfile *log;
    clip_buf line;
    const char *command, *outcome;
};

clip_status failures_open(const char *log_path, files_registry *reg, failures **out,
                          clip_error *err) {
    *out = NULL;
    failures *f = calloc(1, sizeof *f);
    if (!f) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    f->command = "score";
    f->outcome = "score 0.0";
    if (log_path) {
        clip_status st = outfile_open(log_path, reg, NULL, &f->log, err);
        if (st) {
            free(f);
            clip_fail_prefix(err, "--log-failures: ");
            return st;
        }
    }
    *out = f;
    return CLIP_OK;
}

void failures_set_labels(failures *f, const char *command, const char *outcome) {
    f->command = command;
    f->outcome = outcome;
}

static void failures_free(failures *f) {
    for (size_t i = 0; i < f->nkeys; i++) {
        free(f->keys[i].key);
        free(f->keys[i].reason);
    }
    for (size_t i = 0; i < f->nclasses; i++) free(f->classes[i].why);
    free(f->keys);
    free(f->slots);
    free(f->classes);
    free(f->first_image);
    clip_buf_free(&f->line);
    free(f);
}

/* The entry of (kind, key), inserted when new; NULL when FAILURES_MAX_KEYS are tracked already
 * or memory is short (the row is then only counted by reason). */
static fkey *key_get(failures *f, failure_kind kind, const char *key, const char *reason,
                     size_t line) {
    uint64_t h = clip_fnv1a64(key, strlen(key)) ^ (uint64_t)kind;
    if (f->nslots) {
        for (size_t i = h & (f->nslots - 1);; i = (i + 1) & (f->nslots - 1)) {
            size_t v = f->slots[i];
            if (!v) break;
            fkey *k = &f->keys[v - 1];
            if (k->hash == h && k->kind == kind && !strcmp(k->key, key)) return k;
        }
    }
    if (f->nkeys >= FAILURES_MAX_KEYS) return NULL;
    if ((f->nkeys + 1) * 2 > f->nslots) {
        size_t n = f->nslots ? f->nslots * 2 : 64;
        size_t *slots = calloc(n, sizeof *slots);
        if (!slots) return NULL;
        for (size_t k = 0; k < f->nkeys; k++) {
            size_t i = f->keys[k].hash & (n - 1);
            while (slots[i]) i = (i + 1) & (n - 1);
            slots[i] = k + 1;
        }
        free(f->slots);
        f->slots = slots;
        f->nslots = n;
    }
    if (f->nkeys == f->capkeys) {
        size_t n = f->capkeys ? f->capkeys * 2 : 16;
        fkey *nk = realloc(f->keys, n * sizeof *nk);
        if (!nk) return NULL;
        f->keys = nk;
        f->capkeys = n;
    }
    fkey *k = &f->keys[f->nkeys];
    memset(k, 0, sizeof *k);
    k->key = strdup(key);
    k->reason = strdup(reason);
    if (!k->key || !k->reason) {
        free(k->key);
        free(k->reason);
        return NULL;
    }
    k->kind = kind;
    k->hash = h;
    k->first_line = line;
    size_t i = h & (f->nslots - 1);
    while (f->slots[i]) i = (i + 1) & (f->nslots - 1);
    f->slots[i] = ++f->nkeys;
    return k;
}

static clip_status class_add(failures *f, const char *why, int new_key, clip_error *err) {
    for (size_t i = 0; i < f->nclasses; i++) {
        if (!strcmp(f->classes[i].why, why)) {
            f->classes[i].rows++;
            f->classes[i].keys += new_key;
            return CLIP_OK;
        }
    }
    if (f->nclasses == f->capclasses) {
        size_t n = f->capclasses ? f->capclasses * 2 : 8;
        fclass *nc = realloc(f->classes, n * sizeof *nc);
        if (!nc) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (failure summary)");
        f->classes = nc;
        f->capclasses = n;
    }
    fclass *c = &f->classes[f->nclasses];
    if (!(c->why = strdup(why))) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory (failure summary)");
    c->rows = 1;
    c->keys = (size_t)new_key;
    f->nclasses++;
    return CLIP_OK;
}

/* "PATH: REASON", without repeating the path when the reason starts with it. */
static char *path_reason(const char *path, const char *reason) {
    size_t pl = strlen(path);
    clip_buf b = {0};
    if (strncmp(reason, path, pl) != 0 || strncmp(reason + pl, ": ", 2) != 0)
        clip_buf_printf(&b, "%s: ", path);
    clip_buf_puts(&b, reason);
    if (b.oom) clip_buf_free(&b);
    return b.data;
}

clip_status failures_add(failures *f, failure_kind kind, size_t line, const char *path,
                         const char *reason, const char *why, clip_error *err) {
    const char *key = kind == FAILURE_IMAGE && path ? path : why;
    size_t before = f->nkeys;
    fkey *k = key_get(f, kind, key, reason, line);
    if (k)
        k->rows++;
    else
        f->untracked_rows++;
    clip_status st = class_add(f, why, f->nkeys > before, err);
    if (st) return st;
    if ((kind == FAILURE_IMAGE || kind == FAILURE_CELL) && !f->first_image) {
        char where[64];
        snprintf(where, sizeof where, "line %zu", line);
        if (!(f->first_image = path_reason(path ? path : where, reason)))
            return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
        f->first_relative = path && path[0] != '/';
    }
    if (!f->log) return CLIP_OK;
    clip_buf *b = &f->line;
    b->len = 0;
    clip_buf_printf(b, "{\"line\": %zu, \"path\": ", line);
    if (path)
        json_write_string(b, path, strlen(path), 0);
    else
        clip_buf_puts(b, "null");
    clip_buf_puts(b, ", \"reason\": ");
    json_write_string(b, reason, strlen(reason), 0);
    clip_buf_puts(b, "}\n");
    if (b->oom) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    if (fwrite(b->data, 1, b->len, outfile_stream(f->log)) != b->len)
        return clip_fail(err, CLIP_ERR_IO, "%s: write error", outfile_name(f->log));
    return CLIP_OK;
}

void failures_report(const failures *f, FILE *log, const char *input, int summary) {
    if (!log || (!f->nkeys && !f->untracked_rows)) return;
    size_t shown = f->nkeys < FAILURES_MAX_WARNINGS ? f->nkeys : FAILURES_MAX_WARNINGS;
    for (size_t i = 0; i < shown; i++) {
        const fkey *k = &f->keys[i];
        fprintf(log, "clipeval: warning: %s:%zu: ", input, k->first_line);
        if (k->kind == FAILURE_IMAGE)
            fprintf(log, "failed to load image: %s", k->reason);
        else if (k->kind == FAILURE_CELL)
            fprintf(log, "cannot score: %s", k->reason);
        else
            fprintf(log, "%s", k->reason);
        if (k->rows == 1)
            fprintf(log, " (%s)\n", f->outcome);
        else
            fprintf(log, " (%s on %zu rows %s, the first at this line)\n", f->outcome, k->rows,
                    k->kind == FAILURE_IMAGE ? "with this image" : "like this");
    }
    size_t rest = 0;
    for (size_t i = shown; i < f->nkeys; i++) rest += f->keys[i].rows;
    rest += f->untracked_rows;
    if (rest)
        fprintf(log, "clipeval: warning: %zu more rows failed, not listed one by one "
                     "(--log-failures FILE lists every row)\n", rest);
    if (!summary) return;
    fprintf(log, "clipeval %s: failures by reason:", f->command);
    for (size_t i = 0; i < f->nclasses; i++) {
        const fclass *c = &f->classes[i];
        fprintf(log, "%s %zu row%s %s", i ? ";" : "", c->rows, c->rows == 1 ? "" : "s", c->why);
        if (c->keys > 1) fprintf(log, " (%zu distinct)", c->keys);
    }
    fputc('\n', log);
}

const char *failures_first_image(const failures *f, int *relative) {
    *relative = f->first_relative;
    return f->first_image;
}

clip_status failures_commit(failures *f, clip_error *err) {
    clip_status st = CLIP_OK;
    if (f->log) {
        st = outfile_commit(f->log, err);
        f->log = NULL;
        if (st) clip_fail_prefix(err, "--log-failures: ");
    }
    failures_free(f);
    return st;
}

void failures_abort(failures *f) {
    if (!f) return;
    outfile_abort(f->log);
    failures_free(f);
}
