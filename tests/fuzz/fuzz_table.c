/* libFuzzer target: the table reader and writer. The input is written to a file and read as
 * jsonl, json and csv (scan with and without skip_invalid, every row, str() of every cell),
 * then written in every output format, verbatim and pandas-style. Besides not crashing, it
 * checks that the reader agrees with the scan on the row count. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "table/table.h"
#include "util.h"

static char g_dir[64]; /* one scratch folder per fuzzing process */

static void roundtrip(const char *in, table_format fmt) {
    table_limits lim = {4096, 32};
    clip_error e;
    table_schema *s = NULL;
    if (table_scan(in, fmt, &lim, 0, &s, &e) == CLIP_OK) table_schema_free(s);
    s = NULL;
    if (table_scan(in, fmt, &lim, 1, &s, &e) != CLIP_OK) return;
    size_t ncols = table_schema_columns(s);
    for (int mode = 0; mode < 6; mode++) {
        table_format ofmt = (table_format)(mode % 3);
        char out[96];
        snprintf(out, sizeof out, "%s/out.%s", g_dir, table_format_name(ofmt));
        table_reader *r = NULL;
        table_writer *w = NULL;
        table_write_options o = {ofmt, mode >= 3, "clip_score", NULL, NULL};
        if (table_reader_open(in, fmt, s, &lim, &r, &e) != CLIP_OK) abort();
        if (table_writer_open(out, &o, s, fmt, &w, &e) != CLIP_OK) abort();
        clip_buf t = {0};
        size_t rows = 0;
        for (;;) {
            table_row *row;
            clip_status st = table_reader_next(r, &row, &e);
            if (st) {
                if (!table_reader_skippable(r)) abort(); /* the scan accepted the file */
                size_t len;
                if (!table_reader_last_raw(r, &len)) abort();
                continue;
            }
            if (!row) break;
            rows++;
            for (size_t c = 0; c < ncols; c++) {
                if (table_row_text(row, s, (int)c, &t, &e) != CLIP_OK) abort();
                size_t len;
                const char *str = table_row_string(row, (int)c, &len);
                if (str && table_row_kind(row, (int)c) != TK_STRING) abort();
            }
            if (table_writer_row(w, row, 0.5 / (double)rows, &e) != CLIP_OK) abort();
        }
        if (rows != table_schema_rows(s)) abort();
        if (mode & 1)
            table_writer_abort(w);
        else if (table_writer_commit(w, &e) != CLIP_OK)
            abort();
        clip_buf_free(&t);
        table_reader_close(r);
    }
    table_schema_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) { /* tmpfs when there is one: every commit fsyncs */
        snprintf(g_dir, sizeof g_dir, "%s/fuzz_table-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(g_dir)) abort();
    }
    static const char *const names[3] = {"in.jsonl", "in.json", "in.csv"};
    for (int f = 0; f < 3; f++) {
        char in[96];
        snprintf(in, sizeof in, "%s/%s", g_dir, names[f]);
        FILE *fp = fopen(in, "wb");
        if (!fp) abort();
        if (size && fwrite(data, 1, size, fp) != size) abort();
        fclose(fp);
        roundtrip(in, (table_format)f);
    }
    return 0;
}
