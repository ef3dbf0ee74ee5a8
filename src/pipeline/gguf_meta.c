/* gguf_meta.c — writes the model and tokenizer KVs of a GGUF file the way
 * convert_hf_to_gguf.py does for byte-level BPE models. */
#include "gguf_meta.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/fileio.h"

enum { TOK_NORMAL = 1, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5 };

static void set_arch_u32(lp_gguf_writer *w, const lp_hparams *hp, const char *suffix, uint32_t v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", hp->arch->gguf_arch, suffix);
    lp_gguf_set_u32(w, key, v);
}

static void set_arch_f32(lp_gguf_writer *w, const lp_hparams *hp, const char *suffix, float v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", hp->arch->gguf_arch, suffix);
    lp_gguf_set_f32(w, key, v);
}

static void write_rope_scaling(lp_gguf_writer *w, const lp_hparams *hp) {
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", hp->arch->gguf_arch);
    switch (hp->rope_scaling) {
    case LP_ROPE_SCALING_LINEAR:
        lp_gguf_set_str(w, key, "linear");
        set_arch_f32(w, hp, "rope.scaling.factor", hp->rope_factor);
        break;
    case LP_ROPE_SCALING_YARN:
        lp_gguf_set_str(w, key, "yarn");
        set_arch_f32(w, hp, "rope.scaling.factor", hp->rope_factor);
        set_arch_u32(w, hp, "rope.scaling.original_context_length", (uint32_t)hp->rope_orig_ctx);
        set_arch_f32(w, hp, "rope.scaling.yarn_beta_fast", hp->yarn_beta_fast);
        set_arch_f32(w, hp, "rope.scaling.yarn_beta_slow", hp->yarn_beta_slow);
        break;
    default: break; /* none; llama3 scaling is expressed as a rope_freqs tensor */
    }
}

static void write_hparams(lp_gguf_writer *w, const lp_hparams *hp) {
    set_arch_u32(w, hp, "block_count", (uint32_t)hp->n_layer);
    set_arch_u32(w, hp, "context_length", (uint32_t)hp->n_ctx_train);
    set_arch_u32(w, hp, "embedding_length", (uint32_t)hp->n_embd);
    set_arch_u32(w, hp, "feed_forward_length", (uint32_t)(hp->n_ff ? hp->n_ff : hp->n_ff_exp));
    set_arch_u32(w, hp, "attention.head_count", (uint32_t)hp->n_head);
    set_arch_u32(w, hp, "attention.head_count_kv", (uint32_t)hp->n_head_kv);
    set_arch_f32(w, hp, "rope.freq_base", hp->rope_theta);
    set_arch_f32(w, hp, "attention.layer_norm_rms_epsilon", hp->rms_eps);
    set_arch_u32(w, hp, "attention.key_length", (uint32_t)hp->head_dim);
    set_arch_u32(w, hp, "attention.value_length", (uint32_t)hp->head_dim);
    if (hp->arch->permute_qk) {
        set_arch_u32(w, hp, "rope.dimension_count", (uint32_t)hp->head_dim);
        set_arch_u32(w, hp, "vocab_size", (uint32_t)hp->n_vocab);
    }
    if (hp->n_expert > 0) {
        set_arch_u32(w, hp, "expert_count", (uint32_t)hp->n_expert);
        set_arch_u32(w, hp, "expert_used_count", (uint32_t)hp->n_expert_used);
        set_arch_u32(w, hp, "expert_feed_forward_length", (uint32_t)hp->n_ff_exp);
    }
    if (hp->arch->swa_alternating) set_arch_u32(w, hp, "attention.sliding_window", (uint32_t)hp->sliding_window);
    write_rope_scaling(w, hp);
}

/* ---- tokenizer ---- */

typedef struct {
    char **tokens;   /* by id */
    int32_t *types;
    int n;
    char **merges;
    int n_merges;
} vocab;

