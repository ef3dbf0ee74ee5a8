/* run_serve.c — `llama-pajamas-run serve`: parses the options and runs the
 * OpenAI-compatible server (src/server/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/common.h"
#include "core/err.h"
#include "server/server.h"

#define PROG "llama-pajamas-run serve"

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: " PROG " --model PATH [options]\n"
            "\n"
            "OpenAI-compatible HTTP server: POST /v1/chat/completions, /v1/completions (SSE with\n"
            "\"stream\": true), GET /v1/models, /health, /metrics, and a chat page at /.\n"
            "\n"
            "  --model PATH        .gguf file, HF/MLX model dir, or a pipeline output dir\n"
            "  --host ADDR         address to listen on (default 127.0.0.1; loopback only unless changed)\n"
            "  --port N            port (default 8080; 0 picks a free one)\n"
            "  --parallel N        sequences decoded together, one KV-cache slot each (default 4)\n"
            "  --ctx-size N        context per slot in tokens (default: min(model, 4096))\n"
            "  --api-key KEY       require 'Authorization: Bearer KEY' on /v1/* (also $LP_API_KEY)\n"
            "  --threads N         CPU threads (default: all cores)\n"
            "  --backend B         auto, cpu or cuda (default auto)\n"
            "  --max-queue N       requests that may wait for a slot before 503 (default 64)\n"
            "  --alias NAME        model name to serve under (default: the artifact's name)\n"
            "  --max-body BYTES    request body limit (default 8388608)\n"
            "  --drain-timeout S   on SIGTERM/SIGINT, seconds in-flight requests may finish (default 5)\n"
            "  --ready-file PATH   write \"HOST PORT\" there once listening\n"
            "  --quiet             no per-request log lines\n");
}

static int parse_serve_args(int argc, char **argv, lp_server_opts *o, bool *help) {
    lp_args a;
    lp_args_init(&a, argc, argv, "serve");
    int err = 0, v;
    double d;
    while (!lp_args_done(&a) && !err) {
        if (lp_args_flag(&a, "--help") || lp_args_flag(&a, "-h")) *help = true;
        else if (lp_args_opt(&a, "--model", &err)) o->model_path = a.value;
        else if (lp_args_opt(&a, "--host", &err)) o->host = a.value;
        else if (lp_args_opt(&a, "--port", &err)) err = lp_parse_int("--port", a.value, 0, 65535, &o->port) != 0;
        else if (lp_args_opt(&a, "--parallel", &err))
            err = lp_parse_int("--parallel", a.value, 1, 256, &o->n_parallel) != 0;
        else if (lp_args_opt(&a, "--ctx-size", &err))
            err = lp_parse_int("--ctx-size", a.value, 16, 1 << 22, &o->n_ctx) != 0;
        else if (lp_args_opt(&a, "--api-key", &err)) o->api_key = a.value;
        else if (lp_args_opt(&a, "--threads", &err))
            err = lp_parse_int("--threads", a.value, 1, 1024, &o->n_threads) != 0;
        else if (lp_args_opt(&a, "--backend", &err)) o->backend = a.value;
        else if (lp_args_opt(&a, "--max-queue", &err))
            err = lp_parse_int("--max-queue", a.value, 0, 1 << 20, &o->max_queue) != 0;
        else if (lp_args_opt(&a, "--alias", &err)) o->alias = a.value;
        else if (lp_args_opt(&a, "--max-body", &err)) {
            err = lp_parse_int("--max-body", a.value, 1024, 1 << 30, &v) != 0;
            o->max_body = (size_t)v;
        } else if (lp_args_opt(&a, "--drain-timeout", &err)) {
            err = lp_parse_float("--drain-timeout", a.value, 0.01, 3600, &d) != 0;
            o->drain_seconds = d;
        } else if (lp_args_opt(&a, "--ready-file", &err)) o->ready_file = a.value;
        else if (lp_args_flag(&a, "--quiet")) o->quiet = true;
        else err = lp_fail("serve: unknown option '%s' (try --help)", lp_args_current(&a)) != 0;
    }
    if (err) return -1;
    if (!*help && !o->model_path) return lp_fail("serve: --model is required");
    if (o->api_key && !*o->api_key) return lp_fail("serve: --api-key is empty");
    return 0;
}

int lp_cmd_serve(int argc, char **argv) {
    lp_server_opts o = {.port = 8080, .n_parallel = 4, .max_queue = 64, .drain_seconds = 5};
    const char *env_key = getenv("LP_API_KEY");
    if (env_key && *env_key) o.api_key = env_key;
    bool help = false;
    if (parse_serve_args(argc, argv, &o, &help) != 0) {
        fprintf(stderr, PROG ": error: %s\n", lp_errmsg());
        return 2;
    }
    if (help) {
        serve_usage(stdout);
        return 0;
    }
    if (lp_server_run(&o) != 0) {
        fprintf(stderr, PROG ": error: %s\n", lp_errmsg());
        return 1;
    }
    return 0;
}
