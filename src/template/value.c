/* value.c — runtime values of the template engine and the Python semantics Jinja inherits:
 * truthiness, ==, ordering, str()/repr() (so `{{ [1, 'a'] }}` prints "[1, 'a']"), len(),
 * iteration, attribute/item access under the sandbox's rules (dict methods shadow keys on `.`,
 * keys win on `[]`; missing things are Undefined, but touching an attribute of an Undefined is an
 * error), slicing by code point, and json.dumps as transformers' `tojson` calls it. */
#include "template/tmpl_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---------------------------------------------------------------- errors */
int rerr(rstate *r, const char *fmt, ...) {
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lp_fail("%s:%d: %s", r->t->name, r->line, msg);
}

int rerr_undefined(rstate *r, const tv *u) {
    const char *name = u->uname ? u->uname : "value";
    if (u->unsafe) return rerr(r, "access to attribute '%s' of '%s' object is unsafe", name, u->uobj);
    if (u->uobj) return rerr(r, "'%s object' has no attribute '%s'", u->uobj, name);
    return rerr(r, "'%s' is undefined", name);
}

/* ---------------------------------------------------------------- constructors */
tv tv_of(json_t *borrowed) { return (tv){.kind = TV_JSON, .j = borrowed}; }
tv tv_new(rstate *r, json_t *fresh) { return tv_of(ta_own(&r->a, fresh)); }
tv tv_undef(const char *name, const char *obj) { return (tv){.kind = TV_UNDEF, .uname = name, .uobj = obj}; }
tv tv_str(rstate *r, const char *s, size_t n) { return tv_new(r, json_stringn_nocheck(n ? s : "", n)); }
tv tv_cstr(rstate *r, const char *s) { return tv_str(r, s, strlen(s)); }
tv tv_int(rstate *r, long long v) { return tv_new(r, json_integer(v)); }
tv tv_bool(bool b) { return tv_of(b ? json_true() : json_false()); }
tv tv_none(void) { return tv_of(json_null()); }

int tv_real(rstate *r, double v, tv *out) {
    json_t *j = json_real(v);
    if (!j) return rerr(r, "%s", "float result is infinite or not a number");
    *out = tv_new(r, j);
    return 0;
}

tv tv_sbuf(rstate *r, sbuf *b) {
    tv v = tv_str(r, b->p, b->n);
    sb_free(b);
    return v;
}

/* ---------------------------------------------------------------- kinds */
static bool is_json(const tv *v, json_type t) { return v->kind == TV_JSON && json_typeof(v->j) == t; }
bool tv_is_str(const tv *v) { return is_json(v, JSON_STRING); }
bool tv_is_bool(const tv *v) { return v->kind == TV_JSON && json_is_boolean(v->j); }
bool tv_is_int(const tv *v) { return is_json(v, JSON_INTEGER) || tv_is_bool(v); }
bool tv_is_num(const tv *v) { return tv_is_int(v) || is_json(v, JSON_REAL); }
bool tv_is_list(const tv *v) { return is_json(v, JSON_ARRAY); }
bool tv_is_dict(const tv *v) { return is_json(v, JSON_OBJECT); }
bool tv_is_none(const tv *v) { return is_json(v, JSON_NULL); }
const char *tv_sdata(const tv *v) { return json_string_value(v->j); }
size_t tv_slen(const tv *v) { return json_string_length(v->j); }
long long tv_ival(const tv *v) { return json_is_boolean(v->j) ? json_is_true(v->j) : (long long)json_integer_value(v->j); }
double tv_num(const tv *v) { return json_is_real(v->j) ? json_real_value(v->j) : (double)tv_ival(v); }

bool tv_is_tuple(const rstate *r, const json_t *arr) {
    if (!r->tuples.cap) return false;
    size_t h = ((uintptr_t)arr >> 4) & (r->tuples.cap - 1);
    for (; r->tuples.slots[h]; h = (h + 1) & (r->tuples.cap - 1))
        if (r->tuples.slots[h] == arr) return true;
    return false;
}

