/* run_main.c — `llama-pajamas-run`: generate, chat, benchmark (and serve, in
 * run_serve.c). Argument parsing and terminal I/O only; generation lives in gen/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/run_opts.h"
#include "core/err.h"

#define PROG "llama-pajamas-run"

int lp_cmd_chat(int argc, char **argv);
int lp_cmd_benchmark(int argc, char **argv);
int lp_cmd_score(int argc, char **argv);
#ifdef LP_HAVE_SERVE
int lp_cmd_serve(int argc, char **argv);
#endif

static void usage(FILE *f) {
    fprintf(f,
            "usage: " PROG " <command> [options]\n\n"
            "commands:\n"
            "  generate --model PATH --prompt TEXT [options]   stream a completion\n"
            "  chat --model PATH [options]                     interactive multi-turn chat\n"
            "  score --model PATH (--text FILE | --tokens 1,2,3) [--logits-out FILE]  perplexity, logits dump\n"
            "  benchmark --model PATH [--context-lengths 512,2048] [--n-gen N] [--json FILE]\n"
            "  serve --model PATH [--host H --port P --parallel N --api-key KEY]  OpenAI-compatible server\n\n"
            "options:\n%s",
            lp_run_opts_help());
}

static int emit_stdout(void *ud, const char *text, size_t len) {
    (void)ud;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* The prompt as tokens: through the chat template unless --mode raw (or no template). */
int lp_build_prompt(lp_textgen *tg, const lp_run_opts *o, const char *user_text, int32_t **ids, int *n) {
    json_t *probe = json_string(user_text); /* jansson rejects invalid UTF-8 */
    if (!probe) return lp_fail("--prompt: not valid UTF-8");
    json_decref(probe);
    if (o->mode == LP_MODE_RAW || !tg->chat_template) return lp_textgen_encode(tg, user_text, false, ids, n);
    json_t *messages = json_pack("[{s:s, s:s}]", "role", "user", "content", user_text);
    json_t *extra = json_pack("{s:b}", "enable_thinking", o->mode != LP_MODE_NON_THINKING);
    char *text = lp_textgen_render_chat(tg, messages, NULL, true, extra);
    json_decref(messages);
    json_decref(extra);
    if (!text) return -1;
    int rc = lp_textgen_encode(tg, text, true, ids, n);
    free(text);
    return rc;
}

void lp_print_stats(const lp_textgen *tg, const lp_gen_stats *st) {
    fprintf(stderr, "\n[%s on %s: prompt %d tokens, %.1f tok/s; generated %d tokens, %.1f tok/s; %s]\n", tg->name,
            tg->backend_name, st->n_prompt, st->prefill_seconds > 0 ? st->n_prompt / st->prefill_seconds : 0,
            st->n_generated, st->decode_seconds > 0 ? st->n_generated / st->decode_seconds : 0,
            st->finish == LP_FINISH_STOP ? "stop" : st->finish == LP_FINISH_LENGTH ? "length" : "cancelled");
}

static int cmd_generate(int argc, char **argv) {
    lp_args a;
    lp_args_init(&a, argc, argv, "generate");
    lp_run_opts o;
    lp_run_opts_init(&o);
    const char *prompt = NULL;
    bool quiet = false;
    int err = 0;
    while (!lp_args_done(&a) && !err) {
        int r = lp_run_opts_parse(&o, &a);
        if (r < 0) return lp_cli_error(PROG);
        if (r > 0) continue;
        if (lp_args_opt(&a, "--prompt", &err))
            prompt = a.value;
        else if (lp_args_flag(&a, "--quiet"))
            quiet = true;
        else
            err = lp_fail("generate: unknown option '%s'", lp_args_current(&a)) != 0;
    }
    if (!err && !o.load.model_path) err = lp_fail("generate: --model is required") != 0;
    if (!err && !prompt) err = lp_fail("generate: --prompt is required") != 0;
    if (err) return lp_cli_error(PROG);
    lp_run_opts_finish(&o);
    lp_textgen *tg = lp_textgen_open(&o.load);
    if (!tg) return lp_cli_error(PROG);
    int32_t *ids = NULL;
    int n = 0, rc = lp_build_prompt(tg, &o, prompt, &ids, &n);
    lp_gen_stats st;
    if (rc == 0) rc = lp_textgen_generate(tg, ids, n, &o.gen, emit_stdout, NULL, &st);
    if (rc == 0) {
        printf("\n");
        if (!quiet) lp_print_stats(tg, &st);
    }
    free(ids);
    lp_textgen_free(tg);
    return rc == 0 ? 0 : lp_cli_error(PROG);
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "generate") == 0) return cmd_generate(argc - 2, argv + 2);
    if (strcmp(cmd, "chat") == 0) return lp_cmd_chat(argc - 2, argv + 2);
    if (strcmp(cmd, "score") == 0) return lp_cmd_score(argc - 2, argv + 2);
    if (strcmp(cmd, "benchmark") == 0) return lp_cmd_benchmark(argc - 2, argv + 2);
#ifdef LP_HAVE_SERVE
    if (strcmp(cmd, "serve") == 0) return lp_cmd_serve(argc - 2, argv + 2);
#endif
    fprintf(stderr, PROG ": unknown command '%s' (try --help)\n", cmd);
    return 2;
}
