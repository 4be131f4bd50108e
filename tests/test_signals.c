/* test_signals.c — `clipeval score` interrupted at exact phases, whatever the machine's speed.
 *
 * No test here waits for time to pass. A run is paused by the documented test hook
 * (src/app/testhook.h: CLIPEVAL_TEST_PAUSE=POINT[:N]) and says so on a pipe; the test blocks
 * on that pipe, so the signal provably arrives while the run sits at that point. If the run
 * dies before it gets there, the pipe closes and the test fails with the run's log.
 * CI runs this suite ten times in a row and once pinned to one core with a busy competitor
 * (.ci/run). The .timeout values are hang guards only (a run that never reaches its pause
 * point and never ends), far above what the tests take; nothing is timed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clip.h"
#include "testutil.h"
#include "util.h"

#define ROWS 3000

typedef struct proc_fixture {
    char tmp[4096], model[4300], img[4300], in[4300], out[4300], log[4300];
} proc_fixture;

static void proc_setup(proc_fixture *f) {
    tu_tmpdir(f->tmp, sizeof f->tmp);
    snprintf(f->model, sizeof f->model, "%s/model", f->tmp);
    tu_tiny_model(f->model);
    char src[4096];
    tu_shared_path(src, sizeof src, "golden/images/edge_100x60.png");
    snprintf(f->img, sizeof f->img, "%s/a.png", f->tmp);
    char *png;
    size_t n;
    clip_error e = {0};
    cr_assert_eq(clip_read_file(src, 0, &png, &n, &e), CLIP_OK, "%s", e.msg);
    tu_write_file(f->img, png, n);
    free(png);
    clip_buf c = {0};
    for (int i = 0; i < ROWS; i++)
        clip_buf_printf(&c, "{\"image_path\":\"%s\",\"text\":\"caption %d\"}\n", f->img, i);
    snprintf(f->in, sizeof f->in, "%s/in.jsonl", f->tmp);
    snprintf(f->out, sizeof f->out, "%s/out.jsonl", f->tmp);
    snprintf(f->log, sizeof f->log, "%s/run.log", f->tmp);
    tu_write_file(f->in, c.data, c.len);
    clip_buf_free(&c);
}

/* The child's exit as a shell reports it: the status, or 128 + the signal that ended it. */
static int shell_status(int st) {
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

static char *read_text(const char *path) {
    char *d = NULL;
    size_t n;
    clip_error e = {0};
    if (clip_read_file(path, 0, &d, &n, &e) != CLIP_OK) return strdup("(unreadable)");
    return d;
}

/* Starts `clipeval score` on the fixture, paused at `point` (NULL: not paused), SIGHUP ignored
 * when hup_ignored. Returns the PID once the run reports the point; *reached says whether it
 * did (0: it ended first, its log says why). */
static pid_t start_run(proc_fixture *f, const char *point, int hup_ignored, int *reached) {
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* a fresh process: default signals, nothing blocked, fd 3 = the ready pipe */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, hup_ignored ? SIG_IGN : SIG_DFL);
        close(p[0]);
        if (p[1] != 3) {
            dup2(p[1], 3);
            close(p[1]);
        }
        int lf = open(f->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (lf >= 0) {
            dup2(lf, 1);
            dup2(lf, 2);
            close(lf);
        }
        if (point) {
            setenv("CLIPEVAL_TEST_PAUSE", point, 1);
            setenv("CLIPEVAL_TEST_READY_FD", "3", 1);
        }
        setenv("OMP_NUM_THREADS", "1", 1);
        execl(tu_cli(), "clipeval", "score", "--input", f->in, "--output", f->out, "--model",
              f->model, "--device", "cpu", "--quiet", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char line[64] = "";
    size_t n = 0;
    for (;;) {
        ssize_t r = read(p[0], line + n, sizeof line - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
        if (memchr(line, '\n', n) || n == sizeof line - 1) break;
    }
    line[n] = '\0';
    close(p[0]);
    *reached = point && n > 0;
    return pid;
}

/* How many of our temporary files sit next to the output. */
static int temp_files(const proc_fixture *f, off_t *size) {
    char cmd[8400], *out;
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c '^\\.out\\.jsonl\\.tmp-'", f->tmp);
    tu_run(cmd, &out);
    int n = atoi(out);
    free(out);
    if (size) {
        *size = -1;
        snprintf(cmd, sizeof cmd, "stat -c %%s '%s'/.out.jsonl.tmp-* 2>/dev/null | head -1", f->tmp);
        tu_run(cmd, &out);
        if (*out) *size = atol(out);
        free(out);
    }
    return n;
}

/* The output after a complete run: every row, each with a score. */
static void expect_complete_output(const proc_fixture *f) {
    char *o = read_text(f->out);
    size_t lines = 0;
    for (const char *q = o; (q = strstr(q, "\"clip_score\":")) != NULL; q++) lines++;
    cr_expect_eq(lines, ROWS, "output has %zu scored rows, want %d", lines, ROWS);
    free(o);
}

typedef struct phase {
    const char *point;
    int temp;      /* the temporary file exists at this point */
    int began;     /* ... and holds output bytes already */
    int replaced;  /* the output is already the new one */
} phase;

/* Before the first output byte, mid-batch, mid-write (output begun), everything written but
 * not renamed, and the rename window. */
static const phase phases[] = {
    {"scan", 0, 0, 0},   {"opened", 1, 0, 0},  {"batch:3", 1, 0, 0},
    {"row:1500", 1, 1, 0}, {"flushed", 1, 1, 0}, {"renamed", 0, 0, 1},
};

static void interrupt_at(proc_fixture *f, const phase *ph, int sig) {
    tu_write_file(f->out, "previous\n", 9); /* fresh before every run */
    int reached;
    pid_t pid = start_run(f, ph->point, 0, &reached);
    if (!reached) {
        int st;
        waitpid(pid, &st, 0);
        char *log = read_text(f->log);
        cr_assert_fail("%s: the run ended (status %d) before the pause point:\n%s", ph->point,
                       shell_status(st), log);
    }
    off_t size;
    int temps = temp_files(f, &size);
    cr_expect_eq(temps, ph->temp, "%s: %d temporary files while paused", ph->point, temps);
    if (ph->temp) {
        if (ph->began)
            cr_expect_gt(size, 0, "%s: the output has not begun", ph->point);
        else
            cr_expect_eq(size, 0, "%s: output bytes before the first row", ph->point);
    }
    cr_assert_eq(kill(pid, sig), 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    char *log = read_text(f->log);
    cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == sig, "%s, signal %d: status %d, want %d\n%s",
              ph->point, sig, shell_status(st), 128 + sig, log);
    if (ph->replaced) {
        expect_complete_output(f);
    } else {
        char *now = read_text(f->out);
        cr_expect_str_eq(now, "previous\n", "%s, signal %d: the previous output changed", ph->point,
                         sig);
        free(now);
    }
    if (sig == SIGKILL) /* the killed run's own temporary file stays (earlier ones are gone) */
        cr_expect_eq(temp_files(f, NULL), ph->temp, "%s: temporary files after SIGKILL", ph->point);
    if (sig != SIGKILL) {
        cr_expect_eq(temp_files(f, NULL), 0, "%s, signal %d: temporary file left\n%s", ph->point,
                     sig, log);
        cr_expect(strstr(log, "interrupted"), "%s: %s", ph->point, log);
    }
    free(log);
    fprintf(stderr, "[process] %s, signal %d: status %d\n", ph->point, sig, shell_status(st));
}

/* SIGKILL at every phase: the previous output or the complete new one, never a partial one; the
 * temporary file a killed run cannot remove is removed by the next run on the same output (each
 * paused run above sees only its own). */
Test(process, sigkill_at_every_phase_keeps_the_previous_output, .timeout = 600) {
    proc_fixture f;
    proc_setup(&f);
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++)
        interrupt_at(&f, &phases[i], SIGKILL);
    interrupt_at(&f, &phases[4], SIGKILL); /* "flushed": leaves a complete temporary file */
    cr_expect_eq(temp_files(&f, NULL), 1);
    int reached;
    pid_t pid = start_run(&f, NULL, 0, &reached);
    int st;
    waitpid(pid, &st, 0);
    char *log = read_text(f.log);
    cr_expect_eq(shell_status(st), 0, "%s", log);
    cr_expect_eq(temp_files(&f, NULL), 0, "stale temporary files not cleaned:\n%s", log);
    cr_expect(strstr(log, "left by an earlier run"), "%s", log);
    expect_complete_output(&f);
    free(log);
    char *in = read_text(f.in);
    cr_expect(strstr(in, "caption 2999") && !strstr(in, "clip_score"), "input modified");
    free(in);
    tu_rmtree(f.tmp);
}

/* SIGTERM (143), SIGINT (130) and SIGHUP (129) remove the temporary file and keep the previous
 * output, at each phase where one exists. */
Test(process, sigterm_sigint_sighup_clean_up, .timeout = 600) {
    proc_fixture f;
    proc_setup(&f);
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    for (size_t s = 0; s < 3; s++)
        for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++)
            if (phases[i].temp || phases[i].replaced) interrupt_at(&f, &phases[i], sigs[s]);
    tu_rmtree(f.tmp);
}

/* A SIGHUP the run inherits as ignored (nohup) stays ignored: the run then dies of the SIGTERM
 * sent after it. (Pending signals are delivered lowest number first, so a SIGHUP that were not
 * ignored would always end the run first.) */
Test(process, inherited_ignored_sighup_stays_ignored) {
    proc_fixture f;
    proc_setup(&f);
    tu_write_file(f.out, "previous\n", 9);
    int reached;
    pid_t pid = start_run(&f, "row:10", 1, &reached);
    cr_assert(reached);
    kill(pid, SIGHUP);
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "status %d", shell_status(st));
    cr_expect_eq(temp_files(&f, NULL), 0);
    tu_rmtree(f.tmp);
}

