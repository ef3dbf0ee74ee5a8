/* oai.h — the OpenAI API surface: request validation and prompt building (oai_req.c),
 * response and stream-chunk JSON (oai_resp.c), and the server state they share. */
#ifndef LP_OAI_H
#define LP_OAI_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "gen/textgen.h"
#include "metrics.h"
#include "sched.h"
#include "server.h"
#include "split.h"
#include "srvutil.h"

typedef struct {
    lp_server_opts opts;
    lp_textgen *tg;
    lp_sched *sched;
    srv_metrics *metrics;
    const char *model_id;    /* the served name */
    long created;            /* model "created" timestamp: server start */
    char **specials;         /* texts of the tokenizer's special tokens */
    int n_specials;
    pthread_mutex_t render_mu;
    atomic_int active;       /* generation requests whose answer is not fully sent */
    bool test_hooks;         /* LP_SERVE_TEST_HOOKS=1: lp_test_output forces the generated text,
                                lp_test_delay_ms slows the stream down */
} srv_server;

/* An OpenAI error: {"error": {"message", "type", "param", "code"}} with an HTTP status. */
typedef struct {
    int status;
    const char *type;
    const char *code;        /* NULL: null */
    char param[96];          /* "": null */
    char message[1024];
} srv_error;

int srv_error_set(srv_error *e, int status, const char *type, const char *code, const char *param, const char *fmt,
                  ...) LP_PRINTF(6, 7);
/* 400 invalid_request_error about one parameter. Returns -1. */
int srv_bad_param(srv_error *e, const char *param, const char *fmt, ...) LP_PRINTF(3, 4);
json_t *srv_error_json(const srv_error *e);

typedef struct {
    bool chat;
    bool stream, include_usage;
    bool in_reasoning;  /* the prompt opened a <think> block */
    bool parse_tools;   /* tools were offered: parse <tool_call> blocks */
    int legacy_logprobs; /* /v1/completions "logprobs": N alternatives, -1 off */
    bool echo;          /* /v1/completions: prepend the prompt to the text */
    char *prompt_text;  /* the rendered / given prompt (for echo and logging) */
    char *forced_tool;  /* tool_choice required / named: the tool-call opening the prompt ends with,
                           which the output parser must see as the start of the reply */
    srv_job *job;       /* prompt tokens and generation settings */
} srv_request;

/* Validate a request body and build its job. -1 with e set on a client error. */
int srv_parse_chat(srv_server *srv, const json_t *body, srv_request *r, srv_error *e);
int srv_parse_completion(srv_server *srv, const json_t *body, srv_request *r, srv_error *e);
void srv_request_free(srv_request *r);
/* The prompt text with marked user copies of control-token strings restored; malloc'd. */
char *srv_unmark_prompt(const srv_server *srv, const char *text);
/* Is name one the server answers to (its id, alias or model path)? */
bool srv_model_matches(const srv_server *srv, const char *name);
/* Render messages with the chat template (for /apply-template and chat requests). */
char *srv_render_messages(srv_server *srv, const json_t *messages, const json_t *tools, const json_t *kwargs,
                          srv_error *e);

/* ---- responses (oai_resp.c) ---- */

/* What the response side keeps while a job runs: the split of the text, what has been
 * read from the job, what has been sent. */
typedef struct {
    srv_server *srv;
    srv_request *req;
    char id[48];
    long created;
    srv_split split;
    srv_buf text;       /* everything read from the job so far */
    srv_toklp *lps;     /* every log-prob record read so far */
    int n_lps;
    int lps_sent;       /* records already attached to chunks */
    size_t legacy_offset; /* completions: byte offset of the next token in the text */
    bool role_sent;
} srv_out;

void srv_out_init(srv_out *o, srv_server *srv, srv_request *req);
void srv_out_free(srv_out *o);

/* A snapshot of a job's progress taken under its lock. */
typedef struct {
    srv_buf new_text;
    srv_toklp *lps;     /* the new records (copy) */
    int n_lps;
    bool done;
    srv_finish finish;
    char *error;
    int n_prompt, n_generated, n_cached;
} srv_snapshot;

/* Wait up to timeout_ms for news after `text_len` bytes / `n_lps` records; fills snap.
 * Returns true when there is something (new text, new records or the end). */
bool srv_job_wait(srv_job *j, size_t text_len, int n_lps, int timeout_ms, srv_snapshot *snap);
void srv_snapshot_free(srv_snapshot *snap);
/* Wait up to timeout_ms for the job to finish; true when it has. */
bool srv_job_wait_done(srv_job *j, int timeout_ms);

/* Streaming: append the SSE events for a snapshot to out (and the final events and
 * "data: [DONE]" when it is done). */
void srv_stream_events(srv_out *o, const srv_snapshot *snap, srv_buf *out);
/* Non-streaming: the whole response object for a finished job. */
json_t *srv_final_response(srv_out *o, const srv_snapshot *snap);

#endif
