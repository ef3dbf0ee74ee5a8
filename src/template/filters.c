/* filters.c — Jinja's filters and tests as name -> function tables, with jinja2 3.1's argument
 * names and defaults (so `tojson(indent=4)` and `default("x", true)` bind like Python), plus
 * transformers' own `tojson`. Each filter receives the filtered value as `self`. */
#include "template/tmpl_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

int bind_args(rstate *r, const char *fname, const char *const *names, int n, const targs *a, tv *out) {
    for (int i = 0; i < n; i++) out[i] = (tv){.kind = TV_ABSENT};
    if (a->npos > n) return rerr(r, "%s() takes at most %d argument%s (%d given)", fname, n, n == 1 ? "" : "s", a->npos);
    for (int i = 0; i < a->npos; i++) out[i] = a->pos[i];
    for (int k = 0; k < a->nkw; k++) {
        int i = 0;
        while (i < n && strcmp(names[i], a->kwn[k])) i++;
        if (i == n) return rerr(r, "%s() got an unexpected keyword argument '%s'", fname, a->kwn[k]);
        if (arg_present(&out[i])) return rerr(r, "%s() got multiple values for argument '%s'", fname, a->kwn[k]);
        out[i] = a->kwv[k];
    }
    return 0;
}

int no_args(rstate *r, const char *fname, const targs *a) {
    if (a->npos || a->nkw) return rerr(r, "%s() takes no arguments", fname);
    return 0;
}

static int soft_str(rstate *r, const tv *v, tv *out) { return tv_to_string(r, v, out); }

/* `attribute="a.b.0"` as jinja's make_attrgetter: each part through getitem, digits as ints. */
static int attr_path(rstate *r, const tv *item, const tv *path, tv *out) {
    if (tv_is_int(path)) return tv_getitem(r, item, path, out);
    if (!tv_is_str(path)) return rerr(r, "%s", "attribute must be a string or an integer");
    tv cur = *item;
    const char *p = tv_sdata(path), *end = p + tv_slen(path);
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        bool digits = n > 0;
        for (size_t i = 0; i < n; i++) digits = digits && p[i] >= '0' && p[i] <= '9';
        tv key = digits ? tv_int(r, strtoll(p, NULL, 10)) : tv_str(r, p, n);
        if (tv_getitem(r, &cur, &key, &cur) < 0) return -1;
        if (!dot) break;
        p = dot + 1;
    }
    *out = cur;
    return 0;
}

/* The sort / unique / min / max key: an attribute path, lowercased strings unless case_sensitive. */
static int sort_key(rstate *r, const tv *item, const tv *attribute, bool case_sensitive, tv *out) {
    tv v = *item;
    if (arg_given(attribute) && attr_path(r, item, attribute, &v) < 0) return -1;
    if (!case_sensitive && tv_is_str(&v)) return str_case(r, &v, CASE_LOWER, out);
    *out = v;
    return 0;
}

static int iterate_keys(rstate *r, const tv *seq, const tv *attribute, bool case_sensitive, tv **items, tv **keys, int *n) {
    if (tv_iterate(r, seq, items, n) < 0) return -1;
    *keys = ta_alloc(&r->a, ((size_t)*n + 1) * sizeof **keys);
    for (int i = 0; i < *n; i++)
        if (sort_key(r, &(*items)[i], attribute, case_sensitive, &(*keys)[i]) < 0) return -1;
    return 0;
}

/* Stable merge sort of items by keys (Python's sorted, reverse keeps stability). */
static int merge_sort(rstate *r, tv *items, tv *keys, int n, bool reverse) {
    if (n < 2) return 0;
    int h = n / 2;
    if (merge_sort(r, items, keys, h, reverse) < 0 || merge_sort(r, items + h, keys + h, n - h, reverse) < 0) return -1;
    tv *ti = ta_alloc(&r->a, (size_t)n * sizeof *ti), *tk = ta_alloc(&r->a, (size_t)n * sizeof *tk);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int c;
        if (tv_cmp(r, &keys[j], &keys[i], &c) < 0) return -1;
        bool right_first = reverse ? c > 0 : c < 0;
        if (right_first) ti[k] = items[j], tk[k++] = keys[j++];
        else ti[k] = items[i], tk[k++] = keys[i++];
    }
    while (i < h) ti[k] = items[i], tk[k++] = keys[i++];
    while (j < n) ti[k] = items[j], tk[k++] = keys[j++];
    memcpy(items, ti, (size_t)n * sizeof *ti);
    memcpy(keys, tk, (size_t)n * sizeof *tk);
    return 0;
}

/* ---------------------------------------------------------------- simple filters */
static int f_abs(rstate *r, const tv *v, targs *a, tv *out) {
    if (no_args(r, "abs", a) < 0) return -1;
    if (!tv_is_num(v)) return rerr(r, "bad operand type for abs(): '%s'", tv_typename(v));
    if (tv_is_int(v)) {
        long long x = tv_ival(v);
        if (x == INT64_MIN) return rerr(r, "%s", "abs() overflows 64 bits");
        *out = tv_int(r, x < 0 ? -x : x);
        return 0;
    }
    return tv_real(r, fabs(tv_num(v)), out);
}

