/* qwen3moe.c — Qwen3 MoE (Qwen3MoeForCausalLM): Qwen3 attention, every layer a
 * sparse FFN: softmax router, top-k experts, weights renormalised when
 * norm_topk_prob. HF stores one tensor per expert; GGUF stacks them. */
#include <string.h>

#include "tables.h"

static const lp_tensor_map qwen3moe_tensors[] = {
    LP_ROWS_GLOBAL,
    LP_ROWS_ATTN,
    LP_ROWS_QK_NORM,
    LP_ROWS_FFN_NORM,
    {LP_T_FFN_ROUTER, "blk.%d.ffn_gate_inp.weight", "model.layers.%d.mlp.gate.weight", LP_SRC_PLAIN, true},
    {LP_T_FFN_GATE_EXPS, "blk.%d.ffn_gate_exps.weight", "model.layers.%d.mlp.experts.%d.gate_proj.weight",
     LP_SRC_EXPERT_STACK, true},
    {LP_T_FFN_UP_EXPS, "blk.%d.ffn_up_exps.weight", "model.layers.%d.mlp.experts.%d.up_proj.weight",
     LP_SRC_EXPERT_STACK, true},
    {LP_T_FFN_DOWN_EXPS, "blk.%d.ffn_down_exps.weight", "model.layers.%d.mlp.experts.%d.down_proj.weight",
     LP_SRC_EXPERT_STACK, true},
    LP_ROWS_END,
};

static int qwen3moe_read_config(const json_t *cfg, lp_hparams *hp, const char *path) {
    const json_t *v = json_object_get(cfg, "moe_intermediate_size");
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return lp_fail("%s: field 'moe_intermediate_size': missing or not positive", path);
    hp->n_ff_exp = (int)json_integer_value(v);
    hp->n_ff = 0; /* intermediate_size describes dense layers, and Qwen3-MoE has none (mlp_only_layers is empty) */
    const json_t *norm = json_object_get(cfg, "norm_topk_prob");
    hp->expert_norm_topk = norm && json_is_true(norm);
    const json_t *mlp_only = json_object_get(cfg, "mlp_only_layers");
    if (json_is_array(mlp_only) && json_array_size(mlp_only) > 0)
        return lp_fail("%s: field 'mlp_only_layers': dense layers inside a MoE model are not supported", path);
    if (hp->n_expert <= 0 || hp->n_expert_used <= 0 || hp->n_expert_used > hp->n_expert)
        return lp_fail("%s: fields 'num_experts'/'num_experts_per_tok': invalid (%d of %d)", path, hp->n_expert_used,
                       hp->n_expert);
    return 0;
}

const lp_arch lp_arch_qwen3moe = {
    .model_type = "qwen3_moe",
    .hf_class = "Qwen3MoeForCausalLM",
    .gguf_arch = "qwen3moe",
    .kind = "mixture of experts",
    .rope = LP_ROPE_NEOX,
    .qk_norm = true,
    .moe = true,
    .tensors = qwen3moe_tensors,
    .read_config = qwen3moe_read_config,
};
