/* cuda_backend.cu — the CUDA backend's host side: device memory (weights, KV
 * cache, buffers), the ops vtable, and how a step's ops reach the GPU.
 *
 * Ops are not launched when called: each call appends a record (its arguments by
 * value) to the step's op list, and the list runs at the next read() or sync().
 * Holding the whole list first buys three things:
 *   - fusion: a matmul followed by a residual add writes straight into the
 *     residual; a per-head RMSNorm followed by rope is one kernel, and q's and k's
 *     such ops run inside attention's KV-store kernel (for one token, inside the
 *     attention kernel itself: lpc_attention1); the op that produces a
 *     matmul's input also writes its int8 copy for the GEMV; a one-token gate/up
 *     GEMV does the SwiGLU after it, and a one-token RMSNorm read only by GEMVs is
 *     made in the epilogue of the GEMV that wrote its input (o, down), else by its
 *     readers while they stage their input (LP_CUDA_NOFUSE leaves any of these out);
 *   - CUDA graphs: every kernel reads the step's tokens/positions/slots from
 *     device memory, so a list equal to an earlier one (byte for byte) replays
 *     that list's graph: one launch per decode step instead of ~400;
 *   - a signature check: any difference (batch size, rows, weights) falls back
 *     to capturing or launching eagerly, never to a stale graph.
 * Matmul (matmul_path): n <= gemv_max_n rows (LP_CUDA_GEMV_MAX_N, default
 * LPC_GEMV_MAX_N) use the fused dequantize-GEMV kernels; quantized weights up to
 * mma_max_n rows (LP_CUDA_MMA_MAX_N, default LPC_MMA_MAX_N) the int8 tensor-core kernel
 * (lpc_mma.cuh) on the same int8 shadow; larger batches (prefill) dequantize weight
 * tiles to F16 and call cuBLAS (F32 weights: SGEMM, F16: no conversion). */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../../core/err.h"
#include "../../quant/qtype.h"
}
#include "cuda_backend.h"
#include "lpc_kernels.cuh"
#include "lpc_profile.cuh"
#include "cuda_module.h"

enum {
    LPC_GEMV_MAX_N = 8,            /* rows of a batch still done by GEMV: one pass over the weights; at 32
                                      streams GEMV (4 passes) ran 846 tok/s, cuBLAS tiles 1376 (H100) */
    LPC_MMA_MAX_N = 64,            /* rows of a batch done by the int8 MMA kernel on quantized weights: x32
                                      q4_k_m 2,420 tok/s vs 1,383 with cuBLAS tiles (H100) */
    LPC_GEMV_BPS = 8,              /* batch-1 GEMV blocks per SM, capped by what fits: one wave (0: no cap) */
    LPC_GRAPH_CACHE = 4,           /* graphs kept (decode, batched decode, prefill chunk, ...) */
    LPC_RECENT = 8,                /* signatures remembered: a second sighting is captured */
};
static const size_t LPC_DEQUANT_ELEMS = (size_t)32 << 20; /* F16 weight tile for cuBLAS: 64 MiB */

/* ---- device objects ---- */

struct lp_bbuf {
    float *d;
    size_t n;
    lpc_q8 q8; /* int8 shadow, allocated when a GEMV first needs it */
    float *ss; /* per 32-group sums of squares of an RMSNorm's input, when its shadow is made
                  by the GEMV before it (fuse_norm_epilogue) */
};

typedef struct {
    const lp_weight *key;
    const void *host_data; /* for sharing tied weights */
    int src_type;          /* lp_type of the host tensor (checks a re-prepared key) */
    int type;              /* LPC_* kernel type (F16 for types converted at upload) */
    int K, M, E, bpr;
    size_t row_bytes, expert_a, expert_b; /* bytes per row (float types); per expert in plane A/B */
    uint8_t *a, *b;
    size_t bytes;
    bool alias; /* storage owned by another entry */
} lpc_weight;

/* The fusions LP_CUDA_NOFUSE can leave out one by one (LP_CUDA_FUSE=0: all of them). */
enum {
    FUSE_RES, FUSE_NORM_ROPE, FUSE_HEADS, FUSE_FOLD, FUSE_EMIT, FUSE_EPI_NORM, FUSE_STAGE_NORM, FUSE_ATTN1, FUSE_GLU,
    FUSE_COUNT
};
static const char *const fuse_names[FUSE_COUNT] = {"res",     "normrope",  "heads", "fold", "emit",
                                                   "epinorm", "stagenorm", "attn1", "glu"};

typedef enum {
    OP_BATCH, OP_EMBED, OP_RMSNORM, OP_MATMUL, OP_ADD_BIAS, OP_ADD, OP_ROPE, OP_ATTN, OP_SWIGLU, OP_MOE, OP_GATHER,
    OP_KV_COPY
} op_kind;

/* A per-head op (RMSNorm and/or rope in place over rows of head_dim) that the attention
 * op's kernel does instead (plan: fuse_heads). */
typedef struct {
    int on;
    const lpc_weight *norm; /* NULL: rope only */
    float eps;
    int rope;
} lpc_head_xform;

/* One recorded op. Zeroed before filling: lists are compared with memcmp. */
typedef struct lpc_op {
    int kind, n, count;
    lp_bbuf *x[LPC_MAX_PROB], *y[LPC_MAX_PROB]; /* inputs / outputs (per kind, see op_io) */
    lp_bbuf *z;                                 /* third operand (attention v, moe router) */
    const lpc_weight *w[LPC_MAX_PROB];
    int expert[LPC_MAX_PROB];
    const lpc_weight *w2[3];                    /* moe: up, down; attention: sinks */
    const lpc_weight *bias[3];                  /* moe expert biases */
    float f0, f1;                               /* eps / limit / scale */
    int i0, i1, i2, i3;                         /* misc ints (layer, heads, window, ...) */
    size_t cnt;
    lpc_gather_rows_t rows;
    /* planning (derived from the list, so it is part of the signature only implicitly) */
    lp_bbuf *acc_into;   /* matmul: add the result into this buffer (fused residual) */
    int emit_q8;         /* producer: also write the int8 shadow of its output */
    int x_ready;         /* matmul: bit i = x[i]'s shadow is written by its producer */
    int rope_heads;      /* rmsnorm: fused with the following rope over this many heads */
    int skip;            /* fused into another op */
    lpc_head_xform head[2]; /* attention: q's and k's per-head ops, done by its kv-store kernel */
    int keep_k;          /* attention with k's op folded in: the F32 k is read later, write it too */
    int keep_q;          /* ... q's op folded in and the F32 q read after attention */
    int xn_mask;         /* matmul: bit i = x[i] is an RMSNorm's output whose 1/rms the batch-1 GEMV
                            applies (lpc_gemv_xnorm), made while staging from the norm's input xn_x,
                            or (xn_x NULL) read as the shadow of w * x its producer wrote, with the
                            sums of squares xn_ss */
    const lp_bbuf *xn_x;
    const float *xn_ss;
    const lpc_weight *xn_w;
    float xn_eps;
    const struct lpc_op *yn; /* matmul: the RMSNorm after it, made by its epilogue (lpc_gemv_ynorm) */
    const struct lpc_op *glu; /* gate/up matmul: the SwiGLU after it, done by its GEMV (lpc_gemv_glu) */
    int glu_f32;         /* ... whose F32 result is read later (else only its shadow is written) */
} lpc_op;

typedef struct {
    lpc_op *ops;
    int n_ops;
    cudaGraphExec_t exec;
    unsigned long long last_used;
} lpc_graph;

typedef struct {
    void *p;
    size_t bytes;
} lpc_scratch;

typedef struct {
    lp_backend base;
    int device, n_sm;
    int gemv_max_n;      /* batches up to this many rows run the GEMV kernels, larger ones GEMM */
    int attn_chunk;      /* decode attention: cache positions per split at least (LP_CUDA_ATTN_CHUNK) */
    int mma_max_n;       /* ... or up to this many, quantized weights, the int8 MMA kernel (0: never) */
    int attn1_grid;      /* lpc_attention1 launches the live splits only (LP_CUDA_ATTN1_GRID) */
    int attn1_max;       /* lpc_attention1 up to this many positions (LP_CUDA_ATTN1_MAX; 0: one
                            tile per warp, nsplit x 128; -1: never, the GPU lacks mma.sync) */
    int gemv_bps;        /* batch-1 GEMV: blocks per SM at most (and no more than fit), each walking
                            several row groups (LP_CUDA_GEMV_BPS; 0: one block per row group) */
    char name[256];
    cudaStream_t st;
    cublasHandle_t blas;
    void *blas_ws;
    char err[512];
    bool use_graphs, use_fusion;
    bool pdl;            /* device and LP_CUDA_PDL allow programmatic dependent launch */
    unsigned drop_ops;   /* LP_CUDA_DROP: op kinds not run (timing experiments; wrong results) */
    unsigned no_fuse;    /* LP_CUDA_NOFUSE: FUSE_* fusions left out (measuring each one) */
    int replay;          /* LP_CUDA_REPLAY: launches of a replayed graph (timing: the GPU's share of a
                            step is the difference per extra launch; a step's ops are idempotent) */
    lp_backend_config cfg;
    float *d_inv_freq;
    uint16_t *k_cache, *v_cache;
    size_t layer_elems; /* halves per layer of the cache */
    /* weights: open-addressing map lp_weight* -> entry */
    lpc_weight **wmap;
    size_t wmap_cap, n_weights;
    size_t weight_bytes, kv_bytes, scratch_bytes;
    /* batch */
    int n_batch, cap_batch;
    int32_t *h_batch; /* pinned: tokens | pos | slot */
    int32_t *d_batch;
    float *d_cos, *d_sin;
    bool batch_dirty;
    /* op list and graphs */
    lpc_op *ops;
    int n_ops, cap_ops;
    lpc_graph graphs[LPC_GRAPH_CACHE];
    uint64_t recent[LPC_RECENT];
    int recent_next;
    unsigned long long clock;
    /* scratch */
    lpc_scratch attn_part, attn_cnt, x16, w16, moe_sel, moe_wt, moe_g, moe_u, moe_d, moe_gq, mma_part, mma_cnt;
    lpc_profile prof; /* LP_CUDA_PROFILE=1 */
} lp_cuda;

/* ---- errors ---- */

