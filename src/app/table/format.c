/* format.c — table file types (FileStorage's rule) and pandas dtype names. */
#include "internal.h"

#include <string.h>

static const char *const format_names[] = {"jsonl", "json", "csv"};

const char *table_format_name(table_format f) {
    return (unsigned)f < 3 ? format_names[f] : "?";
}

int table_format_from_name(const char *name, table_format *fmt) {
    for (int i = 0; i < 3; i++) {
        if (name && strcmp(name, format_names[i]) == 0) {
            *fmt = (table_format)i;
            return 1;
        }
    }
    return 0;
}

clip_status table_format_from_path(const char *path, table_format *fmt, clip_error *err) {
    if (!path || !*path) return clip_fail(err, CLIP_ERR_ARG, "empty table path");
    /* Python's path.split(".")[-1]: the last dot anywhere, even in a folder name. */
    const char *dot = strrchr(path, '.');
    const char *type = dot ? dot + 1 : path;
    if (table_format_from_name(type, fmt)) return CLIP_OK;
    return clip_fail(err, CLIP_ERR_UNSUPPORTED,
                     "%s: unsupported file type '%s' (clipeval reads and writes jsonl, json, csv)",
                     path, type);
}

const char *table_dtype_name(table_dtype d) {
    switch (d) {
    case TD_INT64: return "int64";
    case TD_UINT64: return "uint64";
    case TD_FLOAT64: return "float64";
    case TD_BOOL: return "bool";
    case TD_OBJECT: return "object";
    }
    return "?";
}