void tv_mark_tuple(rstate *r, json_t *arr) {
    if ((r->tuples.n + 1) * 2 > r->tuples.cap) {
        size_t cap = r->tuples.cap ? r->tuples.cap * 2 : 64;
        const json_t **slots = ta_alloc(&r->a, cap * sizeof *slots);
        for (size_t i = 0; i < r->tuples.cap; i++) {
            const json_t *k = r->tuples.slots[i];
            if (!k) continue;
            size_t h = ((uintptr_t)k >> 4) & (cap - 1);
            while (slots[h]) h = (h + 1) & (cap - 1);
            slots[h] = k;
        }
        r->tuples.slots = slots;
        r->tuples.cap = cap;
    }
    size_t h = ((uintptr_t)arr >> 4) & (r->tuples.cap - 1);
    while (r->tuples.slots[h]) {
        if (r->tuples.slots[h] == arr) return;
        h = (h + 1) & (r->tuples.cap - 1);
    }
    r->tuples.slots[h] = arr;
    r->tuples.n++;
}

const char *tv_typename(const tv *v) {
    switch (v->kind) {
    case TV_UNDEF: return "Undefined";
    case TV_NS: return "Namespace";
    case TV_MACRO: return "Macro";
    case TV_FUNC:
    case TV_METHOD: return "builtin_function_or_method";
    case TV_LOOP: return "LoopContext";
    case TV_ABSENT: return "absent";
    case TV_JSON: break;
    }
    switch (json_typeof(v->j)) {
    case JSON_OBJECT: return "dict";
    case JSON_ARRAY: return "list";
    case JSON_STRING: return "str";
    case JSON_INTEGER: return "int";
    case JSON_REAL: return "float";
    case JSON_TRUE:
    case JSON_FALSE: return "bool";
    default: return "NoneType";
    }
}

/* ---------------------------------------------------------------- truth, equality, order */
bool tv_truthy(const tv *v) {
    switch (v->kind) {
    case TV_UNDEF:
    case TV_ABSENT: return false;
    case TV_JSON: break;
    default: return true;
    }
    switch (json_typeof(v->j)) {
    case JSON_OBJECT: return json_object_size(v->j) > 0;
    case JSON_ARRAY: return json_array_size(v->j) > 0;
    case JSON_STRING: return json_string_length(v->j) > 0;
    case JSON_INTEGER: return json_integer_value(v->j) != 0;
    case JSON_REAL: return json_real_value(v->j) != 0.0;
    case JSON_TRUE: return true;
    default: return false;
    }
}

static bool json_py_eq(const json_t *a, const json_t *b) {
    tv va = tv_of((json_t *)a), vb = tv_of((json_t *)b);
    if (tv_is_num(&va) && tv_is_num(&vb)) {
        if (tv_is_int(&va) && tv_is_int(&vb)) return tv_ival(&va) == tv_ival(&vb);
        return tv_num(&va) == tv_num(&vb);
    }
    if (json_typeof(a) != json_typeof(b)) return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!json_py_eq(json_array_get(a, i), json_array_get(b, i))) return false;
        return true;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b)) return false;
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach((json_t *)a, k, klen, v) {
            json_t *w = json_object_getn(b, k, klen);
            if (!w || !json_py_eq(v, w)) return false;
        }
        return true;
    }
    default: return true; /* null == null */
    }
}

bool tv_eq(const tv *a, const tv *b) {
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case TV_UNDEF: return true; /* Undefined == Undefined, as in jinja2 */
    case TV_JSON: return json_py_eq(a->j, b->j);
    case TV_METHOD: return a->fn == b->fn && a->j == b->j && a->p == b->p;
    case TV_FUNC: return a->fn == b->fn;
    default: return a->p == b->p;
    }
}

static int cmp_json(rstate *r, const json_t *a, const json_t *b, int *res) {
    tv va = tv_of((json_t *)a), vb = tv_of((json_t *)b);
    if (tv_is_num(&va) && tv_is_num(&vb)) {
        if (tv_is_int(&va) && tv_is_int(&vb)) {
            long long x = tv_ival(&va), y = tv_ival(&vb);
            *res = (x > y) - (x < y);
        } else {
            double x = tv_num(&va), y = tv_num(&vb);
            *res = (x > y) - (x < y);
        }
        return 0;
    }
    if (json_is_string(a) && json_is_string(b)) {
        size_t la = json_string_length(a), lb = json_string_length(b);
        int c = memcmp(json_string_value(a), json_string_value(b), la < lb ? la : lb);
        *res = c ? (c > 0) - (c < 0) : (la > lb) - (la < lb);
        return 0;
    }
    if (json_is_array(a) && json_is_array(b)) {
        size_t na = json_array_size(a), nb = json_array_size(b);
        for (size_t i = 0; i < na && i < nb; i++) {
            if (json_py_eq(json_array_get(a, i), json_array_get(b, i))) continue;
            return cmp_json(r, json_array_get(a, i), json_array_get(b, i), res);
        }
        *res = (na > nb) - (na < nb);
        return 0;
    }
    return rerr(r, "ordering is not supported between instances of '%s' and '%s'", tv_typename(&va), tv_typename(&vb));
}

