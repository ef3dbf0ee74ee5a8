/* cpu_moe.c — the sparse FFN on the CPU: router top-k, then per active expert
 * one gate/up matmul and one down matmul over exactly the rows routed to it
 * (rows are grouped by expert, so each expert's weights are read once per step),
 * all experts' products in one parallel pass per phase. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/err.h"
#include "cpu_internal.h"

/* The k largest logits of one row, by descending value (ties: lower expert first),
 * and their routing weights. */
static void route_row(const float *logits, int n_expert, int k, bool norm_topk, int *sel, float *wt) {
    for (int i = 0; i < k; i++) {
        int best = -1;
        for (int e = 0; e < n_expert; e++) {
            bool taken = false;
            for (int j = 0; j < i; j++) taken |= sel[j] == e;
            if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
        }
        sel[i] = best;
    }
    /* softmax over all experts taken at the selected ones; renormalising makes it a
     * softmax over the selected logits, which is how norm_topk is computed here */
    const float max = logits[sel[0]];
    double denom = 0.0;
    if (norm_topk)
        for (int i = 0; i < k; i++) denom += exp((double)logits[sel[i]] - max);
    else
        for (int e = 0; e < n_expert; e++) denom += exp((double)logits[e] - max);
    for (int i = 0; i < k; i++) wt[i] = (float)(exp((double)logits[sel[i]] - max) / denom);
}

/* Point each problem's xq into a single conversion of the activation block x. */
static void convert_block(lp_cpu *c, cpu_mm *mms, int count, const float *x, int rows, int buf) {
    if (count == 0) return;
    cpu_mm whole = mms[0];
    whole.x = x;
    whole.n = rows;
    cpu_mm_prepare_x(c, &whole, buf);
    for (int i = 0; i < count; i++) {
        mms[i].xq = whole.xq ? (const uint8_t *)whole.xq + (size_t)((mms[i].x - x) / whole.K) * whole.xq_stride : NULL;
        mms[i].xq_stride = whole.xq_stride;
    }
}

static void add_expert_bias(const lp_weight *b, float *rows, int n_rows, int e, int dim) {
    if (!b) return;
    const float *bias = (const float *)b->data + (size_t)e * dim;
    for (int r = 0; r < n_rows; r++)
        for (int i = 0; i < dim; i++) rows[(size_t)r * dim + i] += bias[i];
}

void cpu_moe(lp_backend *be, const lp_moe_params *p, const lp_bbuf *x, const lp_bbuf *router_logits, int n, lp_bbuf *out) {
    lp_cpu *c = (lp_cpu *)be;
    const int E = (int)p->gate->ne[2], k = p->n_expert_used, D = (int)p->gate->ne[0], F = (int)p->gate->ne[1];
    const int R = n * k; /* routed rows */
    /* scratch layout (4-byte elements): sel, wt, row_of, xs[R][D], g[R][F], u[R][F], d[R][D], count/offset */
    size_t need = (size_t)R * 3 + (size_t)R * D * 2 + (size_t)R * F * 2 + (size_t)E * 2;
    float *base = cpu_scratch_get(&c->moe_buf, need * sizeof(float));
    int *sel = (int *)base, *row_of = (int *)base + 2 * (size_t)R;
    float *wt = base + R, *xs = base + 3 * (size_t)R, *g = xs + (size_t)R * D, *u = g + (size_t)R * F, *d = u + (size_t)R * F;
    int *count = (int *)(d + (size_t)R * D), *offset = count + E;

    for (int t = 0; t < n; t++)
        route_row(router_logits->data + (size_t)t * E, E, k, p->norm_topk, sel + (size_t)t * k, wt + (size_t)t * k);
    /* group the routed rows by expert (counting sort) and gather their inputs */
    memset(count, 0, (size_t)E * sizeof(int));
    for (int i = 0; i < R; i++) count[sel[i]]++;
    for (int e = 0, acc = 0; e < E; e++) offset[e] = acc, acc += count[e];
    for (int i = 0; i < R; i++) {
        row_of[i] = offset[sel[i]]++;
        memcpy(xs + (size_t)row_of[i] * D, x->data + (size_t)(i / k) * D, (size_t)D * sizeof(float));
    }
    for (int e = 0; e < E; e++) offset[e] -= count[e];

    cpu_mm *mms = lp_xmalloc((size_t)3 * E * sizeof *mms);
    int n_active = 0;
    for (int e = 0; e < E; e++) {
        if (!count[e]) continue;
        const size_t o = (size_t)offset[e];
        mms[n_active] = cpu_mm_for(p->gate, e, xs + o * D, count[e], g + o * F);
        mms[E + n_active] = cpu_mm_for(p->up, e, xs + o * D, count[e], u + o * F);
        n_active++;
    }
    /* gate and up problems side by side so one pool pass runs them all */
    memmove(mms + n_active, mms + E, (size_t)n_active * sizeof *mms);
    convert_block(c, mms, n_active, xs, R, 0);
    convert_block(c, mms + n_active, n_active, xs, R, 1);
    cpu_matmul_run(c, mms, 2 * n_active);
    for (int e = 0; e < E; e++) {
        add_expert_bias(p->gate_b, g + (size_t)offset[e] * F, count[e], e, F);
        add_expert_bias(p->up_b, u + (size_t)offset[e] * F, count[e], e, F);
    }
    cpu_swiglu_rows(g, u, (size_t)R * F, p->swiglu_limit);

    n_active = 0;
    for (int e = 0; e < E; e++)
        if (count[e]) mms[n_active++] = cpu_mm_for(p->down, e, g + (size_t)offset[e] * F, count[e], d + (size_t)offset[e] * D);
    convert_block(c, mms, n_active, g, R, 2);
    cpu_matmul_run(c, mms, n_active);
    free(mms);
    for (int e = 0; e < E; e++) add_expert_bias(p->down_b, d + (size_t)offset[e] * D, count[e], e, D);

    /* combine in ascending expert order per token, as HF's index_add loop does */
    for (int t = 0; t < n; t++) {
        float *o = out->data + (size_t)t * D;
        memset(o, 0, (size_t)D * sizeof(float));
        int done = 0;
        for (int e_prev = -1; done < k; done++) {
            int best = -1;
            for (int i = 0; i < k; i++) {
                int e = sel[(size_t)t * k + i];
                if (e > e_prev && (best < 0 || e < sel[(size_t)t * k + best])) best = i;
            }
            const int i = best;
            e_prev = sel[(size_t)t * k + i];
            cpu_axpy_f32(wt[(size_t)t * k + i], d + (size_t)row_of[(size_t)t * k + i] * D, o, D);
        }
    }
}
