/* hparams_gguf.c — reads lp_hparams from GGUF metadata (owned by the runtime
 * helper; the config.json reader lives in arch.c). Key names and defaults follow
 * llama.cpp's load_hparams (FORMATS.md 3.3/3.4); facts GGUF keeps only as
 * tensors (vocab rows, tied lm_head, biases) come from the tensor infos. */
#include "hparams_gguf.h"

#include <stdio.h>
#include <string.h>

#include "../core/err.h"

typedef struct {
    const lp_gguf *g;
    const char *arch; /* general.architecture */
    const char *path;
} kv_reader;

static const char *arch_key(const kv_reader *r, const char *suffix, char *buf, size_t n) {
    snprintf(buf, n, "%s.%s", r->arch, suffix);
    return buf;
}

/* An integer key that may also be stored llama.cpp-style as a per-layer array;
 * arrays are accepted only when every layer has the same value. */
static int read_uint(const kv_reader *r, const char *suffix, bool required, int def, int *out) {
    char key[128];
    arch_key(r, suffix, key, sizeof key);
    int64_t idx = lp_gguf_find_kv(r->g, key);
    if (idx < 0) {
        if (required) return lp_fail("%s: key '%s': missing", r->path, key);
        *out = def;
        return 0;
    }
    if (lp_gguf_kv_type(r->g, idx) == LP_GGUF_ARRAY) {
        lp_gguf_vtype et;
        uint64_t n;
        if (lp_gguf_get_arr(r->g, key, &et, &n) != 0 || n == 0 || (et != LP_GGUF_U32 && et != LP_GGUF_I32))
            return lp_fail("%s: key '%s': expected a UINT32 or a non-empty array of 32-bit integers", r->path, key);
        const uint8_t *p = lp_gguf_get_arr_data(r->g, key);
        uint32_t first, v;
        memcpy(&first, p, 4);
        for (uint64_t i = 1; i < n; i++) {
            memcpy(&v, p + 4 * i, 4);
            if (v != first) return lp_fail("%s: key '%s': per-layer values that differ are not supported", r->path, key);
        }
        if (first > (1u << 30)) return lp_fail("%s: key '%s': value %u out of range", r->path, key, first);
        *out = (int)first;
        return 0;
    }
    uint32_t v;
    if (lp_gguf_get_u32(r->g, key, &v) != 0) return lp_fail_prefix("%s", r->path);
    if (v > (1u << 30)) return lp_fail("%s: key '%s': value %u out of range", r->path, key, v);
    *out = (int)v;
    return 0;
}

static int read_float(const kv_reader *r, const char *suffix, bool required, float def, float *out) {
    char key[128];
    arch_key(r, suffix, key, sizeof key);
    if (lp_gguf_find_kv(r->g, key) < 0) {
        if (required) return lp_fail("%s: key '%s': missing", r->path, key);
        *out = def;
        return 0;
    }
    return lp_gguf_get_f32(r->g, key, out) == 0 ? 0 : lp_fail_prefix("%s", r->path);
}

static int read_bool(const kv_reader *r, const char *suffix, bool def, bool *out) {
    char key[128];
    arch_key(r, suffix, key, sizeof key);
    if (lp_gguf_find_kv(r->g, key) < 0) {
        *out = def;
        return 0;
    }
    return lp_gguf_get_bool(r->g, key, out) == 0 ? 0 : lp_fail_prefix("%s", r->path);
}

/* tokenizer.ggml.*_token_id: -1 when absent. */
static int read_token_id(const kv_reader *r, const char *key, int *out) {
    *out = -1;
    if (lp_gguf_find_kv(r->g, key) < 0) return 0;
    uint32_t v;
    if (lp_gguf_get_u32(r->g, key, &v) != 0) return lp_fail_prefix("%s", r->path);
    *out = v > (1u << 30) ? -1 : (int)v;
    return 0;
}

