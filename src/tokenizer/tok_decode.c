/* tok_decode.c — token ids back to text: each token's raw bytes (HF ByteLevel decoder),
 * concatenated, then invalid UTF-8 runs replaced by U+FFFD as Rust's from_utf8_lossy does. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

/* Copy bytes, turning each maximal invalid subpart into U+FFFD. */
static void put_lossy(tok_buf *out, const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t good = i + tok_utf8_check(s + i, n - i);
        tok_buf_put(out, s + i, good - i);
        if (good >= n) break;
        uint32_t cp;
        int bad = tok_utf8_next((const uint8_t *)s + good, n - good, &cp);
        tok_buf_put(out, "\xEF\xBF\xBD", 3);
        i = good + (size_t)-bad;
    }
}

char *lp_tokenizer_decode_len(const lp_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                              size_t *len_out) {
    tok_buf raw = {0};
    tok_buf_put(&raw, "", 0);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *bytes = lp_tokenizer_token_bytes(tok, ids[i], &len);
        if (!bytes) continue; /* no token at this id (padding rows): nothing, as in HF */
        if (skip_special && lp_tokenizer_is_special(tok, ids[i])) continue;
        tok_buf_put(&raw, bytes, len);
    }
    if (tok_utf8_check(raw.p, raw.n) != raw.n) {
        tok_buf fixed = {0};
        tok_buf_put(&fixed, "", 0);
        put_lossy(&fixed, raw.p, raw.n);
        free(raw.p);
        raw = fixed;
    }
    if (len_out) *len_out = raw.n;
    return raw.p;
}

char *lp_tokenizer_decode(const lp_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special) {
    return lp_tokenizer_decode_len(tok, ids, n, skip_special, NULL);
}
