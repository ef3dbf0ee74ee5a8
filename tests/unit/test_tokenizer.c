/* test_tokenizer.c — the byte-level BPE tokenizer against Hugging Face references:
 * the fixture and real Qwen3 tokenizers on every reference string, the GGUF-array path
 * giving the same ids, eval.txt token counts and prompt ids from the model references,
 * tokenizer.json variants (Llama 3 / gpt-4o / GPT-2 pre-tokenizers, split behaviours,
 * added-token flags, ignore_merges, unk) with ids produced by HF tokenizers 0.23, and
 * bad input of every kind failing cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka after the standard headers it relies on */
#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/fileio.h"
#include "tokenizer/tokenizer.h"

#define FIXTURE_TOKENIZER LP_FIXTURES_DIR "/models/tiny-qwen3/tokenizer.json"
#define QWEN3_TOKENIZER LP_FIXTURES_DIR "/qwen3-tokenizer/tokenizer.json"
#define FIXTURE_REFS LP_FIXTURES_DIR "/refs/tokenizer-fixture-bpe8k.json"
#define QWEN3_REFS LP_FIXTURES_DIR "/refs/tokenizer-qwen3.json"

/* Loaded once: the Qwen3 tokenizer is the slow one. */
static lp_tokenizer *fixture_tok, *qwen3_tok;
static double qwen3_load_s;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int setup(void **state) {
    (void)state;
    fixture_tok = lp_tokenizer_load_json(FIXTURE_TOKENIZER);
    double t0 = now_s();
    qwen3_tok = lp_tokenizer_load_json(QWEN3_TOKENIZER);
    qwen3_load_s = now_s() - t0;
    if (!fixture_tok || !qwen3_tok) fprintf(stderr, "load failed: %s\n", lp_errmsg());
    return fixture_tok && qwen3_tok ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    lp_tokenizer_free(fixture_tok);
    lp_tokenizer_free(qwen3_tok);
    return 0;
}

static json_t *load_json(const char *path) {
    json_error_t err;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (!j) fail_msg("%s: %s", path, err.text);
    return j;
}

/* ids == expected (a JSON array), with a readable report when not. */
static bool ids_equal_json(const int32_t *ids, size_t n, const json_t *expected, const char *label) {
    bool same = n == json_array_size(expected);
    for (size_t i = 0; same && i < n; i++) same = ids[i] == json_integer_value(json_array_get(expected, i));
    if (!same) {
        fprintf(stderr, "MISMATCH %s\n  got (%zu):", label, n);
        for (size_t i = 0; i < n && i < 48; i++) fprintf(stderr, " %d", (int)ids[i]);
        fprintf(stderr, "\n  want (%zu):", json_array_size(expected));
        for (size_t i = 0; i < json_array_size(expected) && i < 48; i++)
            fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(expected, i)));
        fprintf(stderr, "\n");
    }
    return same;
}

static bool ids_equal(const int32_t *ids, size_t n, const int32_t *want, size_t n_want, const char *label) {
    json_t *arr = json_array();
    for (size_t i = 0; i < n_want; i++) json_array_append_new(arr, json_integer(want[i]));
    bool same = ids_equal_json(ids, n, arr, label);
    json_decref(arr);
    return same;
}

static void encode_ok(const lp_tokenizer *tok, const char *text, size_t len, bool special, int32_t **ids, size_t *n) {
    if (lp_tokenizer_encode(tok, text, len, special, ids, n)) fail_msg("encode failed: %s", lp_errmsg());
}

/* Every reference case: ids (special tokens parsed, as HF add_special_tokens=False does)
 * and the decoded text. Returns the number of failing cases. */
static int check_refs(const lp_tokenizer *tok, const char *refs_path) {
    json_t *refs = load_json(refs_path);
    json_t *cases = json_object_get(refs, "cases");
    assert_true(json_array_size(cases) >= 30);
    int failures = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const json_t *text = json_object_get(c, "text");
        int32_t *ids;
        size_t n, dlen;
        encode_ok(tok, json_string_value(text), json_string_length(text), true, &ids, &n);
        char label[160];
        snprintf(label, sizeof label, "%s case %zu %.60s", refs_path, i, json_string_value(text));
        if (!ids_equal_json(ids, n, json_object_get(c, "ids"), label)) failures++;
        char *back = lp_tokenizer_decode_len(tok, ids, n, false, &dlen);
        const json_t *want = json_object_get(c, "decoded");
        if (!back || dlen != json_string_length(want) || memcmp(back, json_string_value(want), dlen) != 0) {
            fprintf(stderr, "DECODE MISMATCH %s: got '%s'\n", label, back ? back : lp_errmsg());
            failures++;
        }
        free(back);
        free(ids);
    }
    json_decref(refs);
    return failures;
}

static void test_fixture_refs(void **state) {
    (void)state;
    assert_int_equal(check_refs(fixture_tok, FIXTURE_REFS), 0);
    assert_int_equal(lp_tokenizer_n_vocab(fixture_tok), 8184);
    assert_int_equal(lp_tokenizer_n_merges(fixture_tok), 7921);
}

