/* strings.c — Python str behaviour for templates: the str methods templates call
 * (strip/split/startswith/replace/...), case mapping by code point (utf8proc), and printf-style
 * `%` formatting. Positions and lengths are in code points, as in Python. */
#include "template/tmpl_int.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static int need_str(rstate *r, const char *what, const tv *v) {
    if (tv_is_str(v)) return 0;
    if (v->kind == TV_UNDEF) return rerr_undefined(r, v);
    return rerr(r, "%s: expected a string, got '%s'", what, tv_typename(v));
}

static const char *S(const tv *v) { return tv_sdata(v); }
static size_t L(const tv *v) { return tv_slen(v); }

/* ---------------------------------------------------------------- case mapping */
static bool is_cased(int32_t cp) {
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

/* Jinja's title filter starts a word after '-', whitespace, or an opening bracket. */
static bool jinja_word_break(int32_t cp) { return py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<'; }

/* Python maps a few code points to several (SpecialCasing.txt); utf8proc only knows 1:1. */
static const struct {
    int32_t cp;
    const char *upper, *title, *lower;
} special_casing[] = {
    {0x00DF, "SS", "Ss", NULL},          {0x0130, NULL, NULL, "i\xCC\x87"},   {0x0149, "\xCA\xBCN", "\xCA\xBCN", NULL},
    {0xFB00, "FF", "Ff", NULL},          {0xFB01, "FI", "Fi", NULL},          {0xFB02, "FL", "Fl", NULL},
    {0xFB03, "FFI", "Ffi", NULL},        {0xFB04, "FFL", "Ffl", NULL},        {0xFB05, "ST", "St", NULL},
    {0xFB06, "ST", "St", NULL},
};

typedef enum { TO_LOWER, TO_UPPER, TO_TITLE } case_op;

static void put_case(sbuf *b, int32_t cp, case_op op, bool final_sigma) {
    for (size_t i = 0; i < sizeof special_casing / sizeof *special_casing; i++) {
        if (special_casing[i].cp != cp) continue;
        const char *m = op == TO_UPPER ? special_casing[i].upper : op == TO_TITLE ? special_casing[i].title : special_casing[i].lower;
        if (m) {
            sb_puts(b, m);
            return;
        }
    }
    if (cp == 0x03A3 && op == TO_LOWER && final_sigma) cp = 0x03C2;
    else if (!(cp >= 0xDC80 && cp <= 0xDCFF))
        cp = op == TO_UPPER ? utf8proc_toupper(cp) : op == TO_TITLE ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
    u8_put(b, cp);
}

int str_case(rstate *r, const tv *s, case_mode mode, tv *out) {
    if (need_str(r, "case conversion", s) < 0) return -1;
    sbuf b = {0};
    const char *p = S(s);
    size_t n = L(s), i = 0;
    bool first = true, prev_cased = false, at_word_start = true;
    while (i < n) {
        int32_t cp = u8_next(p, n, &i);
        size_t j = i;
        bool next_cased = i < n && is_cased(u8_next(p, n, &j));
        bool final_sigma = prev_cased && !next_cased; /* Greek capital sigma ending a word */
        switch (mode) {
        case CASE_LOWER: put_case(&b, cp, TO_LOWER, final_sigma); break;
        case CASE_UPPER: put_case(&b, cp, TO_UPPER, false); break;
        case CASE_CAPITALIZE: put_case(&b, cp, first ? TO_TITLE : TO_LOWER, final_sigma); break;
        case CASE_TITLE: put_case(&b, cp, prev_cased ? TO_LOWER : TO_TITLE, final_sigma); break;
        case CASE_TITLE_JINJA:
            if (jinja_word_break(cp)) u8_put(&b, cp);
            else put_case(&b, cp, at_word_start ? TO_UPPER : TO_LOWER, final_sigma);
            break;
        }
        prev_cased = is_cased(cp);
        at_word_start = jinja_word_break(cp);
        first = false;
    }
    *out = tv_sbuf(r, &b);
    return 0;
}

/* ---------------------------------------------------------------- strip, replace, split */
static bool in_chars(int32_t cp, const tv *chars) {
    if (!arg_given(chars)) return py_isspace(cp);
    const char *c = S(chars);
    size_t n = L(chars), i = 0;
    while (i < n)
        if (u8_next(c, n, &i) == cp) return true;
    return false;
}

int str_strip(rstate *r, const tv *s, const tv *chars, int sides, tv *out) {
    if (need_str(r, "strip", s) < 0) return -1;
    if (arg_given(chars) && need_str(r, "strip characters", chars) < 0) return -1;
    const char *p = S(s);
    size_t n = L(s), start = 0, end = n, i = 0;
    if (sides & STRIP_LEFT) {
        while (i < n) {
            size_t j = i;
            if (!in_chars(u8_next(p, n, &j), chars)) break;
            i = j;
        }
        start = i;
    }
    if (sides & STRIP_RIGHT) {
        end = start;
        for (i = start; i < n;) {
            int32_t cp = u8_next(p, n, &i);
            if (!in_chars(cp, chars)) end = i;
        }
    }
    *out = start == 0 && end == n ? *s : tv_str(r, p + start, end - start);
    return 0;
}

static const char *find_bytes(const char *hay, size_t nh, const char *needle, size_t nn) {
    if (!nn) return hay;
    for (size_t i = 0; i + nn <= nh; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, nn)) return hay + i;
    return NULL;
}

static const char *rfind_bytes(const char *hay, size_t nh, const char *needle, size_t nn) {
    if (nn > nh) return NULL;
    for (size_t i = nh - nn + 1; i-- > 0;)
        if (!memcmp(hay + i, needle, nn)) return hay + i;
    return NULL;
}

int str_replace(rstate *r, const tv *s, const tv *old, const tv *repl, long long count, tv *out) {
    if (need_str(r, "replace", s) < 0 || need_str(r, "replace", old) < 0 || need_str(r, "replace", repl) < 0) return -1;
    const char *p = S(s), *o = S(old);
    size_t n = L(s), no = L(old);
    sbuf b = {0};
    if (count < 0) count = (long long)(n + 1);
    if (!no) { /* "" matches before every code point and at the end */
        size_t i = 0;
        while (count > 0) {
            sb_put(&b, S(repl), L(repl));
            count--;
            if (i >= n) break;
            size_t start = i;
            u8_next(p, n, &i);
            sb_put(&b, p + start, i - start);
        }
        sb_put(&b, p + i, n - i);
    } else {
        size_t i = 0;
        while (count > 0) {
            const char *hit = find_bytes(p + i, n - i, o, no);
            if (!hit) break;
            size_t at = (size_t)(hit - p);
            sb_put(&b, p + i, at - i);
            sb_put(&b, S(repl), L(repl));
            i = at + no;
            count--;
            if (b.n > TMPL_MAX_STRING) break;
        }
        sb_put(&b, p + i, n - i);
    }
    if (b.n > TMPL_MAX_STRING) {
        sb_free(&b);
        return rerr(r, "%s", "replace: result too large");
    }
    *out = tv_sbuf(r, &b);
    return 0;
}

typedef struct {
    tv *v;
    int n, cap;
} tvvec;

static void tvvec_push(rstate *r, tvvec *vec, tv x) {
    if (vec->n == vec->cap) {
        int cap = vec->cap ? vec->cap * 2 : 8;
        tv *nv = ta_alloc(&r->a, (size_t)cap * sizeof *nv);
        if (vec->n) memcpy(nv, vec->v, (size_t)vec->n * sizeof *nv);
        vec->v = nv;
        vec->cap = cap;
    }
    vec->v[vec->n++] = x;
}

/* str.split / str.rsplit. Whitespace mode (sep None) drops empty pieces. */
static int split(rstate *r, const tv *s, const tv *sep, long long maxsplit, bool from_right, tv *out) {
    const char *p = S(s);
    size_t n = L(s);
    tvvec parts = {0};
    if (arg_given(sep)) {
        if (need_str(r, "split separator", sep) < 0) return -1;
        if (!L(sep)) return rerr(r, "%s", "split: empty separator");
        size_t ns = L(sep);
        if (!from_right) {
            size_t i = 0;
            for (;;) {
                const char *hit = maxsplit != 0 ? find_bytes(p + i, n - i, S(sep), ns) : NULL;
                if (!hit) break;
                tvvec_push(r, &parts, tv_str(r, p + i, (size_t)(hit - p) - i));
                i = (size_t)(hit - p) + ns;
                if (maxsplit > 0) maxsplit--;
            }
            tvvec_push(r, &parts, tv_str(r, p + i, n - i));
        } else {
            size_t end = n;
            for (;;) {
                const char *hit = maxsplit != 0 ? rfind_bytes(p, end, S(sep), ns) : NULL;
                if (!hit) break;
                size_t at = (size_t)(hit - p);
                tvvec_push(r, &parts, tv_str(r, p + at + ns, end - at - ns));
                end = at;
                if (maxsplit > 0) maxsplit--;
            }
            tvvec_push(r, &parts, tv_str(r, p, end));
        }
    } else {
        /* collect whitespace-separated words with their byte spans */
        size_t i = 0;
        size_t *spans = ta_alloc(&r->a, (n + 1) * 2 * sizeof *spans);
        int nw = 0;
        while (i < n) {
            size_t j = i;
            if (py_isspace(u8_next(p, n, &j))) {
                i = j;
                continue;
            }
            size_t start = i;
            while (i < n) {
                j = i;
                if (py_isspace(u8_next(p, n, &j))) break;
                i = j;
            }
            spans[2 * nw] = start;
            spans[2 * nw + 1] = i;
            nw++;
        }
        /* With maxsplit, the unsplit rest keeps its inner and outer whitespace on the open side. */
        int first = 0, last = nw;
        if (maxsplit >= 0 && maxsplit < nw) {
            if (from_right) first = nw - (int)maxsplit;
            else last = (int)maxsplit;
        }
        if (first > 0) tvvec_push(r, &parts, tv_str(r, p, spans[2 * (first - 1) + 1]));
        for (int k = first; k < last; k++) tvvec_push(r, &parts, tv_str(r, p + spans[2 * k], spans[2 * k + 1] - spans[2 * k]));
        if (last < nw) tvvec_push(r, &parts, tv_str(r, p + spans[2 * last], n - spans[2 * last]));
        return tv_list_from(r, parts.v, parts.n, out);
    }
    if (from_right) /* pieces were collected right to left */
        for (int a = 0, z = parts.n - 1; a < z; a++, z--) {
            tv t = parts.v[a];
            parts.v[a] = parts.v[z];
            parts.v[z] = t;
        }
    return tv_list_from(r, parts.v, parts.n, out);
}

static bool is_line_break(int32_t cp) {
    return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || (cp >= 0x1C && cp <= 0x1E) || cp == 0x85 ||
           cp == 0x2028 || cp == 0x2029;
}

int str_splitlines(rstate *r, const tv *s, bool keepends, tv **lines, int *n) {
    if (need_str(r, "splitlines", s) < 0) return -1;
    const char *p = S(s);
    size_t len = L(s), i = 0, start = 0;
    tvvec out = {0};
    while (i < len) {
        size_t at = i;
        int32_t cp = u8_next(p, len, &i);
        if (!is_line_break(cp)) continue;
        if (cp == '\r' && i < len && p[i] == '\n') i++;
        tvvec_push(r, &out, tv_str(r, p + start, (keepends ? i : at) - start));
        start = i;
    }
    if (start < len) tvvec_push(r, &out, tv_str(r, p + start, len - start));
    *lines = out.v;
    *n = out.n;
    return 0;
}

/* ---------------------------------------------------------------- str methods */
static int m_strip_sides(rstate *r, const tv *self, targs *a, tv *out, int sides, const char *name) {
    BIND(name, "chars");
    return str_strip(r, self, &arg[0], sides, out);
}
static int m_strip(rstate *r, const tv *self, targs *a, tv *out) { return m_strip_sides(r, self, a, out, STRIP_BOTH, "strip"); }
static int m_lstrip(rstate *r, const tv *self, targs *a, tv *out) { return m_strip_sides(r, self, a, out, STRIP_LEFT, "lstrip"); }
static int m_rstrip(rstate *r, const tv *self, targs *a, tv *out) { return m_strip_sides(r, self, a, out, STRIP_RIGHT, "rstrip"); }

static int m_split_dir(rstate *r, const tv *self, targs *a, tv *out, bool right) {
    BIND(right ? "rsplit" : "split", "sep", "maxsplit");
    long long maxsplit = -1;
    if (arg_given(&arg[1])) {
        if (!tv_is_int(&arg[1])) return rerr(r, "%s", "split: maxsplit must be an integer");
        maxsplit = tv_ival(&arg[1]);
    }
    return split(r, self, &arg[0], maxsplit, right, out);
}
static int m_split(rstate *r, const tv *self, targs *a, tv *out) { return m_split_dir(r, self, a, out, false); }
static int m_rsplit(rstate *r, const tv *self, targs *a, tv *out) { return m_split_dir(r, self, a, out, true); }

static int m_affix(rstate *r, const tv *self, targs *a, tv *out, bool suffix) {
    BIND(suffix ? "endswith" : "startswith", "prefix");
    tv *cands = &arg[0];
    int nc = 1;
    if (tv_is_list(&arg[0]) && tv_iterate(r, &arg[0], &cands, &nc) < 0) return -1;
    bool hit = false;
    for (int i = 0; i < nc && !hit; i++) {
        if (need_str(r, suffix ? "endswith" : "startswith", &cands[i]) < 0) return -1;
        size_t k = L(&cands[i]), n = L(self);
        hit = k <= n && !memcmp(S(self) + (suffix ? n - k : 0), S(&cands[i]), k);
    }
    *out = tv_bool(hit);
    return 0;
}
static int m_startswith(rstate *r, const tv *self, targs *a, tv *out) { return m_affix(r, self, a, out, false); }
static int m_endswith(rstate *r, const tv *self, targs *a, tv *out) { return m_affix(r, self, a, out, true); }

static int m_replace(rstate *r, const tv *self, targs *a, tv *out) {
    BIND("replace", "old", "new", "count");
    if (arg[0].kind == TV_ABSENT || arg[1].kind == TV_ABSENT) return rerr(r, "%s", "replace() needs old and new");
    long long count = arg_given(&arg[2]) && tv_is_int(&arg[2]) ? tv_ival(&arg[2]) : -1;
    return str_replace(r, self, &arg[0], &arg[1], count, out);
}

static int m_case(rstate *r, const tv *self, targs *a, tv *out, case_mode mode, const char *name) {
    if (no_args(r, name, a) < 0) return -1;
    return str_case(r, self, mode, out);
}
static int m_upper(rstate *r, const tv *self, targs *a, tv *out) { return m_case(r, self, a, out, CASE_UPPER, "upper"); }
static int m_lower(rstate *r, const tv *self, targs *a, tv *out) { return m_case(r, self, a, out, CASE_LOWER, "lower"); }
static int m_title(rstate *r, const tv *self, targs *a, tv *out) { return m_case(r, self, a, out, CASE_TITLE, "title"); }
static int m_capitalize(rstate *r, const tv *self, targs *a, tv *out) { return m_case(r, self, a, out, CASE_CAPITALIZE, "capitalize"); }

/* find / rfind / index / rindex / count: code point positions. */
static int m_search(rstate *r, const tv *self, targs *a, tv *out, const char *name, bool right, bool must, bool count) {
    BIND(name, "sub");
    if (need_str(r, name, &arg[0]) < 0) return -1;
    const char *p = S(self), *sub = S(&arg[0]);
    size_t n = L(self), ns = L(&arg[0]);
    if (count) {
        long long c = 0;
        if (!ns) c = (long long)u8_count(p, n) + 1;
        else
            for (const char *h = p; (h = find_bytes(h, n - (size_t)(h - p), sub, ns)); h += ns) c++;
        *out = tv_int(r, c);
        return 0;
    }
    const char *hit = right ? rfind_bytes(p, n, sub, ns) : find_bytes(p, n, sub, ns);
    if (!hit && must) return rerr(r, "%s", "substring not found");
    *out = tv_int(r, hit ? (long long)u8_count(p, (size_t)(hit - p)) : -1);
    return 0;
}
static int m_find(rstate *r, const tv *s, targs *a, tv *o) { return m_search(r, s, a, o, "find", false, false, false); }
static int m_rfind(rstate *r, const tv *s, targs *a, tv *o) { return m_search(r, s, a, o, "rfind", true, false, false); }
static int m_index(rstate *r, const tv *s, targs *a, tv *o) { return m_search(r, s, a, o, "index", false, true, false); }
static int m_rindex(rstate *r, const tv *s, targs *a, tv *o) { return m_search(r, s, a, o, "rindex", true, true, false); }
static int m_count(rstate *r, const tv *s, targs *a, tv *o) { return m_search(r, s, a, o, "count", false, false, true); }

static int m_join(rstate *r, const tv *self, targs *a, tv *out) {
    BIND("join", "iterable");
    tv *items;
    int n;
    if (tv_iterate(r, &arg[0], &items, &n) < 0) return -1;
    sbuf b = {0};
    for (int i = 0; i < n; i++) {
        if (!tv_is_str(&items[i])) {
            sb_free(&b);
            return rerr(r, "join: sequence item %d: expected str instance, %s found", i, tv_typename(&items[i]));
        }
        if (i) sb_put(&b, S(self), L(self));
        sb_put(&b, S(&items[i]), L(&items[i]));
    }
    *out = tv_sbuf(r, &b);
    return 0;
}

static int m_splitlines(rstate *r, const tv *self, targs *a, tv *out) {
    BIND("splitlines", "keepends");
    tv *lines;
    int n;
    if (str_splitlines(r, self, tv_truthy(&arg[0]), &lines, &n) < 0) return -1;
    return tv_list_from(r, lines, n, out);
}

static int m_affix_remove(rstate *r, const tv *self, targs *a, tv *out, bool suffix) {
    BIND(suffix ? "removesuffix" : "removeprefix", "affix");
    if (need_str(r, "removeprefix", &arg[0]) < 0) return -1;
    size_t k = L(&arg[0]), n = L(self);
    if (k && k <= n && !memcmp(S(self) + (suffix ? n - k : 0), S(&arg[0]), k))
        *out = tv_str(r, S(self) + (suffix ? 0 : k), n - k);
    else
        *out = *self;
    return 0;
}
static int m_removeprefix(rstate *r, const tv *s, targs *a, tv *o) { return m_affix_remove(r, s, a, o, false); }
static int m_removesuffix(rstate *r, const tv *s, targs *a, tv *o) { return m_affix_remove(r, s, a, o, true); }

/* isdigit & co: true when non-empty and every code point qualifies. */
typedef bool (*cp_pred)(int32_t);
static bool cp_digit(int32_t c) { return utf8proc_category(c) == UTF8PROC_CATEGORY_ND; }
static bool cp_alpha(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}
static bool cp_alnum(int32_t c) { return cp_alpha(c) || cp_digit(c); }
static int m_pred(rstate *r, const tv *self, targs *a, tv *out, cp_pred pred, const char *name) {
    if (no_args(r, name, a) < 0) return -1;
    const char *p = S(self);
    size_t n = L(self), i = 0;
    bool ok = n > 0;
    while (ok && i < n) ok = pred(u8_next(p, n, &i));
    *out = tv_bool(ok);
    return 0;
}
static int m_isdigit(rstate *r, const tv *s, targs *a, tv *o) { return m_pred(r, s, a, o, cp_digit, "isdigit"); }
static int m_isalpha(rstate *r, const tv *s, targs *a, tv *o) { return m_pred(r, s, a, o, cp_alpha, "isalpha"); }
static int m_isalnum(rstate *r, const tv *s, targs *a, tv *o) { return m_pred(r, s, a, o, cp_alnum, "isalnum"); }
static int m_isspace(rstate *r, const tv *s, targs *a, tv *o) { return m_pred(r, s, a, o, py_isspace, "isspace"); }

/* islower / isupper: has cased characters and none of the other case. */
static int m_iscase(rstate *r, const tv *self, targs *a, tv *out, bool upper) {
    if (no_args(r, upper ? "isupper" : "islower", a) < 0) return -1;
    const char *p = S(self);
    size_t n = L(self), i = 0;
    bool cased = false, ok = true;
    while (i < n && ok) {
        int32_t cp = u8_next(p, n, &i);
        utf8proc_category_t k = utf8proc_category(cp);
        if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LT) ok = upper, cased = true;
        else if (k == UTF8PROC_CATEGORY_LL) ok = !upper, cased = true;
    }
    *out = tv_bool(ok && cased);
    return 0;
}
static int m_islower(rstate *r, const tv *s, targs *a, tv *o) { return m_iscase(r, s, a, o, false); }
static int m_isupper(rstate *r, const tv *s, targs *a, tv *o) { return m_iscase(r, s, a, o, true); }