/* Only our own pattern with a PID that is not running, and only when no process holds its lock:
 * everything else next to the output stays. */
Test(process, stale_temp_cleanup_is_conservative) {
    proc_fixture f;
    proc_setup(&f);
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0); /* reaped: no process has this PID now */
    static const char *keep_fmt[] = {
        ".out.jsonl.tmp-%ld-abcde",   /* five letters: not mkstemp's */
        ".out.jsonl.tmp-%ld-abcdefg", /* seven */
        "out.jsonl.tmp-%ld-abcdef",   /* not hidden */
        ".other.jsonl.tmp-%ld-abcdef", /* another output */
    };
    char p[4600], locked[4600], gone[4600], live[4600];
    for (size_t i = 0; i < sizeof keep_fmt / sizeof keep_fmt[0]; i++) {
        char name[256];
        snprintf(name, sizeof name, keep_fmt[i], (long)dead);
        snprintf(p, sizeof p, "%s/%s", f.tmp, name);
        tu_write_file(p, "x", 1);
    }
    snprintf(live, sizeof live, "%s/.out.jsonl.tmp-%ld-abcdef", f.tmp, (long)getpid());
    tu_write_file(live, "x", 1); /* a running PID (this test) */
    snprintf(locked, sizeof locked, "%s/.out.jsonl.tmp-%ld-Locked", f.tmp, (long)dead);
    tu_write_file(locked, "x", 1);
    snprintf(gone, sizeof gone, "%s/.out.jsonl.tmp-%ld-Gone00", f.tmp, (long)dead);
    tu_write_file(gone, "x", 1);
    snprintf(p, sizeof p, "%s/.out.jsonl.tmp-%ld-Link00", f.tmp, (long)dead);
    cr_assert_eq(symlink(f.in, p), 0);
    /* a lock held by a live process (this one) protects a file whatever its PID says */
    int lfd = open(locked, O_RDWR);
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    cr_assert_eq(fcntl(lfd, F_SETLK, &fl), 0);
    int reached;
    pid_t pid = start_run(&f, NULL, 0, &reached);
    int st;
    waitpid(pid, &st, 0);
    char *log = read_text(f.log);
    cr_expect_eq(shell_status(st), 0, "%s", log);
    cr_expect(!tu_exists(gone), "the stale file was not removed:\n%s", log);
    cr_expect(tu_exists(locked), "a locked file was removed");
    cr_expect(tu_exists(live), "a live run's file was removed");
    struct stat sb;
    cr_expect(lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode), "a symlink was removed");
    cr_expect(tu_exists(f.in), "the symlink was followed");
    for (size_t i = 0; i < sizeof keep_fmt / sizeof keep_fmt[0]; i++) {
        char name[256], q[4600];
        snprintf(name, sizeof name, keep_fmt[i], (long)dead);
        snprintf(q, sizeof q, "%s/%s", f.tmp, name);
        cr_expect(tu_exists(q), "%s was removed", name);
    }
    free(log);
    close(lfd); /* the lock goes with it: now the file is stale */
    pid = start_run(&f, NULL, 0, &reached);
    waitpid(pid, &st, 0);
    cr_expect(!tu_exists(locked), "an unlocked stale file stayed");
    tu_rmtree(f.tmp);
}
