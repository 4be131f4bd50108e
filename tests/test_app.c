/* test_app.c — the application's small decisions, driven with their inputs: the BLAS advice
 * (corename and CPUID flags), the runtime line and its one warning, and the progress line's
 * rate, ETA and redraw decisions under a fake clock (no test here reads a clock). */
#include <math.h>

#include "clip.h"
#include "progress.h"
#include "runinfo.h"
#include "testutil.h"

/* ------------------------------------------------------------------ clip_blas_advice */

typedef struct advice_case {
    const char *core;
    int avx2, fma, avx512f, bf16;
    const char *want; /* NULL: no advice */
} advice_case;

Test(runtime, blas_advice_from_corename_and_cpuid) {
    static const advice_case cases[] = {
        {"Prescott", 1, 1, 0, 0, "OPENBLAS_CORETYPE=Haswell"},  /* the masked cloud VM */
        {"Prescott", 1, 1, 1, 0, "OPENBLAS_CORETYPE=SkylakeX"},
        {"Prescott", 1, 1, 1, 1, "OPENBLAS_CORETYPE=Cooperlake"},
        {"prescott", 1, 1, 0, 0, "OPENBLAS_CORETYPE=Haswell"},  /* names compare without case */
        {"Nehalem", 1, 1, 0, 0, "'Nehalem'"},
        {"Sandybridge", 1, 1, 1, 0, "AVX-512"},
        {"Core2", 1, 1, 0, 0, "AVX2+FMA"},
        {"Haswell", 1, 1, 0, 0, NULL},                           /* the right kernels */
        {"SkylakeX", 1, 1, 1, 1, NULL},
        {"Cooperlake", 1, 1, 1, 1, NULL},
        {"Zen", 1, 1, 0, 0, NULL},                               /* not a generic family */
        {"Prescott", 0, 0, 0, 0, NULL},                          /* an old CPU: nothing better */
        {"Prescott", 1, 0, 0, 0, NULL},                          /* AVX2 without FMA */
        {"Prescott", 0, 1, 0, 0, NULL},
        {"", 1, 1, 0, 0, NULL},
        {NULL, 1, 1, 0, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const advice_case *c = &cases[i];
        char buf[320];
        memset(buf, 'x', sizeof buf);
        int n = clip_blas_advice(c->core, c->avx2, c->fma, c->avx512f, c->bf16, buf, sizeof buf);
        cr_expect_eq((size_t)n, strlen(buf), "case %zu: length %d for '%s'", i, n, buf);
        if (!c->want) {
            cr_expect_str_eq(buf, "", "case %zu (%s): unexpected advice '%s'", i,
                             c->core ? c->core : "NULL", buf);
        } else {
            cr_expect(strstr(buf, c->want), "case %zu (%s): '%s' lacks '%s'", i, c->core, buf, c->want);
            cr_expect(strstr(buf, "export OPENBLAS_CORETYPE="), "case %zu: no fix named: %s", i, buf);
        }
    }
    /* a short buffer gets a NUL-terminated prefix; no buffer, nothing */
    char small[12];
    int n = clip_blas_advice("Prescott", 1, 1, 0, 0, small, sizeof small);
    cr_expect_eq(n, (int)sizeof small - 1);
    cr_expect_eq(strlen(small), sizeof small - 1);
    cr_expect_eq(clip_blas_advice("Prescott", 1, 1, 0, 0, small, 0), 0);
    cr_expect_eq(clip_blas_advice("Prescott", 1, 1, 0, 0, NULL, 8), 0);
}

Test(runtime, info_line_and_one_warning) {
    clip_runtime_info ri;
    memset(&ri, 0, sizeof ri);
    snprintf(ri.blas, sizeof ri.blas, "OpenBLAS 0.3.21");
    snprintf(ri.blas_core, sizeof ri.blas_core, "Prescott");
    ri.blas_threads = 2;
    ri.omp_threads = 1;
    ri.cores = 2;
    ri.avx2 = ri.fma = 1;
    char line[512];
    runinfo_line(&ri, line, sizeof line);
    cr_expect_str_eq(line, "OpenBLAS 0.3.21, core Prescott, 2 BLAS threads, 1 OpenMP thread, 2 "
                           "cores, CPU AVX2 FMA");
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    cr_assert_not_null(mem);
    cr_expect_eq(runinfo_warn(&ri, mem), 0, "no warning when the engine has none");
    clip_blas_advice(ri.blas_core, ri.avx2, ri.fma, ri.avx512f, ri.avx512bf16, ri.warning,
                     sizeof ri.warning);
    cr_expect_eq(runinfo_warn(&ri, mem), 1);
    fclose(mem);
    const char *w = strstr(text, "clipeval: warning: OpenBLAS uses its generic 'Prescott' kernels");
    cr_expect(w && !strstr(w + 1, "clipeval: warning:") && strstr(text, "OPENBLAS_CORETYPE=Haswell"),
              "%s", text);
    free(text);
    /* the real runtime: whatever the machine, the fields are filled */
    clip_runtime_info real;
    clip_runtime_info_get(&real);
    cr_expect(real.blas[0] && real.blas_core[0] && real.blas_threads >= 1 && real.cores >= 1);
    fprintf(stderr, "[runtime] %s%s%s\n", runinfo_line(&real, line, sizeof line) ? line : "",
            real.warning[0] ? "; warning: " : "", real.warning);
}

/* `clipeval info` shows the runtime line (the score summary's is in test_score.c's runs). */
Test(runtime, info_command_shows_the_blas) {
    char dir[4096], model[4300], cmd[8600], *log;
    tu_tmpdir(dir, sizeof dir);
    snprintf(model, sizeof model, "%s/model", dir);
    tu_tiny_model(model);
    snprintf(cmd, sizeof cmd, "%s info --model '%s'", tu_cli(), model);
    cr_assert_eq(tu_run(cmd, &log), 0, "%s", log);
    cr_expect(strstr(log, "cpu runtime    ") && strstr(log, ", core ") && strstr(log, "BLAS thread"),
              "%s", log);
    free(log);
    snprintf(cmd, sizeof cmd, "printf '{\"image_path\":\"x.png\",\"text\":\"a\"}\\n' > '%s/in.jsonl' && "
                              "%s score --input '%s/in.jsonl' --output '%s/o.jsonl' --model '%s' "
                              "--device cpu", dir, tu_cli(), dir, dir, model);
    tu_run(cmd, &log);
    cr_expect(strstr(log, "clipeval score: device cpu, ") && strstr(log, ", core "), "%s", log);
    free(log);
    tu_rmtree(dir);
}

/* ------------------------------------------------------------------ progress */

static void fmt(progress_state *p, double now, size_t done, char *buf) {
    progress_state_format(p, now, done, buf, 256);
}

Test(progress, eta_only_once_the_rate_is_steady) {
    progress_state p;
    char line[256];
    progress_state_init(&p, 1000, 100.0);
    fmt(&p, 100.0, 0, line);
    cr_expect_str_eq(line, "[>                             ] 0/1000 rows  0.0 rows/s  ETA --");
    /* 100 rows/s: a sample every 0.5 s; four that agree make the rate steady */
    for (int k = 1; k <= 3; k++) {
        progress_state_update(&p, 100.0 + 0.5 * k, (size_t)(50 * k));
        cr_expect(!p.steady, "steady after %d samples", k);
        cr_expect_lt(progress_state_eta(&p, 100.0 + 0.5 * k, (size_t)(50 * k)), 0);
    }
    progress_state_update(&p, 100.2 + 1.5, 170); /* 0.2 s after a sample: no new sample */
    cr_expect_eq(p.nrates, 3);
    progress_state_update(&p, 102.0, 200);
    cr_expect(p.steady);
    double eta = progress_state_eta(&p, 102.0, 200);
    cr_expect(fabs(eta - 8.0) < 1e-9, "eta %g, want 8", eta);
    fmt(&p, 102.0, 200, line);
    cr_expect_str_eq(line, "[======>                       ] 200/1000 rows  100.0 rows/s  ETA 0m08s");
    fprintf(stderr, "[progress] steady after 4 samples, ETA %.3f s (want 8)\n", eta);
    /* once steady it stays so; the ETA follows the average rate */
    progress_state_update(&p, 103.0, 220);
    cr_expect(p.steady);
    fmt(&p, 103.0, 220, line);
    cr_expect(strstr(line, "ETA 0m11s"), "%s", line); /* 780 rows at 220/3 rows/s: 10.6 s */
}

Test(progress, erratic_rate_gives_no_eta) {
    progress_state p;
    progress_state_init(&p, 100000, 0.0);
    /* a batch of 800 rows every 2 s: samples of 0, 400, 0, 400 ... rows/s never agree early */
    size_t done = 0;
    for (int k = 1; k <= 6; k++) {
        if (k % 4 == 0) done += 800;
        progress_state_update(&p, 0.5 * k, done);
        cr_expect(!p.steady, "steady at sample %d (done %zu)", k, done);
    }
    char line[256];
    fmt(&p, 3.0, done, line);
    cr_expect(strstr(line, "ETA --"), "%s", line);
}

Test(progress, redraw_every_period_from_rows_scored) {
    progress_state p;
    char line[256];
    progress_state_init(&p, 10, 5.0);
    cr_expect(progress_state_due(&p, 5.0), "the first draw is due at once");
    fmt(&p, 5.0, 0, line);
    cr_expect(!progress_state_due(&p, 5.0 + PROGRESS_PERIOD_S / 2));
    cr_expect(progress_state_due(&p, 5.0 + PROGRESS_PERIOD_S));
    fmt(&p, 6.0, 10, line);
    cr_expect_str_eq(line, "[==============================] 10/10 rows  10.0 rows/s  ETA --");
    /* more rows than announced (a file that grew) never overflows the bar */
    fmt(&p, 7.0, 15, line);
    cr_expect(strstr(line, "[==============================] 15/10"), "%s", line);
}
