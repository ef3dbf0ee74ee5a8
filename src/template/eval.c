/* eval.c — renders a parsed template: scopes, expressions with Python arithmetic, statements,
 * macros, and the public compile/render entry points.
 *
 * Scoping follows jinja2: a for-loop body gets a fresh scope on every iteration (a `set` inside
 * a loop never leaks out, which is why templates use namespace()), macros and call blocks get
 * their own scope chained to where they were defined, `if` opens no scope, and top-level names
 * shadow the render context, which shadows the globals. */
#include "template/tmpl_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { FLOW_BREAK = 1, FLOW_CONTINUE = 2 };

static _Thread_local bool last_raised;

bool lp_template_raised(void) { return last_raised; }

/* ---------------------------------------------------------------- scopes */
tv *varmap_get(varmap *m, const char *name) {
    for (int i = m->n - 1; i >= 0; i--)
        if (!strcmp(m->names[i], name)) return &m->vals[i];
    return NULL;
}

void varmap_set(rstate *r, varmap *m, const char *name, tv v) {
    tv *old = varmap_get(m, name);
    if (old) {
        *old = v;
        return;
    }
    if (m->n == m->cap) {
        int cap = m->cap ? m->cap * 2 : 8;
        const char **names = ta_alloc(&r->a, (size_t)cap * sizeof *names);
        tv *vals = ta_alloc(&r->a, (size_t)cap * sizeof *vals);
        if (m->n) {
            memcpy(names, m->names, (size_t)m->n * sizeof *names);
            memcpy(vals, m->vals, (size_t)m->n * sizeof *vals);
        }
        m->names = names;
        m->vals = vals;
        m->cap = cap;
    }
    m->names[m->n] = name;
    m->vals[m->n] = v;
    m->n++;
}

varmap *ns_new(rstate *r) { return ta_alloc(&r->a, sizeof(varmap)); }

static frame *frame_new(rstate *r, frame *parent) {
    frame *f = ta_alloc(&r->a, sizeof *f);
    f->parent = parent;
    return f;
}

void frame_set(rstate *r, frame *f, const char *name, tv v) { varmap_set(r, &f->vars, name, v); }

static tv lookup(rstate *r, const char *name) {
    for (frame *f = r->f; f; f = f->parent) {
        tv *v = varmap_get(&f->vars, name);
        if (v) return *v;
    }
    json_t *j = r->ctx ? json_object_get(r->ctx, name) : NULL;
    if (j) return tv_of(j);
    const builtin *g = tmpl_find_global(name);
    if (g) return (tv){.kind = TV_FUNC, .fn = g};
    return tv_undef(name, NULL);
}

static long long max_steps = TMPL_MAX_STEPS;
static size_t max_bytes = TMPL_MAX_MEMORY;

void lp_template_set_limits(long long steps, size_t bytes) {
    max_steps = steps > 0 ? steps : TMPL_MAX_STEPS;
    max_bytes = bytes ? bytes : TMPL_MAX_MEMORY;
}

static int count_step(rstate *r) {
    if (++r->steps > max_steps) return rerr(r, "%s", "template exceeded its evaluation budget (runaway loop?)");
    if (r->a.bytes > max_bytes) return rerr(r, "%s", "template used too much memory");
    return 0;
}

tv loop_item(const loopstate *l, int i) { return l->list ? tv_of(json_array_get(l->list, (size_t)i)) : l->items[i]; }

/* ---------------------------------------------------------------- arithmetic */
static int num_result(rstate *r, bool as_int, long long i, double d, tv *out) {
    if (as_int) {
        *out = tv_int(r, i);
        return 0;
    }
    return tv_real(r, d, out);
}

static int repeat(rstate *r, const tv *seq, long long times, tv *out) {
    if (times < 0) times = 0;
    if (tv_is_str(seq)) {
        size_t n = tv_slen(seq);
        if (n && (unsigned long long)times > TMPL_MAX_STRING / n) return rerr(r, "%s", "string repetition result too large");
        sbuf b = {0};
        for (long long k = 0; k < times; k++) sb_put(&b, tv_sdata(seq), n);
        *out = tv_sbuf(r, &b);
        return 0;
    }
    size_t n = json_array_size(seq->j);
    if (n && (unsigned long long)times > (TMPL_MAX_STRING / 64) / n) return rerr(r, "%s", "list repetition result too large");
    json_t *arr = json_array();
    for (long long k = 0; k < times; k++) json_array_extend(arr, seq->j);
    *out = tv_new(r, arr);
    return 0;
}

