/* test_server.c — the server's parts below HTTP: the reasoning / content / tool-call
 * splitter (streamed in every chunking equals all at once), the <tool_call> parser, the
 * JSON prefix checker used for response_format, and the continuous-batching scheduler on
 * the tiny fixture model (batched greedy output equals the HF reference, stop strings,
 * logprobs, JSON mode, cancellation, a full queue). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/err.h"
#include "gen/textgen.h"
#include "server/jsongram.h"
#include "server/metrics.h"
#include "server/sched.h"
#include "server/split.h"
#include "server/srvutil.h"

/* ---- splitter ---- */

typedef struct {
    const char *out;        /* what the model generated */
    bool in_reasoning, tools;
    const char *reasoning;  /* expected */
    const char *content;
    int n_calls;
} split_case;

static const split_case split_cases[] = {
    {"<think>\nplan it\n</think>\n\nThe answer.", false, false, "plan it", "The answer.", 0},
    {"  plain text  with  spaces \n", false, false, "", "plain text  with  spaces \n", 0},
    {"step one\nstep two\n</think>\n\nok", true, false, "step one\nstep two", "ok", 0},
    {"<think>\n\n</think>\n\nno thoughts", false, false, "", "no thoughts", 0},
    {"<thinking is not a tag", false, false, "", "<thinking is not a tag", 0},
    {"<think>\nunfinished thought", false, false, "unfinished thought", "", 0},
    {"Let me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>", false, true, "",
     "Let me check.", 1},
    {"<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"g\", \"arguments\": "
     "\"{\\\"x\\\": 2}\"}\n</tool_call>",
     false, true, "", "", 2},
    {"<tool_call>\n{broken\n</tool_call>", false, true, "", "<tool_call>\n{broken\n</tool_call>", 0},
    {"<tool_call>\n{\"name\": \"f\"}\n</tool_call>", false, false, "", "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", 0},
    {"<think>a < b </thi</think>x <tool_c", false, true, "a < b </thi", "x <tool_c", 0},
};

/* Split `out` fed in pieces of `step` bytes (0: all at once); returns the calls. */
static json_t *split_run(const split_case *c, size_t step, srv_buf *reasoning, srv_buf *content) {
    srv_split s;
    srv_split_init(&s, c->in_reasoning, c->tools);
    size_t n = strlen(c->out);
    json_t *calls = NULL;
    for (size_t at = 0; at < n || !calls; ) {
        size_t k = step == 0 || at + step > n ? n - at : step;
        srv_split_push(&s, c->out + at, k);
        at += k;
        if (at >= n) calls = srv_split_finish(&s);
        const char *r, *t;
        size_t rl, tl;
        srv_split_take(&s, &r, &rl, &t, &tl);
        srv_buf_append(reasoning, r, rl);
        srv_buf_append(content, t, tl);
        if (at >= n) break;
    }
    srv_split_free(&s);
    return calls;
}

static void test_split_streamed_equals_whole(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof split_cases / sizeof split_cases[0]; i++) {
        const split_case *c = &split_cases[i];
        for (size_t step = 0; step <= 9; step++) {
            srv_buf r = {0}, t = {0};
            srv_buf_puts(&r, "");
            srv_buf_puts(&t, "");
            json_t *calls = split_run(c, step, &r, &t);
            if (strcmp(r.p, c->reasoning) != 0 || strcmp(t.p, c->content) != 0)
                fail_msg("case %zu step %zu: reasoning [%s] content [%s]", i, step, r.p, t.p);
            assert_int_equal(calls ? (int)json_array_size(calls) : 0, c->n_calls);
            json_decref(calls);
            srv_buf_free(&r);
            srv_buf_free(&t);
        }
    }
}

