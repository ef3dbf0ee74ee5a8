/* util.c — the template engine's plumbing: arena, byte buffer, UTF-8 code points, and the
 * Python text rules (str.isspace, repr(float)) that rendered output must match byte for byte. */
#include "template/tmpl_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- arena */
struct ta_chunk {
    ta_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *ta_alloc(tarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        ta_chunk *c = lp_xmalloc(sizeof *c + cap);
        a->bytes += sizeof *c + cap;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

char *ta_strndup(tarena *a, const char *s, size_t n) {
    char *d = ta_alloc(a, n + 1);
    if (n) memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* Rough heap cost of a JSON value, counting its direct contents. */
static size_t json_cost(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_STRING: return 48 + json_string_length(j);
    case JSON_ARRAY: return 64 + 48 * json_array_size(j);
    case JSON_OBJECT: return 128 + 96 * json_object_size(j);
    default: return 48;
    }
}

json_t *ta_own(tarena *a, json_t *j) {
    if (!j) return NULL;
    a->bytes += json_cost(j) + sizeof *a->json;
    if (a->njson == a->capjson) {
        a->capjson = a->capjson ? a->capjson * 2 : 64;
        a->json = lp_xrealloc(a->json, a->capjson * sizeof *a->json);
    }
    a->json[a->njson++] = j;
    return j;
}

void ta_free(tarena *a) {
    for (size_t i = 0; i < a->njson; i++) json_decref(a->json[i]);
    free(a->json);
    while (a->head) {
        ta_chunk *n = a->head->next;
        free(a->head);
        a->head = n;
    }
    memset(a, 0, sizeof *a);
}

/* ---------------------------------------------------------------- byte buffer */
void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        b->p = lp_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
void sb_putc(sbuf *b, char c) { sb_put(b, &c, 1); }

void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = lp_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

void sb_free(sbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- UTF-8 */
int32_t u8_next(const char *s, size_t n, size_t *i) {
    const unsigned char *u = (const unsigned char *)s;
    size_t k = *i;
    unsigned c = u[k];
    int len;
    int32_t cp, min;
    if (c < 0x80) {
        *i = k + 1;
        return (int32_t)c;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        goto bad;
    }
    if (k + (size_t)len > n) goto bad;
    for (int j = 1; j < len; j++) {
        if ((u[k + j] & 0xC0) != 0x80) goto bad;
        cp = (cp << 6) | (u[k + j] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto bad;
    *i = k + (size_t)len;
    return cp;
bad:
    *i = k + 1;
    return 0xDC00 + (int32_t)c; /* c >= 0x80 here */
}

void u8_put(sbuf *b, int32_t cp) {
    char t[4];
    if (cp >= 0xDC80 && cp <= 0xDCFF) { /* an escaped raw byte */
        t[0] = (char)(cp - 0xDC00);
        sb_put(b, t, 1);
    } else if (cp < 0x80) {
        t[0] = (char)cp;
        sb_put(b, t, 1);
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, t, 2);
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, t, 3);
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, t, 4);
    }
}

size_t u8_count(const char *s, size_t n) {
    size_t i = 0, c = 0;
    while (i < n) {
        u8_next(s, n, &i);
        c++;
    }
    return c;
}

size_t u8_offset(const char *s, size_t n, size_t cp_index) {
    size_t i = 0;
    while (cp_index-- && i < n) u8_next(s, n, &i);
    return i;
}

bool py_isspace(int32_t cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* ---------------------------------------------------------------- repr(float) */
/* Python prints the shortest digit string that reads back as the same double, in positional
 * notation when the decimal exponent is in [-4, 16), else as d.ddde+XX. */
void py_float_repr(double d, sbuf *b) {
    if (isnan(d)) {
        sb_puts(b, "nan");
        return;
    }
    if (isinf(d)) {
        sb_puts(b, d < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, d);
        if (strtod(e, NULL) == d) break;
    }
    /* e = [-]D[.DDD]e[+-]XX */
    const char *p = e;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[32];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (neg) sb_putc(b, '-');
    if (exp10 < -4 || exp10 >= 16) {
        sb_putc(b, digits[0]);
        if (nd > 1) {
            sb_putc(b, '.');
            sb_put(b, digits + 1, (size_t)nd - 1);
        }
        sb_printf(b, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        return;
    }
    int point = exp10 + 1; /* digits before the decimal point */
    if (point <= 0) {
        sb_puts(b, "0.");
        for (int i = 0; i < -point; i++) sb_putc(b, '0');
        sb_put(b, digits, (size_t)nd);
    } else if (point >= nd) {
        sb_put(b, digits, (size_t)nd);
        for (int i = nd; i < point; i++) sb_putc(b, '0');
        sb_puts(b, ".0");
    } else {
        sb_put(b, digits, (size_t)point);
        sb_putc(b, '.');
        sb_put(b, digits + point, (size_t)(nd - point));
    }
}
