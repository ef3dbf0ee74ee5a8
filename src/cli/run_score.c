/* run_score.c — `llama-pajamas-run score`: run a text (or token ids) through the
 * model, print its perplexity, and optionally dump every position's logits as raw
 * little-endian f32 [n_tokens][n_vocab] (for comparisons with other runtimes). */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "cli/run_opts.h"
#include "core/err.h"
#include "core/fileio.h"
#include "runtime/perplexity.h"

#define PROG "llama-pajamas-run"

static int parse_ids(const char *list, int32_t **ids, int *n) {
    int count;
    char **items = lp_split_list(list, &count);
    *ids = lp_xmalloc(sizeof(int32_t) * (size_t)(count + 1));
    int rc = 0, v;
    for (int i = 0; i < count && rc == 0; i++) {
        rc = lp_parse_int("--tokens", items[i], 0, 1 << 30, &v);
        (*ids)[i] = v;
    }
    lp_free_list(items);
    *n = count;
    return rc;
}

int lp_cmd_score(int argc, char **argv) {
    lp_args a;
    lp_args_init(&a, argc, argv, "score");
    lp_run_opts o;
    lp_run_opts_init(&o);
    const char *text_file = NULL, *tokens = NULL, *logits_out = NULL;
    int err = 0;
    while (!lp_args_done(&a) && !err) {
        int r = lp_run_opts_parse(&o, &a);
        if (r < 0) return lp_cli_error(PROG);
        if (r > 0) continue;
        if (lp_args_opt(&a, "--text", &err))
            text_file = a.value;
        else if (lp_args_opt(&a, "--tokens", &err))
            tokens = a.value;
        else if (lp_args_opt(&a, "--logits-out", &err))
            logits_out = a.value;
        else
            err = lp_fail("score: unknown option '%s'", lp_args_current(&a)) != 0;
    }
    if (!err && !o.load.model_path) err = lp_fail("score: --model is required") != 0;
    if (!err && !text_file == !tokens) err = lp_fail("score: give exactly one of --text FILE or --tokens IDS") != 0;
    if (err) return lp_cli_error(PROG);
    lp_textgen *tg = lp_textgen_open(&o.load);
    if (!tg) return lp_cli_error(PROG);
    int32_t *ids = NULL;
    int n = 0, rc;
    if (tokens) {
        rc = parse_ids(tokens, &ids, &n);
    } else {
        char *text = lp_read_file(text_file, NULL);
        rc = text ? lp_textgen_encode(tg, text, false, &ids, &n) : -1;
        free(text);
    }
    int V = lp_engine_n_vocab(tg->engine);
    if (rc == 0 && (n < 2 || n > lp_engine_n_ctx(tg->engine)))
        rc = lp_fail("score: %d tokens; need 2..%d (the context size)", n, lp_engine_n_ctx(tg->engine));
    for (int i = 0; i < n && rc == 0; i++)
        if (ids[i] < 0 || ids[i] >= V) rc = lp_fail("--tokens: id %d outside the vocabulary of %d", ids[i], V);
    float *logits = rc == 0 ? lp_xmalloc(sizeof(float) * (size_t)V * (size_t)n) : NULL;
    if (rc == 0) rc = lp_engine_eval(tg->engine, 0, 0, ids, n, logits, true);
    if (rc == 0) {
        double nll = 0;
        for (int i = 0; i + 1 < n; i++) nll += lp_token_nll(logits + (size_t)i * V, V, ids[i + 1]);
        printf("%d tokens, mean NLL %.5f, perplexity %.4f\n", n, nll / (n - 1), exp(nll / (n - 1)));
        if (logits_out) rc = lp_write_file_atomic(logits_out, logits, sizeof(float) * (size_t)V * (size_t)n);
    }
    free(logits);
    free(ids);
    lp_textgen_free(tg);
    return rc == 0 ? 0 : lp_cli_error(PROG);
}