static void test_qwen3_refs(void **state) {
    (void)state;
    assert_int_equal(check_refs(qwen3_tok, QWEN3_REFS), 0);
    assert_int_equal(lp_tokenizer_n_vocab(qwen3_tok), 151669);
    /* informational only: load speed is measured by bench/bench_tokenizer, not asserted here */
    printf("qwen3 tokenizer.json load: %.3f s\n", qwen3_load_s);
}

/* ---- the GGUF-array path ---- */

static lp_tokenizer *via_gguf_arrays(const lp_tokenizer *tok, size_t pad_to) {
    char **tokens, **merges;
    int32_t *types;
    size_t n, n_merges;
    assert_int_equal(lp_tokenizer_export_vocab(tok, pad_to, &tokens, &types, &n), 0);
    assert_int_equal(lp_tokenizer_export_merges(tok, &merges, &n_merges), 0);
    const char *pre = lp_tokenizer_pre_name(tok);
    assert_non_null(pre);
    lp_tokenizer *copy = lp_tokenizer_from_vocab((const char *const *)tokens, n, types, (const char *const *)merges,
                                                 n_merges, pre);
    if (!copy) fail_msg("from_vocab: %s", lp_errmsg());
    lp_tokenizer_free_strings(tokens, n);
    lp_tokenizer_free_strings(merges, n_merges);
    free(types);
    return copy;
}

static void same_ids_both_ways(const lp_tokenizer *a, const lp_tokenizer *b, const char *refs_path) {
    json_t *refs = load_json(refs_path);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(refs, "cases"), i, c) {
        const json_t *text = json_object_get(c, "text");
        for (int special = 0; special < 2; special++) {
            int32_t *ia, *ib;
            size_t na, nb;
            encode_ok(a, json_string_value(text), json_string_length(text), special, &ia, &na);
            encode_ok(b, json_string_value(text), json_string_length(text), special, &ib, &nb);
            assert_true(ids_equal(ib, nb, ia, na, json_string_value(text)));
            char *da = lp_tokenizer_decode(a, ia, na, false), *db = lp_tokenizer_decode(b, ib, nb, false);
            assert_string_equal(da, db);
            free(da), free(db), free(ia), free(ib);
        }
    }
    json_decref(refs);
}

static void test_from_vocab_matches_json(void **state) {
    (void)state;
    assert_non_null(lp_tokenizer_pre_name(fixture_tok));
    assert_non_null(lp_tokenizer_pre_name(qwen3_tok));
    assert_string_equal(lp_tokenizer_pre_name(fixture_tok), "qwen2");
    assert_string_equal(lp_tokenizer_pre_name(qwen3_tok), "qwen2");
    lp_tokenizer *fx = via_gguf_arrays(fixture_tok, 8192), *qw = via_gguf_arrays(qwen3_tok, 151936);
    assert_int_equal(lp_tokenizer_n_vocab(fx), 8192);
    assert_int_equal(lp_tokenizer_n_vocab(qw), 151936);
    same_ids_both_ways(fixture_tok, fx, FIXTURE_REFS);
    same_ids_both_ways(qwen3_tok, qw, QWEN3_REFS);
    /* and the copy exports what it was built from */
    assert_string_equal(lp_tokenizer_pre_name(qw), "qwen2");
    int32_t padded[] = {9707, 151935, 1879}; /* a [PAD] row decodes to nothing either way */
    char *text = lp_tokenizer_decode(qw, padded, 3, false);
    assert_string_equal(text, "Hello world");
    free(text);
    assert_string_equal(lp_tokenizer_token_text(qw, 151935), "[PAD151935]");
    assert_int_equal(lp_tokenizer_n_merges(qw), lp_tokenizer_n_merges(qwen3_tok));
    lp_tokenizer_free(fx);
    lp_tokenizer_free(qw);
}

static void test_gguf_export(void **state) {
    (void)state;
    char **tokens, **merges;
    int32_t *types;
    size_t n, n_merges;
    assert_int_equal(lp_tokenizer_export_vocab(fixture_tok, 8192, &tokens, &types, &n), 0);
    assert_int_equal(n, 8192);
    assert_string_equal(tokens[220], "\xc4\xa0"); /* "Ġ": byte-level space */
    assert_int_equal(types[220], LP_TOKEN_NORMAL);
    assert_string_equal(tokens[8178], "<|im_start|>");
    assert_int_equal(types[8178], LP_TOKEN_CONTROL);
    assert_string_equal(tokens[8182], "<think>");
    assert_int_equal(types[8182], LP_TOKEN_USER_DEFINED);
    assert_string_equal(tokens[8184], "[PAD8184]");
    assert_int_equal(types[8191], LP_TOKEN_UNUSED);
    lp_tokenizer_free_strings(tokens, n);
    free(types);
    assert_int_equal(lp_tokenizer_export_merges(fixture_tok, &merges, &n_merges), 0);
    assert_int_equal(n_merges, 7921);
    assert_string_equal(merges[0], "\xc4\xa0 \xc4\xa0");
    assert_string_equal(merges[1], "\xc4\xa0\xc4\xa0 \xc4\xa0\xc4\xa0");
    lp_tokenizer_free_strings(merges, n_merges);
    /* Qwen3 marks <|fim_prefix|> non-special; GGUF converters still call it CONTROL. */
    int32_t fim = lp_tokenizer_find(qwen3_tok, "<|fim_prefix|>");
    assert_int_equal(fim, 151659);
    assert_false(lp_tokenizer_is_special(qwen3_tok, fim));
    assert_int_equal(lp_tokenizer_token_type(qwen3_tok, fim), LP_TOKEN_CONTROL);
    assert_int_equal(lp_tokenizer_token_type(qwen3_tok, lp_tokenizer_find(qwen3_tok, "<think>")), LP_TOKEN_USER_DEFINED);
}

