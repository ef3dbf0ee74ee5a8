/* parser.c — builds the syntax tree from tokens, following jinja2's Parser grammar and
 * precedence: condexpr > or > and > not > comparisons (chained, `in`, `not in`) > + - > ~ >
 * * / // % > ** > unary -/+ > postfix (.attr, [sub], call) with filters `|f` and tests `is t`
 * binding tightest. Statements: if/elif/else, for (targets, `if` filter, else), set (also
 * `ns.attr` and block form), macro, call, filter, with, print, raw, break/continue and
 * transformers' generation tag. Tags jinja has but chat templates never use (extends, block,
 * include, import, autoescape) are reported by name. */
#include "template/tmpl_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    lp_template *t;
    const token *tk;
    size_t n, i;
    int depth;      /* recursion guard */
    int loop_depth; /* for break/continue */
} parser;

typedef struct {
    node **v;
    int n, cap;
} nvec;

static int pfail(parser *P, const char *fmt, ...) LP_PRINTF(2, 3);
static int pfail(parser *P, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lp_fail("%s:%d: %s", P->t->name, P->tk[P->i].line, msg);
}

static const token *cur(const parser *P) { return &P->tk[P->i]; }
static const token *peek(const parser *P) { return &P->tk[P->i + 1 < P->n ? P->i + 1 : P->n - 1]; }
static void next(parser *P) {
    if (P->i + 1 < P->n) P->i++;
}

static bool tok_is(const token *k, int type, const char *spelling) {
    return k->type == type && (!spelling || (k->len == strlen(spelling) && memcmp(k->s, spelling, k->len) == 0));
}
static bool is_op(const parser *P, const char *op) { return tok_is(cur(P), TK_OP, op); }
static bool is_name(const parser *P, const char *kw) { return tok_is(cur(P), TK_NAME, kw); }

static bool skip_op(parser *P, const char *op) {
    if (!is_op(P, op)) return false;
    next(P);
    return true;
}
static bool skip_name(parser *P, const char *kw) {
    if (!is_name(P, kw)) return false;
    next(P);
    return true;
}

static const char *describe(const token *k) {
    static _Thread_local char buf[64];
    switch (k->type) {
    case TK_EOF: return "end of template";
    case TK_DATA: return "template data";
    case TK_BLOCK_BEGIN: return "begin of statement block";
    case TK_BLOCK_END: return "end of statement block";
    case TK_VAR_BEGIN: return "begin of print statement";
    case TK_VAR_END: return "end of print statement";
    case TK_STRING: return "string";
    case TK_INT: return "integer";
    case TK_FLOAT: return "float";
    default:
        snprintf(buf, sizeof buf, "'%.*s'", (int)(k->len > 40 ? 40 : k->len), k->s);
        return buf;
    }
}

static int expect_op(parser *P, const char *op) {
    if (skip_op(P, op)) return 0;
    return pfail(P, "expected '%s', got %s", op, describe(cur(P)));
}

static int expect_type(parser *P, int type, const char *what) {
    if (cur(P)->type == type) {
        next(P);
        return 0;
    }
    return pfail(P, "expected %s, got %s", what, describe(cur(P)));
}

static node *mk(parser *P, node_type type, int line) {
    node *n = ta_alloc(&P->t->arena, sizeof *n);
    n->type = type;
    n->line = line;
    return n;
}

static const char *tok_str(parser *P, const token *k) { return ta_strndup(&P->t->arena, k->s, k->len); }

static void push(parser *P, nvec *v, node *x) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 4;
        node **nv = ta_alloc(&P->t->arena, (size_t)cap * sizeof *nv);
        if (v->n) memcpy(nv, v->v, (size_t)v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}
static nlist as_list(nvec v) { return (nlist){v.v, v.n}; }

static node *parse_expr(parser *P, bool with_condexpr);
static node *parse_unary(parser *P, bool with_filter);
static node *parse_primary(parser *P);
static node *parse_postfix(parser *P, node *n);
static node *parse_tuple(parser *P, bool simplified, bool with_condexpr, const char *extra_end, bool explicit_parens);
static int parse_body(parser *P, const char *const *end_names, nvec *body);

