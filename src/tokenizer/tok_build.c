/* tok_build.c — assembling an lp_tokenizer: the builder calls both loaders share
 * (vocab entries, merges, added tokens, regex steps), the finishing pass that derives
 * lookup tables, and freeing. */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "tokenizer/tok_internal.h"

/* Ids beyond this are rejected: real vocabularies stay far below, and a corrupt id must
 * not turn into a multi-gigabyte allocation. */
#define TOK_MAX_ID (1 << 24)

lp_tokenizer *tok_alloc(void) {
    lp_tokenizer *tok = lp_xcalloc(1, sizeof *tok);
    tok->unk_id = -1;
    return tok;
}

/* The entry for id, growing the table as needed; NULL (and an error) if id is out of range. */
static tok_entry *entry_for_id(lp_tokenizer *tok, int64_t id, const char *what) {
    if (id < 0 || id >= TOK_MAX_ID) {
        lp_fail("%s: token id %lld out of range", what, (long long)id);
        return NULL;
    }
    size_t need = (size_t)id + 1;
    if (need > tok->cap_ent) {
        size_t cap = tok->cap_ent ? tok->cap_ent : 1024;
        while (cap < need) cap *= 2;
        tok->ent = lp_xrealloc(tok->ent, cap * sizeof *tok->ent);
        memset(tok->ent + tok->cap_ent, 0, (cap - tok->cap_ent) * sizeof *tok->ent);
        tok->cap_ent = cap;
    }
    if (need > tok->n_ent) tok->n_ent = need;
    return &tok->ent[id];
}

static void entry_set_text(lp_tokenizer *tok, tok_entry *e, const char *text, size_t len) {
    e->text_off = (uint32_t)tok->text.n;
    e->text_len = (uint32_t)len;
    tok_buf_put(&tok->text, text, len);
    tok_buf_putc(&tok->text, 0);
    e->has_text = true;
}

int tok_set_vocab(lp_tokenizer *tok, int64_t id, const char *text, size_t len, uint8_t type,
                  const char *what) {
    tok_entry *e = entry_for_id(tok, id, what);
    if (!e) return -1;
    if (e->type) return lp_fail("%s: token id %lld used twice", what, (long long)id);
    entry_set_text(tok, e, text, len);
    e->type = type;
    return 0;
}

static bool entry_in_model_vocab(const tok_entry *e) { return e->type && e->type != LP_TOKEN_UNUSED && !e->added; }

void tok_index_vocab(lp_tokenizer *tok) {
    tok_map_init(&tok->vocab_map, tok->n_ent);
    for (size_t id = 0; id < tok->n_ent; id++) {
        const tok_entry *e = &tok->ent[id];
        if (entry_in_model_vocab(e)) tok_map_put(&tok->vocab_map, &tok->text, e->text_off, e->text_len, (int32_t)id);
    }
}

int tok_add_merge(lp_tokenizer *tok, const char *left, size_t llen, const char *right, size_t rlen,
                  const char *what) {
    size_t rank = tok->n_merges;
    int32_t l = tok_map_get(&tok->vocab_map, &tok->text, left, llen);
    int32_t r = tok_map_get(&tok->vocab_map, &tok->text, right, rlen);
    char small[256];
    char *joined = llen + rlen <= sizeof small ? small : lp_xmalloc(llen + rlen);
    memcpy(joined, left, llen);
    memcpy(joined + llen, right, rlen);
    int32_t m = tok_map_get(&tok->vocab_map, &tok->text, joined, llen + rlen);
    if (joined != small) free(joined);
    if (l < 0 || r < 0 || m < 0) {
        const char *part = l < 0 ? left : r < 0 ? right : "(their concatenation)";
        int plen = (int)(l < 0 ? llen : r < 0 ? rlen : strlen(part));
        return lp_fail("%s[%zu]: '%.*s' is not in the vocabulary", what, rank, plen > 200 ? 200 : plen, part);
    }
    if (rank >= UINT32_MAX - 1) return lp_fail("%s: too many merges", what);
    tok_merge_put(tok, l, r, (uint32_t)rank, m);
    if (tok->n_merges == tok->cap_merges) {
        tok->cap_merges = tok->cap_merges ? tok->cap_merges * 2 : 4096;
        tok->merge_pair = lp_xrealloc(tok->merge_pair, tok->cap_merges * sizeof *tok->merge_pair);
    }
    tok->merge_pair[rank][0] = l;
    tok->merge_pair[rank][1] = r;
    tok->n_merges++;
    return 0;
}