static void test_vocab_queries(void **state) {
    (void)state;
    assert_int_equal(lp_tokenizer_find(fixture_tok, "<|im_end|>"), 8179);
    assert_int_equal(lp_tokenizer_find(qwen3_tok, "<|im_end|>"), 151645);
    assert_int_equal(lp_tokenizer_find(qwen3_tok, "<|endoftext|>"), 151643);
    assert_int_equal(lp_tokenizer_find(qwen3_tok, "\xc4\xa0\xc4\xa0"), 256); /* vocab text "ĠĠ" */
    assert_int_equal(lp_tokenizer_find(qwen3_tok, "no such token"), -1);
    assert_true(lp_tokenizer_is_special(fixture_tok, 8179));
    assert_false(lp_tokenizer_is_special(fixture_tok, 8182));
    assert_false(lp_tokenizer_is_special(fixture_tok, 100));
    assert_false(lp_tokenizer_is_special(fixture_tok, -1));
    assert_false(lp_tokenizer_is_special(fixture_tok, 1 << 30));
    assert_string_equal(lp_tokenizer_token_text(qwen3_tok, 9707), "Hello");
    assert_null(lp_tokenizer_token_text(qwen3_tok, 151669));
    assert_int_equal(lp_tokenizer_token_type(qwen3_tok, 151669), LP_TOKEN_UNUSED);
    size_t len;
    const char *b = lp_tokenizer_token_bytes(qwen3_tok, 220, &len); /* "Ġ" is a space */
    assert_int_equal(len, 1);
    assert_memory_equal(b, " ", 1);
    assert_null(lp_tokenizer_token_bytes(qwen3_tok, -5, &len));
}

/* ---- eval.txt and model prompts (refs/tiny-qwen3.json) ---- */

static void test_eval_txt_and_prompts(void **state) {
    (void)state;
    size_t len;
    char *text = lp_read_file(LP_FIXTURES_DIR "/eval.txt", &len);
    assert_non_null(text);
    json_t *refs = load_json(LP_FIXTURES_DIR "/refs/tiny-qwen3.json");
    int32_t *ids;
    size_t n;
    encode_ok(fixture_tok, text, len, false, &ids, &n);
    assert_int_equal(n, json_integer_value(json_object_get(refs, "eval_tokens")));
    const json_t *first = json_object_get(json_object_get(refs, "logits"), "tokens");
    assert_true(n >= json_array_size(first));
    assert_true(ids_equal_json(ids, json_array_size(first), first, "eval.txt first tokens"));
    size_t back_len;
    char *back = lp_tokenizer_decode_len(fixture_tok, ids, n, false, &back_len);
    assert_int_equal(back_len, len);
    assert_memory_equal(back, text, len);
    free(back);
    free(ids);
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(refs, "greedy"), i, g) {
        const char *prompt = json_string_value(json_object_get(g, "prompt"));
        encode_ok(fixture_tok, prompt, strlen(prompt), false, &ids, &n);
        assert_true(ids_equal_json(ids, n, json_object_get(g, "prompt_ids"), prompt));
        free(ids);
        /* the continuation decodes to the reference text */
        const json_t *gen = json_object_get(g, "greedy_ids");
        size_t ng = json_array_size(gen);
        int32_t *gids = malloc(ng * sizeof *gids);
        for (size_t k = 0; k < ng; k++) gids[k] = (int32_t)json_integer_value(json_array_get(gen, k));
        char *out = lp_tokenizer_decode(fixture_tok, gids, ng, false);
        assert_string_equal(out, json_string_value(json_object_get(g, "text")));
        free(out);
        free(gids);
    }
    json_decref(refs);
    free(text);
}

