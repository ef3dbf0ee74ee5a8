/* gguf_meta.c — writes the model and tokenizer KVs of a GGUF file the way
 * convert_hf_to_gguf.py does for byte-level BPE models. */
#include "gguf_meta.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/fileio.h"
#include "../tokenizer/tokenizer.h"

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
        char key[128];
        snprintf(key, sizeof key, "%s.expert_weights_norm", hp->arch->gguf_arch);
        lp_gguf_set_bool(w, key, hp->expert_norm_topk);
    }
    if (hp->arch->swa_alternating) set_arch_u32(w, hp, "attention.sliding_window", (uint32_t)hp->sliding_window);
    write_rope_scaling(w, hp);
}

/* ---- tokenizer ---- */

/* tokenizer_config.json "bos_token"/"eos_token"/"pad_token" may be a string or {"content": ...}. */
static int config_token_id(const json_t *tcfg, const char *key, const lp_tokenizer *tok) {
    const json_t *t = json_object_get(tcfg, key);
    if (json_is_object(t)) t = json_object_get(t, "content");
    return json_is_string(t) ? lp_tokenizer_find(tok, json_string_value(t)) : -1;
}

/* When the tokenizer's split regex matches no known pre-tokenizer, guess by family. */
static const char *pre_tokenizer_fallback(const lp_hparams *hp) {
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
    lp_tokenizer *tok = lp_tokenizer_load_json(tok_path);
    free(tok_path);
    if (!tok) return -1;
    char **tokens = NULL, **merges = NULL;
    int32_t *types = NULL;
    size_t n_tokens = 0, n_merges = 0;
    if (lp_tokenizer_export_vocab(tok, (size_t)hp->n_vocab, &tokens, &types, &n_tokens) != 0 ||
        lp_tokenizer_export_merges(tok, &merges, &n_merges) != 0) {
        lp_tokenizer_free(tok);
        return lp_fail_prefix("%s/tokenizer.json", model_dir);
    }
    char *cfg_path = lp_path_join(model_dir, "tokenizer_config.json");
    json_t *tcfg = json_load_file(cfg_path, 0, NULL); /* optional */
    free(cfg_path);
    const char *pre = lp_tokenizer_pre_name(tok);
    lp_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    lp_gguf_set_str(w, "tokenizer.ggml.pre", pre ? pre : pre_tokenizer_fallback(hp));
    lp_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, (uint64_t)n_tokens);
    lp_gguf_set_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)n_tokens);
    lp_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, (uint64_t)n_merges);
    int eos = config_token_id(tcfg, "eos_token", tok), bos = config_token_id(tcfg, "bos_token", tok);
    int pad = config_token_id(tcfg, "pad_token", tok);
    if (eos < 0 && hp->n_eos > 0) eos = hp->eos_token_ids[0];
    if (bos < 0) bos = hp->bos_token_id;
    if (pad < 0) pad = hp->pad_token_id;
    if (eos >= 0) lp_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (bos >= 0) lp_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (pad >= 0) lp_gguf_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)pad);
    lp_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(json_object_get(tcfg, "add_bos_token")));
    char *tpl = lp_hf_chat_template(model_dir);
    if (tpl) lp_gguf_set_str(w, "tokenizer.chat_template", tpl);
    free(tpl);
    json_decref(tcfg);
    lp_tokenizer_free_strings(tokens, n_tokens);
    lp_tokenizer_free_strings(merges, n_merges);
    free(types);
    lp_tokenizer_free(tok);
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
