/* server.h — `llama-pajamas-run serve`: an OpenAI-compatible HTTP server.
 *
 * Endpoints: POST /v1/chat/completions and /v1/completions (JSON or SSE streaming),
 * GET /v1/models, /health, /metrics (Prometheus), / (a chat page), plus the llama.cpp
 * style helpers POST /tokenize and /apply-template. Requests are decoded together by a
 * continuous-batching scheduler over --parallel KV-cache slots. */
#ifndef LP_SERVER_H
#define LP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *model_path;  /* required: .gguf, HF/MLX dir or pipeline output dir */
    const char *alias;       /* served model name (default: the artifact's name) */
    const char *host;        /* default 127.0.0.1 */
    int port;                /* default 8080; 0 picks a free port */
    const char *api_key;     /* NULL: no auth */
    const char *backend;     /* auto / cpu / cuda */
    int n_parallel;          /* slots; default 4 */
    int n_ctx;               /* per slot; 0: min(model, 4096) */
    int n_threads;           /* 0: all cores */
    int max_queue;           /* waiting requests beyond the busy slots; default 64 */
    size_t max_body;         /* request body limit in bytes; default 8 MiB */
    double drain_seconds;    /* on SIGTERM/SIGINT, how long in-flight requests may finish; default 5 */
    bool quiet;              /* no per-request log lines */
    const char *ready_file;  /* if set, "host port\n" is written there once listening */
} lp_server_opts;

/* Load the model, serve until SIGTERM or SIGINT, drain, return 0 (or -1 with lp_errmsg()). */
int lp_server_run(const lp_server_opts *o);

/* The `serve` subcommand (src/cli/run_serve.c): argv holds the options after "serve". */
int lp_cmd_serve(int argc, char **argv);

#endif