static int concat_same(rstate *r, const tv *a, const tv *b, tv *out) {
    if (tv_is_str(a)) {
        if (tv_slen(a) + tv_slen(b) > TMPL_MAX_STRING) return rerr(r, "%s", "string result too large");
        sbuf s = {0};
        sb_put(&s, tv_sdata(a), tv_slen(a));
        sb_put(&s, tv_sdata(b), tv_slen(b));
        *out = tv_sbuf(r, &s);
        return 0;
    }
    json_t *arr = json_array();
    json_array_extend(arr, a->j);
    json_array_extend(arr, b->j);
    *out = tv_new(r, arr);
    return 0;
}

/* Python's float divmod: the remainder takes the divisor's sign. */
static void float_divmod(double x, double y, double *floordiv, double *mod) {
    double m = fmod(x, y), div = (x - m) / y;
    if (m != 0.0) {
        if ((y < 0) != (m < 0)) {
            m += y;
            div -= 1.0;
        }
    } else {
        m = copysign(0.0, y);
    }
    if (div != 0.0) {
        double f = floor(div);
        if (div - f > 0.5) f += 1.0;
        div = f;
    } else {
        div = copysign(0.0, x / y);
    }
    *floordiv = div;
    *mod = m;
}

static const char *op_name(int op) {
    static char one[2];
    switch (op) {
    case OP_FLOORDIV: return "//";
    case OP_POW: return "**";
    default: one[0] = (char)op; return one;
    }
}

static int int_arith(rstate *r, int op, long long x, long long y, tv *out) {
    long long v = 0;
    bool overflow = false;
    switch (op) {
    case '+': overflow = __builtin_add_overflow(x, y, &v); break;
    case '-': overflow = __builtin_sub_overflow(x, y, &v); break;
    case '*': overflow = __builtin_mul_overflow(x, y, &v); break;
    case '/':
        if (!y) return rerr(r, "%s", "division by zero");
        return tv_real(r, (double)x / (double)y, out);
    case OP_FLOORDIV:
    case '%': {
        if (!y) return rerr(r, "%s", "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) {
            overflow = true;
            break;
        }
        long long q = x / y, m = x % y;
        if (m && ((m < 0) != (y < 0))) {
            q--;
            m += y;
        }
        v = op == '%' ? m : q;
        break;
    }
    case OP_POW: {
        if (y < 0) {
            if (!x) return rerr(r, "%s", "0 cannot be raised to a negative power");
            return tv_real(r, pow((double)x, (double)y), out);
        }
        v = 1;
        for (long long k = 0; k < y && !overflow; k++) {
            overflow = __builtin_mul_overflow(v, x, &v);
            if (v == 0 || v == 1) break; /* 0**n, 1**n */
            if (v == -1 && x == -1) {    /* (-1)**n */
                v = (y % 2) ? -1 : 1;
                break;
            }
        }
        break;
    }
    }
    if (overflow) return rerr(r, "integer result of '%s' does not fit in 64 bits", op_name(op));
    *out = tv_int(r, v);
    return 0;
}

static int float_arith(rstate *r, int op, double x, double y, tv *out) {
    double v = 0, fd, m;
    switch (op) {
    case '+': v = x + y; break;
    case '-': v = x - y; break;
    case '*': v = x * y; break;
    case '/':
        if (y == 0.0) return rerr(r, "%s", "float division by zero");
        v = x / y;
        break;
    case OP_FLOORDIV:
    case '%':
        if (y == 0.0) return rerr(r, "%s", "float modulo or division by zero");
        float_divmod(x, y, &fd, &m);
        v = op == '%' ? m : fd;
        break;
    case OP_POW:
        if (x == 0.0 && y < 0) return rerr(r, "%s", "0.0 cannot be raised to a negative power");
        v = pow(x, y);
        break;
    }
    return num_result(r, false, 0, v, out);
}

int tmpl_percent_format(rstate *r, const tv *fmt, const tv *args, tv *out);

