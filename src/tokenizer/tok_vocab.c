/* tok_vocab.c — read-only questions about a loaded tokenizer's vocabulary (lookups by id
 * and by text, token types) and the GGUF export of its tokens and merges. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "tokenizer/tok_internal.h"

static const tok_entry *entry(const lp_tokenizer *tok, int32_t id) {
    if (id < 0 || (size_t)id >= tok->n_ent || !tok->ent[id].type) return NULL;
    return &tok->ent[id];
}

size_t lp_tokenizer_n_vocab(const lp_tokenizer *tok) { return tok->n_ent; }

size_t lp_tokenizer_n_merges(const lp_tokenizer *tok) { return tok->n_merges; }

int32_t lp_tokenizer_find(const lp_tokenizer *tok, const char *text) {
    size_t n = strlen(text);
    int32_t id = tok_map_get(&tok->added_map, &tok->text, text, n);
    return id >= 0 ? id : tok_map_get(&tok->vocab_map, &tok->text, text, n);
}

bool lp_tokenizer_is_special(const lp_tokenizer *tok, int32_t id) {
    const tok_entry *e = entry(tok, id);
    return e && e->special;
}

const char *lp_tokenizer_token_text(const lp_tokenizer *tok, int32_t id) {
    const tok_entry *e = entry(tok, id);
    return e && e->has_text ? tok->text.p + e->text_off : NULL;
}

int lp_tokenizer_token_type(const lp_tokenizer *tok, int32_t id) {
    const tok_entry *e = entry(tok, id);
    return e ? e->type : LP_TOKEN_UNUSED;
}

const char *lp_tokenizer_token_bytes(const lp_tokenizer *tok, int32_t id, size_t *len) {
    const tok_entry *e = entry(tok, id);
    if (!e || !e->has_text || e->type == LP_TOKEN_UNUSED) { /* [PADn] rows stand for no text */
        *len = 0;
        return NULL;
    }
    *len = e->bytes_len;
    return tok->bytes.p + e->bytes_off;
}

int lp_tokenizer_export_vocab(const lp_tokenizer *tok, size_t pad_to, char ***tokens, int32_t **types,
                              size_t *n) {
    size_t count = tok->n_ent > pad_to ? tok->n_ent : pad_to;
    if (count > INT32_MAX) return lp_fail("tokenizer export: vocabulary size %zu too large", count);
    char **text = lp_xmalloc(count * sizeof *text);
    int32_t *type = lp_xmalloc(count * sizeof *type);
    for (size_t id = 0; id < count; id++) {
        const char *t = lp_tokenizer_token_text(tok, (int32_t)id);
        text[id] = t ? lp_xstrdup(t) : lp_xasprintf("[PAD%zu]", id);
        type[id] = lp_tokenizer_token_type(tok, (int32_t)id);
    }
    *tokens = text;
    *types = type;
    *n = count;
    return 0;
}

int lp_tokenizer_export_merges(const lp_tokenizer *tok, char ***merges, size_t *n) {
    char **out = lp_xmalloc((tok->n_merges + 1) * sizeof *out);
    for (size_t r = 0; r < tok->n_merges; r++) {
        const tok_entry *l = &tok->ent[tok->merge_pair[r][0]], *rt = &tok->ent[tok->merge_pair[r][1]];
        out[r] = lp_xasprintf("%s %s", tok->text.p + l->text_off, tok->text.p + rt->text_off);
    }
    *merges = out;
    *n = tok->n_merges;
    return 0;
}

void lp_tokenizer_free_strings(char **strs, size_t n) {
    if (!strs) return;
    for (size_t i = 0; i < n; i++) free(strs[i]);
    free(strs);
}