int tv_cmp(rstate *r, const tv *a, const tv *b, int *res) {
    if (a->kind == TV_UNDEF) return rerr_undefined(r, a);
    if (b->kind == TV_UNDEF) return rerr_undefined(r, b);
    if (a->kind != TV_JSON || b->kind != TV_JSON)
        return rerr(r, "ordering is not supported between instances of '%s' and '%s'", tv_typename(a), tv_typename(b));
    return cmp_json(r, a->j, b->j, res);
}

/* ---------------------------------------------------------------- str() and repr() */
static bool py_isprintable(int32_t cp) {
    if (cp == ' ') return true;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return false;
    default: return true;
    }
}

static void repr_string(const char *s, size_t n, sbuf *b) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    sb_putc(b, q);
    for (size_t i = 0; i < n;) {
        size_t start = i;
        int32_t cp = u8_next(s, n, &i);
        if (cp == q || cp == '\\') {
            sb_putc(b, '\\');
            sb_putc(b, (char)cp);
        } else if (cp == '\t') {
            sb_puts(b, "\\t");
        } else if (cp == '\n') {
            sb_puts(b, "\\n");
        } else if (cp == '\r') {
            sb_puts(b, "\\r");
        } else if (cp < 0x20 || cp == 0x7F) {
            sb_printf(b, "\\x%02x", (unsigned)cp);
        } else if (cp < 0x7F || (py_isprintable(cp) && !(cp >= 0xDC80 && cp <= 0xDCFF))) {
            sb_put(b, s + start, i - start);
        } else if (cp <= 0xFF) {
            sb_printf(b, "\\x%02x", (unsigned)cp);
        } else if (cp <= 0xFFFF) {
            sb_printf(b, "\\u%04x", (unsigned)cp);
        } else {
            sb_printf(b, "\\U%08x", (unsigned)cp);
        }
    }
    sb_putc(b, q);
}

static void repr_json(const rstate *r, const json_t *j, sbuf *b, bool as_str) {
    switch (json_typeof(j)) {
    case JSON_NULL: sb_puts(b, "None"); break;
    case JSON_TRUE: sb_puts(b, "True"); break;
    case JSON_FALSE: sb_puts(b, "False"); break;
    case JSON_INTEGER: sb_printf(b, "%lld", (long long)json_integer_value(j)); break;
    case JSON_REAL: py_float_repr(json_real_value(j), b); break;
    case JSON_STRING:
        if (as_str) sb_put(b, json_string_value(j), json_string_length(j));
        else repr_string(json_string_value(j), json_string_length(j), b);
        break;
    case JSON_ARRAY: {
        bool tuple = tv_is_tuple(r, j);
        size_t n = json_array_size(j);
        sb_putc(b, tuple ? '(' : '[');
        for (size_t i = 0; i < n; i++) {
            if (i) sb_puts(b, ", ");
            repr_json(r, json_array_get(j, i), b, false);
        }
        if (tuple && n == 1) sb_putc(b, ',');
        sb_putc(b, tuple ? ')' : ']');
        break;
    }
    case JSON_OBJECT: {
        const char *k;
        size_t klen;
        json_t *v;
        bool first = true;
        sb_putc(b, '{');
        json_object_keylen_foreach((json_t *)j, k, klen, v) {
            if (!first) sb_puts(b, ", ");
            first = false;
            repr_string(k, klen, b);
            sb_puts(b, ": ");
            repr_json(r, v, b, false);
        }
        sb_putc(b, '}');
        break;
    }
    }
}