static bool enter(parser *P) {
    if (++P->depth > TMPL_MAX_NESTING) {
        pfail(P, "%s", "expression or statements nested too deeply");
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- call arguments */
typedef struct {
    nvec pos, kwv;
    const char **kwn;
    int nkw, capkw;
} argsvec;

static int parse_call_args(parser *P, argsvec *A) {
    if (expect_op(P, "(") < 0) return -1;
    bool need_comma = false;
    while (!is_op(P, ")")) {
        if (need_comma) {
            if (expect_op(P, ",") < 0) return -1;
            if (is_op(P, ")")) break;
        }
        if (is_op(P, "*") || is_op(P, "**")) return pfail(P, "%s", "*args / **kwargs in calls are not supported");
        if (cur(P)->type == TK_NAME && tok_is(peek(P), TK_OP, "=")) {
            if (A->nkw == A->capkw) {
                int cap = A->capkw ? A->capkw * 2 : 4;
                const char **nk = ta_alloc(&P->t->arena, (size_t)cap * sizeof *nk);
                if (A->nkw) memcpy(nk, A->kwn, (size_t)A->nkw * sizeof *nk);
                A->kwn = nk;
                A->capkw = cap;
            }
            A->kwn[A->nkw++] = tok_str(P, cur(P));
            next(P);
            next(P);
            node *v = parse_expr(P, true);
            if (!v) return -1;
            push(P, &A->kwv, v);
        } else {
            if (A->nkw) return pfail(P, "%s", "positional argument follows keyword argument");
            node *v = parse_expr(P, true);
            if (!v) return -1;
            push(P, &A->pos, v);
        }
        need_comma = true;
    }
    return expect_op(P, ")");
}

static void attach_args(node *n, argsvec *A) {
    n->items = as_list(A->pos);
    n->kwvals = as_list(A->kwv);
    n->kwnames = A->kwn;
}

/* ---------------------------------------------------------------- expressions */
static node *parse_primary(parser *P) {
    const token *k = cur(P);
    int line = k->line;
    node *n;
    if (k->type == TK_NAME) {
        n = mk(P, N_CONST, line);
        if (tok_is(k, TK_NAME, "true") || tok_is(k, TK_NAME, "True")) n->value = json_true();
        else if (tok_is(k, TK_NAME, "false") || tok_is(k, TK_NAME, "False")) n->value = json_false();
        else if (tok_is(k, TK_NAME, "none") || tok_is(k, TK_NAME, "None")) n->value = json_null();
        else {
            n->type = N_NAME;
            n->name = tok_str(P, k);
        }
        next(P);
        return n;
    }
    if (k->type == TK_STRING) { /* adjacent literals concatenate */
        sbuf b = {0};
        while (cur(P)->type == TK_STRING) {
            sb_put(&b, cur(P)->s, cur(P)->len);
            next(P);
        }
        n = mk(P, N_CONST, line);
        n->value = ta_own(&P->t->arena, json_stringn_nocheck(b.p ? b.p : "", b.n));
        sb_free(&b);
        return n;
    }
    if (k->type == TK_INT || k->type == TK_FLOAT) {
        n = mk(P, N_CONST, line);
        n->value = ta_own(&P->t->arena, k->type == TK_INT ? json_integer(k->ival) : json_real(k->fval));
        next(P);
        if (!n->value) return pfail(P, "%s", "float literal out of range"), NULL;
        return n;
    }
    if (tok_is(k, TK_OP, "(")) {
        next(P);
        n = parse_tuple(P, false, true, NULL, true);
        if (!n || expect_op(P, ")") < 0) return NULL;
        return n;
    }
    if (tok_is(k, TK_OP, "[")) {
        next(P);
        nvec items = {0};
        while (!is_op(P, "]")) {
            if (items.n && expect_op(P, ",") < 0) return NULL;
            if (is_op(P, "]")) break;
            node *x = parse_expr(P, true);
            if (!x) return NULL;
            push(P, &items, x);
        }
        next(P);
        n = mk(P, N_LIST, line);
        n->items = as_list(items);
        return n;
    }
    if (tok_is(k, TK_OP, "{")) {
        next(P);
        nvec keys = {0}, vals = {0};
        while (!is_op(P, "}")) {
            if (keys.n && expect_op(P, ",") < 0) return NULL;
            if (is_op(P, "}")) break;
            node *key = parse_expr(P, true);
            if (!key || expect_op(P, ":") < 0) return NULL;
            node *val = parse_expr(P, true);
            if (!val) return NULL;
            push(P, &keys, key);
            push(P, &vals, val);
        }
        next(P);
        n = mk(P, N_DICT, line);
        n->items = as_list(keys);
        n->items2 = as_list(vals);
        return n;
    }
    pfail(P, "unexpected %s", describe(k));
    return NULL;
}

/* One subscript: an expression or a slice a:b:c with optional parts. */
static node *parse_subscribed(parser *P, node *obj, int line) {
    node *parts[3] = {NULL, NULL, NULL};
    if (!is_op(P, ":")) {
        parts[0] = parse_expr(P, true);
        if (!parts[0]) return NULL;
        if (!is_op(P, ":")) {
            node *n = mk(P, N_GETITEM, line);
            n->a = obj;
            n->b = parts[0];
            return n;
        }
    }
    next(P); /* the first ':' */
    if (!is_op(P, ":") && !is_op(P, "]") && !is_op(P, ",")) {
        if (!(parts[1] = parse_expr(P, true))) return NULL;
    }
    if (skip_op(P, ":") && !is_op(P, "]") && !is_op(P, ",")) {
        if (!(parts[2] = parse_expr(P, true))) return NULL;
    }
    node *n = mk(P, N_SLICE, line);
    n->a = obj;
    n->items.v = ta_alloc(&P->t->arena, 3 * sizeof(node *));
    memcpy(n->items.v, parts, sizeof parts);
    n->items.n = 3;
    return n;
}

static node *parse_postfix(parser *P, node *n) {
    for (;;) {
        int line = cur(P)->line;
        if (skip_op(P, ".")) {
            const token *k = cur(P);
            if (k->type == TK_NAME) {
                node *g = mk(P, N_GETATTR, line);
                g->a = n;
                g->name = tok_str(P, k);
                next(P);
                n = g;
            } else if (k->type == TK_INT) { /* x.0 means x[0] */
                node *g = mk(P, N_GETITEM, line);
                g->a = n;
                g->b = mk(P, N_CONST, line);
                g->b->value = ta_own(&P->t->arena, json_integer(k->ival));
                next(P);
                n = g;
            } else {
                pfail(P, "expected name or number after '.', got %s", describe(k));
                return NULL;
            }
        } else if (skip_op(P, "[")) {
            if (is_op(P, "]")) return pfail(P, "%s", "empty subscript"), NULL;
            node *s = parse_subscribed(P, n, line);
            if (!s) return NULL;
            if (is_op(P, ",")) return pfail(P, "%s", "tuple subscripts are not supported"), NULL;
            if (expect_op(P, "]") < 0) return NULL;
            n = s;
        } else if (is_op(P, "(")) {
            argsvec A = {0};
            if (parse_call_args(P, &A) < 0) return NULL;
            node *c = mk(P, N_CALL, line);
            c->a = n;
            attach_args(c, &A);
            n = c;
        } else {
            return n;
        }
    }
}

/* `| name(args)` repeated; `start_inline` for {% filter name %} and {% set x | name %}. */
static node *parse_filters(parser *P, node *n, bool start_inline) {
    while (start_inline || is_op(P, "|")) {
        if (!start_inline) next(P);
        start_inline = false;
        int line = cur(P)->line;
        if (cur(P)->type != TK_NAME) return pfail(P, "expected filter name, got %s", describe(cur(P))), NULL;
        node *f = mk(P, N_FILTER, line);
        f->a = n;
        f->name = tok_str(P, cur(P));
        next(P);
        if (is_op(P, ".")) return pfail(P, "%s", "dotted filter names are not supported"), NULL;
        if (is_op(P, "(")) {
            argsvec A = {0};
            if (parse_call_args(P, &A) < 0) return NULL;
            attach_args(f, &A);
        }
        f->impl = tmpl_find_filter(f->name);
        n = f;
    }
    return n;
}

static node *parse_test(parser *P, node *n) {
    int line = cur(P)->line;
    next(P); /* is */
    bool negated = skip_name(P, "not");
    if (cur(P)->type != TK_NAME) return pfail(P, "expected test name, got %s", describe(cur(P))), NULL;
    node *t = mk(P, N_TEST, line);
    t->a = n;
    t->name = tok_str(P, cur(P));
    next(P);
    const token *k = cur(P);
    if (tok_is(k, TK_OP, "(")) {
        argsvec A = {0};
        if (parse_call_args(P, &A) < 0) return NULL;
        attach_args(t, &A);
    } else if ((k->type == TK_NAME || k->type == TK_STRING || k->type == TK_INT || k->type == TK_FLOAT ||
                tok_is(k, TK_OP, "[") || tok_is(k, TK_OP, "{")) &&
               !tok_is(k, TK_NAME, "else") && !tok_is(k, TK_NAME, "or") && !tok_is(k, TK_NAME, "and")) {
        if (tok_is(k, TK_NAME, "is")) return pfail(P, "%s", "you cannot chain multiple tests with is"), NULL;
        node *arg = parse_primary(P);
        if (!arg || !(arg = parse_postfix(P, arg))) return NULL;
        nvec one = {0};
        push(P, &one, arg);
        t->items = as_list(one);
    }
    t->impl = tmpl_find_test(t->name);
    if (!negated) return t;
    node *no = mk(P, N_NOT, line);
    no->a = t;
    return no;
}

static node *parse_unary(parser *P, bool with_filter) {
    if (!enter(P)) return NULL;
    int line = cur(P)->line;
    node *n;
    if (is_op(P, "-") || is_op(P, "+")) {
        bool neg = is_op(P, "-");
        next(P);
        node *x = parse_unary(P, false);
        if (!x) return NULL;
        n = mk(P, neg ? N_NEG : N_POS, line);
        n->a = x;
    } else {
        n = parse_primary(P);
    }
    if (n) n = parse_postfix(P, n);
    while (n && with_filter) {
        if (is_op(P, "|")) n = parse_filters(P, n, false);
        else if (is_name(P, "is")) n = parse_test(P, n);
        else if (is_op(P, "(")) n = parse_postfix(P, n);
        else break;
    }
    P->depth--;
    return n;
}

static node *binop(parser *P, int op, node *l, node *r, int line) {
    node *n = mk(P, N_BINOP, line);
    n->op = op;
    n->a = l;
    n->b = r;
    return n;
}

static node *parse_pow(parser *P) {
    node *l = parse_unary(P, true);
    while (l && is_op(P, "**")) {
        int line = cur(P)->line;
        next(P);
        node *r = parse_unary(P, true);
        l = r ? binop(P, OP_POW, l, r, line) : NULL;
    }
    return l;
}

static node *parse_math2(parser *P) {
    node *l = parse_pow(P);
    while (l) {
        int op = is_op(P, "*") ? '*' : is_op(P, "/") ? '/' : is_op(P, "//") ? OP_FLOORDIV : is_op(P, "%") ? '%' : 0;
        if (!op) break;
        int line = cur(P)->line;
        next(P);
        node *r = parse_pow(P);
        l = r ? binop(P, op, l, r, line) : NULL;
    }
    return l;
}

static node *parse_concat(parser *P) {
    int line = cur(P)->line;
    node *first = parse_math2(P);
    if (!first || !is_op(P, "~")) return first;
    nvec parts = {0};
    push(P, &parts, first);
    while (skip_op(P, "~")) {
        node *x = parse_math2(P);
        if (!x) return NULL;
        push(P, &parts, x);
    }
    node *n = mk(P, N_CONCAT, line);
    n->items = as_list(parts);
    return n;
}

static node *parse_math1(parser *P) {
    node *l = parse_concat(P);
    while (l && (is_op(P, "+") || is_op(P, "-"))) {
        int op = is_op(P, "+") ? '+' : '-';
        int line = cur(P)->line;
        next(P);
        node *r = parse_concat(P);
        l = r ? binop(P, op, l, r, line) : NULL;
    }
    return l;
}

static int compare_op(parser *P) {
    static const struct {
        const char *s;
        int op;
    } ops[] = {{"==", OP_EQ}, {"!=", OP_NE}, {"<", OP_LT}, {"<=", OP_LE}, {">", OP_GT}, {">=", OP_GE}};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (is_op(P, ops[i].s)) {
            next(P);
            return ops[i].op;
        }
    if (skip_name(P, "in")) return OP_IN;
    if (is_name(P, "not") && tok_is(peek(P), TK_NAME, "in")) {
        next(P);
        next(P);
        return OP_NOTIN;
    }
    return 0;
}

static node *parse_compare(parser *P) {
    int line = cur(P)->line;
    node *first = parse_math1(P);
    if (!first) return NULL;
    int op = compare_op(P);
    if (!op) return first;
    nvec operands = {0};
    int *ops = NULL, nops = 0, cap = 0;
    do {
        if (nops == cap) {
            cap = cap ? cap * 2 : 4;
            int *no = ta_alloc(&P->t->arena, (size_t)cap * sizeof *no);
            if (nops) memcpy(no, ops, (size_t)nops * sizeof *no);
            ops = no;
        }
        ops[nops++] = op;
        node *x = parse_math1(P);
        if (!x) return NULL;
        push(P, &operands, x);
    } while ((op = compare_op(P)));
    node *n = mk(P, N_COMPARE, line);
    n->a = first;
    n->items = as_list(operands);
    n->ops = ops;
    return n;
}

static node *parse_not(parser *P) {
    if (is_name(P, "not")) {
        int line = cur(P)->line;
        next(P);
        if (!enter(P)) return NULL;
        node *x = parse_not(P);
        P->depth--;
        if (!x) return NULL;
        node *n = mk(P, N_NOT, line);
        n->a = x;
        return n;
    }
    return parse_compare(P);
}

static node *logic(parser *P, node_type type, node *(*operand)(parser *), const char *kw) {
    node *l = operand(P);
    while (l && is_name(P, kw)) {
        int line = cur(P)->line;
        next(P);
        node *r = operand(P);
        if (!r) return NULL;
        node *n = mk(P, type, line);
        n->a = l;
        n->b = r;
        l = n;
    }
    return l;
}
static node *parse_and(parser *P) { return logic(P, N_AND, parse_not, "and"); }
static node *parse_or(parser *P) { return logic(P, N_OR, parse_and, "or"); }

static node *parse_expr(parser *P, bool with_condexpr) {
    if (!enter(P)) return NULL;
    node *n = parse_or(P);
    while (n && with_condexpr && is_name(P, "if")) {
        int line = cur(P)->line;
        next(P);
        node *c = mk(P, N_COND, line);
        c->b = n;
        if (!(c->a = parse_or(P))) return NULL;
        if (skip_name(P, "else") && !(c->c = parse_expr(P, true))) return NULL;
        n = c;
    }
    P->depth--;
    return n;
}

static bool tuple_end(parser *P, const char *extra_end) {
    int ty = cur(P)->type;
    return ty == TK_VAR_END || ty == TK_BLOCK_END || ty == TK_EOF || is_op(P, ")") || (extra_end && is_name(P, extra_end));
}

/* An expression, or a tuple if commas follow (`a, b` in for/set targets and values). */
static node *parse_tuple(parser *P, bool simplified, bool with_condexpr, const char *extra_end, bool explicit_parens) {
    int line = cur(P)->line;
    nvec items = {0};
    bool is_tuple = false;
    for (;;) {
        if (items.n && expect_op(P, ",") < 0) return NULL;
        if (tuple_end(P, extra_end)) break;
        node *x = simplified ? parse_primary(P) : parse_expr(P, with_condexpr);
        if (!x) return NULL;
        push(P, &items, x);
        if (is_op(P, ",")) is_tuple = true;
        else break;
    }
    if (!is_tuple) {
        if (items.n) return items.v[0];
        if (!explicit_parens) return pfail(P, "expected an expression, got %s", describe(cur(P))), NULL;
    }
    node *n = mk(P, N_TUPLE, line);
    n->items = as_list(items);
    return n;
}

/* ---------------------------------------------------------------- statements */
/* Assignment targets: a name, names separated by commas, or (with_ns) `name.attr`. */
static int parse_targets(parser *P, node *n, bool with_ns, const char *extra_end) {
    if (with_ns && cur(P)->type == TK_NAME && tok_is(peek(P), TK_OP, ".")) {
        n->names = ta_alloc(&P->t->arena, sizeof *n->names);
        n->names[0] = tok_str(P, cur(P));
        n->nnames = 1;
        next(P);
        next(P);
        if (cur(P)->type != TK_NAME) return pfail(P, "expected attribute name, got %s", describe(cur(P)));
        n->attr = tok_str(P, cur(P));
        next(P);
        return 0;
    }
    bool paren = skip_op(P, "(");
    int cap = 4;
    n->names = ta_alloc(&P->t->arena, (size_t)cap * sizeof *n->names);
    for (;;) {
        if (cur(P)->type != TK_NAME) return pfail(P, "expected a name to assign to, got %s", describe(cur(P)));
        const token *k = cur(P);
        static const char *const reserved[] = {"true", "false", "none", "True", "False", "None"};
        for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
            if (tok_is(k, TK_NAME, reserved[i])) return pfail(P, "cannot assign to %s", reserved[i]);
        if (n->nnames == cap) {
            const char **nn = ta_alloc(&P->t->arena, (size_t)cap * 2 * sizeof *nn);
            memcpy(nn, n->names, (size_t)cap * sizeof *nn);
            n->names = nn;
            cap *= 2;
        }
        n->names[n->nnames++] = tok_str(P, k);
        next(P);
        if (!skip_op(P, ",")) break;
        if ((paren && is_op(P, ")")) || tuple_end(P, extra_end) || is_op(P, "=")) break;
    }
    if (paren && expect_op(P, ")") < 0) return -1;
    n->op = n->nnames > 1 || paren; /* unpack even a 1-tuple written with parentheses */
    return 0;
}

/* Macro / call-block signature: (a, b=default, ...). */
static int parse_signature(parser *P, node *n) {
    if (expect_op(P, "(") < 0) return -1;
    nvec defaults = {0}; /* one entry per parameter, NULL where there is no default */
    bool seen_default = false;
    int cap = 4;
    n->names = ta_alloc(&P->t->arena, (size_t)cap * sizeof *n->names);
    while (!is_op(P, ")")) {
        if (n->nnames && expect_op(P, ",") < 0) return -1;
        if (cur(P)->type != TK_NAME) return pfail(P, "expected parameter name, got %s", describe(cur(P)));
        if (n->nnames == cap) {
            const char **nn = ta_alloc(&P->t->arena, (size_t)cap * 2 * sizeof *nn);
            memcpy(nn, n->names, (size_t)cap * sizeof *nn);
            n->names = nn;
            cap *= 2;
        }
        n->names[n->nnames++] = tok_str(P, cur(P));
        next(P);
        if (skip_op(P, "=")) {
            node *d = parse_expr(P, true);
            if (!d) return -1;
            push(P, &defaults, d);
            seen_default = true;
        } else if (seen_default) {
            return pfail(P, "%s", "non-default argument follows default argument");
        } else {
            push(P, &defaults, NULL);
        }
    }
    n->items2 = as_list(defaults);
    return expect_op(P, ")");
}

static int expect_block_end(parser *P) { return expect_type(P, TK_BLOCK_END, "end of statement block"); }

/* Body up to one of end_names; leaves the parser on that name. */
static int parse_statements(parser *P, const char *const *end_names, nvec *body) {
    if (expect_block_end(P) < 0) return -1;
    if (parse_body(P, end_names, body) < 0) return -1;
    if (cur(P)->type == TK_EOF) {
        return pfail(P, "unexpected end of template: expected '%s'", end_names[0]);
    }
    return 0;
}

/* Body up to `end`, then consume `end`. */
static int parse_block(parser *P, const char *end, nvec *body) {
    const char *const ends[] = {end, NULL};
    if (parse_statements(P, ends, body) < 0) return -1;
    next(P);
    return 0;
}

static node *parse_if(parser *P, int line) {
    node *top = NULL, *cur_if = NULL;
    for (;;) {
        node *n = mk(P, N_IF, line);
        if (!(n->a = parse_tuple(P, false, false, NULL, false))) return NULL;
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        nvec body = {0};
        if (parse_statements(P, ends, &body) < 0) return NULL;
        n->items = as_list(body);
        if (cur_if) {
            nvec e = {0};
            push(P, &e, n);
            cur_if->items2 = as_list(e);
        } else {
            top = n;
        }
        cur_if = n;
        if (skip_name(P, "elif")) {
            line = cur(P)->line;
            continue;
        }
        if (skip_name(P, "else")) {
            nvec els = {0};
            if (parse_block(P, "endif", &els) < 0) return NULL;
            n->items2 = as_list(els);
        } else {
            next(P); /* endif */
        }
        return top;
    }
}

static node *parse_for(parser *P, int line) {
    node *n = mk(P, N_FOR, line);
    if (parse_targets(P, n, false, "in") < 0) return NULL;
    if (!skip_name(P, "in")) return pfail(P, "expected 'in', got %s", describe(cur(P))), NULL;
    if (!(n->a = parse_tuple(P, false, false, "recursive", false))) return NULL;
    if (skip_name(P, "if") && !(n->b = parse_expr(P, true))) return NULL;
    if (is_name(P, "recursive")) return pfail(P, "%s", "recursive for loops are not supported"), NULL;
    static const char *const ends[] = {"endfor", "else", NULL};
    nvec body = {0}, els = {0};
    P->loop_depth++;
    int rc = parse_statements(P, ends, &body);
    P->loop_depth--;
    if (rc < 0) return NULL;
    if (skip_name(P, "else")) {
        if (parse_block(P, "endfor", &els) < 0) return NULL;
    } else {
        next(P);
    }
    n->items = as_list(body);
    n->items2 = as_list(els);
    return n;
}

static node *parse_set(parser *P, int line) {
    node *n = mk(P, N_SET, line);
    if (parse_targets(P, n, true, NULL) < 0) return NULL;
    if (skip_op(P, "=")) {
        n->b = parse_tuple(P, false, true, NULL, false);
        return n->b ? n : NULL;
    }
    n->type = N_SET_BLOCK;
    if (is_op(P, "|") && !(n->c = parse_filters(P, NULL, false))) return NULL;
    nvec body = {0};
    if (parse_block(P, "endset", &body) < 0) return NULL;
    n->items = as_list(body);
    return n;
}

static node *parse_macro(parser *P, int line) {
    node *n = mk(P, N_MACRO, line);
    if (cur(P)->type != TK_NAME) return pfail(P, "expected macro name, got %s", describe(cur(P))), NULL;
    n->name = tok_str(P, cur(P));
    next(P);
    if (parse_signature(P, n) < 0) return NULL;
    int saved = P->loop_depth;
    P->loop_depth = 0;
    nvec body = {0};
    int rc = parse_block(P, "endmacro", &body);
    P->loop_depth = saved;
    if (rc < 0) return NULL;
    n->items = as_list(body);
    return n;
}

static node *parse_call_block(parser *P, int line) {
    node *n = mk(P, N_CALL_BLOCK, line);
    if (is_op(P, "(") && parse_signature(P, n) < 0) return NULL;
    if (!(n->a = parse_expr(P, true))) return NULL;
    if (n->a->type != N_CALL) return pfail(P, "%s", "expected a call after {% call %}"), NULL;
    int saved = P->loop_depth;
    P->loop_depth = 0;
    nvec body = {0};
    int rc = parse_block(P, "endcall", &body);
    P->loop_depth = saved;
    if (rc < 0) return NULL;
    n->items = as_list(body);
    return n;
}

static node *parse_with(parser *P, int line) {
    node *n = mk(P, N_WITH, line);
    nvec vals = {0};
    int cap = 4;
    n->names = ta_alloc(&P->t->arena, (size_t)cap * sizeof *n->names);
    while (cur(P)->type != TK_BLOCK_END) {
        if (n->nnames && expect_op(P, ",") < 0) return NULL;
        if (cur(P)->type != TK_NAME) return pfail(P, "expected a name, got %s", describe(cur(P))), NULL;
        if (n->nnames == cap) {
            const char **nn = ta_alloc(&P->t->arena, (size_t)cap * 2 * sizeof *nn);
            memcpy(nn, n->names, (size_t)cap * sizeof *nn);
            n->names = nn;
            cap *= 2;
        }
        n->names[n->nnames++] = tok_str(P, cur(P));
        next(P);
        if (expect_op(P, "=") < 0) return NULL;
        node *v = parse_expr(P, true);
        if (!v) return NULL;
        push(P, &vals, v);
    }
    n->items2 = as_list(vals);
    nvec body = {0};
    if (parse_block(P, "endwith", &body) < 0) return NULL;
    n->items = as_list(body);
    return n;
}

/* A statement after `{%`; the closing `%}` is left for the caller. */
static node *parse_statement(parser *P) {
    const token *k = cur(P);
    int line = k->line;
    if (k->type != TK_NAME) return pfail(P, "tag name expected, got %s", describe(k)), NULL;
    next(P);
    if (tok_is(k, TK_NAME, "if")) return parse_if(P, line);
    if (tok_is(k, TK_NAME, "for")) return parse_for(P, line);
    if (tok_is(k, TK_NAME, "set")) return parse_set(P, line);
    if (tok_is(k, TK_NAME, "macro")) return parse_macro(P, line);
    if (tok_is(k, TK_NAME, "call")) return parse_call_block(P, line);
    if (tok_is(k, TK_NAME, "with")) return parse_with(P, line);
    if (tok_is(k, TK_NAME, "print")) {
        node *n = mk(P, N_OUTPUT, line);
        return (n->a = parse_tuple(P, false, true, NULL, false)) ? n : NULL;
    }
    if (tok_is(k, TK_NAME, "filter")) {
        node *n = mk(P, N_FILTER_BLOCK, line);
        if (!(n->c = parse_filters(P, NULL, true))) return NULL;
        nvec body = {0};
        if (parse_block(P, "endfilter", &body) < 0) return NULL;
        n->items = as_list(body);
        return n;
    }
    if (tok_is(k, TK_NAME, "generation")) {
        node *n = mk(P, N_GENERATION, line);
        nvec body = {0};
        if (parse_block(P, "endgeneration", &body) < 0) return NULL;
        n->items = as_list(body);
        return n;
    }
    if (tok_is(k, TK_NAME, "break") || tok_is(k, TK_NAME, "continue")) {
        if (!P->loop_depth) return pfail(P, "'%.*s' outside of a loop", (int)k->len, k->s), NULL;
        return mk(P, tok_is(k, TK_NAME, "break") ? N_BREAK : N_CONTINUE, line);
    }
    static const char *const unsupported[] = {"extends", "block", "include", "import", "from", "autoescape", "do"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++)
        if (tok_is(k, TK_NAME, unsupported[i])) return pfail(P, "tag '%s' is not supported", unsupported[i]), NULL;
    return pfail(P, "unknown tag '%.*s'", (int)(k->len > 40 ? 40 : k->len), k->s), NULL;
}

static bool is_end_name(const parser *P, const char *const *end_names) {
    for (; end_names && *end_names; end_names++)
        if (is_name(P, *end_names)) return true;
    return false;
}

static int parse_body(parser *P, const char *const *end_names, nvec *body) {
    if (!enter(P)) return -1;
    for (;;) {
        const token *k = cur(P);
        if (k->type == TK_EOF) break;
        if (k->type == TK_DATA) {
            node *n = mk(P, N_TEXT, k->line);
            n->text = k->s;
            n->len = k->len;
            push(P, body, n);
            next(P);
        } else if (k->type == TK_VAR_BEGIN) {
            next(P);
            node *n = mk(P, N_OUTPUT, k->line);
            if (!(n->a = parse_tuple(P, false, true, NULL, false))) return -1;
            if (expect_type(P, TK_VAR_END, "end of print statement ('}}')") < 0) return -1;
            push(P, body, n);
        } else if (k->type == TK_BLOCK_BEGIN) {
            next(P);
            if (is_end_name(P, end_names)) break;
            node *n = parse_statement(P);
            if (!n || expect_block_end(P) < 0) return -1;
            push(P, body, n);
        } else {
            return pfail(P, "unexpected %s", describe(k));
        }
    }
    P->depth--;
    return 0;
}

int tmpl_parse(lp_template *t, const token *toks, size_t ntoks) {
    parser P = {.t = t, .tk = toks, .n = ntoks};
    nvec body = {0};
    if (parse_body(&P, NULL, &body) < 0) return -1;
    t->body = as_list(body);
    return 0;
}
