/* err.c — thread-local error message and never-failing allocation helpers. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_buf[1024];

int lp_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return -1;
}

int lp_fail_prefix(const char *fmt, ...) {
    char joined[sizeof err_buf * 2];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(joined, sizeof joined, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof joined - 3) n = (int)(sizeof joined - 3) - 1;
    snprintf(joined + n, sizeof joined - (size_t)n, ": %s", err_buf);
    memcpy(err_buf, joined, sizeof err_buf - 1);
    err_buf[sizeof err_buf - 1] = 0;
    return -1;
}

const char *lp_errmsg(void) { return err_buf; }
void lp_err_clear(void) { err_buf[0] = 0; }

static void oom(size_t n) {
    fprintf(stderr, "llama-pajamas: out of memory allocating %zu bytes\n", n);
    abort();
}

void *lp_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *lp_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *lp_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *lp_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(lp_xmalloc(n), s, n);
}

char *lp_xasprintf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = lp_xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}
