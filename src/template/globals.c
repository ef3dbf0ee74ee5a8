/* globals.c — the template's global functions (range, dict, namespace, and transformers'
 * raise_exception and strftime_now), the methods of dicts, lists and `loop`, and which
 * methods the ImmutableSandboxedEnvironment refuses (anything that mutates a list or dict). */
#include "template/tmpl_int.h"

#include <string.h>
#include <time.h>

static time_t fixed_clock;

void lp_template_set_clock(time_t fixed_now) { fixed_clock = fixed_now; }
time_t tmpl_now(void) { return fixed_clock ? fixed_clock : time(NULL); }

/* ---------------------------------------------------------------- globals */
static int g_raise_exception(rstate *r, const tv *self, targs *a, tv *out) {
    BIND("raise_exception", "message");
    if (!arg_present(&arg[0])) return rerr(r, "%s", "raise_exception() missing its message");
    sbuf b = {0};
    if (tv_str_into(r, &arg[0], &b) < 0) return -1;
    lp_fail("%s", b.p ? b.p : "");
    sb_free(&b);
    r->raised = true;
    return -1;
}

static int g_strftime_now(rstate *r, const tv *self, targs *a, tv *out) {
    BIND("strftime_now", "format");
    if (!tv_is_str(&arg[0])) return rerr(r, "%s", "strftime_now: format must be a string");
    time_t now = tmpl_now();
    struct tm tm;
    localtime_r(&now, &tm);
    char buf[512];
    size_t n = tv_slen(&arg[0]) ? strftime(buf, sizeof buf, tv_sdata(&arg[0]), &tm) : 0;
    if (!n && tv_slen(&arg[0])) return rerr(r, "%s", "strftime_now: result too long or empty");
    *out = tv_str(r, buf, n);
    return 0;
}

