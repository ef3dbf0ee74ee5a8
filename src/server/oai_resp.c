/* oai_resp.c — turning a job's output into OpenAI responses: chat.completion and
 * text_completion objects, their streamed chunks as server-sent events, log-probabilities
 * in the chat and the legacy completion forms, usage, finish reasons. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/progress.h"
#include "oai.h"

void srv_out_init(srv_out *o, srv_server *srv, srv_request *req) {
    memset(o, 0, sizeof *o);
    o->srv = srv;
    o->req = req;
    o->created = (long)time(NULL);
    srv_random_id(o->id, req->chat ? "chatcmpl-" : "cmpl-", 24);
    srv_split_init(&o->split, req->in_reasoning, req->parse_tools);
    if (req->forced_tool) srv_split_push(&o->split, req->forced_tool, strlen(req->forced_tool));
}

void srv_out_free(srv_out *o) {
    srv_split_free(&o->split);
    srv_buf_free(&o->text);
    free(o->lps);
    memset(o, 0, sizeof *o);
}

/* ---- reading a job ---- */

static struct timespec deadline_in(int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    deadline.tv_sec += timeout_ms / 1000 + deadline.tv_nsec / 1000000000L;
    deadline.tv_nsec %= 1000000000L;
    return deadline;
}

bool srv_job_wait_done(srv_job *j, int timeout_ms) {
    struct timespec deadline = deadline_in(timeout_ms);
    pthread_mutex_lock(&j->mu);
    while (!j->done)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &deadline) == ETIMEDOUT) break;
    bool done = j->done;
    pthread_mutex_unlock(&j->mu);
    return done;
}

bool srv_job_wait(srv_job *j, size_t text_len, int n_lps, int timeout_ms, srv_snapshot *snap) {
    memset(snap, 0, sizeof *snap);
    struct timespec deadline = deadline_in(timeout_ms);
    pthread_mutex_lock(&j->mu);
    while (!j->done && j->text.len <= text_len && j->n_lps <= n_lps)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &deadline) == ETIMEDOUT) break;
    bool news = j->done || j->text.len > text_len || j->n_lps > n_lps;
    if (j->text.len > text_len) srv_buf_append(&snap->new_text, j->text.p + text_len, j->text.len - text_len);
    if (j->n_lps > n_lps) {
        snap->n_lps = j->n_lps - n_lps;
        snap->lps = lp_xmalloc(sizeof(srv_toklp) * (size_t)snap->n_lps);
        memcpy(snap->lps, j->lps + n_lps, sizeof(srv_toklp) * (size_t)snap->n_lps);
    }
    snap->done = j->done;
    snap->finish = j->finish;
    snap->error = j->error ? lp_xstrdup(j->error) : NULL;
    snap->n_prompt = j->n_prompt;
    snap->n_generated = j->n_generated;
    snap->n_cached = j->n_cached;
    pthread_mutex_unlock(&j->mu);
    return news;
}

void srv_snapshot_free(srv_snapshot *snap) {
    srv_buf_free(&snap->new_text);
    free(snap->lps);
    free(snap->error);
    memset(snap, 0, sizeof *snap);
}

/* Take a snapshot's news into the output state. */
static void absorb(srv_out *o, const srv_snapshot *snap) {
    srv_buf_append(&o->text, snap->new_text.p ? snap->new_text.p : "", snap->new_text.len);
    if (snap->n_lps) {
        o->lps = lp_xrealloc(o->lps, sizeof(srv_toklp) * (size_t)(o->n_lps + snap->n_lps));
        memcpy(o->lps + o->n_lps, snap->lps, sizeof(srv_toklp) * (size_t)snap->n_lps);
        o->n_lps += snap->n_lps;
    }
}

/* ---- pieces ---- */

static const char *finish_name(srv_finish f, bool tool_calls) {
    if (f == SRV_FIN_LENGTH) return "length";
    return tool_calls ? "tool_calls" : "stop";
}

static json_t *usage_json(const srv_snapshot *snap) {
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", snap->n_prompt, "completion_tokens",
                     snap->n_generated, "total_tokens", snap->n_prompt + snap->n_generated, "prompt_tokens_details",
                     "cached_tokens", snap->n_cached);
}

static json_t *token_bytes_json(const lp_tokenizer *tok, int32_t id, json_t **bytes_out) {
    size_t len = 0;
    const char *b = lp_tokenizer_token_bytes(tok, id, &len);
    if (bytes_out) {
        *bytes_out = json_array();
        for (size_t i = 0; i < len; i++) json_array_append_new(*bytes_out, json_integer((unsigned char)b[i]));
    }
    return srv_json_bytes(b ? b : "", len);
}