int tmpl_arith(rstate *r, int op, const tv *a, const tv *b, tv *out) {
    if (a->kind == TV_UNDEF) return rerr_undefined(r, a);
    if (b->kind == TV_UNDEF) return rerr_undefined(r, b);
    if (tv_is_num(a) && tv_is_num(b)) {
        if (tv_is_int(a) && tv_is_int(b)) return int_arith(r, op, tv_ival(a), tv_ival(b), out);
        return float_arith(r, op, tv_num(a), tv_num(b), out);
    }
    if (op == '+' && ((tv_is_str(a) && tv_is_str(b)) || (tv_is_list(a) && tv_is_list(b)))) return concat_same(r, a, b, out);
    if (op == '*' && (tv_is_str(a) || tv_is_list(a)) && tv_is_int(b)) return repeat(r, a, tv_ival(b), out);
    if (op == '*' && (tv_is_str(b) || tv_is_list(b)) && tv_is_int(a)) return repeat(r, b, tv_ival(a), out);
    if (op == '%' && tv_is_str(a)) return tmpl_percent_format(r, a, b, out);
    return rerr(r, "unsupported operand type(s) for %s: '%s' and '%s'", op_name(op), tv_typename(a), tv_typename(b));
}

static bool contains_bytes(const char *hay, size_t nh, const char *needle, size_t nn) {
    if (!nn) return true;
    for (size_t i = 0; i + nn <= nh; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, nn)) return true;
    return false;
}

int tmpl_contains(rstate *r, const tv *container, const tv *item, bool *res) {
    *res = false;
    if (container->kind == TV_UNDEF) return 0; /* iterating Undefined yields nothing */
    if (tv_is_str(container)) {
        if (!tv_is_str(item)) return rerr(r, "'in <string>' requires string as left operand, not %s", tv_typename(item));
        *res = contains_bytes(tv_sdata(container), tv_slen(container), tv_sdata(item), tv_slen(item));
        return 0;
    }
    if (tv_is_list(container)) {
        for (size_t i = 0; i < json_array_size(container->j) && !*res; i++) {
            tv e = tv_of(json_array_get(container->j, i));
            *res = tv_eq(&e, item);
        }
        return 0;
    }
    if (tv_is_dict(container)) {
        if (tv_is_list(item) || tv_is_dict(item)) return rerr(r, "unhashable type: '%s'", tv_typename(item));
        *res = tv_is_str(item) && json_object_getn(container->j, tv_sdata(item), tv_slen(item)) != NULL;
        return 0;
    }
    return rerr(r, "argument of type '%s' is not iterable", tv_typename(container));
}

static int compare(rstate *r, int op, const tv *a, const tv *b, bool *res) {
    int c;
    switch (op) {
    case OP_EQ: *res = tv_eq(a, b); return 0;
    case OP_NE: *res = !tv_eq(a, b); return 0;
    case OP_IN: return tmpl_contains(r, b, a, res);
    case OP_NOTIN:
        if (tmpl_contains(r, b, a, res) < 0) return -1;
        *res = !*res;
        return 0;
    default: break;
    }
    if (tv_cmp(r, a, b, &c) < 0) return -1;
    *res = op == OP_LT ? c < 0 : op == OP_LE ? c <= 0 : op == OP_GT ? c > 0 : c >= 0;
    return 0;
}

/* ---------------------------------------------------------------- slicing */
static long long clamp_index(long long i, long long n, bool given, long long dflt, long long step) {
    if (!given) return dflt;
    if (i < 0) {
        i += n;
        if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= n) {
        i = step < 0 ? n - 1 : n;
    }
    return i;
}

static int slice_value(rstate *r, const tv *obj, const tv bounds[3], tv *out) {
    if (obj->kind == TV_UNDEF) return rerr_undefined(r, obj);
    bool given[3];
    long long v[3] = {0, 0, 1};
    for (int k = 0; k < 3; k++) {
        given[k] = bounds[k].kind != TV_ABSENT && !tv_is_none(&bounds[k]);
        if (given[k] && !tv_is_int(&bounds[k])) return rerr(r, "%s", "slice indices must be integers or None");
        if (given[k]) v[k] = tv_ival(&bounds[k]);
    }
    long long step = given[2] ? v[2] : 1;
    if (step == 0) return rerr(r, "%s", "slice step cannot be zero");
    if (!tv_is_str(obj) && !tv_is_list(obj)) /* jinja compiles slices to plain Python subscripts */
        return rerr(r, "'%s' object is not subscriptable", tv_typename(obj));
    tv *items = NULL;
    int n = 0;
    if (tv_is_list(obj) && tv_iterate(r, obj, &items, &n) < 0) return -1;
    int32_t *cps = NULL;
    if (tv_is_str(obj)) { /* by code point */
        const char *s = tv_sdata(obj);
        size_t len = tv_slen(obj), i = 0;
        cps = ta_alloc(&r->a, (len ? len : 1) * sizeof *cps);
        while (i < len) cps[n++] = u8_next(s, len, &i);
    }
    long long start = clamp_index(v[0], n, given[0], step < 0 ? n - 1 : 0, step);
    long long stop = clamp_index(v[1], n, given[1], step < 0 ? -1 : n, step);
    if (cps) {
        sbuf b = {0};
        for (long long i = start; step > 0 ? i < stop : i > stop; i += step) u8_put(&b, cps[i]);
        *out = tv_sbuf(r, &b);
        return 0;
    }
    json_t *arr = json_array();
    for (long long i = start; step > 0 ? i < stop : i > stop; i += step) json_array_append(arr, items[i].j);
    *out = tv_new(r, arr);
    if (tv_is_tuple(r, obj->j)) tv_mark_tuple(r, arr);
    return 0;
}

