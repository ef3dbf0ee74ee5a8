/* oai_req.c — OpenAI request validation: sampling parameters, stop strings, logprobs,
 * response_format, tools, thinking switches; chat messages normalised and rendered with
 * the model's template; prompts tokenized so user text cannot smuggle in control tokens. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "oai.h"

#define MAX_STOPS 16
#define JSON_HINT "Respond with a single valid JSON object and nothing else."

/* Private-use code points around a special token's index mark where user text held a
 * control-token string; they are tokenized back as plain text (see encode_prompt). */
#define MARK_OPEN "\xEE\x80\x80"
#define MARK_CLOSE "\xEE\x80\x81"

/* ---- errors ---- */

int srv_error_set(srv_error *e, int status, const char *type, const char *code, const char *param, const char *fmt,
                  ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

int srv_bad_param(srv_error *e, const char *param, const char *fmt, ...) {
    e->status = 400;
    e->type = "invalid_request_error";
    e->code = NULL;
    snprintf(e->param, sizeof e->param, "%s", param);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

json_t *srv_error_json(const srv_error *e) {
    return json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", e->message, "type", e->type, "param",
                     e->param[0] ? json_string(e->param) : json_null(), "code",
                     e->code ? json_string(e->code) : json_null());
}

/* ---- typed getters: 1 present, 0 absent or null, -1 wrong type / range (e set) ---- */

static int get_number(const json_t *o, const char *key, double lo, double hi, double *out, srv_error *e) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return srv_bad_param(e, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) return srv_bad_param(e, key, "'%s' must be between %g and %g, got %g", key, lo, hi, d);
    *out = d;
    return 1;
}

static int get_int(const json_t *o, const char *key, long long lo, long long hi, long long *out, srv_error *e) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    long long x;
    if (json_is_integer(v))
        x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15)
        x = (long long)json_real_value(v);
    else
        return srv_bad_param(e, key, "'%s' must be an integer", key);
    if (x < lo || x > hi) return srv_bad_param(e, key, "'%s' must be between %lld and %lld, got %lld", key, lo, hi, x);
    *out = x;
    return 1;
}

static int get_bool(const json_t *o, const char *key, bool *out, srv_error *e) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return srv_bad_param(e, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 1;
}

/* ---- parameters both endpoints share ---- */

static int parse_stops(const json_t *body, srv_job *j, srv_error *e) {
    const json_t *v = json_object_get(body, "stop");
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0) return 0;
        j->stops = lp_xcalloc(1, sizeof(char *));
        j->stops[j->n_stops++] = lp_xstrdup(json_string_value(v));
        return 0;
    }
    if (!json_is_array(v)) return srv_bad_param(e, "stop", "'stop' must be a string or an array of strings");
    if (json_array_size(v) > MAX_STOPS) return srv_bad_param(e, "stop", "'stop' holds at most %d strings", MAX_STOPS);
    j->stops = lp_xcalloc(json_array_size(v) + 1, sizeof(char *));
    size_t i;
    const json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s)) return srv_bad_param(e, "stop", "'stop' must be a string or an array of strings");
        if (json_string_length(s) > 0) j->stops[j->n_stops++] = lp_xstrdup(json_string_value(s));
    }
    return 0;
}

/* logit_bias: {"token id": bias in [-100, 100]}; -100 bans the token. */
static int parse_logit_bias(srv_server *srv, const json_t *body, srv_job *j, srv_error *e) {
    const json_t *lb = json_object_get(body, "logit_bias");
    if (!lb || json_is_null(lb)) return 0;
    if (!json_is_object(lb)) return srv_bad_param(e, "logit_bias", "'logit_bias' must be an object");
    size_t n = json_object_size(lb);
    j->bias_ids = lp_xmalloc(sizeof(int32_t) * (n + 1));
    j->bias_values = lp_xmalloc(sizeof(float) * (n + 1));
    int n_vocab = lp_engine_n_vocab(srv->tg->engine);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)lb, key, v) {
        char *end;
        long id = strtol(key, &end, 10);
        if (*key == 0 || *end || id < 0 || id >= n_vocab)
            return srv_bad_param(e, "logit_bias", "'logit_bias' keys must be token ids in [0, %d)", n_vocab);
        if (!json_is_number(v) || json_number_value(v) < -100 || json_number_value(v) > 100)
            return srv_bad_param(e, "logit_bias", "'logit_bias' values must be numbers in [-100, 100]");
        j->bias_ids[j->n_bias] = (int32_t)id;
        j->bias_values[j->n_bias++] = (float)json_number_value(v);
    }
    return 0;
}

