/* test_library.c — what leaves libclip.so: only the clip_* API of clip.h (a program linking it
 * must never meet our json_*, table_* or stbi_* names), under the soname libclip.so.0. */
#include <stdio.h>
#include <string.h>

#include "clip.h"
#include "testutil.h"

Test(library, exports_only_clip_api) {
    const char *b = getenv("CLIPEVAL_BUILD");
    char cmd[4400], line[512];
    snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s/libclip.so' 2>&1", b && *b ? b : "build");
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    int total = 0, foreign = 0, version = 0;
    while (fgets(line, sizeof line, p)) {
        char addr[64], type[8], name[400];
        if (sscanf(line, "%63s %7s %399s", addr, type, name) != 3) continue;
        total++;
        if (strncmp(name, "clip_", 5)) {
            foreign++;
            cr_expect_fail("libclip.so exports %s (type %s): only clip_* may leave the library",
                           name, type);
        }
        version += !strcmp(name, "clip_version");
    }
    int rc = pclose(p);
    cr_assert_eq(rc, 0, "nm failed");
    fprintf(stderr, "[library] libclip.so exports %d symbols, %d not clip_*\n", total, foreign);
    cr_expect(total >= 30 && version == 1, "%d exports, clip_version %d", total, version);
    cr_expect_str_eq(clip_version(), CLIP_VERSION);

    snprintf(cmd, sizeof cmd, "objdump -p '%s/libclip.so' | grep -q 'SONAME *libclip.so.0$'",
             b && *b ? b : "build");
    cr_expect_eq(system(cmd), 0, "soname is not libclip.so.0");
}