static void set_err(lp_cuda *c, const char *fmt, ...) {
    if (c->err[0]) return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

static bool cuda_ok(lp_cuda *c, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return true;
    set_err(c, "cuda backend: %s: %s", what, cudaGetErrorString(e));
    return false;
}

static bool blas_ok(lp_cuda *c, cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    set_err(c, "cuda backend: %s: cuBLAS status %d", what, (int)s);
    return false;
}

static void *dev_alloc(lp_cuda *c, size_t bytes, const char *what) {
    void *p = NULL;
    if (!cuda_ok(c, cudaMalloc(&p, bytes ? bytes : 16), what)) return NULL;
    return p;
}

static void graphs_clear(lp_cuda *c);

/* Grow-only device scratch; a move invalidates captured graphs that point at it. */
static void *scratch(lp_cuda *c, lpc_scratch *s, size_t bytes) {
    if (bytes <= s->bytes) return s->p;
    cudaStreamSynchronize(c->st);
    graphs_clear(c);
    if (s->p) cudaFree(s->p);
    c->scratch_bytes -= s->bytes;
    s->bytes = bytes + bytes / 4;
    s->p = dev_alloc(c, s->bytes, "scratch");
    if (!s->p) s->bytes = 0;
    c->scratch_bytes += s->bytes;
    return s->p;
}

static void scratch_free(lpc_scratch *s) {
    if (s->p) cudaFree(s->p);
    s->p = NULL;
    s->bytes = 0;
}

/* ---- weights ---- */

static size_t wmap_slot(const lp_cuda *c, const lp_weight *w) {
    size_t h = ((uintptr_t)w >> 4) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (c->wmap_cap - 1);
}

static const lpc_weight *find_weight(const lp_cuda *c, const lp_weight *w) {
    if (!w || !c->wmap_cap) return NULL;
    for (size_t i = wmap_slot(c, w);; i = (i + 1) & (c->wmap_cap - 1)) {
        if (!c->wmap[i]) return NULL;
        if (c->wmap[i]->key == w) return c->wmap[i];
    }
}

static void wmap_insert(lp_cuda *c, lpc_weight *e) {
    if (2 * (c->n_weights + 1) > c->wmap_cap) {
        lpc_weight **old = c->wmap;
        size_t old_cap = c->wmap_cap;
        c->wmap_cap = old_cap ? 2 * old_cap : 1024;
        c->wmap = (lpc_weight **)lp_xcalloc(c->wmap_cap, sizeof *c->wmap);
        for (size_t i = 0; i < old_cap; i++)
            if (old[i]) {
                size_t j = wmap_slot(c, old[i]->key);
                while (c->wmap[j]) j = (j + 1) & (c->wmap_cap - 1);
                c->wmap[j] = old[i];
            }
        free(old);
    }
    size_t j = wmap_slot(c, e->key);
    while (c->wmap[j]) j = (j + 1) & (c->wmap_cap - 1);
    c->wmap[j] = e;
    c->n_weights++;
}

/* Host -> device in pieces through a bounce buffer the producer fills. */
typedef void (*fill_fn)(const void *ctx, size_t first, size_t count, uint8_t *dst_a, uint8_t *dst_b);

typedef struct {
    const lp_weight *w;
    const lpc_plane_split *sp;
    size_t blocks_per_expert;
} repack_ctx;

static const uint8_t *expert_src(const lp_weight *w, size_t e) { return (const uint8_t *)lp_weight_expert(w, (int)e); }

/* Blocks [first, first+count) of the whole stack, experts concatenated. */
static void fill_planes(const void *vctx, size_t first, size_t count, uint8_t *a, uint8_t *b) {
    const repack_ctx *x = (const repack_ctx *)vctx;
    while (count) {
        const size_t e = first / x->blocks_per_expert, in = first % x->blocks_per_expert;
        const size_t n = count < x->blocks_per_expert - in ? count : x->blocks_per_expert - in;
        lpc_repack(x->sp, expert_src(x->w, e) + in * x->sp->raw_bytes, n, a, b);
        a += n * x->sp->a_len;
        b += n * x->sp->b_stride;
        first += n;
        count -= n;
    }
}

/* Elements [first, first+count) as raw bytes (float types) or converted to F16. */
typedef struct {
    const lp_weight *w;
    size_t elems_per_expert;
    int convert; /* 1: to_float then F16 */
} raw_ctx;

static void fill_raw(const void *vctx, size_t first, size_t count, uint8_t *a, uint8_t *b) {
    (void)b;
    const raw_ctx *x = (const raw_ctx *)vctx;
    const lp_qtype_traits *tr = lp_qtype(x->w->type);
    const size_t K = (size_t)x->w->ne[0];
    while (count) {
        /* whole rows at a time (to_float works on blocks) */
        const size_t e = first / x->elems_per_expert, in = first % x->elems_per_expert;
        const size_t n = count < x->elems_per_expert - in ? count : x->elems_per_expert - in;
        const uint8_t *src = expert_src(x->w, e);
        if (!x->convert) {
            const size_t esz = tr->block_bytes / tr->block_size;
            memcpy(a, src + in * esz, n * esz);
            a += n * esz;
        } else {
            float row[8192];
            for (size_t r = in / K; r < (in + n) / K; r++)
                for (size_t k0 = 0; k0 < K; k0 += 8192) {
                    /* rows longer than the buffer convert in block-aligned pieces */
                    const size_t len = K - k0 < 8192 ? K - k0 : 8192;
                    tr->to_float(src + r * x->w->row_bytes + k0 / tr->block_size * tr->block_bytes, row, (int64_t)len);
                    for (size_t i = 0; i < len; i++) ((uint16_t *)a)[i] = lp_f32_to_f16(row[i]);
                    a += len * 2;
                }
        }
        first += n;
        count -= n;
    }
}

/* Upload `units` units (blocks or elements) of a_unit / b_unit bytes each. */
static int upload(lp_cuda *c, fill_fn fill, const void *ctx, size_t units, size_t a_unit, size_t b_unit, uint8_t *da,
                  uint8_t *db, size_t unit_align) {
    const size_t piece = ((size_t)(64 << 20) / (a_unit + b_unit) / unit_align + 1) * unit_align;
    uint8_t *ha = NULL, *hb = NULL;
    if (!cuda_ok(c, cudaMallocHost((void **)&ha, piece * a_unit), "pinned upload buffer")) return -1;
    if (b_unit && !cuda_ok(c, cudaMallocHost((void **)&hb, piece * b_unit), "pinned upload buffer")) {
        cudaFreeHost(ha);
        return -1;
    }
    int rc = 0;
    for (size_t first = 0; first < units && rc == 0; first += piece) {
        const size_t n = units - first < piece ? units - first : piece;
        fill(ctx, first, n, ha, hb);
        if (!cuda_ok(c, cudaMemcpy(da + first * a_unit, ha, n * a_unit, cudaMemcpyHostToDevice), "weight upload")) rc = -1;
        if (rc == 0 && b_unit &&
            !cuda_ok(c, cudaMemcpy(db + first * b_unit, hb, n * b_unit, cudaMemcpyHostToDevice), "weight upload"))
            rc = -1;
    }
    cudaFreeHost(ha);
    if (hb) cudaFreeHost(hb);
    return rc;
}

static int fail_err(lp_cuda *c) {
    lp_fail("%s", c->err);
    c->err[0] = 0;
    return -1;
}

static const void *weight_host_data(const lp_weight *w) { return w->data ? w->data : (w->expert_data ? w->expert_data[0] : NULL); }

/* Device copies are keyed by the lp_weight's address. A key prepared again must still
 * describe the same tensor: an lp_weight reused for another tensor would otherwise run
 * every later op on the stale device copy (silently wrong results). */
static bool same_tensor(const lpc_weight *e, const lp_weight *w) {
    return e->src_type == (int)w->type && e->K == (int)w->ne[0] && e->M == (int)(w->n_dims > 1 ? w->ne[1] : 1) &&
           e->E == (int)(w->n_dims > 2 && w->ne[2] > 0 ? w->ne[2] : 1) && e->host_data == weight_host_data(w);
}

/* The plane split of a host weight (elems per expert, E experts), NULL for types without
 * a decoder (converted to F16): MLX weights whose scales and biases are all bfloat16
 * values take the variant with bf16 plane B (fewer bytes per weight, same values). */
static const lpc_plane_split *plane_split(const lp_weight *w, size_t elems, int E) {
    const lpc_plane_split *sp = lpc_split_for((int)w->type, true);
    for (int e = 0; sp && sp->b_bf16 && e < E; e++)
        if (!lpc_split_fits(sp, expert_src(w, (size_t)e), elems / sp->block)) sp = lpc_split_for((int)w->type, false);
    return sp;
}

static int cuda_prepare_weight(lp_backend *be, const lp_weight *w) {
    lp_cuda *c = (lp_cuda *)be;
    const lpc_weight *known = find_weight(c, w);
    if (known)
        return same_tensor(known, w) ? 0
                                     : lp_fail("cuda backend: weight %p: prepared before as another tensor (type, shape or data "
                                               "changed); an lp_weight must not be reused while the backend lives",
                                               (const void *)w);
    const lp_qtype_traits *tr = lp_qtype(w->type);
    if (!tr || !tr->to_float) return lp_fail("cuda backend: weight type %d is not supported", (int)w->type);
    lpc_weight *e = (lpc_weight *)lp_xcalloc(1, sizeof *e);
    e->key = w;
    e->host_data = weight_host_data(w);
    e->src_type = (int)w->type;
    e->K = (int)w->ne[0];
    e->M = (int)(w->n_dims > 1 ? w->ne[1] : 1);
    e->E = (int)(w->n_dims > 2 && w->ne[2] > 0 ? w->ne[2] : 1);
    /* tied weights (one tensor under two roles) share the device copy */
    for (size_t i = 0; i < c->wmap_cap; i++) {
        const lpc_weight *o = c->wmap[i];
        if (o && o->host_data == e->host_data && o->src_type == (int)w->type && o->K == e->K && o->M == e->M && o->E == e->E) {
            *e = *o;
            e->key = w;
            e->alias = true;
            wmap_insert(c, e);
            return 0;
        }
    }
    const size_t elems = (size_t)e->K * e->M, stack = elems * e->E;
    const lpc_plane_split *sp = plane_split(w, elems, e->E);
    int rc;
    if (sp && e->K % sp->block != 0) { /* the MLX loader guarantees whole groups; say so if not */
        const int K = e->K;
        free(e);
        return lp_fail("cuda backend: %s weight rows of %d elements: need a multiple of %d", tr->name, K, sp->block);
    }
    if (sp) { /* GGUF K-quants and MLX affine: the plane split, no conversion */
        e->type = sp->type;
        e->bpr = e->K / sp->block;
        const size_t blocks = stack / sp->block;
        e->expert_a = elems / sp->block * sp->a_len;
        e->expert_b = elems / sp->block * sp->b_stride;
        e->a = (uint8_t *)dev_alloc(c, blocks * sp->a_len, "weight plane A");
        e->b = (uint8_t *)dev_alloc(c, blocks * sp->b_stride, "weight plane B");
        e->bytes = blocks * (sp->a_len + sp->b_stride);
        repack_ctx ctx = {w, sp, elems / sp->block};
        rc = e->a && e->b ? upload(c, fill_planes, &ctx, blocks, sp->a_len, sp->b_stride, e->a, e->b, 1) : -1;
    } else {
        const bool native = w->type == LP_TYPE_F32 || w->type == LP_TYPE_F16 || w->type == LP_TYPE_BF16;
        e->type = native ? (int)w->type : LPC_F16;
        const size_t esz = e->type == LPC_F32 ? 4 : 2;
        const int K = e->K, align = 16 / (int)esz;
        if (w->n_dims > 1 && K % align != 0) { /* the GEMV reads rows 16 bytes at a time */
            free(e);
            return lp_fail("cuda backend: %s weight rows of %d elements: need a multiple of %d", tr->name, K, align);
        }
        e->row_bytes = (size_t)e->K * esz;
        e->expert_a = elems * esz;
        e->a = (uint8_t *)dev_alloc(c, stack * esz, "weight");
        e->bytes = stack * esz;
        raw_ctx ctx = {w, elems, !native};
        rc = e->a ? upload(c, fill_raw, &ctx, stack, esz, 0, e->a, NULL, (size_t)e->K) : -1;
    }
    if (rc != 0) {
        if (e->a) cudaFree(e->a);
        if (e->b) cudaFree(e->b);
        free(e);
        return fail_err(c);
    }
    c->weight_bytes += e->bytes;
    wmap_insert(c, e);
    return 0;
}

/* ---- buffers ---- */

static lp_bbuf *cuda_alloc(lp_backend *be, size_t n_floats) {
    lp_cuda *c = (lp_cuda *)be;
    lp_bbuf *b = (lp_bbuf *)lp_xcalloc(1, sizeof *b);
    b->n = n_floats;
    b->d = (float *)dev_alloc(c, (n_floats ? n_floats : 1) * sizeof(float), "buffer");
    if (b->d) cudaMemset(b->d, 0, (n_floats ? n_floats : 1) * sizeof(float));
    c->scratch_bytes += n_floats * sizeof(float);
    return b;
}

static void q8_free(lp_bbuf *b) {
    if (b->q8.q) cudaFree(b->q8.q);
    if (b->q8.d) cudaFree(b->q8.d);
    if (b->q8.s) cudaFree(b->q8.s);
    memset(&b->q8, 0, sizeof b->q8);
}

static void flush(lp_cuda *c);

static void cuda_release(lp_backend *be, lp_bbuf *b) {
    lp_cuda *c = (lp_cuda *)be;
    if (!b) return;
    flush(c);
    cudaStreamSynchronize(c->st);
    graphs_clear(c); /* graphs may point at this buffer */
    if (b->d) cudaFree(b->d);
    if (b->ss) cudaFree(b->ss);
    q8_free(b);
    c->scratch_bytes -= b->n * sizeof(float);
    free(b);
}

/* The int8 shadow of a buffer, allocated on first need (never during a capture:
 * planning runs before any capture of the same list). */
static lpc_q8 q8_of(lp_cuda *c, lp_bbuf *b) {
    if (!b->q8.q) {
        const size_t n = (b->n + 31) / 32 * 32;
        b->q8.q = (int8_t *)dev_alloc(c, n, "int8 shadow");
        b->q8.d = (float *)dev_alloc(c, n / 32 * sizeof(float), "int8 shadow");
        b->q8.s = (float *)dev_alloc(c, n / 16 * sizeof(float), "int8 shadow");
        c->scratch_bytes += n + n / 32 * 4 + n / 16 * 4;
        if (!b->q8.q || !b->q8.d || !b->q8.s) q8_free(b);
    }
    return b->q8;
}

/* ---- recording ---- */

static lpc_op *new_op(lp_cuda *c, int kind) {
    if (c->n_ops == c->cap_ops) {
        c->cap_ops = c->cap_ops ? 2 * c->cap_ops : 1024;
        c->ops = (lpc_op *)lp_xrealloc(c->ops, (size_t)c->cap_ops * sizeof *c->ops);
    }
    lpc_op *op = &c->ops[c->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    return op;
}

static const lpc_weight *need_weight(lp_cuda *c, const lp_weight *w) {
    const lpc_weight *e = find_weight(c, w);
    if (!e && w) set_err(c, "cuda backend: a weight was used without prepare_weight");
    return e;
}

static void cuda_set_batch(lp_backend *be, const lp_batch_meta *b) {
    lp_cuda *c = (lp_cuda *)be;
    flush(c); /* ops of the previous batch read the old arrays */
    if (b->n > c->cap_batch) {
        cudaStreamSynchronize(c->st);
        graphs_clear(c);
        if (c->h_batch) cudaFreeHost(c->h_batch);
        if (c->d_batch) cudaFree(c->d_batch);
        if (c->d_cos) cudaFree(c->d_cos);
        if (c->d_sin) cudaFree(c->d_sin);
        c->cap_batch = b->n;
        const size_t half = (size_t)c->cfg.head_dim / 2;
        if (cuda_ok(c, cudaMallocHost((void **)&c->h_batch, 3 * (size_t)b->n * sizeof(int32_t)), "batch buffer")) {
            c->d_batch = (int32_t *)dev_alloc(c, 3 * (size_t)b->n * sizeof(int32_t), "batch");
            c->d_cos = (float *)dev_alloc(c, (size_t)b->n * half * sizeof(float), "rope table");
            c->d_sin = (float *)dev_alloc(c, (size_t)b->n * half * sizeof(float), "rope table");
        } else {
            c->h_batch = NULL;
        }
        if (!c->h_batch || !c->d_batch || !c->d_cos || !c->d_sin) {
            c->cap_batch = 0;
            c->n_batch = 0;
            return;
        }
    }
    c->n_batch = b->n;
    /* the stream is idle here (the previous step ended with read/sync), so the pinned
     * staging buffer is free to overwrite */
    cudaStreamSynchronize(c->st);
    memcpy(c->h_batch, b->tokens, (size_t)b->n * sizeof(int32_t));
    memcpy(c->h_batch + b->n, b->pos, (size_t)b->n * sizeof(int32_t));
    memcpy(c->h_batch + 2 * b->n, b->slot, (size_t)b->n * sizeof(int32_t));
    c->batch_dirty = true;
    new_op(c, OP_BATCH)->n = b->n;
}

static const int32_t *d_tokens(const lp_cuda *c) { return c->d_batch; }
static const int32_t *d_pos(const lp_cuda *c) { return c->d_batch + c->n_batch; }
static const int32_t *d_slot(const lp_cuda *c) { return c->d_batch + 2 * c->n_batch; }

static void cuda_embed(lp_backend *be, const lp_weight *emb, lp_bbuf *out) {
    lp_cuda *c = (lp_cuda *)be;
    lpc_op *op = new_op(c, OP_EMBED);
    op->w[0] = need_weight(c, emb);
    op->y[0] = out;
    op->n = c->n_batch;
}

static void cuda_rmsnorm(lp_backend *be, const lp_bbuf *x, const lp_weight *w, int rows, float eps, lp_bbuf *out) {
    lp_cuda *c = (lp_cuda *)be;
    lpc_op *op = new_op(c, OP_RMSNORM);
    op->x[0] = (lp_bbuf *)x;
    op->y[0] = out;
    op->w[0] = need_weight(c, w);
    op->n = rows;
    op->f0 = eps;
}

static void cuda_matmul(lp_backend *be, int count, const lp_matmul_args *args, int n) {
    lp_cuda *c = (lp_cuda *)be;
    for (int start = 0; start < count; start += LPC_MAX_PROB) {
        lpc_op *op = new_op(c, OP_MATMUL);
        op->n = n;
        op->count = count - start < LPC_MAX_PROB ? count - start : LPC_MAX_PROB;
        for (int i = 0; i < op->count; i++) {
            const lp_matmul_args *a = &args[start + i];
            op->w[i] = need_weight(c, a->w);
            op->expert[i] = a->expert < 0 ? 0 : a->expert;
            op->x[i] = (lp_bbuf *)a->x;
            op->y[i] = a->y;
        }
    }
}

static void cuda_add_bias(lp_backend *be, lp_bbuf *x, const lp_weight *b, int rows) {
    lp_cuda *c = (lp_cuda *)be;
    lpc_op *op = new_op(c, OP_ADD_BIAS);
    op->x[0] = x;
    op->y[0] = x;
    op->w[0] = need_weight(c, b);
    op->n = rows;
}

static void cuda_add(lp_backend *be, lp_bbuf *x, const lp_bbuf *y, size_t count) {
    lp_cuda *c = (lp_cuda *)be;
    lpc_op *op = new_op(c, OP_ADD);
    op->x[0] = x;
    op->x[1] = (lp_bbuf *)y;
    op->y[0] = x;
    op->cnt = count;
}

static void cuda_rope(lp_backend *be, lp_bbuf *x, int n_head) {
    lp_cuda *c = (lp_cuda *)be;
    lpc_op *op = new_op(c, OP_ROPE);
    op->x[0] = x;
    op->y[0] = x;
    op->i0 = n_head;
    op->n = c->n_batch;
}

static int n_split(const lp_cuda *c, int n);

/* A one-token step's attention runs as lpc_attention1 (up to LP_CUDA_ATTN1_MAX positions;
 * all, by default: with its products on tensor cores it beats the split kernel at every
 * length, 235 vs 217 tok/s at 16k and 197 vs 180 at 32k for Qwen3-8B q4_k_m on the H100;
 * the FMA version lost at 32k, 155 vs 180). Returns the splits it launches, 0 for the
 * split kernel: the live splits rounded up to a power of two (with LP_CUDA_ATTN1_GRID=0
 * all nsplit), so the blocks without positions, each holding 76 KB of shared memory until
 * it exits, do not stand in the next GEMV's way, while the op (and so the graph) changes
 * at 7 context lengths, not every 128 positions. */
static int attn1_splits(const lp_cuda *c, int window) {
    if (c->n_batch != 1) return 0;
    lpc_attn_args a;
    memset(&a, 0, sizeof a);
    a.nsplit = n_split(c, 1), a.min_chunk = c->attn_chunk, a.window = window;
    const int pos = c->h_batch[c->n_batch]; /* tokens, then positions */
    const int len = pos - lpc_attn_first(a, pos) + 1, live = lpc_attn_live_splits(a, len);
    if (c->attn1_max < 0 || len > (c->attn1_max ? c->attn1_max : a.nsplit * LPC_ATTN_MIN_CHUNK)) return 0;
    if (!c->attn1_grid) return a.nsplit;
    int g = 1;
    while (g < live) g *= 2;
    return g < a.nsplit ? g : a.nsplit;
}

static void cuda_attention(lp_backend *be, int layer, const lp_bbuf *q, const lp_bbuf *k, const lp_bbuf *v,
                           const lp_attn_params *p, lp_bbuf *out) {
    lp_cuda *c = (lp_cuda *)be;
    lpc_op *op = new_op(c, OP_ATTN);
    op->x[0] = (lp_bbuf *)q;
    op->x[1] = (lp_bbuf *)k;
    op->x[2] = (lp_bbuf *)v;
    op->y[0] = out;
    op->w2[0] = p->sinks ? need_weight(c, p->sinks) : NULL;
    op->n = c->n_batch;
    op->i0 = layer;
    op->i1 = p->n_head;
    op->i2 = p->window;
    op->i3 = attn1_splits(c, p->window);
    op->f0 = p->scale;
    if (p->n_head_kv != c->cfg.n_head_kv || p->head_dim != c->cfg.head_dim || p->n_head % p->n_head_kv ||
        p->n_head / p->n_head_kv > 16)
        set_err(c, "cuda backend: attention with %d heads over %d kv heads of %d: unsupported", p->n_head, p->n_head_kv,
                p->head_dim);
}

static void cuda_swiglu(lp_backend *be, lp_bbuf *gate, const lp_bbuf *up, size_t count, float limit) {
    lp_cuda *c = (lp_cuda *)be;
    lpc_op *op = new_op(c, OP_SWIGLU);
    op->x[0] = gate;
    op->x[1] = (lp_bbuf *)up;
    op->y[0] = gate;
    op->cnt = count;
    op->f0 = limit;
}

static void cuda_moe(lp_backend *be, const lp_moe_params *p, const lp_bbuf *x, const lp_bbuf *router_logits, int n,
                     lp_bbuf *out) {
    lp_cuda *c = (lp_cuda *)be;
    lpc_op *op = new_op(c, OP_MOE);
    op->x[0] = (lp_bbuf *)x;
    op->z = (lp_bbuf *)router_logits;
    op->y[0] = out;
    op->w[0] = need_weight(c, p->gate);
    op->w2[0] = need_weight(c, p->up);
    op->w2[1] = need_weight(c, p->down);
    op->bias[0] = p->gate_b ? need_weight(c, p->gate_b) : NULL;
    op->bias[1] = p->up_b ? need_weight(c, p->up_b) : NULL;
    op->bias[2] = p->down_b ? need_weight(c, p->down_b) : NULL;
    op->n = n;
    op->i0 = p->n_expert_used;
    op->i1 = p->norm_topk;
    op->f0 = p->swiglu_limit;
}

static void cuda_gather_rows(lp_backend *be, const lp_bbuf *src, int dim, const int32_t *rows, int n_rows, lp_bbuf *dst) {
    lp_cuda *c = (lp_cuda *)be;
    for (int start = 0; start < n_rows; start += LPC_GATHER_MAX) {
        lpc_op *op = new_op(c, OP_GATHER);
        op->x[0] = (lp_bbuf *)src;
        op->y[0] = dst;
        op->i0 = dim;
        op->i1 = start; /* destination row offset */
        op->n = n_rows - start < LPC_GATHER_MAX ? n_rows - start : LPC_GATHER_MAX;
        for (int i = 0; i < op->n; i++) op->rows.rows[i] = rows[start + i];
    }
}

static void cuda_kv_copy(lp_backend *be, int src_slot, int dst_slot, int n_pos) {
    lp_cuda *c = (lp_cuda *)be;
    if (src_slot == dst_slot || n_pos <= 0) return;
    lpc_op *op = new_op(c, OP_KV_COPY);
    op->i0 = src_slot;
    op->i1 = dst_slot;
    op->i2 = n_pos;
}

/* ---- planning: fusion and int8 shadows over the recorded list ---- */

/* Buffers an op reads and writes (after fusion). */
static int op_io(const lpc_op *op, lp_bbuf **rd, lp_bbuf **wr, int *n_wr) {
    int n_rd = 0;
    *n_wr = 0;
    switch (op->kind) {
    case OP_MATMUL:
        for (int i = 0; i < op->count; i++) {
            rd[n_rd++] = op->x[i];
            wr[(*n_wr)++] = op->acc_into ? op->acc_into : op->y[i];
        }
        if (op->acc_into) rd[n_rd++] = op->acc_into;
        return n_rd;
    case OP_ATTN:
        rd[n_rd++] = op->x[0], rd[n_rd++] = op->x[1], rd[n_rd++] = op->x[2];
        for (int i = 0; i < 2; i++)
            if (op->head[i].on) wr[(*n_wr)++] = op->x[i]; /* q, k normalised / roped in place */
        break;
    case OP_MOE:
        rd[n_rd++] = op->x[0], rd[n_rd++] = op->z;
        break;
    case OP_ADD:
    case OP_SWIGLU:
        rd[n_rd++] = op->x[0], rd[n_rd++] = op->x[1];
        break;
    case OP_RMSNORM:
    case OP_ADD_BIAS:
    case OP_ROPE:
    case OP_GATHER:
        rd[n_rd++] = op->x[0];
        break;
    default:
        break;
    }
    if (op->y[0]) wr[(*n_wr)++] = op->y[0];
    return n_rd;
}

static bool has(lp_bbuf *const *set, int n, const lp_bbuf *b) {
    for (int i = 0; i < n; i++)
        if (set[i] == b) return true;
    return false;
}

/* Is b overwritten (without being read) before any read after op i? The end of the
 * list is unknown territory: not dead. */
static bool dead_after(const lp_cuda *c, int i, const lp_bbuf *b) {
    for (int j = i + 1; j < c->n_ops; j++) {
        if (c->ops[j].skip) continue;
        lp_bbuf *rd[8], *wr[8];
        int n_wr, n_rd = op_io(&c->ops[j], rd, wr, &n_wr);
        if (has(rd, n_rd, b)) return false;
        if (has(wr, n_wr, b)) return true;
    }
    return false;
}

static bool touches(const lpc_op *op, const lp_bbuf *b) {
    lp_bbuf *rd[8], *wr[8];
    int n_wr, n_rd = op_io(op, rd, wr, &n_wr);
    return has(rd, n_rd, b) || has(wr, n_wr, b);
}

static bool quantized_weight(const lpc_weight *w) { return w && lpc_find_split(w->type) != NULL; }

typedef enum { MM_GEMV, MM_MMA, MM_GEMM } mm_path;

/* Which kernels multiply n activation rows with weight w. */
static mm_path matmul_path(const lp_cuda *c, int n, const lpc_weight *w) {
    const bool quant = quantized_weight(w);
    if (quant && c->cfg.f32_activations) return MM_GEMM; /* reference math: F32 activations */
    if (n <= c->gemv_max_n) return MM_GEMV;
    return quant && n <= c->mma_max_n ? MM_MMA : MM_GEMM;
}

/* Elements an emit-capable producer writes from the start of its output, or 0 when
 * it cannot write the int8 shadow (rows not a multiple of 32 elements). */
static size_t emit_extent(const lp_cuda *c, const lpc_op *op) {
    switch (op->kind) {
    case OP_RMSNORM: return op->rope_heads == 0 && op->w[0] && op->w[0]->K % 32 == 0 ? (size_t)op->n * op->w[0]->K : 0;
    case OP_SWIGLU: return op->cnt % 32 == 0 ? op->cnt : 0;
    case OP_ATTN: return c->cfg.head_dim % 32 == 0 ? (size_t)op->n * op->i1 * c->cfg.head_dim : 0;
    default: return 0;
    }
}

/* The op that last changes buffer b before the attention op ops[a], when the attention's
 * kernel can do it instead: an in-place per-head RMSNorm (with or without its rope) or a
 * rope, over exactly the n * heads rows attention reads. By construction nothing between
 * it and the attention touches b, so doing it later is the same. -1 if none. */
static int head_op(const lp_cuda *c, int a, const lp_bbuf *b, int heads) {
    const int n = c->ops[a].n;
    for (int j = a - 1; j >= 0; j--) {
        const lpc_op *op = &c->ops[j];
        if (op->skip) continue;
        if (op->kind == OP_BATCH) return -1; /* the rope tables change */
        if (!touches(op, b)) continue;
        if (op->kind == OP_ROPE) return op->x[0] == b && op->i0 == heads && op->n == n ? j : -1;
        const bool per_head = op->kind == OP_RMSNORM && op->x[0] == b && op->y[0] == b && op->w[0] &&
                              op->w[0]->K == c->cfg.head_dim && (size_t)op->n == (size_t)n * heads;
        return per_head && (!op->rope_heads || op->rope_heads == heads) ? j : -1;
    }
    return -1;
}

/* Attention's kv-store kernel also does q's and k's last per-head op (norm/rope): one
 * launch instead of three per layer. q, k, v must be distinct buffers (the kernel reads v
 * and k while it writes q and k). The F32 k is written back only when read later. */
static void fuse_heads(lp_cuda *c, int a) {
    lpc_op *at = &c->ops[a];
    lp_bbuf *q = at->x[0], *k = at->x[1], *v = at->x[2];
    if (q == k || q == v || k == v) return;
    const int heads[2] = {at->i1, c->cfg.n_head_kv};
    for (int i = 0; i < 2; i++) {
        const int j = head_op(c, a, at->x[i], heads[i]);
        if (j < 0) continue;
        lpc_op *op = &c->ops[j];
        lpc_head_xform *x = &at->head[i];
        x->on = 1;
        x->norm = op->kind == OP_RMSNORM ? op->w[0] : NULL;
        x->eps = op->f0;
        x->rope = op->kind == OP_ROPE || op->rope_heads;
        op->skip = 1;
    }
    at->keep_k = at->head[1].on && !dead_after(c, a, k);
    at->keep_q = at->head[0].on && !dead_after(c, a, q);
}

/* At least `count` zeroed counters in s (the folded attention combine, the MMA split-K
 * merge), allocated at planning, never inside a capture; every kernel
 * using them leaves them at zero after its launch. */
static void counters(lp_cuda *c, lpc_scratch *s, size_t count) {
    const size_t had = s->bytes;
    void *p = scratch(c, s, count * sizeof(unsigned));
    if (p && s->bytes != had) cuda_ok(c, cudaMemsetAsync(p, 0, s->bytes, c->st), "counters");
}

static bool fuse_on(const lp_cuda *c, int f) { return c->use_fusion && !(c->no_fuse >> f & 1); }

/* Problem k of matmul mm runs on the batch-1 GEMV kernel (lpc_gemv1_q). */
static bool gemv1_runs(const lp_cuda *c, const lpc_op *mm, int k) {
    const lpc_weight *w = mm->w[k];
    return matmul_path(c, mm->n, w) == MM_GEMV && quantized_weight(w) && lpc_gemv1_fits(w->K, mm->n);
}

/* Everything after op `from` that reads b before b is next written is a matmul reading only
 * its int8 shadow through the batch-1 GEMV, and b is written again before the list ends:
 * its F32 values are never needed. */
static bool shadow_only(const lp_cuda *c, int from, const lp_bbuf *b) {
    for (int j = from + 1; j < c->n_ops; j++) {
        const lpc_op *op = &c->ops[j];
        if (op->skip) continue;
        lp_bbuf *rd[8], *wr[8];
        int n_wr, n_rd = op_io(op, rd, wr, &n_wr);
        if (has(rd, n_rd, b)) {
            if (op->kind != OP_MATMUL) return false;
            for (int k = 0; k < op->count; k++)
                if (op->x[k] == b && !(gemv1_runs(c, op, k) && op->x_ready >> k & 1)) return false;
        }
        if (has(wr, n_wr, b)) return true;
    }
    return false;
}

/* The next op after i that runs, or NULL. */
static lpc_op *next_live(lp_cuda *c, int i) {
    for (int j = i + 1; j < c->n_ops; j++)
        if (!c->ops[j].skip) return &c->ops[j];
    return NULL;
}

/* The last op before i that runs, or NULL. */
static lpc_op *prev_live(lp_cuda *c, int i) {
    for (int j = i - 1; j >= 0; j--)
        if (!c->ops[j].skip) return &c->ops[j];
    return NULL;
}

/* Op j is a one-token RMSNorm whose output only batch-1 GEMVs read, through its int8
 * shadow, so they can apply its 1/rms themselves (lpc_gemv_xnorm). */
static bool norm_for_gemvs(const lp_cuda *c, int j) {
    const lpc_op *nx = &c->ops[j];
    const lpc_weight *w = nx->w[0];
    return !nx->skip && nx->kind == OP_RMSNORM && nx->n == 1 && !nx->rope_heads && nx->emit_q8 && w && w->type == LPC_F32 &&
           w->K % 32 == 0 && nx->y[0] != nx->x[0] && shadow_only(c, j, nx->y[0]);
}

/* Norm j is done without a kernel: its readers apply 1/rms, making the input from x
 * (staged) or reading the shadow and the sums of squares ss its producer wrote. */
static void norm_to_readers(lp_cuda *c, int j, const lp_bbuf *x, const float *ss) {
    lpc_op *nx = &c->ops[j];
    for (int k = j + 1; k < c->n_ops; k++) {
        lpc_op *op = &c->ops[k];
        if (op->skip || !touches(op, nx->y[0])) continue;
        if (op->kind != OP_MATMUL) break; /* the writer shadow_only found */
        for (int i = 0; i < op->count; i++)
            if (op->x[i] == nx->y[0]) {
                op->xn_mask |= 1 << i;
                op->xn_x = x, op->xn_ss = ss, op->xn_w = nx->w[0], op->xn_eps = nx->f0;
            }
    }
    nx->skip = 1;
}

/* A norm for GEMVs (norm_for_gemvs) right after the batch-1 GEMV that wrote its input
 * (o and down into the residual) is made by that GEMV's epilogue, a block per 32-row
 * group (lpc_grp_norm): the shadow of w * x and each group's sum of squares, from which
 * the readers take 1/rms. */
static bool fuse_norm_epilogue(lp_cuda *c, int j) {
    lpc_op *nx = &c->ops[j], *mm = prev_live(c, j);
    if (!norm_for_gemvs(c, j)) return false;
    if (!mm || mm->kind != OP_MATMUL || mm->count != 1 || mm->n != 1 || mm->expert[0] || mm->glu || mm->yn ||
        !gemv1_runs(c, mm, 0) || mm->w[0]->M % 32 || mm->w[0]->M != nx->w[0]->K ||
        nx->x[0] != (mm->acc_into ? mm->acc_into : mm->y[0]))
        return false;
    lp_bbuf *y = nx->y[0];
    if (!y->ss) y->ss = (float *)dev_alloc(c, (y->n + 31) / 32 * sizeof(float), "norm sums");
    if (!y->ss) return false;
    mm->yn = nx;
    norm_to_readers(c, j, NULL, y->ss);
    return true;
}

/* Otherwise its readers make it while they stage their input (lpc_gemv_xnorm): they read
 * the norm's input and weight instead of the shadow, so the norm needs no kernel and its
 * producer nothing after its stores. The input must stay as it is until the last of them:
 * no op up to there may write it. */
static void fuse_stage_norm(lp_cuda *c, int j) {
    lpc_op *nx = &c->ops[j];
    if (!norm_for_gemvs(c, j)) return;
    bool x_written = false;
    for (int k = j + 1; k < c->n_ops; k++) { /* the readers, up to the next write (shadow_only found it) */
        const lpc_op *op = &c->ops[k];
        if (op->skip) continue;
        lp_bbuf *rd[8], *wr[8];
        int n_wr, n_rd = op_io(op, rd, wr, &n_wr);
        x_written = x_written || has(wr, n_wr, nx->x[0]); /* a reader writing x too reads it while it changes */
        if (has(rd, n_rd, nx->y[0]) && x_written) return;
        if (has(wr, n_wr, nx->y[0])) break;
    }
    norm_to_readers(c, j, nx->x[0], NULL);
}

/* A batch-1 gate/up GEMV followed by the SwiGLU of its two results does the SwiGLU too
 * (lpc_gemv_glu): up's values are dead after it, gate's F32 result is written only when
 * something other than a GEMV's shadow reads it. */
static void fuse_glu(lp_cuda *c, int i) {
    lpc_op *mm = &c->ops[i], *sw = next_live(c, i);
    if (!sw || sw->kind != OP_SWIGLU || mm->kind != OP_MATMUL || mm->count != 2 || mm->n != 1 || mm->acc_into)
        return;
    const lpc_weight *g = mm->w[0], *u = mm->w[1];
    const int j = (int)(sw - c->ops);
    if (!gemv1_runs(c, mm, 0) || !gemv1_runs(c, mm, 1) || g->type != u->type || g->K != u->K || g->M != u->M || g->M % 32 ||
        mm->x[0] != mm->x[1] || mm->expert[0] || mm->expert[1] || sw->x[0] != mm->y[0] || sw->x[1] != mm->y[1] ||
        sw->cnt != (size_t)g->M || !sw->emit_q8 || !dead_after(c, j, mm->y[1]))
        return;
    mm->glu = sw;
    mm->glu_f32 = !shadow_only(c, j, sw->y[0]);
    sw->skip = 1;
}

static void plan(lp_cuda *c) {
    lpc_op *ops = c->ops;
    if (fuse_on(c, FUSE_RES))
        for (int i = 0; i + 1 < c->n_ops; i++) {
            lpc_op *mm = &ops[i], *add = &ops[i + 1];
            /* matmul -> add(x, y): accumulate into x when y is dead afterwards */
            if (mm->kind == OP_MATMUL && mm->count == 1 && add->kind == OP_ADD && add->x[1] == mm->y[0] &&
                add->x[0] != mm->x[0] && add->x[0] != mm->y[0] && mm->w[0] && add->cnt == (size_t)mm->n * mm->w[0]->M &&
                dead_after(c, i + 1, mm->y[0])) {
                mm->acc_into = add->x[0];
                add->skip = 1;
            }
        }
    if (fuse_on(c, FUSE_NORM_ROPE))
        for (int i = 0; i < c->n_ops; i++) {
            lpc_op *nm = &ops[i];
            /* per-head RMSNorm in place, later rope of the same buffer, untouched in between */
            if (nm->kind != OP_RMSNORM || nm->x[0] != nm->y[0] || !nm->w[0] || nm->w[0]->K != c->cfg.head_dim) continue;
            for (int j = i + 1; j < c->n_ops; j++) {
                lpc_op *rp = &ops[j];
                if (rp->kind == OP_ROPE && rp->x[0] == nm->x[0] && (size_t)rp->n * rp->i0 == (size_t)nm->n) {
                    nm->rope_heads = rp->i0;
                    rp->skip = 1;
                    break;
                }
                if (touches(rp, nm->x[0]) || rp->kind == OP_BATCH) break;
            }
        }
    for (int i = 0; i < c->n_ops; i++) {
        if (ops[i].kind != OP_ATTN) continue;
        if (fuse_on(c, FUSE_HEADS)) fuse_heads(c, i);
        if (fuse_on(c, FUSE_FOLD)) counters(c, &c->attn_cnt, (size_t)ops[i].n * c->cfg.n_head_kv);
    }
    for (int i = 0; i < c->n_ops; i++) {
        lpc_op *mm = &ops[i];
        if (mm->kind == OP_MOE) q8_of(c, mm->x[0]);
        if (mm->kind != OP_MATMUL) continue;
        int mma_rows = 0; /* of all its MMA problems: a bound on any one launch's */
        for (int k = 0; k < mm->count; k++) {
            const mm_path path = matmul_path(c, mm->n, mm->w[k]);
            if (path == MM_MMA) mma_rows += mm->w[k]->M;
            if (path == MM_GEMM || !quantized_weight(mm->w[k])) continue;
            lp_bbuf *x = mm->x[k];
            q8_of(c, x);
            if (!fuse_on(c, FUSE_EMIT)) continue;
            for (int j = i - 1; j >= 0; j--) {
                lp_bbuf *rd[8], *wr[8];
                int n_wr;
                op_io(&ops[j], rd, wr, &n_wr);
                if (ops[j].skip || !has(wr, n_wr, x)) continue;
                if (emit_extent(c, &ops[j]) >= (size_t)mm->n * mm->w[k]->K && ops[j].y[0] == x) {
                    ops[j].emit_q8 = 1;
                    mm->x_ready |= 1 << k;
                }
                break;
            }
        }
        if (mma_rows) counters(c, &c->mma_cnt, (size_t)lpc_mma_tiles(mma_rows, mm->n));
    }
    for (int i = 0; i < c->n_ops; i++)
        if (!(fuse_on(c, FUSE_EPI_NORM) && fuse_norm_epilogue(c, i)) && fuse_on(c, FUSE_STAGE_NORM)) fuse_stage_norm(c, i);
    if (fuse_on(c, FUSE_GLU))
        for (int i = 0; i < c->n_ops; i++) fuse_glu(c, i);
}

/* ---- execution ---- */

static lpc_q8 no_q8(void) {
    lpc_q8 z = {NULL, NULL, NULL};
    return z;
}

/* Splits of the positions for decode attention: enough blocks for ~4 per SM, at
 * least 128 cache positions per split. Fixed per (batch size, n_ctx) so a graph
 * stays valid as the context grows: the kernel sizes each split from the actual
 * length (empty splits exit at once). */
static int n_split(const lp_cuda *c, int n) {
    int ns = (4 * c->n_sm + n * c->cfg.n_head_kv - 1) / (n * c->cfg.n_head_kv);
    const int by_ctx = (c->cfg.n_ctx + 127) / 128;
    if (ns > by_ctx) ns = by_ctx;
    if (ns > LPC_ATTN_MAX_SPLIT) ns = LPC_ATTN_MAX_SPLIT;
    return ns < 1 ? 1 : ns;
}

/* cuBLAS: y[n][rows] (+)= x[n][K] . W[rows][K]^T, column-major view (see header). */
static void gemm_f16(lp_cuda *c, const uint16_t *w16, int rows, int K, const uint16_t *x16, int n, float *y, int ldy, float beta) {
    const float alpha = 1.0f;
    blas_ok(c,
            cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, K, &alpha, w16, CUDA_R_16F, K, x16, CUDA_R_16F, K, &beta, y,
                         CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "F16 GEMM");
}

static void exec_gemm(lp_cuda *c, const lpc_weight *w, int expert, const lp_bbuf *x, int n, float *y, bool accumulate) {
    const int K = w->K, M = w->M;
    const float beta = accumulate ? 1.0f : 0.0f, alpha = 1.0f;
    const uint8_t *a = w->a + (size_t)expert * w->expert_a, *b = w->b ? w->b + (size_t)expert * w->expert_b : NULL;
    if (w->type == LPC_F32) {
        blas_ok(c, cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, M, n, K, &alpha, (const float *)a, K, x->d, K, &beta, y, M),
                "SGEMM");
        return;
    }
    size_t chunk = LPC_DEQUANT_ELEMS / (size_t)K;
    if (chunk < 64) chunk = 64;
    if (chunk > (size_t)M) chunk = (size_t)M;
    if (c->cfg.f32_activations && w->type != LPC_F16 && w->type != LPC_BF16) {
        /* reference math: weight tiles dequantized to F32, F32 activations, SGEMM */
        float *w32 = (float *)scratch(c, &c->w16, chunk * K * 4);
        if (!w32) return;
        for (int r0 = 0; r0 < M; r0 += (int)chunk) {
            const int rows = M - r0 < (int)chunk ? M - r0 : (int)chunk;
            lpc_dequant_rows<float>(c->st, w->type, a, b, w->row_bytes, w->bpr, K, NULL, r0, rows, w32);
            blas_ok(c, cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, K, &alpha, w32, K, x->d, K, &beta, y + r0, M),
                    "SGEMM");
        }
        return;
    }
    uint16_t *x16 = (uint16_t *)scratch(c, &c->x16, (size_t)n * K * 2);
    if (!x16) return;
    lpc_to_f16(c->st, x->d, (size_t)n * K, x16);
    if (w->type == LPC_F16) {
        gemm_f16(c, (const uint16_t *)a, M, K, x16, n, y, M, beta);
        return;
    }
    uint16_t *w16 = (uint16_t *)scratch(c, &c->w16, chunk * K * 2);
    if (!w16) return;
    for (int r0 = 0; r0 < M; r0 += (int)chunk) {
        const int rows = M - r0 < (int)chunk ? M - r0 : (int)chunk;
        lpc_dequant_rows<uint16_t>(c->st, w->type, a, b, w->row_bytes, w->bpr, K, NULL, r0, rows, w16);
        gemm_f16(c, w16, rows, K, x16, n, y + r0, M, beta);
    }
}