static void test_parse_special_off(void **state) {
    (void)state;
    const char *chat = "<|im_start|>user\n<think>hi</think><|im_end|>";
    int32_t *on, *off;
    size_t n_on, n_off;
    encode_ok(fixture_tok, chat, strlen(chat), true, &on, &n_on);
    encode_ok(fixture_tok, chat, strlen(chat), false, &off, &n_off);
    assert_int_equal(on[0], 8178);
    assert_int_equal(on[n_on - 1], 8179);
    bool saw_think = false;
    for (size_t i = 0; i < n_off; i++) {
        assert_false(lp_tokenizer_is_special(fixture_tok, off[i])); /* nothing injected */
        saw_think |= off[i] == 8182;
    }
    assert_true(saw_think); /* plain added tokens still match, as in HF */
    char *back = lp_tokenizer_decode(fixture_tok, off, n_off, false);
    assert_string_equal(back, chat);
    free(back);
    back = lp_tokenizer_decode(fixture_tok, on, n_on, true); /* skip_special */
    assert_string_equal(back, "user\n<think>hi</think>");
    free(back);
    free(on);
    free(off);
}

/* ---- tokenizer.json variants, expected ids from HF tokenizers 0.23 ---- */

#define RE_LLAMA3                                                                                            \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s+(?!\\S)|\\s+"
#define RE_GPT4O                                                                                              \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"                 \
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static json_t *split_step(const char *pattern, const char *behavior, const char *kind) {
    return json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", kind, pattern, "behavior", behavior,
                     "invert", 0);
}

static json_t *byte_level(bool prefix_space, bool use_regex) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", prefix_space, "trim_offsets", 0,
                     "use_regex", use_regex);
}

static json_t *pre_sequence(json_t *a, json_t *b) {
    json_t *arr = json_array();
    json_array_append_new(arr, a);
    if (b) json_array_append_new(arr, b);
    return json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", arr);
}

static void set_added_flag(json_t *doc, const char *content, const char *flag) {
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(doc, "added_tokens"), i, t) if (strcmp(json_string_value(json_object_get(t, "content")), content) == 0)
        json_object_set_new(t, flag, json_true());
}

static void add_token(json_t *doc, int id, const char *content, bool normalized, bool single_word) {
    json_array_append_new(json_object_get(doc, "added_tokens"),
                          json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content, "single_word",
                                    single_word, "lstrip", 0, "rstrip", 0, "normalized", normalized, "special", 0));
}

typedef void (*variant_fn)(json_t *doc);

static void variant_llama3(json_t *d) {
    json_object_set_new(d, "normalizer", json_null());
    json_object_set_new(json_object_get(d, "model"), "ignore_merges", json_true());
    json_object_set_new(d, "pre_tokenizer", pre_sequence(split_step(RE_LLAMA3, "Isolated", "Regex"), byte_level(false, false)));
}

static void variant_gpt4o(json_t *d) {
    json_object_set_new(d, "normalizer", json_null());
    json_object_set_new(d, "pre_tokenizer", pre_sequence(split_step(RE_GPT4O, "Isolated", "Regex"), byte_level(false, false)));
}

/* GPT-2 style: ByteLevel alone with its own regex and a prefix space; merges as "a b". */
static void variant_gpt2(json_t *d) {
    json_object_set_new(d, "normalizer", json_null());
    json_object_set_new(d, "pre_tokenizer", byte_level(true, true));
    json_t *merges = json_object_get(json_object_get(d, "model"), "merges"), *joined = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        char *s = lp_xasprintf("%s %s", json_string_value(json_array_get(m, 0)), json_string_value(json_array_get(m, 1)));
        json_array_append_new(joined, json_string(s));
        free(s);
    }
    json_object_set_new(json_object_get(d, "model"), "merges", joined);
}

