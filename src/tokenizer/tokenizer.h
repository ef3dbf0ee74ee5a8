/* tokenizer.h — byte-level BPE tokenizer, bit-exact with Hugging Face `tokenizers`.
 *
 * Covers the Qwen2/Qwen3, Llama 3 and gpt-oss family: a tokenizer.json with a BPE model
 * over GPT-2 byte-level symbols, an optional NFC normalizer, a pre-tokenizer made of
 * regex Splits plus ByteLevel, a ByteLevel decoder, and added tokens matched before any
 * splitting. The same tokenizer can be built from GGUF metadata arrays.
 *
 * Thread safety: a loaded tokenizer is immutable; encode/decode may run concurrently
 * from any number of threads (all scratch state, including the word cache, is per call).
 *
 * Token ids are int32_t. Strings in the API are UTF-8 with explicit lengths where the
 * text may hold NUL bytes. */
#ifndef LP_TOKENIZER_H
#define LP_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lp_tokenizer lp_tokenizer;

/* GGUF tokenizer.ggml.token_type values. */
enum lp_token_type {
    LP_TOKEN_NORMAL = 1,
    LP_TOKEN_UNKNOWN = 2,
    LP_TOKEN_CONTROL = 3,      /* special added token (<|im_start|>) */
    LP_TOKEN_USER_DEFINED = 4, /* plain added token (<think>) */
    LP_TOKEN_UNUSED = 5,       /* id with no token ([PADn] fillers) */
    LP_TOKEN_BYTE = 6,
};

/* ---- construction ---------------------------------------------------------------- */

/* Hugging Face tokenizer.json. */
lp_tokenizer *lp_tokenizer_load_json(const char *path);
/* The same from a buffer; `what` names it in error messages. */
lp_tokenizer *lp_tokenizer_load_json_mem(const char *json, size_t len, const char *what);

/* From GGUF metadata: tokenizer.ggml.tokens / token_type / merges / pre.
 * token_types may be NULL (all NORMAL). CONTROL tokens become special added tokens,
 * USER_DEFINED plain added tokens (both matched before splitting), UNUSED ids are
 * holes. `pre` picks the split regex and normalizer: "qwen2" (NFC, Qwen2/2.5/3),
 * "llama-bpe" (Llama 3, ignore_merges), "gpt-4o" (o200k / gpt-oss), "gpt2". */
lp_tokenizer *lp_tokenizer_from_vocab(const char *const *tokens, size_t n_tokens,
                                      const int32_t *token_types, const char *const *merges,
                                      size_t n_merges, const char *pre);

void lp_tokenizer_free(lp_tokenizer *tok);

/* ---- encode / decode ------------------------------------------------------------- */

/* Text -> ids (no BOS/EOS added; HF add_special_tokens=False). With parse_special false,
 * special (CONTROL) tokens in the text are tokenized as plain text, so user input cannot
 * inject <|im_start|>; plain added tokens (<think>) are still matched, as in HF.
 * *ids is malloc'd (free()); may be NULL when *n == 0. Invalid UTF-8 -> -1. */
int lp_tokenizer_encode(const lp_tokenizer *tok, const char *text, size_t len, bool parse_special,
                        int32_t **ids, size_t *n);

/* Ids -> malloc'd NUL-terminated UTF-8 text (invalid byte runs become U+FFFD, like HF).
 * skip_special drops special added tokens. Ids with no token (out of range, holes, the
 * padding rows past the vocabulary) decode to nothing, as in HF; never fails. */
char *lp_tokenizer_decode(const lp_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special);
/* The same, also giving the length (the text may hold NUL bytes); len may be NULL. */
char *lp_tokenizer_decode_len(const lp_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                              size_t *len);

/* The raw bytes one token stands for (what decode would emit for it alone, before the
 * U+FFFD repair). Not NUL-terminated; may end inside a UTF-8 sequence that the next token
 * completes. NULL (and *len 0) for an id with no token. */
const char *lp_tokenizer_token_bytes(const lp_tokenizer *tok, int32_t id, size_t *len);

/* For streaming printers: how many leading bytes of buf can be emitted now, i.e. len
 * minus a trailing UTF-8 sequence that is incomplete but could still become valid.
 * Bytes that can never become valid are counted as emittable (the printer repairs them). */
size_t lp_utf8_stable_len(const char *buf, size_t len);

/* ---- vocabulary ------------------------------------------------------------------ */

/* Number of ids: highest id + 1. */
size_t lp_tokenizer_n_vocab(const lp_tokenizer *tok);
/* Id of an added token by its content, else of a vocab entry by its vocab text
 * (byte-level form, "Ġthe"), else -1. */
int32_t lp_tokenizer_find(const lp_tokenizer *tok, const char *text);
bool lp_tokenizer_is_special(const lp_tokenizer *tok, int32_t id);
/* Vocab text of an id (byte-level form; the content for added tokens); NULL for holes. */
const char *lp_tokenizer_token_text(const lp_tokenizer *tok, int32_t id);
/* GGUF token type of an id, as convert_hf_to_gguf assigns it: added tokens that are
 * special or look special (<|...|>, <｜...｜>, <unused..>, <pad>, <mask>, ...) -> CONTROL,
 * other added tokens -> USER_DEFINED, holes -> UNUSED, the rest NORMAL. */
int lp_tokenizer_token_type(const lp_tokenizer *tok, int32_t id);

size_t lp_tokenizer_n_merges(const lp_tokenizer *tok);

/* GGUF export. Tokens: n = max(n_vocab, pad_to); holes and ids past the vocabulary are
 * "[PAD<id>]" with type UNUSED. Merges: "left right" in rank order. Free the string
 * arrays with lp_tokenizer_free_strings() and *types with free(). */
int lp_tokenizer_export_vocab(const lp_tokenizer *tok, size_t pad_to, char ***tokens,
                              int32_t **types, size_t *n);
int lp_tokenizer_export_merges(const lp_tokenizer *tok, char ***merges, size_t *n);
void lp_tokenizer_free_strings(char **strs, size_t n);

/* tokenizer.ggml.pre value reproducing this tokenizer through lp_tokenizer_from_vocab
 * (same split regex, normalizer and ignore_merges), or NULL when no known one does. */
const char *lp_tokenizer_pre_name(const lp_tokenizer *tok);

#endif
