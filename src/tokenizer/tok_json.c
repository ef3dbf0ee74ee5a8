/* tok_json.c — loading a Hugging Face tokenizer.json.
 *
 * model.vocab and model.merges (hundreds of thousands of entries) are read by a small
 * dedicated JSON scanner straight into the tokenizer: building a jansson tree for them
 * alone takes longer than the whole load budget. The small sections (added_tokens,
 * normalizer, pre_tokenizer, decoder, model options) are cut out as text spans by the
 * same scanner and parsed with jansson. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fileio.h"
#include "tokenizer/tok_internal.h"

#define JS_MAX_DEPTH 128

typedef struct {
    const char *p, *start, *end;
    const char *what;
} js;

static int js_fail(js *s, const char *msg) {
    return lp_fail("%s: byte %zu: %s", s->what, (size_t)(s->p - s->start), msg);
}

static void js_ws(js *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

static bool js_peek(js *s, char c) {
    js_ws(s);
    return s->p < s->end && *s->p == c;
}

static int js_expect(js *s, char c) {
    if (!js_peek(s, c)) {
        char msg[32];
        snprintf(msg, sizeof msg, "expected '%c'", c);
        return js_fail(s, msg);
    }
    s->p++;
    return 0;
}

static int js_hex4(js *s, uint32_t *v) {
    if (s->end - s->p < 4) return js_fail(s, "truncated \\u escape");
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *s->p++;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return js_fail(s, "bad \\u escape");
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

static void put_utf8(tok_buf *out, uint32_t cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) b[0] = (char)cp, n = 1;
    else if (cp < 0x800) b[0] = (char)(0xC0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        b[0] = (char)(0xE0 | cp >> 12), b[1] = (char)(0x80 | (cp >> 6 & 0x3F)), b[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        b[0] = (char)(0xF0 | cp >> 18), b[1] = (char)(0x80 | (cp >> 12 & 0x3F)), b[2] = (char)(0x80 | (cp >> 6 & 0x3F)),
        b[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    tok_buf_put(out, b, n);
}

static int js_escape(js *s, tok_buf *out) {
    if (s->p >= s->end) return js_fail(s, "truncated escape");
    char c = *s->p++;
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *k = c ? strchr(from, c) : NULL;
    if (k) {
        tok_buf_putc(out, to[k - from]);
        return 0;
    }
    if (c != 'u') return js_fail(s, "bad escape");
    uint32_t cp;
    if (js_hex4(s, &cp)) return -1;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return js_fail(s, "lone low surrogate");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        uint32_t lo;
        if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u') return js_fail(s, "lone high surrogate");
        s->p += 2;
        if (js_hex4(s, &lo)) return -1;
        if (lo < 0xDC00 || lo > 0xDFFF) return js_fail(s, "bad surrogate pair");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    put_utf8(out, cp);
    return 0;
}

/* A string into out (replacing its contents), escapes decoded, UTF-8 checked. */
static int js_string(js *s, tok_buf *out) {
    if (js_expect(s, '"')) return -1;
    out->n = 0;
    for (;;) {
        const char *run = s->p;
        while (s->p < s->end && *s->p != '"' && *s->p != '\\' && (unsigned char)*s->p >= 0x20) s->p++;
        tok_buf_put(out, run, (size_t)(s->p - run));
        if (s->p >= s->end) return js_fail(s, "unterminated string");
        char c = *s->p++;
        if (c == '"') break;
        if (c != '\\') return js_fail(s, "control character in string");
        if (js_escape(s, out)) return -1;
    }
    if (tok_utf8_check(out->p, out->n) != out->n) return js_fail(s, "string is not valid UTF-8");
    return 0;
}

static int js_int(js *s, int64_t *v) {
    js_ws(s);
    const char *q = s->p;
    bool neg = q < s->end && *q == '-';
    q += neg;
    int64_t x = 0;
    const char *digits = q;
    while (q < s->end && *q >= '0' && *q <= '9' && q - digits < 18) x = x * 10 + (*q++ - '0');
    if (q == digits || (q < s->end && (*q == '.' || *q == 'e' || *q == 'E' || (*q >= '0' && *q <= '9'))))
        return js_fail(s, "expected a (small) integer");
    s->p = q;
    *v = neg ? -x : x;
    return 0;
}

/* Past a string without decoding it: whatever is skipped is parsed properly later. */
static int js_skip_string(js *s) {
    if (js_expect(s, '"')) return -1;
    for (;;) {
        while (s->p < s->end && *s->p != '"' && *s->p != '\\') s->p++;
        if (s->p >= s->end) return js_fail(s, "unterminated string");
        if (*s->p++ == '"') return 0;
        if (s->p >= s->end) return js_fail(s, "unterminated string");
        s->p++;
    }
}

