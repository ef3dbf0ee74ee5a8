/* test_template.c — tests of src/template, the Jinja chat-template engine.
 *
 * 1. Every reference render in fixtures/refs/chat-qwen3.json and chat-templates.json (real
 *    templates rendered by Hugging Face transformers, strftime_now fixed to 2026-01-15) must be
 *    reproduced byte for byte, and the templates' raise_exception messages verbatim.
 * 2. An engine table: small templates with the output jinja2 3.1.6 produces in transformers'
 *    environment (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, transformers'
 *    tojson). Generated once with Python; covers whitespace control, loops, namespace, macros,
 *    filters, tests, methods, slicing, Python str()/repr() of values.
 * 3. Errors name the template line; malformed and truncated templates fail cleanly (run this
 *    under ASan); limits stop runaway templates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/err.h"
#include "core/fileio.h"
#include "template/template.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXED_NOW ((time_t)1768478400) /* 2026-01-15 12:00 UTC: the 15th in every zone within +-11h */

static const char *const template_names[] = {
    "HuggingFaceTB-SmolLM3-3B",       "Qwen-QwQ-32B",
    "Qwen-Qwen2.5-7B-Instruct",       "Qwen-Qwen3-0.6B",
    "Qwen3-Coder",                    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
    "google-gemma-2-2b-it",           "meta-llama-Llama-3.1-8B-Instruct",
    "meta-llama-Llama-3.2-3B-Instruct", "microsoft-Phi-3.5-mini-instruct",
    "mistralai-Mistral-Nemo-Instruct-2407", "openai-gpt-oss-120b",
};
#define N_TEMPLATES (sizeof template_names / sizeof *template_names)

static char *read_text(const char *rel) {
    char *path = lp_xasprintf("%s/%s", LP_FIXTURES_DIR, rel);
    char *s = lp_read_file(path, NULL);
    if (!s) fail_msg("cannot read %s: %s", path, lp_errmsg());
    free(path);
    return s;
}

static json_t *read_json(const char *rel) {
    char *path = lp_xasprintf("%s/%s", LP_FIXTURES_DIR, rel);
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j) fail_msg("cannot parse %s: %s", path, e.text);
    free(path);
    return j;
}

static lp_template *compile_file(const char *rel) {
    char *src = read_text(rel);
    lp_template *t = lp_template_compile_named(src, rel);
    if (!t) fail_msg("%s does not compile: %s", rel, lp_errmsg());
    free(src);
    return t;
}

