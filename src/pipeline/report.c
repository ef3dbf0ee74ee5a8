/* report.c — builds the architecture report from hparams and, when available,
 * the checkpoint's actual tensors. */
#include "report.h"

#include <stdio.h>
#include <string.h>

#include "../core/err.h"

typedef struct {
    uint64_t total, embedding, experts;
} param_counts;

/* Parameter counts from config alone (used for the big target configs). */
static param_counts count_from_config(const lp_hparams *hp) {
    uint64_t E = (uint64_t)hp->n_embd, q = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim, V = (uint64_t)hp->n_vocab;
    uint64_t X = (uint64_t)hp->n_expert, ffe = (uint64_t)hp->n_ff_exp;
    uint64_t attn = E * q * 2 + E * kv * 2;
    if (hp->attn_bias) attn += q + 2 * kv;
    if (hp->o_bias) attn += E;
    if (hp->arch->qk_norm) attn += 2 * (uint64_t)hp->head_dim;
    if (hp->arch->attn_sinks) attn += (uint64_t)hp->n_head;
    uint64_t ffn = 3 * E * (uint64_t)hp->n_ff, experts = 0;
    if (hp->arch->moe) {
        ffn += E * X + (hp->arch->attn_sinks ? X : 0); /* router (+ bias on gpt-oss) */
        experts = X * 3 * E * ffe;
        if (hp->arch->clamped_swiglu) experts += X * (2 * ffe + E); /* gpt-oss expert biases */
    }
    uint64_t layer = attn + ffn + experts + 2 * E;
    param_counts c;
    c.embedding = V * E * (hp->tied_embeddings ? 1 : 2);
    c.experts = experts * (uint64_t)hp->n_layer;
    c.total = layer * (uint64_t)hp->n_layer + E + c.embedding;
    return c;
}

/* Parameter counts from the checkpoint's tensors. MXFP4 blocks hold two weights per
 * byte; their E8M0 scales are quantization metadata, not parameters. */
static param_counts count_from_checkpoint(const lp_checkpoint *ck) {
    param_counts c = {0, 0, 0};
    for (int64_t i = 0; i < lp_checkpoint_n_tensors(ck); i++) {
        const lp_st_tensor *t = lp_checkpoint_tensor_at(ck, i);
        size_t n = strlen(t->name);
        if (n > 7 && strcmp(t->name + n - 7, "_scales") == 0 && t->dtype == LP_ST_U8) continue;
        uint64_t params = (uint64_t)t->n_elements;
        if (n > 7 && strcmp(t->name + n - 7, "_blocks") == 0 && t->dtype == LP_ST_U8) params *= 2;
        c.total += params;
        if (strcmp(t->name, "model.embed_tokens.weight") == 0 || strcmp(t->name, "lm_head.weight") == 0)
            c.embedding += params;
        if (strstr(t->name, ".mlp.experts.")) c.experts += params;
    }
    return c;
}

static void describe_attention(lp_report *r) {
    const lp_hparams *hp = &r->hp;
    if (hp->n_head_kv == hp->n_head)
        snprintf(r->attention, sizeof r->attention, "MHA %d heads", hp->n_head);
    else if (hp->n_head_kv == 1)
        snprintf(r->attention, sizeof r->attention, "MQA %d:1", hp->n_head);
    else
        snprintf(r->attention, sizeof r->attention, "GQA %d:%d (ratio %d)", hp->n_head, hp->n_head_kv,
                 hp->n_head / hp->n_head_kv);
}