/* ---------------------------------------------------------------- expressions */
static int eval(rstate *r, const node *n, tv *out);

static int eval_args(rstate *r, const node *n, targs *a, int extra_kw) {
    memset(a, 0, sizeof *a);
    a->npos = n->items.n;
    a->nkw = n->kwvals.n;
    a->pos = ta_alloc(&r->a, ((size_t)a->npos + 1) * sizeof *a->pos);
    a->kwv = ta_alloc(&r->a, ((size_t)a->nkw + (size_t)extra_kw + 1) * sizeof *a->kwv);
    a->kwn = ta_alloc(&r->a, ((size_t)a->nkw + (size_t)extra_kw + 1) * sizeof *a->kwn);
    for (int i = 0; i < a->npos; i++)
        if (eval(r, n->items.v[i], &a->pos[i]) < 0) return -1;
    for (int i = 0; i < a->nkw; i++) {
        a->kwn[i] = n->kwnames[i];
        if (eval(r, n->kwvals.v[i], &a->kwv[i]) < 0) return -1;
    }
    return 0;
}

int tmpl_call(rstate *r, const tv *callee, targs *a, tv *out) {
    if (count_step(r) < 0) return -1;
    switch (callee->kind) {
    case TV_MACRO: return tmpl_call_macro(r, callee->p, a, out);
    case TV_FUNC: return ((const builtin *)callee->fn)->fn(r, NULL, a, out);
    case TV_METHOD: {
        tv self = callee->p ? (tv){.kind = TV_LOOP, .p = callee->p} : tv_of(callee->j);
        return ((const builtin *)callee->fn)->fn(r, &self, a, out);
    }
    case TV_UNDEF: return rerr_undefined(r, callee);
    default: return rerr(r, "'%s' object is not callable", tv_typename(callee));
    }
}

/* A filter node applied to `input` (NULL: evaluate the node's own operand). */
static int eval_filter(rstate *r, const node *n, const tv *input, tv *out) {
    tv v;
    if (n->a) {
        if (n->a->type == N_FILTER && input) {
            if (eval_filter(r, n->a, input, &v) < 0) return -1;
        } else if (eval(r, n->a, &v) < 0) {
            return -1;
        }
    } else {
        v = *input;
    }
    targs a;
    if (eval_args(r, n, &a, 0) < 0) return -1;
    r->line = n->line;
    return tmpl_apply_filter(r, n->impl, n->name, &v, &a, out);
}

static int eval_compare(rstate *r, const node *n, tv *out) {
    tv left, right;
    if (eval(r, n->a, &left) < 0) return -1;
    for (int i = 0; i < n->items.n; i++) {
        bool ok;
        if (eval(r, n->items.v[i], &right) < 0) return -1;
        r->line = n->line;
        if (compare(r, n->ops[i], &left, &right, &ok) < 0) return -1;
        if (!ok) {
            *out = tv_bool(false);
            return 0;
        }
        left = right;
    }
    *out = tv_bool(true);
    return 0;
}

static int eval_items(rstate *r, const nlist *l, tv **vals) {
    *vals = ta_alloc(&r->a, ((size_t)l->n + 1) * sizeof **vals);
    for (int i = 0; i < l->n; i++)
        if (eval(r, l->v[i], &(*vals)[i]) < 0) return -1;
    return 0;
}