static int read_rope(const kv_reader *r, lp_hparams *hp) {
    char key[128];
    hp->rope_scaling = LP_ROPE_SCALING_NONE;
    hp->yarn_truncate = !hp->arch->attn_sinks; /* GGUF has no key: gpt-oss releases ship truncate=false */
    hp->rope_factor = 1.0f;
    if (read_float(r, "rope.freq_base", false, 10000.0f, &hp->rope_theta)) return -1;
    int n_rot;
    if (read_uint(r, "rope.dimension_count", false, hp->head_dim, &n_rot)) return -1;
    if (n_rot != hp->head_dim)
        return lp_fail("%s: key '%s.rope.dimension_count': partial rotary (%d of %d) is not supported", r->path, r->arch,
                       n_rot, hp->head_dim);
    const char *type = lp_gguf_get_str(r->g, arch_key(r, "rope.scaling.type", key, sizeof key));
    float factor = 1.0f;
    if (read_float(r, "rope.scaling.factor", false, 0.0f, &factor)) return -1;
    if (factor == 0.0f) {
        float scale_linear; /* older files: {arch}.rope.scale_linear */
        if (read_float(r, "rope.scale_linear", false, 1.0f, &scale_linear)) return -1;
        factor = scale_linear;
    }
    if (!type) type = "linear"; /* llama.cpp's default when only a factor is given */
    if (strcmp(type, "none") == 0 || factor == 1.0f) return 0;
    hp->rope_factor = factor;
    if (strcmp(type, "linear") == 0) {
        hp->rope_scaling = LP_ROPE_SCALING_LINEAR;
        return 0;
    }
    if (strcmp(type, "yarn") != 0)
        return lp_fail("%s: key '%s.rope.scaling.type': unsupported value '%s'", r->path, r->arch, type);
    hp->rope_scaling = LP_ROPE_SCALING_YARN;
    if (read_uint(r, "rope.scaling.original_context_length", false, hp->n_ctx_train, &hp->rope_orig_ctx) ||
        read_float(r, "rope.scaling.yarn_beta_fast", false, 32.0f, &hp->yarn_beta_fast) ||
        read_float(r, "rope.scaling.yarn_beta_slow", false, 1.0f, &hp->yarn_beta_slow))
        return -1;
    return 0;
}

static bool has_tensor(const lp_gguf *g, const char *name) { return lp_gguf_find_tensor(g, name) != NULL; }

static int read_moe(const kv_reader *r, lp_hparams *hp) {
    if (read_uint(r, "expert_count", false, 0, &hp->n_expert) ||
        read_uint(r, "expert_used_count", false, 0, &hp->n_expert_used))
        return -1;
    if (!hp->arch->moe) {
        if (hp->n_expert > 0) return lp_fail("%s: key '%s.expert_count': experts in a dense architecture", r->path, r->arch);
        return 0;
    }
    if (hp->n_expert <= 0 || hp->n_expert_used <= 0 || hp->n_expert_used > hp->n_expert)
        return lp_fail("%s: keys '%s.expert_count'/'expert_used_count': invalid (%d of %d)", r->path, r->arch,
                       hp->n_expert_used, hp->n_expert);
    int fallback = hp->n_ff > 0 ? hp->n_ff / hp->n_expert_used : 0;
    if (read_uint(r, "expert_feed_forward_length", fallback == 0, fallback, &hp->n_ff_exp)) return -1;
    /* llama.cpp hard-codes renormalised top-k weights for qwen3moe and gpt-oss. */
    return read_bool(r, "expert_weights_norm", true, &hp->expert_norm_topk);
}

static int read_gptoss(const kv_reader *r, lp_hparams *hp) {
    if (read_uint(r, "attention.sliding_window", true, 0, &hp->sliding_window)) return -1;
    for (int i = 0; i < hp->n_layer; i++) hp->swa_layers[i] = i % 2 == 0; /* llama.cpp set_swa_pattern(2) */
    hp->swiglu_limit = 7.0f;
    hp->n_ff = 0;
    hp->o_bias = true;
    return 0;
}