static void variant_behaviors(json_t *d) {
    json_t *arr = json_array();
    json_array_append_new(arr, split_step("\\s+", "MergedWithPrevious", "Regex"));
    json_array_append_new(arr, split_step("[0-9]", "MergedWithNext", "Regex"));
    json_array_append_new(arr, split_step(".", "Removed", "String"));
    json_array_append_new(arr, split_step("\\p{P}", "Isolated", "Regex"));
    json_array_append_new(arr, byte_level(false, true));
    json_object_set_new(d, "pre_tokenizer", json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", arr));
}

static void variant_flags(json_t *d) {
    set_added_flag(d, "<think>", "lstrip");
    set_added_flag(d, "</think>", "rstrip");
    set_added_flag(d, "<tool_call>", "single_word");
    set_added_flag(d, "<|im_end|>", "lstrip");
    set_added_flag(d, "<|im_end|>", "rstrip");
    add_token(d, 8184, "\xc3\xa9!", true, false); /* "é!", matched after NFC */
    add_token(d, 8185, "<|im", false, false);
    add_token(d, 8186, "ab c", false, true);
}

static lp_tokenizer *fixture_variant(variant_fn edit) {
    json_t *doc = load_json(FIXTURE_TOKENIZER);
    edit(doc);
    char *text = json_dumps(doc, JSON_COMPACT);
    lp_tokenizer *tok = lp_tokenizer_load_json_mem(text, strlen(text), "variant");
    if (!tok) fail_msg("variant: %s", lp_errmsg());
    free(text);
    json_decref(doc);
    return tok;
}

typedef struct {
    const char *text;
    bool special;
    int32_t ids[48];
    size_t n;
} variant_case;

#define IDS(...) {__VA_ARGS__}, sizeof((int32_t[]){__VA_ARGS__}) / sizeof(int32_t)

static void check_variant(variant_fn edit, const variant_case *cases, size_t n_cases, const char *expect_pre) {
    lp_tokenizer *tok = fixture_variant(edit);
    for (size_t i = 0; i < n_cases; i++) {
        int32_t *ids;
        size_t n;
        encode_ok(tok, cases[i].text, strlen(cases[i].text), cases[i].special, &ids, &n);
        assert_true(ids_equal(ids, n, cases[i].ids, cases[i].n, cases[i].text));
        char *back = lp_tokenizer_decode(tok, ids, n, false);
        if (edit != variant_behaviors) assert_string_equal(back, cases[i].text); /* "Removed" drops text */
        free(back);
        free(ids);
    }
    const char *pre = lp_tokenizer_pre_name(tok);
    if (expect_pre) {
        assert_non_null(pre);
        assert_string_equal(pre, expect_pre);
    } else {
        assert_null(pre);
    }
    if (expect_pre) { /* the GGUF route reproduces it too */
        lp_tokenizer *copy = via_gguf_arrays(tok, 0);
        for (size_t i = 0; i < n_cases; i++) {
            int32_t *ids;
            size_t n;
            encode_ok(copy, cases[i].text, strlen(cases[i].text), cases[i].special, &ids, &n);
            assert_true(ids_equal(ids, n, cases[i].ids, cases[i].n, cases[i].text));
            free(ids);
        }
        lp_tokenizer_free(copy);
    }
    lp_tokenizer_free(tok);
}

static void test_variant_llama3(void **state) {
    (void)state;
    static const variant_case cases[] = {
        {"Numbers 1234567 and HelloWorld's I'M", true,
         IDS(45, 345, 1199, 220, 16, 17, 18, 19, 20, 21, 22, 390, 908, 307, 337, 54, 7722, 1204, 380, 6, 44)},
        {"  spaces\n\n  x", true, IDS(220, 6164, 264, 220, 1597)},
    };
    check_variant(variant_llama3, cases, sizeof cases / sizeof cases[0], "llama-bpe");
}

static void test_variant_gpt4o(void **state) {
    (void)state;
    static const variant_case cases[] = {
        {"HelloWorld CamelCase I'M don't path/\n/x 1234567", true,
         IDS(6760, 337, 54, 7722, 364, 319, 307, 7202, 380, 6, 44, 3192, 1456, 1129, 14, 198, 14, 87, 220, 16, 17, 18, 19,
             20, 21, 22)},
        {"ABCdef GHI'S", true, IDS(7276, 34, 842, 652, 6759, 6, 50)},
    };
    check_variant(variant_gpt4o, cases, sizeof cases / sizeof cases[0], "gpt-4o");
}

static void test_variant_gpt2(void **state) {
    (void)state;
    static const variant_case cases[] = {
        {"Hello world  x\n\ny", true, IDS(908, 307, 337, 303, 7722, 220, 1597, 198, 198, 88)},
        {"it's 2024!", true, IDS(566, 1204, 220, 17, 15, 17, 19, 0)},
    };
    /* Decoding would keep the prefix space the pre-tokenizer adds: compare ids only. */
    lp_tokenizer *tok = fixture_variant(variant_gpt2);
    for (size_t i = 0; i < 2; i++) {
        int32_t *ids;
        size_t n;
        encode_ok(tok, cases[i].text, strlen(cases[i].text), true, &ids, &n);
        assert_true(ids_equal(ids, n, cases[i].ids, cases[i].n, cases[i].text));
        free(ids);
    }
    assert_null(lp_tokenizer_pre_name(tok)); /* add_prefix_space has no GGUF spelling */
    lp_tokenizer_free(tok);
}

static void test_variant_split_behaviors(void **state) {
    (void)state;
    static const variant_case cases[] = {
        {"ab  cd1.2,x y3z..q", true, IDS(351, 256, 6289, 16, 17, 11, 87, 220, 88, 18, 89, 80)},
    };
    check_variant(variant_behaviors, cases, 1, NULL);
}

static void test_variant_added_flags(void **state) {
    (void)state;
    static const variant_case cases[] = {
        {"a <think> b </think>  c <tool_call>x<tool_call> y <tool_call> z  <|im_end|>  e\xcc\x81! <|im_start|> xab c ab c",
         true,
         IDS(64, 8182, 291, 220, 8183, 66, 1035, 997, 386, 5045, 29, 87, 27, 997, 386, 5045, 29, 583, 220, 8180, 1444, 8179,
             8184, 220, 8178, 1597, 351, 272, 220, 8186)},
        {"a <think> b </think>  c <tool_call>x<tool_call> y <tool_call> z  <|im_end|>  e\xcc\x81! <|im_start|> xab c ab c",
         false,
         IDS(64, 8182, 291, 220, 8183, 66, 1035, 997, 386, 5045, 29, 87, 27, 997, 386, 5045, 29, 583, 220, 8180, 1444, 220,
             1035, 91, 389, 4917, 91, 29, 256, 8184, 1035, 91, 389, 6733, 91, 29, 1597, 351, 272, 220, 8186)},
        {"<|im_start|><|im_", true, IDS(8178, 8185, 62)},
        {"<|im_start|><|im_", false, IDS(27, 91, 389, 6733, 91, 29, 8185, 62)},
    };
    lp_tokenizer *tok = fixture_variant(variant_flags);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids;
        size_t n;
        encode_ok(tok, cases[i].text, strlen(cases[i].text), cases[i].special, &ids, &n);
        assert_true(ids_equal(ids, n, cases[i].ids, cases[i].n, cases[i].text));
        free(ids);
    }
    lp_tokenizer_free(tok);
}