static int eval_dict(rstate *r, const node *n, tv *out) {
    json_t *obj = ta_own(&r->a, json_object());
    for (int i = 0; i < n->items.n; i++) {
        tv k, v;
        if (eval(r, n->items.v[i], &k) < 0 || eval(r, n->items2.v[i], &v) < 0) return -1;
        r->line = n->line;
        if (!tv_is_str(&k)) return rerr(r, "dict keys must be strings, not '%s'", tv_typename(&k));
        if (v.kind != TV_JSON) return rerr(r, "cannot store a value of type '%s' in a dict", tv_typename(&v));
        json_object_setn_nocheck(obj, tv_sdata(&k), tv_slen(&k), v.j);
    }
    *out = tv_of(obj);
    return 0;
}

static int eval_concat(rstate *r, const node *n, tv *out) {
    sbuf b = {0};
    for (int i = 0; i < n->items.n; i++) {
        tv v;
        if (eval(r, n->items.v[i], &v) < 0 || tv_str_into(r, &v, &b) < 0) {
            sb_free(&b);
            return -1;
        }
    }
    *out = tv_sbuf(r, &b);
    return 0;
}

static int eval(rstate *r, const node *n, tv *out) {
    tv a, b;
    switch (n->type) {
    case N_CONST: *out = tv_of(n->value); return 0;
    case N_NAME: *out = lookup(r, n->name); return 0;
    case N_GETATTR:
        if (eval(r, n->a, &a) < 0) return -1;
        r->line = n->line;
        return tv_getattr(r, &a, n->name, out);
    case N_GETITEM:
        if (eval(r, n->a, &a) < 0 || eval(r, n->b, &b) < 0) return -1;
        r->line = n->line;
        return tv_getitem(r, &a, &b, out);
    case N_SLICE: {
        tv bounds[3];
        if (eval(r, n->a, &a) < 0) return -1;
        for (int k = 0; k < 3; k++) {
            bounds[k].kind = TV_ABSENT;
            if (n->items.v[k] && eval(r, n->items.v[k], &bounds[k]) < 0) return -1;
        }
        r->line = n->line;
        return slice_value(r, &a, bounds, out);
    }
    case N_CALL: {
        targs args;
        if (eval(r, n->a, &a) < 0 || eval_args(r, n, &args, 0) < 0) return -1;
        r->line = n->line;
        return tmpl_call(r, &a, &args, out);
    }
    case N_FILTER: return eval_filter(r, n, NULL, out);
    case N_TEST: {
        targs args;
        bool res;
        if (eval(r, n->a, &a) < 0 || eval_args(r, n, &args, 0) < 0) return -1;
        r->line = n->line;
        if (tmpl_apply_test(r, n->impl, n->name, &a, &args, &res) < 0) return -1;
        *out = tv_bool(res);
        return 0;
    }
    case N_BINOP:
        if (eval(r, n->a, &a) < 0 || eval(r, n->b, &b) < 0) return -1;
        r->line = n->line;
        return tmpl_arith(r, n->op, &a, &b, out);
    case N_NEG:
    case N_POS:
        if (eval(r, n->a, &a) < 0) return -1;
        r->line = n->line;
        if (a.kind == TV_UNDEF) return rerr_undefined(r, &a);
        if (!tv_is_num(&a)) return rerr(r, "bad operand type for unary %c: '%s'", n->type == N_NEG ? '-' : '+', tv_typename(&a));
        if (n->type == N_POS) return num_result(r, tv_is_int(&a), tv_ival(&a), tv_num(&a), out);
        if (tv_is_int(&a) && tv_ival(&a) == INT64_MIN) return rerr(r, "%s", "integer negation overflows 64 bits");
        return num_result(r, tv_is_int(&a), tv_is_int(&a) ? -tv_ival(&a) : 0, -tv_num(&a), out);
    case N_NOT:
        if (eval(r, n->a, &a) < 0) return -1;
        *out = tv_bool(!tv_truthy(&a));
        return 0;
    case N_AND:
    case N_OR:
        if (eval(r, n->a, &a) < 0) return -1;
        if (tv_truthy(&a) == (n->type == N_OR)) {
            *out = a;
            return 0;
        }
        return eval(r, n->b, out);
    case N_COMPARE: return eval_compare(r, n, out);
    case N_COND:
        if (eval(r, n->a, &a) < 0) return -1;
        if (tv_truthy(&a)) return eval(r, n->b, out);
        if (n->c) return eval(r, n->c, out);
        *out = tv_undef("conditional expression", NULL);
        return 0;
    case N_LIST:
    case N_TUPLE: {
        tv *vals;
        if (eval_items(r, &n->items, &vals) < 0) return -1;
        r->line = n->line;
        if (tv_list_from(r, vals, n->items.n, out) < 0) return -1;
        if (n->type == N_TUPLE) tv_mark_tuple(r, out->j);
        return 0;
    }
    case N_DICT: return eval_dict(r, n, out);
    case N_CONCAT: return eval_concat(r, n, out);
    default: return rerr(r, "%s", "internal error: statement used as expression");
    }
}