/* The int8 MMA kernel on problems p (one weight type), split along K where its row tiles
 * cannot fill the GPU; the counters come from plan(), the partials from scratch. */
static void exec_mma(lp_cuda *c, int type, const lpc_gemv_args *p) {
    const int rows = p->row0[p->nprob];
    lpc_mma_split sp = {NULL, (unsigned *)c->mma_cnt.p, lpc_mma_splits(rows, p->ncols, p->K, c->n_sm)};
    if (sp.splits > 1) {
        const size_t floats = lpc_mma_part_floats(lpc_mma_tiles(rows, p->ncols), sp.splits);
        sp.part = sp.counters ? (float *)scratch(c, &c->mma_part, floats * sizeof(float)) : NULL;
        if (!sp.part) sp.splits = 1;
    }
    if (!lpc_mma(c->st, type, *p, sp)) set_err(c, "cuda backend: no MMA kernel for type %d", type);
}

static void exec_swiglu(lp_cuda *c, const lpc_op *op) {
    lpc_swiglu(c->st, op->x[0]->d, op->x[1]->d, op->cnt, op->f0, op->emit_q8, op->emit_q8 ? op->y[0]->q8 : no_q8());
}

/* Gate/up with the SwiGLU folded in (fuse_glu): one launch, or the GEMV and the SwiGLU
 * kernel when the fused one would leave waves half empty. */
