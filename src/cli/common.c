/* common.c — argument helpers for the CLIs. */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

void lp_args_init(lp_args *a, int argc, char **argv, const char *cmd) {
    a->argc = argc;
    a->argv = argv;
    a->i = 0;
    a->value = NULL;
    a->cmd = cmd;
}

bool lp_args_done(const lp_args *a) { return a->i >= a->argc; }
const char *lp_args_current(const lp_args *a) { return a->i < a->argc ? a->argv[a->i] : NULL; }

bool lp_args_flag(lp_args *a, const char *name) {
    if (a->i < a->argc && strcmp(a->argv[a->i], name) == 0) {
        a->i++;
        return true;
    }
    return false;
}

bool lp_args_opt(lp_args *a, const char *name, int *err) {
    if (a->i >= a->argc) return false;
    const char *arg = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0) return false;
    if (arg[n] == '=') {
        a->value = arg + n + 1;
        a->i++;
        return true;
    }
    if (arg[n] != 0) return false;
    if (a->i + 1 >= a->argc) {
        lp_fail("option %s needs a value", name);
        *err = 1;
        a->i++;
        return true;
    }
    a->value = a->argv[a->i + 1];
    a->i += 2;
    return true;
}

const char *lp_args_positional(lp_args *a) {
    if (a->i < a->argc && strncmp(a->argv[a->i], "--", 2) != 0) return a->argv[a->i++];
    return NULL;
}

int lp_parse_int(const char *opt, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return lp_fail("%s: expected an integer in [%d, %d], got '%s'", opt, lo, hi, s);
    *out = (int)v;
    return 0;
}

int lp_parse_float(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return lp_fail("%s: expected a number in [%g, %g], got '%s'", opt, lo, hi, s);
    *out = v;
    return 0;
}

char **lp_split_list(const char *s, int *n) {
    int cap = 4, k = 0;
    char **list = lp_xmalloc(sizeof(char *) * (size_t)cap);
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > 0) {
            if (k + 2 > cap) list = lp_xrealloc(list, sizeof(char *) * (size_t)(cap *= 2));
            list[k] = lp_xmalloc(len + 1);
            memcpy(list[k], p, len);
            list[k++][len] = 0;
        }
        if (!comma) break;
        p = comma + 1;
    }
    list[k] = NULL;
    if (n) *n = k;
    return list;
}

void lp_free_list(char **list) {
    if (!list) return;
    for (char **p = list; *p; p++) free(*p);
    free(list);
}

int lp_cli_error(const char *prog) {
    fprintf(stderr, "%s: error: %s\n", prog, lp_errmsg());
    return 1;
}
