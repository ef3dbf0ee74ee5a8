/* arch.h — model architectures as data.
 *
 * An architecture (lp_arch) says: which HF config it comes from, its GGUF
 * architecture name, its forward-pass quirks (q/k-norm, biases, rope flavour,
 * sinks, sliding window, MoE), and how its tensors are named in HF checkpoints
 * and in GGUF, by *role*. The converter walks roles to map HF -> GGUF; the
 * runtime looks weights up by role, whatever file they came from. Adding a
 * family means one arch/<family>.c file plus one line in arch.c's registry.
 *
 * lp_hparams holds the numbers of one model, read from config.json (HF) or
 * from GGUF metadata; both readers fill the same struct. */
#ifndef LP_ARCH_H
#define LP_ARCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define LP_MAX_LAYERS 256
#define LP_MAX_EOS 8

typedef enum { LP_ROPE_NORM, LP_ROPE_NEOX } lp_rope_kind;
typedef enum { LP_ROPE_SCALING_NONE, LP_ROPE_SCALING_LINEAR, LP_ROPE_SCALING_YARN, LP_ROPE_SCALING_LLAMA3 } lp_rope_scaling_kind;

/* Tensor roles. Global roles have no layer; the others exist once per layer
 * (expert roles once per layer, holding all experts stacked). */
typedef enum {
    LP_T_TOKEN_EMBD,
    LP_T_OUTPUT_NORM,
    LP_T_OUTPUT,
    LP_T_ROPE_FREQS,
    LP_T_FIRST_LAYER_ROLE,
    LP_T_ATTN_NORM = LP_T_FIRST_LAYER_ROLE,
    LP_T_ATTN_Q,
    LP_T_ATTN_K,
    LP_T_ATTN_V,
    LP_T_ATTN_OUT,
    LP_T_ATTN_Q_BIAS,
    LP_T_ATTN_K_BIAS,
    LP_T_ATTN_V_BIAS,
    LP_T_ATTN_OUT_BIAS,
    LP_T_ATTN_Q_NORM,
    LP_T_ATTN_K_NORM,
    LP_T_ATTN_SINKS,
    LP_T_FFN_NORM, /* pre-FFN norm (gpt-oss calls it post_attention_norm in GGUF) */
    LP_T_FFN_GATE,
    LP_T_FFN_UP,
    LP_T_FFN_DOWN,
    LP_T_FFN_ROUTER,
    LP_T_FFN_ROUTER_BIAS,
    LP_T_FFN_GATE_EXPS,
    LP_T_FFN_UP_EXPS,
    LP_T_FFN_DOWN_EXPS,
    LP_T_FFN_GATE_EXPS_BIAS,
    LP_T_FFN_UP_EXPS_BIAS,
    LP_T_FFN_DOWN_EXPS_BIAS,
    LP_T_COUNT
} lp_role;

/* How the HF tensor(s) of a role are stored. */
typedef enum {
    LP_SRC_PLAIN,        /* one HF tensor, same layout as GGUF (maybe permuted for llama q/k) */
    LP_SRC_EXPERT_STACK, /* one HF tensor per expert: hf name has a second %d for the expert */
    LP_SRC_MXFP4_GATE,   /* gpt-oss: even rows of gate_up_proj_{blocks,scales} */
    LP_SRC_MXFP4_UP,     /* gpt-oss: odd rows */
    LP_SRC_MXFP4,        /* gpt-oss: down_proj_{blocks,scales} */
    LP_SRC_BIAS_EVEN,    /* gpt-oss: even columns of gate_up_proj_bias */
    LP_SRC_BIAS_ODD,     /* odd columns */
} lp_src_kind;

typedef struct {
    lp_role role;
    const char *gguf;   /* "blk.%d.attn_q.weight" (%d = layer) */
    const char *hf;     /* "model.layers.%d.self_attn.q_proj.weight" (EXPERT_STACK: second %d = expert) */
    lp_src_kind src;
    bool required;      /* conversion fails if absent */
} lp_tensor_map;

typedef struct lp_hparams lp_hparams;

typedef struct lp_arch {
    const char *model_type;   /* HF config "model_type": "qwen3" */
    const char *hf_class;     /* "Qwen3ForCausalLM" */
    const char *gguf_arch;    /* general.architecture: "qwen3" */
    const char *kind;         /* "dense decoder", "mixture of experts", ... */
    lp_rope_kind rope;
    bool qk_norm;             /* per-head RMSNorm on q and k before rope */
    bool permute_qk;          /* llama: HF -> GGUF row permutation of q/k */
    bool moe;
    bool attn_sinks;
    bool swa_alternating;     /* gpt-oss: even layers sliding-window */
    bool clamped_swiglu;      /* gpt-oss activation */
    const lp_tensor_map *tensors; /* terminated by role == LP_T_COUNT */
    /* Family-specific config reading after the common fields (may be NULL). */
    int (*read_config)(const json_t *cfg, lp_hparams *hp, const char *path);
} lp_arch;

struct lp_hparams {
    const lp_arch *arch;
    int n_layer;
    int n_embd;
    int n_head;
    int n_head_kv;
    int head_dim;
    int n_ff;           /* dense FFN width (0 for pure MoE) */
    int n_vocab;        /* embedding rows */
    int n_ctx_train;    /* max_position_embeddings */
    int n_expert;       /* 0 for dense */
    int n_expert_used;
    int n_ff_exp;       /* expert FFN width */
    bool expert_norm_topk;
    float rms_eps;
    float rope_theta;
    lp_rope_scaling_kind rope_scaling;
    float rope_factor;
    int rope_orig_ctx;
    float yarn_beta_fast, yarn_beta_slow;
    bool yarn_truncate; /* round the YaRN ramp ends (HF default true; gpt-oss ships false) */
    float rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int sliding_window; /* 0 = none */
    bool swa_layers[LP_MAX_LAYERS];
    bool attn_bias;     /* q/k/v biases */
    bool o_bias;
    bool tied_embeddings;
    float swiglu_limit; /* gpt-oss clamp (0 = none) */
    char dtype[16];     /* "bfloat16", ... */
    int bos_token_id;   /* -1 if none */
    int eos_token_ids[LP_MAX_EOS];
    int n_eos;
    int pad_token_id;   /* -1 if none */
};

/* Registry lookups. */
const lp_arch *lp_arch_by_model_type(const char *model_type);
const lp_arch *lp_arch_by_gguf_name(const char *gguf_arch);
int lp_arch_count(void);
const lp_arch *lp_arch_at(int i);

/* Read config.json (and generation_config.json beside it, for eos ids) into hp. */
int lp_hparams_from_config_file(const char *config_path, lp_hparams *hp);
int lp_hparams_from_config(const json_t *cfg, const char *path, lp_hparams *hp);
/* The map entry for a role, or NULL if the architecture has no such tensor. */
const lp_tensor_map *lp_arch_tensor(const lp_arch *a, lp_role role);
bool lp_role_per_layer(lp_role role);
/* Format a role's name for a layer (and expert, for HF expert stacks) into buf. */
void lp_tensor_name_gguf(const lp_tensor_map *m, int layer, char *buf, size_t n);
void lp_tensor_name_hf(const lp_tensor_map *m, int layer, int expert, char *buf, size_t n);
/* Layers that get more bits in llama.cpp's mixes: i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2. */
bool lp_use_more_bits(int i, int n);

#endif