static void recommend(lp_report *r) {
    const lp_hparams *hp = &r->hp;
    double expert_share = r->params_total ? (double)r->params_experts / (double)r->params_total : 0;
    snprintf(r->recommended_mlx, sizeof r->recommended_mlx, "4bit-mixed");
    if (hp->arch->clamped_swiglu) {
        snprintf(r->recommended_gguf, sizeof r->recommended_gguf, "q8_0");
        snprintf(r->recommendation, sizeof r->recommendation,
                 "experts (%.0f%% of weights) ship as MXFP4: keep them, q8_0 for attention, router and embeddings",
                 expert_share * 100);
    } else if (hp->arch->moe) {
        snprintf(r->recommended_gguf, sizeof r->recommended_gguf, "q4_k_m");
        snprintf(r->recommendation, sizeof r->recommendation,
                 "experts are %.0f%% of weights but only %d of %d run per token: 4-bit experts, Q6_K for attn_v/"
                 "ffn_down on sensitive layers, router kept f32",
                 expert_share * 100, hp->n_expert_used, hp->n_expert);
    } else if (r->params_total < 1000000000ull) {
        snprintf(r->recommended_gguf, sizeof r->recommended_gguf, "q8_0");
        snprintf(r->recommendation, sizeof r->recommendation,
                 "small dense model (%.0f%% embeddings): quantization error dominates, prefer q8_0/q6_k",
                 r->params_total ? 100.0 * (double)r->params_embedding / (double)r->params_total : 0);
    } else {
        snprintf(r->recommended_gguf, sizeof r->recommended_gguf, "q4_k_m");
        snprintf(r->recommendation, sizeof r->recommendation,
                 "dense %s: q4_k_m (Q6_K on attn_v/ffn_down of sensitive layers and the output head), "
                 "q6_k/q8_0 when memory allows",
                 r->attention);
    }
}

int lp_report_build(lp_report *r, const lp_hparams *hp, const lp_checkpoint *ckpt) {
    memset(r, 0, sizeof *r);
    r->hp = *hp;
    param_counts c = ckpt ? count_from_checkpoint(ckpt) : count_from_config(hp);
    r->counted_from_checkpoint = ckpt != NULL;
    r->params_total = c.total;
    r->params_embedding = c.embedding;
    r->params_non_embedding = c.total - c.embedding;
    r->params_experts = c.experts;
    r->params_active = c.total;
    if (hp->n_expert > 0) r->params_active = c.total - c.experts / (uint64_t)hp->n_expert * (uint64_t)(hp->n_expert - hp->n_expert_used);
    r->bf16_bytes = c.total * 2;
    uint64_t per_token_layer = 2ull * (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim * 2; /* K+V, f16 */
    for (int l = 0; l < hp->n_layer; l++) {
        uint64_t tokens = 1024;
        if (hp->swa_layers[l] && hp->sliding_window > 0 && hp->sliding_window < 1024) tokens = (uint64_t)hp->sliding_window;
        r->kv_bytes_per_1k += per_token_layer * tokens;
    }
    r->ctx_native = hp->n_ctx_train;
    r->ctx_extended = hp->n_ctx_train;
    if (hp->rope_scaling != LP_ROPE_SCALING_NONE && hp->rope_orig_ctx > 0) {
        r->ctx_native = hp->rope_orig_ctx;
        r->ctx_extended = (int)((float)hp->rope_orig_ctx * hp->rope_factor);
    }
    describe_attention(r);
    recommend(r);
    return 0;
}

static const char *rope_scaling_name(lp_rope_scaling_kind k) {
    static const char *const names[] = {"none", "linear", "yarn", "llama3"};
    return names[k];
}

json_t *lp_report_json(const lp_report *r) {
    const lp_hparams *hp = &r->hp;
    json_t *experts = json_null();
    if (hp->n_expert > 0)
        experts = json_pack("{s:i, s:i, s:i, s:b}", "count", hp->n_expert, "active", hp->n_expert_used,
                            "ffn_size", hp->n_ff_exp, "normalize_top_k", hp->expert_norm_topk);
    json_t *params = json_pack("{s:I, s:I, s:I, s:I, s:I, s:b}", "total", (json_int_t)r->params_total, "embedding",
                               (json_int_t)r->params_embedding, "non_embedding", (json_int_t)r->params_non_embedding,
                               "active_per_token", (json_int_t)r->params_active, "experts",
                               (json_int_t)r->params_experts, "counted_from_checkpoint", r->counted_from_checkpoint);
    json_t *attention = json_pack("{s:s, s:i, s:i, s:i, s:i, s:b, s:b, s:b, s:i, s:b}", "layout", r->attention,
                                  "heads", hp->n_head, "kv_heads", hp->n_head_kv, "gqa_ratio",
                                  hp->n_head / hp->n_head_kv, "head_dim", hp->head_dim, "qk_norm", hp->arch->qk_norm,
                                  "qkv_bias", hp->attn_bias, "sinks", hp->arch->attn_sinks, "sliding_window",
                                  hp->sliding_window, "alternating_sliding_window", hp->arch->swa_alternating);
    json_t *context = json_pack("{s:i, s:i, s:s, s:f, s:f}", "native", r->ctx_native, "extended", r->ctx_extended,
                                "rope_scaling", rope_scaling_name(hp->rope_scaling), "rope_factor",
                                (double)hp->rope_factor, "rope_theta", (double)hp->rope_theta);
    json_t *rec = json_pack("{s:s, s:s, s:s}", "gguf", r->recommended_gguf, "mlx", r->recommended_mlx, "why",
                            r->recommendation);
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:b, s:o, s:o, s:o, s:o, s:I, s:I, s:o}",
                     "model_type", hp->arch->model_type, "hf_class", hp->arch->hf_class, "gguf_architecture",
                     hp->arch->gguf_arch, "family", hp->arch->kind, "layers", hp->n_layer, "hidden_size", hp->n_embd,
                     "ffn_size", hp->n_ff, "vocab_size", hp->n_vocab, "tied_embeddings", hp->tied_embeddings,
                     "attention", attention, "experts", experts, "context", context, "parameters", params,
                     "bf16_bytes", (json_int_t)r->bf16_bytes, "kv_cache_bytes_per_1k_tokens",
                     (json_int_t)r->kv_bytes_per_1k, "recommended", rec);
}