static int repr_value(rstate *r, const tv *v, sbuf *b, bool as_str) {
    switch (v->kind) {
    case TV_UNDEF:
        if (!as_str) sb_puts(b, "Undefined");
        return 0;
    case TV_JSON: repr_json(r, v->j, b, as_str); return 0;
    case TV_NS: {
        varmap *m = v->p;
        sb_puts(b, "<Namespace {");
        for (int i = 0; i < m->n; i++) {
            if (i) sb_puts(b, ", ");
            repr_string(m->names[i], strlen(m->names[i]), b);
            sb_puts(b, ": ");
            if (repr_value(r, &m->vals[i], b, false) < 0) return -1;
        }
        sb_puts(b, "}>");
        return 0;
    }
    case TV_MACRO: sb_printf(b, "<Macro '%s'>", ((macro *)v->p)->name); return 0;
    case TV_FUNC:
    case TV_METHOD: sb_printf(b, "<built-in method %s>", ((const builtin *)v->fn)->name); return 0;
    case TV_LOOP: {
        loopstate *l = v->p;
        sb_printf(b, "<LoopContext %d/%d>", l->i + 1, l->n);
        return 0;
    }
    case TV_ABSENT: break;
    }
    return rerr(r, "%s", "internal error: absent value printed");
}

int tv_str_into(rstate *r, const tv *v, sbuf *b) { return repr_value(r, v, b, true); }
int tv_repr_into(rstate *r, const tv *v, sbuf *b) { return repr_value(r, v, b, false); }

int tv_to_string(rstate *r, const tv *v, tv *out) {
    if (tv_is_str(v)) {
        *out = *v;
        return 0;
    }
    sbuf b = {0};
    if (tv_str_into(r, v, &b) < 0) {
        sb_free(&b);
        return -1;
    }
    *out = tv_sbuf(r, &b);
    return 0;
}

/* ---------------------------------------------------------------- len, iteration, lists */
int tv_len(rstate *r, const tv *v, long long *n) {
    if (v->kind == TV_UNDEF) {
        *n = 0;
        return 0;
    }
    if (tv_is_str(v)) *n = (long long)u8_count(tv_sdata(v), tv_slen(v));
    else if (tv_is_list(v)) *n = (long long)json_array_size(v->j);
    else if (tv_is_dict(v)) *n = (long long)json_object_size(v->j);
    else return rerr(r, "object of type '%s' has no len()", tv_typename(v));
    return 0;
}

int tv_iterate(rstate *r, const tv *v, tv **items, int *n) {
    *items = NULL;
    *n = 0;
    if (v->kind == TV_UNDEF) return 0;
    if (tv_is_list(v)) {
        size_t k = json_array_size(v->j);
        *items = ta_alloc(&r->a, (k ? k : 1) * sizeof **items);
        for (size_t i = 0; i < k; i++) (*items)[i] = tv_of(json_array_get(v->j, i));
        *n = (int)k;
        return 0;
    }
    if (tv_is_dict(v)) {
        size_t k = json_object_size(v->j), i = 0;
        *items = ta_alloc(&r->a, (k ? k : 1) * sizeof **items);
        const char *key;
        size_t klen;
        json_t *val;
        json_object_keylen_foreach(v->j, key, klen, val) (*items)[i++] = tv_str(r, key, klen);
        *n = (int)i;
        return 0;
    }
    if (tv_is_str(v)) {
        const char *s = tv_sdata(v);
        size_t len = tv_slen(v), k = u8_count(s, len), i = 0, at = 0;
        *items = ta_alloc(&r->a, (k ? k : 1) * sizeof **items);
        while (at < len) {
            size_t start = at;
            u8_next(s, len, &at);
            (*items)[i++] = tv_str(r, s + start, at - start);
        }
        *n = (int)i;
        return 0;
    }
    return rerr(r, "'%s' object is not iterable", tv_typename(v));
}

int tv_list_from(rstate *r, tv *items, int n, tv *out) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        if (items[i].kind != TV_JSON) {
            json_decref(arr);
            return rerr(r, "cannot store a value of type '%s' in a list", tv_typename(&items[i]));
        }
        json_array_append(arr, items[i].j);
    }
    *out = tv_new(r, arr);
    return 0;
}

