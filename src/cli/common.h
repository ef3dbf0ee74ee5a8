/* common.h — tiny argument-parsing helpers shared by both CLIs: "--key value" and
 * "--key=value" options, comma lists, integer/float parsing with clear errors. */
#ifndef LP_CLI_COMMON_H
#define LP_CLI_COMMON_H

#include <stdbool.h>

typedef struct {
    int argc;
    char **argv;
    int i;              /* next argument */
    const char *value;  /* value of the option just matched */
    const char *cmd;    /* program + command, for messages */
} lp_args;

void lp_args_init(lp_args *a, int argc, char **argv, const char *cmd);
bool lp_args_done(const lp_args *a);
/* Is the current argument the flag `name` (no value)? Consumes it if so. */
bool lp_args_flag(lp_args *a, const char *name);
/* Is the current argument option `name` with a value? Consumes both; value in a->value.
 * A missing value sets *err. */
bool lp_args_opt(lp_args *a, const char *name, int *err);
/* Current argument as a positional (not starting with "--"); consumes it. */
const char *lp_args_positional(lp_args *a);
const char *lp_args_current(const lp_args *a);

int lp_parse_int(const char *opt, const char *s, int lo, int hi, int *out);
int lp_parse_float(const char *opt, const char *s, double lo, double hi, double *out);
/* Split "a,b,c" into a NULL-terminated malloc'd array of malloc'd strings. */
char **lp_split_list(const char *s, int *n);
void lp_free_list(char **list);
/* Print "PROG: message" to stderr and return exit code 1. */
int lp_cli_error(const char *prog);

#endif
