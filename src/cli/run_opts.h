/* run_opts.h — options shared by the llama-pajamas-run subcommands: model and
 * backend selection, sampling, and Qwen3 thinking-mode defaults. */
#ifndef LP_RUN_OPTS_H
#define LP_RUN_OPTS_H

#include <stdbool.h>

#include "cli/common.h"
#include "gen/textgen.h"

typedef enum { LP_MODE_DEFAULT, LP_MODE_THINKING, LP_MODE_NON_THINKING, LP_MODE_RAW } lp_think_mode;

typedef struct {
    lp_textgen_opts load;
    lp_gen_params gen;
    lp_think_mode mode;
    const char *stops[16];
    int n_stops;
    /* which sampling values the user set (the rest follow the mode's defaults) */
    bool set_temp, set_top_p, set_top_k, set_min_p;
} lp_run_opts;

void lp_run_opts_init(lp_run_opts *o);
/* Try to consume one shared option at a->i. Returns 1 if consumed, 0 if not ours,
 * -1 on a bad value (message set). */
int lp_run_opts_parse(lp_run_opts *o, lp_args *a);
/* Apply mode defaults (Qwen3 model card: thinking 0.6/0.95/20, non-thinking 0.7/0.8/20). */
void lp_run_opts_finish(lp_run_opts *o);
const char *lp_run_opts_help(void);

#endif
