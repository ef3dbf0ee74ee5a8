/* tok_internal.h — the tokenizer's private layout, shared by the tokenizer sources only.
 *
 * Both loaders (tokenizer.json, GGUF arrays) fill one lp_tokenizer through the builder
 * calls below, in this order: vocab -> tok_index_vocab -> merges -> added tokens ->
 * pre-tokenizer steps -> tok_finish. Encode/decode then only read it. */
#ifndef LP_TOK_INTERNAL_H
#define LP_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* Growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} tok_buf;

void tok_buf_put(tok_buf *b, const void *data, size_t n);
void tok_buf_putc(tok_buf *b, char c);

typedef struct {
    uint32_t text_off, text_len;   /* vocab text (NUL-terminated) in lp_tokenizer.text */
    uint32_t bytes_off, bytes_len; /* raw bytes it decodes to, in lp_tokenizer.bytes */
    uint8_t type;                  /* enum lp_token_type; 0 = no token at this id */
    bool has_text;                 /* a text was given (UNUSED ids may carry one) */
    bool special;                  /* HF "special": dropped by skip_special, gated by parse_special */
    bool added;
} tok_entry;

/* Open-addressing map from a string in lp_tokenizer.text to an id. */
typedef struct {
    uint32_t hash, id, off, len; /* len == UINT32_MAX: empty slot */
} tok_map_slot;

typedef struct {
    tok_map_slot *slot;
    size_t mask, count;
} tok_map;

/* Merge table keyed by the (left, right) id pair. */
typedef struct {
    uint64_t key;
    uint32_t rank; /* UINT32_MAX: empty slot */
    int32_t merged;
} tok_merge_slot;

typedef struct {
    int32_t id;
    bool special, normalized, lstrip, rstrip, single_word;
} tok_added;

/* Leftmost-longest matcher over a set of added tokens: indices into lp_tokenizer.added,
 * bucketed by first byte, longest first within a bucket. */
typedef struct {
    uint32_t *order;
    uint32_t first[257];
} tok_matcher;

enum tok_split_behavior {
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
};

/* One pre-tokenizer step. re == NULL: ByteLevel add_prefix_space. */
typedef struct {
    pcre2_code *re;
    char *pattern;
    int behavior;
} tok_step;

struct lp_tokenizer {
    tok_entry *ent;
    size_t n_ent, cap_ent;
    tok_buf text, bytes;

    tok_map vocab_map; /* model vocab text -> id (merges, ignore_merges) */
    tok_map added_map; /* added token content -> id */

    tok_merge_slot *merge_tab;
    size_t merge_mask, merge_count;
    int32_t (*merge_pair)[2]; /* by rank, for export */
    size_t n_merges, cap_merges;

    tok_added *added;
    size_t n_added, cap_added;
    tok_matcher match_raw, match_norm; /* added tokens with normalized false / true */

    tok_step *steps;
    size_t n_steps;

    bool nfc, ignore_merges, fuse_unk;
    int32_t unk_id;       /* -1: unknown bytes are dropped, as HF does without unk_token */
    int32_t byte_id[256]; /* vocab id of each byte's byte-level symbol, -1 if none */
};

/* GPT-2 byte <-> unicode symbol mapping (tok_util.c). */
int tok_cp_to_byte(uint32_t cp); /* -1 if cp is no byte's symbol */
/* Append the byte-level form of raw bytes (each byte -> one 1..2-byte UTF-8 symbol). */
void tok_bytes_to_symbols(tok_buf *out, const char *s, size_t n);

/* UTF-8: length of the valid sequence at s, or -(length of its maximal invalid subpart)
 * (Unicode "maximal subpart" rule, as Rust's from_utf8_lossy uses). n >= 1. */
int tok_utf8_next(const uint8_t *s, size_t n, uint32_t *cp);
/* Byte offset of the first invalid sequence, or n if all valid. */
size_t tok_utf8_check(const char *s, size_t n);

/* Hash maps (tok_util.c); both grow at half load. A later put of an existing key wins. */
uint32_t tok_hash(const char *s, size_t n);
int32_t tok_map_get(const tok_map *m, const tok_buf *arena, const char *s, size_t n);
void tok_map_init(tok_map *m, size_t expected);
void tok_map_put(tok_map *m, const tok_buf *arena, uint32_t off, uint32_t len, int32_t id);
void tok_map_free(tok_map *m);
int32_t tok_merge_get(const lp_tokenizer *tok, int32_t left, int32_t right, uint32_t *rank);
void tok_merge_put(lp_tokenizer *tok, int32_t left, int32_t right, uint32_t rank, int32_t merged);

/* Builder (tok_build.c). `what` prefixes error messages ("tokenizer.json: model.vocab"). */
lp_tokenizer *tok_alloc(void);
int tok_set_vocab(lp_tokenizer *tok, int64_t id, const char *text, size_t len, uint8_t type,
                  const char *what);
void tok_index_vocab(lp_tokenizer *tok);
int tok_add_merge(lp_tokenizer *tok, const char *left, size_t llen, const char *right, size_t rlen,
                  const char *what);
/* type 0: derive it (CONTROL if special or tok_looks_special, else USER_DEFINED). */
int tok_add_added(lp_tokenizer *tok, int64_t id, const char *content, size_t len, const tok_added *flags,
                  uint8_t type, const char *what);
int tok_add_split(lp_tokenizer *tok, const char *pattern, bool literal, int behavior, const char *what);
void tok_add_prefix_space(lp_tokenizer *tok);
int tok_finish(lp_tokenizer *tok, const char *what);

/* HF ByteLevel's own split regex (GPT-2's), used when ByteLevel has use_regex: true (tok_gguf.c). */
extern const char tok_gpt2_regex[];

/* convert_hf_to_gguf's does_token_look_special. */
bool tok_looks_special(const char *text, size_t len);

#endif
