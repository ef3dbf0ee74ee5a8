/* textgen.c — loading an artifact for generation, and the single-sequence
 * generation loop (prefill, sample, stream, stop). */
#include "textgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "formats/gguf.h"
#include "backend/select.h"
#include "pipeline/gguf_meta.h"

/* ---- artifact resolution ---- */

/* Preference when a manifest lists several artifacts: the usual speed/quality sweet spot
 * first, then higher precisions, then the rest. */
static const char *const preferred[] = {"q4_k_m", "q5_k_m", "q6_k", "q8_0", "4bit-mixed", "4bit", "q3_k_m",
                                        "6bit", "8bit", "f16", "bf16", "f32", "q2_k", NULL};

static char *from_manifest(const char *dir, const char *manifest_path) {
    json_error_t jerr;
    json_t *m = json_load_file(manifest_path, 0, &jerr);
    if (!m) {
        lp_fail("%s: line %d: %s", manifest_path, jerr.line, jerr.text);
        return NULL;
    }
    const json_t *arts = json_object_get(m, "artifacts");
    char *found = NULL;
    for (int p = 0; preferred[p] && !found; p++) {
        size_t i;
        json_t *a;
        json_array_foreach(arts, i, a) {
            const char *prec = json_string_value(json_object_get(a, "precision"));
            const char *path = json_string_value(json_object_get(a, "path"));
            if (prec && path && strcmp(prec, preferred[p]) == 0) {
                found = lp_path_join(dir, path);
                break;
            }
        }
    }
    if (!found && json_array_size(arts) > 0) {
        const char *path = json_string_value(json_object_get(json_array_get(arts, 0), "path"));
        if (path) found = lp_path_join(dir, path);
    }
    if (!found) lp_fail("%s: field 'artifacts': no artifact listed", manifest_path);
    json_decref(m);
    return found;
}

char *lp_resolve_artifact(const char *path, const char *backend) {
    (void)backend; /* one preference order serves both backends today */
    if (!lp_path_exists(path)) {
        lp_fail("%s: no such file or directory", path);
        return NULL;
    }
    if (!lp_is_dir(path)) return lp_xstrdup(path);
    char *manifest = lp_path_join(path, "manifest.json");
    char *cfg = lp_path_join(path, "config.json");
    char *out = NULL;
    if (lp_path_exists(cfg))
        out = lp_xstrdup(path);
    else if (lp_path_exists(manifest))
        out = from_manifest(path, manifest);
    else
        lp_fail("%s: not a model (no .gguf file, config.json or manifest.json)", path);
    free(manifest);
    free(cfg);
    return out;
}

/* ---- tokenizer and template from the artifact ---- */

/* The first n strings of a GGUF string array as NUL-terminated copies (the file's are not). */
static char **copy_str_array(const lp_gguf *g, const char *key, uint64_t n) {
    char **out = lp_xcalloc(n + 1, sizeof(char *));
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        const char *s = lp_gguf_get_arr_str(g, key, i, &len);
        out[i] = lp_xmalloc(len + 1);
        memcpy(out[i], s, len);
        out[i][len] = 0;
    }
    return out;
}

static lp_tokenizer *tokenizer_from_gguf(const lp_gguf *g) {
    lp_gguf_vtype et;
    uint64_t n_tok = 0, n_merges = 0;
    if (lp_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_tok) != 0 || et != LP_GGUF_STRING) {
        lp_fail("%s: key 'tokenizer.ggml.tokens': missing or not a string array", lp_gguf_path(g));
        return NULL;
    }
    const char *model = lp_gguf_get_str(g, "tokenizer.ggml.model");
    if (!model || strcmp(model, "gpt2") != 0) {
        lp_fail("%s: key 'tokenizer.ggml.model': only byte-level BPE ('gpt2') is supported", lp_gguf_path(g));
        return NULL;
    }
    if (lp_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n_merges) != 0 || et != LP_GGUF_STRING) n_merges = 0;
    char **tokens = copy_str_array(g, "tokenizer.ggml.tokens", n_tok);
    char **merges = copy_str_array(g, "tokenizer.ggml.merges", n_merges);
    uint64_t n_types = 0;
    const int32_t *types = NULL;
    int32_t *types_copy = NULL;
    if (lp_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n_types) == 0 && et == LP_GGUF_I32 && n_types == n_tok) {
        types_copy = lp_xmalloc(sizeof(int32_t) * n_tok);
        memcpy(types_copy, lp_gguf_get_arr_data(g, "tokenizer.ggml.token_type"), sizeof(int32_t) * n_tok);
        types = types_copy;
    }
    const char *pre = lp_gguf_get_str(g, "tokenizer.ggml.pre");
    lp_tokenizer *tok = lp_tokenizer_from_vocab((const char *const *)tokens, n_tok, types, (const char *const *)merges,
                                                n_merges, pre ? pre : "gpt2");
    for (uint64_t i = 0; i < n_tok; i++) free(tokens[i]);
    for (uint64_t i = 0; i < n_merges; i++) free(merges[i]);
    free(tokens);
    free(merges);
    free(types_copy);
    return tok;
}