/* Chat form: {"content": [{token, logprob, bytes, top_logprobs: [...]}], "refusal": null}. */
static json_t *chat_logprobs(const srv_out *o, int from, int to) {
    const lp_tokenizer *tok = o->srv->tg->tok;
    json_t *content = json_array();
    for (int i = from; i < to; i++) {
        const srv_toklp *t = &o->lps[i];
        json_t *bytes, *top = json_array();
        json_t *token = token_bytes_json(tok, t->token, &bytes);
        for (int k = 0; k < t->n_top; k++) {
            json_t *alt_bytes;
            json_t *alt = token_bytes_json(tok, t->top[k].id, &alt_bytes);
            json_array_append_new(top, json_pack("{s:o, s:f, s:o}", "token", alt, "logprob",
                                                 (double)t->top[k].logprob, "bytes", alt_bytes));
        }
        json_array_append_new(content, json_pack("{s:o, s:f, s:o, s:o}", "token", token, "logprob",
                                                 (double)t->logprob, "bytes", bytes, "top_logprobs", top));
    }
    return json_pack("{s:o, s:n}", "content", content, "refusal");
}

/* Legacy completion form: tokens, token_logprobs, top_logprobs, text_offset. *offset is
 * the running byte offset of the next token in the returned text. */
static json_t *legacy_logprobs(const srv_out *o, int from, int to, size_t *offset) {
    const lp_tokenizer *tok = o->srv->tg->tok;
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offsets = json_array();
    for (int i = from; i < to; i++) {
        const srv_toklp *t = &o->lps[i];
        size_t len = 0;
        lp_tokenizer_token_bytes(tok, t->token, &len);
        json_array_append_new(tokens, token_bytes_json(tok, t->token, NULL));
        json_array_append_new(lps, json_real(t->logprob));
        json_array_append_new(offsets, json_integer((json_int_t)*offset));
        *offset += len;
        json_t *top = json_object();
        for (int k = 0; k < t->n_top; k++) {
            json_t *name = token_bytes_json(tok, t->top[k].id, NULL);
            json_object_set_new(top, json_string_value(name), json_real(t->top[k].logprob));
            json_decref(name);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offsets);
}

static void sse(srv_buf *out, json_t *event) {
    char *s = json_dumps(event, JSON_COMPACT);
    srv_buf_puts(out, "data: ");
    srv_buf_puts(out, s ? s : "{}");
    srv_buf_puts(out, "\n\n");
    free(s);
    json_decref(event);
}

static json_t *envelope(const srv_out *o, const char *object, json_t *choice) {
    json_t *obj = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[o]}", "id", o->id, "object", object, "created",
                            (json_int_t)o->created, "model", o->srv->model_id, "system_fingerprint",
                            "llama-pajamas", "choices", choice);
    if (o->req->include_usage) json_object_set_new(obj, "usage", json_null());
    return obj;
}

static void chat_chunk(srv_out *o, srv_buf *out, json_t *delta, json_t *logprobs, const char *finish) {
    json_t *choice = json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "delta", delta, "logprobs",
                               logprobs ? logprobs : json_null(), "finish_reason",
                               finish ? json_string(finish) : json_null());
    sse(out, envelope(o, "chat.completion.chunk", choice));
}

static void text_chunk(srv_out *o, srv_buf *out, const char *text, size_t len, json_t *logprobs, const char *finish) {
    json_t *choice = json_pack("{s:o, s:i, s:o, s:o}", "text", srv_json_bytes(text, len), "index", 0, "logprobs",
                               logprobs ? logprobs : json_null(), "finish_reason",
                               finish ? json_string(finish) : json_null());
    sse(out, envelope(o, "text_completion", choice));
}

static bool failed(const srv_snapshot *snap) {
    return snap->finish == SRV_FIN_ERROR || (snap->finish == SRV_FIN_CANCELLED && snap->error);
}

static void error_event(srv_buf *out, const srv_snapshot *snap) {
    srv_error e;
    srv_error_set(&e, 500, "server_error", NULL, NULL, "%s", snap->error ? snap->error : "generation failed");
    sse(out, srv_error_json(&e));
}

/* ---- streaming ---- */

static void chat_events(srv_out *o, const srv_snapshot *snap, srv_buf *out) {
    if (!o->role_sent) {
        chat_chunk(o, out, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL, NULL);
        o->role_sent = true;
    }
    srv_split_push(&o->split, snap->new_text.p ? snap->new_text.p : "", snap->new_text.len);
    json_t *calls = snap->done ? srv_split_finish(&o->split) : NULL;
    const char *r, *c;
    size_t rlen, clen;
    srv_split_take(&o->split, &r, &rlen, &c, &clen);
    /* Log-probs ride on the last chunk of this round (or wait for the next one). */
    bool want_lps = o->req->job->logprobs && o->lps_sent < o->n_lps;
    if (rlen) {
        json_t *lps = want_lps && !clen ? chat_logprobs(o, o->lps_sent, o->n_lps) : NULL;
        if (lps) o->lps_sent = o->n_lps;
        chat_chunk(o, out, json_pack("{s:o}", "reasoning_content", srv_json_bytes(r, rlen)), lps, NULL);
    }
    if (clen) {
        json_t *lps = want_lps ? chat_logprobs(o, o->lps_sent, o->n_lps) : NULL;
        if (lps) o->lps_sent = o->n_lps;
        chat_chunk(o, out, json_pack("{s:o}", "content", srv_json_bytes(c, clen)), lps, NULL);
    }
    if (!snap->done) return;
    if (calls) {
        size_t i;
        json_t *call;
        json_array_foreach(calls, i, call) json_object_set_new(call, "index", json_integer((json_int_t)i));
        chat_chunk(o, out, json_pack("{s:O}", "tool_calls", calls), NULL, NULL);
    }
    if (failed(snap)) error_event(out, snap);
    json_t *lps = o->req->job->logprobs && o->lps_sent < o->n_lps ? chat_logprobs(o, o->lps_sent, o->n_lps) : NULL;
    o->lps_sent = o->n_lps;
    chat_chunk(o, out, json_object(), lps, finish_name(snap->finish, calls != NULL));
    json_decref(calls);
}

