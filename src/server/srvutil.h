/* srvutil.h — small helpers the server files share: a growable byte buffer, random
 * ids, JSON strings from bytes that may not be valid UTF-8, and a check whether an
 * HTTP client has hung up. */
#ifndef LP_SRVUTIL_H
#define LP_SRVUTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct {
    char *p; /* always NUL-terminated once anything was appended */
    size_t len, cap;
} srv_buf;

void srv_buf_append(srv_buf *b, const char *s, size_t n);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) LP_PRINTF(2, 3);
void srv_buf_clear(srv_buf *b);
void srv_buf_free(srv_buf *b);

/* prefix + n random alphanumerics into out (size >= strlen(prefix) + n + 1). */
void srv_random_id(char *out, const char *prefix, int n);
uint64_t srv_random_u64(void);

/* A JSON string of bytes that may hold invalid UTF-8 (a token ending mid-character):
 * invalid bytes become U+FFFD, as a decoder would show them. */
json_t *srv_json_bytes(const char *s, size_t n);
/* Does s[0, n) start with / equal / end with the NUL-terminated t? */
bool srv_starts_with(const char *s, size_t n, const char *t);
/* Length of the longest suffix of s[0, n) that is a proper prefix of tag. */
size_t srv_partial_suffix(const char *s, size_t n, const char *tag);
bool srv_is_space(char c);
/* First occurrence of needle (NUL-terminated) in hay[0, n), or NULL. */
const char *srv_find(const char *hay, size_t n, const char *needle);

/* True when the peer of a connected socket has closed or reset it. */
bool srv_peer_gone(int fd);

#endif