static const builtin str_methods[] = {
    {"strip", m_strip},           {"lstrip", m_lstrip},       {"rstrip", m_rstrip},
    {"split", m_split},           {"rsplit", m_rsplit},       {"startswith", m_startswith},
    {"endswith", m_endswith},     {"replace", m_replace},     {"upper", m_upper},
    {"lower", m_lower},           {"title", m_title},         {"capitalize", m_capitalize},
    {"find", m_find},             {"rfind", m_rfind},         {"index", m_index},
    {"rindex", m_rindex},         {"count", m_count},         {"join", m_join},
    {"splitlines", m_splitlines}, {"removeprefix", m_removeprefix}, {"removesuffix", m_removesuffix},
    {"isdigit", m_isdigit},       {"isalpha", m_isalpha},     {"isalnum", m_isalnum},
    {"isspace", m_isspace},       {"islower", m_islower},     {"isupper", m_isupper},
};

const builtin *tmpl_find_str_method(const char *name) {
    for (size_t i = 0; i < sizeof str_methods / sizeof *str_methods; i++)
        if (!strcmp(str_methods[i].name, name)) return &str_methods[i];
    return NULL;
}

/* ---------------------------------------------------------------- printf-style formatting */
typedef struct {
    rstate *r;
    tv *args;
    int nargs, next;
    const tv *mapping; /* `%(name)s` source, or NULL */
} fmt_state;

