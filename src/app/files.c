/* files.c — atomic outputs, stale temporary files, stdin for the readers (see files.h). */
#include "files.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define MAX_LINK_HOPS 40 /* Linux's own limit on a symlink chain */

void files_registry_unlink(files_registry *r) {
    if (!r) return;
    for (int i = 0; i < FILES_SLOTS; i++)
        if (r->used[i]) unlink(r->path[i]);
}

static void registry_add(files_registry *r, const char *path, int *slot) {
    *slot = -1;
    if (!r || strlen(path) >= sizeof r->path[0]) return;
    for (int i = 0; i < FILES_SLOTS; i++) {
        if (r->used[i]) continue;
        /* the path is complete before the flag says so: a handler reads it only then */
        memcpy(r->path[i], path, strlen(path) + 1);
        r->used[i] = 1;
        *slot = i;
        return;
    }
}

static void registry_drop(files_registry *r, int slot) {
    if (r && slot >= 0) r->used[slot] = 0;
}

/* ------------------------------------------------------------------ where an output goes */

outfile_kind outfile_kind_of(const char *path) {
    if (!strcmp(path, "-")) return OUTFILE_STDOUT;
    struct stat st;
    /* stat follows symlinks, /dev/stdout's /proc/self/fd/1 included */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return OUTFILE_DIRECT;
    return OUTFILE_ATOMIC;
}

/* The file a rename must replace: path itself, or the last link of a symlink chain's target
 * (which may not exist yet). An existing regular target is resolved with realpath, which also
 * follows /proc's descriptor links; a dangling chain link by link. */
static clip_status final_target(const char *path, clip_buf *out, clip_error *err) {
    out->len = 0;
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISLNK(st.st_mode)) {
        clip_buf_puts(out, path);
        return out->oom ? clip_fail(err, CLIP_ERR_NOMEM, "out of memory") : CLIP_OK;
    }
    if (stat(path, &st) == 0) {
        char *rp = realpath(path, NULL);
        if (!rp) return clip_fail(err, CLIP_ERR_IO, "%s: cannot resolve the link: %s", path, strerror(errno));
        clip_buf_puts(out, rp);
        free(rp);
        return out->oom ? clip_fail(err, CLIP_ERR_NOMEM, "out of memory") : CLIP_OK;
    }
    clip_buf cur = {0}, next = {0};
    clip_buf_puts(&cur, path);
    clip_status s = CLIP_OK;
    for (int hop = 0;; hop++) {
        if (hop == MAX_LINK_HOPS) {
            s = clip_fail(err, CLIP_ERR_IO, "%s: too many levels of symbolic links", path);
            break;
        }
        if (cur.oom) {
            s = clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
            break;
        }
        if (lstat(cur.data, &st) != 0 || !S_ISLNK(st.st_mode)) break; /* the final name */
        char target[PATH_MAX];
        ssize_t n = readlink(cur.data, target, sizeof target - 1);
        if (n < 0) {
            s = clip_fail(err, CLIP_ERR_IO, "%s: cannot read the link: %s", cur.data, strerror(errno));
            break;
        }
        target[n] = '\0';
        next.len = 0;
        const char *slash = strrchr(cur.data, '/');
        if (target[0] != '/' && slash) clip_buf_append(&next, cur.data, (size_t)(slash - cur.data) + 1);
        clip_buf_puts(&next, target);
        clip_buf tmp = cur;
        cur = next;
        next = tmp;
    }
    if (!s) clip_buf_puts(out, cur.data);
    clip_buf_free(&cur);
    clip_buf_free(&next);
    if (!s && out->oom) s = clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    return s;
}

/* The permissions a plain open() would give a new file (0666 minus the umask), read without
 * changing the process umask; the target's own mode when it already exists. */
static mode_t new_file_mode(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) return st.st_mode & 07777;
    mode_t mask = 022;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            unsigned m;
            if (sscanf(line, "Umask: %o", &m) == 1) {
                mask = (mode_t)m;
                break;
            }
        }
        fclose(f);
    }
    return 0666 & ~mask;
}

/* ------------------------------------------------------------------ outputs */

struct outfile {
    outfile_kind kind;
    char *path;   /* as given */
    char *target; /* ATOMIC: the file the rename replaces */
    char *dir;    /* ATOMIC: its folder */
    char *tmp;    /* ATOMIC: the temporary file */
    FILE *f;
    files_registry *reg;
    int slot;
    testhook *hook;
};

static void outfile_free(outfile *f) {
    free(f->path);
    free(f->target);
    free(f->dir);
    free(f->tmp);
    free(f);
}

/* A write lock on the whole file, held while the run lives: files_clean_stale leaves locked
 * files alone (a live owner in another PID namespace, or on another machine over NFS). */
static void lock_fd(int fd) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    (void)fcntl(fd, F_SETLK, &fl); /* best effort: a file system without locks still works */
}