static void completion_events(srv_out *o, const srv_snapshot *snap, srv_buf *out) {
    if (!o->role_sent) { /* the first event: the echoed prompt */
        o->role_sent = true;
        if (o->req->echo) {
            o->legacy_offset = strlen(o->req->prompt_text);
            text_chunk(o, out, o->req->prompt_text, strlen(o->req->prompt_text), NULL, NULL);
        }
    }
    bool legacy = o->req->legacy_logprobs >= 0;
    if (snap->new_text.len || (legacy && o->lps_sent < o->n_lps && !snap->done)) {
        json_t *lps = legacy ? legacy_logprobs(o, o->lps_sent, o->n_lps, &o->legacy_offset) : NULL;
        o->lps_sent = o->n_lps;
        text_chunk(o, out, snap->new_text.p ? snap->new_text.p : "", snap->new_text.len, lps, NULL);
    }
    if (!snap->done) return;
    if (failed(snap)) error_event(out, snap);
    json_t *lps = legacy && o->lps_sent < o->n_lps ? legacy_logprobs(o, o->lps_sent, o->n_lps, &o->legacy_offset) : NULL;
    o->lps_sent = o->n_lps;
    text_chunk(o, out, "", 0, lps, finish_name(snap->finish, false));
}

void srv_stream_events(srv_out *o, const srv_snapshot *snap, srv_buf *out) {
    absorb(o, snap);
    if (o->req->chat)
        chat_events(o, snap, out);
    else
        completion_events(o, snap, out);
    if (!snap->done) return;
    if (o->req->include_usage) {
        json_t *u = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[], s:o}", "id", o->id, "object",
                              o->req->chat ? "chat.completion.chunk" : "text_completion", "created",
                              (json_int_t)o->created, "model", o->srv->model_id, "system_fingerprint", "llama-pajamas",
                              "choices", "usage", usage_json(snap));
        sse(out, u);
    }
    srv_buf_puts(out, "data: [DONE]\n\n");
}

/* ---- whole responses ---- */

json_t *srv_final_response(srv_out *o, const srv_snapshot *snap) {
    absorb(o, snap);
    json_t *choice;
    if (o->req->chat) {
        srv_split_push(&o->split, o->text.p ? o->text.p : "", o->text.len);
        json_t *calls = srv_split_finish(&o->split);
        const srv_buf *content = &o->split.content_all, *reasoning = &o->split.reasoning_all;
        json_t *msg = json_pack("{s:s, s:o}", "role", "assistant", "content",
                                calls && content->len == 0 ? json_null() : srv_json_bytes(content->p ? content->p : "", content->len));
        if (reasoning->len) json_object_set_new(msg, "reasoning_content", srv_json_bytes(reasoning->p, reasoning->len));
        if (calls) json_object_set(msg, "tool_calls", calls);
        choice = json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "message", msg, "logprobs",
                           o->req->job->logprobs ? chat_logprobs(o, 0, o->n_lps) : json_null(), "finish_reason",
                           finish_name(snap->finish, calls != NULL));
        json_decref(calls);
    } else {
        srv_buf text = {0};
        size_t offset = 0;
        if (o->req->echo) {
            srv_buf_puts(&text, o->req->prompt_text);
            offset = text.len;
        }
        srv_buf_append(&text, o->text.p ? o->text.p : "", o->text.len);
        choice = json_pack("{s:o, s:i, s:o, s:s}", "text", srv_json_bytes(text.p, text.len), "index", 0, "logprobs",
                           o->req->legacy_logprobs >= 0 ? legacy_logprobs(o, 0, o->n_lps, &offset) : json_null(),
                           "finish_reason", finish_name(snap->finish, false));
        srv_buf_free(&text);
    }
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:[o], s:o}", "id", o->id, "object",
                     o->req->chat ? "chat.completion" : "text_completion", "created", (json_int_t)o->created, "model",
                     o->srv->model_id, "system_fingerprint", "llama-pajamas", "choices", choice, "usage",
                     usage_json(snap));
}