static int parse_sampling(srv_server *srv, const json_t *body, srv_request *r, srv_error *e) {
    srv_job *j = r->job;
    lp_sampler_params *sp = &j->sampling;
    *sp = lp_sampler_default_params();
    double d = 0;
    long long x = 0;
    int rc;
    if ((rc = get_number(body, "temperature", 0, 2, &d, e)) < 0) return -1;
    if (rc) sp->temperature = (float)d;
    if ((rc = get_number(body, "top_p", 0, 1, &d, e)) < 0) return -1;
    if (rc) {
        sp->top_p = (float)d;
        if (d == 0) sp->temperature = 0; /* nothing but the most likely token survives */
    }
    if ((rc = get_int(body, "top_k", -1, 1 << 30, &x, e)) < 0) return -1;
    if (rc) sp->top_k = (int)x;
    if ((rc = get_number(body, "min_p", 0, 1, &d, e)) < 0) return -1;
    if (rc) sp->min_p = (float)d;
    if ((rc = get_number(body, "presence_penalty", -2, 2, &d, e)) < 0) return -1;
    if (rc) sp->presence_penalty = (float)d;
    if ((rc = get_number(body, "frequency_penalty", -2, 2, &d, e)) < 0) return -1;
    if (rc) sp->frequency_penalty = (float)d;
    if ((rc = get_number(body, "repetition_penalty", 0.01, 10, &d, e)) < 0) return -1;
    if (rc) sp->repeat_penalty = (float)d;
    if ((rc = get_int(body, "seed", INT64_MIN, INT64_MAX, &x, e)) < 0) return -1;
    sp->seed = rc ? (uint64_t)x : srv_random_u64();

    long long max_tokens = 0;
    if ((rc = get_int(body, "max_tokens", 1, 1 << 30, &x, e)) < 0) return -1;
    if (rc) max_tokens = x;
    if ((rc = get_int(body, "max_completion_tokens", 1, 1 << 30, &x, e)) < 0) return -1;
    if (rc) max_tokens = x;
    j->max_tokens = (int)max_tokens;

    if ((rc = get_int(body, "n", 1, 1 << 30, &x, e)) < 0) return -1;
    if (rc && x != 1) return srv_bad_param(e, "n", "only n=1 is supported");
    if ((rc = get_int(body, "best_of", 1, 1 << 30, &x, e)) < 0) return -1;
    if (rc && x != 1) return srv_bad_param(e, "best_of", "only best_of=1 is supported");

    if (get_bool(body, "stream", &r->stream, e) < 0) return -1;
    const json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return srv_bad_param(e, "stream_options", "'stream_options' must be an object");
        if (!r->stream)
            return srv_bad_param(e, "stream_options", "'stream_options' is only allowed when 'stream' is true");
        if (get_bool(so, "include_usage", &r->include_usage, e) < 0) return -1;
    }
    if (parse_stops(body, j, e) != 0 || parse_logit_bias(srv, body, j, e) != 0) return -1;

    const json_t *rf = json_object_get(body, "response_format");
    if (rf && !json_is_null(rf)) {
        const char *type = json_string_value(json_object_get(rf, "type"));
        if (!json_is_object(rf) || !type)
            return srv_bad_param(e, "response_format", "'response_format' must be an object with a 'type'");
        if (strcmp(type, "json_object") == 0 || strcmp(type, "json_schema") == 0)
            j->json_object = true;
        else if (strcmp(type, "text") != 0)
            return srv_bad_param(e, "response_format.type",
                                 "'response_format.type' must be 'text', 'json_object' or 'json_schema'");
    }
    const json_t *forced = json_object_get(body, "lp_test_output");
    if (srv->test_hooks && json_is_string(forced)) {
        if (lp_textgen_encode(srv->tg, json_string_value(forced), true, &j->forced, &j->n_forced) != 0)
            return srv_bad_param(e, "lp_test_output", "%s", lp_errmsg());
        if (j->n_forced == 0) return srv_bad_param(e, "lp_test_output", "'lp_test_output' is empty");
    }
    const json_t *delay = json_object_get(body, "lp_test_delay_ms");
    if (srv->test_hooks && delay && !json_is_null(delay)) {
        if (!json_is_integer(delay) || json_integer_value(delay) < 0 || json_integer_value(delay) > 1000)
            return srv_bad_param(e, "lp_test_delay_ms", "'lp_test_delay_ms' must be an integer from 0 to 1000");
        j->test_delay_ms = (int)json_integer_value(delay);
    }
    return 0;
}

