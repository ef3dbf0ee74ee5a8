/* lexer.c — splits a Jinja template into text and tag tokens exactly as jinja2's Lexer does
 * with trim_blocks=True and lstrip_blocks=True: newlines normalised to \n and one trailing
 * newline dropped; `{%-`/`-%}` (and the {{ }} / {# #} forms) strip all whitespace on that side;
 * `%}` and `#}` eat one following \n; whitespace between a line start and `{%` / `{#` is dropped
 * unless the tag says `{%+`; {% raw %} passes text through. Inside tags it produces names,
 * numbers, strings (with Python escapes) and operators, and ends a tag only when brackets
 * balance, so `{{ {'a': {'b': 1}} }}` works. */
#include "template/tmpl_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    tarena *a;
    const char *name;
    const char *s;
    size_t n, pos;
    int line;
    bool line_starting; /* the last tag ended with a newline (lstrip applies to the next text) */
    token *v;
    size_t nv, cap;
    char balance[TMPL_MAX_NESTING];
    int nbalance;
} lexer;

static int lex_fail(lexer *L, const char *fmt, const char *arg) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg);
    return lp_fail("%s:%d: %s", L->name, L->line, msg);
}

static token *emit(lexer *L, int type, const char *s, size_t len) {
    if (L->nv == L->cap) {
        L->cap = L->cap ? L->cap * 2 : 256;
        L->v = lp_xrealloc(L->v, L->cap * sizeof *L->v);
    }
    token *t = &L->v[L->nv++];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->line = L->line;
    t->s = s;
    t->len = len;
    return t;
}

/* Move to `to`, counting the newlines passed. */
static void advance(lexer *L, size_t to) {
    for (size_t i = L->pos; i < to; i++)
        if (L->s[i] == '\n') L->line++;
    L->pos = to;
}

static size_t skip_space(const char *s, size_t n, size_t i) {
    while (i < n) {
        size_t j = i;
        if (!py_isspace(u8_next(s, n, &j))) break;
        i = j;
    }
    return i;
}

/* Length of `text` without its trailing whitespace (str.rstrip()). */
static size_t rstrip_len(const char *s, size_t n) {
    size_t i = 0, keep = 0;
    while (i < n) {
        int32_t cp = u8_next(s, n, &i);
        if (!py_isspace(cp)) keep = i;
    }
    return keep;
}

/* lstrip_blocks: drop the whitespace between the last line start and the tag. */
static size_t lstrip_len(const lexer *L, const char *s, size_t n) {
    size_t lpos = n;
    while (lpos > 0 && s[lpos - 1] != '\n') lpos--;
    if (lpos == 0 && !L->line_starting) return n;
    if (lpos == n) return n;
    if (skip_space(s, n, lpos) != n) return n;
    return lpos;
}

static bool at(const lexer *L, size_t i, const char *lit) {
    size_t k = strlen(lit);
    return i + k <= L->n && memcmp(L->s + i, lit, k) == 0;
}

/* `{% raw %}` (with optional -/+ signs) starting at i; returns the end of the opening tag or 0. */
static size_t match_raw_open(const lexer *L, size_t i) {
    size_t j = i + 2;
    if (j < L->n && (L->s[j] == '-' || L->s[j] == '+')) j++;
    j = skip_space(L->s, L->n, j);
    if (!at(L, j, "raw")) return 0;
    j = skip_space(L->s, L->n, j + 3);
    if (at(L, j, "-%}")) return skip_space(L->s, L->n, j + 3);
    if (at(L, j, "%}")) return j + 2;
    return 0;
}

static void emit_data(lexer *L, const char *s, size_t n) {
    if (n) emit(L, TK_DATA, s, n);
}

/* Text between the current position and a tag opener at `tag`, with the opener's whitespace
 * control applied. `sign` is '-', '+' or 0; `lstrip` says lstrip_blocks applies to this tag. */
static void emit_text_before(lexer *L, size_t tag, char sign, bool lstrip) {
    const char *text = L->s + L->pos;
    size_t n = tag - L->pos;
    if (sign == '-')
        n = rstrip_len(text, n);
    else if (sign != '+' && lstrip)
        n = lstrip_len(L, text, n);
    emit_data(L, text, n);
    advance(L, tag);
    L->line_starting = false;
}

