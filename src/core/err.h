/* err.h — the one error convention of llama-pajamas.
 *
 * Every fallible function returns 0 / a valid pointer on success and -1 / NULL on
 * failure, after recording a one-line, human-readable message with lp_fail().
 * The message names the file and field at fault ("model.safetensors: tensor
 * 'x': data_offsets past end of file"). Callers that add context use
 * lp_fail_prefix(). The CLI prints lp_errmsg() and exits non-zero.
 * The message is thread-local, so worker threads may fail independently. */
#ifndef LP_ERR_H
#define LP_ERR_H

#include <stddef.h>

#if defined(__GNUC__)
#define LP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LP_PRINTF(a, b)
#endif

/* Record a message (printf-style); always returns -1 so callers can `return lp_fail(...)`. */
int lp_fail(const char *fmt, ...) LP_PRINTF(1, 2);
/* Prepend "prefix: " to the current message; returns -1. */
int lp_fail_prefix(const char *fmt, ...) LP_PRINTF(1, 2);
/* The current message ("" if none). */
const char *lp_errmsg(void);
void lp_err_clear(void);

/* Allocation that never returns NULL: on out-of-memory it prints and aborts,
 * because no caller can do anything useful then. */
void *lp_xmalloc(size_t n);
void *lp_xcalloc(size_t n, size_t size);
void *lp_xrealloc(void *p, size_t n);
char *lp_xstrdup(const char *s);
/* malloc'd printf. */
char *lp_xasprintf(const char *fmt, ...) LP_PRINTF(1, 2);

#endif
