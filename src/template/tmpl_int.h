/* tmpl_int.h — internals shared by the template engine's files: arena, byte buffer, tokens,
 * syntax tree, runtime values and the render state. Not a public header. */
#ifndef LP_TMPL_INT_H
#define LP_TMPL_INT_H

#include "core/err.h"
#include "template/template.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits that keep hostile templates from hanging or exhausting memory. Python/Jinja has
 * similar ceilings (RecursionError, the sandbox's MAX_RANGE). */
#define TMPL_MAX_NESTING 200            /* parser recursion (brackets, nested tags) */
#define TMPL_MAX_CALL_DEPTH 256         /* macro recursion */
#define TMPL_MAX_RANGE 100000           /* range() length, as jinja2.sandbox.MAX_RANGE */
#define TMPL_MAX_STEPS 20000000LL       /* loop iterations + calls per render */
#define TMPL_MAX_STRING (256u << 20)    /* any string or output we build */
#define TMPL_MAX_MEMORY (512ull << 20)  /* estimated bytes one render may hold */

/* ---------------------------------------------------------------- arena */
/* Everything a template or a render allocates lives until the arena is freed, which lets the
 * evaluator pass values around without reference counting. JSON values created during a render
 * are registered here and released at the end. */
typedef struct ta_chunk ta_chunk;
typedef struct {
    ta_chunk *head;
    json_t **json;
    size_t njson, capjson;
    size_t bytes; /* estimate of what the arena holds, for the memory ceiling */
} tarena;

void *ta_alloc(tarena *a, size_t n); /* zeroed, 16-byte aligned */
char *ta_strndup(tarena *a, const char *s, size_t n);
json_t *ta_own(tarena *a, json_t *j); /* takes the caller's reference; returns j */
void ta_free(tarena *a);

/* ---------------------------------------------------------------- byte buffer */
typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

void sb_put(sbuf *b, const char *s, size_t n);
void sb_puts(sbuf *b, const char *s);
void sb_putc(sbuf *b, char c);
void sb_printf(sbuf *b, const char *fmt, ...) LP_PRINTF(2, 3);
void sb_free(sbuf *b);

/* ---------------------------------------------------------------- UTF-8 and Python text rules */
/* Code points. Bytes that are not valid UTF-8 decode to 0xDC80+byte (Python's surrogateescape)
 * and encode back to the same byte, so slicing never corrupts text. */
int32_t u8_next(const char *s, size_t n, size_t *i);
void u8_put(sbuf *b, int32_t cp);
size_t u8_count(const char *s, size_t n);
size_t u8_offset(const char *s, size_t n, size_t cp_index); /* byte offset of a code point */
bool py_isspace(int32_t cp);                                 /* str.isspace() */
void py_float_repr(double d, sbuf *b);                       /* repr(float) */

/* ---------------------------------------------------------------- tokens */
enum {
    TK_EOF,
    TK_DATA,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP
};

typedef struct {
    int type, line;
    const char *s; /* DATA/STRING: decoded text; NAME/OP: spelling (not NUL-terminated) */
    size_t len;
    long long ival;
    double fval;
} token;

int tmpl_lex(tarena *a, const char *name, const char *src, token **toks, size_t *ntoks);

/* ---------------------------------------------------------------- syntax tree */
typedef enum {
    /* expressions */
    N_CONST,   /* value */
    N_NAME,    /* name */
    N_GETATTR, /* a.name */
    N_GETITEM, /* a[b] */
    N_SLICE,   /* a[items[0]:items[1]:items[2]], entries may be NULL */
    N_CALL,    /* a(items..., kw...) */
    N_FILTER,  /* a | name(items..., kw...); a NULL in filter blocks = the block's text */
    N_TEST,    /* a is name(items...) */
    N_BINOP,   /* a op b: op is a character of + - * / % or OP_FLOORDIV, OP_POW */
    N_NEG,     /* -a */
    N_POS,     /* +a */
    N_NOT,     /* not a */
    N_AND,     /* a and b */
    N_OR,      /* a or b */
    N_COMPARE, /* a ops[0] items[0] ops[1] items[1] ... */
    N_COND,    /* b if a else c (c may be NULL) */
    N_LIST,    /* [items] */
    N_TUPLE,   /* (items) */
    N_DICT,    /* {items[i]: items2[i]} */
    N_CONCAT,  /* items[0] ~ items[1] ~ ... */
    /* statements */
    N_TEXT,         /* text/len */
    N_OUTPUT,       /* {{ a }} */
    N_IF,           /* if a: items else items2 */
    N_FOR,          /* for names in a [if b]: items else items2 */
    N_SET,          /* names = b, or (attr != NULL) names[0].attr = b */
    N_SET_BLOCK,    /* names (or names[0].attr) = render(items) | filter chain c */
    N_MACRO,        /* macro name(names = items2 defaults): items */
    N_CALL_BLOCK,   /* call(names = items2) a: items — the body becomes `caller` */
    N_FILTER_BLOCK, /* render(items) | filter chain c */
    N_WITH,         /* with names = items2: items */
    N_BREAK,
    N_CONTINUE,
    N_GENERATION /* transformers' {% generation %}: renders its body */
} node_type;

enum { OP_EQ = 1, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN, OP_FLOORDIV, OP_POW };

typedef struct node node;
typedef struct {
    node **v;
    int n;
} nlist;

struct node {
    node_type type;
    int line;
    int op;
    const char *name;
    const char *attr;
    const char *text;
    size_t len;
    json_t *value;
    node *a, *b, *c;
    nlist items, items2;
    const char **kwnames; /* call / filter / test keyword arguments */
    nlist kwvals;
    const char **names; /* assignment targets, macro parameters */
    int nnames;
    int *ops;         /* N_COMPARE operators */
    const void *impl; /* N_FILTER / N_TEST: resolved builtin (NULL = unknown, fails when run) */
};

struct lp_template {
    tarena arena;
    const char *name;
    nlist body;
};

int tmpl_parse(lp_template *t, const token *toks, size_t ntoks);

/* ---------------------------------------------------------------- runtime values */
typedef enum {
    TV_UNDEF,  /* jinja2.Undefined: prints "", falsy, iterates empty; most other uses fail */
    TV_JSON,   /* j: null, bool, int, real, string, array (list/tuple), object (dict) */
    TV_NS,     /* p: namespace */
    TV_MACRO,  /* p: macro closure */
    TV_FUNC,   /* fn: global function (const builtin *) */
    TV_METHOD, /* fn: method (const builtin *) bound to the receiver j (or loop p) */
    TV_LOOP,   /* p: the `loop` object of a for loop */
    TV_ABSENT  /* argument binding only: the caller gave nothing */
} tv_kind;

typedef struct tv {
    tv_kind kind;
    json_t *j;
    void *p;
    const void *fn;
    const char *uname; /* TV_UNDEF: the missing name or attribute */
    const char *uobj;  /* TV_UNDEF: type of the object it was missing from (NULL: a variable) */
    bool unsafe;       /* TV_UNDEF: sandbox refused the attribute */
} tv;

typedef struct {
    int n, cap;
    const char **names;
    tv *vals;
} varmap;

typedef struct frame frame;
struct frame {
    frame *parent;
    varmap vars;
};

typedef struct {
    const node *def; /* N_MACRO, or N_CALL_BLOCK for a `caller` */
    frame *closure;
    const char *name;
} macro;

typedef struct {
    json_t *list; /* iterating a list directly: its elements are the items */
    tv *items;    /* otherwise the materialised items */
    int n, i;
    tv last_changed;
    bool have_changed;
} loopstate;

tv loop_item(const loopstate *l, int i);

typedef struct {
    int npos, nkw;
    tv *pos;
    const char **kwn;
    tv *kwv;
} targs;

typedef struct rstate rstate;
typedef int (*builtin_fn)(rstate *r, const tv *self, targs *a, tv *out);
typedef struct {
    const char *name;
    builtin_fn fn;
} builtin;

struct rstate {
    tarena a;
    const lp_template *t;
    const json_t *ctx;
    frame *root, *f;
    sbuf *out;
    int line, depth;
    long long steps;
    bool raised;
    struct {
        const json_t **slots; /* open addressing; arrays that are Python tuples */
        size_t cap, n;
    } tuples;
};

/* errors: "<template name>:<line>: message" */
int rerr(rstate *r, const char *fmt, ...) LP_PRINTF(2, 3);
int rerr_undefined(rstate *r, const tv *u); /* the UndefinedError for using u */

/* constructors (results owned by the render arena) */
tv tv_of(json_t *borrowed);
tv tv_new(rstate *r, json_t *fresh); /* registers the new reference */
tv tv_undef(const char *name, const char *obj);
tv tv_str(rstate *r, const char *s, size_t n);
tv tv_cstr(rstate *r, const char *s);
tv tv_int(rstate *r, long long v);
int tv_real(rstate *r, double v, tv *out); /* fails on inf / nan, which JSON cannot hold */
tv tv_bool(bool b);
tv tv_none(void);
tv tv_sbuf(rstate *r, sbuf *b); /* string from a buffer; frees the buffer */

/* kind checks */
bool tv_is_str(const tv *v);
bool tv_is_int(const tv *v);  /* int or bool, like Python */
bool tv_is_num(const tv *v);  /* int, bool or float */
bool tv_is_list(const tv *v);
bool tv_is_dict(const tv *v);
bool tv_is_none(const tv *v);
bool tv_is_bool(const tv *v);
const char *tv_sdata(const tv *v);
size_t tv_slen(const tv *v);
long long tv_ival(const tv *v); /* int or bool */
double tv_num(const tv *v);     /* any number */
const char *tv_typename(const tv *v);

/* Python semantics */
bool tv_truthy(const tv *v);
bool tv_eq(const tv *a, const tv *b);
int tv_cmp(rstate *r, const tv *a, const tv *b, int *res); /* <0, 0, >0 */
int tv_str_into(rstate *r, const tv *v, sbuf *b);          /* str(v); Undefined -> "" */
int tv_repr_into(rstate *r, const tv *v, sbuf *b);         /* repr(v) */
int tv_to_string(rstate *r, const tv *v, tv *out);         /* str(v) as a string value */
int tv_iterate(rstate *r, const tv *v, tv **items, int *n); /* list(v) */
int tv_len(rstate *r, const tv *v, long long *n);
int tv_list_from(rstate *r, tv *items, int n, tv *out); /* a new list of JSON values */
bool tv_is_tuple(const rstate *r, const json_t *arr);
void tv_mark_tuple(rstate *r, json_t *arr);

typedef struct {
    const char *indent; /* NULL: single line */
    const char *item_sep, *key_sep;
    bool sort_keys, ensure_ascii;
} json_style;
int tv_tojson(rstate *r, const tv *v, const json_style *st, sbuf *b);

/* attribute / item access with the sandbox's rules */
int tv_getattr(rstate *r, const tv *obj, const char *name, tv *out);
int tv_getitem(rstate *r, const tv *obj, const tv *key, tv *out);

/* builtins (filters.c, methods.c) */
typedef int (*test_fn)(rstate *r, const tv *v, targs *a, bool *res);
typedef struct {
    const char *name;
    test_fn fn;
} test_builtin;
const builtin *tmpl_find_filter(const char *name);
const test_builtin *tmpl_find_test(const char *name);
const builtin *tmpl_find_global(const char *name);
const builtin *tmpl_find_method(const tv *recv, const char *name, bool *unsafe);
int tmpl_call(rstate *r, const tv *callee, targs *a, tv *out); /* any callable value */
int tmpl_apply_filter(rstate *r, const builtin *f, const char *name, const tv *v, targs *a, tv *out);
int tmpl_apply_test(rstate *r, const test_builtin *t, const char *name, const tv *v, targs *a, bool *res);

/* Bind arguments to a Python-style signature `names[0..n)`: out[i] gets the argument or
 * TV_ABSENT. Fails on too many positionals or unknown keywords. */
int bind_args(rstate *r, const char *fname, const char *const *names, int n, const targs *a, tv *out);
int no_args(rstate *r, const char *fname, const targs *a); /* fails if any argument was passed */

/* In a builtin taking (rstate *r, ..., targs *a, ...): declare `tv arg[]` bound to the named
 * parameters, returning -1 from the builtin on a binding error. */
#define BIND(fname, ...)                                                                      \
    static const char *const bind_names_[] = {__VA_ARGS__};                                   \
    tv arg[sizeof bind_names_ / sizeof *bind_names_];                                         \
    if (bind_args(r, fname, bind_names_, (int)(sizeof bind_names_ / sizeof *bind_names_), a, arg) < 0) return -1

/* An argument was passed (possibly None) / was passed and is not None. */
static inline bool arg_present(const tv *v) { return v->kind != TV_ABSENT; }
static inline bool arg_given(const tv *v) { return v->kind != TV_ABSENT && !(v->kind == TV_JSON && json_is_null(v->j)); }

/* strings.c: Python str operations shared by filters and methods */
typedef enum { CASE_LOWER, CASE_UPPER, CASE_CAPITALIZE, CASE_TITLE, CASE_TITLE_JINJA } case_mode;
enum { STRIP_LEFT = 1, STRIP_RIGHT = 2, STRIP_BOTH = 3 };
int str_case(rstate *r, const tv *s, case_mode mode, tv *out);
int str_strip(rstate *r, const tv *s, const tv *chars, int sides, tv *out); /* chars: ABSENT/None = whitespace */
int str_replace(rstate *r, const tv *s, const tv *old, const tv *repl, long long count, tv *out);
int str_splitlines(rstate *r, const tv *s, bool keepends, tv **lines, int *n);
const builtin *tmpl_find_str_method(const char *name);
int tmpl_percent_format(rstate *r, const tv *fmt, const tv *args, tv *out); /* fmt % args */

/* eval.c */
int tmpl_arith(rstate *r, int op, const tv *a, const tv *b, tv *out); /* op: '+' '-' '*' '/' '%' OP_* */
int tmpl_contains(rstate *r, const tv *container, const tv *item, bool *res);
int tmpl_call_macro(rstate *r, macro *m, targs *a, tv *out);
void frame_set(rstate *r, frame *f, const char *name, tv v);
varmap *ns_new(rstate *r);
void varmap_set(rstate *r, varmap *m, const char *name, tv v);
tv *varmap_get(varmap *m, const char *name);

/* clock for strftime_now */
time_t tmpl_now(void);

#endif