static int lex_raw(lexer *L) {
    for (size_t i = L->pos; i + 1 < L->n; i++) {
        if (L->s[i] != '{' || L->s[i + 1] != '%') continue;
        size_t j = i + 2;
        char sign = 0;
        if (j < L->n && (L->s[j] == '-' || L->s[j] == '+')) sign = L->s[j++];
        j = skip_space(L->s, L->n, j);
        if (!at(L, j, "endraw")) continue;
        j = skip_space(L->s, L->n, j + 6);
        size_t end;
        if (at(L, j, "+%}")) end = j + 3;
        else if (at(L, j, "-%}")) end = skip_space(L->s, L->n, j + 3);
        else if (at(L, j, "%}")) end = j + 2 + (at(L, j + 2, "\n") ? 1 : 0);
        else continue;
        emit_text_before(L, i, sign, true);
        advance(L, end);
        L->line_starting = L->s[end - 1] == '\n';
        return 0;
    }
    return lex_fail(L, "%s", "missing end of raw directive");
}

static int lex_comment(lexer *L) {
    const char *q = NULL;
    for (size_t i = L->pos; i + 1 < L->n; i++)
        if (L->s[i] == '#' && L->s[i + 1] == '}') {
            q = L->s + i;
            break;
        }
    if (!q) return lex_fail(L, "%s", "missing end of comment tag");
    size_t qi = (size_t)(q - L->s), end;
    if (qi > L->pos && L->s[qi - 1] == '-')
        end = skip_space(L->s, L->n, qi + 2);
    else if (qi > L->pos && L->s[qi - 1] == '+')
        end = qi + 2;
    else
        end = qi + 2 + (at(L, qi + 2, "\n") ? 1 : 0);
    advance(L, end);
    L->line_starting = L->s[end - 1] == '\n';
    return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

static int hexval(char c) {
    if (is_digit(c)) return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool is_base_digit(char c, int base) {
    int v = hexval(c);
    return v >= 0 && v < base;
}

/* Digits with single underscores between them ("1_000"); returns the end or `i` if none. */
static size_t scan_digits(const char *s, size_t n, size_t i, int base) {
    size_t j = i;
    while (j < n) {
        if (is_base_digit(s[j], base)) j++;
        else if (s[j] == '_' && j > i && j + 1 < n && is_base_digit(s[j + 1], base)) j++;
        else break;
    }
    return j;
}

static void strip_underscores(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++)
        if (s[i] != '_') out[k++] = s[i];
    out[k] = 0;
}

/* float_re: digits ('.' digits)? exponent | digits '.' digits, not right after a '.'. */
static size_t scan_float(const lexer *L, size_t i) {
    if (i > 0 && L->s[i - 1] == '.') return 0;
    size_t j = scan_digits(L->s, L->n, i, 10);
    if (j == i) return 0;
    bool frac = false;
    if (j < L->n && L->s[j] == '.') {
        size_t k = scan_digits(L->s, L->n, j + 1, 10);
        if (k > j + 1) {
            j = k;
            frac = true;
        }
    }
    if (j < L->n && (L->s[j] == 'e' || L->s[j] == 'E')) {
        size_t k = j + 1;
        if (k < L->n && (L->s[k] == '+' || L->s[k] == '-')) k++;
        size_t m = scan_digits(L->s, L->n, k, 10);
        if (m > k) return m;
    }
    return frac ? j : 0;
}

static int lex_number(lexer *L, size_t i, size_t *end) {
    char buf[128];
    size_t f = scan_float(L, i);
    if (f) {
        strip_underscores(L->s + i, f - i, buf, sizeof buf);
        token *t = emit(L, TK_FLOAT, L->s + i, f - i);
        t->fval = strtod(buf, NULL);
        *end = f;
        return 0;
    }
    int base = 10;
    size_t start = i, j;
    if (L->s[i] == '0' && i + 1 < L->n && strchr("bBoOxX", L->s[i + 1])) {
        char p = (char)(L->s[i + 1] | 0x20);
        base = p == 'b' ? 2 : p == 'o' ? 8 : 16;
        start = i + 2;
        if (start < L->n && L->s[start] == '_') start++;
        j = scan_digits(L->s, L->n, start, base);
        if (j == start) return lex_fail(L, "%s", "invalid integer literal");
    } else if (L->s[i] == '0') {
        j = i + 1; /* "0", "0_0": Jinja reads "012" as 0 then 12 */
        while (j + 1 < L->n && L->s[j] == '_' && L->s[j + 1] == '0') j += 2;
    } else {
        j = scan_digits(L->s, L->n, i, 10);
    }
    strip_underscores(L->s + start, j - start, buf, sizeof buf);
    errno = 0;
    char *e;
    long long v = strtoll(buf, &e, base);
    if (errno == ERANGE || j - start >= sizeof buf) return lex_fail(L, "%s", "integer literal too large");
    token *t = emit(L, TK_INT, L->s + i, j - i);
    t->ival = v;
    *end = j;
    return 0;
}

/* Decode a string literal body with Python's unicode-escape rules; unknown escapes stay as
 * written (Python keeps "\q" as backslash + q). */
static int decode_string(lexer *L, const char *s, size_t n, sbuf *out) {
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\' || i + 1 >= n) {
            sb_putc(out, s[i++]);
            continue;
        }
        char c = s[i + 1];
        i += 2;
        const char *simple = strchr("\\'\"abfnrtv\n", c);
        if (simple && c) {
            static const char from[] = "\\'\"abfnrtv";
            static const char to[] = "\\'\"\a\b\f\n\r\t\v";
            if (c != '\n') sb_putc(out, to[strchr(from, c) - from]); /* backslash-newline: nothing */
            continue;
        }
        if (c >= '0' && c <= '7') {
            int v = c - '0', k = 1;
            while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') v = v * 8 + (s[i++] - '0'), k++;
            u8_put(out, v);
            continue;
        }
        int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
        if (digits) {
            long v = 0;
            for (int k = 0; k < digits; k++) {
                int h = i + (size_t)k < n ? hexval(s[i + (size_t)k]) : -1;
                if (h < 0) return lex_fail(L, "%s", "truncated \\x, \\u or \\U escape in string literal");
                v = v * 16 + h;
            }
            i += (size_t)digits;
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                return lex_fail(L, "%s", "string literal escape is not a valid code point");
            u8_put(out, (int32_t)v);
            continue;
        }
        if (c == 'N') return lex_fail(L, "%s", "\\N{...} escapes are not supported");
        sb_putc(out, '\\');
        sb_putc(out, c);
    }
    return 0;
}

