/* tables.h — tensor-map rows shared by the llama-like families (HF "model.layers.N"
 * layout). Each family file composes its table from these plus its own rows. */
#ifndef LP_ARCH_TABLES_H
#define LP_ARCH_TABLES_H

#include "../core/err.h"
#include "arch.h"

#define LP_ROWS_GLOBAL                                                                                   \
    {LP_T_TOKEN_EMBD, "token_embd.weight", "model.embed_tokens.weight", LP_SRC_PLAIN, true},            \
    {LP_T_OUTPUT_NORM, "output_norm.weight", "model.norm.weight", LP_SRC_PLAIN, true},                  \
    {LP_T_OUTPUT, "output.weight", "lm_head.weight", LP_SRC_PLAIN, false}

#define LP_ROWS_ATTN                                                                                     \
    {LP_T_ATTN_NORM, "blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight", LP_SRC_PLAIN, true}, \
    {LP_T_ATTN_Q, "blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight", LP_SRC_PLAIN, true},      \
    {LP_T_ATTN_K, "blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight", LP_SRC_PLAIN, true},      \
    {LP_T_ATTN_V, "blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight", LP_SRC_PLAIN, true},      \
    {LP_T_ATTN_OUT, "blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight", LP_SRC_PLAIN, true}

#define LP_ROWS_QKV_BIAS                                                                                 \
    {LP_T_ATTN_Q_BIAS, "blk.%d.attn_q.bias", "model.layers.%d.self_attn.q_proj.bias", LP_SRC_PLAIN, false},    \
    {LP_T_ATTN_K_BIAS, "blk.%d.attn_k.bias", "model.layers.%d.self_attn.k_proj.bias", LP_SRC_PLAIN, false},    \
    {LP_T_ATTN_V_BIAS, "blk.%d.attn_v.bias", "model.layers.%d.self_attn.v_proj.bias", LP_SRC_PLAIN, false}

#define LP_ROWS_QK_NORM                                                                                  \
    {LP_T_ATTN_Q_NORM, "blk.%d.attn_q_norm.weight", "model.layers.%d.self_attn.q_norm.weight", LP_SRC_PLAIN, true}, \
    {LP_T_ATTN_K_NORM, "blk.%d.attn_k_norm.weight", "model.layers.%d.self_attn.k_norm.weight", LP_SRC_PLAIN, true}

#define LP_ROWS_FFN_NORM                                                                                 \
    {LP_T_FFN_NORM, "blk.%d.ffn_norm.weight", "model.layers.%d.post_attention_layernorm.weight", LP_SRC_PLAIN, true}

#define LP_ROWS_DENSE_FFN                                                                                \
    {LP_T_FFN_GATE, "blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight", LP_SRC_PLAIN, true},     \
    {LP_T_FFN_UP, "blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight", LP_SRC_PLAIN, true},           \
    {LP_T_FFN_DOWN, "blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight", LP_SRC_PLAIN, true}

#define LP_ROWS_END {LP_T_COUNT, NULL, NULL, LP_SRC_PLAIN, false}

#endif