/* 8190000000 -> "8.19B" */
static void human_count(uint64_t n, char *buf, size_t len) {
    if (n >= 1000000000ull)
        snprintf(buf, len, "%.2fB", (double)n / 1e9);
    else if (n >= 1000000ull)
        snprintf(buf, len, "%.2fM", (double)n / 1e6);
    else
        snprintf(buf, len, "%.1fK", (double)n / 1e3);
}

static void human_bytes(uint64_t n, char *buf, size_t len) {
    if (n >= (1ull << 30))
        snprintf(buf, len, "%.2f GiB", (double)n / (double)(1ull << 30));
    else if (n >= (1ull << 20))
        snprintf(buf, len, "%.2f MiB", (double)n / (double)(1ull << 20));
    else
        snprintf(buf, len, "%.1f KiB", (double)n / 1024.0);
}

void lp_report_print(const lp_report *r, const char *model_name) {
    const lp_hparams *hp = &r->hp;
    char tot[32], emb[32], nonemb[32], act[32], bf16[32], kv[32];
    human_count(r->params_total, tot, sizeof tot);
    human_count(r->params_embedding, emb, sizeof emb);
    human_count(r->params_non_embedding, nonemb, sizeof nonemb);
    human_count(r->params_active, act, sizeof act);
    human_bytes(r->bf16_bytes, bf16, sizeof bf16);
    human_bytes(r->kv_bytes_per_1k, kv, sizeof kv);
    printf("model          %s\n", model_name);
    printf("architecture   %s (%s, gguf '%s')\n", hp->arch->hf_class, hp->arch->kind, hp->arch->gguf_arch);
    printf("layers         %d, hidden %d, ffn %d, vocab %d%s\n", hp->n_layer, hp->n_embd,
           hp->n_ff ? hp->n_ff : hp->n_ff_exp, hp->n_vocab, hp->tied_embeddings ? ", tied embeddings" : "");
    printf("attention      %s, head dim %d%s%s%s\n", r->attention, hp->head_dim, hp->arch->qk_norm ? ", q/k RMSNorm" : "",
           hp->attn_bias ? ", qkv bias" : "", hp->arch->attn_sinks ? ", sinks" : "");
    if (hp->sliding_window > 0)
        printf("sliding window %d tokens%s\n", hp->sliding_window, hp->arch->swa_alternating ? " (alternating layers)" : "");
    if (hp->n_expert > 0)
        printf("experts        %d, %d active per token, expert ffn %d%s\n", hp->n_expert, hp->n_expert_used,
               hp->n_ff_exp, hp->expert_norm_topk ? ", top-k renormalised" : "");
    printf("context        %d native, %d extended (rope %s x%g, theta %g)\n", r->ctx_native, r->ctx_extended,
           rope_scaling_name(hp->rope_scaling), (double)hp->rope_factor, (double)hp->rope_theta);
    printf("parameters     %s total, %s non-embedding, %s embedding, %s active per token%s\n", tot, nonemb, emb, act,
           r->counted_from_checkpoint ? "" : " (from config)");
    printf("size           %s in bf16; KV cache %s per 1k tokens (f16)\n", bf16, kv);
    printf("recommended    gguf %s, mlx %s: %s\n", r->recommended_gguf, r->recommended_mlx, r->recommendation);
}
