/* http.c — the HTTP side of `serve`: libmicrohttpd with a thread per connection, the
 * route table, bearer-token auth, body limits, OpenAI error answers, blocking waits for
 * non-streamed results, SSE streams fed by a content-reader callback, client hang-up
 * detection, and the signal-driven drain on shutdown. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "oai.h"

extern const char lp_webui_html[]; /* webui.c */

#define WAIT_SLICE_MS 100 /* how often a waiting request checks whether its client left */
#define KEEPALIVE_SECONDS 15 /* an SSE comment this often while queued, so proxies keep the stream */

/* Per-connection (per request) state. */
typedef struct {
    const char *endpoint; /* metrics label: a route's path or "other" */
    char method[16];
    char url[128];
    srv_buf body;
    bool too_large;
    int status;
    double t0;
} srv_conn;

typedef enum MHD_Result (*handler_fn)(srv_server *srv, struct MHD_Connection *c, srv_conn *cc);

/* ---- sending ---- */

static enum MHD_Result send_bytes(struct MHD_Connection *c, srv_conn *cc, int status, const char *ctype,
                                  const char *data, size_t len, const char *allow) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    cc->status = status;
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, srv_conn *cc, int status, json_t *obj) {
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    enum MHD_Result rc = send_bytes(c, cc, status, "application/json", s ? s : "{}", s ? strlen(s) : 2, NULL);
    free(s);
    return rc;
}

static enum MHD_Result send_error(struct MHD_Connection *c, srv_conn *cc, const srv_error *e, const char *allow) {
    json_t *obj = srv_error_json(e);
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    enum MHD_Result rc = send_bytes(c, cc, e->status, "application/json", s, strlen(s), allow);
    free(s);
    return rc;
}

static enum MHD_Result fail(struct MHD_Connection *c, srv_conn *cc, int status, const char *type, const char *code,
                            const char *fmt, ...) LP_PRINTF(6, 7);
static enum MHD_Result fail(struct MHD_Connection *c, srv_conn *cc, int status, const char *type, const char *code,
                            const char *fmt, ...) {
    srv_error e;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_error_set(&e, status, type, code, NULL, "%s", msg);
    return send_error(c, cc, &e, NULL);
}

static int connection_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* ---- small endpoints ---- */

static enum MHD_Result h_index(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    return send_bytes(c, cc, 200, "text/html; charset=utf-8", lp_webui_html, strlen(lp_webui_html), NULL);
}

static enum MHD_Result h_health(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    int queued, busy, slots;
    lp_sched_load(srv->sched, &queued, &busy, &slots);
    return send_json(c, cc, 200,
                     json_pack("{s:s, s:i, s:i, s:i}", "status", "ok", "slots_busy", busy, "slots_total", slots,
                               "queue_depth", queued));
}

static enum MHD_Result h_metrics(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    int queued, busy, slots;
    lp_sched_load(srv->sched, &queued, &busy, &slots);
    srv_buf out = {0};
    srv_metrics_render(srv->metrics, &out, queued, busy, slots);
    enum MHD_Result rc = send_bytes(c, cc, 200, "text/plain; version=0.0.4; charset=utf-8", out.p, out.len, NULL);
    srv_buf_free(&out);
    return rc;
}

static json_t *model_object(const srv_server *srv) {
    return json_pack("{s:s, s:s, s:I, s:s, s:{s:i, s:i, s:s, s:s}}", "id", srv->model_id, "object", "model",
                     "created", (json_int_t)srv->created, "owned_by", "llama-pajamas", "meta", "n_ctx",
                     lp_engine_n_ctx(srv->tg->engine), "n_parallel", lp_engine_n_slots(srv->tg->engine), "backend",
                     srv->tg->backend_name ? srv->tg->backend_name : "cpu", "artifact", srv->tg->artifact);
}

static enum MHD_Result h_models(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    return send_json(c, cc, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_object(srv)));
}

static enum MHD_Result h_model_one(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    const char *name = cc->url + strlen("/v1/models/");
    if (!srv_model_matches(srv, name))
        return fail(c, cc, 404, "invalid_request_error", "model_not_found", "The model '%s' does not exist", name);
    return send_json(c, cc, 200, model_object(srv));
}

/* The request body as a JSON object, or an error answer already queued (*rc). */
static json_t *body_object(struct MHD_Connection *c, srv_conn *cc, enum MHD_Result *rc) {
    json_error_t jerr;
    json_t *body = cc->body.len ? json_loadb(cc->body.p, cc->body.len, 0, &jerr) : NULL;
    if (!body) {
        *rc = fail(c, cc, 400, "invalid_request_error", "invalid_json",
                   "We could not parse the JSON body of your request: %s",
                   cc->body.len ? jerr.text : "the body is empty");
        return NULL;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        *rc = fail(c, cc, 400, "invalid_request_error", "invalid_json", "The request body must be a JSON object");
        return NULL;
    }
    return body;
}

