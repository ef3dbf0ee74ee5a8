/* llama.c — Llama 2/3 and Mistral-style dense models (LlamaForCausalLM).
 * GGUF stores q/k rows permuted so that rope rotates adjacent pairs (NORM rope);
 * the converter applies the permutation (permute_qk). Llama 3.1 "llama3" rope
 * scaling becomes a rope_freqs tensor in GGUF. */
#include "tables.h"

static const lp_tensor_map llama_tensors[] = {
    LP_ROWS_GLOBAL, LP_ROWS_ATTN, LP_ROWS_QKV_BIAS, LP_ROWS_FFN_NORM, LP_ROWS_DENSE_FFN, LP_ROWS_END,
};

const lp_arch lp_arch_llama = {
    .model_type = "llama",
    .hf_class = "LlamaForCausalLM",
    .gguf_arch = "llama",
    .kind = "dense decoder",
    .rope = LP_ROPE_NORM,
    .permute_qk = true,
    .tensors = llama_tensors,
};
