/* split.c — the streaming reasoning / content / tool-call splitter and the parser of
 * <tool_call> blocks. */
#include "split.h"

#include <string.h>

enum { SP_START, SP_THINK, SP_CONTENT, SP_TOOLS };

static const char THINK_OPEN[] = "<think>", THINK_CLOSE[] = "</think>";
static const char CALL_OPEN[] = "<tool_call>", CALL_CLOSE[] = "</tool_call>";

void srv_split_init(srv_split *s, bool in_reasoning, bool parse_tools) {
    memset(s, 0, sizeof *s);
    s->state = in_reasoning ? SP_THINK : SP_START;
    s->parse_tools = parse_tools;
}

void srv_split_free(srv_split *s) {
    srv_buf_free(&s->pend);
    srv_buf_free(&s->tools);
    srv_buf_free(&s->reasoning_all);
    srv_buf_free(&s->content_all);
}

static void consume(srv_buf *b, size_t n) {
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
    b->p[b->len] = 0;
}

static void drop_leading_space(srv_buf *b) {
    size_t n = 0;
    while (n < b->len && srv_is_space(b->p[n])) n++;
    if (n) consume(b, n);
}

static const char *find(const srv_buf *b, const char *tag) {
    return srv_find(b->p, b->len, tag);
}

/* Move pend[0, n) to out, keeping back trailing whitespace when trim_tail is set (a
 * closing tag may follow, and the section is trimmed before it). */
static void emit_upto(srv_buf *pend, size_t n, srv_buf *out, bool trim_tail) {
    if (trim_tail)
        while (n > 0 && srv_is_space(pend->p[n - 1])) n--;
    srv_buf_append(out, pend->p, n);
    consume(pend, n);
}

/* Whether a section (reasoning or content) has started: leading whitespace is dropped. */
static bool section_started(srv_split *s) {
    drop_leading_space(&s->pend);
    return s->pend.len > 0;
}

static void process(srv_split *s) {
    for (;;) {
        srv_buf *pend = &s->pend;
        const char *at;
        switch (s->state) {
        case SP_START:
            if (!section_started(s)) return;
            if (srv_starts_with(pend->p, pend->len, THINK_OPEN)) {
                consume(pend, strlen(THINK_OPEN));
                s->state = SP_THINK;
            } else if (pend->len < strlen(THINK_OPEN) && memcmp(pend->p, THINK_OPEN, pend->len) == 0) {
                return; /* could still become <think> */
            } else {
                s->state = SP_CONTENT;
            }
            break;
        case SP_THINK:
            if (!s->reasoning_all.len && !section_started(s)) return;
            if ((at = find(pend, THINK_CLOSE))) {
                emit_upto(pend, (size_t)(at - pend->p), &s->reasoning_all, true);
                consume(pend, (size_t)(find(pend, THINK_CLOSE) - pend->p) + strlen(THINK_CLOSE));
                s->state = SP_CONTENT;
                break;
            }
            emit_upto(pend, pend->len - srv_partial_suffix(pend->p, pend->len, THINK_CLOSE), &s->reasoning_all, true);
            return;
        case SP_CONTENT:
            if (!s->content_all.len && !section_started(s)) return;
            if (!s->parse_tools) {
                emit_upto(pend, pend->len, &s->content_all, false);
                return;
            }
            if ((at = find(pend, CALL_OPEN))) {
                emit_upto(pend, (size_t)(at - pend->p), &s->content_all, true);
                at = find(pend, CALL_OPEN);
                consume(pend, (size_t)(at - pend->p)); /* the whitespace before the call */
                s->state = SP_TOOLS;
                break;
            }
            emit_upto(pend, pend->len - srv_partial_suffix(pend->p, pend->len, CALL_OPEN), &s->content_all, true);
            return;
        case SP_TOOLS:
            srv_buf_append(&s->tools, pend->p ? pend->p : "", pend->len);
            srv_buf_clear(pend);
            return;
        }
    }
}

void srv_split_push(srv_split *s, const char *text, size_t len) {
    srv_buf_append(&s->pend, text, len);
    process(s);
}

json_t *srv_split_finish(srv_split *s) {
    json_t *calls = NULL;
    switch (s->state) {
    case SP_START:
    case SP_CONTENT: srv_buf_append(&s->content_all, s->pend.p, s->pend.len); break;
    case SP_THINK: emit_upto(&s->pend, s->pend.len, &s->reasoning_all, true); break;
    case SP_TOOLS:
        calls = srv_parse_tool_calls(s->tools.p, s->tools.len);
        if (!calls) srv_buf_append(&s->content_all, s->tools.p, s->tools.len);
        break;
    }
    srv_buf_clear(&s->pend);
    return calls;
}

void srv_split_take(srv_split *s, const char **reasoning, size_t *rlen, const char **content, size_t *clen) {
    *reasoning = s->reasoning_all.p + s->reasoning_sent;
    *rlen = s->reasoning_all.len - s->reasoning_sent;
    *content = s->content_all.p + s->content_sent;
    *clen = s->content_all.len - s->content_sent;
    s->reasoning_sent = s->reasoning_all.len;
    s->content_sent = s->content_all.len;
    if (!*reasoning) *reasoning = "";
    if (!*content) *content = "";
}

/* One call's JSON: {"name": "...", "arguments": {...} or "..."} -> OpenAI form. */
static json_t *one_call(const char *text, size_t len) {
    json_t *obj = json_loadb(text, len, JSON_DECODE_ANY, NULL);
    const char *name = json_string_value(json_object_get(obj, "name"));
    json_t *args = json_object_get(obj, "arguments");
    if (!args) args = json_object_get(obj, "parameters");
    json_t *out = NULL;
    if (json_is_object(obj) && name && *name && (!args || json_is_object(args) || json_is_string(args))) {
        char *arg_text = !args ? lp_xstrdup("{}")
                         : json_is_string(args) ? lp_xstrdup(json_string_value(args))
                                                : json_dumps(args, JSON_PRESERVE_ORDER); /* json.dumps spacing, as vLLM returns */
        char id[40];
        srv_random_id(id, "call_", 24);
        out = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function", "name", name,
                        "arguments", arg_text);
        free(arg_text);
    }
    json_decref(obj);
    return out;
}

json_t *srv_parse_tool_calls(const char *text, size_t len) {
    json_t *calls = json_array();
    const char *p = text, *end = text + len;
    while (p && p < end) {
        const char *open = srv_find(p, (size_t)(end - p), CALL_OPEN);
        if (!open) break;
        const char *body = open + strlen(CALL_OPEN);
        const char *close = srv_find(body, (size_t)(end - body), CALL_CLOSE);
        const char *body_end = close ? close : end; /* an unterminated last call (max_tokens) */
        json_t *call = one_call(body, (size_t)(body_end - body));
        if (!call) {
            json_decref(calls);
            return NULL;
        }
        json_array_append_new(calls, call);
        p = close ? close + strlen(CALL_CLOSE) : end;
    }
    if (json_array_size(calls) == 0) {
        json_decref(calls);
        return NULL;
    }
    return calls;
}