static void add_eog(lp_textgen *tg, int32_t id) {
    if (id < 0) return;
    for (int i = 0; i < tg->n_eog; i++)
        if (tg->eog[i] == id) return;
    if (tg->n_eog < LP_MAX_EOG) tg->eog[tg->n_eog++] = id;
}

/* End-of-generation tokens: the model's eos ids plus the end-of-turn markers of the chat
 * formats we know (llama.cpp does the same: a GGUF stores only one eos id). */
static void collect_eog(lp_textgen *tg) {
    static const char *const markers[] = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|return|>",
                                          "<|call|>", "<|end_of_text|>", NULL};
    const lp_gguf *g = lp_model_gguf(tg->model);
    uint32_t eos;
    if (g && lp_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos) == 0) add_eog(tg, (int32_t)eos);
    for (int i = 0; i < tg->model->hp.n_eos; i++) add_eog(tg, tg->model->hp.eos_token_ids[i]);
    for (int i = 0; markers[i]; i++) {
        int32_t id = lp_tokenizer_find(tg->tok, markers[i]);
        if (id >= 0 && lp_tokenizer_is_special(tg->tok, id)) add_eog(tg, id);
    }
}

static int load_text_side(lp_textgen *tg) {
    const lp_gguf *g = lp_model_gguf(tg->model);
    char *tpl = NULL;
    if (g) {
        tg->tok = tokenizer_from_gguf(g);
        const char *s = lp_gguf_get_str(g, "tokenizer.chat_template");
        if (s) tpl = lp_xstrdup(s);
    } else {
        char *path = lp_path_join(tg->artifact, "tokenizer.json");
        tg->tok = lp_tokenizer_load_json(path);
        free(path);
        tpl = lp_hf_chat_template(tg->artifact);
    }
    if (!tg->tok) return -1;
    if (tpl) {
        tg->chat_template = lp_template_compile_named(tpl, "chat_template");
        free(tpl);
        if (!tg->chat_template) return -1;
    }
    collect_eog(tg);
    return 0;
}

static char *display_name(const char *artifact) {
    char *s = lp_xstrdup(lp_path_basename(artifact));
    size_t n = strlen(s);
    if (n > 5 && strcmp(s + n - 5, ".gguf") == 0) s[n - 5] = 0;
    return s;
}

lp_textgen *lp_textgen_open(const lp_textgen_opts *o) {
    const char *backend = o->backend ? o->backend : "auto";
    if (strcmp(backend, "auto") != 0 && strcmp(backend, "cpu") != 0 && strcmp(backend, "cuda") != 0) {
        lp_fail("--backend: expected auto, cpu or cuda, got '%s'", backend);
        return NULL;
    }
    lp_textgen *tg = lp_xcalloc(1, sizeof *tg);
    tg->artifact = lp_resolve_artifact(o->model_path, backend);
    if (!tg->artifact) goto fail;
    tg->name = display_name(tg->artifact);
    tg->model = lp_model_load(tg->artifact);
    if (!tg->model || load_text_side(tg) != 0) goto fail;
    lp_engine_params ep = {.n_ctx = o->n_ctx, .n_slots = o->n_slots, .n_batch = o->n_batch, .n_threads = o->n_threads};
    tg->engine = lp_backend_engine_create(tg->model, backend, &ep, &tg->backend_name);
    if (!tg->engine) goto fail;
    return tg;
fail:
    lp_textgen_free(tg);
    return NULL;
}

void lp_textgen_free(lp_textgen *tg) {
    if (!tg) return;
    lp_engine_free(tg->engine);
    lp_template_free(tg->chat_template);
    lp_tokenizer_free(tg->tok);
    lp_model_free(tg->model);
    free(tg->artifact);
    free(tg->name);
    free(tg->cached);
    free(tg);
}

bool lp_textgen_is_eog(const lp_textgen *tg, int32_t token) {
    for (int i = 0; i < tg->n_eog; i++)
        if (tg->eog[i] == token) return true;
    return false;
}

char *lp_textgen_render_chat(const lp_textgen *tg, const json_t *messages, const json_t *tools,
                             bool add_generation_prompt, const json_t *extra) {
    if (!tg->chat_template) {
        lp_fail("%s: the model has no chat template", tg->name);
        return NULL;
    }
    return lp_chat_render(tg->chat_template, messages, tools, add_generation_prompt, extra, NULL, NULL);
}

int lp_textgen_encode(const lp_textgen *tg, const char *text, bool parse_special, int32_t **ids, int *n) {
    size_t count = 0;
    if (lp_tokenizer_encode(tg->tok, text, strlen(text), parse_special, ids, &count) != 0) return -1;
    *n = (int)count;
    return 0;
}

/* ---- streaming detokenizer ---- */

void lp_detok_init(lp_detok *d, const lp_tokenizer *tok, const char *const *stops, int n_stops) {
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->stops = stops;
    d->n_stops = n_stops;
    d->cap = 256;
    d->buf = lp_xmalloc(d->cap);
}

void lp_detok_free(lp_detok *d) {
    free(d->buf);
    free(d->out);
    memset(d, 0, sizeof *d);
}

