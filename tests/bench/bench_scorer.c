/* bench_scorer.c — `clipeval score` throughput on ViT-B/32 (synthetic weights), against
 * DataFlow's own loop (--per-row: batch 1, every row decodes and encodes its image and text):
 *   - the DataFlow example (18 rows, 3 images);
 *   - a synthetic table of 10,000 rows over 1,000 distinct image paths (the golden images
 *     under 1,000 names) with distinct captions; the per-row path is timed on its first
 *     200 rows (it is row-independent), the batched path on all of it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "scorer.h"
#include "util.h"

static double run_score(const char *input, const char *output, const char *model,
                        const char *image_root, const char *ikey, const char *tkey, int per_row,
                        size_t *rows) {
    clip_score_options o;
    clip_score_options_init(&o);
    o.input = input;
    o.output = output;
    o.model = model;
    o.image_root = image_root;
    o.image_key = ikey;
    o.text_key = tkey;
    o.per_row = per_row;
    o.device = CLIP_DEVICE_CPU;
    o.threads = 2;
    o.quiet = 1;
    o.log = NULL;
    clip_score_stats st;
    clip_error e = {0};
    if (clip_score_table(&o, &st, &e)) {
        printf("bench_scorer: %s\n", e.msg);
        return -1;
    }
    *rows = st.rows;
    return st.seconds;
}

static void line(const char *what, size_t rows, double s, double ref_rate) {
    double rate = rows / s;
    printf("%-44s %6zu rows %8.2f s %8.2f rows/s", what, rows, s, rate);
    if (ref_rate > 0) printf("   x%.1f vs per-row", rate / ref_rate);
    printf("\n");
}

void bench_scorer(const char *shared, const char *synth_dir, const char *build_dir) {
    char model[4096], input[4200], out[4200], tmp[4200], root[4200];
    snprintf(model, sizeof model, "%s/vitb32-synth", synth_dir);
    printf("== scorer: clipeval score, ViT-B/32 synthetic, 2 threads ==\n");
    /* the DataFlow example */
    snprintf(input, sizeof input, "%s/data/dataflow_example/test_image_eval.jsonl", shared);
    snprintf(root, sizeof root, "%s/data/dataflow_example", shared);
    snprintf(tmp, sizeof tmp, "%s/bench-scorer", build_dir);
    clip_error e = {0};
    if (clip_mkdir_p(tmp, &e)) {
        printf("bench_scorer: %s\n", e.msg);
        return;
    }
    snprintf(out, sizeof out, "%s/example.jsonl", tmp);
    size_t rows = 0, rows1 = 0;
    double t1 = run_score(input, out, model, root, "image", "caption", 1, &rows1);
    double tb = run_score(input, out, model, root, "image", "caption", 0, &rows);
    if (t1 < 0 || tb < 0) return;
    line("DataFlow example, per-row (DataFlow's loop)", rows1, t1, 0);
    line("DataFlow example, batched + dedup", rows, tb, rows1 / t1);
    /* 10,000 rows over 1,000 image paths */
    static const char *names[] = {"0.png", "1.png", "2.png", "cake.jpg", "giraffe.jpg",
                                  "astronaut.png", "chelsea.png", "coffee.png", "camera.png",
                                  "edge_jpeg420.jpg", "edge_webp_lossy.webp", "edge_bmp.bmp"};
    int nn = (int)(sizeof names / sizeof names[0]);
    char imgdir[4300];
    snprintf(imgdir, sizeof imgdir, "%s/img", tmp);
    clip_mkdir_p(imgdir, &e);
    for (int i = 0; i < 1000; i++) {
        char link[4400], target[4400];
        snprintf(link, sizeof link, "%s/%04d_%s", imgdir, i, names[i % nn]);
        snprintf(target, sizeof target, "%s/golden/images/%s", shared, names[i % nn]);
        unlink(link);
        if (symlink(target, link) != 0) {
            printf("bench_scorer: cannot create %s\n", link);
            return;
        }
    }
    static const char *objs[] = {"cat", "dog", "car", "poster", "cup of coffee", "giraffe",
                                 "cake", "astronaut", "street", "camera"};
    char big[4300], small[4300];
    snprintf(big, sizeof big, "%s/synthetic_10k.jsonl", tmp);
    snprintf(small, sizeof small, "%s/synthetic_200.jsonl", tmp);
    FILE *fb = fopen(big, "w"), *fs = fopen(small, "w");
    if (!fb || !fs) return;
    for (int r = 0; r < 10000; r++) {
        int i = (r * 7919) % 1000; /* images recur throughout the file, not in runs */
        char rowbuf[512];
        snprintf(rowbuf, sizeof rowbuf,
                 "{\"id\":%d,\"image_path\":\"img/%04d_%s\",\"text\":\"a photo of a %s, picture %d "
                 "of the collection\"}\n",
                 r, i, names[i % nn], objs[r % 10], r);
        fputs(rowbuf, fb);
        if (r < 200) fputs(rowbuf, fs);
    }
    fclose(fb);
    fclose(fs);
    snprintf(out, sizeof out, "%s/out.jsonl", tmp);
    t1 = run_score(small, out, model, tmp, "image_path", "text", 1, &rows1);
    if (t1 < 0) return;
    line("10k synthetic: per-row, first 200 rows", rows1, t1, 0);
    tb = run_score(big, out, model, tmp, "image_path", "text", 0, &rows);
    if (tb < 0) return;
    line("10k synthetic (1,000 images): batched + dedup", rows, tb, rows1 / t1);
}