static clip_status open_atomic(outfile *f, clip_error *err) {
    clip_buf t = {0};
    clip_status st = final_target(f->path, &t, err);
    if (st) return st;
    f->target = t.data;
    const char *slash = strrchr(f->target, '/');
    f->dir = slash ? strndup(f->target, slash == f->target ? 1 : (size_t)(slash - f->target))
                   : strdup(".");
    if (!f->dir) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    if ((st = clip_mkdir_p(f->dir, err))) return st;
    const char *base = slash ? slash + 1 : f->target;
    clip_buf tmp = {0};
    clip_buf_printf(&tmp, "%s/.%s.tmp-%ld-XXXXXX", f->dir, base, (long)getpid());
    if (tmp.oom) {
        clip_buf_free(&tmp);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    f->tmp = tmp.data;
    mode_t mode = new_file_mode(f->target);
    int fd = mkstemp(f->tmp);
    if (fd < 0) {
        st = clip_fail(err, CLIP_ERR_IO, "%s: cannot create a temporary file in %s: %s", f->path,
                       f->dir, strerror(errno));
        free(f->tmp);
        f->tmp = NULL;
        return st;
    }
    registry_add(f->reg, f->tmp, &f->slot);
    lock_fd(fd);
    if (fchmod(fd, mode) != 0 || !(f->f = fdopen(fd, "wb"))) {
        st = clip_fail(err, CLIP_ERR_IO, "%s: %s", f->tmp, strerror(errno));
        close(fd);
        return st;
    }
    return CLIP_OK;
}

clip_status outfile_open(const char *path, files_registry *reg, testhook *hook, outfile **out,
                         clip_error *err) {
    *out = NULL;
    if (!path || !*path) return clip_fail(err, CLIP_ERR_ARG, "outfile_open: empty path");
    outfile *f = calloc(1, sizeof *f);
    if (!f) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    f->slot = -1;
    f->reg = reg;
    f->hook = hook;
    f->kind = outfile_kind_of(path);
    f->path = strdup(path);
    if (!f->path) {
        outfile_free(f);
        return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    }
    clip_status st = CLIP_OK;
    if (f->kind == OUTFILE_STDOUT) {
        int fd = dup(STDOUT_FILENO);
        if (fd < 0 || !(f->f = fdopen(fd, "wb"))) {
            st = clip_fail(err, CLIP_ERR_IO, "stdout: %s", strerror(errno));
            if (fd >= 0) close(fd);
        }
    } else if (f->kind == OUTFILE_DIRECT) {
        struct stat sb;
        int fd = -1;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            st = clip_fail(err, CLIP_ERR_IO, "%s: is a folder, not a file to write", path);
        else if ((fd = open(path, O_WRONLY | O_NOCTTY)) < 0 || !(f->f = fdopen(fd, "wb")))
            st = clip_fail(err, CLIP_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
        if (st && fd >= 0) close(fd);
    } else {
        st = open_atomic(f, err);
    }
    if (st) {
        outfile_abort(f);
        return st;
    }
    testhook_reached(f->hook, "opened");
    *out = f;
    return CLIP_OK;
}

FILE *outfile_stream(const outfile *f) { return f->f; }

const char *outfile_name(const outfile *f) {
    return f->kind == OUTFILE_STDOUT ? "stdout" : f->kind == OUTFILE_DIRECT ? f->path : f->tmp;
}

void outfile_abort(outfile *f) {
    if (!f) return;
    if (f->f) fclose(f->f);
    if (f->tmp) unlink(f->tmp);
    registry_drop(f->reg, f->slot);
    outfile_free(f);
}

clip_status outfile_commit(outfile *f, clip_error *err) {
    if (!f) return clip_fail(err, CLIP_ERR_ARG, "outfile_commit: no file");
    clip_status st = CLIP_OK;
    const char *name = outfile_name(f);
    if (fflush(f->f) != 0)
        st = clip_fail(err, CLIP_ERR_IO, "%s: write error: %s", name, strerror(errno));
    /* A device or pipe has nothing to sync (fsync says EINVAL); a file must be on disk before
     * the rename makes it the output. */
    if (!st && f->kind == OUTFILE_ATOMIC && fsync(fileno(f->f)) != 0)
        st = clip_fail(err, CLIP_ERR_IO, "%s: cannot flush: %s", name, strerror(errno));
    int rc = fclose(f->f);
    f->f = NULL;
    if (!st && rc != 0) st = clip_fail(err, CLIP_ERR_IO, "%s: cannot close: %s", name, strerror(errno));
    if (!st && f->kind == OUTFILE_ATOMIC) {
        testhook_reached(f->hook, "flushed");
        if (rename(f->tmp, f->target) != 0)
            st = clip_fail(err, CLIP_ERR_IO, "%s: cannot rename the temporary file over it: %s",
                           f->target, strerror(errno));
    }
    if (st) {
        outfile_abort(f);
        return st;
    }
    if (f->kind == OUTFILE_ATOMIC) {
        testhook_reached(f->hook, "renamed");
        registry_drop(f->reg, f->slot);
        free(f->tmp);
        f->tmp = NULL;
        /* The rename is durable only once the folder itself is synced. */
        int dfd = open(f->dir, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            if (fsync(dfd) != 0 && errno != EINVAL)
                st = clip_fail(err, CLIP_ERR_IO, "%s: cannot sync the folder: %s", f->dir,
                               strerror(errno));
            close(dfd);
        }
    }
    outfile_free(f);
    return st;
}

/* ------------------------------------------------------------------ stale temporary files */

/* The PID of a name `.BASE.tmp-PID-XXXXXX` (exactly six mkstemp letters or digits), or 0. */
static long stale_pid(const char *name, const char *base) {
    size_t bl = strlen(base);
    if (name[0] != '.' || strncmp(name + 1, base, bl) != 0 || strncmp(name + 1 + bl, ".tmp-", 5))
        return 0;
    const char *p = name + 1 + bl + 5;
    long pid = 0;
    const char *d = p;
    while (*p >= '0' && *p <= '9' && p - d < 10) pid = pid * 10 + (*p++ - '0');
    if (p == d || *p != '-' || pid <= 0) return 0;
    p++;
    for (int i = 0; i < 6; i++)
        if (!isalnum((unsigned char)p[i])) return 0;
    return p[6] == '\0' ? pid : 0;
}

/* 1 when no process `pid` runs: none exists (kill says ESRCH), or it is a zombie that nobody
 * reaped yet (Linux's /proc says state Z; elsewhere a zombie counts as running). */
static int pid_gone(long pid) {
    if (kill((pid_t)pid, 0) != 0) return errno == ESRCH;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* "pid (comm) S ...": comm may hold spaces */
    return paren && paren[1] == ' ' && paren[2] == 'Z';
}

/* 1 when no process holds a lock on the file (it is ours to remove). */
static int unlocked(int dirfd, const char *name) {
    int fd = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) return 0;
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    int free_ = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type == F_UNLCK;
    close(fd);
    return free_;
}

size_t files_clean_stale(const char *path, FILE *log) {
    if (!path || outfile_kind_of(path) != OUTFILE_ATOMIC) return 0;
    clip_buf t = {0};
    if (final_target(path, &t, NULL)) {
        clip_buf_free(&t);
        return 0;
    }
    char *slash = strrchr(t.data, '/');
    const char *base = slash ? slash + 1 : t.data;
    const char *dir = slash ? (slash == t.data ? "/" : t.data) : ".";
    if (slash && slash != t.data) *slash = '\0';
    size_t removed = 0;
    DIR *d = opendir(dir);
    if (d) {
        int dfd = dirfd(d);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            long pid = stale_pid(e->d_name, base);
            if (!pid || pid == (long)getpid()) continue;
            if (!pid_gone(pid)) continue;
            struct stat st;
            if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
                continue;
            if (!unlocked(dfd, e->d_name)) continue;
            if (unlinkat(dfd, e->d_name, 0) == 0) {
                removed++;
                if (log)
                    fprintf(log, "clipeval: removed %s/%s, left by an earlier run (PID %ld) that "
                                 "no longer runs\n", dir, e->d_name, pid);
            }
        }
        closedir(d);
    }
    clip_buf_free(&t);
    return removed;
}

