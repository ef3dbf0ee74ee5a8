/* cpu_internal.h — state and helpers shared by the CPU backend's files
 * (cpu_backend.c: buffers and elementwise ops; cpu_matmul.c; cpu_attention.c;
 * cpu_moe.c). Not part of the public interface. */
#ifndef LP_CPU_INTERNAL_H
#define LP_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../../core/pool.h"
#include "../../quant/qtype.h"
#include "../backend.h"

struct lp_bbuf {
    float *data;
    size_t n;
};

/* Grow-only heap block. */
typedef struct {
    void *p;
    size_t cap;
} cpu_scratch;

void *cpu_scratch_get(cpu_scratch *s, size_t bytes);

enum { CPU_N_XQ = 4 }; /* activation conversion buffers alive at once */

typedef struct {
    lp_backend base;
    lp_pool *pool;
    int n_threads;
    lp_backend_config cfg;
    float *rope_inv_freq; /* owned copy */
    /* KV cache, F32: [layer][slot][pos][n_head_kv * head_dim] */
    float *k_cache, *v_cache;
    size_t kv_row;        /* floats per (layer, slot, pos) */
    /* current batch */
    int n_batch, cap_batch;
    int32_t *tokens, *pos, *slot;
    float *rope_cos, *rope_sin; /* [n_batch][head_dim/2] */
    cpu_scratch *thread_scratch; /* [n_threads]: weight rows as F32, attention scores */
    cpu_scratch xq[CPU_N_XQ];    /* activations converted to a vec_dot_type */
    cpu_scratch moe_buf;         /* MoE gathers and intermediates */
} lp_cpu;

/* One matmul problem: y[n][M] = x[n][K] · W^T, W rows of `type` starting at w. */
typedef struct {
    const void *w;
    lp_type type;
    size_t row_bytes;
    int K, M, n;
    const float *x;   /* F32 activations (float weights) */
    const void *xq;   /* activations in the weight's vec_dot_type (quantized weights) */
    size_t xq_stride; /* bytes per converted row */
    float *y;
} cpu_mm;

/* Fill mm->xq for a quantized weight by converting x into conversion buffer `buf`
 * (no-op for float weights). */
void cpu_mm_prepare_x(lp_cpu *c, cpu_mm *mm, int buf);
/* Run count problems in one parallel pass. */
void cpu_matmul_run(lp_cpu *c, cpu_mm *mms, int count);
/* A problem for one weight (expert >= 0: that matrix of a stack). */
cpu_mm cpu_mm_for(const lp_weight *w, int expert, const float *x, int n, float *y);

float cpu_dot_f32(const float *a, const float *b, int n);
void cpu_axpy_f32(float a, const float *x, float *y, int n); /* y += a * x */

int cpu_attention_init(lp_cpu *c);
void cpu_rope_tables(lp_cpu *c);
void cpu_rope(lp_backend *be, lp_bbuf *x, int n_head);
void cpu_attention(lp_backend *be, int layer, const lp_bbuf *q, const lp_bbuf *k, const lp_bbuf *v,
                   const lp_attn_params *p, lp_bbuf *out);
void cpu_kv_copy(lp_backend *be, int src_slot, int dst_slot, int n_pos);
void cpu_moe(lp_backend *be, const lp_moe_params *p, const lp_bbuf *x, const lp_bbuf *router_logits, int n, lp_bbuf *out);
void cpu_swiglu_rows(float *gate, const float *up, size_t count, float limit);

#endif