/* ---------------------------------------------------------------- statements */
static int exec_list(rstate *r, const nlist *body);

static int output(rstate *r, const char *s, size_t n) {
    if (r->out->n + n > TMPL_MAX_STRING) return rerr(r, "%s", "rendered output too large");
    sb_put(r->out, s, n);
    return 0;
}

/* Bind `v` to a statement's targets in frame f: one name, or unpack into several. */
static int bind_targets(rstate *r, const node *n, frame *f, const tv *v) {
    if (!n->op) {
        frame_set(r, f, n->names[0], *v);
        return 0;
    }
    tv *items;
    int cnt;
    if (tv_iterate(r, v, &items, &cnt) < 0) return -1;
    if (cnt != n->nnames)
        return rerr(r, "%s values to unpack (expected %d, got %d)", cnt > n->nnames ? "too many" : "not enough", n->nnames, cnt);
    for (int i = 0; i < cnt; i++) frame_set(r, f, n->names[i], items[i]);
    return 0;
}

static int assign(rstate *r, const node *n, const tv *v) {
    if (!n->attr) return bind_targets(r, n, r->f, v);
    tv ns = lookup(r, n->names[0]);
    if (ns.kind != TV_NS) return rerr(r, "cannot assign attribute on non-namespace object '%s'", n->names[0]);
    varmap_set(r, ns.p, n->attr, *v);
    return 0;
}

/* Render `body` in a child scope into a string. */
static int render_to_string(rstate *r, const nlist *body, tv *out) {
    sbuf buf = {0};
    sbuf *saved_out = r->out;
    frame *saved_f = r->f;
    r->out = &buf;
    r->f = frame_new(r, saved_f);
    int rc = exec_list(r, body);
    r->out = saved_out;
    r->f = saved_f;
    if (rc < 0) {
        sb_free(&buf);
        return -1;
    }
    *out = tv_sbuf(r, &buf);
    return 0;
}

/* One scope object per loop, emptied at each iteration: a fresh scope per iteration as jinja
 * has, without the memory of one per iteration. */
static frame *iteration_scope(rstate *r, frame *scope, frame *outer) {
    if (!scope) return frame_new(r, outer);
    scope->vars.n = 0;
    return scope;
}

static int exec_for(rstate *r, const node *n) {
    tv seq, *items = NULL;
    int cnt;
    if (eval(r, n->a, &seq) < 0) return -1;
    r->line = n->line;
    loopstate *L = ta_alloc(&r->a, sizeof *L);
    if (tv_is_list(&seq) && !n->b) {
        L->list = seq.j;
        cnt = (int)json_array_size(seq.j);
    } else if (tv_iterate(r, &seq, &items, &cnt) < 0) {
        return -1;
    }
    frame *outer = r->f, *scope = NULL;
    if (n->b) { /* `for x in xs if cond`: filter first, so loop.length counts what remains */
        int kept = 0;
        for (int i = 0; i < cnt; i++) {
            tv ok;
            if (count_step(r) < 0) return -1;
            r->f = scope = iteration_scope(r, scope, outer);
            int rc = bind_targets(r, n, r->f, &items[i]);
            if (rc == 0) rc = eval(r, n->b, &ok);
            r->f = outer;
            if (rc < 0) return -1;
            if (tv_truthy(&ok)) items[kept++] = items[i];
        }
        cnt = kept;
    }
    L->items = items;
    L->n = cnt;
    tv loopv = {.kind = TV_LOOP, .p = L};
    for (int i = 0; i < cnt; i++) {
        if (count_step(r) < 0) return -1;
        L->i = i;
        r->f = scope = iteration_scope(r, scope, outer);
        frame_set(r, r->f, "loop", loopv);
        tv item = loop_item(L, i);
        int rc = bind_targets(r, n, r->f, &item);
        if (rc == 0) rc = exec_list(r, &n->items);
        r->f = outer;
        if (rc < 0) return -1;
        if (rc == FLOW_BREAK) break;
    }
    if (cnt == 0 && n->items2.n) {
        r->f = frame_new(r, outer);
        int rc = exec_list(r, &n->items2);
        r->f = outer;
        return rc;
    }
    return 0;
}