static int f_attr(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("attr", "name");
    if (!tv_is_str(&arg[0])) return rerr(r, "%s", "attr(): name must be a string");
    if (v->kind != TV_JSON) return tv_getattr(r, v, tv_sdata(&arg[0]), out);
    bool unsafe = false;
    const builtin *m = tmpl_find_method(v, tv_sdata(&arg[0]), &unsafe);
    *out = m ? (tv){.kind = TV_METHOD, .j = v->j, .fn = m} : tv_undef(tv_sdata(&arg[0]), tv_typename(v));
    out->unsafe = unsafe;
    return 0;
}

static int f_case(rstate *r, const tv *v, targs *a, tv *out, case_mode mode, const char *name) {
    tv s;
    if (no_args(r, name, a) < 0 || soft_str(r, v, &s) < 0) return -1;
    return str_case(r, &s, mode, out);
}
static int f_lower(rstate *r, const tv *v, targs *a, tv *o) { return f_case(r, v, a, o, CASE_LOWER, "lower"); }
static int f_upper(rstate *r, const tv *v, targs *a, tv *o) { return f_case(r, v, a, o, CASE_UPPER, "upper"); }
static int f_capitalize(rstate *r, const tv *v, targs *a, tv *o) { return f_case(r, v, a, o, CASE_CAPITALIZE, "capitalize"); }
static int f_title(rstate *r, const tv *v, targs *a, tv *o) { return f_case(r, v, a, o, CASE_TITLE_JINJA, "title"); }

static int f_length(rstate *r, const tv *v, targs *a, tv *out) {
    long long n;
    if (no_args(r, "length", a) < 0 || tv_len(r, v, &n) < 0) return -1;
    *out = tv_int(r, n);
    return 0;
}

static int f_default(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("default", "default_value", "boolean");
    bool use = v->kind == TV_UNDEF || (tv_truthy(&arg[1]) && !tv_truthy(v));
    if (!use) *out = *v;
    else *out = arg_present(&arg[0]) ? arg[0] : tv_str(r, "", 0);
    return 0;
}

static int f_escape(rstate *r, const tv *v, targs *a, tv *out) {
    tv s;
    if (no_args(r, "escape", a) < 0 || soft_str(r, v, &s) < 0) return -1;
    sbuf b = {0};
    for (size_t i = 0; i < tv_slen(&s); i++) {
        char c = tv_sdata(&s)[i];
        switch (c) {
        case '&': sb_puts(&b, "&amp;"); break;
        case '<': sb_puts(&b, "&lt;"); break;
        case '>': sb_puts(&b, "&gt;"); break;
        case '"': sb_puts(&b, "&#34;"); break;
        case '\'': sb_puts(&b, "&#39;"); break;
        default: sb_putc(&b, c);
        }
    }
    *out = tv_sbuf(r, &b);
    return 0;
}

static int f_first_last(rstate *r, const tv *v, targs *a, tv *out, bool last) {
    tv *items;
    int n;
    if (no_args(r, last ? "last" : "first", a) < 0 || tv_iterate(r, v, &items, &n) < 0) return -1;
    if (n) *out = items[last ? n - 1 : 0];
    else *out = tv_undef(last ? "No last item, sequence was empty." : "No first item, sequence was empty.", NULL);
    return 0;
}
static int f_first(rstate *r, const tv *v, targs *a, tv *o) { return f_first_last(r, v, a, o, false); }
static int f_last(rstate *r, const tv *v, targs *a, tv *o) { return f_first_last(r, v, a, o, true); }

/* float(str) the way Python parses it: surrounding whitespace, underscores between digits,
 * inf/nan spelled out. */
static bool parse_py_float(const char *s, size_t n, double *out) {
    char buf[128];
    size_t k = 0;
    size_t i = 0;
    while (i < n && py_isspace((unsigned char)s[i])) i++;
    while (n > i && py_isspace((unsigned char)s[n - 1])) n--;
    if (n - i == 0 || n - i >= sizeof buf) return false;
    for (; i < n; i++) {
        if (s[i] == '_') {
            if (!k || i + 1 >= n || !(s[i + 1] >= '0' && s[i + 1] <= '9') || !(buf[k - 1] >= '0' && buf[k - 1] <= '9')) return false;
            continue;
        }
        buf[k++] = s[i];
    }
    buf[k] = 0;
    if (strpbrk(buf, "xXpP")) return false; /* strtod would read hex floats; Python does not */
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    return *end == 0;
}

static int f_float(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("float", "default");
    double d;
    if (v->kind == TV_UNDEF) return rerr_undefined(r, v); /* float(Undefined) raises */
    if (tv_is_num(v)) return tv_real(r, tv_num(v), out);
    if (tv_is_str(v) && parse_py_float(tv_sdata(v), tv_slen(v), &d) && isfinite(d)) return tv_real(r, d, out);
    if (arg_present(&arg[0])) *out = arg[0];
    else *out = tv_new(r, json_real(0.0));
    return 0;
}