static void vocab_free(vocab *v) {
    for (int i = 0; i < v->n; i++) free(v->tokens[i]);
    for (int i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->types);
    free(v->merges);
}

/* Names like <|im_start|> are control tokens even when not marked special (llama.cpp's
 * does_token_look_special). */
static bool looks_special(const char *s) {
    size_t n = strlen(s);
    return (n >= 4 && strncmp(s, "<|", 2) == 0 && strcmp(s + n - 2, "|>") == 0) || strcmp(s, "<pad>") == 0 ||
           strcmp(s, "<mask>") == 0;
}

static int set_token(vocab *v, json_int_t id, const char *text, int32_t type, const char *path) {
    if (id < 0 || id >= v->n) return lp_fail("%s: token '%s' has id %lld outside the vocabulary of %d", path, text, (long long)id, v->n);
    free(v->tokens[id]);
    v->tokens[id] = lp_xstrdup(text);
    v->types[id] = type;
    return 0;
}

/* merges are "a b" strings or ["a", "b"] pairs (tokenizers >= 0.20). */
static int read_merges(vocab *v, const json_t *merges, const char *path) {
    if (!json_is_array(merges)) return lp_fail("%s: field 'model.merges': missing (BPE merges are required)", path);
    v->n_merges = (int)json_array_size(merges);
    v->merges = lp_xcalloc((size_t)v->n_merges + 1, sizeof(char *));
    for (int i = 0; i < v->n_merges; i++) {
        const json_t *m = json_array_get(merges, (size_t)i);
        if (json_is_string(m))
            v->merges[i] = lp_xstrdup(json_string_value(m));
        else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                 json_is_string(json_array_get(m, 1)))
            v->merges[i] = lp_xasprintf("%s %s", json_string_value(json_array_get(m, 0)), json_string_value(json_array_get(m, 1)));
        else
            return lp_fail("%s: field 'model.merges[%d]': expected \"a b\" or [a, b]", path, i);
    }
    return 0;
}

static int read_vocab(vocab *v, const char *tokenizer_path, int n_vocab) {
    json_error_t jerr;
    json_t *root = json_load_file(tokenizer_path, 0, &jerr);
    if (!root) return lp_fail("%s: line %d: %s", tokenizer_path, jerr.line, jerr.text);
    int rc = -1;
    const json_t *model = json_object_get(root, "model");
    const json_t *vmap = json_object_get(model, "vocab");
    const json_t *type = json_object_get(model, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "BPE") != 0) {
        lp_fail("%s: field 'model.type': only BPE tokenizers are supported", tokenizer_path);
        goto out;
    }
    if (!json_is_object(vmap)) {
        lp_fail("%s: field 'model.vocab': missing", tokenizer_path);
        goto out;
    }
    v->n = n_vocab;
    v->tokens = lp_xcalloc((size_t)n_vocab, sizeof(char *));
    v->types = lp_xcalloc((size_t)n_vocab, sizeof(int32_t));
    const char *text;
    json_t *idv;
    json_object_foreach((json_t *)vmap, text, idv) {
        if (!json_is_integer(idv) || set_token(v, json_integer_value(idv), text, TOK_NORMAL, tokenizer_path) != 0) goto out;
    }
    size_t i;
    json_t *added;
    json_array_foreach(json_object_get(root, "added_tokens"), i, added) {
        const json_t *content = json_object_get(added, "content");
        if (!json_is_string(content)) continue;
        bool special = json_is_true(json_object_get(added, "special")) || looks_special(json_string_value(content));
        if (set_token(v, json_integer_value(json_object_get(added, "id")), json_string_value(content),
                      special ? TOK_CONTROL : TOK_USER_DEFINED, tokenizer_path) != 0)
            goto out;
    }
    for (int id = 0; id < n_vocab; id++) /* embedding rows without a token, as llama.cpp pads them */
        if (!v->tokens[id]) {
            v->tokens[id] = lp_xasprintf("[PAD%d]", id);
            v->types[id] = TOK_UNUSED;
        }
    rc = read_merges(v, json_object_get(model, "merges"), tokenizer_path);