/* Compare a render (NULL = failed) with the expected text or raise_exception message. */
static bool matches(const char *got, const char *want_text, const char *want_error, const char *label) {
    if (want_error) {
        if (got || !lp_template_raised() || strcmp(lp_errmsg(), want_error)) {
            fprintf(stderr, "%s: expected raise_exception(\"%s\"), got %s%s\n", label, want_error,
                    got ? "output" : "error ", got ? "" : lp_errmsg());
            return false;
        }
        return true;
    }
    if (!got) {
        fprintf(stderr, "%s: render failed: %s\n", label, lp_errmsg());
        return false;
    }
    if (strcmp(got, want_text)) {
        size_t i = 0;
        while (got[i] && got[i] == want_text[i]) i++;
        fprintf(stderr, "%s: differs at byte %zu\n  got:  %.80s\n  want: %.80s\n", label, i, got + i, want_text + i);
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- 1. reference renders */
static void test_chat_qwen3_refs(void **state) {
    (void)state;
    lp_template_set_clock(FIXED_NOW);
    json_t *refs = read_json("refs/chat-qwen3.json");
    lp_template *t = compile_file("models/tiny-qwen3/chat_template.jinja");
    json_t *cases = json_object_get(refs, "cases"), *c;
    size_t i, pass = 0;
    json_array_foreach(cases, i, c) {
        json_t *kwargs = json_deep_copy(json_object_get(c, "kwargs"));
        json_t *tools = json_incref(json_object_get(kwargs, "tools"));
        json_object_del(kwargs, "tools");
        char *got = lp_chat_render(t, json_object_get(c, "messages"), tools,
                                   json_is_true(json_object_get(c, "add_generation_prompt")), kwargs, NULL, NULL);
        char label[128];
        snprintf(label, sizeof label, "qwen3 %s agp=%d", json_string_value(json_object_get(c, "case")),
                 json_is_true(json_object_get(c, "add_generation_prompt")));
        pass += matches(got, json_string_value(json_object_get(c, "rendered")), NULL, label);
        free(got);
        json_decref(tools);
        json_decref(kwargs);
    }
    printf("chat-qwen3.json: %zu/%zu cases passed\n", pass, json_array_size(cases));
    assert_int_equal(json_array_size(cases), 12);
    assert_int_equal(pass, json_array_size(cases));
    lp_template_free(t);
    json_decref(refs);
}

static void test_chat_templates_refs(void **state) {
    (void)state;
    lp_template_set_clock(FIXED_NOW);
    json_t *refs = read_json("refs/chat-templates.json");
    json_t *cases = json_object_get(refs, "cases");
    size_t total_pass = 0, total = 0;
    for (size_t k = 0; k < N_TEMPLATES; k++) {
        char *rel = lp_xasprintf("templates/%s.jinja", template_names[k]);
        lp_template *t = compile_file(rel);
        /* error cases carry no kwargs: they use the template's usual special tokens */
        json_t *kwargs_seen = NULL, *c;
        size_t i, pass = 0, n = 0;
        json_array_foreach(cases, i, c)
            if (!strcmp(json_string_value(json_object_get(c, "template")), template_names[k]) && json_object_get(c, "kwargs"))
                kwargs_seen = json_object_get(c, "kwargs");
        json_array_foreach(cases, i, c) {
            if (strcmp(json_string_value(json_object_get(c, "template")), template_names[k])) continue;
            json_t *kwargs = json_deep_copy(json_object_get(c, "kwargs") ? json_object_get(c, "kwargs") : kwargs_seen);
            json_object_del(kwargs, "strftime_now"); /* documents the fixed clock; set above */
            json_t *tools = json_object_get(c, "tools");
            bool agp = json_is_true(json_object_get(c, "add_generation_prompt"));
            char *got = lp_chat_render(t, json_object_get(c, "messages"), json_is_null(tools) ? NULL : tools, agp,
                                       kwargs, NULL, NULL);
            char label[200];
            snprintf(label, sizeof label, "%s %s agp=%d", template_names[k], json_string_value(json_object_get(c, "case")), agp);
            json_t *err = json_object_get(c, "error");
            pass += matches(got, json_string_value(json_object_get(c, "rendered")), err ? json_string_value(err) : NULL, label);
            n++;
            free(got);
            json_decref(kwargs);
        }
        printf("  %-40s %zu/%zu passed\n", template_names[k], pass, n);
        total_pass += pass;
        total += n;
        lp_template_free(t);
        free(rel);
    }
    printf("chat-templates.json: %zu/%zu cases passed\n", total_pass, total);
    assert_int_equal(total, json_array_size(cases));
    assert_int_equal(total, 120);
    assert_int_equal(total_pass, total);
    json_decref(refs);
}

/* The model directories ship their own copies; they must compile and render too. */
static void test_model_templates(void **state) {
    (void)state;
    lp_template_set_clock(FIXED_NOW);
    static const char *const models[] = {"tiny-qwen3", "tiny-qwen3-moe", "small-qwen3", "tiny-gptoss"};
    json_t *msgs = json_loads("[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi\"}]", 0, NULL);
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        char *rel = lp_xasprintf("models/%s/chat_template.jinja", models[i]);
        lp_template *t = compile_file(rel);
        char *out = lp_chat_render(t, msgs, NULL, true, NULL, NULL, NULL);
        assert_non_null(out);
        if (strstr(models[i], "gptoss")) {
            assert_non_null(strstr(out, "Current date: 2026-01-15\n"));
            assert_non_null(strstr(out, "<|start|>developer<|message|># Instructions\n\nBe brief.\n\n<|end|>"));
            const char *tail = "<|start|>assistant";
            assert_true(strlen(out) > strlen(tail) && !strcmp(out + strlen(out) - strlen(tail), tail));
        } else {
            assert_string_equal(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        }
        free(out);
        lp_template_free(t);
        free(rel);
    }
    json_decref(msgs);
}

/* ---------------------------------------------------------------- 2. engine table */
typedef struct {
    const char *src, *ctx, *want;
} render_case;

/* Expected outputs: jinja2 3.1.6, transformers' environment. */
static const render_case engine_cases[] = {
    {"{{ x is sequence }}{{ x is iterable }}{{ x|length }}{{ x|trim }}|{{ x|list }}",
     "{}",
     "TrueTrue0|[]"},
    {"{{ none.y }}|{{ 3.y }}|{{ \"ab\".y }}",
     "{}",
     "||"},
    {"{{ d[\"items\"] }}",
     "{\"d\": {\"items\": 1}}",
     "1"},
    {"{{ \"a\" in x }}",
     "{}",
     "False"},
    {"{{ x == x }}{{ x == none }}",
     "{}",
     "TrueFalse"},
    {"{{ \"a\" ~ x ~ none ~ 1.5 ~ true }}",
     "{}",
     "aNone1.5True"},
    {"{{ [1,\"a\",{\"b\":none}] | tojson }}|{{ {\"a\":[1,{\"b\":2}], \"c\": [], \"d\": {}} | tojson(indent=2) }}|{{ \"\303\251\342\200\250\177\001\t\" | tojson }}",
     "{}",
     "[1, \"a\", {\"b\": null}]|{\n  \"a\": [\n    1,\n    {\n      \"b\": 2\n    }\n  ],\n  \"c\": [],\n  \"d\": {}\n}|\"\303\251\342\200\250\177\\u0001\\t\""},
    {"{{ \"x\" is number }}{{ true is number }}{{ true is integer }}{{ 1 is integer }}{{ 1.0 is float }}{{ d is sequence }}{{ d is iterable }}{{ \"s\" is sequence }}{{ none is iterable }}",
     "{\"d\": {}}",
     "FalseTrueFalseTrueTrueTrueTrueTrueFalse"},
    {"{{ 'ab\\'c' }}|{{ 'a\\qb' }}|{{ \"\\x41\\u00e9\\101\" }}|{{ 'a\\\\b' }}|{{ 'tab\\there' }}",
     "{}",
     "ab'c|a\\qb|A\303\251A|a\\b|tab\there"},
    {"{{ [1,2,3][::-1] }}{{ \"h\303\251llo\"[1:3] }}{{ \"h\303\251llo\"[::-1] }}{{ \"h\303\251llo\"|length }}{{ [1,2,3][5] }}|{{ [1,2,3][-1] }}|{{ [1,2,3,4,5][1:4:2] }}|{{ [1,2,3,4,5][-2:] }}|{{ [1,2,3,4,5][:-2] }}|{{ [1,2,3,4,5][10:] }}|{{ \"abcdef\"[::-2] }}|{{ [1,2,3][5:0:-1] }}",
     "{}",
     "[3, 2, 1]\303\251loll\303\251h5|3|[2, 4]|[4, 5]|[1, 2, 3]|[]|fdb|[3, 2]"},
    {"{{ \"a b  c\".split() }}{{ \"a,b,,c\".split(\",\") }}{{ \"  x \".strip() }}|{{ \"xxhixx\".strip(\"x\") }}|{{ \"Hello World\".title() }}{{ \"hELLO wORLD\"|capitalize }}{{ \"hello-world foo\"|title }}",
     "{}",
     "['a', 'b', 'c']['a', 'b', '', 'c']x|hi|Hello WorldHello worldHello-World Foo"},
    {"{{ \" a b c \".split(None, 1) }}{{ \" a b c \".rsplit(None, 1) }}{{ \"a,b,c\".rsplit(\",\", 1) }}{{ \"a,b,c\".split(\",\", 1) }}{{ \"\".split() }}{{ \"\".split(\",\") }}",
     "{}",
     "['a', 'b c '][' a b', 'c']['a,b', 'c']['a', 'b,c'][]['']"},
    {"{{ {\"a\":1} == {\"a\":1.0} }}{{ 1 == true }}{{ [1,2] == [1,2] }}{{ \"1\" == 1 }}",
     "{}",
     "TrueTrueTrueFalse"},
    {"{% for x in [] %}a{% else %}empty{% endfor %}{% for k, v in {\"a\":1,\"b\":2}.items() %}{{k}}={{v}}{{ loop.index }}/{{ loop.length }}{% endfor %}",
     "{}",
     "emptya=11/2b=22/2"},
    {"{% for x in [1,2,3,4] if x is even %}{{ x }}{{ loop.index }}{{ loop.last }}{% endfor %}",
     "{}",
     "21False42True"},
    {"{% for x in \"abc\" %}{{ loop.previtem }}-{{ loop.nextitem }};{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{% endfor %}",
     "{}",
     "-b;32Truea-c;21Falseb-;10False"},
    {"{% set ns = namespace(a=1) %}{% for i in range(3) %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}|{{ ns }}",
     "{}",
     "4|<Namespace {'a': 4}>"},
    {"{% macro f(a, b=2, c=\"x\") %}[{{a}}{{b}}{{c}}]{% endmacro %}{{ f(1) }}{{ f(1, c=3) }}{{ f() }}{{ f }}",
     "{}",
     "[12x][123][2x]<Macro 'f'>"},
    {"{{ x|default(\"d\") }}{{ none|default(\"d\") }}{{ \"\"|default(\"d\", true) }}{{ \"\"|d(\"e\", boolean=true) }}",
     "{}",
     "dNonede"},
    {"{{ [1,2,3]|join(\",\") }}{{ [1,2,3]|first }}{{ [1,2,3]|last }}{{ \"abc\"|last }}{{ [3,1,2]|sort }}{{ [1,2,1]|unique|list }}",
     "{}",
     "1,2,313c[1, 2, 3][1, 2]"},
    {"{{ msgs|selectattr(\"role\",\"equalto\",\"user\")|list }}{{ msgs|map(attribute=\"role\")|join(\",\") }}{{ msgs|rejectattr(\"role\",\"equalto\",\"user\")|list|length }}",
     "{\"msgs\": [{\"role\": \"user\"}, {\"role\": \"bot\"}]}",
     "[{'role': 'user'}]user,bot1"},
    {"{{ 7/2 }}{{ 7//2 }}{{ 7%3 }}{{ 2**3 }}{{ -7/2 }}{{ 7.0//2 }}{{ 7 % 2.5 }}{{ -2**2 }}{{ -7//2 }}{{ -7%3 }}{{ 7%-3 }}{{ -7.5//2 }}{{ -7.5%2 }}{{ 2**-1 }}",
     "{}",
     "3.5318-3.53.02.04-42-2-4.00.50.5"},
    {"{{ \"abc\" * 2 }}{{ [1]*3 }}{{ [1]+[2] }}{{ 3*\"ab\" }}",
     "{}",
     "abcabc[1, 1, 1][1, 2]ababab"},
    {"{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ \"a\" < \"b\" }}{{ [1,2] < [1,3] }}{{ 1 < 1.5 }}",
     "{}",
     "TrueFalseTrueTrueTrue"},
    {"{{ 1 if false }}|{{ (1 if false) is defined }}",
     "{}",
     "|False"},
    {"{{ \"a\nb\"|indent(2) }}|{{ \"a\n\nb\"|indent(2, true) }}|{{ \"a\n\nb\n\"|indent(2, blank=true) }}|{{ \"x\"|indent(\"--\", first=true) }}|{{ 3.7|int }}{{ \"42\"|int }}{{ \"x\"|int }}{{ \"3.5\"|float }}{{ 2.567|round(1) }}{{ 2.5|round }}{{ -3|abs }}{{ \" 0x1A \"|int(base=16) }}{{ \"1_000\"|int }}{{ \"4.9\"|int }}",
     "{}",
     "a\n  b|  a\n\n  b|a\n  \n  b\n  |--x|34203.52.62.032610004"},
    {"{{ x is defined and x.y }}{{ none is none }}{{ 1 is odd }}{{ 4 is divisibleby 2 }}{{ true is true }}{{ 1 is true }}",
     "{}",
     "FalseTrueTrueTrueTrueFalse"},
    {"{{ \"%s-%d\"|format(\"a\", 3) }}|{{ \"%s\" % \"x\" }}|{{ \"%5.2f|%-4s|%03d|%x|%r\" % (3.14159, \"ab\", 7, 255, \"q\") }}|{{ \"%(a)s\" % {\"a\": 1} }}",
     "{}",
     "a-3|x| 3.14|ab  |007|ff|'q'|1"},
    {"{{ d|items|list }}{{ d.keys()|list }}{{ d.values()|list }}{{ d.get(\"a\") }}{{ d.get(\"z\") }}{{ d.get(\"z\", 5) }}",
     "{\"d\": {\"a\": 1, \"b\": 2}}",
     "[('a', 1), ('b', 2)]['a', 'b'][1, 2]1None5"},
    {"{{ (1, 2) }}{{ (\"a\",) }}{{ 1, 2 }}{{ () }}",
     "{}",
     "(1, 2)('a',)(1, 2)()"},
    {"{{ [1,[2,\"x\"],{\"k\":\"v'\"}] }}{{ \"it's\" }}{{ [\"it's\", \"a\\\"b\", \"\\n\", \"x'y\\\"z\"] }}",
     "{}",
     "[1, [2, 'x'], {'k': \"v'\"}]it's[\"it's\", 'a\"b', '\\n', 'x\\'y\"z']"},
    {"{{ d|string }}{{ 1.0|string }}{{ true|string }}{{ none|string }}{{ d|tojson }}{{ d|tojson(sort_keys=true) }}{{ d|tojson(separators=(\",\",\":\")) }}",
     "{\"d\": {\"z\": 1, \"a\": [true, null, 1.5]}}",
     "{'z': 1, 'a': [True, None, 1.5]}1.0TrueNone{\"z\": 1, \"a\": [true, null, 1.5]}{\"a\": [true, null, 1.5], \"z\": 1}{\"z\":1,\"a\":[true,null,1.5]}"},
    {"{{ range(5)|list }}{{ range(1,10,3)|list }}{{ range(5,0,-2)|list }}{{ dict(a=1, b=\"x\") }}",
     "{}",
     "[0, 1, 2, 3, 4][1, 4, 7][5, 3, 1]{'a': 1, 'b': 'x'}"},
    {"{{ \"abc\".upper() }}{{ \"aBc\".lower() }}{{ \"abc\".startswith((\"x\",\"a\")) }}{{ \"abc\".endswith(\"bc\") }}{{ \"a-b-c\".replace(\"-\", \"+\", 1) }}{{ \"abc\".find(\"c\") }}{{ \"h\303\251llo\".find(\"l\") }}{{ \"abcabc\".count(\"b\") }}{{ \"abcabc\".rfind(\"b\") }}",
     "{}",
     "ABCabcTrueTruea+b-c2224"},
    {"{{ \"ab\".replace(\"\", \"-\") }}{{ \"ab\".replace(\"\", \"-\", 2) }}{{ \"aaa\".replace(\"a\", \"bb\") }}",
     "{}",
     "-a-b--a-bbbbbbb"},
    {"  {% if true %}\n  x\n  {% endif %}\n  y  \n{%- if true -%}  z  {%- endif -%}\n\nw",
     "{}",
     "  x\n  yzw"},
    {"a\n{# c #}\nb\n  {#- c2 -#}  \nc {#+ x +#}\nd",
     "{}",
     "a\nbc \nd"},
    {"{% raw %}{{ x }}{% endraw %}|{%- raw -%}  {% a %}  {%- endraw -%}  |",
     "{}",
     "{{ x }}|{% a %}|"},
    {"x {{- \" y \" -}} z\n{{ \"q\" }}\n{%+ if true %}\n  a\n{% endif +%}\nb",
     "{}",
     "x y z\nq\n  a\n\nb"},
    {"line1\r\nline2\r{% if 1 %}\r\nin\r\n{% endif %}\r\nend\n",
     "{}",
     "line1\nline2\nin\nend"},
    {"  {% for i in [1,2] %}\n    {{ i }}\n  {% endfor %}\n",
     "{}",
     "    1\n    2\n"},
    {"{% set x %}a{{ 1 }}b{% endset %}[{{ x }}]{% set y | upper %}lo{% endset %}{{ y }}",
     "{}",
     "[a1b]LO"},
    {"{% filter upper %}abc{{ \"d\" }}{% endfilter %}",
     "{}",
     "ABCD"},
    {"{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
     "{}",
     "02"},
    {"{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a }}",
     "{}",
     "3"},
    {"{% macro m() %}{{ caller() }}!{% endmacro %}{% call m() %}inside{% endcall %}",
     "{}",
     "inside!"},
    {"{% macro m(x) %}{{ caller(x*2) }}{% endmacro %}{% call(v) m(3) %}[{{ v }}]{% endcall %}",
     "{}",
     "[6]"},
    {"{% macro m(a) %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k=4) }}",
     "{}",
     "(2, 3){'k': 4}"},
    {"{% set a, b = 1, 2 %}{{ a }}{{ b }}{% for a, b in [[1,2],[3,4]] %}{{ a*b }}{% endfor %}",
     "{}",
     "12212"},
    {"{{ [3,1,2]|sort(reverse=true) }}{{ [\"b\",\"A\",\"c\"]|sort }}{{ [\"b\",\"A\",\"c\"]|sort(case_sensitive=true) }}{{ [{\"n\":2},{\"n\":1}]|sort(attribute=\"n\") }}",
     "{}",
     "[3, 2, 1]['A', 'b', 'c']['A', 'b', 'c'][{'n': 1}, {'n': 2}]"},
    {"{{ [1,2,3]|max }}{{ [1,2,3]|min }}{{ [1,2,3]|sum }}{{ [{\"a\":1},{\"a\":2}]|sum(attribute=\"a\") }}{{ [1,2,3]|reverse|list }}{{ \"abc\"|reverse }}",
     "{}",
     "3163[3, 2, 1]cba"},
    {"{{ [1,2,3,4]|select(\"odd\")|list }}{{ [1,2,3,4]|reject(\"odd\")|list }}{{ [0,1,\"\",none,\"a\"]|select|list }}{{ [\"a\",\"b\"]|map(\"upper\")|list }}{{ [1,2]|map(\"string\")|join }}",
     "{}",
     "[1, 3][2, 4][1, 'a']['A', 'B']12"},
    {"{{ {\"b\":2,\"a\":1}|dictsort }}{{ \"<a href='x'>&</a>\"|e }}{{ \"hello world foo\"|wordcount }}{{ \"ab\"|center(6) }}|",
     "{}",
     "[('a', 1), ('b', 2)]&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;3  ab  |"},
    {"{{ x is string }}{{ x is mapping }}{{ x is none }}{{ x is number }}",
     "{\"x\": null}",
     "FalseFalseTrueFalse"},
    {"{% for m in msgs %}{{ m.role }}{% if not loop.last %},{% endif %}{% endfor %}",
     "{\"msgs\": [{\"role\": \"a\"}, {\"role\": \"b\"}, {\"role\": \"c\"}]}",
     "a,b,c"},
    {"{% for m in msgs %}{{ loop.cycle(\"x\",\"y\") }}{{ loop.changed(m.g) }}{% endfor %}",
     "{\"msgs\": [{\"g\": 1}, {\"g\": 1}, {\"g\": 2}]}",
     "xTrueyFalsexTrue"},
    {"{{ \"a\" \"b\" 'c' }}{{ 1_000 }}{{ 0x1f }}{{ 0o17 }}{{ 0b101 }}{{ 1e3 }}{{ 1.5e-3 }}{{ 12.5 }}",
     "{}",
     "abc1000311551000.00.001512.5"},
    {"{{ not 1 == 2 }}{{ not (1 == 2) }}{{ 1 in [1,2] and 3 not in [1,2] }}{{ \"b\" in {\"b\":1} }}{{ -x|abs if x else 0 }}",
     "{\"x\": -3}",
     "TrueTrueTrueTrue3"},
    {"{{ foo.bar is defined }}",
     "{\"foo\": {}}",
     "False"},
    {"{{ [1,2,3]|length > 2 }}{{ \"abc\"|upper + \"d\" }}{{ 1 + 2 * 3 - 4 / 2 }}{{ (1 + 2) * 3 }}{{ 2 ** 3 ** 2 }}",
     "{}",
     "TrueABCd5.0964"},
    {"{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}{% for i in [1] %}{% set x = 3 %}{{ x }}{% endfor %}{{ x }}",
     "{}",
     "232"},
    {"{% macro outer() %}{% set v = \"in\" %}{{ inner() }}{% endmacro %}{% macro inner() %}{{ v }}{% endmacro %}{% set v = \"top\" %}{{ outer() }}",
     "{}",
     "top"},
    {"{{ messages[0][\"content\"]|trim }}|{{ messages[-1].content }}",
     "{\"messages\": [{\"content\": \"  hi  \"}, {\"content\": \"bye\"}]}",
     "hi|bye"},
    {"{{ \"\303\237\".upper() }}{{ \"\307\205\"|lower }}{{ \"stra\303\237e\"|title }}{{ \"\303\251\"|capitalize }}",
     "{}",
     "SS\307\206Stra\303\237e\303\211"},
    {"{{ \"line1\nline2\r\nline3\".splitlines() }}{{ \"abc\".isalpha() }}{{ \"12\".isdigit() }}{{ \"  \".isspace() }}{{ \"Ab\".islower() }}",
     "{}",
     "['line1', 'line2', 'line3']TrueTrueTrueFalse"},
    {"{{ \"x\".removeprefix(\"x\") }}{{ \"xyz\".removesuffix(\"z\") }}{{ \"-\".join([\"a\",\"b\"]) }}",
     "{}",
     "xya-b"},
    {"{{ d.pop }}|{{ l.append }}",
     "{\"d\": {}, \"l\": []}",
     "|"},
    {"{{ \"a\" is in \"abc\" }}{{ 2 is in [1,2] }}{{ 1 is sameas true }}{{ true is sameas true }}{{ none is sameas none }}",
     "{}",
     "TrueTrueFalseTrueTrue"},
    {"{{ 3 is gt 2 }}{{ 3 is lessthan 2 }}{{ 3 is ne 2 }}{{ \"ab\" is lower }}{{ \"AB\" is upper }}{{ \"upper\" is filter }}{{ \"odd\" is test }}",
     "{}",
     "TrueFalseTrueTrueTrueTrueTrue"},
    {"{{ x|list }}{{ x|items|list }}{{ x|first }}{{ x|join }}",
     "{}",
     "[][]"},
    {"{{ tools|tojson(indent=4) }}",
     "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\", \"properties\": {}, \"required\": []}}}]}",
     "[\n    {\n        \"type\": \"function\",\n        \"function\": {\n            \"name\": \"f\",\n            \"parameters\": {\n                \"type\": \"object\",\n                \"properties\": {},\n                \"required\": []\n            }\n        }\n    }\n]"},
    {"{{ x|tojson(indent=\"\t\") }}{{ x|tojson(indent=0) }}{{ x|tojson(ensure_ascii=true) }}",
     "{\"x\": {\"k\": [\"\\u00e9\", \"\\ud83d\\ude00\", 1.0, 2]}}",
     "{\n\t\"k\": [\n\t\t\"\303\251\",\n\t\t\"\360\237\230\200\",\n\t\t1.0,\n\t\t2\n\t]\n}{\n\"k\": [\n\"\303\251\",\n\"\360\237\230\200\",\n1.0,\n2\n]\n}{\"k\": [\"\\u00e9\", \"\\ud83d\\ude00\", 1.0, 2]}"},
    {"{{ 0.1|tojson }}{{ 100000000000000000000.0|tojson }}{{ 1e-7|tojson }}",
     "{}",
     "0.11e+201e-07"},
    {"{{ [1,2,3][0.5] }}|{{ {\"a\":1}[0] }}|{{ \"abc\"[1] }}|{{ \"abc\"[-1] }}|{{ \"abc\"[10] }}",
     "{}",
     "||b|c|"},
    {"{{ x.0 }}{{ x.1.0 }}",
     "{\"x\": [5, [6]]}",
     "56"},
    {"{% set ns = namespace(d={\"a\":1}) %}{{ ns.d.a }}{% set ns2 = namespace({\"q\": 2}, r=3) %}{{ ns2.q }}{{ ns2.r }}",
     "{}",
     "123"},
    {"{% if a %}A{% elif b %}B{% elif c %}C{% else %}D{% endif %}",
     "{\"c\": 1}",
     "C"},
    {"{{ a or b }}{{ a and b }}{{ c or b }}{{ (c and \"yes\") or \"no\" }}",
     "{\"a\": 0, \"b\": \"B\", \"c\": [1]}",
     "B0[1]yes"},
    {"{{ messages | selectattr(\"role\", \"equalto\", \"user\") | list | length }}{{ messages|map(attribute=\"x\", default=\"dflt\")|list }}",
     "{\"messages\": [{\"role\": \"user\"}, {\"role\": \"bot\", \"x\": 1}]}",
     "1['dflt', 1]"},
    {"{{ \"%s\" | format(none) }}{{ \"{}\" }}{{ \"%%\" % () }}",
     "{}",
     "None{}%"},
    {"{{ x | string | length }}{{ 12345|string|length }}{{ [1,2]|string }}",
     "{\"x\": \"h\\u00e9\\u00e9\"}",
     "35[1, 2]"},
    {"{{ \"a\"|replace(\"a\",\"b\") }}{{ 123|replace(\"2\",\"x\") }}{{ none|trim }}{{ \"  y \"|trim }}{{ \"xxyxx\"|trim(\"x\") }}",
     "{}",
     "b1x3Noneyy"},
    {"{#- c #}{%+ if t %}{# c -#}{%- endif -%}{%- raw -%} q {%- endraw -%}{% set y = 1 %}\n\n\t{%+ if t %}  {%- raw -%} q {%- endraw -%}{%- endif -%}",
     "{\"x\": \"X\", \"t\": true}",
     "q\n\tq"},
    {"{%- raw -%} q {%- endraw -%}{% set y = 1 %}{%- raw -%} q {%- endraw -%}\n\n{% set y = 1 %}\n{# c #}    ",
     "{\"x\": \"X\", \"t\": true}",
     "qq    "},
    {"\r\n{% set y = 1 %}\n{%+ if t %}{# c -#}{# c #}{% endif -%}",
     "{\"x\": \"X\", \"t\": true}",
     "\n"},
    {"\n  {%+ if t %}{% if t -%}  {{ x -}}{# c #}{% endif %}{# c -#}{%- if t %}{% endif -%}{%- if t %}{% endif %}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "\n  X"},
    {" \n  \n  ",
     "{\"x\": \"X\", \"t\": true}",
     " \n  \n  "},
    {"{%- if t %}{%- if t %}{# c -#}{{ x }}{{- x }}{% if t -%}\t{% endif %}\n{%- endif -%}\n\n \n {% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "XX"},
    {"a{% if t -%}\t \n {% endif -%}\n \n ",
     "{\"x\": \"X\", \"t\": true}",
     "a"},
    {"{%- if t %}{% set y = 1 %}\t{%- endif %} \n {%+ if t %}{% endif -%}",
     "{\"x\": \"X\", \"t\": true}",
     " \n "},
    {"{%- if t %}{% endif %} \n {# c -#}{%- raw -%} q {%- endraw -%}\r\n\n{% set y = 1 %}",
     "{\"x\": \"X\", \"t\": true}",
     " \nq"},
    {"{% if t %}a{% if t +%}a\n\n{{- x }}{% set y = 1 %}{%- endif %}\n\n{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "aaX\n"},
    {" \n {%- if t %}{% set y = 1 %}{% endif %}\t\t {# c #}{{ x }}\r\n{%- if t %}{%- endif -%}{{- x }}",
     "{\"x\": \"X\", \"t\": true}",
     "\t\t XX"},
    {"\n\n  a\r\n{% if t +%}{% set y = 1 %}{{ x }}{%- endif %}\n  {{ x }}{% if t -%}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "\n\n  a\nX  X"},
    {" \n\n{{- x }}",
     "{\"x\": \"X\", \"t\": true}",
     "X"},
    {"{# c #}{# c -#}a  {% if t %}{%- endif -%}{{ x -}}{# c #}{# c -#}",
     "{\"x\": \"X\", \"t\": true}",
     "a  X"},
    {"{# c -#} \n{% if t +%}{{- x }}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "X"},
    {"{% set y = 1 %}{%- raw -%} q {%- endraw -%}  ",
     "{\"x\": \"X\", \"t\": true}",
     "q"},
    {"  {{- x }}{{ x -}}a    {%+ if t %} a{{ x -}}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "XXa     aX"},
    {"  {% if t -%}\n{# c -#}{%- endif -%}{%- if t %}{% set y = 1 %}{% endif %}{%- raw -%} q {%- endraw -%}\t{{ x }}{% if t -%}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "qX"},
    {"{# c -#}{%+ if t %}{#- c #}{% endif %}{{- x }}{% set y = 1 %}  {% if t +%}{% endif %}{% if t +%}{% if t +%}{% endif %}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "X  "},
    {"{{- x }}a{% set y = 1 %} \n {# c #}\n\n{{ x -}}{%+ if t %}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "Xa \n\nX"},
    {"{{ x -}}{%- if t %} \n  \n {%- if t %}{% endif -%} \n {%- endif -%}",
     "{\"x\": \"X\", \"t\": true}",
     "X"},
    {"   {{ x }}\n\n\t{%+ if t %} \n {%- if t %}{% endif %}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "   X\n\n\t"},
    {"{{ x -}}{% set y = 1 %}{%+ if t %} {% endif %}{{ x }}{# c -#}{% if t %}{# c -#}{%- endif %}{%- if t %}\n{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "X X"},
    {"\r\na {%- raw -%} q {%- endraw -%}\t{%+ if t %}{% endif -%}  ",
     "{\"x\": \"X\", \"t\": true}",
     "\naq"},
    {" \n {% if t +%}{% endif %}{% if t +%} {% endif -%}{% if t %}{# c #}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     " \n "},
    {"{%- if t %}\r\n{%- endif -%}a{%+ if t %}{%- raw -%} q {%- endraw -%}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "aq"},
    {"{%- if t %}{%- raw -%} q {%- endraw -%}{{ x -}}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "qX"},
    {"\t{%- raw -%} q {%- endraw -%}\t \n \r\n{%- if t %}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "q"},
    {"{#- c #}{{ x -}}{{ x }}\n{% if t %} {#- c #}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     "XX\n"},
    {"{% if t +%} \n    {% endif -%}a{% if t +%}{%- endif -%}{% if t +%}{% endif %}",
     "{\"x\": \"X\", \"t\": true}",
     " \na"},
};

static char *render_str(const char *src, const char *ctx_json) {
    json_t *ctx = ctx_json ? json_loads(ctx_json, 0, NULL) : NULL;
    lp_template *t = lp_template_compile(src);
    char *out = t ? lp_template_render(t, ctx, NULL) : NULL;
    lp_template_free(t);
    json_decref(ctx);
    return out;
}

static void test_engine_table(void **state) {
    (void)state;
    size_t n = sizeof engine_cases / sizeof *engine_cases, pass = 0;
    for (size_t i = 0; i < n; i++) {
        char *got = render_str(engine_cases[i].src, engine_cases[i].ctx);
        char label[128];
        snprintf(label, sizeof label, "engine case %zu (%.60s)", i, engine_cases[i].src);
        pass += matches(got, engine_cases[i].want, NULL, label);
        free(got);
    }
    printf("engine table: %zu/%zu cases passed\n", pass, n);
    assert_int_equal(pass, n);
}

static void expect_render(const char *src, const char *ctx, const char *want) {
    char *got = render_str(src, ctx);
    if (!got) fail_msg("render of %s failed: %s", src, lp_errmsg());
    assert_string_equal(got, want);
    free(got);
}

/* A few readable cases of the rules chat templates lean on most. */
static void test_whitespace_control(void **state) {
    (void)state;
    /* trim_blocks eats the newline after %}, lstrip_blocks the indentation before {% */
    expect_render("<\n  {% if true %}\n  x\n  {% endif %}\n>", NULL, "<\n  x\n>");
    /* '-' strips all whitespace, newlines included, on its side; {{ }} is never lstripped */
    expect_render("a  \n {{- 'b' -}} \n  c\n  {{ 'd' }}", NULL, "abc\n  d");
    /* '+' turns lstrip/trim off for one tag; comments obey the same rules */
    expect_render("  {%+ if true +%}\nx{% endif %}|\n  {# c #}\ny", NULL, "  \nx|\ny");
    /* CRLF is normalised and one trailing newline dropped, as jinja's lexer does */
    expect_render("a\r\nb\r\n", NULL, "a\nb");
    expect_render("{% raw %}{{ not evaluated }}{% endraw %}", NULL, "{{ not evaluated }}");
}

static void test_scoping(void **state) {
    (void)state;
    /* a set inside a loop does not leak; namespace attributes do */
    expect_render("{% set x = 1 %}{% set ns = namespace(x=1) %}{% for i in [1, 2] %}{% set x = x + i %}"
                  "{% set ns.x = ns.x + i %}{% endfor %}{{ x }} {{ ns.x }}", NULL, "1 4");
    /* each iteration starts fresh: the previous iteration's set is gone */
    expect_render("{% for i in [1, 2] %}[{{ y }}]{% set y = i %}{% endfor %}", NULL, "[][]");
    /* macros see globals at call time, their own arguments and defaults, not the caller's locals */
    expect_render("{% macro f(a, b=a * 2) %}{{ a }}{{ b }}{{ g }}{{ local }}{% endmacro %}{% set g = 'G' %}"
                  "{% for local in ['L'] %}{{ f(1) }}{{ f(1, b=5) }}{% endfor %}", NULL, "12G15G");
    expect_render("{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(5) }}",
                  NULL, "120");
}

static void test_loop_and_filters(void **state) {
    (void)state;
    const char *msgs = "{\"m\": [{\"role\": \"system\", \"content\": \" S \"}, {\"role\": \"user\", \"content\": \"U\"},"
                       " {\"role\": \"assistant\", \"content\": \"<think>\\nr\\n</think>\\n\\nA\"}]}";
    expect_render("{% for x in m if x.role != 'system' %}{{ loop.index }}/{{ loop.length }}{{ x.role[0] }}"
                  "{{ ',' if not loop.last }}{% endfor %}", msgs, "1/2u,2/2a");
    expect_render("{{ m[-1].content.split('</think>')[-1].lstrip('\\n') }}|{{ m[0].content|trim }}|"
                  "{{ (m|map(attribute='role')|list)[::-1]|join(' ') }}|{{ m|selectattr('role', 'equalto', 'user')|list|length }}",
                  msgs, "A|S|assistant user system|1");
    expect_render("{{ {'b': [1, 2.0, none, true], 'a': '\\u00e9\"'}|tojson }}|{{ [1, {}]|tojson(indent=2) }}", NULL,
                  "{\"b\": [1, 2.0, null, true], \"a\": \"\xc3\xa9\\\"\"}|[\n  1,\n  {}\n]");
    expect_render("{{ [1, 'a', {'k': none}] }} {{ 1.0 }} {{ 1e16 }} {{ 2 ** 10 }} {{ 7 // -2 }} {{ 'x' ~ none }}", NULL,
                  "[1, 'a', {'k': None}] 1.0 1e+16 1024 -4 xNone");
}

/* ---------------------------------------------------------------- 3. errors */
static void expect_error(const char *src, const char *ctx, const char *needle, bool at_compile) {
    json_t *c = ctx ? json_loads(ctx, 0, NULL) : NULL;
    lp_err_clear();
    lp_template *t = lp_template_compile(src);
    if (at_compile) {
        assert_null(t);
    } else {
        if (!t) fail_msg("%s should compile: %s", src, lp_errmsg());
        char *out = lp_template_render(t, c, NULL);
        if (out) fail_msg("%s should fail to render, gave '%s'", src, out);
        assert_false(lp_template_raised());
    }
    if (!strstr(lp_errmsg(), needle)) fail_msg("error for %s is '%s', expected it to contain '%s'", src, lp_errmsg(), needle);
    lp_template_free(t);
    json_decref(c);
}

static void test_errors_name_line(void **state) {
    (void)state;
    expect_error("a\n{% if x %}\n{{ foo( }}\n{% endif %}", NULL, "template:3: unexpected", true);
    expect_error("x\n{% for a in b %}\n", NULL, "template:2: unexpected end of template: expected 'endfor'", true);
    expect_error("{% include 'other.jinja' %}", NULL, "template:1: tag 'include' is not supported", true);
    expect_error("\n\n{% frobnicate %}", NULL, "template:3: unknown tag 'frobnicate'", true);
    expect_error("{{ 'abc }}", NULL, "unterminated string literal", true);
    expect_error("{# never closed", NULL, "missing end of comment tag", true);
    expect_error("{{ x ]] }}", NULL, "unexpected ']'", true);
    expect_error("{% break %}", NULL, "'break' outside of a loop", true);
    expect_error("{% macro m(a=1, b) %}{% endmacro %}", NULL, "non-default argument follows default argument", true);
    expect_error("line1\nline2 {{ x | nosuchfilter }}", NULL, "template:2: no filter named 'nosuchfilter'", false);
    expect_error("{{ 1 is nosuchtest }}", NULL, "no test named 'nosuchtest'", false);
    expect_error("\n\n{{ x.y }}", NULL, "template:3: 'x' is undefined", false);
    expect_error("{{ m.content + 'x' }}", "{\"m\": {}}", "'dict object' has no attribute 'content'", false);
    expect_error("{{ 1 + 'a' }}", NULL, "unsupported operand type(s) for +: 'int' and 'str'", false);
    expect_error("{{ [].append(1) }}", NULL, "access to attribute 'append' of 'list' object is unsafe", false);
    expect_error("{% set ns = 1 %}{% set ns.x = 2 %}", NULL, "cannot assign attribute on non-namespace object", false);
    expect_error("{% for a, b in [[1, 2, 3]] %}{% endfor %}", NULL, "too many values to unpack", false);

    /* the template's own message passes through verbatim */
    lp_template *t = lp_template_compile("x{% if messages|length == 0 %}{{ raise_exception('No messages: ' ~ 0) }}{% endif %}");
    assert_non_null(t);
    json_t *ctx = json_loads("{\"messages\": []}", 0, NULL);
    assert_null(lp_template_render(t, ctx, NULL));
    assert_true(lp_template_raised());
    assert_string_equal(lp_errmsg(), "No messages: 0");
    lp_template_free(t);
    json_decref(ctx);

    /* a name given at compile time prefixes messages */
    assert_null(lp_template_compile_named("{% if %}", "tokenizer_config.json chat_template"));
    assert_non_null(strstr(lp_errmsg(), "tokenizer_config.json chat_template:1:"));
}

/* Render with a context shaped like a chat; failures are fine, crashes and leaks are not. */
static void try_render(const char *src, const json_t *ctx) {
    lp_template *t = lp_template_compile(src);
    if (!t) {
        assert_true(strlen(lp_errmsg()) > 0);
        return;
    }
    char *out = lp_template_render(t, ctx, NULL);
    if (!out) assert_true(strlen(lp_errmsg()) > 0);
    free(out);
    lp_template_free(t);
}

static void test_malformed_no_crash(void **state) {
    (void)state;
    static const char *const bad[] = {
        "{{", "{%", "{#", "}}", "%}", "{{ }}", "{% %}", "{{ x", "{% if x %}", "{% endif %}", "{% else %}",
        "{% for %}", "{% for x %}", "{% for x in %}", "{% set %}", "{% set x %}", "{% set = 1 %}", "{% macro %}",
        "{% macro m( %}", "{{ ((((( }}", "{{ [1, 2 }}", "{{ {'a' 1} }}", "{{ a. }}", "{{ a[ }}", "{{ a | }}",
        "{{ a is }}", "{{ 'x' ~ }}", "{{ 1 if }}", "{{ not }}", "{{ -}}", "{{ 0x }}", "{{ 1e }}", "{{ '\\x4' }}",
        "{{ \"\\u12\" }}", "{% raw %}", "{% call %}{% endcall %}", "{% filter %}{% endfilter %}", "{% with %}",
        "{{ x(1, a=2, 3) }}", "{{ f(*args) }}", "{% set true = 1 %}", "{{ a[::0] }}", "\xff\xfe{{ '\xc3' }}",
        "{% if x %}{% elif %}{% endif %}", "{% for x in y recursive %}{% endfor %}", "{% continue %}",
        "{{ range(1000000)|length }}", "{{ 'a' * 1000000000000 }}", "{{ [1] * 1000000000000 }}",
        "{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}", "{{ 9223372036854775807 * 2 }}", "{{ -9223372036854775807 - 2 }}",
        "{{ 99999999999999999999 }}", "{{ 1e999 }}", "{{ 1 // 0 }}", "{{ 1.0 % 0 }}", "{{ 0 ** -1 }}", "{{ 'x'[1:2:0] }}",
    };
    json_t *ctx = json_loads("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"x\": 1, \"a\": [1], \"y\": []}", 0, NULL);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) try_render(bad[i], ctx);

    /* deep nesting is refused, not a stack overflow */
    char deep[4200];
    strcpy(deep, "{{ ");
    for (int i = 0; i < 2000; i++) strcat(deep, "(");
    strcat(deep, " }}");
    assert_null(lp_template_compile(deep));
    strcpy(deep, "");
    for (int i = 0; i < 300; i++) strcat(deep, "{% if 1 %}");
    assert_null(lp_template_compile(deep));

    /* every prefix (stride 5) of the real templates, and byte-mutated copies, fail or render cleanly */
    unsigned seed = 1;
    for (size_t k = 0; k < N_TEMPLATES; k++) {
        char *rel = lp_xasprintf("templates/%s.jinja", template_names[k]);
        char *src = read_text(rel);
        size_t n = strlen(src);
        for (size_t cut = 0; cut < n; cut += 5) {
            char saved = src[cut];
            src[cut] = 0;
            try_render(src, ctx);
            src[cut] = saved;
        }
        for (int m = 0; m < 40; m++) {
            char *copy = lp_xstrdup(src);
            for (int e = 0; e < 3; e++) {
                seed = seed * 1103515245u + 12345u;
                size_t at = (seed >> 8) % n;
                static const char junk[] = "{}%#-+()[]'\"|.~ \nx0";
                copy[at] = junk[(seed >> 20) % (sizeof junk - 1)];
            }
            try_render(copy, ctx);
            free(copy);
        }
        free(src);
        free(rel);
    }
    json_decref(ctx);
}

static void test_limits(void **state) {
    (void)state;
    expect_error("{{ range(100001)|length }}", NULL, "Range too big", false);
    expect_error("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", NULL, "maximum recursion depth", false);
    expect_error("{{ 'ab' * 1000000000 }}", NULL, "too large", false);
    /* the ceilings, lowered so the test stays quick */
    lp_template_set_limits(200000, 16u << 20);
    expect_error("{% set r = range(10000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}", NULL,
                 "evaluation budget", false);
    expect_error("{% for i in range(1000) %}{% set big = range(100000) %}{% endfor %}", NULL, "too much memory", false);
    expect_error("{% set ns = namespace(s='x') %}{% for i in range(100000) %}{% set ns.s = ns.s ~ ns.s[:1000] %}{% endfor %}",
                 NULL, "too much memory", false);
    expect_render("{% for i in range(3) %}{{ i }}{% endfor %}", NULL, "012");
    lp_template_set_limits(0, 0);
}

/* ---------------------------------------------------------------- API */
static void test_chat_api(void **state) {
    (void)state;
    lp_template *t = lp_template_compile("{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ documents is none }}|"
                                         "{{ add_generation_prompt }}|{{ enable_thinking }}|{{ messages|length }}");
    assert_non_null(t);
    json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"hi\"}]", 0, NULL);
    json_t *extra = json_loads("{\"enable_thinking\": false, \"eos_token\": \"<E>\"}", 0, NULL);
    char *out = lp_chat_render(t, msgs, NULL, true, extra, NULL, "<eos>");
    assert_string_equal(out, "|<E>|True|True|True|False|1"); /* extra kwargs override; NULL bos is undefined */
    free(out);
    out = lp_chat_render(t, msgs, msgs, false, NULL, "<s>", NULL);
    assert_string_equal(out, "<s>||False|True|False||1");
    free(out);
    assert_null(lp_chat_render(t, extra, NULL, true, NULL, NULL, NULL)); /* messages must be a list */
    lp_template_free(t);

    /* one compiled template renders many times; len_out reports the bytes */
    t = lp_template_compile("{{ messages[0].content }}{% set x = 1 %}");
    json_t *ctx = json_pack("{s:O}", "messages", msgs);
    for (int i = 0; i < 3; i++) {
        size_t len = 0;
        out = lp_template_render(t, ctx, &len);
        assert_string_equal(out, "hi");
        assert_int_equal(len, 2);
        free(out);
    }
    out = lp_template_render(t, NULL, NULL); /* no context: messages is undefined */
    assert_null(out);
    lp_template_free(t);
    json_decref(ctx);
    json_decref(msgs);
    json_decref(extra);
}

static void test_clock(void **state) {
    (void)state;
    lp_template_set_clock(FIXED_NOW);
    expect_render("{{ strftime_now('%Y-%m-%d') }} {{ strftime_now('%d %b %Y') }}", NULL, "2026-01-15 15 Jan 2026");
    lp_template_set_clock(0);
    char *now = render_str("{{ strftime_now('%Y') }}", NULL);
    assert_non_null(now);
    assert_true(atoi(now) >= 2025);
    free(now);
    lp_template_set_clock(FIXED_NOW);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_qwen3_refs),     cmocka_unit_test(test_chat_templates_refs),
        cmocka_unit_test(test_model_templates),     cmocka_unit_test(test_engine_table),
        cmocka_unit_test(test_whitespace_control),  cmocka_unit_test(test_scoping),
        cmocka_unit_test(test_loop_and_filters),    cmocka_unit_test(test_errors_name_line),
        cmocka_unit_test(test_malformed_no_crash),  cmocka_unit_test(test_limits),
        cmocka_unit_test(test_chat_api),            cmocka_unit_test(test_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