/* ---------------------------------------------------------------- attribute and item access */
static int loop_getattr(rstate *r, const tv *obj, const char *name, tv *out) {
    loopstate *l = obj->p;
    long long i = l->i, n = l->n;
    struct {
        const char *name;
        long long v;
    } ints[] = {{"index", i + 1}, {"index0", i}, {"revindex", n - i}, {"revindex0", n - i - 1},
                {"length", n},    {"depth", 1},  {"depth0", 0}};
    for (size_t k = 0; k < sizeof ints / sizeof *ints; k++)
        if (!strcmp(name, ints[k].name)) {
            *out = tv_int(r, ints[k].v);
            return 0;
        }
    if (!strcmp(name, "first")) *out = tv_bool(i == 0);
    else if (!strcmp(name, "last")) *out = tv_bool(i == n - 1);
    else if (!strcmp(name, "previtem")) *out = i > 0 ? loop_item(l, (int)i - 1) : tv_undef("previtem", NULL);
    else if (!strcmp(name, "nextitem")) *out = i + 1 < n ? loop_item(l, (int)i + 1) : tv_undef("nextitem", NULL);
    else {
        bool unsafe;
        const builtin *m = tmpl_find_method(obj, name, &unsafe);
        *out = m ? (tv){.kind = TV_METHOD, .p = obj->p, .fn = m} : tv_undef(name, "LoopContext");
    }
    return 0;
}

int tv_getattr(rstate *r, const tv *obj, const char *name, tv *out) {
    switch (obj->kind) {
    case TV_UNDEF: return rerr_undefined(r, obj);
    case TV_LOOP: return loop_getattr(r, obj, name, out);
    case TV_NS: {
        tv *v = varmap_get(obj->p, name);
        *out = v ? *v : tv_undef(name, "Namespace");
        return 0;
    }
    case TV_JSON: break;
    default: *out = tv_undef(name, tv_typename(obj)); return 0;
    }
    bool unsafe = false;
    const builtin *m = tmpl_find_method(obj, name, &unsafe);
    if (m) {
        *out = (tv){.kind = TV_METHOD, .j = obj->j, .fn = m};
        return 0;
    }
    if (unsafe) {
        *out = tv_undef(name, tv_typename(obj));
        out->unsafe = true;
        return 0;
    }
    json_t *v = tv_is_dict(obj) ? json_object_get(obj->j, name) : NULL;
    *out = v ? tv_of(v) : tv_undef(name, tv_typename(obj));
    return 0;
}

int tv_getitem(rstate *r, const tv *obj, const tv *key, tv *out) {
    if (obj->kind == TV_UNDEF) return rerr_undefined(r, obj);
    if (tv_is_list(obj) && tv_is_int(key)) {
        long long n = (long long)json_array_size(obj->j), i = tv_ival(key);
        if (i < 0) i += n;
        *out = i >= 0 && i < n ? tv_of(json_array_get(obj->j, (size_t)i)) : tv_undef("item", "list");
        return 0;
    }
    if (tv_is_str(obj) && tv_is_int(key)) {
        const char *s = tv_sdata(obj);
        size_t len = tv_slen(obj);
        long long n = (long long)u8_count(s, len), i = tv_ival(key);
        if (i < 0) i += n;
        if (i < 0 || i >= n) {
            *out = tv_undef("item", "str");
            return 0;
        }
        size_t at = u8_offset(s, len, (size_t)i), end = at;
        u8_next(s, len, &end);
        *out = tv_str(r, s + at, end - at);
        return 0;
    }
    if (tv_is_dict(obj) && tv_is_str(key)) {
        json_t *v = json_object_getn(obj->j, tv_sdata(key), tv_slen(key));
        if (v) {
            *out = tv_of(v);
            return 0;
        }
    }
    if (tv_is_str(key) && obj->kind != TV_JSON) return tv_getattr(r, obj, tv_sdata(key), out);
    if (tv_is_str(key)) { /* obj[name] falls back to getattr(obj, name): methods only here */
        bool unsafe = false;
        const builtin *m = tmpl_find_method(obj, tv_sdata(key), &unsafe);
        if (m) {
            *out = (tv){.kind = TV_METHOD, .j = obj->j, .fn = m};
            return 0;
        }
        *out = tv_undef(tv_sdata(key), tv_typename(obj));
        out->unsafe = unsafe;
        return 0;
    }
    *out = tv_undef("item", tv_typename(obj));
    return 0;
}