bool tok_looks_special(const char *t, size_t n) {
    static const char *const named[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (n == strlen(named[i]) && memcmp(t, named[i], n) == 0) return true;
#define HAS_ENDS(a, z) (n >= strlen(a) + strlen(z) && memcmp(t, a, strlen(a)) == 0 && memcmp(t + n - strlen(z), z, strlen(z)) == 0)
    return HAS_ENDS("<|", "|>") || HAS_ENDS("<\xef\xbd\x9c", "\xef\xbd\x9c>") /* <｜..｜> */ ||
           HAS_ENDS("<unused", ">");
#undef HAS_ENDS
}

int tok_add_added(lp_tokenizer *tok, int64_t id, const char *content, size_t len, const tok_added *flags,
                  uint8_t type, const char *what) {
    tok_entry *e = entry_for_id(tok, id, what);
    if (!e) return -1;
    /* An added token may repeat a vocab entry (same text) or override its id's text. */
    if (!e->has_text || e->text_len != len || memcmp(tok->text.p + e->text_off, content, len) != 0)
        entry_set_text(tok, e, content, len);
    e->special = flags->special;
    e->type = type ? type : flags->special || tok_looks_special(content, len) ? LP_TOKEN_CONTROL : LP_TOKEN_USER_DEFINED;
    tok_added a = *flags;
    a.id = (int32_t)id;
    if (e->added) { /* listed twice: the later flags win */
        for (size_t i = 0; i < tok->n_added; i++)
            if (tok->added[i].id == a.id) tok->added[i] = a;
        return 0;
    }
    e->added = true;
    if (tok->n_added == tok->cap_added) {
        tok->cap_added = tok->cap_added ? tok->cap_added * 2 : 32;
        tok->added = lp_xrealloc(tok->added, tok->cap_added * sizeof *tok->added);
    }
    tok->added[tok->n_added++] = a;
    return 0;
}

static void push_step(lp_tokenizer *tok, tok_step step) {
    tok->steps = lp_xrealloc(tok->steps, (tok->n_steps + 1) * sizeof *tok->steps);
    tok->steps[tok->n_steps++] = step;
}

int tok_add_split(lp_tokenizer *tok, const char *pattern, bool literal, int behavior, const char *what) {
    int err;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return lp_fail("%s: regex does not compile at offset %zu: %s", what, (size_t)off, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter is the fallback */
    push_step(tok, (tok_step){re, lp_xstrdup(pattern), behavior});
    return 0;
}

void tok_add_prefix_space(lp_tokenizer *tok) { push_step(tok, (tok_step){NULL, NULL, 0}); }

/* ---- finishing ---- */

/* HF's ByteLevel decoder: a token's symbols map back to bytes; a token holding any other
 * character (possible only for added tokens) stands for its own UTF-8 text instead. */
static void entry_set_bytes(lp_tokenizer *tok, tok_entry *e) {
    const uint8_t *t = (const uint8_t *)tok->text.p + e->text_off;
    size_t start = tok->bytes.n;
    for (size_t i = 0; i < e->text_len;) {
        uint32_t cp;
        int len = tok_utf8_next(t + i, e->text_len - i, &cp);
        int b = len > 0 ? tok_cp_to_byte(cp) : -1;
        if (b < 0) {
            tok->bytes.n = start;
            tok_buf_put(&tok->bytes, t, e->text_len);
            break;
        }
        tok_buf_putc(&tok->bytes, (char)b);
        i += (size_t)len;
    }
    e->bytes_off = (uint32_t)start;
    e->bytes_len = (uint32_t)(tok->bytes.n - start);
}

typedef struct {
    uint8_t first;
    uint32_t len, index;
} match_key;

static int match_key_cmp(const void *pa, const void *pb) {
    const match_key *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

static void build_matcher(lp_tokenizer *tok, tok_matcher *m, bool normalized) {
    match_key *keys = lp_xmalloc((tok->n_added + 1) * sizeof *keys);
    size_t n = 0;
    for (size_t i = 0; i < tok->n_added; i++) {
        const tok_entry *e = &tok->ent[tok->added[i].id];
        if (tok->added[i].normalized != normalized || e->text_len == 0) continue;
        keys[n++] = (match_key){(uint8_t)tok->text.p[e->text_off], e->text_len, (uint32_t)i};
    }
    qsort(keys, n, sizeof *keys, match_key_cmp);
    m->order = lp_xmalloc((n + 1) * sizeof *m->order);
    size_t k = 0;
    for (int b = 0; b < 256; b++) {
        m->first[b] = (uint32_t)k;
        while (k < n && keys[k].first == b) m->order[k] = keys[k].index, k++;
    }
    m->first[256] = (uint32_t)k;
    free(keys);
}

int tok_finish(lp_tokenizer *tok, const char *what) {
    if (tok->n_ent == 0) return lp_fail("%s: empty vocabulary", what);
    tok_map_init(&tok->added_map, tok->n_added);
    for (size_t i = 0; i < tok->n_added; i++) {
        const tok_entry *e = &tok->ent[tok->added[i].id];
        tok_map_put(&tok->added_map, &tok->text, e->text_off, e->text_len, tok->added[i].id);
    }
    tok_buf sym = {0};
    for (int b = 0; b < 256; b++) {
        sym.n = 0;
        char c = (char)b;
        tok_bytes_to_symbols(&sym, &c, 1);
        tok->byte_id[b] = tok_map_get(&tok->vocab_map, &tok->text, sym.p, sym.n);
    }
    free(sym.p);
    for (size_t id = 0; id < tok->n_ent; id++)
        if (tok->ent[id].has_text) entry_set_bytes(tok, &tok->ent[id]);
    build_matcher(tok, &tok->match_raw, false);
    build_matcher(tok, &tok->match_norm, true);
    return 0;
}

void lp_tokenizer_free(lp_tokenizer *tok) {
    if (!tok) return;
    free(tok->ent);
    free(tok->text.p);
    free(tok->bytes.p);
    tok_map_free(&tok->vocab_map);
    tok_map_free(&tok->added_map);
    free(tok->merge_tab);
    free(tok->merge_pair);
    free(tok->added);
    free(tok->match_raw.order);
    free(tok->match_norm.order);
    for (size_t i = 0; i < tok->n_steps; i++) {
        pcre2_code_free(tok->steps[i].re);
        free(tok->steps[i].pattern);
    }
    free(tok->steps);
    free(tok);
}