static enum MHD_Result h_tokenize(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    enum MHD_Result rc;
    json_t *body = body_object(c, cc, &rc);
    if (!body) return rc;
    const json_t *content = json_object_get(body, "content");
    const json_t *special = json_object_get(body, "parse_special");
    if (!json_is_string(content) || (special && !json_is_boolean(special))) {
        json_decref(body);
        srv_error e;
        srv_bad_param(&e, "content", "expected {\"content\": string, \"parse_special\": bool}");
        return send_error(c, cc, &e, NULL);
    }
    int32_t *ids = NULL;
    int n = 0;
    if (lp_textgen_encode(srv->tg, json_string_value(content), json_is_true(special), &ids, &n) != 0) {
        json_decref(body);
        return fail(c, cc, 400, "invalid_request_error", NULL, "%s", lp_errmsg());
    }
    json_t *tokens = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(tokens, json_integer(ids[i]));
    free(ids);
    json_decref(body);
    return send_json(c, cc, 200, json_pack("{s:o}", "tokens", tokens));
}

static enum MHD_Result h_detokenize(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    enum MHD_Result rc;
    json_t *body = body_object(c, cc, &rc);
    if (!body) return rc;
    const json_t *tokens = json_object_get(body, "tokens");
    size_t n = json_array_size(tokens);
    int32_t *ids = lp_xmalloc(sizeof(int32_t) * (n + 1));
    bool ok = json_is_array(tokens);
    for (size_t i = 0; ok && i < n; i++) {
        const json_t *t = json_array_get(tokens, i);
        ok = json_is_integer(t) && json_integer_value(t) >= 0 && json_integer_value(t) < INT32_MAX;
        if (ok) ids[i] = (int32_t)json_integer_value(t);
    }
    json_decref(body);
    if (!ok) {
        free(ids);
        srv_error e;
        srv_bad_param(&e, "tokens", "expected {\"tokens\": [ids]}");
        return send_error(c, cc, &e, NULL);
    }
    size_t len = 0;
    char *text = lp_tokenizer_decode_len(srv->tg->tok, ids, n, false, &len);
    free(ids);
    json_t *out = json_pack("{s:o}", "content", srv_json_bytes(text, len));
    free(text);
    return send_json(c, cc, 200, out);
}

/* The prompt a chat request would get, and its token count (what usage.prompt_tokens
 * reports), without generating. */
static enum MHD_Result h_apply_template(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    enum MHD_Result rc;
    json_t *body = body_object(c, cc, &rc);
    if (!body) return rc;
    srv_request req;
    srv_error e;
    int prc = srv_parse_chat(srv, body, &req, &e);
    json_decref(body);
    if (prc != 0) {
        srv_request_free(&req);
        return send_error(c, cc, &e, NULL);
    }
    char *prompt = srv_unmark_prompt(srv, req.prompt_text);
    json_t *out = json_pack("{s:s, s:i}", "prompt", prompt, "n_tokens", req.job->n_prompt);
    free(prompt);
    srv_request_free(&req);
    return send_json(c, cc, 200, out);
}

/* ---- generation ---- */

typedef struct {
    srv_server *srv;
    srv_request req;
    srv_out out;
    srv_buf pending; /* SSE bytes not yet handed to MHD */
    size_t pos;
    bool finished;
    int fd;
    double last_sent;
} srv_stream;

