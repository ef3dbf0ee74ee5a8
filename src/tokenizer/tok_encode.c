/* tok_encode.c — text to token ids, in Hugging Face's order: added tokens matched on the
 * raw text, NFC on what lies between them, added tokens marked `normalized` matched on
 * that, regex pre-tokenizer steps, then byte-level BPE per word.
 *
 * BPE merges run over a linked list of symbols with a binary heap of candidate pairs
 * (lowest rank first, leftmost on ties), O(n log n) per word; a per-call word cache
 * skips repeated words. Everything mutable lives in the per-call `enc` state, so one
 * tokenizer serves many threads. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/err.h"
#include "tokenizer/tok_internal.h"

#define WORD_CACHE_MAX_LEN 256 /* longer words are rare and not worth keeping */

typedef struct {
    uint32_t hash, key_off, key_len, ids_off, ids_len; /* key_len == UINT32_MAX: empty */
} cache_slot;

typedef struct {
    cache_slot *slot;
    size_t mask, count;
    tok_buf keys;
    int32_t *ids;
    size_t n_ids, cap_ids;
} word_cache;

typedef struct {
    int32_t id, prev, next; /* id -1: merged into its left neighbour */
} bpe_sym;

typedef struct {
    uint32_t rank, pos;
    int32_t merged;
} bpe_cand;

typedef struct {
    const lp_tokenizer *tok;
    bool parse_special;
    int32_t *out;
    size_t n_out, cap_out;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    word_cache cache;
    bpe_sym *sym;
    size_t cap_sym;
    bpe_cand *heap;
    size_t n_heap, cap_heap;
    tok_buf symbols; /* byte-level spelling of a word, for ignore_merges */
} enc;

static void emit(enc *e, const int32_t *ids, size_t n) {
    if (e->n_out + n > e->cap_out) {
        size_t cap = e->cap_out ? e->cap_out : 64;
        while (cap < e->n_out + n) cap *= 2;
        e->out = lp_xrealloc(e->out, cap * sizeof *e->out);
        e->cap_out = cap;
    }
    memcpy(e->out + e->n_out, ids, n * sizeof *ids);
    e->n_out += n;
}

/* ---- word cache ---- */

static void cache_resize(word_cache *c, size_t cap) {
    cache_slot *old = c->slot;
    size_t old_cap = old ? c->mask + 1 : 0;
    c->slot = lp_xmalloc(cap * sizeof *c->slot);
    c->mask = cap - 1;
    for (size_t i = 0; i < cap; i++) c->slot[i].key_len = UINT32_MAX;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].key_len == UINT32_MAX) continue;
        size_t k = old[i].hash & c->mask;
        while (c->slot[k].key_len != UINT32_MAX) k = (k + 1) & c->mask;
        c->slot[k] = old[i];
    }
    free(old);
}

/* The slot holding word s, or the empty slot where it would go. */
static cache_slot *cache_find(word_cache *c, const char *s, size_t n, uint32_t h) {
    for (size_t i = h & c->mask;; i = (i + 1) & c->mask) {
        cache_slot *sl = &c->slot[i];
        if (sl->key_len == UINT32_MAX) return sl;
        if (sl->hash == h && sl->key_len == n && memcmp(c->keys.p + sl->key_off, s, n) == 0) return sl;
    }
}

static void cache_put(word_cache *c, const char *s, size_t n, uint32_t h, const int32_t *ids, size_t n_ids) {
    if (!c->slot || (c->count + 1) * 2 > c->mask + 1) cache_resize(c, c->slot ? (c->mask + 1) * 2 : 4096);
    cache_slot *sl = cache_find(c, s, n, h);
    if (sl->key_len != UINT32_MAX) return;
    if (c->n_ids + n_ids > c->cap_ids) {
        size_t cap = c->cap_ids ? c->cap_ids : 4096;
        while (cap < c->n_ids + n_ids) cap *= 2;
        c->ids = lp_xrealloc(c->ids, cap * sizeof *c->ids);
        c->cap_ids = cap;
    }
    memcpy(c->ids + c->n_ids, ids, n_ids * sizeof *ids);
    *sl = (cache_slot){h, (uint32_t)c->keys.n, (uint32_t)n, (uint32_t)c->n_ids, (uint32_t)n_ids};
    tok_buf_put(&c->keys, s, n);
    c->n_ids += n_ids;
    c->count++;
}

/* ---- BPE ---- */