static int js_skip(js *s, int depth);

static int js_skip_container(js *s, char close, bool keys, int depth) {
    s->p++;
    if (js_peek(s, close)) {
        s->p++;
        return 0;
    }
    for (;;) {
        if (keys && (js_skip_string(s) || js_expect(s, ':'))) return -1;
        if (js_skip(s, depth + 1)) return -1;
        if (js_peek(s, ',')) {
            s->p++;
            continue;
        }
        return js_expect(s, close);
    }
}

static int js_skip(js *s, int depth) {
    if (depth > JS_MAX_DEPTH) return js_fail(s, "nested too deeply");
    js_ws(s);
    if (s->p >= s->end) return js_fail(s, "unexpected end");
    char c = *s->p;
    if (c == '{') return js_skip_container(s, '}', true, depth);
    if (c == '[') return js_skip_container(s, ']', false, depth);
    if (c == '"') return js_skip_string(s);
    /* number or literal: jansson re-validates any span we hand it */
    const char *q = s->p;
    while (q < s->end && (strchr("+-.eE", *q) || (*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'z'))) q++;
    if (q == s->p) return js_fail(s, "unexpected character");
    s->p = q;
    return 0;
}

/* Iterate an object: calls on_member(key, key_len, s, ctx) positioned at each value, which
 * must consume it. */
typedef int (*js_member_fn)(const char *key, size_t key_len, js *s, void *ctx);

static int js_object(js *s, js_member_fn on_member, void *ctx) {
    if (js_expect(s, '{')) return -1;
    if (js_peek(s, '}')) {
        s->p++;
        return 0;
    }
    tok_buf key = {0};
    for (;;) {
        if (js_string(s, &key) || js_expect(s, ':') || on_member(key.p, key.n, s, ctx)) goto fail;
        if (js_peek(s, ',')) {
            s->p++;
            continue;
        }
        if (js_expect(s, '}')) goto fail;
        break;
    }
    free(key.p);
    return 0;
fail:
    free(key.p);
    return -1;
}

/* ---- pass 1: locate the sections ---- */

typedef struct {
    const char *vocab, *merges;                              /* positions of those values */
    json_t *model_opts;                                      /* the other model.* members */
    json_t *added_tokens, *normalizer, *pre_tokenizer, *decoder; /* NULL when absent */
} sections;

static json_t *js_capture(js *s) {
    js_ws(s);
    const char *from = s->p;
    if (js_skip(s, 0)) return NULL;
    json_error_t err;
    json_t *v = json_loadb(from, (size_t)(s->p - from), JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v) lp_fail("%s: byte %zu: %s", s->what, (size_t)(from - s->start) + (size_t)err.position, err.text);
    return v;
}

static int on_model_member(const char *key, size_t key_len, js *s, void *ctx) {
    (void)key_len;
    sections *sec = ctx;
    js_ws(s);
    if (strcmp(key, "vocab") == 0 || strcmp(key, "merges") == 0) {
        *(strcmp(key, "vocab") == 0 ? &sec->vocab : &sec->merges) = s->p;
        return js_skip(s, 0);
    }
    json_t *v = js_capture(s);
    if (!v) return -1;
    json_object_set_new(sec->model_opts, key, v);
    return 0;
}

static int on_top_member(const char *key, size_t key_len, js *s, void *ctx) {
    (void)key_len;
    sections *sec = ctx;
    if (strcmp(key, "model") == 0) return js_object(s, on_model_member, sec);
    json_t **slot = strcmp(key, "added_tokens") == 0    ? &sec->added_tokens
                    : strcmp(key, "normalizer") == 0    ? &sec->normalizer
                    : strcmp(key, "pre_tokenizer") == 0 ? &sec->pre_tokenizer
                    : strcmp(key, "decoder") == 0       ? &sec->decoder
                                                        : NULL;
    if (!slot) return js_skip(s, 0);
    json_decref(*slot);
    *slot = js_capture(s);
    return *slot ? 0 : -1;
}

/* ---- pass 2: vocab and merges, straight from the text ---- */

typedef struct {
    lp_tokenizer *tok;
    char what[300];
} vocab_ctx;

static int on_vocab_member(const char *key, size_t key_len, js *s, void *ctx) {
    vocab_ctx *v = ctx;
    int64_t id = -1;
    if (js_int(s, &id)) return -1;
    return tok_set_vocab(v->tok, id, key, key_len, LP_TOKEN_NORMAL, v->what);
}