static ssize_t stream_read(void *cls, uint64_t offset, char *buf, size_t max) {
    srv_stream *st = cls;
    while (st->pos >= st->pending.len) {
        if (st->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        srv_buf_clear(&st->pending);
        st->pos = 0;
        srv_snapshot snap;
        if (!srv_job_wait(st->req.job, st->out.text.len, st->out.n_lps, WAIT_SLICE_MS, &snap)) {
            srv_snapshot_free(&snap);
            if (srv_peer_gone(st->fd)) {
                lp_sched_cancel(st->srv->sched, st->req.job);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            if (lp_now() - st->last_sent > KEEPALIVE_SECONDS) {
                srv_buf_puts(&st->pending, ": keep-alive\n\n");
                st->last_sent = lp_now();
            }
            continue;
        }
        st->last_sent = lp_now();
        srv_stream_events(&st->out, &snap, &st->pending);
        st->finished = snap.done;
        srv_snapshot_free(&snap);
    }
    size_t n = st->pending.len - st->pos < max ? st->pending.len - st->pos : max;
    memcpy(buf, st->pending.p + st->pos, n);
    st->pos += n;
    return (ssize_t)n;
}

/* MHD is done with the stream: completed, or the client went away mid-way (then the
 * generation is cancelled and its slot freed at the scheduler's next step). */
static void stream_free(void *cls) {
    srv_stream *st = cls;
    if (!st->finished) lp_sched_cancel(st->srv->sched, st->req.job);
    atomic_fetch_sub(&st->srv->active, 1);
    srv_out_free(&st->out);
    srv_buf_free(&st->pending);
    srv_request_free(&st->req);
    free(st);
}

static enum MHD_Result start_stream(srv_server *srv, struct MHD_Connection *c, srv_conn *cc, srv_request *req) {
    srv_stream *st = lp_xcalloc(1, sizeof *st);
    st->srv = srv;
    st->req = *req;
    st->fd = connection_fd(c);
    st->last_sent = lp_now();
    srv_out_init(&st->out, srv, &st->req);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free);
    if (!r) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    cc->status = 200;
    return rc;
}

/* Non-streaming: wait for the whole result, giving up if the client leaves. */
static enum MHD_Result finish_blocking(srv_server *srv, struct MHD_Connection *c, srv_conn *cc, srv_request *req) {
    int fd = connection_fd(c);
    while (!srv_job_wait_done(req->job, WAIT_SLICE_MS)) {
        if (srv_peer_gone(fd)) {
            lp_sched_cancel(srv->sched, req->job);
            cc->status = 499; /* client closed request (nginx's convention) */
            srv_request_free(req);
            return MHD_NO;
        }
    }
    srv_snapshot snap;
    srv_job_wait(req->job, 0, 0, 0, &snap);
    enum MHD_Result rc;
    if (snap.finish == SRV_FIN_ERROR)
        rc = fail(c, cc, 500, "server_error", NULL, "%s", snap.error ? snap.error : "generation failed");
    else if (snap.finish == SRV_FIN_CANCELLED)
        rc = fail(c, cc, 503, "server_error", "server_shutting_down", "%s",
                  snap.error ? snap.error : "the request was cancelled");
    else {
        srv_out out;
        srv_out_init(&out, srv, req);
        json_t *resp = srv_final_response(&out, &snap);
        srv_out_free(&out);
        rc = send_json(c, cc, 200, resp);
    }
    srv_snapshot_free(&snap);
    srv_request_free(req);
    return rc;
}

static enum MHD_Result h_generate(srv_server *srv, struct MHD_Connection *c, srv_conn *cc, bool chat) {
    enum MHD_Result rc;
    json_t *body = body_object(c, cc, &rc);
    if (!body) return rc;
    srv_request req;
    srv_error e;
    int prc = chat ? srv_parse_chat(srv, body, &req, &e) : srv_parse_completion(srv, body, &req, &e);
    json_decref(body);
    if (prc != 0) {
        srv_request_free(&req);
        return send_error(c, cc, &e, NULL);
    }
    atomic_fetch_add(&srv->active, 1);
    int sub = lp_sched_submit(srv->sched, req.job);
    if (sub != 0) {
        srv_request_free(&req);
        atomic_fetch_sub(&srv->active, 1);
        if (sub == -2) return fail(c, cc, 503, "server_error", "server_shutting_down", "The server is shutting down");
        return fail(c, cc, 503, "server_error", "server_overloaded",
                    "The server is busy (all %d slots and the queue of %d are taken); retry later",
                    srv->opts.n_parallel, srv->opts.max_queue);
    }
    if (req.stream) return start_stream(srv, c, cc, &req); /* stream_free() decrements active */
    rc = finish_blocking(srv, c, cc, &req);
    atomic_fetch_sub(&srv->active, 1);
    return rc;
}

static enum MHD_Result h_chat(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    return h_generate(srv, c, cc, true);
}

static enum MHD_Result h_completions(srv_server *srv, struct MHD_Connection *c, srv_conn *cc) {
    return h_generate(srv, c, cc, false);
}

/* ---- routing ---- */

typedef struct {
    const char *path;
    const char *method;
    bool prefix;    /* path is a prefix (/v1/models/{id}) */
    bool auth;      /* needs the API key when one is set */
    handler_fn fn;
} route;

static const route routes[] = {
    {"/", "GET", false, false, h_index},
    {"/index.html", "GET", false, false, h_index},
    {"/health", "GET", false, false, h_health},
    {"/metrics", "GET", false, false, h_metrics},
    {"/v1/models", "GET", false, true, h_models},
    {"/v1/models/", "GET", true, true, h_model_one},
    {"/v1/chat/completions", "POST", false, true, h_chat},
    {"/v1/completions", "POST", false, true, h_completions},
    {"/tokenize", "POST", false, true, h_tokenize},
    {"/detokenize", "POST", false, true, h_detokenize},
    {"/apply-template", "POST", false, true, h_apply_template},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

static const route *find_route(const char *url) {
    for (size_t i = 0; i < N_ROUTES; i++) {
        const route *r = &routes[i];
        if (r->prefix ? strncmp(url, r->path, strlen(r->path)) == 0 && url[strlen(r->path)] : strcmp(url, r->path) == 0)
            return r;
    }
    return NULL;
}

/* Constant-time comparison of the presented bearer token with the key. */
static bool authorized(const srv_server *srv, struct MHD_Connection *c) {
    if (!srv->opts.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    const char *given = h + 7, *key = srv->opts.api_key;
    size_t n = strlen(given), k = strlen(key);
    unsigned diff = (unsigned)(n ^ k);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)given[i] ^ (unsigned char)key[k ? i % k : 0];
    return diff == 0;
}

static enum MHD_Result dispatch(srv_server *srv, struct MHD_Connection *c, srv_conn *cc, const char *method) {
    const route *r = find_route(cc->url);
    cc->endpoint = r ? r->path : "other";
    if (!r) return fail(c, cc, 404, "invalid_request_error", "not_found", "Unknown path '%s'", cc->url);
    bool head_ok = strcmp(r->method, "GET") == 0 && strcmp(method, "HEAD") == 0;
    if (strcmp(method, r->method) != 0 && !head_ok) {
        srv_error e;
        srv_error_set(&e, 405, "invalid_request_error", "method_not_allowed", NULL, "Method %s is not allowed on %s (use %s)",
                      method, cc->url, r->method);
        return send_error(c, cc, &e, r->method);
    }
    if (r->auth && !authorized(srv, c))
        return fail(c, cc, 401, "invalid_request_error", "invalid_api_key",
                    "Incorrect or missing API key: send 'Authorization: Bearer <key>'");
    if (cc->too_large)
        return fail(c, cc, 413, "invalid_request_error", "request_too_large",
                    "The request body is larger than the limit of %zu bytes", srv->opts.max_body);
    return r->fn(srv, c, cc);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    srv_server *srv = cls;
    srv_conn *cc = *con_cls;
    if (!cc) {
        cc = lp_xcalloc(1, sizeof *cc);
        cc->t0 = lp_now();
        cc->endpoint = "other";
        snprintf(cc->method, sizeof cc->method, "%s", method);
        snprintf(cc->url, sizeof cc->url, "%s", url);
        *con_cls = cc;
        /* Absurd declared sizes are refused before reading (the connection then closes);
         * moderately large ones are read and dropped so the client sees a clean 413. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > 16 * (unsigned long long)srv->opts.max_body) {
            cc->too_large = true;
            return dispatch(srv, c, cc, method);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (cc->body.len + *upload_size > srv->opts.max_body) {
            cc->too_large = true;
            srv_buf_free(&cc->body);
        }
        if (!cc->too_large) srv_buf_append(&cc->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    return dispatch(srv, c, cc, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    srv_server *srv = cls;
    srv_conn *cc = *con_cls;
    if (!cc) return;
    int status = cc->status ? cc->status : 499;
    if (why != MHD_REQUEST_TERMINATED_COMPLETED_OK && status == 200) status = 499;
    srv_metrics_request(srv->metrics, cc->endpoint, status);
    if (!srv->opts.quiet)
        fprintf(stderr, "%s %s %d %.3fs\n", cc->method, cc->url, status, lp_now() - cc->t0);
    srv_buf_free(&cc->body);
    free(cc);
    *con_cls = NULL;
}

/* ---- lifecycle ---- */

static void collect_specials(srv_server *srv) {
    size_t n = lp_tokenizer_n_vocab(srv->tg->tok);
    for (size_t id = 0; id < n; id++) {
        if (!lp_tokenizer_is_special(srv->tg->tok, (int32_t)id)) continue;
        const char *text = lp_tokenizer_token_text(srv->tg->tok, (int32_t)id);
        if (!text || !*text) continue;
        srv->specials = lp_xrealloc(srv->specials, sizeof(char *) * (size_t)(srv->n_specials + 1));
        srv->specials[srv->n_specials++] = lp_xstrdup(text);
    }
}

static int resolve(const char *host, int port, struct sockaddr_storage *addr, socklen_t *len) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    int rc = getaddrinfo(host, port_s, &hints, &res);
    if (rc != 0 || !res) return lp_fail("--host: cannot resolve '%s': %s", host, gai_strerror(rc));
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static bool is_loopback(const struct sockaddr_storage *addr) {
    if (addr->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)addr)->sin_addr.s_addr) >> 24) == 127;
    if (addr->ss_family == AF_INET6) {
        static const unsigned char one[16] = {[15] = 1};
        return memcmp(&((const struct sockaddr_in6 *)addr)->sin6_addr, one, 16) == 0;
    }
    return false;
}

static void server_free(srv_server *srv) {
    lp_sched_free(srv->sched);
    srv_metrics_free(srv->metrics);
    lp_textgen_free(srv->tg);
    for (int i = 0; i < srv->n_specials; i++) free(srv->specials[i]);
    free(srv->specials);
    pthread_mutex_destroy(&srv->render_mu);
}

static void apply_defaults(lp_server_opts *o) {
    if (!o->host) o->host = "127.0.0.1";
    if (o->n_parallel <= 0) o->n_parallel = 4;
    if (o->max_queue < 0) o->max_queue = 0;
    if (o->max_body == 0) o->max_body = 8u << 20;
    if (o->drain_seconds <= 0) o->drain_seconds = 5;
}

int lp_server_run(const lp_server_opts *opts) {
    srv_server srv = {.opts = *opts, .created = (long)time(NULL)};
    apply_defaults(&srv.opts);
    pthread_mutex_init(&srv.render_mu, NULL);
    const char *hooks = getenv("LP_SERVE_TEST_HOOKS");
    srv.test_hooks = hooks && strcmp(hooks, "1") == 0;

    /* Every thread started from here on inherits the blocked signals; this thread
     * takes them with sigwait() once serving. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_storage addr;
    socklen_t addr_len;
    if (resolve(srv.opts.host, srv.opts.port, &addr, &addr_len) != 0) return -1;
    lp_textgen_opts to = {.model_path = srv.opts.model_path, .backend = srv.opts.backend,
                          .n_threads = srv.opts.n_threads, .n_ctx = srv.opts.n_ctx, .n_slots = srv.opts.n_parallel};
    srv.tg = lp_textgen_open(&to);
    if (!srv.tg) {
        server_free(&srv);
        return -1;
    }
    srv.model_id = srv.opts.alias ? srv.opts.alias : srv.tg->name;
    collect_specials(&srv);
    srv.metrics = srv_metrics_create();
    srv.sched = lp_sched_create(srv.tg, srv.opts.max_queue, srv.metrics);
    if (!srv.sched) {
        server_free(&srv);
        return -1;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC;
    if (addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)srv.opts.port, NULL, NULL, on_request, &srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, &srv, MHD_OPTION_CONNECTION_LIMIT, 512u,
        MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!d) {
        lp_fail("serve: cannot listen on %s:%d (address in use, or not permitted?)", srv.opts.host, srv.opts.port);
        server_free(&srv);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = di ? di->port : srv.opts.port;
    bool v6 = addr.ss_family == AF_INET6;
    fprintf(stderr, "serve: model '%s' (%s backend), %d slots x %d tokens of context\n", srv.model_id,
            srv.tg->backend_name ? srv.tg->backend_name : "cpu", lp_engine_n_slots(srv.tg->engine),
            lp_engine_n_ctx(srv.tg->engine));
    if (!srv.opts.api_key && !is_loopback(&addr))
        fprintf(stderr, "serve: warning: listening on %s without --api-key: anyone who can reach it can use it\n",
                srv.opts.host);
    printf("listening on http://%s%s%s:%d\n", v6 ? "[" : "", srv.opts.host, v6 ? "]" : "", port);
    fflush(stdout);
    if (srv.opts.ready_file) {
        char line[300];
        int n = snprintf(line, sizeof line, "%s %d\n", srv.opts.host, port);
        lp_write_file_atomic(srv.opts.ready_file, line, (size_t)n);
    }

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "serve: %s received, draining (up to %.1f s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
            srv.opts.drain_seconds);
    MHD_socket listen_fd = MHD_quiesce_daemon(d); /* no new connections from here on */
    if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
    lp_sched_shutdown(srv.sched, srv.opts.drain_seconds);
    /* Every job has ended; give the connections a moment to send their last bytes
     * (the final SSE events) before the sockets are closed. */
    double t0 = lp_now();
    while (atomic_load(&srv.active) > 0 && lp_now() - t0 < 2.0) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(d);
    server_free(&srv);
    fprintf(stderr, "serve: stopped\n");
    return 0;
}