static void test_tool_call_parser(void **state) {
    (void)state;
    const char *two = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}\n"
                      "</tool_call>\n<tool_call>{\"name\": \"now\", \"arguments\": \"{}\"}</tool_call>";
    json_t *calls = srv_parse_tool_calls(two, strlen(two));
    assert_non_null(calls);
    assert_int_equal(json_array_size(calls), 2);
    const json_t *c0 = json_array_get(calls, 0);
    assert_string_equal(json_string_value(json_object_get(c0, "type")), "function");
    assert_true(strncmp(json_string_value(json_object_get(c0, "id")), "call_", 5) == 0);
    const json_t *fn = json_object_get(c0, "function");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), "get_weather");
    /* arguments as a JSON string with json.dumps spacing */
    assert_string_equal(json_string_value(json_object_get(fn, "arguments")), "{\"city\": \"Paris\", \"days\": [1, 2]}");
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(calls, 1), "function"),
                                                          "arguments")), "{}");
    assert_string_not_equal(json_string_value(json_object_get(c0, "id")),
                            json_string_value(json_object_get(json_array_get(calls, 1), "id")));
    json_decref(calls);

    const char *cut = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}"; /* max_tokens hit before the close */
    calls = srv_parse_tool_calls(cut, strlen(cut));
    assert_non_null(calls);
    json_decref(calls);
    const char *bad[] = {"<tool_call>{\"arguments\": {}}</tool_call>", "<tool_call>{\"name\": 3}</tool_call>",
                         "<tool_call>[1]</tool_call>", "<tool_call>{\"name\": \"f\", \"arguments\": 5}</tool_call>",
                         "no calls here", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_null(srv_parse_tool_calls(bad[i], strlen(bad[i])));
}

/* ---- JSON prefix checker ---- */

static bool jg_accepts(const char *doc, bool object_only, bool *complete) {
    lp_jg g;
    lp_jg_init(&g, object_only);
    bool ok = lp_jg_feed(&g, doc, strlen(doc));
    *complete = ok && lp_jg_complete(&g);
    return ok;
}

static void test_json_checker(void **state) {
    (void)state;
    const char *valid[] = {"{}", " {\"a\": 1}", "{\"a\":[1,-2.5e+3,0,true,false,null,{\"b\":\"\\u00e9\\n\"}]}\n",
                           "{\"k\": \"caf\xc3\xa9 \\\"q\\\" \\\\\"}", "{\"a\":{\"b\":{\"c\":[[],[{}]]}}}",
                           "{\"n\": -0.0E-7}"};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        json_t *j = json_loads(valid[i], 0, NULL); /* the reference parser agrees */
        assert_non_null(j);
        json_decref(j);
        bool complete;
        if (!jg_accepts(valid[i], true, &complete) || !complete) fail_msg("valid: %s", valid[i]);
        /* every proper prefix is accepted and incomplete */
        for (size_t n = 1; n < strlen(valid[i]); n++) {
            char *p = strndup(valid[i], n);
            bool c2;
            if (!jg_accepts(p, true, &c2)) fail_msg("prefix rejected: [%s]", p);
            bool only_ws_left = strspn(valid[i] + n, " \n") == strlen(valid[i] + n);
            if (c2 && !only_ws_left) fail_msg("prefix complete too early: [%s]", p);
            free(p);
        }
    }
    const char *invalid[] = {"[1]",        "\"s\"",     "{a:1}",      "{\"a\" 1}",   "{\"a\":01}",  "{\"a\":1,}",
                             "{\"a\":tru}", "{\"a\":.5}", "{\"a\":1.}x", "{\"a\":\"\n\"}", "{\"a\":\"\\x\"}", "{}}",
                             "{} x",        "{\"a\":[1,]}", "{\"a\":-}", "{\"a\":\"\\u12g4\"}", "{\"a\":1e}"};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        bool complete;
        if (jg_accepts(invalid[i], true, &complete) && complete) fail_msg("invalid accepted: %s", invalid[i]);
        json_t *j = json_loads(invalid[i], JSON_DECODE_ANY, NULL);
        bool ref_ok = j && json_is_object(j);
        json_decref(j);
        assert_false(ref_ok);
    }
    bool complete;
    assert_true(jg_accepts("[1, 2]", false, &complete) && complete); /* any top level when allowed */
    assert_true(jg_accepts("12", false, &complete) && complete);
    /* nesting deeper than the stack is refused, not overflowed */
    char deep[LP_JG_MAX_DEPTH + 8];
    memset(deep, '[', sizeof deep - 1);
    deep[0] = '{';
    deep[sizeof deep - 1] = 0;
    assert_false(jg_accepts("{\"a\":", true, &complete) && complete);
    char *nested = lp_xasprintf("{\"a\":%s", deep + 1);
    assert_false(jg_accepts(nested, true, &complete));
    free(nested);
}