static int read_merge(js *s, lp_tokenizer *tok, tok_buf *a, tok_buf *b, const char *what) {
    size_t rank = tok->n_merges;
    if (js_peek(s, '[')) { /* ["left", "right"] */
        s->p++;
        if (js_string(s, a) || js_expect(s, ',') || js_string(s, b) || js_expect(s, ']')) return -1;
        return tok_add_merge(tok, a->p, a->n, b->p, b->n, what);
    }
    if (js_string(s, a)) return -1; /* "left right" */
    const char *sp = a->n ? memchr(a->p + 1, ' ', a->n - 1) : NULL;
    if (!sp) return lp_fail("%s[%zu]: '%.100s' is not \"left right\"", what, rank, a->p);
    size_t llen = (size_t)(sp - a->p);
    return tok_add_merge(tok, a->p, llen, sp + 1, a->n - llen - 1, what);
}

static int read_merges(js *s, lp_tokenizer *tok, const char *what) {
    if (js_expect(s, '[')) return -1;
    if (js_peek(s, ']')) return 0;
    tok_buf a = {0}, b = {0};
    int rc = 0;
    for (;;) {
        if ((rc = read_merge(s, tok, &a, &b, what))) break;
        if (js_peek(s, ',')) {
            s->p++;
            continue;
        }
        rc = js_expect(s, ']');
        break;
    }
    free(a.p);
    free(b.p);
    return rc;
}

/* ---- the small sections, via jansson ---- */

static bool opt_bool(const json_t *obj, const char *key, bool dflt) {
    const json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static const char *opt_str(const json_t *obj, const char *key) { return json_string_value(json_object_get(obj, key)); }

static int check_model_opts(lp_tokenizer *tok, const json_t *o, const char *path) {
    const char *type = opt_str(o, "type");
    if (type && strcmp(type, "BPE") != 0) return lp_fail("%s: model.type: '%s' not supported (BPE only)", path, type);
    const json_t *dropout = json_object_get(o, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
        return lp_fail("%s: model.dropout: BPE dropout not supported", path);
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *a = opt_str(o, affix[i]);
        if (a && *a) return lp_fail("%s: model.%s: '%s' not supported", path, affix[i], a);
    }
    if (opt_bool(o, "byte_fallback", false)) return lp_fail("%s: model.byte_fallback: not supported", path);
    tok->ignore_merges = opt_bool(o, "ignore_merges", false);
    tok->fuse_unk = opt_bool(o, "fuse_unk", false);
    const char *unk = opt_str(o, "unk_token");
    tok->unk_id = unk ? tok_map_get(&tok->vocab_map, &tok->text, unk, strlen(unk)) : -1;
    return 0;
}

static int read_added_tokens(lp_tokenizer *tok, const json_t *arr, const char *path) {
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return lp_fail("%s: added_tokens: not an array", path);
    size_t i;
    const json_t *t;
    json_array_foreach(arr, i, t) {
        const json_t *id = json_object_get(t, "id"), *content = json_object_get(t, "content");
        if (!json_is_integer(id) || !json_is_string(content))
            return lp_fail("%s: added_tokens[%zu]: needs integer id and string content", path, i);
        tok_added flags = {.special = opt_bool(t, "special", false)};
        flags.normalized = opt_bool(t, "normalized", !flags.special);
        flags.lstrip = opt_bool(t, "lstrip", false);
        flags.rstrip = opt_bool(t, "rstrip", false);
        flags.single_word = opt_bool(t, "single_word", false);
        char what[300];
        snprintf(what, sizeof what, "%s: added_tokens[%zu]", path, i);
        if (tok_add_added(tok, json_integer_value(id), json_string_value(content), json_string_length(content), &flags,
                          0, what))
            return -1;
    }
    return 0;
}

static int read_normalizer(lp_tokenizer *tok, const json_t *n, const char *path) {
    if (!n || json_is_null(n)) return 0;
    const char *type = opt_str(n, "type");
    if (type && strcmp(type, "NFC") == 0) {
        tok->nfc = true;
        return 0;
    }
    if (type && strcmp(type, "Sequence") == 0) {
        size_t i;
        const json_t *sub;
        json_array_foreach(json_object_get(n, "normalizers"), i, sub) if (read_normalizer(tok, sub, path)) return -1;
        return 0;
    }
    return lp_fail("%s: normalizer: type '%s' not supported (NFC or a Sequence of NFC)", path, type ? type : "?");
}

static int split_behavior(const char *name) {
    static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext"};
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, names[i]) == 0) return i;
    return -1;
}

typedef struct {
    lp_tokenizer *tok;
    const char *path;
    bool byte_level_seen;
} pre_ctx;