static int exec_call_block(rstate *r, const node *n) {
    const node *call = n->a;
    tv callee, result;
    targs args;
    if (eval(r, call->a, &callee) < 0 || eval_args(r, call, &args, 1) < 0) return -1;
    macro *caller = ta_alloc(&r->a, sizeof *caller);
    caller->def = n;
    caller->closure = r->f;
    caller->name = "caller";
    args.kwn[args.nkw] = "caller";
    args.kwv[args.nkw] = (tv){.kind = TV_MACRO, .p = caller};
    args.nkw++;
    r->line = n->line;
    if (tmpl_call(r, &callee, &args, &result) < 0) return -1;
    sbuf b = {0};
    if (tv_str_into(r, &result, &b) < 0) return -1;
    int rc = output(r, b.p ? b.p : "", b.n);
    sb_free(&b);
    return rc;
}

static int exec_node(rstate *r, const node *n) {
    tv v;
    r->line = n->line;
    switch (n->type) {
    case N_TEXT: return output(r, n->text, n->len);
    case N_OUTPUT: {
        if (eval(r, n->a, &v) < 0) return -1;
        if (tv_is_str(&v)) return output(r, tv_sdata(&v), tv_slen(&v));
        sbuf b = {0};
        int rc = tv_str_into(r, &v, &b);
        if (rc == 0) rc = output(r, b.p ? b.p : "", b.n);
        sb_free(&b);
        return rc;
    }
    case N_IF:
        if (eval(r, n->a, &v) < 0) return -1;
        return exec_list(r, tv_truthy(&v) ? &n->items : &n->items2);
    case N_FOR: return exec_for(r, n);
    case N_SET:
        if (eval(r, n->b, &v) < 0) return -1;
        r->line = n->line;
        return assign(r, n, &v);
    case N_SET_BLOCK:
        if (render_to_string(r, &n->items, &v) < 0) return -1;
        if (n->c) {
            tv body = v;
            if (eval_filter(r, n->c, &body, &v) < 0) return -1;
        }
        r->line = n->line;
        return assign(r, n, &v);
    case N_MACRO: {
        macro *m = ta_alloc(&r->a, sizeof *m);
        m->def = n;
        m->closure = r->f;
        m->name = n->name;
        frame_set(r, r->f, n->name, (tv){.kind = TV_MACRO, .p = m});
        return 0;
    }
    case N_CALL_BLOCK: return exec_call_block(r, n);
    case N_FILTER_BLOCK: {
        tv body;
        if (render_to_string(r, &n->items, &body) < 0 || eval_filter(r, n->c, &body, &v) < 0) return -1;
        sbuf b = {0};
        int rc = tv_str_into(r, &v, &b);
        if (rc == 0) rc = output(r, b.p ? b.p : "", b.n);
        sb_free(&b);
        return rc;
    }
    case N_WITH: {
        tv *vals;
        if (eval_items(r, &n->items2, &vals) < 0) return -1;
        frame *outer = r->f;
        r->f = frame_new(r, outer);
        for (int i = 0; i < n->nnames; i++) frame_set(r, r->f, n->names[i], vals[i]);
        int rc = exec_list(r, &n->items);
        r->f = outer;
        return rc;
    }
    case N_GENERATION: {
        frame *outer = r->f;
        r->f = frame_new(r, outer);
        int rc = exec_list(r, &n->items);
        r->f = outer;
        return rc;
    }
    case N_BREAK: return FLOW_BREAK;
    case N_CONTINUE: return FLOW_CONTINUE;
    default: return rerr(r, "%s", "internal error: expression used as statement");
    }
}