static int check_model(srv_server *srv, const json_t *body, srv_error *e) {
    const json_t *m = json_object_get(body, "model");
    if (!m || json_is_null(m)) return 0;
    if (!json_is_string(m)) return srv_bad_param(e, "model", "'model' must be a string");
    if (!srv_model_matches(srv, json_string_value(m)))
        return srv_error_set(e, 404, "invalid_request_error", "model_not_found", "model",
                             "The model '%s' does not exist; this server serves '%s'", json_string_value(m),
                             srv->model_id);
    return 0;
}

bool srv_model_matches(const srv_server *srv, const char *name) {
    return strcmp(name, srv->model_id) == 0 || strcmp(name, srv->tg->name) == 0 ||
           strcmp(name, srv->opts.model_path) == 0 || (srv->opts.alias && strcmp(name, srv->opts.alias) == 0);
}

/* ---- prompts ---- */

/* Tokenize a prompt. Where MARK_OPEN idx MARK_CLOSE stands in the text, specials[idx] is
 * tokenized as plain text; everything else may contain control tokens (the template's). */
static int encode_prompt(srv_server *srv, const char *text, bool marked, srv_job *j, srv_error *e) {
    if (!marked) {
        if (lp_textgen_encode(srv->tg, text, true, &j->prompt, &j->n_prompt) != 0)
            return srv_bad_param(e, "messages", "%s", lp_errmsg());
        return 0;
    }
    size_t cap = 0;
    j->n_prompt = 0;
    const char *p = text;
    while (*p) {
        const char *mark = strstr(p, MARK_OPEN);
        size_t seg = mark ? (size_t)(mark - p) : strlen(p);
        char *piece = lp_xmalloc(seg + 1);
        memcpy(piece, p, seg);
        piece[seg] = 0;
        bool special = true;
        if (seg == 0 && mark) { /* the mark itself */
            char *end;
            long idx = strtol(mark + strlen(MARK_OPEN), &end, 10);
            if (idx >= 0 && idx < srv->n_specials && strncmp(end, MARK_CLOSE, strlen(MARK_CLOSE)) == 0) {
                free(piece);
                piece = lp_xstrdup(srv->specials[idx]);
                special = false;
                seg = (size_t)(end + strlen(MARK_CLOSE) - p);
            } else { /* a stray private-use character: ordinary text */
                free(piece);
                piece = lp_xstrdup(MARK_OPEN);
                seg = strlen(MARK_OPEN);
            }
        }
        int32_t *ids = NULL;
        int n = 0;
        int rc = lp_textgen_encode(srv->tg, piece, special, &ids, &n);
        free(piece);
        if (rc != 0) return srv_bad_param(e, "messages", "%s", lp_errmsg());
        if ((size_t)(j->n_prompt + n) > cap) {
            cap = 2 * ((size_t)(j->n_prompt + n) + 64);
            j->prompt = lp_xrealloc(j->prompt, sizeof(int32_t) * cap);
        }
        if (n) memcpy(j->prompt + j->n_prompt, ids, sizeof(int32_t) * (size_t)n);
        j->n_prompt += n;
        free(ids);
        p += seg;
    }
    return 0;
}