out:
    json_decref(root);
    return rc;
}

/* tokenizer_config.json "bos_token"/"eos_token"/"pad_token" may be a string or {"content": ...}. */
static int config_token_id(const json_t *tcfg, const char *key, const vocab *v) {
    const json_t *t = json_object_get(tcfg, key);
    if (json_is_object(t)) t = json_object_get(t, "content");
    if (!json_is_string(t)) return -1;
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->tokens[i], json_string_value(t)) == 0) return i;
    return -1;
}

static const char *pre_tokenizer_name(const lp_hparams *hp) {
    if (hp->arch->permute_qk) return "llama-bpe";
    if (hp->arch->clamped_swiglu) return "gpt-4o";
    return "qwen2";
}

char *lp_hf_chat_template(const char *model_dir) {
    char *jinja = lp_path_join(model_dir, "chat_template.jinja");
    char *tpl = lp_path_exists(jinja) ? lp_read_file(jinja, NULL) : NULL;
    free(jinja);
    if (tpl) return tpl;
    char *cfg_path = lp_path_join(model_dir, "tokenizer_config.json");
    json_t *tcfg = json_load_file(cfg_path, 0, NULL);
    free(cfg_path);
    const json_t *t = json_object_get(tcfg, "chat_template");
    if (json_is_string(t)) tpl = lp_xstrdup(json_string_value(t));
    json_decref(tcfg);
    return tpl;
}

static int write_tokenizer(lp_gguf_writer *w, const lp_hparams *hp, const char *model_dir) {
    char *tok_path = lp_path_join(model_dir, "tokenizer.json");
    vocab v = {0};
    int rc = read_vocab(&v, tok_path, hp->n_vocab);
    free(tok_path);
    if (rc != 0) {
        vocab_free(&v);
        return -1;
    }
    char *cfg_path = lp_path_join(model_dir, "tokenizer_config.json");
    json_t *tcfg = json_load_file(cfg_path, 0, NULL); /* optional */
    free(cfg_path);
    lp_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    lp_gguf_set_str(w, "tokenizer.ggml.pre", pre_tokenizer_name(hp));
    lp_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tokens, (uint64_t)v.n);
    lp_gguf_set_arr_i32(w, "tokenizer.ggml.token_type", v.types, (uint64_t)v.n);
    lp_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v.merges, (uint64_t)v.n_merges);
    int eos = config_token_id(tcfg, "eos_token", &v), bos = config_token_id(tcfg, "bos_token", &v);
    int pad = config_token_id(tcfg, "pad_token", &v);
    if (eos < 0 && hp->n_eos > 0) eos = hp->eos_token_ids[0];
    if (bos < 0) bos = hp->bos_token_id;
    if (pad < 0) pad = hp->pad_token_id;
    if (eos >= 0) lp_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (bos >= 0) lp_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (pad >= 0) lp_gguf_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)pad);
    const json_t *add_bos = json_object_get(tcfg, "add_bos_token");
    lp_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(add_bos));
    char *tpl = lp_hf_chat_template(model_dir);
    if (tpl) lp_gguf_set_str(w, "tokenizer.chat_template", tpl);
    free(tpl);
    json_decref(tcfg);
    vocab_free(&v);
    return 0;
}

int lp_gguf_meta_write(lp_gguf_writer *w, const lp_hparams *hp, const lp_gguf_meta_args *args) {
    lp_gguf_set_str(w, "general.architecture", hp->arch->gguf_arch);
    lp_gguf_set_str(w, "general.type", "model");
    lp_gguf_set_str(w, "general.name", args->model_name);
    write_hparams(w, hp);
    lp_gguf_set_u32(w, "general.file_type", args->file_type);
    lp_gguf_set_u32(w, "general.quantization_version", 2);
    return write_tokenizer(w, hp, args->model_dir);
}
