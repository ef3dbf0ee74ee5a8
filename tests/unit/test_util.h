/* test_util.h — scratch directories for unit tests that write files (include after cmocka.h). */
#ifndef LP_TEST_UTIL_H
#define LP_TEST_UTIL_H

#include <stdlib.h>

#include "core/err.h"

/* A fresh directory under /tmp, malloc'd path. */
static inline char *test_tmpdir(void) {
    char tmpl[] = "/tmp/lp-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return lp_xstrdup(d);
}

static inline void test_rm_rf(const char *path) {
    char *cmd = lp_xasprintf("rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

#endif
