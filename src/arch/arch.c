/* arch.c — the architecture registry, HF config reading common to all
 * families, and tensor-name formatting. Family quirks live in arch/<family>.c. */
#include "arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/fileio.h"

extern const lp_arch lp_arch_qwen3, lp_arch_qwen2, lp_arch_llama, lp_arch_qwen3moe, lp_arch_gptoss;

static const lp_arch *const registry[] = {&lp_arch_qwen3, &lp_arch_qwen2, &lp_arch_llama, &lp_arch_qwen3moe,
                                          &lp_arch_gptoss};
enum { N_ARCH = sizeof registry / sizeof registry[0] };

int lp_arch_count(void) { return N_ARCH; }
const lp_arch *lp_arch_at(int i) { return i >= 0 && i < N_ARCH ? registry[i] : NULL; }

const lp_arch *lp_arch_by_model_type(const char *model_type) {
    for (int i = 0; i < N_ARCH; i++)
        if (strcmp(registry[i]->model_type, model_type) == 0) return registry[i];
    return NULL;
}

const lp_arch *lp_arch_by_gguf_name(const char *gguf_arch) {
    for (int i = 0; i < N_ARCH; i++)
        if (strcmp(registry[i]->gguf_arch, gguf_arch) == 0) return registry[i];
    return NULL;
}

const lp_tensor_map *lp_arch_tensor(const lp_arch *a, lp_role role) {
    for (const lp_tensor_map *m = a->tensors; m->role != LP_T_COUNT; m++)
        if (m->role == role) return m;
    return NULL;
}

bool lp_role_per_layer(lp_role role) { return role >= LP_T_FIRST_LAYER_ROLE && role < LP_T_COUNT; }

void lp_tensor_name_gguf(const lp_tensor_map *m, int layer, char *buf, size_t n) {
    if (lp_role_per_layer(m->role))
        snprintf(buf, n, m->gguf, layer);
    else
        snprintf(buf, n, "%s", m->gguf);
}

void lp_tensor_name_hf(const lp_tensor_map *m, int layer, int expert, char *buf, size_t n) {
    if (!lp_role_per_layer(m->role))
        snprintf(buf, n, "%s", m->hf);
    else if (m->src == LP_SRC_EXPERT_STACK)
        snprintf(buf, n, m->hf, layer, expert);
    else
        snprintf(buf, n, m->hf, layer);
}

bool lp_use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* ---- config.json reading ---- */

/* Integer field: returns def when absent or null; -1 (error set) when of another type. */
static int get_int(const json_t *cfg, const char *key, int def, int *out, const char *path) {
    const json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < -1 || x > 1 << 30) return lp_fail("%s: field '%s': value %lld out of range", path, key, (long long)x);
        *out = (int)x;
        return 0;
    }
    if (json_is_real(v) && json_real_value(v) == (double)(int)json_real_value(v)) {
        *out = (int)json_real_value(v);
        return 0;
    }
    return lp_fail("%s: field '%s': expected an integer", path, key);
}

static int get_float(const json_t *cfg, const char *key, float def, float *out, const char *path) {
    const json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) return lp_fail("%s: field '%s': expected a number", path, key);
    *out = (float)json_number_value(v);
    return 0;
}

/* The first of several spellings that is present. */
static const char *first_key(const json_t *cfg, const char *const *keys) {
    for (; *keys; keys++) {
        const json_t *v = json_object_get(cfg, *keys);
        if (v && !json_is_null(v)) return *keys;
    }
    return NULL;
}

static int get_int_any(const json_t *cfg, const char *const *keys, int def, int *out, const char *path) {
    const char *k = first_key(cfg, keys);
    if (!k) {
        *out = def;
        return 0;
    }
    return get_int(cfg, k, def, out, path);
}

/* eos_token_id may be an int or a list of ints. */
static int read_eos(const json_t *v, lp_hparams *hp, const char *path) {
    if (!v || json_is_null(v)) return 0;
    hp->n_eos = 0;
    if (json_is_integer(v)) {
        hp->eos_token_ids[hp->n_eos++] = (int)json_integer_value(v);
        return 0;
    }
    if (!json_is_array(v)) return lp_fail("%s: field 'eos_token_id': expected an integer or a list", path);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_integer(e)) return lp_fail("%s: field 'eos_token_id[%zu]': expected an integer", path, i);
        if (hp->n_eos < LP_MAX_EOS) hp->eos_token_ids[hp->n_eos++] = (int)json_integer_value(e);
    }
    return 0;
}