static int next_arg(fmt_state *F, const char *key, size_t klen, tv *out) {
    if (key) {
        if (!F->mapping) return rerr(F->r, "%s", "format requires a mapping");
        json_t *v = json_object_getn(F->mapping->j, key, klen);
        if (!v) return rerr(F->r, "format: key '%.*s' not found", (int)klen, key);
        *out = tv_of(v);
        return 0;
    }
    if (F->next >= F->nargs) return rerr(F->r, "%s", "not enough arguments for format string");
    *out = F->args[F->next++];
    return 0;
}

/* Pad `s` to `width` code points (left-justified with '-'). */
static void pad_into(sbuf *b, const char *s, size_t n, long width, bool left) {
    long len = (long)u8_count(s, n);
    if (!left)
        for (long k = len; k < width; k++) sb_putc(b, ' ');
    sb_put(b, s, n);
    if (left)
        for (long k = len; k < width; k++) sb_putc(b, ' ');
}

static int format_one(fmt_state *F, sbuf *b, const char *flags, long width, long prec, char conv, const tv *v) {
    rstate *r = F->r;
    bool left = strchr(flags, '-') != NULL;
    if (conv == 's' || conv == 'r') {
        sbuf s = {0};
        if ((conv == 's' ? tv_str_into(r, v, &s) : tv_repr_into(r, v, &s)) < 0) return -1;
        size_t n = s.n;
        if (prec >= 0) n = u8_offset(s.p ? s.p : "", s.n, (size_t)prec);
        pad_into(b, s.p ? s.p : "", n, width, left);
        sb_free(&s);
        return 0;
    }
    if (conv == 'c') {
        sbuf s = {0};
        if (tv_is_int(v)) u8_put(&s, (int32_t)tv_ival(v));
        else if (tv_is_str(v) && u8_count(tv_sdata(v), tv_slen(v)) == 1) sb_put(&s, tv_sdata(v), tv_slen(v));
        else return rerr(r, "%s", "%c requires an int or a single character");
        pad_into(b, s.p, s.n, width, left);
        sb_free(&s);
        return 0;
    }
    if (!tv_is_num(v)) return rerr(r, "%%%c format: a real number is required, not %s", conv, tv_typename(v));
    char spec[32], num[512];
    int k = snprintf(spec, sizeof spec, "%%%s", flags);
    if (width >= 0) k += snprintf(spec + k, sizeof spec - (size_t)k, "%ld", width > 200 ? 200 : width);
    if (prec >= 0) k += snprintf(spec + k, sizeof spec - (size_t)k, ".%ld", prec > 100 ? 100 : prec);
    if (strchr("diuxXo", conv)) {
        long long iv = tv_is_int(v) ? tv_ival(v) : (long long)tv_num(v);
        snprintf(spec + k, sizeof spec - (size_t)k, "ll%c", conv == 'u' ? 'd' : conv);
        snprintf(num, sizeof num, spec, iv);
    } else if (strchr("eEfFgG", conv)) {
        snprintf(spec + k, sizeof spec - (size_t)k, "%c", conv);
        snprintf(num, sizeof num, spec, tv_num(v));
    } else {
        return rerr(r, "unsupported format character '%c'", conv);
    }
    sb_puts(b, num);
    return 0;
}