/* A hand-made vocabulary where BPE cannot reach "abd": ignore_merges, unk and fuse_unk.
 * Dumped as ASCII-only compact JSON, so tests can edit its text. */
static char *mini_json(bool fuse_unk, bool ignore_merges) {
    json_t *vocab = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "<unk>", 0, "a", 1, "b", 2, "c", 3, "d", 4,
                              "ab", 5, "abd", 6, "\xc4\xa0", 7);
    json_t *doc = json_pack(
        "{s:[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}], s:n, s:o, s:n, s:{s:s, s:b, s:b, s:b},"
        " s:{s:s, s:n, s:s, s:n, s:n, s:b, s:b, s:b, s:o, s:[s]}}",
        "added_tokens", "id", 8, "content", "<|x|>", "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
        "special", 1, "normalizer", "pre_tokenizer",
        pre_sequence(split_step(RE_LLAMA3, "Isolated", "Regex"), byte_level(false, false)), "post_processor", "decoder",
        "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1, "model", "type", "BPE", "dropout",
        "unk_token", "<unk>", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", fuse_unk, "byte_fallback", 0,
        "ignore_merges", ignore_merges, "vocab", vocab, "merges", "a b");
    assert_non_null(doc);
    char *text = json_dumps(doc, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(doc);
    return text;
}

static lp_tokenizer *mini_tokenizer(bool fuse_unk, bool ignore_merges) {
    char *json = mini_json(fuse_unk, ignore_merges);
    lp_tokenizer *tok = lp_tokenizer_load_json_mem(json, strlen(json), "mini");
    if (!tok) fail_msg("mini: %s", lp_errmsg());
    free(json);
    return tok;
}

static void test_mini_ignore_merges_unk(void **state) {
    (void)state;
    static const variant_case fused[] = {
        {"abd", true, IDS(6)},       {"ab", true, IDS(5)},           {"abc", true, IDS(5, 3)},
        {"zzz abd", true, IDS(0, 7, 5, 4)}, {"<|x|>abd", true, IDS(8, 6)}, {"xyz", true, IDS(0)},
    };
    static const variant_case plain[] = {
        {"abd", true, IDS(5, 4)},
        {"zzz abd", true, IDS(0, 0, 0, 7, 5, 4)},
        {"<|x|>abd", true, IDS(8, 5, 4)},
    };
    const struct {
        const variant_case *cases;
        size_t n;
        bool on;
    } runs[] = {{fused, 6, true}, {plain, 3, false}};
    for (size_t r = 0; r < 2; r++) {
        lp_tokenizer *tok = mini_tokenizer(runs[r].on, runs[r].on);
        for (size_t i = 0; i < runs[r].n; i++) {
            int32_t *ids;
            size_t n;
            encode_ok(tok, runs[r].cases[i].text, strlen(runs[r].cases[i].text), true, &ids, &n);
            assert_true(ids_equal(ids, n, runs[r].cases[i].ids, runs[r].cases[i].n, runs[r].cases[i].text));
            free(ids);
        }
        lp_tokenizer_free(tok);
    }
}

/* ---- UTF-8 handling and streaming ---- */

