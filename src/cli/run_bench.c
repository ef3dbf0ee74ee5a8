/* run_bench.c — `llama-pajamas-run benchmark`: prefill and decode tokens/s at
 * several context depths, peak memory, and a JSON report. The prompt is a
 * deterministic pseudo-random token sequence (speed does not depend on content). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/run_opts.h"
#include "core/err.h"
#include "core/progress.h"

#define PROG "llama-pajamas-run"

typedef struct {
    int ctx;
    double prefill_tps, decode_tps;
} bench_row;

static long peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

static int bench_depth(lp_textgen *tg, int depth, int n_gen, bench_row *row) {
    int n_vocab = lp_engine_n_vocab(tg->engine);
    int32_t *toks = lp_xmalloc(sizeof(int32_t) * (size_t)(depth + n_gen));
    uint32_t x = 12345;
    for (int i = 0; i < depth + n_gen; i++) {
        x = x * 1664525u + 1013904223u;
        toks[i] = (int32_t)((x >> 8) % (uint32_t)(n_vocab < 1000 ? n_vocab : 1000)) + 10;
    }
    float *logits = lp_engine_logits_alloc(tg->engine, 1);
    double t0 = lp_now();
    int rc = lp_engine_eval(tg->engine, 0, 0, toks, depth, logits, false);
    double t1 = lp_now();
    for (int i = 0; i < n_gen && rc == 0; i++) rc = lp_engine_eval(tg->engine, 0, depth + i, &toks[depth + i], 1, logits, false);
    double t2 = lp_now();
    row->ctx = depth;
    row->prefill_tps = depth / (t1 - t0);
    row->decode_tps = n_gen / (t2 - t1);
    tg->n_cached = 0; /* the KV cache no longer holds a chat prefix */
    free(toks);
    lp_engine_logits_free(tg->engine, logits);
    return rc;
}

int lp_cmd_benchmark(int argc, char **argv) {
    lp_args a;
    lp_args_init(&a, argc, argv, "benchmark");
    lp_run_opts o;
    lp_run_opts_init(&o);
    const char *lengths = "128,512", *json_path = NULL;
    int n_gen = 32, err = 0;
    while (!lp_args_done(&a) && !err) {
        int r = lp_run_opts_parse(&o, &a);
        if (r < 0) return lp_cli_error(PROG);
        if (r > 0) continue;
        if (lp_args_opt(&a, "--context-lengths", &err))
            lengths = a.value;
        else if (lp_args_opt(&a, "--n-gen", &err))
            err = lp_parse_int("--n-gen", a.value, 1, 100000, &n_gen) != 0;
        else if (lp_args_opt(&a, "--json", &err))
            json_path = a.value;
        else
            err = lp_fail("benchmark: unknown option '%s'", lp_args_current(&a)) != 0;
    }
    if (!err && !o.load.model_path) err = lp_fail("benchmark: --model is required") != 0;
    int n_len = 0;
    char **list = err ? NULL : lp_split_list(lengths, &n_len);
    int *depths = lp_xcalloc((size_t)n_len + 1, sizeof(int)), max_depth = 0;
    for (int i = 0; i < n_len && !err; i++) {
        err = lp_parse_int("--context-lengths", list[i], 1, 1 << 20, &depths[i]) != 0;
        if (depths[i] > max_depth) max_depth = depths[i];
    }
    lp_free_list(list);
    if (!err && n_len == 0) err = lp_fail("--context-lengths: empty list") != 0;
    if (err) {
        free(depths);
        return lp_cli_error(PROG);
    }
    if (o.load.n_ctx == 0) o.load.n_ctx = max_depth + n_gen;
    lp_textgen *tg = lp_textgen_open(&o.load);
    if (!tg) {
        free(depths);
        return lp_cli_error(PROG);
    }
    long rss_loaded = peak_rss_mb();
    bench_row *rows = lp_xcalloc((size_t)n_len, sizeof *rows);
    int rc = 0;
    printf("%-24s %-6s %8s %14s %14s\n", "model", "backend", "context", "prefill tok/s", "decode tok/s");
    for (int i = 0; i < n_len && rc == 0; i++) {
        if (depths[i] + n_gen > lp_engine_n_ctx(tg->engine)) {
            rc = lp_fail("--context-lengths: %d + %d generated tokens exceed the context of %d", depths[i], n_gen,
                         lp_engine_n_ctx(tg->engine));
            break;
        }
        rc = bench_depth(tg, depths[i], n_gen, &rows[i]);
        if (rc == 0)
            printf("%-24s %-6s %8d %14.1f %14.1f\n", tg->name, tg->backend_name, rows[i].ctx, rows[i].prefill_tps,
                   rows[i].decode_tps);
    }
    long rss_peak = peak_rss_mb();
    if (rc == 0) printf("peak RSS %ld MB (after load %ld MB), weights %.1f MB\n", rss_peak, rss_loaded,
                        (double)lp_model_weight_bytes(tg->model) / 1e6);
    if (rc == 0 && json_path) {
        json_t *arr = json_array();
        for (int i = 0; i < n_len; i++)
            json_array_append_new(arr, json_pack("{s:i, s:f, s:f}", "context", rows[i].ctx, "prefill_tok_s",
                                                 rows[i].prefill_tps, "decode_tok_s", rows[i].decode_tps));
        json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:f, s:o}", "model", tg->name, "artifact", tg->artifact,
                              "backend", tg->backend_name, "threads", o.load.n_threads, "n_gen", n_gen,
                              "peak_rss_mb", (json_int_t)rss_peak, "weights_mb",
                              (double)lp_model_weight_bytes(tg->model) / 1e6, "results", arr);
        if (json_dump_file(j, json_path, JSON_INDENT(2)) != 0) rc = lp_fail("%s: cannot write", json_path);
        json_decref(j);
    }
    free(rows);
    free(depths);
    lp_textgen_free(tg);
    return rc == 0 ? 0 : lp_cli_error(PROG);
}