/* int(str, base) as Python: whitespace, sign, underscores, 0x/0o/0b prefixes matching base. */
static bool parse_py_int(const char *s, size_t n, int base, long long *out) {
    char buf[128];
    size_t i = 0, k = 0;
    while (i < n && py_isspace((unsigned char)s[i])) i++;
    while (n > i && py_isspace((unsigned char)s[n - 1])) n--;
    if (i < n && (s[i] == '+' || s[i] == '-')) buf[k++] = s[i++];
    if (i + 1 < n && s[i] == '0') {
        char p = (char)(s[i + 1] | 0x20);
        int pb = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
        if (pb && (base == pb || base == 0)) {
            base = pb;
            i += 2;
            if (i < n && s[i] == '_') i++;
        }
    }
    if (base == 0) base = 10;
    if (i >= n || n - i >= sizeof buf - 2) return false;
    for (; i < n; i++) {
        if (s[i] == '_' && k && buf[k - 1] != '_' && buf[k - 1] != '-' && buf[k - 1] != '+' && i + 1 < n) continue;
        buf[k++] = s[i];
    }
    buf[k] = 0;
    char *end;
    errno = 0;
    *out = strtoll(buf, &end, base);
    return *end == 0 && errno == 0 && end != buf && !(buf[0] == '-' && end == buf + 1);
}

static int f_int(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("int", "default", "base");
    int base = arg_given(&arg[1]) && tv_is_int(&arg[1]) ? (int)tv_ival(&arg[1]) : 10;
    long long iv;
    double d;
    if (v->kind == TV_UNDEF) return rerr_undefined(r, v); /* int(Undefined) raises */
    if (tv_is_int(v)) {
        *out = tv_int(r, tv_ival(v));
        return 0;
    }
    if (tv_is_num(v) && isfinite(tv_num(v)) && fabs(tv_num(v)) < 9.2e18) {
        *out = tv_int(r, (long long)tv_num(v));
        return 0;
    }
    if (tv_is_str(v)) {
        if (parse_py_int(tv_sdata(v), tv_slen(v), base, &iv)) {
            *out = tv_int(r, iv);
            return 0;
        }
        if (parse_py_float(tv_sdata(v), tv_slen(v), &d) && isfinite(d) && fabs(d) < 9.2e18) {
            *out = tv_int(r, (long long)d);
            return 0;
        }
    }
    *out = arg_present(&arg[0]) ? arg[0] : tv_int(r, 0);
    return 0;
}

static int pair(rstate *r, tv k, tv v, tv *out) {
    tv two[2] = {k, v};
    if (tv_list_from(r, two, 2, out) < 0) return -1;
    tv_mark_tuple(r, out->j);
    return 0;
}

/* dict -> [(key, value), ...] */
int tmpl_dict_items(rstate *r, const tv *d, tv *out);
int tmpl_dict_items(rstate *r, const tv *d, tv *out) {
    json_t *arr = ta_own(&r->a, json_array());
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(d->j, k, klen, v) {
        tv p;
        if (pair(r, tv_str(r, k, klen), tv_of(v), &p) < 0) return -1;
        json_array_append(arr, p.j);
    }
    *out = tv_of(arr);
    return 0;
}

static int f_items(rstate *r, const tv *v, targs *a, tv *out) {
    if (no_args(r, "items", a) < 0) return -1;
    if (v->kind == TV_UNDEF) {
        *out = tv_new(r, json_array());
        return 0;
    }
    if (!tv_is_dict(v)) return rerr(r, "%s", "Can only get item pairs from a mapping.");
    return tmpl_dict_items(r, v, out);
}

static int f_dictsort(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("dictsort", "case_sensitive", "by", "reverse");
    if (!tv_is_dict(v)) return rerr(r, "%s", "dictsort: value must be a dict");
    int pos = 0;
    if (arg_given(&arg[1])) {
        if (tv_is_str(&arg[1]) && !strcmp(tv_sdata(&arg[1]), "value")) pos = 1;
        else if (!tv_is_str(&arg[1]) || strcmp(tv_sdata(&arg[1]), "key")) return rerr(r, "%s", "You can only sort by either \"key\" or \"value\"");
    }
    tv pairs, *items, *keys;
    int n;
    if (tmpl_dict_items(r, v, &pairs) < 0 || tv_iterate(r, &pairs, &items, &n) < 0) return -1;
    keys = ta_alloc(&r->a, ((size_t)n + 1) * sizeof *keys);
    for (int i = 0; i < n; i++) {
        tv k = tv_of(json_array_get(items[i].j, (size_t)pos));
        if (sort_key(r, &k, &(tv){.kind = TV_ABSENT}, tv_truthy(&arg[0]), &keys[i]) < 0) return -1;
    }
    if (merge_sort(r, items, keys, n, tv_truthy(&arg[2])) < 0) return -1;
    return tv_list_from(r, items, n, out);
}

