/* backend.h — the operations the forward pass is written against.
 *
 * The forward pass (runtime/engine.c) is written once as a sequence of these
 * ops over backend-owned buffers, so the CPU backend (backend/cpu) and a CUDA
 * backend run the same model code. Every op works on a batch of token rows that
 * may belong to different sequences: set_batch() hands the backend the token
 * ids, positions and KV-cache slots of the current step once, and the ops that
 * need them (embed, rope, attention) read them from there.
 *
 * Buffers (lp_bbuf) are F32 arrays of a size fixed at allocation; activations
 * are row-major [rows][dim]. Weights are the model's lp_weight (host memory,
 * any type with a traits row); prepare_weight() lets a backend upload or check
 * each one once before the first step. Ops may run asynchronously: sync()
 * waits and reports the first failure of the step. Results are F32 with F32
 * accumulation everywhere. */
#ifndef LP_BACKEND_H
#define LP_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../arch/arch.h"
#include "../runtime/model.h"

typedef struct lp_backend lp_backend;
typedef struct lp_bbuf lp_bbuf;

/* Fixed for the backend's life: KV cache geometry and rope. */
typedef struct {
    int n_layer;
    int n_slots;          /* independent sequences (KV cache slots) */
    int n_ctx;            /* positions per slot */
    int n_head_kv;
    int head_dim;
    lp_rope_kind rope;    /* NORM: pairs (2i, 2i+1); NEOX: pairs (i, i + head_dim/2) */
    const float *rope_inv_freq; /* [head_dim/2]: angle of pair i at position p = p * inv_freq[i] */
    float rope_attn_factor;     /* multiplies cos and sin (YaRN); 1 otherwise */
    bool f32_activations;       /* quantized weights meet F32 activations (dequantized rows)
                                   instead of activations converted to the type's vec_dot_type */
} lp_backend_config;

/* The tokens of one forward step; arrays of n entries (host memory, copied by set_batch). */
typedef struct {
    int n;
    const int32_t *tokens;
    const int32_t *pos;  /* position of each token in its sequence */
    const int32_t *slot; /* KV-cache slot of each token's sequence */
} lp_batch_meta;

typedef struct {
    int n_head, n_head_kv, head_dim;
    float scale;             /* applied to q·k */
    int window;              /* sliding window in positions (attend p-window+1..p); 0 = full */
    const lp_weight *sinks;  /* [n_head] per-head sink logits (gpt-oss), or NULL */
} lp_attn_params;

/* y[n][w->ne[1]] = x[n][w->ne[0]] · W^T  (expert >= 0 selects one matrix of a stack). */
typedef struct {
    const lp_weight *w;
    int expert;
    const lp_bbuf *x;
    lp_bbuf *y;
} lp_matmul_args;

/* Sparse FFN: route each row to its top-k experts and sum their SwiGLU outputs. */
typedef struct {
    const lp_weight *gate, *up, *down;          /* expert stacks */
    const lp_weight *gate_b, *up_b, *down_b;    /* per-expert biases (gpt-oss) or NULL */
    int n_expert_used;
    bool norm_topk;      /* weights = softmax over the selected experts' logits;
                            else softmax over all experts, taken at the selected ones */
    float swiglu_limit;  /* > 0: gpt-oss clamped SwiGLU (see swiglu) */
} lp_moe_params;

typedef struct {
    const char *name;
    void (*destroy)(lp_backend *be);
    /* KV cache, rope tables. Called once, before any op. */
    int (*init)(lp_backend *be, const lp_backend_config *cfg);
    /* Make a weight usable (upload / check kernels exist). Called once per weight. */
    int (*prepare_weight)(lp_backend *be, const lp_weight *w);
    lp_bbuf *(*alloc)(lp_backend *be, size_t n_floats);
    void (*release)(lp_backend *be, lp_bbuf *b);

    void (*set_batch)(lp_backend *be, const lp_batch_meta *b);
    /* out[i] = row tokens[i] of emb, as F32 */
    void (*embed)(lp_backend *be, const lp_weight *emb, lp_bbuf *out);
    /* out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * w, for rows of dim = w->ne[0]; out may be x */
    void (*rmsnorm)(lp_backend *be, const lp_bbuf *x, const lp_weight *w, int rows, float eps, lp_bbuf *out);
    /* count independent products over the same n rows (e.g. q, k and v in one go) */
    void (*matmul)(lp_backend *be, int count, const lp_matmul_args *args, int n);
    /* x[r] += b for rows of dim = b->ne[0] */
    void (*add_bias)(lp_backend *be, lp_bbuf *x, const lp_weight *b, int rows);
    /* x += y, count elements */
    void (*add)(lp_backend *be, lp_bbuf *x, const lp_bbuf *y, size_t count);
    /* rotate x[n][n_head][head_dim] in place at the batch positions */
    void (*rope)(lp_backend *be, lp_bbuf *x, int n_head);
    /* store k, v ([n][n_head_kv*head_dim]) in the cache at (layer, slot, pos) of each
     * token, then causal attention of each q over its slot's positions <= pos. */
    void (*attention)(lp_backend *be, int layer, const lp_bbuf *q, const lp_bbuf *k, const lp_bbuf *v,
                      const lp_attn_params *p, lp_bbuf *out);
    /* gate = silu(gate) * up; limit > 0: gpt-oss: g = min(gate, limit), u = clamp(up, ±limit),
     * gate = g * sigmoid(1.702 g) * (u + 1) */
    void (*swiglu)(lp_backend *be, lp_bbuf *gate, const lp_bbuf *up, size_t count, float limit);
    /* out[n][n_embd] = sum over the top-k experts of weight * expert(x) */
    void (*moe)(lp_backend *be, const lp_moe_params *p, const lp_bbuf *x, const lp_bbuf *router_logits, int n,
                lp_bbuf *out);
    /* dst[i] = src[rows[i]], rows of dim floats */
    void (*gather_rows)(lp_backend *be, const lp_bbuf *src, int dim, const int32_t *rows, int n_rows, lp_bbuf *dst);
    /* copy positions [0, n_pos) of KV slot src to slot dst (shared prompt prefixes) */
    void (*kv_copy)(lp_backend *be, int src_slot, int dst_slot, int n_pos);
    /* wait for queued ops; 0, or -1 with the first error of the step */
    int (*sync)(lp_backend *be);
    /* host copy of count floats from src + offset */
    void (*read)(lp_backend *be, const lp_bbuf *src, size_t offset, size_t count, float *dst);
    /* optional (NULL: malloc): host memory that read() fills fastest (CUDA: pinned, one
     * DMA instead of a copy staged through the driver's buffer); NULL when short of it.
     * host_free takes what lp_engine_logits_alloc handed out, before the backend is
     * destroyed: host_alloc's memory or, where that returned NULL, malloc's. */
    void *(*host_alloc)(lp_backend *be, size_t bytes);
    void (*host_free)(lp_backend *be, void *p);
} lp_backend_ops;

/* Every backend struct starts with this. */
struct lp_backend {
    const lp_backend_ops *ops;
};

static inline void lp_backend_free(lp_backend *be) {
    if (be) be->ops->destroy(be);
}

#endif