int tmpl_percent_format(rstate *r, const tv *fmt, const tv *args, tv *out) {
    fmt_state F = {.r = r};
    if (tv_is_list(args) && tv_is_tuple(r, args->j)) {
        if (tv_iterate(r, args, &F.args, &F.nargs) < 0) return -1;
    } else {
        F.args = (tv *)args;
        F.nargs = 1;
        if (tv_is_dict(args)) F.mapping = args;
    }
    const char *p = S(fmt);
    size_t n = L(fmt);
    sbuf b = {0};
    for (size_t i = 0; i < n;) {
        if (p[i] != '%') {
            sb_putc(&b, p[i++]);
            continue;
        }
        i++;
        const char *key = NULL;
        size_t klen = 0;
        if (i < n && p[i] == '(') {
            size_t e = i + 1;
            while (e < n && p[e] != ')') e++;
            if (e >= n) goto bad;
            key = p + i + 1;
            klen = e - i - 1;
            i = e + 1;
        }
        char flags[8] = {0};
        int nf = 0;
        while (i < n && strchr("-+ 0#", p[i]) && nf < 7) flags[nf++] = p[i++];
        long width = -1, prec = -1;
        while (i < n && p[i] >= '0' && p[i] <= '9') width = (width < 0 ? 0 : width) * 10 + (p[i++] - '0');
        if (i < n && p[i] == '.') {
            prec = 0;
            for (i++; i < n && p[i] >= '0' && p[i] <= '9';) prec = prec * 10 + (p[i++] - '0');
        }
        if (i >= n || width > 100000 || prec > 100000) goto bad;
        char conv = p[i++];
        if (conv == '%') {
            sb_putc(&b, '%');
            continue;
        }
        tv v;
        if (next_arg(&F, key, klen, &v) < 0 || format_one(&F, &b, flags, width, prec, conv, &v) < 0) {
            sb_free(&b);
            return -1;
        }
    }
    /* Python skips this check when the argument supports indexing (a dict or a list) */
    if (!F.mapping && !tv_is_list(args) && F.next < F.nargs) {
        sb_free(&b);
        return rerr(r, "%s", "not all arguments converted during string formatting");
    }
    *out = tv_sbuf(r, &b);
    return 0;
bad:
    sb_free(&b);
    return rerr(r, "%s", "incomplete or invalid format string");
}