/* Replace control-token strings in user-supplied text by marks; NULL when there are none. */
static char *mark_specials(const srv_server *srv, const char *s) {
    bool any = false;
    for (int k = 0; k < srv->n_specials && !any; k++) any = strstr(s, srv->specials[k]) != NULL;
    if (!any) return NULL;
    srv_buf b = {0};
    while (*s) {
        int hit = -1;
        for (int k = 0; k < srv->n_specials && hit < 0; k++)
            if (strncmp(s, srv->specials[k], strlen(srv->specials[k])) == 0) hit = k;
        if (hit >= 0) {
            srv_buf_printf(&b, MARK_OPEN "%d" MARK_CLOSE, hit);
            s += strlen(srv->specials[hit]);
        } else {
            srv_buf_append(&b, s++, 1);
        }
    }
    return b.p;
}

char *srv_unmark_prompt(const srv_server *srv, const char *text) {
    srv_buf b = {0};
    srv_buf_puts(&b, "");
    while (*text) {
        const char *mark = strstr(text, MARK_OPEN);
        size_t seg = mark ? (size_t)(mark - text) : strlen(text);
        srv_buf_append(&b, text, seg);
        text += seg;
        if (!mark) break;
        char *end;
        long idx = strtol(text + strlen(MARK_OPEN), &end, 10);
        if (idx >= 0 && idx < srv->n_specials && strncmp(end, MARK_CLOSE, strlen(MARK_CLOSE)) == 0) {
            srv_buf_puts(&b, srv->specials[idx]);
            text = end + strlen(MARK_CLOSE);
        } else {
            srv_buf_puts(&b, MARK_OPEN);
            text += strlen(MARK_OPEN);
        }
    }
    return b.p;
}

/* OpenAI content: a string, null, or an array of {"type":"text","text":...} parts. */
static int content_text(const json_t *content, const char *param, srv_buf *out, srv_error *e) {
    if (!content || json_is_null(content)) return 0;
    if (json_is_string(content)) {
        srv_buf_append(out, json_string_value(content), json_string_length(content));
        return 0;
    }
    if (!json_is_array(content)) return srv_bad_param(e, param, "'content' must be a string or an array of parts");
    size_t i;
    const json_t *part;
    json_array_foreach(content, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        const json_t *text = json_object_get(part, "text");
        if (!type || strcmp(type, "text") != 0 || !json_is_string(text))
            return srv_bad_param(e, param, "only text content parts are supported");
        if (i > 0) srv_buf_puts(out, "\n");
        srv_buf_append(out, json_string_value(text), json_string_length(text));
    }
    return 0;
}

/* Validated copy of the messages with string contents (templates expect strings), the
 * developer role as system, control-token strings in contents marked. */