static void test_helpers(void **state) {
    (void)state;
    assert_int_equal(srv_partial_suffix("abc</thi", 8, "</think>"), 5);
    assert_int_equal(srv_partial_suffix("abc", 3, "</think>"), 0);
    assert_int_equal(srv_partial_suffix("<", 1, "<tool_call>"), 1);
    const char *hay = "a<b<tool_call>";
    assert_ptr_equal(srv_find(hay, strlen(hay), "<tool_call>"), hay + 3);
    assert_null(srv_find(hay, 3, "<b<t"));
    json_t *s = srv_json_bytes("ok\xe4\xb8", 4); /* a token ending mid-character */
    assert_string_equal(json_string_value(s), "ok\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(s);
    srv_metrics *m = srv_metrics_create();
    srv_metrics_request(m, "/v1/chat/completions", 200);
    srv_metrics_request(m, "/v1/chat/completions", 200);
    srv_metrics_request(m, "/v1/models", 401);
    srv_metrics_tokens(m, 10, 5);
    srv_buf out = {0};
    srv_metrics_render(m, &out, 2, 1, 4);
    assert_non_null(strstr(out.p, "lp_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 2\n"));
    assert_non_null(strstr(out.p, "lp_requests_total{endpoint=\"/v1/models\",status=\"401\"} 1\n"));
    assert_non_null(strstr(out.p, "lp_prompt_tokens_total 10\n"));
    assert_non_null(strstr(out.p, "lp_generated_tokens_total 5\n"));
    assert_non_null(strstr(out.p, "lp_queue_depth 2\n"));
    assert_non_null(strstr(out.p, "lp_slots_busy 1\n"));
    srv_buf_free(&out);
    srv_metrics_free(m);
}

/* ---- scheduler on the tiny model ---- */

typedef struct {
    lp_textgen *tg;
    srv_metrics *metrics;
    lp_sched *sched;
    json_t *refs;
} sched_fixture;

static int sched_setup(void **state) {
    sched_fixture *f = lp_xcalloc(1, sizeof *f);
    lp_textgen_opts o = {.model_path = LP_FIXTURES_DIR "/models/tiny-qwen3", .backend = "cpu", .n_threads = 2,
                         .n_ctx = 256, .n_slots = 3};
    f->tg = lp_textgen_open(&o);
    if (!f->tg) {
        fprintf(stderr, "%s\n", lp_errmsg());
        return -1;
    }
    f->refs = json_load_file(LP_FIXTURES_DIR "/refs/tiny-qwen3.json", 0, NULL);
    f->metrics = srv_metrics_create();
    f->sched = lp_sched_create(f->tg, 0, f->metrics);
    *state = f;
    return f->refs && f->sched ? 0 : -1;
}

static int sched_teardown(void **state) {
    sched_fixture *f = *state;
    lp_sched_free(f->sched);
    srv_metrics_free(f->metrics);
    lp_textgen_free(f->tg);
    json_decref(f->refs);
    free(f);
    return 0;
}

static srv_job *greedy_job(const json_t *ids, int max_tokens) {
    srv_job *j = srv_job_new();
    j->n_prompt = (int)json_array_size(ids);
    j->prompt = lp_xmalloc(sizeof(int32_t) * (size_t)j->n_prompt);
    for (int i = 0; i < j->n_prompt; i++) j->prompt[i] = (int32_t)json_integer_value(json_array_get(ids, (size_t)i));
    j->sampling = lp_sampler_default_params();
    j->sampling.temperature = 0;
    j->max_tokens = max_tokens;
    return j;
}

static void wait_done(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    while (!j->done) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

/* Three references decoded together (one batched step per token) match HF exactly; a
 * fourth request finds every slot and the (empty) queue taken. */
static void test_sched_batched_greedy(void **state) {
    sched_fixture *f = *state;
    const json_t *cases = json_object_get(f->refs, "greedy");
    size_t n = json_array_size(cases);
    assert_int_equal(n, 3);
    srv_job *jobs[3];
    for (size_t i = 0; i < n; i++) {
        const json_t *c = json_array_get(cases, i);
        jobs[i] = greedy_job(json_object_get(c, "prompt_ids"), (int)json_array_size(json_object_get(c, "greedy_ids")));
        jobs[i]->logprobs = true;
        jobs[i]->top_logprobs = 3;
        assert_int_equal(lp_sched_submit(f->sched, jobs[i]), 0);
    }
    srv_job *extra = greedy_job(json_object_get(json_array_get(cases, 0), "prompt_ids"), 4);
    assert_int_equal(lp_sched_submit(f->sched, extra), -1);
    srv_job_unref(extra);
    for (size_t i = 0; i < n; i++) {
        const json_t *c = json_array_get(cases, i);
        wait_done(jobs[i]);
        assert_int_equal(jobs[i]->finish, SRV_FIN_LENGTH);
        assert_string_equal(jobs[i]->text.p, json_string_value(json_object_get(c, "text")));
        assert_int_equal(jobs[i]->n_lps, jobs[i]->n_generated);
        for (int k = 0; k < jobs[i]->n_lps; k++) { /* greedy: the chosen token is the most likely one */
            const srv_toklp *lp = &jobs[i]->lps[k];
            assert_int_equal(lp->n_top, 3);
            assert_int_equal(lp->token, lp->top[0].id);
            assert_true(lp->top[0].logprob >= lp->top[1].logprob && lp->top[1].logprob >= lp->top[2].logprob);
            assert_true(lp->logprob <= 0);
            assert_int_equal(lp->token, (int)json_integer_value(json_array_get(json_object_get(c, "greedy_ids"), (size_t)k)));
        }
        srv_job_unref(jobs[i]);
    }
}

static void test_sched_stop_cancel_json(void **state) {
    sched_fixture *f = *state;
    const json_t *c = json_array_get(json_object_get(f->refs, "greedy"), 0);
    const char *ref = json_string_value(json_object_get(c, "text"));
    /* stop string: the text before its first occurrence, nothing after */
    srv_job *j = greedy_job(json_object_get(c, "prompt_ids"), 48);
    assert_non_null(strchr(ref, 'n'));
    j->stops = lp_xcalloc(1, sizeof(char *));
    j->stops[j->n_stops++] = lp_xstrdup("n");
    assert_int_equal(lp_sched_submit(f->sched, j), 0);
    wait_done(j);
    assert_int_equal(j->finish, SRV_FIN_STOP);
    assert_int_equal(j->text.len, (size_t)(strchr(ref, 'n') - ref));
    assert_memory_equal(j->text.p, ref, j->text.len);
    srv_job_unref(j);

    /* cancellation frees the slot */
    j = greedy_job(json_object_get(c, "prompt_ids"), 0);
    assert_int_equal(lp_sched_submit(f->sched, j), 0);
    lp_sched_cancel(f->sched, j);
    wait_done(j);
    assert_int_equal(j->finish, SRV_FIN_CANCELLED);
    srv_job_unref(j);

    /* JSON mode: sampled output is always a JSON prefix, and a finished one parses */
    int finished = 0;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        j = greedy_job(json_object_get(c, "prompt_ids"), 64);
        j->sampling.temperature = 0.9f;
        j->sampling.seed = seed;
        j->json_object = true;
        assert_int_equal(lp_sched_submit(f->sched, j), 0);
        wait_done(j);
        assert_true(j->n_cached > 0); /* the same prompt as before: its prefix came from a slot's cache */
        lp_jg g;
        lp_jg_init(&g, true);
        assert_true(lp_jg_feed(&g, j->text.p, j->text.len));
        if (j->finish == SRV_FIN_STOP) {
            json_t *doc = json_loadb(j->text.p, j->text.len, 0, NULL);
            assert_true(json_is_object(doc));
            json_decref(doc);
            finished++;
        }
        srv_job_unref(j);
    }
    assert_true(finished >= 1);
    int queued, busy, slots;
    lp_sched_load(f->sched, &queued, &busy, &slots);
    assert_int_equal(busy, 0);
    assert_int_equal(slots, 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_streamed_equals_whole),
        cmocka_unit_test(test_tool_call_parser),
        cmocka_unit_test(test_json_checker),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test_setup_teardown(test_sched_batched_greedy, sched_setup, sched_teardown),
        cmocka_unit_test_setup_teardown(test_sched_stop_cancel_json, sched_setup, sched_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