/* ---------------------------------------------------------------- json.dumps */
static void json_string_out(const char *s, size_t n, bool ensure_ascii, sbuf *b) {
    sb_putc(b, '"');
    for (size_t i = 0; i < n;) {
        size_t start = i;
        int32_t cp = u8_next(s, n, &i);
        switch (cp) {
        case '"': sb_puts(b, "\\\""); continue;
        case '\\': sb_puts(b, "\\\\"); continue;
        case '\n': sb_puts(b, "\\n"); continue;
        case '\r': sb_puts(b, "\\r"); continue;
        case '\t': sb_puts(b, "\\t"); continue;
        case '\b': sb_puts(b, "\\b"); continue;
        case '\f': sb_puts(b, "\\f"); continue;
        default: break;
        }
        if (cp < 0x20) {
            sb_printf(b, "\\u%04x", (unsigned)cp);
        } else if (ensure_ascii && cp >= 0x7F) {
            if (cp >= 0x10000) {
                int32_t v = cp - 0x10000;
                sb_printf(b, "\\u%04x\\u%04x", (unsigned)(0xD800 | (v >> 10)), (unsigned)(0xDC00 | (v & 0x3FF)));
            } else {
                sb_printf(b, "\\u%04x", (unsigned)cp);
            }
        } else {
            sb_put(b, s + start, i - start);
        }
    }
    sb_putc(b, '"');
}

typedef struct {
    const json_style *st;
} dump_ctx;

static void newline_indent(const dump_ctx *d, int level, sbuf *b) {
    sb_putc(b, '\n');
    for (int i = 0; i < level; i++) sb_puts(b, d->st->indent);
}

static int cmp_keys(const void *a, const void *b) {
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

static int dump(rstate *r, const dump_ctx *d, const json_t *j, int level, sbuf *b) {
    if (level > 500) return rerr(r, "%s", "tojson: value nested too deeply");
    const json_style *st = d->st;
    switch (json_typeof(j)) {
    case JSON_NULL: sb_puts(b, "null"); return 0;
    case JSON_TRUE: sb_puts(b, "true"); return 0;
    case JSON_FALSE: sb_puts(b, "false"); return 0;
    case JSON_INTEGER: sb_printf(b, "%lld", (long long)json_integer_value(j)); return 0;
    case JSON_REAL: py_float_repr(json_real_value(j), b); return 0;
    case JSON_STRING: json_string_out(json_string_value(j), json_string_length(j), d->st->ensure_ascii, b); return 0;
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (!n) {
            sb_puts(b, "[]");
            return 0;
        }
        sb_putc(b, '[');
        for (size_t i = 0; i < n; i++) {
            if (i) sb_puts(b, st->item_sep);
            if (st->indent) newline_indent(d, level + 1, b);
            if (dump(r, d, json_array_get(j, i), level + 1, b) < 0) return -1;
        }
        if (st->indent) newline_indent(d, level, b);
        sb_putc(b, ']');
        return 0;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(j), k = 0;
        if (!n) {
            sb_puts(b, "{}");
            return 0;
        }
        const char **keys = ta_alloc(&r->a, n * sizeof *keys);
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v) keys[k++] = key;
        if (st->sort_keys) qsort(keys, n, sizeof *keys, cmp_keys);
        sb_putc(b, '{');
        for (size_t i = 0; i < n; i++) {
            if (i) sb_puts(b, st->item_sep);
            if (st->indent) newline_indent(d, level + 1, b);
            json_string_out(keys[i], strlen(keys[i]), d->st->ensure_ascii, b);
            sb_puts(b, st->key_sep);
            if (dump(r, d, json_object_get(j, keys[i]), level + 1, b) < 0) return -1;
        }
        if (st->indent) newline_indent(d, level, b);
        sb_putc(b, '}');
        return 0;
    }
    }
    return 0;
}

int tv_tojson(rstate *r, const tv *v, const json_style *st, sbuf *b) {
    if (v->kind != TV_JSON) return rerr(r, "Object of type %s is not JSON serializable", tv_typename(v));
    dump_ctx d = {st};
    return dump(r, &d, v->j, 0, b);
}