static json_t *normalize_messages(srv_server *srv, const json_t *messages, bool *marked, srv_error *e) {
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        srv_bad_param(e, "messages", "'messages' must be a non-empty array");
        return NULL;
    }
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool", NULL};
    json_t *out = json_array();
    size_t i;
    const json_t *m;
    json_array_foreach(messages, i, m) {
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        const char *role = json_string_value(json_object_get(m, "role"));
        int r = 0;
        while (role && roles[r] && strcmp(roles[r], role) != 0) r++;
        if (!json_is_object(m) || !role || !roles[r]) {
            srv_bad_param(e, param, "each message needs a 'role' of system, developer, user, assistant or tool");
            goto fail;
        }
        const json_t *content = json_object_get(m, "content");
        if ((!content || json_is_null(content)) && strcmp(role, "assistant") != 0) {
            srv_bad_param(e, param, "a %s message needs 'content'", role);
            goto fail;
        }
        srv_buf text = {0};
        if (content_text(content, param, &text, e) != 0) {
            srv_buf_free(&text);
            goto fail;
        }
        json_t *copy = json_deep_copy(m);
        if (strcmp(role, "developer") == 0) json_object_set_new(copy, "role", json_string("system"));
        char *safe = mark_specials(srv, text.p ? text.p : "");
        if (safe) *marked = true;
        json_object_set_new(copy, "content", json_string(safe ? safe : text.p ? text.p : ""));
        free(safe);
        srv_buf_free(&text);
        const json_t *reasoning = json_object_get(copy, "reasoning_content");
        if (json_is_string(reasoning) && (safe = mark_specials(srv, json_string_value(reasoning)))) {
            *marked = true;
            json_object_set_new(copy, "reasoning_content", json_string(safe));
            free(safe);
        }
        json_array_append_new(out, copy);
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static void add_json_hint(json_t *messages) {
    json_t *first = json_array_get(messages, 0);
    const char *role = json_string_value(json_object_get(first, "role"));
    if (role && strcmp(role, "system") == 0) {
        char *s = lp_xasprintf("%s\n\n%s", json_string_value(json_object_get(first, "content")), JSON_HINT);
        json_object_set_new(first, "content", json_string(s));
        free(s);
    } else {
        json_array_insert_new(messages, 0, json_pack("{s:s, s:s}", "role", "system", "content", JSON_HINT));
    }
}

/* tools and tool_choice: the tools the template should show, or NULL; for tool_choice
 * "required" or a named function, *forced gets the opening of the tool call the reply
 * is made to start with (the prompt ends with it, so the model can only complete it). */
static int parse_tools(const json_t *body, const json_t **tools_out, char **forced, srv_error *e) {
    *tools_out = NULL;
    *forced = NULL;
    const json_t *tools = json_object_get(body, "tools");
    const json_t *choice = json_object_get(body, "tool_choice");
    if (!tools || json_is_null(tools)) {
        bool forcing = json_is_object(choice) || (json_is_string(choice) && strcmp(json_string_value(choice), "required") == 0);
        return forcing ? srv_bad_param(e, "tool_choice", "'tool_choice' needs 'tools'") : 0;
    }
    if (!json_is_array(tools)) return srv_bad_param(e, "tools", "'tools' must be an array");
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t) {
        const json_t *fn = json_object_get(t, "function");
        const char *type = json_string_value(json_object_get(t, "type"));
        if (!json_is_object(t) || !type || strcmp(type, "function") != 0 || !json_is_object(fn) ||
            !json_is_string(json_object_get(fn, "name")))
            return srv_bad_param(e, "tools", "each tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    if (choice && !json_is_null(choice)) {
        const char *c = json_string_value(choice);
        bool named = json_is_object(choice) && json_is_string(json_object_get(json_object_get(choice, "function"), "name"));
        if (!named && !(c && (strcmp(c, "none") == 0 || strcmp(c, "auto") == 0 || strcmp(c, "required") == 0)))
            return srv_bad_param(e, "tool_choice",
                                 "'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", ...}");
        if (c && strcmp(c, "none") == 0) return 0;
        if (json_array_size(tools) == 0) return srv_bad_param(e, "tool_choice", "'tool_choice' needs 'tools'");
        if (named) {
            json_t *name = json_object_get(json_object_get(choice, "function"), "name");
            char *quoted = json_dumps(name, JSON_ENCODE_ANY);
            *forced = lp_xasprintf("<tool_call>\n{\"name\": %s, \"arguments\": ", quoted);
            free(quoted);
        } else if (strcmp(c, "required") == 0) {
            *forced = lp_xstrdup("<tool_call>\n{\"name\": \"");
        }
    }
    if (json_array_size(tools) > 0) *tools_out = tools;
    return 0;
}

/* chat_template_kwargs plus the thinking switches: enable_thinking, reasoning_effort "none". */
static json_t *template_kwargs(const json_t *body, bool json_mode, srv_error *e) {
    const json_t *kw = json_object_get(body, "chat_template_kwargs");
    if (kw && !json_is_null(kw) && !json_is_object(kw)) {
        srv_bad_param(e, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
        return NULL;
    }
    json_t *out = kw && json_is_object(kw) ? json_deep_copy(kw) : json_object();
    bool think = true;
    int rc = get_bool(body, "enable_thinking", &think, e);
    if (rc < 0) goto fail;
    if (rc) json_object_set_new(out, "enable_thinking", json_boolean(think));
    const json_t *effort = json_object_get(body, "reasoning_effort");
    if (effort && !json_is_null(effort)) {
        if (!json_is_string(effort)) {
            srv_bad_param(e, "reasoning_effort", "'reasoning_effort' must be a string");
            goto fail;
        }
        if (strcmp(json_string_value(effort), "none") == 0) json_object_set_new(out, "enable_thinking", json_false());
    }
    /* JSON mode constrains the whole output, which leaves no room for a <think> block. */
    if (json_mode) json_object_set_new(out, "enable_thinking", json_false());
    return out;
fail:
    json_decref(out);
    return NULL;
}

char *srv_render_messages(srv_server *srv, const json_t *messages, const json_t *tools, const json_t *kwargs,
                          srv_error *e) {
    pthread_mutex_lock(&srv->render_mu);
    char *text = lp_textgen_render_chat(srv->tg, messages, tools, true, kwargs);
    pthread_mutex_unlock(&srv->render_mu);
    if (!text) srv_bad_param(e, "messages", "%s", lp_errmsg());
    return text;
}

static bool ends_inside_think(const char *prompt) {
    size_t n = strlen(prompt);
    while (n > 0 && srv_is_space(prompt[n - 1])) n--;
    return n >= 7 && memcmp(prompt + n - 7, "<think>", 7) == 0;
}

static int check_context(srv_server *srv, const srv_job *j, srv_error *e) {
    int n_ctx = lp_engine_n_ctx(srv->tg->engine);
    if (j->n_prompt == 0) return srv_bad_param(e, "prompt", "the prompt is empty");
    if (j->n_prompt >= n_ctx)
        return srv_error_set(e, 400, "invalid_request_error", "context_length_exceeded", "messages",
                             "This model's maximum context length is %d tokens. However, your prompt resulted in %d "
                             "tokens. Please reduce the length of the messages or prompt.",
                             n_ctx, j->n_prompt);
    return 0;
}

static int parse_logprobs_chat(const json_t *body, srv_job *j, srv_error *e) {
    long long top = 0;
    if (get_bool(body, "logprobs", &j->logprobs, e) < 0) return -1;
    int rc = get_int(body, "top_logprobs", 0, SRV_MAX_TOP_LOGPROBS, &top, e);
    if (rc < 0) return -1;
    if (rc && !j->logprobs) return srv_bad_param(e, "top_logprobs", "'top_logprobs' requires 'logprobs': true");
    j->top_logprobs = (int)top;
    return 0;
}

int srv_parse_chat(srv_server *srv, const json_t *body, srv_request *r, srv_error *e) {
    memset(r, 0, sizeof *r);
    r->chat = true;
    r->legacy_logprobs = -1;
    r->job = srv_job_new();
    if (check_model(srv, body, e) != 0 || parse_sampling(srv, body, r, e) != 0 ||
        parse_logprobs_chat(body, r->job, e) != 0)
        return -1;
    const json_t *tools;
    if (parse_tools(body, &tools, &r->forced_tool, e) != 0) return -1;
    bool marked = false;
    json_t *messages = normalize_messages(srv, json_object_get(body, "messages"), &marked, e);
    if (!messages) return -1;
    if (r->job->json_object) add_json_hint(messages);
    json_t *kwargs = template_kwargs(body, r->job->json_object, e);
    if (!kwargs) {
        json_decref(messages);
        return -1;
    }
    /* a forced tool call leaves no room for a <think> block */
    if (r->forced_tool) json_object_set_new(kwargs, "enable_thinking", json_false());
    r->prompt_text = srv_render_messages(srv, messages, tools, kwargs, e);
    json_decref(messages);
    json_decref(kwargs);
    if (!r->prompt_text) return -1;
    if (r->prompt_text && r->forced_tool) {
        char *with = lp_xasprintf("%s%s", r->prompt_text, r->forced_tool);
        free(r->prompt_text);
        r->prompt_text = with;
    }
    r->in_reasoning = ends_inside_think(r->prompt_text);
    r->parse_tools = tools != NULL;
    if (encode_prompt(srv, r->prompt_text, marked, r->job, e) != 0) return -1;
    return check_context(srv, r->job, e);
}

/* The completion prompt: a string, or one token-id array (wrapped in a list or not). */
static int completion_prompt(srv_server *srv, const json_t *prompt, srv_request *r, srv_error *e) {
    if (json_is_array(prompt) && json_array_size(prompt) == 1 && !json_is_integer(json_array_get(prompt, 0)))
        prompt = json_array_get(prompt, 0);
    srv_job *j = r->job;
    if (json_is_string(prompt)) {
        r->prompt_text = lp_xstrdup(json_string_value(prompt));
        /* A raw prompt is the caller's whole formatted prompt: control tokens in it count
         * (llama.cpp and vLLM read it the same way). */
        if (lp_textgen_encode(srv->tg, r->prompt_text, true, &j->prompt, &j->n_prompt) != 0)
            return srv_bad_param(e, "prompt", "%s", lp_errmsg());
        return 0;
    }
    if (!json_is_array(prompt) || json_array_size(prompt) == 0)
        return srv_bad_param(e, "prompt", "'prompt' must be a string or an array of token ids (one prompt only)");
    int n_vocab = lp_engine_n_vocab(srv->tg->engine);
    j->n_prompt = (int)json_array_size(prompt);
    j->prompt = lp_xmalloc(sizeof(int32_t) * (size_t)j->n_prompt);
    for (int i = 0; i < j->n_prompt; i++) {
        const json_t *t = json_array_get(prompt, (size_t)i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= n_vocab)
            return srv_bad_param(e, "prompt", "'prompt' token ids must be integers in [0, %d)", n_vocab);
        j->prompt[i] = (int32_t)json_integer_value(t);
    }
    r->prompt_text = lp_tokenizer_decode(srv->tg->tok, j->prompt, (size_t)j->n_prompt, false);
    return 0;
}

int srv_parse_completion(srv_server *srv, const json_t *body, srv_request *r, srv_error *e) {
    memset(r, 0, sizeof *r);
    r->legacy_logprobs = -1;
    r->job = srv_job_new();
    if (check_model(srv, body, e) != 0 || parse_sampling(srv, body, r, e) != 0) return -1;
    const json_t *lp = json_object_get(body, "logprobs");
    if (json_is_boolean(lp)) { /* not in the legacy API, but clients send it */
        r->legacy_logprobs = json_is_true(lp) ? 0 : -1;
    } else {
        long long n = 0;
        int rc = get_int(body, "logprobs", 0, SRV_MAX_TOP_LOGPROBS, &n, e);
        if (rc < 0) return -1;
        if (rc) r->legacy_logprobs = (int)n;
    }
    if (r->legacy_logprobs >= 0) {
        r->job->logprobs = true;
        r->job->top_logprobs = r->legacy_logprobs;
    }
    if (get_bool(body, "echo", &r->echo, e) < 0) return -1;
    const json_t *prompt = json_object_get(body, "prompt");
    if (!prompt || json_is_null(prompt)) return srv_bad_param(e, "prompt", "'prompt' is required");
    if (completion_prompt(srv, prompt, r, e) != 0) return -1;
    return check_context(srv, r->job, e);
}

void srv_request_free(srv_request *r) {
    srv_job_unref(r->job);
    free(r->prompt_text);
    free(r->forced_tool);
    memset(r, 0, sizeof *r);
}