static void exec_glu(lp_cuda *c, const lpc_op *op, lpc_gemv_args *p) {
    const lpc_op *sw = op->glu;
    p->glu.on = 1;
    p->glu.limit = sw->f0;
    p->glu.out = op->glu_f32 ? sw->y[0]->d : NULL;
    p->glu.o = sw->y[0]->q8;
    if (lpc_gemv_glu(c->st, op->w[0]->type, *p)) return;
    p->glu.on = 0;
    if (!lpc_gemv(c->st, op->w[0]->type, *p, 0)) set_err(c, "cuda backend: no GEMV kernel for type %d", op->w[0]->type);
    exec_swiglu(c, sw);
}

/* The arguments of one launch: problem i of op and the later ones sharing its weight type
 * and input (marked done); quantizes the input first when no producer wrote its shadow. */
static void matmul_set(lp_cuda *c, const lpc_op *op, int i, bool *done, lp_bbuf **quantized, int *n_quantized,
                       lpc_gemv_args *p) {
    const lpc_weight *w = op->w[i];
    const int n = op->n;
    memset(p, 0, sizeof *p);
    p->K = w->K;
    p->bpr = w->bpr;
    p->row_bytes = w->row_bytes;
    p->ncols = n;
    p->per_sm = c->gemv_bps, p->n_sm = c->n_sm;
    if (quantized_weight(w)) {
        if (!(op->x_ready >> i & 1) && !has(quantized, *n_quantized, op->x[i])) {
            lpc_quantize(c->st, op->x[i]->d, (size_t)n * w->K, op->x[i]->q8);
            quantized[(*n_quantized)++] = op->x[i];
        }
        p->xq = op->x[i]->q8;
    } else {
        p->x = op->x[i]->d;
    }
    for (int j = i; j < op->count; j++) {
        const lpc_weight *wj = op->w[j];
        if (done[j] || wj->type != w->type || wj->K != w->K || op->x[j] != op->x[i]) continue;
        const int k = p->nprob++;
        p->a[k] = wj->a + (size_t)op->expert[j] * wj->expert_a;
        p->b[k] = wj->b ? wj->b + (size_t)op->expert[j] * wj->expert_b : NULL;
        p->y[k] = op->acc_into ? op->acc_into->d : op->y[j]->d;
        p->accumulate[k] = op->acc_into != NULL;
        p->M[k] = wj->M;
        p->row0[k + 1] = p->row0[k] + wj->M;
        done[j] = true;
    }
    if (op->xn_mask >> i & 1) {
        p->xn.x = op->xn_x ? op->xn_x->d : NULL;
        p->xn.ss = op->xn_ss;
        p->xn.w = (const float *)op->xn_w->a;
        p->xn.eps = op->xn_eps;
    }
    if (op->yn) {
        p->yn.w = (const float *)op->yn->w[0]->a;
        p->yn.o = op->yn->y[0]->q8;
        p->yn.ss = op->yn->y[0]->ss;
    }
}

