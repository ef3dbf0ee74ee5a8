/* tok_util.c — tokenizer building blocks: growable buffers, the GPT-2 byte<->symbol
 * mapping, strict UTF-8 decoding, and the string / merge-pair hash lookups. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "tokenizer/tok_internal.h"

void tok_buf_put(tok_buf *b, const void *data, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        b->p = lp_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0; /* always NUL-terminated, so arenas can hand out C strings */
}

void tok_buf_putc(tok_buf *b, char c) { tok_buf_put(b, &c, 1); }

/* ---- GPT-2 byte-level mapping ----
 * Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other
 * 68 bytes get the code points 256, 257, ... in byte order. */
static uint32_t byte_cp[256];
static int16_t cp_byte[256 + 68];
static uint8_t byte_sym[256][3]; /* UTF-8 of byte_cp, length in [2] */
static pthread_once_t byte_map_once = PTHREAD_ONCE_INIT;

static bool byte_is_printable(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

static void byte_map_init(void) {
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) byte_cp[b] = byte_is_printable(b) ? (uint32_t)b : next++;
    for (size_t i = 0; i < sizeof cp_byte / sizeof cp_byte[0]; i++) cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = byte_cp[b];
        cp_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            byte_sym[b][0] = (uint8_t)cp;
            byte_sym[b][2] = 1;
        } else { /* every symbol is below U+0800: two bytes */
            byte_sym[b][0] = (uint8_t)(0xC0 | (cp >> 6));
            byte_sym[b][1] = (uint8_t)(0x80 | (cp & 0x3F));
            byte_sym[b][2] = 2;
        }
    }
}

int tok_cp_to_byte(uint32_t cp) {
    pthread_once(&byte_map_once, byte_map_init);
    return cp < sizeof cp_byte / sizeof cp_byte[0] ? cp_byte[cp] : -1;
}

void tok_bytes_to_symbols(tok_buf *out, const char *s, size_t n) {
    pthread_once(&byte_map_once, byte_map_init);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *sym = byte_sym[(uint8_t)s[i]];
        tok_buf_put(out, sym, sym[2]);
    }
}

/* ---- UTF-8 ---- */

int tok_utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int need;
    uint32_t v;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the first continuation byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1, v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2, v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0; /* no overlongs */
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3, v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F; /* <= U+10FFFF */
    } else {
        return -1;
    }
    size_t i = 1;
    for (int k = 0; k < need; k++, i++) {
        if (i >= n || s[i] < lo || s[i] > hi) return -(int)i;
        v = (v << 6) | (s[i] & 0x3F);
        lo = 0x80, hi = 0xBF;
    }
    *cp = v;
    return (int)i;
}

size_t tok_utf8_check(const char *str, size_t n) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < n) {
        /* ASCII runs dominate real text: skip them 8 bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int len = tok_utf8_next(s + i, n - i, &cp);
        if (len < 0) return i;
        i += (size_t)len;
    }
    return n;
}

size_t lp_utf8_stable_len(const char *buf, size_t len) {
    const uint8_t *s = (const uint8_t *)buf;
    /* Find where the last sequence starts: at most 3 continuation bytes back. */
    size_t start = len;
    for (size_t back = 0; back < 4 && start > 0; back++) {
        start--;
        if ((s[start] & 0xC0) != 0x80) break;
    }
    if (start == len) return len;
    uint32_t cp;
    int r = tok_utf8_next(s + start, len - start, &cp);
    /* Held back only when the sequence is cut short by the end of the buffer. */
    if (r < 0 && (size_t)(-r) == len - start && s[start] >= 0xC2 && s[start] <= 0xF4) return start;
    return len;
}

/* ---- hashing ---- */

uint32_t tok_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, folded */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

int32_t tok_map_get(const tok_map *m, const tok_buf *arena, const char *s, size_t n) {
    if (!m->slot) return -1;
    uint32_t h = tok_hash(s, n);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const tok_map_slot *e = &m->slot[i];
        if (e->len == UINT32_MAX) return -1;
        if (e->hash == h && e->len == n && memcmp(arena->p + e->off, s, n) == 0) return (int32_t)e->id;
    }
}

static size_t pair_slot(uint64_t key, size_t mask) { return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask; }

static uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t)(uint32_t)left << 32 | (uint32_t)right; }

int32_t tok_merge_get(const lp_tokenizer *tok, int32_t left, int32_t right, uint32_t *rank) {
    if (!tok->merge_tab) return -1;
    uint64_t key = pair_key(left, right);
    for (size_t i = pair_slot(key, tok->merge_mask);; i = (i + 1) & tok->merge_mask) {
        const tok_merge_slot *e = &tok->merge_tab[i];
        if (e->rank == UINT32_MAX) return -1;
        if (e->key == key) {
            *rank = e->rank;
            return e->merged;
        }
    }
}

/* Both tables grow at half load, so probes stay short. */

static void map_insert_slot(tok_map *m, tok_map_slot e) {
    size_t i = e.hash & m->mask;
    while (m->slot[i].len != UINT32_MAX) i = (i + 1) & m->mask;
    m->slot[i] = e;
}

static void map_resize(tok_map *m, size_t cap) {
    tok_map old = *m;
    m->slot = lp_xmalloc(cap * sizeof *m->slot);
    m->mask = cap - 1;
    for (size_t i = 0; i < cap; i++) m->slot[i].len = UINT32_MAX;
    if (old.slot)
        for (size_t i = 0; i <= old.mask; i++)
            if (old.slot[i].len != UINT32_MAX) map_insert_slot(m, old.slot[i]);
    free(old.slot);
}

void tok_map_init(tok_map *m, size_t expected) {
    size_t cap = 64;
    while (cap < expected * 2) cap *= 2;
    m->slot = NULL;
    map_resize(m, cap);
    m->count = 0;
}

void tok_map_put(tok_map *m, const tok_buf *arena, uint32_t off, uint32_t len, int32_t id) {
    uint32_t h = tok_hash(arena->p + off, len);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        tok_map_slot *e = &m->slot[i];
        if (e->len == UINT32_MAX) break;
        if (e->hash == h && e->len == len && memcmp(arena->p + e->off, arena->p + off, len) == 0) {
            e->id = (uint32_t)id; /* a later duplicate wins, as in a Rust HashMap built in order */
            return;
        }
    }
    if ((m->count + 1) * 2 > m->mask + 1) map_resize(m, (m->mask + 1) * 2);
    map_insert_slot(m, (tok_map_slot){h, (uint32_t)id, off, len});
    m->count++;
}

void tok_map_free(tok_map *m) {
    free(m->slot);
    m->slot = NULL;
}

static void merge_insert_slot(lp_tokenizer *tok, tok_merge_slot e) {
    size_t i = pair_slot(e.key, tok->merge_mask);
    while (tok->merge_tab[i].rank != UINT32_MAX) i = (i + 1) & tok->merge_mask;
    tok->merge_tab[i] = e;
}

static void merge_resize(lp_tokenizer *tok, size_t cap) {
    tok_merge_slot *old = tok->merge_tab;
    size_t old_cap = old ? tok->merge_mask + 1 : 0;
    tok->merge_tab = lp_xmalloc(cap * sizeof *tok->merge_tab);
    tok->merge_mask = cap - 1;
    for (size_t i = 0; i < cap; i++) tok->merge_tab[i].rank = UINT32_MAX;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].rank != UINT32_MAX) merge_insert_slot(tok, old[i]);
    free(old);
}

void tok_merge_put(lp_tokenizer *tok, int32_t left, int32_t right, uint32_t rank, int32_t merged) {
    if (!tok->merge_tab) merge_resize(tok, 1024);
    uint64_t key = pair_key(left, right);
    for (size_t i = pair_slot(key, tok->merge_mask);; i = (i + 1) & tok->merge_mask) {
        tok_merge_slot *e = &tok->merge_tab[i];
        if (e->rank == UINT32_MAX) break;
        if (e->key == key) { /* duplicate pair: the later rank wins, like HF's merge map */
            e->rank = rank;
            e->merged = merged;
            return;
        }
    }
    if ((tok->merge_count + 1) * 2 > tok->merge_mask + 1) merge_resize(tok, (tok->merge_mask + 1) * 2);
    merge_insert_slot(tok, (tok_merge_slot){key, rank, merged});
    tok->merge_count++;
}