static void test_invalid_utf8(void **state) {
    (void)state;
    static const char *const bad[] = {"\xff", "ok\xc0\xaf", "\xed\xa0\x80", "caf\xc3", "\xf4\x90\x80\x80", "a\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        lp_err_clear();
        assert_int_equal(lp_tokenizer_encode(qwen3_tok, bad[i], strlen(bad[i]), true, &ids, &n), -1);
        assert_null(ids);
        assert_int_equal(n, 0);
        assert_non_null(strstr(lp_errmsg(), "UTF-8"));
    }
    int32_t *ids;
    size_t n;
    assert_int_equal(lp_tokenizer_encode(qwen3_tok, "", 0, true, &ids, &n), 0);
    assert_int_equal(n, 0);
    free(ids);
    /* NUL bytes are text like any other */
    encode_ok(qwen3_tok, "a\0b", 3, true, &ids, &n);
    size_t len;
    char *back = lp_tokenizer_decode_len(qwen3_tok, ids, n, false, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(back, "a\0b", 3);
    free(back);
    free(ids);
    int32_t bogus[] = {9707, 999999, 151700, -3, 1879}; /* ids with no token decode to nothing, as in HF */
    back = lp_tokenizer_decode(qwen3_tok, bogus, 5, false);
    assert_string_equal(back, "Hello world");
    free(back);
}

static void test_streaming_pieces(void **state) {
    (void)state;
    const char *text = "emoji \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd family \xe4\xbd\xa0\xe5\xa5\xbd";
    int32_t *ids;
    size_t n;
    encode_ok(qwen3_tok, text, strlen(text), true, &ids, &n);
    /* A streaming printer: append each token's bytes, print only the stable prefix. */
    char stream[256], printed[256];
    size_t have = 0, shown = 0;
    bool some_token_splits_a_char = false;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *b = lp_tokenizer_token_bytes(qwen3_tok, ids[i], &len);
        assert_non_null(b);
        assert_true(have + len < sizeof stream);
        memcpy(stream + have, b, len);
        have += len;
        size_t stable = lp_utf8_stable_len(stream, have);
        some_token_splits_a_char |= stable < have;
        memcpy(printed + shown, stream + shown, stable - shown);
        shown = stable;
        char *dec = lp_tokenizer_decode(qwen3_tok, &ids[i], 1, false);
        if (lp_utf8_stable_len(b, len) < len || (len && (unsigned char)b[0] >= 0x80 && (unsigned char)b[0] < 0xC0))
            assert_non_null(strstr(dec, "\xef\xbf\xbd")); /* a lone fragment decodes to U+FFFD */
        free(dec);
    }
    assert_true(some_token_splits_a_char);
    assert_int_equal(shown, strlen(text));
    assert_memory_equal(printed, text, shown);
    free(ids);
    assert_int_equal(lp_utf8_stable_len("ab\xf0\x9f", 4), 2);
    assert_int_equal(lp_utf8_stable_len("ab\xf0\x9f\x91", 5), 2);
    assert_int_equal(lp_utf8_stable_len("ab\xf0\x9f\x91\x8b", 6), 6);
    assert_int_equal(lp_utf8_stable_len("ab\xe4", 3), 2);
    assert_int_equal(lp_utf8_stable_len("ab\xff", 3), 3);     /* never valid: let it through */
    assert_int_equal(lp_utf8_stable_len("ab\xc0", 3), 3);     /* overlong lead */
    assert_int_equal(lp_utf8_stable_len("ab\xe0\x80", 4), 4); /* bad second byte */
    assert_int_equal(lp_utf8_stable_len("", 0), 0);
}

/* ---- size and speed guards ---- */

static void test_long_inputs(void **state) {
    (void)state;
    size_t n_a = 200000;
    char *as = malloc(n_a);
    memset(as, 'a', n_a);
    int32_t *ids;
    size_t n;
    double t0 = now_s();
    encode_ok(fixture_tok, as, n_a, false, &ids, &n); /* one 200k-letter word */
    double dt = now_s() - t0;
    assert_int_equal(n, n_a / 2); /* the 100-'a' reference is 50 x 6622 */
    for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], 6622);
    free(ids);
    printf("200k-letter word: %.3f s\n", dt);
    assert_true(dt < 5.0); /* quadratic would take minutes */
    memset(as, ' ', n_a);
    encode_ok(qwen3_tok, as, n_a, false, &ids, &n);
    char *back = lp_tokenizer_decode(qwen3_tok, ids, n, false);
    assert_int_equal(strlen(back), n_a);
    free(back);
    free(ids);
    free(as);
}

typedef struct {
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
    int rc;
} thread_job;

static void *encode_thread(void *arg) {
    thread_job *job = arg;
    job->rc = lp_tokenizer_encode(qwen3_tok, job->text, job->len, true, &job->ids, &job->n);
    return NULL;
}