/* rope parameters: newer files put rope_theta and scaling inside "rope_parameters",
 * older ones use top-level "rope_theta" and "rope_scaling". */
static int read_rope(const json_t *cfg, lp_hparams *hp, const char *path) {
    const json_t *params = json_object_get(cfg, "rope_parameters");
    const json_t *scaling = json_object_get(cfg, "rope_scaling");
    if (params && !json_is_object(params)) params = NULL;
    if (scaling && !json_is_object(scaling)) scaling = NULL;
    if (get_float(cfg, "rope_theta", 10000.0f, &hp->rope_theta, path) != 0) return -1;
    if (params && get_float(params, "rope_theta", hp->rope_theta, &hp->rope_theta, path) != 0) return -1;
    const json_t *s = scaling ? scaling : params;
    hp->rope_scaling = LP_ROPE_SCALING_NONE;
    hp->rope_factor = 1.0f;
    hp->yarn_truncate = true;
    if (!s) return 0;
    const json_t *t = json_object_get(s, "rope_type");
    if (!t) t = json_object_get(s, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    if (strcmp(type, "default") == 0) return 0;
    if (strcmp(type, "linear") == 0)
        hp->rope_scaling = LP_ROPE_SCALING_LINEAR;
    else if (strcmp(type, "yarn") == 0)
        hp->rope_scaling = LP_ROPE_SCALING_YARN;
    else if (strcmp(type, "llama3") == 0)
        hp->rope_scaling = LP_ROPE_SCALING_LLAMA3;
    else
        return lp_fail("%s: field 'rope_scaling.rope_type': unsupported value '%s'", path, type);
    if (get_float(s, "factor", 1.0f, &hp->rope_factor, path) != 0) return -1;
    if (get_int(s, "original_max_position_embeddings", 0, &hp->rope_orig_ctx, path) != 0) return -1;
    if (get_float(s, "beta_fast", 32.0f, &hp->yarn_beta_fast, path) != 0) return -1;
    if (get_float(s, "beta_slow", 1.0f, &hp->yarn_beta_slow, path) != 0) return -1;
    if (get_float(s, "low_freq_factor", 1.0f, &hp->rope_low_freq_factor, path) != 0) return -1;
    if (get_float(s, "high_freq_factor", 4.0f, &hp->rope_high_freq_factor, path) != 0) return -1;
    const json_t *trunc = json_object_get(s, "truncate");
    if (json_is_boolean(trunc)) hp->yarn_truncate = json_is_true(trunc);
    return 0;
}

static int read_common(const json_t *cfg, lp_hparams *hp, const char *path) {
    static const char *const n_expert_keys[] = {"num_local_experts", "num_experts", NULL};
    static const char *const n_used_keys[] = {"num_experts_per_tok", "num_experts_per_token", "experts_per_token", NULL};
    if (get_int(cfg, "num_hidden_layers", 0, &hp->n_layer, path) || get_int(cfg, "hidden_size", 0, &hp->n_embd, path) ||
        get_int(cfg, "num_attention_heads", 0, &hp->n_head, path) ||
        get_int(cfg, "num_key_value_heads", 0, &hp->n_head_kv, path) ||
        get_int(cfg, "intermediate_size", 0, &hp->n_ff, path) || get_int(cfg, "vocab_size", 0, &hp->n_vocab, path) ||
        get_int(cfg, "max_position_embeddings", 0, &hp->n_ctx_train, path) ||
        get_int(cfg, "head_dim", 0, &hp->head_dim, path) ||
        get_int_any(cfg, n_expert_keys, 0, &hp->n_expert, path) ||
        get_int_any(cfg, n_used_keys, 0, &hp->n_expert_used, path) ||
        get_int(cfg, "bos_token_id", -1, &hp->bos_token_id, path) ||
        get_int(cfg, "pad_token_id", -1, &hp->pad_token_id, path) ||
        get_int(cfg, "sliding_window", 0, &hp->sliding_window, path) ||
        get_float(cfg, "rms_norm_eps", 1e-6f, &hp->rms_eps, path))
        return -1;
    if (hp->n_layer <= 0) return lp_fail("%s: field 'num_hidden_layers': missing or not positive", path);
    if (hp->n_layer > LP_MAX_LAYERS) return lp_fail("%s: field 'num_hidden_layers': %d layers (max %d)", path, hp->n_layer, LP_MAX_LAYERS);
    if (hp->n_embd <= 0) return lp_fail("%s: field 'hidden_size': missing or not positive", path);
    if (hp->n_head <= 0) return lp_fail("%s: field 'num_attention_heads': missing or not positive", path);
    if (hp->n_vocab <= 0) return lp_fail("%s: field 'vocab_size': missing or not positive", path);
    if (hp->n_head_kv <= 0) hp->n_head_kv = hp->n_head;
    if (hp->n_head % hp->n_head_kv != 0)
        return lp_fail("%s: field 'num_key_value_heads': %d does not divide %d heads", path, hp->n_head_kv, hp->n_head);
    if (hp->head_dim <= 0) hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->n_ctx_train <= 0) hp->n_ctx_train = 4096;
    const json_t *tie = json_object_get(cfg, "tie_word_embeddings");
    hp->tied_embeddings = tie && json_is_true(tie);
    const json_t *bias = json_object_get(cfg, "attention_bias");
    hp->attn_bias = bias && json_is_true(bias);
    const char *dtype_key = first_key(cfg, (const char *const[]){"dtype", "torch_dtype", NULL});
    const json_t *dt = dtype_key ? json_object_get(cfg, dtype_key) : NULL;
    snprintf(hp->dtype, sizeof hp->dtype, "%s", json_is_string(dt) ? json_string_value(dt) : "float32");
    const json_t *use_swa = json_object_get(cfg, "use_sliding_window");
    if (use_swa && json_is_false(use_swa)) hp->sliding_window = 0;
    if (read_eos(json_object_get(cfg, "eos_token_id"), hp, path) != 0) return -1;
    return read_rope(cfg, hp, path);
}

