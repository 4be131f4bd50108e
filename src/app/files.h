/* files.h — the files a scoring run writes and reads outside the table formats: each output
 * appears complete or not at all, and never replaces what is not a plain file.
 *
 * An output path is written according to what it names:
 *   "-"                    standard output, written directly;
 *   not a regular file     a character device (/dev/null), a FIFO, /dev/stdout on a pipe or a
 *                          terminal, also through symlinks: written directly (there is no
 *                          atomicity to keep, and replacing it would destroy it);
 *   a regular file or none a temporary file next to it, renamed over it on commit after fsync;
 *                          a symlink is followed to its final target (which may not exist yet),
 *                          so the temporary file and the rename happen there and the link stays
 *                          a link.
 * Temporary files are named .NAME.tmp-PID-XXXXXX (NAME: the final file's name), hold an fcntl
 * write lock while their run lives, and sit in a registry that a signal handler empties with
 * files_registry_unlink. One left by a run that was killed with SIGKILL is removed by the next
 * run on the same output (files_clean_stale): only names of exactly that pattern, only when the
 * recorded PID is not running and no process holds the lock. */
#ifndef CLIP_FILES_H
#define CLIP_FILES_H

#include <limits.h>
#include <signal.h>
#include <stdio.h>

#include "clip.h"
#include "testhook.h"

#define FILES_SLOTS 5 /* the output, its rejects, the failure log, --scores-out: one spare */

typedef struct files_registry {
    volatile sig_atomic_t used[FILES_SLOTS];
    char path[FILES_SLOTS][PATH_MAX + 64];
} files_registry;

/* Unlinks every registered temporary file. Async-signal-safe (unlink only). */
void files_registry_unlink(files_registry *r);

typedef enum outfile_kind {
    OUTFILE_STDOUT, /* "-" */
    OUTFILE_DIRECT, /* an existing file that is not a regular file */
    OUTFILE_ATOMIC  /* a regular file or a new one: temporary file + rename */
} outfile_kind;

outfile_kind outfile_kind_of(const char *path);

typedef struct outfile outfile;

/* Opens `path` for writing as above. reg (may be NULL) records the temporary file for signal
 * handlers; hook (may be NULL) receives the opened/flushed/renamed points. A missing folder is
 * created (FileStorage does os.makedirs). */
clip_status outfile_open(const char *path, files_registry *reg, testhook *hook, outfile **out,
                         clip_error *err);
FILE *outfile_stream(const outfile *f);
/* Where the bytes go, for messages: the temporary file, the device, or "stdout". */
const char *outfile_name(const outfile *f);
/* Flushes (and for an atomic output syncs, renames into place and syncs the folder); frees f.
 * On failure the temporary file is removed and the previous output is intact. */
clip_status outfile_commit(outfile *f, clip_error *err);
/* Removes the temporary file (if any) and frees f. */
void outfile_abort(outfile *f);

/* Removes stale temporary files of earlier runs for the output `path` (see above); each
 * removal is named on `log` (may be NULL). Returns how many were removed. */
size_t files_clean_stale(const char *path, FILE *log);

/* Makes standard input a seekable regular file, as the table readers need (they read it three
 * times): a regular file is kept; a pipe or terminal is copied into an unlinked temporary file
 * in $TMPDIR (default /tmp) that replaces descriptor 0. */
clip_status files_stdin_seekable(clip_error *err);

#endif