static int read_pre_step(pre_ctx *c, const json_t *p, const char *field) {
    const char *type = opt_str(p, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        size_t i;
        const json_t *sub;
        json_array_foreach(json_object_get(p, "pretokenizers"), i, sub) {
            char f[200];
            snprintf(f, sizeof f, "%s.pretokenizers[%zu]", field, i);
            if (read_pre_step(c, sub, f)) return -1;
        }
        return 0;
    }
    if (c->byte_level_seen) /* later steps would see byte-level symbols, not text */
        return lp_fail("%s: %s: a step after ByteLevel is not supported", c->path, field);
    char what[300];
    snprintf(what, sizeof what, "%s: %s", c->path, field);
    if (type && strcmp(type, "ByteLevel") == 0) {
        c->byte_level_seen = true;
        if (opt_bool(p, "add_prefix_space", true)) tok_add_prefix_space(c->tok);
        return opt_bool(p, "use_regex", true) ? tok_add_split(c->tok, tok_gpt2_regex, false, TOK_SPLIT_ISOLATED, what) : 0;
    }
    if (type && strcmp(type, "Split") == 0) {
        const json_t *pat = json_object_get(p, "pattern");
        const char *re = opt_str(pat, "Regex"), *lit = opt_str(pat, "String");
        int behavior = split_behavior(opt_str(p, "behavior"));
        if ((!re && !lit) || behavior < 0 || opt_bool(p, "invert", false))
            return lp_fail("%s: needs pattern Regex/String, behavior Isolated/Removed/MergedWith*, invert false", what);
        return tok_add_split(c->tok, re ? re : lit, !re, behavior, what);
    }
    return lp_fail("%s: type '%s' not supported (Sequence, Split, ByteLevel)", what, type ? type : "?");
}

static int check_decoder(const json_t *d, const char *path) {
    const char *type = opt_str(d, "type");
    if (type && strcmp(type, "ByteLevel") == 0) return 0;
    if (type && strcmp(type, "Sequence") == 0 && json_array_size(json_object_get(d, "decoders")) == 1)
        return check_decoder(json_array_get(json_object_get(d, "decoders"), 0), path);
    return lp_fail("%s: decoder: type '%s' not supported (ByteLevel only)", path, type ? type : "null");
}

static int build(lp_tokenizer *tok, const char *json, size_t len, const char *path, sections *sec) {
    js s = {json, json, json + len, path};
    if (js_object(&s, on_top_member, sec)) return -1;
    js_ws(&s);
    if (s.p != s.end) return js_fail(&s, "trailing data after the top-level object");
    if (!sec->vocab || !sec->merges) return lp_fail("%s: model.vocab and model.merges are required", path);

    vocab_ctx v = {.tok = tok};
    snprintf(v.what, sizeof v.what, "%s: model.vocab", path);
    s.p = sec->vocab;
    if (js_object(&s, on_vocab_member, &v)) return -1;
    tok_index_vocab(tok);
    char what[300];
    snprintf(what, sizeof what, "%s: model.merges", path);
    s.p = sec->merges;
    if (read_merges(&s, tok, what)) return -1;

    if (check_model_opts(tok, sec->model_opts, path) || read_added_tokens(tok, sec->added_tokens, path) ||
        read_normalizer(tok, sec->normalizer, path))
        return -1;
    pre_ctx pc = {tok, path, false};
    if (!sec->pre_tokenizer || json_is_null(sec->pre_tokenizer))
        return lp_fail("%s: pre_tokenizer: missing (a byte-level BPE needs ByteLevel)", path);
    if (read_pre_step(&pc, sec->pre_tokenizer, "pre_tokenizer")) return -1;
    if (!pc.byte_level_seen) return lp_fail("%s: pre_tokenizer: no ByteLevel step (only byte-level BPE is supported)", path);
    if (check_decoder(sec->decoder, path)) return -1;
    return tok_finish(tok, path);
}

lp_tokenizer *lp_tokenizer_load_json_mem(const char *json, size_t len, const char *what) {
    lp_tokenizer *tok = tok_alloc();
    sections sec = {.model_opts = json_object()};
    int rc = build(tok, json, len, what, &sec);
    json_decref(sec.model_opts);
    json_decref(sec.added_tokens);
    json_decref(sec.normalizer);
    json_decref(sec.pre_tokenizer);
    json_decref(sec.decoder);
    if (rc) {
        lp_tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

lp_tokenizer *lp_tokenizer_load_json(const char *path) {
    lp_mmap m;
    if (lp_mmap_open(&m, path)) return NULL;
    lp_tokenizer *tok = lp_tokenizer_load_json_mem((const char *)m.data, (size_t)m.size, path);
    lp_mmap_close(&m);
    return tok;
}