static int f_format(rstate *r, const tv *v, targs *a, tv *out) {
    tv s, args;
    if (soft_str(r, v, &s) < 0) return -1;
    if (a->nkw) {
        json_t *obj = ta_own(&r->a, json_object());
        for (int i = 0; i < a->nkw; i++) {
            if (a->kwv[i].kind != TV_JSON) return rerr(r, "%s", "format: unsupported argument value");
            json_object_set(obj, a->kwn[i], a->kwv[i].j);
        }
        args = tv_of(obj);
    } else {
        if (tv_list_from(r, a->pos, a->npos, &args) < 0) return -1;
        tv_mark_tuple(r, args.j);
    }
    return tmpl_percent_format(r, &s, &args, out);
}

static int f_indent(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("indent", "width", "first", "blank");
    if (!tv_is_str(v)) return rerr(r, "indent: expected a string, got '%s'", tv_typename(v));
    sbuf ind = {0};
    if (tv_is_str(&arg[0])) sb_put(&ind, tv_sdata(&arg[0]), tv_slen(&arg[0]));
    else
        for (long long i = arg_present(&arg[0]) && tv_is_int(&arg[0]) ? tv_ival(&arg[0]) : 4; i > 0 && ind.n < 10000; i--) sb_putc(&ind, ' ');
    const char *indention = ind.p ? ind.p : "";
    sbuf withnl = {0};
    sb_put(&withnl, tv_sdata(v), tv_slen(v));
    sb_putc(&withnl, '\n');
    tv s = tv_sbuf(r, &withnl), *lines;
    int n;
    if (str_splitlines(r, &s, false, &lines, &n) < 0) {
        sb_free(&ind);
        return -1;
    }
    sbuf b = {0};
    if (tv_truthy(&arg[1])) sb_put(&b, indention, ind.n);
    for (int i = 0; i < n; i++) {
        if (i) sb_putc(&b, '\n');
        if (i && (tv_truthy(&arg[2]) || tv_slen(&lines[i]))) sb_put(&b, indention, ind.n);
        sb_put(&b, tv_sdata(&lines[i]), tv_slen(&lines[i]));
    }
    sb_free(&ind);
    *out = tv_sbuf(r, &b);
    return 0;
}

static int f_join(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("join", "d", "attribute");
    tv *items, sep;
    int n;
    if (tv_iterate(r, v, &items, &n) < 0) return -1;
    if (arg_present(&arg[0])) {
        if (soft_str(r, &arg[0], &sep) < 0) return -1;
    } else {
        sep = tv_str(r, "", 0);
    }
    sbuf b = {0};
    for (int i = 0; i < n; i++) {
        tv it = items[i];
        if (arg_given(&arg[1]) && attr_path(r, &items[i], &arg[1], &it) < 0) goto fail;
        if (i) sb_put(&b, tv_sdata(&sep), tv_slen(&sep));
        if (tv_str_into(r, &it, &b) < 0) goto fail;
    }
    *out = tv_sbuf(r, &b);
    return 0;
fail:
    sb_free(&b);
    return -1;
}

static int f_list(rstate *r, const tv *v, targs *a, tv *out) {
    tv *items;
    int n;
    if (no_args(r, "list", a) < 0 || tv_iterate(r, v, &items, &n) < 0) return -1;
    return tv_list_from(r, items, n, out);
}

static int f_reverse(rstate *r, const tv *v, targs *a, tv *out) {
    tv *items;
    int n;
    if (no_args(r, "reverse", a) < 0 || tv_iterate(r, v, &items, &n) < 0) return -1;
    if (tv_is_str(v)) {
        sbuf b = {0};
        for (int i = n - 1; i >= 0; i--) sb_put(&b, tv_sdata(&items[i]), tv_slen(&items[i]));
        *out = tv_sbuf(r, &b);
        return 0;
    }
    for (int i = 0, j = n - 1; i < j; i++, j--) {
        tv t = items[i];
        items[i] = items[j];
        items[j] = t;
    }
    return tv_list_from(r, items, n, out);
}

static int f_replace(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("replace", "old", "new", "count");
    tv s, old, repl;
    if (!arg_present(&arg[0]) || !arg_present(&arg[1])) return rerr(r, "%s", "replace() needs old and new");
    if (soft_str(r, v, &s) < 0 || soft_str(r, &arg[0], &old) < 0 || soft_str(r, &arg[1], &repl) < 0) return -1;
    long long count = arg_given(&arg[2]) && tv_is_int(&arg[2]) ? tv_ival(&arg[2]) : -1;
    return str_replace(r, &s, &old, &repl, count, out);
}

