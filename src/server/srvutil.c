/* srvutil.c — the server's shared helpers: byte buffers, ids, UTF-8-safe JSON
 * strings, tag matching for streamed text, peer hang-up detection. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "srvutil.h"

#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void buf_reserve(srv_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (b->len + extra + 1 > cap) cap *= 2;
    b->p = lp_xrealloc(b->p, cap);
    b->cap = cap;
}

void srv_buf_append(srv_buf *b, const char *s, size_t n) {
    buf_reserve(b, n);
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void srv_buf_puts(srv_buf *b, const char *s) { srv_buf_append(b, s, strlen(s)); }

void srv_buf_printf(srv_buf *b, const char *fmt, ...) {
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n >= 0) {
        buf_reserve(b, (size_t)n);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
}

void srv_buf_clear(srv_buf *b) {
    b->len = 0;
    if (b->p) b->p[0] = 0;
}

void srv_buf_free(srv_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Ids only need to be unique, not unpredictable: a mutex-guarded splitmix64 seeded
 * from the clock and pid is enough. */
static pthread_mutex_t rng_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rng_state;

uint64_t srv_random_u64(void) {
    pthread_mutex_lock(&rng_mu);
    if (!rng_state) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rng_state = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    pthread_mutex_unlock(&rng_mu);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void srv_random_id(char *out, const char *prefix, int n) {
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t k = strlen(prefix);
    memcpy(out, prefix, k);
    for (int i = 0; i < n; i++) out[k + (size_t)i] = alnum[srv_random_u64() % (sizeof alnum - 1)];
    out[k + (size_t)n] = 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    unsigned cp = c & (0xFF >> (len + 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

json_t *srv_json_bytes(const char *s, size_t n) {
    srv_buf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i);
        if (k) {
            srv_buf_append(&b, s + i, k);
            i += k;
        } else {
            srv_buf_append(&b, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    json_t *j = json_stringn_nocheck(b.p ? b.p : "", b.len);
    srv_buf_free(&b);
    return j;
}

bool srv_starts_with(const char *s, size_t n, const char *t) {
    size_t k = strlen(t);
    return n >= k && memcmp(s, t, k) == 0;
}

size_t srv_partial_suffix(const char *s, size_t n, const char *tag) {
    size_t k = strlen(tag);
    for (size_t l = k - 1 < n ? k - 1 : n; l > 0; l--)
        if (memcmp(s + n - l, tag, l) == 0) return l;
    return 0;
}

const char *srv_find(const char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);
    if (!hay || k == 0 || k > n) return k == 0 ? hay : NULL;
    for (const char *p = hay, *last = hay + (n - k); p <= last; p++) {
        p = memchr(p, needle[0], (size_t)(last - p) + 1);
        if (!p) return NULL;
        if (memcmp(p, needle, k) == 0) return p;
    }
    return NULL;
}

bool srv_is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

bool srv_peer_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}