int lp_hparams_from_gguf(const lp_gguf *g, lp_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    kv_reader r = {.g = g, .path = lp_gguf_path(g)};
    r.arch = lp_gguf_get_str(g, "general.architecture");
    if (!r.arch) return lp_fail("%s: key 'general.architecture': missing", r.path);
    hp->arch = lp_arch_by_gguf_name(r.arch);
    if (!hp->arch) return lp_fail("%s: key 'general.architecture': unsupported architecture '%s'", r.path, r.arch);
    int value_length;
    if (read_uint(&r, "block_count", true, 0, &hp->n_layer) || read_uint(&r, "context_length", true, 0, &hp->n_ctx_train) ||
        read_uint(&r, "embedding_length", true, 0, &hp->n_embd) ||
        read_uint(&r, "feed_forward_length", false, 0, &hp->n_ff) ||
        read_uint(&r, "attention.head_count", true, 0, &hp->n_head) ||
        read_uint(&r, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv) ||
        read_float(&r, "attention.layer_norm_rms_epsilon", true, 0, &hp->rms_eps))
        return -1;
    if (hp->n_layer <= 0 || hp->n_layer > LP_MAX_LAYERS)
        return lp_fail("%s: key '%s.block_count': %d layers (1..%d supported)", r.path, r.arch, hp->n_layer, LP_MAX_LAYERS);
    if (hp->n_embd <= 0 || hp->n_head <= 0)
        return lp_fail("%s: keys '%s.embedding_length'/'attention.head_count': must be positive", r.path, r.arch);
    if (hp->n_head_kv <= 0 || hp->n_head % hp->n_head_kv != 0)
        return lp_fail("%s: key '%s.attention.head_count_kv': %d does not divide %d heads", r.path, r.arch, hp->n_head_kv,
                       hp->n_head);
    if (read_uint(&r, "attention.key_length", false, hp->n_embd / hp->n_head, &hp->head_dim) ||
        read_uint(&r, "attention.value_length", false, hp->head_dim, &value_length))
        return -1;
    if (hp->head_dim <= 0 || hp->head_dim % 2 != 0)
        return lp_fail("%s: key '%s.attention.key_length': head size %d must be positive and even", r.path, r.arch, hp->head_dim);
    if (value_length != hp->head_dim)
        return lp_fail("%s: key '%s.attention.value_length': %d differs from key_length %d (not supported)", r.path, r.arch,
                       value_length, hp->head_dim);
    if (read_rope(&r, hp) || read_moe(&r, hp)) return -1;
    if (strcmp(r.arch, "gpt-oss") == 0 && read_gptoss(&r, hp)) return -1;

    const lp_gguf_tensor *embd = lp_gguf_find_tensor(g, "token_embd.weight");
    if (!embd || embd->n_dims != 2) return lp_fail("%s: tensor 'token_embd.weight': missing or not 2-D", r.path);
    if (embd->ne[1] <= 0 || embd->ne[1] > (1 << 30)) return lp_fail("%s: tensor 'token_embd.weight': bad row count", r.path);
    hp->n_vocab = (int)embd->ne[1];
    hp->tied_embeddings = !has_tensor(g, "output.weight");
    hp->attn_bias = has_tensor(g, "blk.0.attn_q.bias");
    hp->o_bias = hp->o_bias || has_tensor(g, "blk.0.attn_output.bias");
    int eos;
    if (read_token_id(&r, "tokenizer.ggml.bos_token_id", &hp->bos_token_id) ||
        read_token_id(&r, "tokenizer.ggml.eos_token_id", &eos) ||
        read_token_id(&r, "tokenizer.ggml.padding_token_id", &hp->pad_token_id))
        return -1;
    if (eos >= 0) hp->eos_token_ids[hp->n_eos++] = eos;
    int eot; /* end-of-turn ids also stop generation */
    if (read_token_id(&r, "tokenizer.ggml.eot_token_id", &eot)) return -1;
    if (eot >= 0 && eot != eos) hp->eos_token_ids[hp->n_eos++] = eot;
    snprintf(hp->dtype, sizeof hp->dtype, "gguf");
    return 0;
}