static int lex_string(lexer *L, size_t i, size_t *end) {
    char q = L->s[i];
    size_t j = i + 1;
    while (j < L->n && L->s[j] != q) j += L->s[j] == '\\' ? 2 : 1;
    if (j >= L->n) return lex_fail(L, "%s", "unterminated string literal");
    sbuf b = {0};
    int line = L->line;
    if (decode_string(L, L->s + i + 1, j - i - 1, &b) < 0) {
        sb_free(&b);
        return -1;
    }
    token *t = emit(L, TK_STRING, ta_strndup(L->a, b.p ? b.p : "", b.n), b.n);
    t->line = line;
    sb_free(&b);
    *end = j + 1;
    return 0;
}

static const char *const two_char_ops[] = {"//", "**", "==", "!=", ">=", "<="};

static int lex_operator(lexer *L, size_t i, size_t *end) {
    for (size_t k = 0; k < sizeof two_char_ops / sizeof *two_char_ops; k++)
        if (at(L, i, two_char_ops[k])) {
            emit(L, TK_OP, L->s + i, 2);
            *end = i + 2;
            return 0;
        }
    char c = L->s[i];
    if (!c || !strchr("+-/*%~[](){}<>=.:|,;", c)) {
        char what[8] = {c, 0};
        return lex_fail(L, "unexpected character '%s' in tag", what);
    }
    if (c == '(' || c == '[' || c == '{') {
        if (L->nbalance == TMPL_MAX_NESTING) return lex_fail(L, "%s", "brackets nested too deeply");
        L->balance[L->nbalance++] = c == '(' ? ')' : c == '[' ? ']' : '}';
    } else if (c == ')' || c == ']' || c == '}') {
        if (!L->nbalance || L->balance[L->nbalance - 1] != c) {
            char what[8] = {c, 0};
            return lex_fail(L, "unexpected '%s'", what);
        }
        L->nbalance--;
    }
    emit(L, TK_OP, L->s + i, 1);
    *end = i + 1;
    return 0;
}