/* Move the first n pending bytes to the output scratch buffer. */
static void take(lp_detok *d, size_t n, const char **out, size_t *out_len) {
    if (n + 1 > d->out_cap) {
        d->out_cap = n + 1 > 2 * d->out_cap ? n + 1 : 2 * d->out_cap;
        d->out = lp_xrealloc(d->out, d->out_cap);
    }
    memcpy(d->out, d->buf, n);
    d->out[n] = 0;
    memmove(d->buf, d->buf + n, d->len - n);
    d->len -= n;
    *out = d->out;
    *out_len = n;
}

bool lp_detok_push(lp_detok *d, int32_t token, const char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (d->stopped) return true;
    size_t piece_len = 0;
    const char *piece = lp_tokenizer_token_bytes(d->tok, token, &piece_len);
    if (piece && !lp_tokenizer_is_special(d->tok, token)) {
        if (d->len + piece_len + 1 > d->cap) {
            while (d->len + piece_len + 1 > d->cap) d->cap *= 2;
            d->buf = lp_xrealloc(d->buf, d->cap);
        }
        memcpy(d->buf + d->len, piece, piece_len);
        d->len += piece_len;
    }
    size_t safe = d->len;
    if (d->n_stops > 0 && lp_stop_scan(d->buf, d->len, d->stops, d->n_stops, &safe) >= 0) {
        d->stopped = true;
        d->len = safe; /* drop the stop string and whatever followed it */
        take(d, safe, out, out_len);
        return true;
    }
    size_t stable = lp_utf8_stable_len(d->buf, safe);
    take(d, stable, out, out_len);
    return false;
}

void lp_detok_flush(lp_detok *d, const char **out, size_t *out_len) {
    take(d, d->stopped ? 0 : d->len, out, out_len);
}

/* ---- generation loop ---- */

int lp_textgen_generate(lp_textgen *tg, const int32_t *prompt, int n_prompt, const lp_gen_params *p, lp_emit_fn emit,
                        void *ud, lp_gen_stats *stats) {
    memset(stats, 0, sizeof *stats);
    int n_ctx = lp_engine_n_ctx(tg->engine), n_vocab = lp_engine_n_vocab(tg->engine);
    if (n_prompt <= 0) return lp_fail("prompt is empty");
    if (n_prompt >= n_ctx)
        return lp_fail("prompt is %d tokens, but the context holds %d (use --ctx-size)", n_prompt, n_ctx);
    float *logits = lp_engine_logits_alloc(tg->engine, 1);
    lp_sampler *s = lp_sampler_create(&p->sampling, n_vocab);
    for (int i = 0; i < n_prompt; i++) lp_sampler_accept(s, prompt[i]);
    lp_detok d;
    lp_detok_init(&d, tg->tok, p->stops, p->n_stops);
    stats->n_prompt = n_prompt;
    tg->cached = lp_xrealloc(tg->cached, sizeof(int32_t) * (size_t)n_ctx);
    int reuse = 0;
    while (reuse < tg->n_cached && reuse < n_prompt - 1 && tg->cached[reuse] == prompt[reuse]) reuse++;
    memcpy(tg->cached + reuse, prompt + reuse, sizeof(int32_t) * (size_t)(n_prompt - reuse));
    tg->n_cached = 0; /* until the evaluation succeeds */
    double t0 = lp_now();
    int rc = lp_engine_eval(tg->engine, 0, reuse, prompt + reuse, n_prompt - reuse, logits, false);
    if (rc == 0) tg->n_cached = n_prompt;
    stats->prefill_seconds = lp_now() - t0;
    t0 = lp_now();
    int pos = n_prompt, limit = p->max_tokens > 0 ? p->max_tokens : n_ctx;
    stats->finish = LP_FINISH_LENGTH;
    while (rc == 0 && stats->n_generated < limit && pos < n_ctx) {
        int32_t tok = lp_sampler_sample(s, logits);
        if (!p->ignore_eos && lp_textgen_is_eog(tg, tok)) {
            stats->finish = LP_FINISH_STOP;
            break;
        }
        lp_sampler_accept(s, tok);
        stats->n_generated++;
        const char *text;
        size_t len;
        bool stop = lp_detok_push(&d, tok, &text, &len);
        if (len && emit && emit(ud, text, len) != 0) {
            stats->finish = LP_FINISH_CANCELLED;
            break;
        }
        if (stop) {
            stats->finish = LP_FINISH_STOP;
            break;
        }
        if (stats->n_generated >= limit) break;
        rc = lp_engine_eval(tg->engine, 0, pos++, &tok, 1, logits, false);
        if (rc == 0) tg->cached[tg->n_cached++] = tok;
    }
    stats->decode_seconds = lp_now() - t0;
    if (rc == 0 && stats->finish != LP_FINISH_CANCELLED) {
        const char *text;
        size_t len;
        lp_detok_flush(&d, &text, &len);
        if (len && emit) emit(ud, text, len);
    }
    lp_detok_free(&d);
    lp_sampler_free(s);
    lp_engine_logits_free(tg->engine, logits);
    return rc;
}