/* A matmul op: cuBLAS problems first, then one launch per weight type and input. */
static void exec_matmul(lp_cuda *c, const lpc_op *op) {
    const int n = op->n;
    bool done[LPC_MAX_PROB] = {false, false, false, false};
    for (int i = 0; i < op->count; i++) {
        if (matmul_path(c, n, op->w[i]) != MM_GEMM) continue;
        exec_gemm(c, op->w[i], op->expert[i], op->x[i], n, op->acc_into ? op->acc_into->d : op->y[i]->d, op->acc_into != NULL);
        done[i] = true;
    }
    lp_bbuf *quantized[LPC_MAX_PROB];
    lpc_gemv_args sets[LPC_MAX_PROB];
    const lpc_weight *first[LPC_MAX_PROB];
    int n_quantized = 0, n_sets = 0;
    for (int i = 0; i < op->count; i++)
        if (!done[i]) {
            first[n_sets] = op->w[i];
            matmul_set(c, op, i, done, quantized, &n_quantized, &sets[n_sets++]);
        }
    if (op->glu) {
        exec_glu(c, op, &sets[0]); /* fuse_glu: one set */
        return;
    }
    for (int k = 0; k < n_sets; k++) {
        if (matmul_path(c, n, first[k]) == MM_MMA)
            exec_mma(c, first[k]->type, &sets[k]);
        else if (!lpc_gemv(c->st, first[k]->type, sets[k], 0))
            set_err(c, "cuda backend: no GEMV kernel for type %d", first[k]->type);
    }
}