static int g_range(rstate *r, const tv *self, targs *a, tv *out) {
    BIND("range", "start", "stop", "step");
    long long v[3] = {0, 0, 1};
    int n = arg_present(&arg[2]) ? 3 : arg_present(&arg[1]) ? 2 : arg_present(&arg[0]) ? 1 : 0;
    if (!n) return rerr(r, "%s", "range expected at least 1 argument, got 0");
    for (int i = 0; i < n; i++)
        if (!tv_is_int(&arg[i])) return rerr(r, "'%s' object cannot be interpreted as an integer", tv_typename(&arg[i]));
    if (n == 1) v[1] = tv_ival(&arg[0]);
    else
        for (int i = 0; i < n; i++) v[i] = tv_ival(&arg[i]);
    if (!v[2]) return rerr(r, "%s", "range() arg 3 must not be zero");
    long long count = 0;
    if (v[2] > 0 && v[0] < v[1]) count = (v[1] - v[0] - 1) / v[2] + 1;
    if (v[2] < 0 && v[0] > v[1]) count = (v[0] - v[1] - 1) / -v[2] + 1;
    if (count > TMPL_MAX_RANGE) return rerr(r, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", TMPL_MAX_RANGE);
    json_t *arr = json_array();
    for (long long i = 0; i < count; i++) json_array_append_new(arr, json_integer(v[0] + i * v[2]));
    *out = tv_new(r, arr);
    return 0;
}

/* dict(mapping?, **kwargs) */
static int g_dict(rstate *r, const tv *self, targs *a, tv *out) {
    if (a->npos > 1) return rerr(r, "dict expected at most 1 argument, got %d", a->npos);
    json_t *obj = ta_own(&r->a, json_object());
    if (a->npos) {
        if (!tv_is_dict(&a->pos[0])) return rerr(r, "%s", "dict(): positional argument must be a mapping");
        json_object_update(obj, a->pos[0].j);
    }
    for (int i = 0; i < a->nkw; i++) {
        if (a->kwv[i].kind != TV_JSON) return rerr(r, "dict(): cannot store a value of type '%s'", tv_typename(&a->kwv[i]));
        json_object_set(obj, a->kwn[i], a->kwv[i].j);
    }
    *out = tv_of(obj);
    return 0;
}

/* namespace(mapping?, **attrs): the one mutable object, so loops can carry state out. */
static int g_namespace(rstate *r, const tv *self, targs *a, tv *out) {
    if (a->npos > 1) return rerr(r, "namespace expected at most 1 positional argument, got %d", a->npos);
    varmap *m = ns_new(r);
    if (a->npos) {
        if (!tv_is_dict(&a->pos[0])) return rerr(r, "%s", "namespace(): positional argument must be a mapping");
        const char *k;
        json_t *v;
        json_object_foreach(a->pos[0].j, k, v) varmap_set(r, m, k, tv_of(v));
    }
    for (int i = 0; i < a->nkw; i++) varmap_set(r, m, a->kwn[i], a->kwv[i]);
    *out = (tv){.kind = TV_NS, .p = m};
    return 0;
}

static const builtin globals[] = {
    {"raise_exception", g_raise_exception},
    {"strftime_now", g_strftime_now},
    {"range", g_range},
    {"dict", g_dict},
    {"namespace", g_namespace},
};

const builtin *tmpl_find_global(const char *name) {
    for (size_t i = 0; i < sizeof globals / sizeof *globals; i++)
        if (!strcmp(globals[i].name, name)) return &globals[i];
    return NULL;
}

/* ---------------------------------------------------------------- dict methods */
int tmpl_dict_items(rstate *r, const tv *d, tv *out);

static int d_items(rstate *r, const tv *self, targs *a, tv *out) {
    if (no_args(r, "items", a) < 0) return -1;
    return tmpl_dict_items(r, self, out);
}

static int d_keys(rstate *r, const tv *self, targs *a, tv *out) {
    tv *keys;
    int n;
    if (no_args(r, "keys", a) < 0 || tv_iterate(r, self, &keys, &n) < 0) return -1;
    return tv_list_from(r, keys, n, out);
}

static int d_values(rstate *r, const tv *self, targs *a, tv *out) {
    if (no_args(r, "values", a) < 0) return -1;
    json_t *arr = ta_own(&r->a, json_array());
    const char *k;
    json_t *v;
    json_object_foreach(self->j, k, v) json_array_append(arr, v);
    *out = tv_of(arr);
    return 0;
}

static int d_get(rstate *r, const tv *self, targs *a, tv *out) {
    BIND("get", "key", "default");
    json_t *v = tv_is_str(&arg[0]) ? json_object_getn(self->j, tv_sdata(&arg[0]), tv_slen(&arg[0])) : NULL;
    if (v) *out = tv_of(v);
    else *out = arg_present(&arg[1]) ? arg[1] : tv_none();
    return 0;
}

static int d_copy(rstate *r, const tv *self, targs *a, tv *out) {
    if (no_args(r, "copy", a) < 0) return -1;
    *out = tv_new(r, json_copy(self->j));
    return 0;
}

/* ---------------------------------------------------------------- list methods */
static int l_index(rstate *r, const tv *self, targs *a, tv *out) {
    BIND("index", "value");
    for (size_t i = 0; i < json_array_size(self->j); i++) {
        tv e = tv_of(json_array_get(self->j, i));
        if (tv_eq(&e, &arg[0])) {
            *out = tv_int(r, (long long)i);
            return 0;
        }
    }
    return rerr(r, "%s", "list.index(x): x not in list");
}

static int l_count(rstate *r, const tv *self, targs *a, tv *out) {
    BIND("count", "value");
    long long c = 0;
    for (size_t i = 0; i < json_array_size(self->j); i++) {
        tv e = tv_of(json_array_get(self->j, i));
        c += tv_eq(&e, &arg[0]);
    }
    *out = tv_int(r, c);
    return 0;
}

/* ---------------------------------------------------------------- loop methods */
static int loop_cycle(rstate *r, const tv *self, targs *a, tv *out) {
    loopstate *l = self->p;
    if (!a->npos) return rerr(r, "%s", "no items for cycling given");
    *out = a->pos[l->i % a->npos];
    return 0;
}

/* loop.changed(*values): true on the first call and whenever the values differ from the last. */
static int loop_changed(rstate *r, const tv *self, targs *a, tv *out) {
    loopstate *l = self->p;
    tv now;
    if (tv_list_from(r, a->pos, a->npos, &now) < 0) return -1;
    bool changed = !l->have_changed || !tv_eq(&now, &l->last_changed);
    l->last_changed = now;
    l->have_changed = true;
    *out = tv_bool(changed);
    return 0;
}

static const builtin dict_methods[] = {
    {"items", d_items}, {"keys", d_keys}, {"values", d_values}, {"get", d_get}, {"copy", d_copy},
};
static const builtin list_methods[] = {{"index", l_index}, {"count", l_count}};
static const builtin loop_methods[] = {{"cycle", loop_cycle}, {"changed", loop_changed}};
static const char *const dict_mutators[] = {"pop", "popitem", "setdefault", "update", "clear"};
static const char *const list_mutators[] = {"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"};

static const builtin *find_in(const builtin *tab, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(tab[i].name, name)) return &tab[i];
    return NULL;
}

static bool listed(const char *const *names, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], name)) return true;
    return false;
}

#define COUNT(a) (sizeof(a) / sizeof *(a))

const builtin *tmpl_find_method(const tv *recv, const char *name, bool *unsafe) {
    *unsafe = false;
    if (recv->kind == TV_LOOP) return find_in(loop_methods, COUNT(loop_methods), name);
    if (tv_is_str(recv)) return tmpl_find_str_method(name);
    if (tv_is_dict(recv)) {
        *unsafe = listed(dict_mutators, COUNT(dict_mutators), name);
        return find_in(dict_methods, COUNT(dict_methods), name);
    }
    if (tv_is_list(recv)) {
        *unsafe = listed(list_mutators, COUNT(list_mutators), name);
        return find_in(list_methods, COUNT(list_methods), name);
    }
    return NULL;
}