/* The end of a {% %} or {{ }} tag at i, with its whitespace control; 0 if not there. */
static size_t match_tag_end(const lexer *L, size_t i, bool block) {
    if (block) {
        if (at(L, i, "+%}")) return i + 3;
        if (at(L, i, "-%}")) return skip_space(L->s, L->n, i + 3);
        if (at(L, i, "%}")) return i + 2 + (at(L, i + 2, "\n") ? 1 : 0);
    } else {
        if (at(L, i, "-}}")) return skip_space(L->s, L->n, i + 3);
        if (at(L, i, "}}")) return i + 2;
    }
    return 0;
}

static int lex_tag(lexer *L, bool block) {
    L->nbalance = 0;
    for (;;) {
        size_t i = L->pos, end;
        if (i >= L->n) return lex_fail(L, "%s", block ? "unexpected end of template, expected '%}'" : "unexpected end of template, expected '}}'");
        if (!L->nbalance && (end = match_tag_end(L, i, block))) {
            emit(L, block ? TK_BLOCK_END : TK_VAR_END, NULL, 0);
            advance(L, end);
            L->line_starting = L->s[end - 1] == '\n';
            return 0;
        }
        char c = L->s[i];
        if ((end = skip_space(L->s, L->n, i)) > i) {
            /* whitespace between tokens */
        } else if (is_digit(c)) {
            if (lex_number(L, i, &end) < 0) return -1;
        } else if (is_name_start(c)) {
            end = i;
            while (end < L->n && is_name_char(L->s[end])) end++;
            emit(L, TK_NAME, L->s + i, end - i);
        } else if (c == '\'' || c == '"') {
            if (lex_string(L, i, &end) < 0) return -1;
        } else {
            if (lex_operator(L, i, &end) < 0) return -1;
        }
        advance(L, end);
    }
}

/* The next `{{`, `{%` or `{#` at or after pos; n if none. */
static size_t find_tag(const lexer *L) {
    for (size_t i = L->pos; i + 1 < L->n; i++) {
        const char *p = memchr(L->s + i, '{', L->n - i - 1);
        if (!p) return L->n;
        i = (size_t)(p - L->s);
        char k = L->s[i + 1];
        if (k == '{' || k == '%' || k == '#') return i;
    }
    return L->n;
}

static int lex_root(lexer *L) {
    while (L->pos < L->n) {
        size_t tag = find_tag(L);
        if (tag >= L->n) {
            emit_data(L, L->s + L->pos, L->n - L->pos);
            advance(L, L->n);
            break;
        }
        char kind = L->s[tag + 1];
        char sign = tag + 2 < L->n && (L->s[tag + 2] == '-' || L->s[tag + 2] == '+') ? L->s[tag + 2] : 0;
        size_t raw_end = kind == '%' ? match_raw_open(L, tag) : 0;
        emit_text_before(L, tag, sign, kind != '{');
        if (raw_end) {
            advance(L, raw_end);
            L->line_starting = L->s[raw_end - 1] == '\n';
            if (lex_raw(L) < 0) return -1;
            continue;
        }
        advance(L, tag + 2 + (sign ? 1 : 0));
        if (kind == '#') {
            if (lex_comment(L) < 0) return -1;
            continue;
        }
        emit(L, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, NULL, 0);
        if (lex_tag(L, kind == '%') < 0) return -1;
    }
    return 0;
}

/* Jinja normalises \r\n and \r to \n and drops one trailing newline before lexing. */
static char *normalize_newlines(tarena *a, const char *src, size_t *n_out) {
    size_t n = strlen(src), k = 0;
    char *d = ta_alloc(a, n + 1);
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            d[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            d[k++] = src[i];
        }
    }
    if (k && d[k - 1] == '\n') k--;
    d[k] = 0;
    *n_out = k;
    return d;
}

int tmpl_lex(tarena *a, const char *name, const char *src, token **toks, size_t *ntoks) {
    lexer L = {.a = a, .name = name, .line = 1, .line_starting = true};
    L.s = normalize_newlines(a, src, &L.n);
    if (lex_root(&L) < 0) {
        free(L.v);
        return -1;
    }
    emit(&L, TK_EOF, NULL, 0);
    *toks = L.v;
    *ntoks = L.nv;
    return 0;
}