/* Rows of buffer b (n tokens x heads) for the heads kernel, with the folded op x if any. */
static lpc_head_set head_set(const lp_bbuf *b, int n, int heads, const lpc_head_xform *x) {
    lpc_head_set s;
    memset(&s, 0, sizeof s);
    s.x = b->d;
    s.rows = n * heads;
    s.n_head = heads;
    if (x && x->on) {
        s.w = x->norm ? (const float *)x->norm->a : NULL;
        s.eps = x->eps;
        s.rope = x->rope;
    }
    return s;
}

/* k and v into the KV cache, in the same kernel as q's and k's folded per-head ops. */
static void exec_heads(lp_cuda *c, const lpc_op *op, uint16_t *kc, uint16_t *vc) {
    const int n = op->n, n_kv = c->cfg.n_head_kv;
    lpc_heads_args h;
    memset(&h, 0, sizeof h);
    if (op->head[0].on) {
        h.set[0] = head_set(op->x[0], n, op->i1, &op->head[0]);
        h.set[0].back = op->x[0]->d;
    }
    h.set[1] = head_set(op->x[1], n, n_kv, &op->head[1]);
    h.set[1].cache = kc;
    if (op->keep_k) h.set[1].back = op->x[1]->d;
    h.set[2] = head_set(op->x[2], n, n_kv, NULL);
    h.set[2].cache = vc;
    h.cs = c->d_cos;
    h.sn = c->d_sin;
    h.pos = d_pos(c);
    h.slot = d_slot(c);
    h.hd = c->cfg.head_dim;
    h.neox = c->cfg.rope == LP_ROPE_NEOX;
    h.n_kv = n_kv;
    h.n_ctx = c->cfg.n_ctx;
    lpc_heads(c->st, h);
}

/* One token's attention with its heads in one launch (lpc_attention1): the batch-1
 * decode step (attn1_splits says when and with how many splits). Needs the folded merge
 * (its counters) and q not read afterwards (the kernel leaves the F32 q as it came). */
static void exec_attention1(lp_cuda *c, const lpc_op *op, const lpc_attn_args *a) {
    lpc_attn1_args p;
    memset(&p, 0, sizeof p);
    p.a = *a;
    p.qh = head_set(op->x[0], 1, op->i1, &op->head[0]);
    p.kh = head_set(op->x[1], 1, c->cfg.n_head_kv, &op->head[1]);
    if (op->keep_k) p.kh.back = op->x[1]->d;
    p.v = op->x[2]->d;
    p.cs = c->d_cos;
    p.sn = c->d_sin;
    p.neox = c->cfg.rope == LP_ROPE_NEOX;
    lpc_attention1(c->st, p, c->cfg.head_dim, op->i3);
}

static void exec_attention(lp_cuda *c, const lpc_op *op) {
    const int n = op->n, hd = c->cfg.head_dim, layer = op->i0, n_head = op->i1;
    uint16_t *kc = c->k_cache + (size_t)layer * c->layer_elems, *vc = c->v_cache + (size_t)layer * c->layer_elems;
    const bool one = op->i3 && fuse_on(c, FUSE_FOLD) && fuse_on(c, FUSE_ATTN1) && !op->keep_q;
    if (!one) exec_heads(c, op, kc, vc);
    lpc_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = op->x[0]->d;
    a.kc = kc;
    a.vc = vc;
    a.pos = d_pos(c);
    a.slot = d_slot(c);
    a.n_ctx = c->cfg.n_ctx;
    a.n_head = n_head;
    a.n_kv = c->cfg.n_head_kv;
    a.G = n_head / c->cfg.n_head_kv;
    a.nsplit = n_split(c, n);
    a.window = op->i2;
    a.scale = op->f0;
    a.min_chunk = c->attn_chunk;
    a.part = (float *)scratch(c, &c->attn_part, (size_t)n * n_head * a.nsplit * (hd + LPC_ATTN_PART_HEAD) * sizeof(float));
    if (!a.part) return;
    a.sinks = op->w2[0] ? (const float *)op->w2[0]->a : NULL;
    a.out = op->y[0]->d;
    a.emit = op->emit_q8;
    a.o = op->emit_q8 ? op->y[0]->q8 : no_q8();
    a.counters = fuse_on(c, FUSE_FOLD) ? (unsigned *)c->attn_cnt.p : NULL; /* zeroed by plan() */
    if (one) exec_attention1(c, op, &a);
    else lpc_attention(c->st, a, n, hd);
}

/* Sparse FFN, all on the device (graph-safe): routing, then one GEMV row set per
 * (token, expert) pair reading that expert's matrix. */
static void exec_moe(lp_cuda *c, const lpc_op *op) {
    const lpc_weight *gate = op->w[0], *up = op->w2[0], *down = op->w2[1];
    const int n = op->n, k = op->i0, E = gate->E, D = gate->K, F = gate->M, R = n * k;
    int *sel = (int *)scratch(c, &c->moe_sel, (size_t)R * sizeof(int));
    float *wt = (float *)scratch(c, &c->moe_wt, (size_t)R * sizeof(float));
    float *g = (float *)scratch(c, &c->moe_g, (size_t)R * F * sizeof(float));
    float *u = (float *)scratch(c, &c->moe_u, (size_t)R * F * sizeof(float));
    float *dres = (float *)scratch(c, &c->moe_d, (size_t)R * D * sizeof(float));
    const size_t gq_n = ((size_t)R * F + 31) / 32 * 32;
    uint8_t *gq = (uint8_t *)scratch(c, &c->moe_gq, gq_n + gq_n / 32 * 4 + gq_n / 16 * 4);
    if (!sel || !wt || !g || !u || !dres || !gq) return;
    lpc_q8 gq8 = {(int8_t *)gq, (float *)(gq + gq_n), (float *)(gq + gq_n + gq_n / 32 * 4)};
    lpc_topk(c->st, n, op->z->d, E, k, op->i1, sel, wt);
    const bool quant_gu = quantized_weight(gate);
    if (quant_gu || quantized_weight(up)) lpc_quantize(c->st, op->x[0]->d, (size_t)n * D, op->x[0]->q8);
    const lpc_weight *gu[2] = {gate, up};
    float *gu_out[2] = {g, u};
    for (int i = 0; i < 2; i++) {
        lpc_gemv_args p;
        memset(&p, 0, sizeof p);
        p.nprob = 1;
        p.a[0] = gu[i]->a;
        p.b[0] = gu[i]->b;
        p.y[0] = gu_out[i];
        p.M[0] = F;
        p.row0[1] = F;
        p.K = D;
        p.bpr = gu[i]->bpr;
        p.row_bytes = gu[i]->row_bytes;
        p.ncols = 1;
        p.x = op->x[0]->d;
        p.xq = op->x[0]->q8;
        p.sel = sel;
        p.x_div = k;
        p.expert_a = gu[i]->expert_a;
        p.expert_b = gu[i]->expert_b;
        lpc_gemv(c->st, gu[i]->type, p, R);
        if (op->bias[i]) lpc_add_bias(c->st, gu_out[i], (const float *)op->bias[i]->a, F, (size_t)R * F, sel);
    }
    const bool quant_down = quantized_weight(down);
    lpc_swiglu(c->st, g, u, (size_t)R * F, op->f0, quant_down && F % 32 == 0, gq8);
    if (quant_down && F % 32 != 0) lpc_quantize(c->st, g, (size_t)R * F, gq8);
    lpc_gemv_args p;
    memset(&p, 0, sizeof p);
    p.nprob = 1;
    p.a[0] = down->a;
    p.b[0] = down->b;
    p.y[0] = dres;
    p.M[0] = D;
    p.row0[1] = D;
    p.K = F;
    p.bpr = down->bpr;
    p.row_bytes = down->row_bytes;
    p.ncols = 1;
    p.x = g;
    p.xq = gq8;
    p.sel = sel;
    p.x_div = 1;
    p.expert_a = down->expert_a;
    p.expert_b = down->expert_b;
    lpc_gemv(c->st, down->type, p, R);
    if (op->bias[2]) lpc_add_bias(c->st, dres, (const float *)op->bias[2]->a, D, (size_t)R * D, sel);
    lpc_moe_combine(c->st, n, dres, sel, wt, k, D, op->y[0]->d);
}

static void exec_kv_copy(lp_cuda *c, const lpc_op *op) {
    const size_t hd = (size_t)c->cfg.head_dim, pitch = (size_t)c->cfg.n_ctx * hd * 2;
    const size_t slot_elems = (size_t)c->cfg.n_head_kv * c->cfg.n_ctx * hd;
    for (int l = 0; l < c->cfg.n_layer; l++)
        for (int kv = 0; kv < 2; kv++) {
            uint16_t *base = (kv ? c->v_cache : c->k_cache) + (size_t)l * c->layer_elems;
            cuda_ok(c,
                    cudaMemcpy2DAsync(base + (size_t)op->i1 * slot_elems, pitch, base + (size_t)op->i0 * slot_elems, pitch,
                                      (size_t)op->i2 * hd * 2, (size_t)c->cfg.n_head_kv, cudaMemcpyDeviceToDevice, c->st),
                    "kv copy");
        }
}

static void exec_op(lp_cuda *c, const lpc_op *op) {
    const int neox = c->cfg.rope == LP_ROPE_NEOX;
    const int hd = c->cfg.head_dim;
    switch (op->kind) {
    case OP_BATCH:
        lpc_rope_table(c->st, op->n, d_pos(c), c->d_inv_freq, hd / 2, c->cfg.rope_attn_factor, c->d_cos, c->d_sin);
        break;
    case OP_EMBED: {
        const lpc_weight *w = op->w[0];
        lpc_dequant_rows<float>(c->st, w->type, w->a, w->b, w->row_bytes, w->bpr, w->K, d_tokens(c), 0, op->n, op->y[0]->d);
        break;
    }
    case OP_RMSNORM:
        if (op->rope_heads)
            lpc_norm_rope(c->st, op->y[0]->d, op->n, op->rope_heads, hd, (const float *)op->w[0]->a, op->f0, c->d_cos, c->d_sin,
                          neox);
        else if (!lpc_rmsnorm(c->st, op->x[0]->d, (const float *)op->w[0]->a, op->n, op->w[0]->K, op->f0, op->y[0]->d, op->emit_q8,
                              op->emit_q8 ? op->y[0]->q8 : no_q8()))
            set_err(c, "cuda backend: RMSNorm over %d elements: rows of up to 32768 are supported", op->w[0]->K);
        break;
    case OP_MATMUL: exec_matmul(c, op); break;
    case OP_ADD_BIAS:
        lpc_add_bias(c->st, op->x[0]->d, (const float *)op->w[0]->a, op->w[0]->K, (size_t)op->n * op->w[0]->K, NULL);
        break;
    case OP_ADD: lpc_add(c->st, op->x[0]->d, op->x[1]->d, op->cnt); break;
    case OP_ROPE: lpc_norm_rope(c->st, op->x[0]->d, op->n * op->i0, op->i0, hd, NULL, 0.0f, c->d_cos, c->d_sin, neox); break;
    case OP_ATTN: exec_attention(c, op); break;
    case OP_SWIGLU:
        exec_swiglu(c, op);
        break;
    case OP_MOE: exec_moe(c, op); break;
    case OP_GATHER:
        lpc_gather(c->st, op->x[0]->d, op->i0, op->rows, op->n, op->y[0]->d + (size_t)op->i1 * op->i0);
        break;
    case OP_KV_COPY: exec_kv_copy(c, op); break;
    }
}