static int f_round(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("round", "precision", "method");
    long long prec = arg_given(&arg[0]) && tv_is_int(&arg[0]) ? tv_ival(&arg[0]) : 0;
    const char *method = arg_given(&arg[1]) && tv_is_str(&arg[1]) ? tv_sdata(&arg[1]) : "common";
    if (!tv_is_num(v)) return rerr(r, "round: expected a number, got '%s'", tv_typename(v));
    if (strcmp(method, "common") && strcmp(method, "ceil") && strcmp(method, "floor"))
        return rerr(r, "%s", "method must be common, ceil or floor");
    if (prec < -300 || prec > 300) return rerr(r, "%s", "round: precision out of range");
    if (!strcmp(method, "common") && tv_is_int(v) && prec >= 0) {
        *out = tv_int(r, tv_ival(v));
        return 0;
    }
    double x = tv_num(v), scale = pow(10.0, (double)prec);
    if (!strcmp(method, "common")) {
        char buf[400];
        if (prec >= 0) { /* printf rounds the exact binary value half-to-even, like Python */
            snprintf(buf, sizeof buf, "%.*f", (int)prec, x);
            return tv_real(r, strtod(buf, NULL), out);
        }
        return tv_real(r, nearbyint(x / pow(10.0, (double)-prec)) * pow(10.0, (double)-prec), out);
    }
    double y = !strcmp(method, "ceil") ? ceil(x * scale) : floor(x * scale);
    return tv_real(r, y / scale, out);
}

static int f_safe(rstate *r, const tv *v, targs *a, tv *out) {
    if (no_args(r, "safe", a) < 0) return -1;
    return tv_to_string(r, v, out);
}

static int f_string(rstate *r, const tv *v, targs *a, tv *out) {
    if (no_args(r, "string", a) < 0) return -1;
    return tv_to_string(r, v, out);
}

static int f_sort(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("sort", "reverse", "case_sensitive", "attribute");
    tv *items, *keys;
    int n;
    if (iterate_keys(r, v, &arg[2], tv_truthy(&arg[1]), &items, &keys, &n) < 0) return -1;
    if (merge_sort(r, items, keys, n, tv_truthy(&arg[0])) < 0) return -1;
    return tv_list_from(r, items, n, out);
}

static int f_unique(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("unique", "case_sensitive", "attribute");
    tv *items, *keys;
    int n, kept = 0;
    if (iterate_keys(r, v, &arg[1], tv_truthy(&arg[0]), &items, &keys, &n) < 0) return -1;
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int j = 0; j < kept && !seen; j++) seen = tv_eq(&keys[j], &keys[i]);
        if (!seen) {
            keys[kept] = keys[i];
            items[kept++] = items[i];
        }
    }
    return tv_list_from(r, items, kept, out);
}

static int f_minmax(rstate *r, const tv *v, targs *a, tv *out, bool want_max) {
    BIND(want_max ? "max" : "min", "case_sensitive", "attribute");
    tv *items, *keys;
    int n;
    if (iterate_keys(r, v, &arg[1], tv_truthy(&arg[0]), &items, &keys, &n) < 0) return -1;
    if (!n) {
        *out = tv_undef("No aggregated item, sequence was empty.", NULL);
        return 0;
    }
    int best = 0;
    for (int i = 1; i < n; i++) {
        int c;
        if (tv_cmp(r, &keys[i], &keys[best], &c) < 0) return -1;
        if (want_max ? c > 0 : c < 0) best = i;
    }
    *out = items[best];
    return 0;
}
static int f_max(rstate *r, const tv *v, targs *a, tv *o) { return f_minmax(r, v, a, o, true); }
static int f_min(rstate *r, const tv *v, targs *a, tv *o) { return f_minmax(r, v, a, o, false); }

static int f_sum(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("sum", "attribute", "start");
    tv *items, acc = arg_present(&arg[1]) ? arg[1] : tv_int(r, 0);
    int n;
    if (tv_iterate(r, v, &items, &n) < 0) return -1;
    for (int i = 0; i < n; i++) {
        tv it = items[i];
        if (arg_given(&arg[0]) && attr_path(r, &items[i], &arg[0], &it) < 0) return -1;
        if (tmpl_arith(r, '+', &acc, &it, &acc) < 0) return -1;
    }
    *out = acc;
    return 0;
}

static int f_trim(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("trim", "chars");
    tv s;
    if (soft_str(r, v, &s) < 0) return -1;
    return str_strip(r, &s, &arg[0], STRIP_BOTH, out);
}

static int f_center(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("center", "width");
    tv s;
    if (soft_str(r, v, &s) < 0) return -1;
    long long width = arg_present(&arg[0]) && tv_is_int(&arg[0]) ? tv_ival(&arg[0]) : 80;
    long long len = (long long)u8_count(tv_sdata(&s), tv_slen(&s)), marg = width - len;
    if (marg <= 0) {
        *out = s;
        return 0;
    }
    if (marg > 100000) return rerr(r, "%s", "center: width too large");
    long long left = marg / 2 + (marg & width & 1);
    sbuf b = {0};
    for (long long i = 0; i < left; i++) sb_putc(&b, ' ');
    sb_put(&b, tv_sdata(&s), tv_slen(&s));
    for (long long i = left; i < marg; i++) sb_putc(&b, ' ');
    *out = tv_sbuf(r, &b);
    return 0;
}

