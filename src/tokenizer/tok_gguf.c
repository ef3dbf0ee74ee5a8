/* tok_gguf.c — the tokenizer from GGUF metadata arrays (tokenizer.ggml.tokens /
 * token_type / merges / pre), and the reverse question: which tokenizer.ggml.pre value
 * reproduces a tokenizer.json. Both rest on one table of known pre-tokenizers. */
#include <string.h>

#include "core/err.h"
#include "tokenizer/tok_internal.h"

/* The regexes are the tokenizer.json originals (llama.cpp's copies spell the contraction
 * group as '[sS]|'[tT]... because its engine lacks (?i:); PCRE2 has it, and keeping the
 * originals makes a GGUF round trip tokenize exactly like the JSON it came from). */
#define RE_QWEN2                                                                                             \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s+(?!\\S)|\\s+"
#define RE_LLAMA3                                                                                          \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_GPT4O                                                                                              \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"                 \
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* HF ByteLevel pre-tokenizer's own regex (use_regex: true), i.e. GPT-2's. */
const char tok_gpt2_regex[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct {
    const char *names[4]; /* first one is what lp_tokenizer_pre_name reports */
    const char *regex;
    bool nfc, ignore_merges;
} tok_pre;

static const tok_pre known_pre[] = {
    {{"qwen2"}, RE_QWEN2, true, false},
    {{"llama-bpe", "llama3", "llama-v3"}, RE_LLAMA3, false, true},
    {{"gpt-4o", "llama4"}, RE_GPT4O, false, false},
    {{"gpt2"}, tok_gpt2_regex, false, false},
};

static const tok_pre *pre_by_name(const char *name) {
    for (size_t i = 0; i < sizeof known_pre / sizeof known_pre[0]; i++)
        for (size_t k = 0; k < 4 && known_pre[i].names[k]; k++)
            if (strcmp(known_pre[i].names[k], name) == 0) return &known_pre[i];
    return NULL;
}

const char *lp_tokenizer_pre_name(const lp_tokenizer *tok) {
    if (tok->n_steps != 1 || !tok->steps[0].re || tok->steps[0].behavior != TOK_SPLIT_ISOLATED) return NULL;
    for (size_t i = 0; i < sizeof known_pre / sizeof known_pre[0]; i++) {
        const tok_pre *p = &known_pre[i];
        if (strcmp(p->regex, tok->steps[0].pattern) == 0 && p->nfc == tok->nfc && p->ignore_merges == tok->ignore_merges)
            return p->names[0];
    }
    return NULL;
}

/* "left right": the separator is the first space after the first byte, as llama.cpp reads it. */
static int add_merge_line(lp_tokenizer *tok, const char *line, size_t rank) {
    const char *sp = line[0] ? strchr(line + 1, ' ') : NULL;
    if (!sp || !sp[1]) return lp_fail("tokenizer.ggml.merges[%zu]: '%.100s' is not \"left right\"", rank, line);
    return tok_add_merge(tok, line, (size_t)(sp - line), sp + 1, strlen(sp + 1), "tokenizer.ggml.merges");
}

static bool type_is_added(int32_t type) { return type == LP_TOKEN_CONTROL || type == LP_TOKEN_USER_DEFINED; }

lp_tokenizer *lp_tokenizer_from_vocab(const char *const *tokens, size_t n_tokens, const int32_t *token_types,
                                      const char *const *merges, size_t n_merges, const char *pre) {
    const tok_pre *p = pre_by_name(pre ? pre : "");
    if (!p) {
        lp_fail("tokenizer.ggml.pre: '%s' not supported (known: qwen2, llama-bpe, gpt-4o, gpt2)", pre ? pre : "");
        return NULL;
    }
    lp_tokenizer *tok = tok_alloc();
    tok->nfc = p->nfc;
    tok->ignore_merges = p->ignore_merges;
    for (size_t id = 0; id < n_tokens; id++) {
        int32_t type = token_types ? token_types[id] : LP_TOKEN_NORMAL;
        if (!tokens[id]) {
            lp_fail("tokenizer.ggml.tokens[%zu]: missing", id);
            goto fail;
        }
        if (type < LP_TOKEN_NORMAL || type > LP_TOKEN_BYTE) {
            lp_fail("tokenizer.ggml.token_type[%zu]: %d is no token type", id, (int)type);
            goto fail;
        }
        if (!type_is_added(type) &&
            tok_set_vocab(tok, (int64_t)id, tokens[id], strlen(tokens[id]), (uint8_t)type, "tokenizer.ggml.tokens"))
            goto fail;
    }
    tok_index_vocab(tok);
    for (size_t r = 0; r < n_merges; r++)
        if (!merges[r] || add_merge_line(tok, merges[r], r)) goto fail;
    /* GGUF keeps no lstrip/rstrip/normalized flags: added tokens match their raw text. */
    for (size_t id = 0; id < n_tokens; id++) {
        int32_t type = token_types ? token_types[id] : LP_TOKEN_NORMAL;
        tok_added flags = {.special = type == LP_TOKEN_CONTROL};
        if (type_is_added(type) &&
            tok_add_added(tok, (int64_t)id, tokens[id], strlen(tokens[id]), &flags, (uint8_t)type, "tokenizer.ggml.tokens"))
            goto fail;
    }
    if (tok_add_split(tok, p->regex, false, TOK_SPLIT_ISOLATED, "tokenizer.ggml.pre") ||
        tok_finish(tok, "tokenizer.ggml.tokens"))
        goto fail;
    return tok;
fail:
    lp_tokenizer_free(tok);
    return NULL;
}