static const char *op_name(int kind) {
    static const char *const names[] = {"batch", "embed", "rmsnorm", "matmul", "add_bias", "add", "rope", "attention",
                                        "swiglu", "moe", "gather", "kv_copy"};
    return kind >= 0 && kind < (int)(sizeof names / sizeof names[0]) ? names[kind] : "?";
}

/* Bit k set for each names[k] in the comma-separated list. */
static unsigned name_mask(const char *list, const char *const *names, int n) {
    unsigned mask = 0;
    for (const char *s = list; s && *s;) {
        const size_t len = strcspn(s, ",");
        for (int k = 0; k < n; k++)
            if (strlen(names[k]) == len && !strncmp(s, names[k], len)) mask |= 1u << k;
        s += len + (s[len] == ',');
    }
    return mask;
}

/* LP_CUDA_DROP=rmsnorm,swiglu,...: a mask of op kinds (op_name) left out of every
 * step. Results are wrong: it measures what an op kind costs inside the graph, where
 * per-kernel timers cannot look. */
static unsigned drop_mask(const char *list) {
    const char *names[OP_KV_COPY + 1];
    for (int k = 0; k <= OP_KV_COPY; k++) names[k] = op_name(k);
    const unsigned mask = name_mask(list, names, OP_KV_COPY + 1);
    if (mask) fprintf(stderr, "cuda backend: LP_CUDA_DROP=%s: those ops are not run, results are wrong\n", list);
    return mask;
}

/* Profile label of an op and the weight bytes it streams. */
static double op_label(const lpc_op *op, char *buf, size_t cap) {
    int at = snprintf(buf, cap, "%s n=%d", op_name(op->kind), op->n);
    double bytes = 0.0;
    if (op->kind == OP_RMSNORM && op->rope_heads) at += snprintf(buf + at, cap - (size_t)at, " +rope");
    for (int i = 0; i < 2 && op->kind == OP_ATTN; i++)
        if (op->head[i].on) at += snprintf(buf + at, cap - (size_t)at, i ? " +k" : " +q");
    if (op->kind != OP_MATMUL) return 0.0;
    for (int i = 0; i < op->count && (size_t)at < cap; i++) {
        const lpc_weight *w = op->w[i];
        const lp_qtype_traits *q = lp_qtype((lp_type)(lpc_find_split(w->type) ? w->src_type : w->type));
        at += snprintf(buf + at, cap - (size_t)at, " %s %dx%d", q ? q->name : "?", w->M, w->K);
        bytes += (double)w->bytes / (w->E > 0 ? w->E : 1);
    }
    if (op->acc_into && (size_t)at < cap) snprintf(buf + at, cap - (size_t)at, " +res");
    return bytes;
}

/* Launches kernels of its own (not fused into another op, not dropped by LP_CUDA_DROP). */
static bool runs_alone(const lp_cuda *c, const lpc_op *op) { return !op->skip && !(c->drop_ops >> op->kind & 1); }

static void exec_all(lp_cuda *c, bool check_each) {
    lpc_profile *pf = &c->prof;
    int n_ev = 0;
    /* PDL only for batch-1 lists: there the GEMV loads its weights before waiting; the
     * batched kernels wait first, and their early-resident blocks cost batched decode
     * ~5% (x8 813 -> 777 tok/s with PDL on, H100) */
    lpc_pdl_enabled() = c->pdl && c->n_batch == 1;
    if (pf->on) cudaEventRecord(lpc_prof_event(pf, n_ev++), c->st);
    for (int i = 0; i < c->n_ops && !c->err[0]; i++) {
        if (!runs_alone(c, &c->ops[i])) continue;
        exec_op(c, &c->ops[i]);
        if (check_each) cuda_ok(c, cudaGetLastError(), "kernel launch");
        if (pf->on) cudaEventRecord(lpc_prof_event(pf, n_ev++), c->st);
    }
    if (!pf->on || n_ev < 2 || !cuda_ok(c, cudaEventSynchronize(pf->ev[n_ev - 1]), "profile")) return;
    for (int i = 0, k = 1; i < c->n_ops && k < n_ev; i++) {
        if (!runs_alone(c, &c->ops[i])) continue;
        float ms = 0.0f;
        cudaEventElapsedTime(&ms, pf->ev[k - 1], pf->ev[k]);
        char label[LPC_PROF_LABEL];
        const double bytes = op_label(&c->ops[i], label, sizeof label);
        lpc_prof_add(pf, label, ms, bytes);
        k++;
    }
    pf->steps++;
}

/* ---- graphs ---- */

static void graphs_clear(lp_cuda *c) {
    for (int i = 0; i < LPC_GRAPH_CACHE; i++) {
        if (c->graphs[i].ops) {
            cudaGraphExecDestroy(c->graphs[i].exec);
            free(c->graphs[i].ops);
        }
        memset(&c->graphs[i], 0, sizeof c->graphs[i]);
    }
    memset(c->recent, 0, sizeof c->recent);
}

static uint64_t list_hash(const lpc_op *ops, int n) {
    const uint8_t *p = (const uint8_t *)ops;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < (size_t)n * sizeof *ops; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h ? h : 1;
}

static lpc_graph *graph_find(lp_cuda *c) {
    for (int i = 0; i < LPC_GRAPH_CACHE; i++) {
        lpc_graph *g = &c->graphs[i];
        if (g->ops && g->n_ops == c->n_ops && memcmp(g->ops, c->ops, (size_t)c->n_ops * sizeof *c->ops) == 0) return g;
    }
    return NULL;
}

/* Capture the (planned) list into a graph; the unplanned copy is the key. */
static lpc_graph *graph_capture(lp_cuda *c, const lpc_op *key) {
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    if (!cuda_ok(c, cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal), "graph capture")) return NULL;
    exec_all(c, false);
    const bool captured = cuda_ok(c, cudaStreamEndCapture(c->st, &graph), "graph capture");
    if (!captured || c->err[0]) {
        if (graph) cudaGraphDestroy(graph);
        return NULL;
    }
    const bool ok = cuda_ok(c, cudaGraphInstantiate(&exec, graph, 0), "graph instantiate");
    cudaGraphDestroy(graph);
    if (!ok) return NULL;
    lpc_graph *slot = &c->graphs[0];
    for (int i = 0; i < LPC_GRAPH_CACHE; i++) {
        if (!c->graphs[i].ops) {
            slot = &c->graphs[i];
            break;
        }
        if (c->graphs[i].last_used < slot->last_used) slot = &c->graphs[i];
    }
    if (slot->ops) {
        cudaGraphExecDestroy(slot->exec);
        free(slot->ops);
    }
    slot->ops = (lpc_op *)lp_xmalloc((size_t)c->n_ops * sizeof *key);
    memcpy(slot->ops, key, (size_t)c->n_ops * sizeof *key);
    slot->n_ops = c->n_ops;
    slot->exec = exec;
    return slot;
}

/* Run the recorded list: replay a graph of an identical earlier list, capture a list
 * seen before, or launch eagerly. */
static void flush(lp_cuda *c) {
    if (c->n_ops == 0) return;
    if (c->err[0]) {
        c->n_ops = 0;
        return;
    }
    if (c->batch_dirty && c->n_batch > 0) {
        cuda_ok(c, cudaMemcpyAsync(c->d_batch, c->h_batch, 3 * (size_t)c->n_batch * sizeof(int32_t), cudaMemcpyHostToDevice, c->st),
                "batch upload");
        c->batch_dirty = false;
    }
    c->clock++;
    lpc_graph *g = c->use_graphs ? graph_find(c) : NULL;
    if (g) {
        g->last_used = c->clock;
        for (int i = 0; i < c->replay; i++) cuda_ok(c, cudaGraphLaunch(g->exec, c->st), "graph launch");
        c->n_ops = 0;
        return;
    }
    const uint64_t h = list_hash(c->ops, c->n_ops);
    bool seen = false;
    for (int i = 0; i < LPC_RECENT; i++) seen |= c->recent[i] == h;
    lpc_op *key = NULL;
    if (c->use_graphs && seen) {
        key = (lpc_op *)lp_xmalloc((size_t)c->n_ops * sizeof *key);
        memcpy(key, c->ops, (size_t)c->n_ops * sizeof *key);
    }
    plan(c);
    const bool try_capture = key && !c->err[0];
    if (try_capture) g = graph_capture(c, key);
    if (try_capture && !g) {
        /* capture refused (a driver or library without support for something in the
         * list): say so once, drop graphs for this backend, run this list eagerly */
        fprintf(stderr, "cuda backend: CUDA graph capture failed (%s); continuing without graphs\n", c->err);
        c->err[0] = 0;
        cudaGetLastError();
        c->use_graphs = false;
    }
    if (g) {
        g->last_used = c->clock;
        cuda_ok(c, cudaGraphLaunch(g->exec, c->st), "graph launch");
    } else {
        exec_all(c, true);
        c->recent[c->recent_next] = h;
        c->recent_next = (c->recent_next + 1) % LPC_RECENT;
    }
    free(key);
    c->n_ops = 0;
}

static int cuda_sync(lp_backend *be) {
    lp_cuda *c = (lp_cuda *)be;
    flush(c);
    cuda_ok(c, cudaStreamSynchronize(c->st), "step");
    cuda_ok(c, cudaGetLastError(), "step");
    if (c->err[0]) return fail_err(c);
    return 0;
}

static void cuda_read(lp_backend *be, const lp_bbuf *src, size_t offset, size_t count, float *dst) {
    lp_cuda *c = (lp_cuda *)be;
    flush(c);
    if (c->err[0]) return; /* reported by the next sync */
    cuda_ok(c, cudaMemcpyAsync(dst, src->d + offset, count * sizeof(float), cudaMemcpyDeviceToHost, c->st), "read");
    cuda_ok(c, cudaStreamSynchronize(c->st), "read");
}

/* Pinned host memory for read() destinations (lp_engine_logits_alloc): a step's logits
 * then arrive by one DMA instead of through the driver's staging buffer, 25 vs 60-90 us
 * for Qwen3's 152k logits on the H100 (+3% decode tok/s at 512 positions). */