/* ------------------------------------------------------------------ stdin */

static clip_status copy_fd(int from, int to, clip_error *err) {
    char buf[1 << 16];
    for (;;) {
        ssize_t n = read(from, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return clip_fail(err, CLIP_ERR_IO, "stdin: read error: %s", strerror(errno));
        if (n == 0) return CLIP_OK;
        for (ssize_t o = 0; o < n;) {
            ssize_t w = write(to, buf + o, (size_t)(n - o));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0)
                return clip_fail(err, CLIP_ERR_IO, "stdin: cannot copy it to a temporary file: %s",
                                 strerror(errno));
            o += w;
        }
    }
}

clip_status files_stdin_seekable(clip_error *err) {
    struct stat st;
    if (fstat(STDIN_FILENO, &st) != 0)
        return clip_fail(err, CLIP_ERR_IO, "stdin: %s", strerror(errno));
    /* A regular file read from its start is used as it is; the readers read it with pread. */
    if (S_ISREG(st.st_mode) && lseek(STDIN_FILENO, 0, SEEK_CUR) == 0) return CLIP_OK;
    const char *tmpdir = getenv("TMPDIR");
    clip_buf t = {0};
    clip_buf_printf(&t, "%s/clipeval-stdin-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (t.oom) return clip_fail(err, CLIP_ERR_NOMEM, "out of memory");
    int fd = mkstemp(t.data);
    if (fd < 0) {
        clip_status s = clip_fail(err, CLIP_ERR_IO, "stdin: cannot create a temporary file %s: %s",
                                  t.data, strerror(errno));
        clip_buf_free(&t);
        return s;
    }
    unlink(t.data); /* nothing is left behind, whatever ends the run */
    clip_buf_free(&t);
    clip_status s = copy_fd(STDIN_FILENO, fd, err);
    if (!s && dup2(fd, STDIN_FILENO) < 0)
        s = clip_fail(err, CLIP_ERR_IO, "stdin: %s", strerror(errno));
    close(fd);
    return s;
}