static void test_concurrent_encode(void **state) {
    (void)state;
    size_t len;
    char *text = lp_read_file(LP_FIXTURES_DIR "/calib.txt", &len);
    assert_non_null(text);
    len = len > 200000 ? 200000 : len;
    while (len && ((unsigned char)text[len] & 0xC0) == 0x80) len--; /* cut on a character boundary */
    thread_job jobs[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        jobs[i] = (thread_job){.text = text, .len = len};
        assert_int_equal(pthread_create(&th[i], NULL, encode_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(jobs[i].rc, 0);
        assert_true(ids_equal(jobs[i].ids, jobs[i].n, jobs[0].ids, jobs[0].n, "thread"));
    }
    for (int i = 0; i < 3; i++) free(jobs[i].ids);
    free(text);
}

/* ---- bad input: NULL and a message, never a crash ---- */

static void expect_load_fails(const char *json, size_t len, const char *needle) {
    lp_err_clear();
    lp_tokenizer *tok = lp_tokenizer_load_json_mem(json, len, "bad.json");
    if (tok) fail_msg("loaded although it should not: %.80s", json);
    assert_true(strlen(lp_errmsg()) > 0);
    if (needle && !strstr(lp_errmsg(), needle)) fail_msg("error '%s' lacks '%s'", lp_errmsg(), needle);
}

static char *mini_with(const char *from, const char *to) {
    char *json = mini_json(false, false);
    char *at = strstr(json, from);
    assert_non_null(at);
    char *out = lp_xasprintf("%.*s%s%s", (int)(at - json), json, to, at + strlen(from));
    free(json);
    return out;
}

static void test_bad_json(void **state) {
    (void)state;
    static const char *const broken[] = {"", "{", "[]", "{\"model\":{}}", "{\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}",
                                         "{\"model\":{\"vocab\":{\"a\":\"x\"},\"merges\":[]}}", "nul", "{\"a\":[[[[[[[["};
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) expect_load_fails(broken[i], strlen(broken[i]), NULL);
    const struct {
        const char *from, *to, *needle;
    } edits[] = {
        {"\"merges\":[\"a b\"]", "\"merges\":[\"a q\"]", "not in the vocabulary"},
        {"\"merges\":[\"a b\"]", "\"merges\":[\"ab\"]", "left right"},
        {"\"normalizer\":null", "\"normalizer\":{\"type\":\"Lowercase\"}", "normalizer"},
        {"\"type\":\"BPE\"", "\"type\":\"WordPiece\"", "model.type"},
        {"\"dropout\":null", "\"dropout\":0.1", "dropout"},
        {"\"behavior\":\"Isolated\"", "\"behavior\":\"Contiguous\"", "behavior"},
        {"\"Regex\":\"(?i:", "\"Regex\":\"(?i:(", "regex"},
        {"\"decoder\":{\"type\":\"ByteLevel\"", "\"decoder\":{\"type\":\"WordPiece\"", "decoder"},
        {"\"\\u0120\":7", "\"\\u0120\":-7", "out of range"},
        {"\"\\u0120\":7", "\"\\u0120\":99999999999", "out of range"},
        {"\"\\u0120\":7", "\"\\ud800\":7", "surrogate"},
        {"\"id\":8", "\"id\":\"8\"", "added_tokens"},
        {"{\"type\":\"ByteLevel\",\"add_prefix_space\":false,", "{\"type\":\"Whitespace\",\"add_prefix_space\":false,",
         "not supported"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char *json = mini_with(edits[i].from, edits[i].to);
        expect_load_fails(json, strlen(json), edits[i].needle);
        free(json);
    }
    /* Every prefix of a real file fails cleanly (sampled). */
    size_t len;
    char *full = lp_read_file(FIXTURE_TOKENIZER, &len);
    assert_non_null(full);
    for (size_t cut = 0; cut < len - 2; cut += len / 97 + 1) expect_load_fails(full, cut, NULL);
    free(full);
    lp_err_clear();
    assert_null(lp_tokenizer_load_json("/nonexistent/tokenizer.json"));
    assert_true(strlen(lp_errmsg()) > 0);
}

static void test_bad_vocab_arrays(void **state) {
    (void)state;
    const char *tokens[] = {"a", "b", "ab", "<|e|>"};
    int32_t types[] = {1, 1, 1, 3};
    const char *merges[] = {"a b"};
    lp_tokenizer *tok = lp_tokenizer_from_vocab(tokens, 4, types, merges, 1, "qwen2");
    assert_non_null(tok);
    int32_t *ids;
    size_t n;
    encode_ok(tok, "ab<|e|>", 7, true, &ids, &n);
    assert_true(ids_equal(ids, n, (int32_t[]){2, 3}, 2, "tiny from_vocab"));
    free(ids);
    assert_true(lp_tokenizer_is_special(tok, 3));
    lp_tokenizer_free(tok);
    lp_err_clear();
    assert_null(lp_tokenizer_from_vocab(tokens, 4, types, merges, 1, "no-such-pre"));
    assert_non_null(strstr(lp_errmsg(), "no-such-pre"));
    const char *bad_merge[] = {"a c"};
    assert_null(lp_tokenizer_from_vocab(tokens, 4, types, bad_merge, 1, "qwen2"));
    const char *no_space[] = {"ab"};
    assert_null(lp_tokenizer_from_vocab(tokens, 4, types, no_space, 1, "qwen2"));
    int32_t bad_types[] = {1, 1, 9, 3};
    assert_null(lp_tokenizer_from_vocab(tokens, 4, bad_types, merges, 1, "qwen2"));
    const char *holes[] = {"a", NULL};
    assert_null(lp_tokenizer_from_vocab(holes, 2, NULL, NULL, 0, "qwen2"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_refs),
        cmocka_unit_test(test_qwen3_refs),
        cmocka_unit_test(test_from_vocab_matches_json),
        cmocka_unit_test(test_gguf_export),
        cmocka_unit_test(test_vocab_queries),
        cmocka_unit_test(test_eval_txt_and_prompts),
        cmocka_unit_test(test_parse_special_off),
        cmocka_unit_test(test_variant_llama3),
        cmocka_unit_test(test_variant_gpt4o),
        cmocka_unit_test(test_variant_gpt2),
        cmocka_unit_test(test_variant_split_behaviors),
        cmocka_unit_test(test_variant_added_flags),
        cmocka_unit_test(test_mini_ignore_merges_unk),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_streaming_pieces),
        cmocka_unit_test(test_long_inputs),
        cmocka_unit_test(test_concurrent_encode),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_vocab_arrays),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
