/* gptoss.c — gpt-oss (GptOssForCausalLM): MoE with MXFP4 experts, attention
 * sinks, q/k/v/o biases, alternating sliding-window (even layers) / full
 * attention, YaRN rope, clamped SwiGLU. gate_up_proj interleaves gate (even rows)
 * and up (odd rows); GGUF splits them. */
#include <string.h>

#include "tables.h"

static const lp_tensor_map gptoss_tensors[] = {
    LP_ROWS_GLOBAL,
    LP_ROWS_ATTN,
    LP_ROWS_QKV_BIAS,
    {LP_T_ATTN_OUT_BIAS, "blk.%d.attn_output.bias", "model.layers.%d.self_attn.o_proj.bias", LP_SRC_PLAIN, true},
    {LP_T_ATTN_SINKS, "blk.%d.attn_sinks.weight", "model.layers.%d.self_attn.sinks", LP_SRC_PLAIN, true},
    {LP_T_FFN_NORM, "blk.%d.post_attention_norm.weight", "model.layers.%d.post_attention_layernorm.weight",
     LP_SRC_PLAIN, true},
    {LP_T_FFN_ROUTER, "blk.%d.ffn_gate_inp.weight", "model.layers.%d.mlp.router.weight", LP_SRC_PLAIN, true},
    {LP_T_FFN_ROUTER_BIAS, "blk.%d.ffn_gate_inp.bias", "model.layers.%d.mlp.router.bias", LP_SRC_PLAIN, true},
    {LP_T_FFN_GATE_EXPS, "blk.%d.ffn_gate_exps.weight", "model.layers.%d.mlp.experts.gate_up_proj", LP_SRC_MXFP4_GATE, true},
    {LP_T_FFN_UP_EXPS, "blk.%d.ffn_up_exps.weight", "model.layers.%d.mlp.experts.gate_up_proj", LP_SRC_MXFP4_UP, true},
    {LP_T_FFN_DOWN_EXPS, "blk.%d.ffn_down_exps.weight", "model.layers.%d.mlp.experts.down_proj", LP_SRC_MXFP4, true},
    {LP_T_FFN_GATE_EXPS_BIAS, "blk.%d.ffn_gate_exps.bias", "model.layers.%d.mlp.experts.gate_up_proj_bias",
     LP_SRC_BIAS_EVEN, true},
    {LP_T_FFN_UP_EXPS_BIAS, "blk.%d.ffn_up_exps.bias", "model.layers.%d.mlp.experts.gate_up_proj_bias",
     LP_SRC_BIAS_ODD, true},
    {LP_T_FFN_DOWN_EXPS_BIAS, "blk.%d.ffn_down_exps.bias", "model.layers.%d.mlp.experts.down_proj_bias", LP_SRC_PLAIN,
     true},
    LP_ROWS_END,
};

static int gptoss_read_config(const json_t *cfg, lp_hparams *hp, const char *path) {
    hp->n_ff_exp = hp->n_ff; /* gpt-oss's intermediate_size is the expert width */
    hp->n_ff = 0;
    hp->attn_bias = true;
    hp->o_bias = true;
    hp->expert_norm_topk = true; /* softmax over the selected experts' logits */
    const json_t *lim = json_object_get(cfg, "swiglu_limit");
    hp->swiglu_limit = json_is_number(lim) ? (float)json_number_value(lim) : 7.0f;
    if (hp->sliding_window <= 0) return lp_fail("%s: field 'sliding_window': required for gpt-oss", path);
    const json_t *types = json_object_get(cfg, "layer_types");
    for (int i = 0; i < hp->n_layer; i++) {
        const json_t *t = json_is_array(types) ? json_array_get(types, (size_t)i) : NULL;
        hp->swa_layers[i] = t ? strcmp(json_string_value(t) ? json_string_value(t) : "", "sliding_attention") == 0
                              : (i % 2 == 0);
    }
    if (hp->n_expert <= 0 || hp->n_expert_used <= 0)
        return lp_fail("%s: fields 'num_local_experts'/'num_experts_per_tok': required for gpt-oss", path);
    return 0;
}

const lp_arch lp_arch_gptoss = {
    .model_type = "gpt_oss",
    .hf_class = "GptOssForCausalLM",
    .gguf_arch = "gpt-oss",
    .kind = "mixture of experts with alternating sliding-window attention",
    .rope = LP_ROPE_NEOX,
    .moe = true,
    .attn_sinks = true,
    .swa_alternating = true,
    .clamped_swiglu = true,
    .tensors = gptoss_tensors,
    .read_config = gptoss_read_config,
};