static void *cuda_host_alloc(lp_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_host_free(lp_backend *be, void *p) {
    (void)be;
    cudaPointerAttributes a;
    const bool pinned = cudaPointerGetAttributes(&a, p) == cudaSuccess && a.type == cudaMemoryTypeHost;
    cudaGetLastError();
    if (pinned)
        cudaFreeHost(p);
    else
        free(p); /* the engine's malloc fallback */
}

/* ---- life cycle ---- */

static int cuda_init(lp_backend *be, const lp_backend_config *cfg) {
    lp_cuda *c = (lp_cuda *)be;
    const int hd = cfg->head_dim;
    if (cfg->n_layer <= 0 || cfg->n_slots <= 0 || cfg->n_ctx <= 0 || cfg->n_head_kv <= 0)
        return lp_fail("cuda backend: invalid KV cache geometry");
    if (hd != 32 && hd != 64 && hd != 128 && hd != 256)
        return lp_fail("cuda backend: head_dim %d: kernels exist for 32, 64, 128 and 256", hd);
    c->cfg = *cfg;
    c->cfg.rope_inv_freq = NULL;
    c->d_inv_freq = (float *)dev_alloc(c, (size_t)hd / 2 * sizeof(float), "rope frequencies");
    if (!c->d_inv_freq ||
        !cuda_ok(c, cudaMemcpy(c->d_inv_freq, cfg->rope_inv_freq, (size_t)hd / 2 * sizeof(float), cudaMemcpyHostToDevice),
                 "rope frequencies"))
        return fail_err(c);
    c->layer_elems = (size_t)cfg->n_slots * cfg->n_head_kv * cfg->n_ctx * hd;
    const size_t bytes = (size_t)cfg->n_layer * c->layer_elems * sizeof(uint16_t);
    c->k_cache = (uint16_t *)dev_alloc(c, bytes, "KV cache");
    c->v_cache = c->k_cache ? (uint16_t *)dev_alloc(c, bytes, "KV cache") : NULL;
    if (!c->k_cache || !c->v_cache) {
        c->err[0] = 0;
        return lp_fail("cuda backend: KV cache of %.1f MiB does not fit on the device", 2.0 * bytes / 1048576.0);
    }
    cudaMemset(c->k_cache, 0, bytes);
    cudaMemset(c->v_cache, 0, bytes);
    c->kv_bytes = 2 * bytes;
    return 0;
}

static void cuda_destroy(lp_backend *be) {
    lp_cuda *c = (lp_cuda *)be;
    if (c->st) cudaStreamSynchronize(c->st);
#ifdef LPC_STAMPS
    const char *stamps = getenv("LP_CUDA_STAMPS");
    if (stamps && lpc_stamps_dump(stamps) != 0) fprintf(stderr, "cuda backend: cannot write stamps to %s\n", stamps);
#endif
    lpc_prof_print(&c->prof);
    lpc_prof_free(&c->prof);
    graphs_clear(c);
    for (size_t i = 0; i < c->wmap_cap; i++) {
        lpc_weight *w = c->wmap[i];
        if (!w) continue;
        if (!w->alias) {
            if (w->a) cudaFree(w->a);
            if (w->b) cudaFree(w->b);
        }
        free(w);
    }
    free(c->wmap);
    lpc_scratch *s[] = {&c->attn_part, &c->attn_cnt, &c->x16,   &c->w16,   &c->moe_sel,  &c->moe_wt,
                        &c->moe_g,     &c->moe_u,    &c->moe_d, &c->moe_gq, &c->mma_part, &c->mma_cnt};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) scratch_free(s[i]);
    if (c->k_cache) cudaFree(c->k_cache);
    if (c->v_cache) cudaFree(c->v_cache);
    if (c->d_inv_freq) cudaFree(c->d_inv_freq);
    if (c->h_batch) cudaFreeHost(c->h_batch);
    if (c->d_batch) cudaFree(c->d_batch);
    if (c->d_cos) cudaFree(c->d_cos);
    if (c->d_sin) cudaFree(c->d_sin);
    if (c->blas) cublasDestroy(c->blas);
    if (c->blas_ws) cudaFree(c->blas_ws);
    if (c->st) cudaStreamDestroy(c->st);
    free(c->ops);
    free(c);
}

static const lp_backend_ops cuda_ops = {
    "cuda",           cuda_destroy,     cuda_init,     cuda_prepare_weight, cuda_alloc, cuda_release,
    cuda_set_batch,   cuda_embed,       cuda_rmsnorm,  cuda_matmul,         cuda_add_bias, cuda_add,
    cuda_rope,        cuda_attention,   cuda_swiglu,   cuda_moe,            cuda_gather_rows, cuda_kv_copy,
    cuda_sync,        cuda_read,        cuda_host_alloc, cuda_host_free,
};

static bool env_off(const char *name) {
    const char *v = getenv(name);
    return v && (strcmp(v, "0") == 0 || strcmp(v, "off") == 0);
}

/* A count >= 0 from the environment; def when unset or not a count. */
static int env_count(const char *name, int def) {
    const char *v = getenv(name);
    char *end;
    const long n = v ? strtol(v, &end, 10) : -1;
    return v && *v && *end == 0 && n >= 0 && n <= 1 << 20 ? (int)n : def;
}

/* The MMA kernels need mma.sync with s8 (sm_80+) in the image this device runs: the
 * module carries sm_90 code and compute_75 PTX, and a GPU other than sm_90 (Ampere, Ada,
 * Blackwell) JIT-compiles the PTX, whose MMA body traps. ptxVersion says which it got. */
static bool mma_runs_here(void) {
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, lpc_mma_q<lpc_q4_K>) == cudaSuccess && fa.ptxVersion >= 80;
}

extern "C" int lp_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" lp_backend *lp_backend_cuda_create(int device) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        lp_fail("cuda backend: no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return NULL;
    }
    if (device < 0 || device >= n) {
        lp_fail("cuda backend: device %d outside 0..%d", device, n - 1);
        return NULL;
    }
    lp_cuda *c = (lp_cuda *)lp_xcalloc(1, sizeof *c);
    c->base.ops = &cuda_ops;
    c->device = device;
    c->use_graphs = !env_off("LP_CUDA_GRAPHS");
    c->use_fusion = !env_off("LP_CUDA_FUSE");
    const int gemv_n = env_count("LP_CUDA_GEMV_MAX_N", LPC_GEMV_MAX_N);
    c->gemv_max_n = gemv_n > 0 ? gemv_n : LPC_GEMV_MAX_N; /* batch 1 always runs the GEMV */
    c->mma_max_n = env_count("LP_CUDA_MMA_MAX_N", LPC_MMA_MAX_N);
    c->attn_chunk = env_count("LP_CUDA_ATTN_CHUNK", LPC_ATTN_MIN_CHUNK);
    c->gemv_bps = env_count("LP_CUDA_GEMV_BPS", LPC_GEMV_BPS);
    c->attn1_grid = !env_off("LP_CUDA_ATTN1_GRID");
    c->attn1_max = env_count("LP_CUDA_ATTN1_MAX", 1 << 20);
    const char *prof = getenv("LP_CUDA_PROFILE");
    c->prof.on = prof && strcmp(prof, "1") == 0;
    if (c->prof.on) c->use_graphs = false; /* eager launches, an event after each op */
    cudaDeviceProp prop;
    if (!cuda_ok(c, cudaSetDevice(device), "set device") || !cuda_ok(c, cudaGetDeviceProperties(&prop, device), "device properties") ||
        !cuda_ok(c, cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking), "stream") ||
        !blas_ok(c, cublasCreate(&c->blas), "cuBLAS handle") || !blas_ok(c, cublasSetStream(c->blas, c->st), "cuBLAS stream")) {
        fail_err(c);
        cuda_destroy(&c->base);
        return NULL;
    }
    if (prop.major * 10 + prop.minor < 75) {
        lp_fail("cuda backend: %s has compute capability %d.%d; the build targets 7.5 or newer", prop.name, prop.major, prop.minor);
        cuda_destroy(&c->base);
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", prop.name);
    c->n_sm = prop.multiProcessorCount;
    c->pdl = prop.major >= 9 && !env_off("LP_CUDA_PDL");
    if (!mma_runs_here()) c->mma_max_n = 0, c->attn1_max = -1; /* both need mma.sync */
    c->drop_ops = drop_mask(getenv("LP_CUDA_DROP"));
    c->no_fuse = name_mask(getenv("LP_CUDA_NOFUSE"), fuse_names, FUSE_COUNT);
    c->replay = env_count("LP_CUDA_REPLAY", 1);
    if (c->replay < 1) c->replay = 1;
    /* a fixed workspace keeps cuBLAS from allocating inside graph captures */
    const size_t ws = (size_t)32 << 20;
    c->blas_ws = dev_alloc(c, ws, "cuBLAS workspace");
    if (!c->blas_ws || !blas_ok(c, cublasSetWorkspace(c->blas, c->blas_ws, ws), "cuBLAS workspace")) {
        fail_err(c);
        cuda_destroy(&c->base);
        return NULL;
    }
    cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH); /* SGEMM stays FP32 (no TF32) */
    return &c->base;
}

extern "C" int lp_backend_cuda_mem(lp_backend *be, lp_cuda_mem *out) {
    lp_cuda *c = (lp_cuda *)be;
    size_t free_b = 0, total = 0;
    cudaMemGetInfo(&free_b, &total);
    out->weights = c->weight_bytes;
    out->kv_cache = c->kv_bytes;
    out->scratch = c->scratch_bytes;
    out->device_used = total - free_b;
    out->device_total = total;
    return 0;
}

extern "C" const char *lp_backend_cuda_device_name(lp_backend *be) { return ((lp_cuda *)be)->name; }

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

extern "C" double lp_cuda_copy_bandwidth(int device, size_t bytes) {
    void *src = NULL, *dst = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    float ms[5];
    double gbs = 0.0;
    if (cudaSetDevice(device) != cudaSuccess || cudaMalloc(&src, bytes) != cudaSuccess || cudaMalloc(&dst, bytes) != cudaSuccess ||
        cudaEventCreate(&t0) != cudaSuccess || cudaEventCreate(&t1) != cudaSuccess) {
        lp_fail("cuda backend: copy bandwidth: %s", cudaGetErrorString(cudaGetLastError()));
        goto done;
    }
    cudaMemset(src, 1, bytes);
    cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice); /* warm-up */
    for (int i = 0; i < 5; i++) {
        cudaEventRecord(t0);
        cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(t1);
        cudaEventSynchronize(t1);
        cudaEventElapsedTime(&ms[i], t0, t1);
    }
    qsort(ms, 5, sizeof ms[0], cmp_float);
    if (cudaGetLastError() == cudaSuccess && ms[2] > 0) gbs = 2.0 * (double)bytes / (ms[2] * 1e-3) / 1e9;
done:
    if (t0) cudaEventDestroy(t0);
    if (t1) cudaEventDestroy(t1);
    if (src) cudaFree(src);
    if (dst) cudaFree(dst);
    return gbs;
}

/* ==== LP_CUDA_MODULE_ENTRY: the module's one exported symbol ====================
 * This file builds into libllama-pajamas-cuda.so, which src/backend/cuda/cuda_loader.c
 * dlopen()s. The module does not link lpcore: the lpcore functions used above come
 * from the host through lp_cuda_module_entry() and are forwarded here (see
 * cuda_loader.c for why); the tables are in cuda_module.h. A new lpcore call above
 * fails the module's link (-z defs) until it gets a slot in the host table. Only the entry is exported
 * (version script in cmake/cuda.cmake), so the definitions below and the public API
 * functions above bind inside the module, never to the host's same-named ones. */

static const lp_cuda_host *lpc_host; /* set by a matching handshake */

static const lp_cuda_module lpc_module = {
    LP_CUDA_MODULE_ABI,          LP_CUDA_LAYOUT,        lp_backend_cuda_create,      lp_cuda_device_count,
    lp_backend_cuda_mem,         lp_cuda_copy_bandwidth, lp_backend_cuda_device_name,
};

extern "C" __attribute__((visibility("default"))) const lp_cuda_module *lp_cuda_module_entry(const lp_cuda_host *host) {
    static const size_t mine[LP_CUDA_N_LAYOUT] = LP_CUDA_LAYOUT;
    if (host && host->abi == LP_CUDA_MODULE_ABI && memcmp(host->layout, mine, sizeof mine) == 0) lpc_host = host;
    return &lpc_module;
}

/* lpcore, forwarded to the host's copy (one thread-local error message). */
extern "C" int lp_fail(const char *fmt, ...) {
    char msg[1024]; /* err.c's buffer size: the same truncation */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lpc_host->fail("%s", msg);
}
extern "C" void *lp_xmalloc(size_t n) { return lpc_host->xmalloc(n); }
extern "C" void *lp_xcalloc(size_t n, size_t size) { return lpc_host->xcalloc(n, size); }
extern "C" void *lp_xrealloc(void *p, size_t n) { return lpc_host->xrealloc(p, n); }
extern "C" const lp_qtype_traits *lp_qtype(lp_type t) { return lpc_host->qtype(t); }
extern "C" uint16_t lp_f32_to_f16(float f) { return lpc_host->f32_to_f16(f); }
/* ==== end LP_CUDA_MODULE_ENTRY ================================================== */
