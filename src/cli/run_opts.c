/* run_opts.c — shared option parsing for the run subcommands. */
#include "cli/run_opts.h"

#include <string.h>

#include "core/err.h"

void lp_run_opts_init(lp_run_opts *o) {
    memset(o, 0, sizeof *o);
    o->load.backend = "auto";
    o->gen.sampling = lp_sampler_default_params();
    o->gen.sampling.min_p = 0;
    o->gen.sampling.seed = 0;
    o->gen.max_tokens = 256;
    o->gen.stops = o->stops;
}

static int parse_mode(lp_run_opts *o, const char *v) {
    if (strcmp(v, "thinking") == 0) o->mode = LP_MODE_THINKING;
    else if (strcmp(v, "non-thinking") == 0) o->mode = LP_MODE_NON_THINKING;
    else if (strcmp(v, "raw") == 0) o->mode = LP_MODE_RAW;
    else return lp_fail("--mode: expected thinking, non-thinking or raw, got '%s'", v);
    return 0;
}

int lp_run_opts_parse(lp_run_opts *o, lp_args *a) {
    int err = 0, iv;
    double dv;
    lp_sampler_params *s = &o->gen.sampling;
#define FLOAT_OPT(name, lo, hi, field, flag)                                                  \
    if (lp_args_opt(a, name, &err)) {                                                         \
        if (err || lp_parse_float(name, a->value, lo, hi, &dv) != 0) return -1;               \
        field = (float)dv;                                                                    \
        flag;                                                                                 \
        return 1;                                                                             \
    }
    if (lp_args_opt(a, "--model", &err)) return err ? -1 : (o->load.model_path = a->value, 1);
    if (lp_args_opt(a, "--backend", &err)) return err ? -1 : (o->load.backend = a->value, 1);
    if (lp_args_opt(a, "--threads", &err))
        return err || lp_parse_int("--threads", a->value, 1, 1024, &o->load.n_threads) ? -1 : 1;
    if (lp_args_opt(a, "--ctx-size", &err))
        return err || lp_parse_int("--ctx-size", a->value, 16, 1 << 20, &o->load.n_ctx) ? -1 : 1;
    if (lp_args_opt(a, "--max-tokens", &err))
        return err || lp_parse_int("--max-tokens", a->value, 1, 1 << 20, &o->gen.max_tokens) ? -1 : 1;
    if (lp_args_opt(a, "--top-k", &err)) {
        if (err || lp_parse_int("--top-k", a->value, 0, 1 << 20, &s->top_k)) return -1;
        o->set_top_k = true;
        return 1;
    }
    if (lp_args_opt(a, "--seed", &err)) {
        if (err || lp_parse_int("--seed", a->value, 0, 2147483647, &iv)) return -1;
        s->seed = (uint64_t)iv;
        return 1;
    }
    if (lp_args_opt(a, "--mode", &err)) return err || parse_mode(o, a->value) ? -1 : 1;
    if (lp_args_opt(a, "--stop", &err)) {
        if (err) return -1;
        if (o->n_stops == 16) return lp_fail("--stop: at most 16 stop strings");
        o->stops[o->n_stops++] = a->value;
        o->gen.n_stops = o->n_stops;
        return 1;
    }
    FLOAT_OPT("--temperature", 0, 100, s->temperature, o->set_temp = true)
    FLOAT_OPT("--top-p", 0, 1, s->top_p, o->set_top_p = true)
    FLOAT_OPT("--min-p", 0, 1, s->min_p, o->set_min_p = true)
    FLOAT_OPT("--repeat-penalty", 0, 10, s->repeat_penalty, (void)0)
    FLOAT_OPT("--presence-penalty", -2, 2, s->presence_penalty, (void)0)
    FLOAT_OPT("--frequency-penalty", -2, 2, s->frequency_penalty, (void)0)
#undef FLOAT_OPT
    if (lp_args_flag(a, "--ignore-eos")) return o->gen.ignore_eos = true, 1;
    return 0;
}

void lp_run_opts_finish(lp_run_opts *o) {
    lp_sampler_params *s = &o->gen.sampling;
    bool thinking = o->mode != LP_MODE_NON_THINKING;
    if (!o->set_temp) s->temperature = thinking ? 0.6f : 0.7f;
    if (!o->set_top_p) s->top_p = thinking ? 0.95f : 0.8f;
    if (!o->set_top_k) s->top_k = 20;
    if (!o->set_min_p) s->min_p = 0.0f;
}

const char *lp_run_opts_help(void) {
    return "  --model PATH            .gguf file, MLX or HF model dir, or a convert output dir (manifest)\n"
           "  --backend auto|cpu|cuda --threads N --ctx-size N\n"
           "  --max-tokens N --temperature T --top-p P --top-k K --min-p P --seed S\n"
           "  --repeat-penalty R --presence-penalty P --frequency-penalty P --stop STR (repeatable)\n"
           "  --mode thinking|non-thinking|raw   Qwen3 thinking (default: thinking; raw = no chat template)\n"
           "  --ignore-eos\n";
}
