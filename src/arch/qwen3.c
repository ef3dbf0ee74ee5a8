/* qwen3.c — Qwen3 dense (Qwen3ForCausalLM): GQA, per-head q/k RMSNorm before
 * NEOX rope, no biases, untied lm_head on the larger models. */
#include "tables.h"

static const lp_tensor_map qwen3_tensors[] = {
    LP_ROWS_GLOBAL, LP_ROWS_ATTN, LP_ROWS_QK_NORM, LP_ROWS_FFN_NORM, LP_ROWS_DENSE_FFN, LP_ROWS_END,
};

const lp_arch lp_arch_qwen3 = {
    .model_type = "qwen3",
    .hf_class = "Qwen3ForCausalLM",
    .gguf_arch = "qwen3",
    .kind = "dense decoder",
    .rope = LP_ROPE_NEOX,
    .qk_norm = true,
    .tensors = qwen3_tensors,
};