static int exec_list(rstate *r, const nlist *body) {
    for (int i = 0; i < body->n; i++) {
        int rc = exec_node(r, body->v[i]);
        if (rc) return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- macros */
static int param_index(const node *def, const char *name) {
    for (int i = 0; i < def->nnames; i++)
        if (!strcmp(def->names[i], name)) return i;
    return -1;
}

int tmpl_call_macro(rstate *r, macro *m, targs *a, tv *out) {
    const node *def = m->def;
    if (r->depth >= TMPL_MAX_CALL_DEPTH) return rerr(r, "macro '%s': maximum recursion depth exceeded", m->name);
    frame *f = frame_new(r, m->closure);
    int np = def->nnames;
    tv *vals = ta_alloc(&r->a, ((size_t)np + 1) * sizeof *vals);
    for (int i = 0; i < np; i++) vals[i].kind = TV_ABSENT;
    for (int i = 0; i < a->npos && i < np; i++) vals[i] = a->pos[i];
    tv varargs, kwargs = tv_new(r, json_object());
    if (tv_list_from(r, a->pos + (a->npos < np ? a->npos : np), a->npos > np ? a->npos - np : 0, &varargs) < 0) return -1;
    tv_mark_tuple(r, varargs.j);
    for (int k = 0; k < a->nkw; k++) {
        int i = param_index(def, a->kwn[k]);
        if (i >= 0) {
            if (vals[i].kind != TV_ABSENT) return rerr(r, "macro '%s' got multiple values for argument '%s'", m->name, a->kwn[k]);
            vals[i] = a->kwv[k];
        } else if (!strcmp(a->kwn[k], "caller")) {
            frame_set(r, f, "caller", a->kwv[k]);
        } else if (a->kwv[k].kind == TV_JSON) {
            json_object_set(kwargs.j, a->kwn[k], a->kwv[k].j);
        } else {
            return rerr(r, "macro '%s' got an unexpected keyword argument '%s'", m->name, a->kwn[k]);
        }
    }
    frame_set(r, f, "varargs", varargs);
    frame_set(r, f, "kwargs", kwargs);
    frame *saved_f = r->f;
    sbuf *saved_out = r->out;
    int saved_line = r->line;
    r->f = f;
    for (int i = 0; i < np; i++) { /* defaults are evaluated at call time and see earlier params */
        if (vals[i].kind == TV_ABSENT) {
            const node *d = i < def->items2.n ? def->items2.v[i] : NULL;
            if (!d) vals[i] = tv_undef(def->names[i], NULL);
            else if (eval(r, d, &vals[i]) < 0) {
                r->f = saved_f;
                return -1;
            }
        }
        frame_set(r, f, def->names[i], vals[i]);
    }
    sbuf buf = {0};
    r->out = &buf;
    r->depth++;
    int rc = exec_list(r, &def->items);
    r->depth--;
    r->f = saved_f;
    r->out = saved_out;
    if (rc < 0) {
        sb_free(&buf);
        return -1;
    }
    r->line = saved_line;
    *out = tv_sbuf(r, &buf);
    return 0;
}

/* ---------------------------------------------------------------- public entry points */
lp_template *lp_template_compile_named(const char *src, const char *name) {
    last_raised = false;
    if (!name) name = "template";
    if (!src) {
        lp_fail("%s: no template source", name);
        return NULL;
    }
    lp_template *t = lp_xcalloc(1, sizeof *t);
    t->name = ta_strndup(&t->arena, name, strlen(name));
    token *toks = NULL;
    size_t ntoks = 0;
    if (tmpl_lex(&t->arena, t->name, src, &toks, &ntoks) < 0 || tmpl_parse(t, toks, ntoks) < 0) {
        free(toks);
        lp_template_free(t);
        return NULL;
    }
    free(toks);
    return t;
}

lp_template *lp_template_compile(const char *src) { return lp_template_compile_named(src, NULL); }

void lp_template_free(lp_template *t) {
    if (!t) return;
    ta_free(&t->arena);
    free(t);
}

char *lp_template_render(const lp_template *t, const json_t *context, size_t *len_out) {
    last_raised = false;
    if (!t) {
        lp_fail("template: nothing to render");
        return NULL;
    }
    if (context && !json_is_object(context)) {
        lp_fail("%s: render context must be a JSON object", t->name);
        return NULL;
    }
    rstate r = {.t = t, .ctx = context, .line = 1};
    sbuf out = {0};
    r.root = r.f = frame_new(&r, NULL);
    r.out = &out;
    int rc = exec_list(&r, &t->body);
    last_raised = r.raised;
    ta_free(&r.a);
    if (rc < 0) {
        sb_free(&out);
        return NULL;
    }
    if (!out.p) sb_put(&out, "", 0);
    if (len_out) *len_out = out.n;
    return out.p;
}