int lp_hparams_from_config(const json_t *cfg, const char *path, lp_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    if (!json_is_object(cfg)) return lp_fail("%s: not a JSON object", path);
    const json_t *mt = json_object_get(cfg, "model_type");
    if (!json_is_string(mt)) return lp_fail("%s: field 'model_type': missing", path);
    hp->arch = lp_arch_by_model_type(json_string_value(mt));
    if (!hp->arch) return lp_fail("%s: field 'model_type': unsupported architecture '%s'", path, json_string_value(mt));
    if (read_common(cfg, hp, path) != 0) return -1;
    if (hp->arch->read_config && hp->arch->read_config(cfg, hp, path) != 0) return -1;
    return 0;
}

/* generation_config.json overrides eos ids (Qwen3 lists both <|im_end|> and <|endoftext|> there). */
static int read_generation_config(const char *config_path, lp_hparams *hp) {
    char *dir = lp_xstrdup(config_path);
    char *slash = strrchr(dir, '/');
    char *gen_path = slash ? (*slash = 0, lp_path_join(dir, "generation_config.json")) : lp_xstrdup("generation_config.json");
    int rc = 0;
    if (lp_path_exists(gen_path)) {
        json_error_t jerr;
        json_t *gen = json_load_file(gen_path, 0, &jerr);
        if (!gen)
            rc = lp_fail("%s: line %d: %s", gen_path, jerr.line, jerr.text);
        else {
            rc = read_eos(json_object_get(gen, "eos_token_id"), hp, gen_path);
            json_decref(gen);
        }
    }
    free(gen_path);
    free(dir);
    return rc;
}

int lp_hparams_from_config_file(const char *config_path, lp_hparams *hp) {
    json_error_t jerr;
    json_t *cfg = json_load_file(config_path, 0, &jerr);
    if (!cfg) {
        if (!lp_path_exists(config_path)) return lp_fail("%s: file not found", config_path);
        return lp_fail("%s: line %d: %s", config_path, jerr.line, jerr.text);
    }
    int rc = lp_hparams_from_config(cfg, config_path, hp);
    json_decref(cfg);
    if (rc == 0) rc = read_generation_config(config_path, hp);
    return rc;
}
