/* qwen2.c — Qwen2 / Qwen2.5 dense (Qwen2ForCausalLM): q/k/v projections carry
 * biases (always, regardless of config), NEOX rope, embeddings often tied on the
 * small models. */
#include "tables.h"

static const lp_tensor_map qwen2_tensors[] = {
    LP_ROWS_GLOBAL, LP_ROWS_ATTN, LP_ROWS_QKV_BIAS, LP_ROWS_FFN_NORM, LP_ROWS_DENSE_FFN, LP_ROWS_END,
};

static int qwen2_read_config(const json_t *cfg, lp_hparams *hp, const char *path) {
    (void)cfg;
    (void)path;
    hp->attn_bias = true; /* Qwen2 has no attention_bias key: the biases are part of the architecture */
    hp->sliding_window = 0; /* use_sliding_window is false in every released Qwen2.5 */
    return 0;
}

const lp_arch lp_arch_qwen2 = {
    .model_type = "qwen2",
    .hf_class = "Qwen2ForCausalLM",
    .gguf_arch = "qwen2",
    .kind = "dense decoder",
    .rope = LP_ROPE_NEOX,
    .tensors = qwen2_tensors,
    .read_config = qwen2_read_config,
};