static bool cand_less(const bpe_cand *a, const bpe_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(enc *e, bpe_cand c) {
    if (e->n_heap == e->cap_heap) {
        e->cap_heap = e->cap_heap ? e->cap_heap * 2 : 64;
        e->heap = lp_xrealloc(e->heap, e->cap_heap * sizeof *e->heap);
    }
    size_t i = e->n_heap++;
    while (i > 0 && cand_less(&c, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = c;
}

static bpe_cand heap_pop(enc *e) {
    bpe_cand top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0;
    for (;;) {
        size_t kid = 2 * i + 1;
        if (kid >= e->n_heap) break;
        if (kid + 1 < e->n_heap && cand_less(&e->heap[kid + 1], &e->heap[kid])) kid++;
        if (!cand_less(&e->heap[kid], &last)) break;
        e->heap[i] = e->heap[kid];
        i = kid;
    }
    if (e->n_heap) e->heap[i] = last;
    return top;
}

static void push_pair(enc *e, int32_t left_pos) {
    const bpe_sym *l = &e->sym[left_pos];
    if (l->next < 0) return;
    uint32_t rank;
    int32_t merged = tok_merge_get(e->tok, l->id, e->sym[l->next].id, &rank);
    if (merged >= 0) heap_push(e, (bpe_cand){rank, (uint32_t)left_pos, merged});
}

/* One symbol per byte (HF: per byte-level character); bytes without a symbol become
 * unk_id (fused if asked) or vanish, as in HF's BPE. Returns the symbol count. */
static size_t init_symbols(enc *e, const char *s, size_t n) {
    const lp_tokenizer *tok = e->tok;
    if (n > e->cap_sym) {
        e->cap_sym = n;
        e->sym = lp_xrealloc(e->sym, n * sizeof *e->sym);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok->byte_id[(uint8_t)s[i]];
        if (id < 0) {
            if (tok->unk_id < 0) continue;
            if (tok->fuse_unk && k > 0 && e->sym[k - 1].id == tok->unk_id) continue;
            id = tok->unk_id;
        }
        e->sym[k] = (bpe_sym){id, (int32_t)k - 1, (int32_t)k + 1};
        k++;
    }
    if (k) e->sym[k - 1].next = -1;
    return k;
}

static void bpe_merge(enc *e, size_t n_sym) {
    e->n_heap = 0;
    for (size_t i = 0; i + 1 < n_sym; i++) push_pair(e, (int32_t)i);
    while (e->n_heap) {
        bpe_cand c = heap_pop(e);
        bpe_sym *l = &e->sym[c.pos];
        if (l->id < 0 || l->next < 0) continue;
        uint32_t rank;
        if (tok_merge_get(e->tok, l->id, e->sym[l->next].id, &rank) != c.merged) continue; /* stale */
        bpe_sym *r = &e->sym[l->next];
        l->id = c.merged;
        l->next = r->next;
        if (r->next >= 0) e->sym[r->next].prev = (int32_t)c.pos;
        r->id = -1;
        if (l->prev >= 0) push_pair(e, l->prev);
        push_pair(e, (int32_t)c.pos);
    }
}

static void bpe_word(enc *e, const char *s, size_t n) {
    const lp_tokenizer *tok = e->tok;
    if (n == 1 && tok->byte_id[(uint8_t)s[0]] >= 0) { /* what BPE and ignore_merges both give */
        emit(e, &tok->byte_id[(uint8_t)s[0]], 1);
        return;
    }
    uint32_t h = 0;
    bool cacheable = n <= WORD_CACHE_MAX_LEN;
    if (cacheable) {
        h = tok_hash(s, n);
        if (e->cache.slot) {
            const cache_slot *sl = cache_find(&e->cache, s, n, h);
            if (sl->key_len != UINT32_MAX) {
                emit(e, e->cache.ids + sl->ids_off, sl->ids_len);
                return;
            }
        }
    }
    if (tok->ignore_merges) { /* a word that is itself in the vocabulary is kept whole */
        e->symbols.n = 0;
        tok_bytes_to_symbols(&e->symbols, s, n);
        int32_t id = tok_map_get(&tok->vocab_map, &tok->text, e->symbols.p, e->symbols.n);
        if (id >= 0) {
            emit(e, &id, 1);
            return;
        }
    }
    size_t n_sym = init_symbols(e, s, n);
    if (!n_sym) return;
    bpe_merge(e, n_sym);
    size_t first = e->n_out;
    for (int32_t i = 0; i >= 0; i = e->sym[i].next) emit(e, &e->sym[i].id, 1);
    if (cacheable) cache_put(&e->cache, s, n, h, e->out + first, e->n_out - first);
}

/* ---- pre-tokenizer steps ---- */

static int pretokenize(enc *e, size_t level, const char *s, size_t n);

static int regex_match(enc *e, const pcre2_code *re, const char *s, size_t n, size_t from, size_t *ms, size_t *me) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !e->jit_stack) { /* pathological input: retry with a big stack */
        e->jit_stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
        e->mctx = pcre2_match_context_create(NULL);
        if (!e->jit_stack || !e->mctx) return lp_fail("tokenizer: out of memory for the regex stack");
        pcre2_jit_stack_assign(e->mctx, NULL, e->jit_stack);
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return lp_fail("tokenizer: pre-tokenizer regex failed: %s", (const char *)msg);
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

static int split_step(enc *e, size_t level, const tok_step *step, const char *s, size_t n) {
    size_t pos = 0, last = 0, ms, me;
    for (;;) {
        int found = pos <= n ? regex_match(e, step->re, s, n, pos, &ms, &me) : 0;
        if (found < 0) return -1;
        if (!found) break;
        if (me == ms) { /* empty matches split nothing; step over one character */
            if (ms >= n) break;
            uint32_t cp;
            pos = ms + (size_t)tok_utf8_next((const uint8_t *)s + ms, n - ms, &cp);
            continue;
        }
        size_t cut_from = last, cut_to = ms; /* the piece before the match, if any */
        switch (step->behavior) {
        case TOK_SPLIT_ISOLATED:
            if (cut_to > cut_from && pretokenize(e, level + 1, s + cut_from, cut_to - cut_from)) return -1;
            if (pretokenize(e, level + 1, s + ms, me - ms)) return -1;
            last = me;
            break;
        case TOK_SPLIT_REMOVED:
            if (cut_to > cut_from && pretokenize(e, level + 1, s + cut_from, cut_to - cut_from)) return -1;
            last = me;
            break;
        case TOK_SPLIT_MERGED_WITH_PREVIOUS:
            if (pretokenize(e, level + 1, s + last, me - last)) return -1;
            last = me;
            break;
        case TOK_SPLIT_MERGED_WITH_NEXT:
            if (cut_to > cut_from && pretokenize(e, level + 1, s + cut_from, cut_to - cut_from)) return -1;
            last = ms;
            break;
        }
        pos = me;
    }
    return last < n ? pretokenize(e, level + 1, s + last, n - last) : 0;
}

static int pretokenize(enc *e, size_t level, const char *s, size_t n) {
    if (level == e->tok->n_steps) {
        bpe_word(e, s, n);
        return 0;
    }
    const tok_step *step = &e->tok->steps[level];
    if (step->re) return split_step(e, level, step, s, n);
    if (n && s[0] == ' ') return pretokenize(e, level + 1, s, n); /* ByteLevel add_prefix_space */
    char *spaced = lp_xmalloc(n + 1);
    spaced[0] = ' ';
    memcpy(spaced + 1, s, n);
    int rc = pretokenize(e, level + 1, spaced, n + 1);
    free(spaced);
    return rc;
}

/* ---- added tokens ---- */

typedef int (*piece_fn)(enc *e, const char *s, size_t n);

static uint32_t cp_before(const char *s, size_t at) {
    size_t i = at;
    while (i > 0 && ((uint8_t)s[i - 1] & 0xC0) == 0x80) i--;
    uint32_t cp = 0;
    if (i > 0) tok_utf8_next((const uint8_t *)s + i - 1, at - i + 1, &cp);
    return cp;
}

/* Rust regex \s: Unicode White_Space. */
static bool is_space_cp(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Rust regex \w: alphabetic, marks, decimal digits, connector punctuation, joiners. */
static bool is_word_cp(uint32_t c) {
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return c == 0x200C || c == 0x200D;
    }
}

/* Leftmost-longest added token at or after `from`: its index in tok->added, or -1. */
static int find_added(const lp_tokenizer *tok, const tok_matcher *m, const char *s, size_t n, size_t from, size_t *at) {
    for (size_t i = from; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        for (uint32_t k = m->first[b]; k < m->first[b + 1]; k++) {
            const tok_entry *t = &tok->ent[tok->added[m->order[k]].id];
            if (t->text_len <= n - i && memcmp(s + i, tok->text.p + t->text_off, t->text_len) == 0) {
                *at = i;
                return (int)m->order[k];
            }
        }
    }
    return -1;
}

/* HF AddedVocabulary::find_matches, then split: text between accepted matches goes to
 * `gap`, accepted matches become their ids. */
static int split_added(enc *e, const tok_matcher *m, const char *s, size_t n, piece_fn gap) {
    const lp_tokenizer *tok = e->tok;
    size_t pos = 0, done = 0, at;
    if (m->first[256] == 0) return n ? gap(e, s, n) : 0;
    int idx;
    while ((idx = find_added(tok, m, s, n, pos, &at)) >= 0) {
        const tok_added *a = &tok->added[idx];
        size_t start = at, stop = at + tok->ent[a->id].text_len;
        pos = stop;
        if (a->special && !e->parse_special) continue; /* stays text */
        if (a->single_word) {
            bool free_left = start == 0 || !is_word_cp(cp_before(s, start));
            uint32_t next_cp = 0;
            if (stop < n) tok_utf8_next((const uint8_t *)s + stop, n - stop, &next_cp);
            if (!free_left || (stop < n && is_word_cp(next_cp))) continue;
        }
        if (a->lstrip) {
            while (start > done && is_space_cp(cp_before(s, start))) {
                uint32_t cp = cp_before(s, start);
                start -= cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
            }
        }
        if (a->rstrip) {
            uint32_t cp;
            int len;
            while (stop < n && (len = tok_utf8_next((const uint8_t *)s + stop, n - stop, &cp)) > 0 && is_space_cp(cp))
                stop += (size_t)len;
            pos = stop;
        }
        if (start > done && gap(e, s + done, start - done)) return -1;
        emit(e, &a->id, 1);
        done = stop;
    }
    return done < n ? gap(e, s + done, n - done) : 0;
}

static int after_normalized_added(enc *e, const char *s, size_t n) { return pretokenize(e, 0, s, n); }

/* NFC, applied only where it can change something. An ASCII character never composes
 * with what precedes it and nothing reorders across it, so NFC(a + b) = NFC(a) + NFC(b)
 * at every cut made just before an ASCII character. Each non-ASCII run, together with
 * the ASCII character before it (which may compose with a following mark), is a region
 * normalized on its own - and only when it holds a code point of U+0300 or above
 * (lead byte 0xCC+), since everything below is its own NFC form. */
static size_t nfc_region_end(const char *s, size_t n, size_t from) {
    while (from < n && (uint8_t)s[from] >= 0x80) from++;
    return from;
}

static bool region_may_change(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] >= 0xCC) return true;
    return false;
}

/* Normalized copy of s in *out (malloc'd), or *out = NULL when s is already NFC. */
static int nfc_copy(const char *s, size_t n, char **out, size_t *out_len) {
    tok_buf buf = {0};
    size_t copied = 0; /* s[0..copied) is in buf (once buf is in use) */
    *out = NULL;
    for (size_t i = 0; i < n;) {
        if ((uint8_t)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t start = i > 0 ? i - 1 : i, end = nfc_region_end(s, n, i);
        i = end;
        if (!region_may_change(s + start, end - start)) continue;
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)s + start, (utf8proc_ssize_t)(end - start), &nfc,
                                            UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (len < 0) {
            free(buf.p);
            return lp_fail("tokenizer: NFC normalization failed: %s", utf8proc_errmsg(len));
        }
        if ((size_t)len != end - start || memcmp(nfc, s + start, end - start) != 0) {
            tok_buf_put(&buf, s + copied, start - copied);
            tok_buf_put(&buf, nfc, (size_t)len);
            copied = end;
        }
        free(nfc);
    }
    if (copied) {
        tok_buf_put(&buf, s + copied, n - copied);
        *out = buf.p;
        *out_len = buf.n;
    }
    return 0;
}

static int after_raw_added(enc *e, const char *s, size_t n) {
    char *nfc = NULL;
    size_t len = 0;
    if (e->tok->nfc && nfc_copy(s, n, &nfc, &len)) return -1;
    int rc = nfc ? split_added(e, &e->tok->match_norm, nfc, len, after_normalized_added)
                 : split_added(e, &e->tok->match_norm, s, n, after_normalized_added);
    free(nfc);
    return rc;
}

int lp_tokenizer_encode(const lp_tokenizer *tok, const char *text, size_t len, bool parse_special, int32_t **ids,
                        size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!text && len) return lp_fail("tokenizer: NULL text");
    size_t bad = len ? tok_utf8_check(text, len) : 0;
    if (bad != len) return lp_fail("tokenizer: input is not valid UTF-8 (byte %zu)", bad);
    enc e = {.tok = tok, .parse_special = parse_special};
    e.md = pcre2_match_data_create(1, NULL);
    int rc = e.md ? split_added(&e, &tok->match_raw, text, len, after_raw_added) : lp_fail("tokenizer: out of memory");
    pcre2_match_data_free(e.md);
    pcre2_match_context_free(e.mctx);
    if (e.jit_stack) pcre2_jit_stack_free(e.jit_stack);
    free(e.cache.slot);
    free(e.cache.keys.p);
    free(e.cache.ids);
    free(e.sym);
    free(e.heap);
    free(e.symbols.p);
    if (rc) {
        free(e.out);
        return -1;
    }
    *ids = e.out;
    *n = e.n_out;
    return 0;
}