static int f_wordcount(rstate *r, const tv *v, targs *a, tv *out) {
    tv s;
    if (no_args(r, "wordcount", a) < 0 || soft_str(r, v, &s) < 0) return -1;
    const char *p = tv_sdata(&s);
    size_t n = tv_slen(&s), i = 0;
    long long words = 0;
    bool in_word = false;
    while (i < n) {
        int32_t cp = u8_next(p, n, &i);
        utf8proc_category_t c = utf8proc_category(cp);
        bool w = cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
                 (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
        if (w && !in_word) words++;
        in_word = w;
    }
    *out = tv_int(r, words);
    return 0;
}

static int f_pprint(rstate *r, const tv *v, targs *a, tv *out) {
    sbuf b = {0};
    if (tv_repr_into(r, v, &b) < 0) {
        sb_free(&b);
        return -1;
    }
    *out = tv_sbuf(r, &b);
    return 0;
}

/* transformers: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
static int f_tojson(rstate *r, const tv *v, targs *a, tv *out) {
    BIND("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
    json_style st = {.ensure_ascii = tv_truthy(&arg[0]), .sort_keys = tv_truthy(&arg[3])};
    sbuf ind = {0};
    if (arg_given(&arg[1])) {
        if (tv_is_str(&arg[1])) sb_put(&ind, tv_sdata(&arg[1]), tv_slen(&arg[1]));
        else if (tv_is_int(&arg[1]))
            for (long long i = tv_ival(&arg[1]); i > 0 && ind.n < 1000; i--) sb_putc(&ind, ' ');
        else return rerr(r, "%s", "tojson: indent must be an integer or a string");
        st.indent = ind.p ? ind.p : "";
    }
    st.item_sep = st.indent ? "," : ", ";
    st.key_sep = ": ";
    if (arg_given(&arg[2])) {
        if (!tv_is_list(&arg[2]) || json_array_size(arg[2].j) != 2 || !json_is_string(json_array_get(arg[2].j, 0)) ||
            !json_is_string(json_array_get(arg[2].j, 1))) {
            sb_free(&ind);
            return rerr(r, "%s", "tojson: separators must be a pair of strings");
        }
        st.item_sep = json_string_value(json_array_get(arg[2].j, 0));
        st.key_sep = json_string_value(json_array_get(arg[2].j, 1));
    }
    sbuf b = {0};
    int rc = tv_tojson(r, v, &st, &b);
    sb_free(&ind);
    if (rc < 0) {
        sb_free(&b);
        return -1;
    }
    *out = tv_sbuf(r, &b);
    return 0;
}

/* ---------------------------------------------------------------- map / select / reject */
static int call_test_named(rstate *r, const tv *name, const tv *v, targs *a, bool *res) {
    if (!tv_is_str(name)) return rerr(r, "%s", "test name must be a string");
    return tmpl_apply_test(r, tmpl_find_test(tv_sdata(name)), tv_sdata(name), v, a, res);
}

/* jinja's map/select/reject start with `if value:` — a falsy value of any type maps to nothing. */
static int iterate_if_truthy(rstate *r, const tv *v, tv **items, int *n) {
    if (!tv_truthy(v)) {
        *items = NULL;
        *n = 0;
        return 0;
    }
    return tv_iterate(r, v, items, n);
}

static int f_map(rstate *r, const tv *v, targs *a, tv *out) {
    tv *items;
    int n;
    if (iterate_if_truthy(r, v, &items, &n) < 0) return -1;
    if (a->npos == 0) { /* map(attribute="x", default=...) */
        tv attribute = {.kind = TV_ABSENT}, dflt = {.kind = TV_ABSENT};
        for (int k = 0; k < a->nkw; k++) {
            if (!strcmp(a->kwn[k], "attribute")) attribute = a->kwv[k];
            else if (!strcmp(a->kwn[k], "default")) dflt = a->kwv[k];
            else return rerr(r, "map: unexpected keyword argument '%s'", a->kwn[k]);
        }
        if (!arg_present(&attribute)) return rerr(r, "%s", "map requires a filter argument");
        for (int i = 0; i < n; i++) {
            if (attr_path(r, &items[i], &attribute, &items[i]) < 0) return -1;
            if (items[i].kind == TV_UNDEF && arg_present(&dflt)) items[i] = dflt;
        }
        return tv_list_from(r, items, n, out);
    }
    if (!tv_is_str(&a->pos[0])) return rerr(r, "%s", "map: filter name must be a string");
    const char *fname = tv_sdata(&a->pos[0]);
    const builtin *f = tmpl_find_filter(fname);
    targs rest = *a;
    rest.pos++;
    rest.npos--;
    for (int i = 0; i < n; i++)
        if (tmpl_apply_filter(r, f, fname, &items[i], &rest, &items[i]) < 0) return -1;
    return tv_list_from(r, items, n, out);
}

static int select_common(rstate *r, const tv *v, targs *a, tv *out, bool want, bool by_attr) {
    tv *items;
    int n, kept = 0, off = by_attr ? 1 : 0;
    if (by_attr && a->npos < 1) return rerr(r, "%s", "selectattr/rejectattr need an attribute name");
    if (iterate_if_truthy(r, v, &items, &n) < 0) return -1;
    targs rest = *a;
    rest.pos += off + 1;
    rest.npos = a->npos > off + 1 ? a->npos - off - 1 : 0;
    for (int i = 0; i < n; i++) {
        tv subject = items[i];
        bool ok;
        if (by_attr && attr_path(r, &items[i], &a->pos[0], &subject) < 0) return -1;
        if (a->npos > off) {
            if (call_test_named(r, &a->pos[off], &subject, &rest, &ok) < 0) return -1;
        } else {
            ok = tv_truthy(&subject);
        }
        if (ok == want) items[kept++] = items[i];
    }
    return tv_list_from(r, items, kept, out);
}
static int f_select(rstate *r, const tv *v, targs *a, tv *o) { return select_common(r, v, a, o, true, false); }
static int f_reject(rstate *r, const tv *v, targs *a, tv *o) { return select_common(r, v, a, o, false, false); }
static int f_selectattr(rstate *r, const tv *v, targs *a, tv *o) { return select_common(r, v, a, o, true, true); }
static int f_rejectattr(rstate *r, const tv *v, targs *a, tv *o) { return select_common(r, v, a, o, false, true); }

static const builtin filters[] = {
    {"abs", f_abs},         {"attr", f_attr},           {"capitalize", f_capitalize}, {"center", f_center},
    {"count", f_length},    {"d", f_default},           {"default", f_default},       {"dictsort", f_dictsort},
    {"e", f_escape},        {"escape", f_escape},       {"first", f_first},           {"float", f_float},
    {"forceescape", f_escape}, {"format", f_format},    {"indent", f_indent},         {"int", f_int},
    {"items", f_items},     {"join", f_join},           {"last", f_last},             {"length", f_length},
    {"list", f_list},       {"lower", f_lower},         {"map", f_map},               {"max", f_max},
    {"min", f_min},         {"pprint", f_pprint},       {"reject", f_reject},         {"rejectattr", f_rejectattr},
    {"replace", f_replace}, {"reverse", f_reverse},     {"round", f_round},           {"safe", f_safe},
    {"select", f_select},   {"selectattr", f_selectattr}, {"sort", f_sort},           {"string", f_string},
    {"sum", f_sum},         {"title", f_title},         {"tojson", f_tojson},         {"trim", f_trim},
    {"unique", f_unique},   {"upper", f_upper},         {"wordcount", f_wordcount},
};

const builtin *tmpl_find_filter(const char *name) {
    for (size_t i = 0; i < sizeof filters / sizeof *filters; i++)
        if (!strcmp(filters[i].name, name)) return &filters[i];
    return NULL;
}

int tmpl_apply_filter(rstate *r, const builtin *f, const char *name, const tv *v, targs *a, tv *out) {
    if (!f) return rerr(r, "no filter named '%s'", name);
    return f->fn(r, v, a, out);
}

/* ---------------------------------------------------------------- tests */
#define TEST0(fn, expr)                                                   \
    static int fn(rstate *r, const tv *v, targs *a, bool *res) {          \
        if (a->npos || a->nkw) return rerr(r, "%s", "test takes no arguments"); \
        *res = (expr);                                                    \
        return 0;                                                         \
    }

static bool iterable(const tv *v) { return v->kind == TV_UNDEF || v->kind == TV_LOOP || tv_is_str(v) || tv_is_list(v) || tv_is_dict(v); }

TEST0(t_defined, v->kind != TV_UNDEF)
TEST0(t_undefined, v->kind == TV_UNDEF)
TEST0(t_none, tv_is_none(v))
TEST0(t_boolean, tv_is_bool(v))
TEST0(t_true, v->kind == TV_JSON && json_is_true(v->j))
TEST0(t_false, v->kind == TV_JSON && json_is_false(v->j))
TEST0(t_integer, v->kind == TV_JSON && json_is_integer(v->j))
TEST0(t_float, v->kind == TV_JSON && json_is_real(v->j))
TEST0(t_number, tv_is_num(v))
TEST0(t_string, tv_is_str(v))
TEST0(t_mapping, tv_is_dict(v))
TEST0(t_iterable, iterable(v))
TEST0(t_sequence, v->kind == TV_UNDEF || tv_is_str(v) || tv_is_list(v) || tv_is_dict(v))
TEST0(t_callable, v->kind == TV_MACRO || v->kind == TV_FUNC || v->kind == TV_METHOD || v->kind == TV_UNDEF)
TEST0(t_escaped, false)

static int t_parity(rstate *r, const tv *v, targs *a, bool *res, int want) {
    if (a->npos || a->nkw) return rerr(r, "%s", "test takes no arguments");
    if (!tv_is_num(v)) return rerr(r, "odd/even: expected a number, got '%s'", tv_typename(v));
    tv two = tv_int(r, 2), m;
    if (tmpl_arith(r, '%', v, &two, &m) < 0) return -1;
    *res = tv_num(&m) == want;
    return 0;
}
static int t_odd(rstate *r, const tv *v, targs *a, bool *res) { return t_parity(r, v, a, res, 1); }
static int t_even(rstate *r, const tv *v, targs *a, bool *res) { return t_parity(r, v, a, res, 0); }

static int t_divisibleby(rstate *r, const tv *v, targs *a, bool *res) {
    BIND("divisibleby", "num");
    tv m;
    if (tmpl_arith(r, '%', v, &arg[0], &m) < 0) return -1;
    *res = tv_num(&m) == 0;
    return 0;
}

static int t_compare(rstate *r, const tv *v, targs *a, bool *res, int op) {
    BIND("compare", "other");
    if (!arg_present(&arg[0])) return rerr(r, "%s", "comparison test needs a value to compare with");
    int c;
    switch (op) {
    case OP_EQ: *res = tv_eq(v, &arg[0]); return 0;
    case OP_NE: *res = !tv_eq(v, &arg[0]); return 0;
    default: break;
    }
    if (tv_cmp(r, v, &arg[0], &c) < 0) return -1;
    *res = op == OP_LT ? c < 0 : op == OP_LE ? c <= 0 : op == OP_GT ? c > 0 : c >= 0;
    return 0;
}
static int t_eq(rstate *r, const tv *v, targs *a, bool *res) { return t_compare(r, v, a, res, OP_EQ); }
static int t_ne(rstate *r, const tv *v, targs *a, bool *res) { return t_compare(r, v, a, res, OP_NE); }
static int t_lt(rstate *r, const tv *v, targs *a, bool *res) { return t_compare(r, v, a, res, OP_LT); }
static int t_le(rstate *r, const tv *v, targs *a, bool *res) { return t_compare(r, v, a, res, OP_LE); }
static int t_gt(rstate *r, const tv *v, targs *a, bool *res) { return t_compare(r, v, a, res, OP_GT); }
static int t_ge(rstate *r, const tv *v, targs *a, bool *res) { return t_compare(r, v, a, res, OP_GE); }

static int t_in(rstate *r, const tv *v, targs *a, bool *res) {
    BIND("in", "seq");
    return tmpl_contains(r, &arg[0], v, res);
}

static int t_sameas(rstate *r, const tv *v, targs *a, bool *res) {
    BIND("sameas", "other");
    *res = v->kind == arg[0].kind && (v->kind == TV_JSON ? v->j == arg[0].j : tv_eq(v, &arg[0]));
    return 0;
}

static int t_case(rstate *r, const tv *v, targs *a, bool *res, case_mode mode) {
    tv s, mapped;
    if (no_args(r, "lower/upper", a) < 0 || soft_str(r, v, &s) < 0 || str_case(r, &s, mode, &mapped) < 0) return -1;
    /* islower(): has cased characters and lowering changes nothing */
    tv other;
    if (str_case(r, &s, mode == CASE_LOWER ? CASE_UPPER : CASE_LOWER, &other) < 0) return -1;
    *res = tv_eq(&s, &mapped) && !tv_eq(&s, &other);
    return 0;
}
static int t_lower(rstate *r, const tv *v, targs *a, bool *res) { return t_case(r, v, a, res, CASE_LOWER); }
static int t_upper(rstate *r, const tv *v, targs *a, bool *res) { return t_case(r, v, a, res, CASE_UPPER); }

static int t_filter(rstate *r, const tv *v, targs *a, bool *res) {
    if (no_args(r, "filter", a) < 0) return -1;
    *res = tv_is_str(v) && tmpl_find_filter(tv_sdata(v));
    return 0;
}
static int t_test(rstate *r, const tv *v, targs *a, bool *res) {
    if (no_args(r, "test", a) < 0) return -1;
    *res = tv_is_str(v) && tmpl_find_test(tv_sdata(v));
    return 0;
}

static const test_builtin tests[] = {
    {"boolean", t_boolean},   {"callable", t_callable}, {"defined", t_defined},     {"divisibleby", t_divisibleby},
    {"eq", t_eq},             {"==", t_eq},             {"equalto", t_eq},          {"escaped", t_escaped},
    {"even", t_even},         {"false", t_false},       {"filter", t_filter},       {"float", t_float},
    {"ge", t_ge},             {">=", t_ge},             {"gt", t_gt},               {">", t_gt},
    {"greaterthan", t_gt},    {"in", t_in},             {"integer", t_integer},     {"iterable", t_iterable},
    {"le", t_le},             {"<=", t_le},             {"lower", t_lower},         {"lt", t_lt},
    {"<", t_lt},              {"lessthan", t_lt},       {"mapping", t_mapping},     {"ne", t_ne},
    {"!=", t_ne},             {"none", t_none},         {"number", t_number},       {"odd", t_odd},
    {"sameas", t_sameas},     {"sequence", t_sequence}, {"string", t_string},       {"test", t_test},
    {"true", t_true},         {"undefined", t_undefined}, {"upper", t_upper},
};

const test_builtin *tmpl_find_test(const char *name) {
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++)
        if (!strcmp(tests[i].name, name)) return &tests[i];
    return NULL;
}

int tmpl_apply_test(rstate *r, const test_builtin *t, const char *name, const tv *v, targs *a, bool *res) {
    if (!t) return rerr(r, "no test named '%s'", name);
    return t->fn(r, v, a, res);
}
