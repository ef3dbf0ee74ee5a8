/* test_cuda.c — the CUDA backend against the CPU backend, op by op and end to end.
 *
 * Every op runs on both backends with the same inputs (loaded through embed() of
 * an F32 table) and the outputs are compared: matmul of every weight type at
 * batch 1, 5 (GEMV) and 40 (quantized: int8 MMA; float: cuBLAS), GGUF and MLX affine,
 * the MMA kernel split along K and replayed in a graph, RMSNorm, rope (NEOX and
 * NORM), attention over two steps with GQA / sliding window / sinks / KV copy, SwiGLU,
 * MoE (GGUF and MLX experts). Then tiny-qwen3 (the repo's HF checkpoint, GGUFs from
 * LP_CUDA_TEST_GGUF_DIR or out/tiny when present, and MLX 4-bit / 3-bit directories
 * converted here): logits of a 64-token prompt and a 32-token greedy continuation
 * decoded one token at a time (which exercises graph replay); logits read into the
 * engine's pinned buffer and into malloc'd memory agree bit for bit.
 *
 * Without a device (CI) the GPU tests skip with a message; the creation test
 * checks the error path. The kernels themselves are also checked without a GPU
 * by test_cuda_emu (src/backend/cuda/emu_test.cpp). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "test_util.h"

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/err.h"
#include "core/fileio.h"
#include "pipeline/pipeline.h"
#include "quant/mlx_types.h"
#include "quant/qtype.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/sampler.h"

/* Bounds (relative L2 error of an op's output, CUDA vs CPU). The CPU rounds
 * quantized-matmul activations to Q8_K/Q8_0, the GPU to int8 per 32 elements:
 * both ~0.3% per element, independent. Prefill GEMMs run in F16 (F32 weights:
 * SGEMM). The KV cache is F16 on the GPU. */
#define BOUND_EXACT 1e-5
#define BOUND_F16_GEMM 3e-3
#define BOUND_QUANT 2e-2
#define BOUND_ATTN 3e-3

static bool have_gpu;

static int setup(void **state) {
    (void)state;
    have_gpu = lp_cuda_device_count() > 0;
    if (!have_gpu) printf("test_cuda: no CUDA device (or built without CUDA): GPU tests skipped\n");
    return 0;
}

#define NEED_GPU() \
    do {           \
        if (!have_gpu) skip(); \
    } while (0)

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

/* ---- two backends side by side ---- */

typedef struct {
    lp_backend *be[2]; /* cpu, cuda */
    lp_bbuf *buf[2][8];
} pair;

static float inv_freq_buf[128];

static void pair_init(pair *p, lp_rope_kind rope, int n_layer, int n_kv, int hd, int n_ctx) {
    memset(p, 0, sizeof *p);
    for (int i = 0; i < hd / 2; i++) inv_freq_buf[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)hd);
    lp_backend_config cfg = {.n_layer = n_layer, .n_slots = 2, .n_ctx = n_ctx, .n_head_kv = n_kv, .head_dim = hd,
                             .rope = rope, .rope_inv_freq = inv_freq_buf, .rope_attn_factor = 1.0f};
    p->be[0] = lp_backend_cpu_create(2);
    p->be[1] = lp_backend_cuda_create(0);
    assert_non_null(p->be[1]);
    for (int b = 0; b < 2; b++) assert_int_equal(p->be[b]->ops->init(p->be[b], &cfg), 0);
}

static void pair_free(pair *p) {
    for (int b = 0; b < 2; b++) {
        for (int i = 0; i < 8; i++)
            if (p->buf[b][i]) p->be[b]->ops->release(p->be[b], p->buf[b][i]);
        lp_backend_free(p->be[b]);
    }
}

static void pair_alloc(pair *p, int i, size_t n) {
    for (int b = 0; b < 2; b++) p->buf[b][i] = p->be[b]->ops->alloc(p->be[b], n);
}

static void pair_prepare(pair *p, const lp_weight *w) {
    for (int b = 0; b < 2; b++) assert_int_equal(p->be[b]->ops->prepare_weight(p->be[b], w), 0);
}

/* A weight of `type` from F32 values (quantized by the traits' reference quantizer). */
typedef struct {
    lp_weight w;
    void *data;
} owned_weight;

static owned_weight make_weight(lp_type type, int K, int M, int E, float scale) {
    owned_weight o;
    memset(&o, 0, sizeof o);
    const lp_qtype_traits *tr = lp_qtype(type);
    o.w.present = true;
    o.w.type = type;
    o.w.n_dims = E > 1 ? 3 : M > 1 ? 2 : 1;
    o.w.ne[0] = K, o.w.ne[1] = M, o.w.ne[2] = E;
    o.w.row_bytes = lp_row_size(type, K);
    o.w.expert_bytes = o.w.row_bytes * (size_t)M;
    o.data = lp_xmalloc(o.w.expert_bytes * (size_t)E);
    float *row = lp_xmalloc((size_t)K * sizeof(float));
    for (size_t r = 0; r < (size_t)M * E; r++) {
        for (int k = 0; k < K; k++) row[k] = frand() * scale;
        tr->from_float(row, (uint8_t *)o.data + r * o.w.row_bytes, K);
    }
    free(row);
    o.w.data = o.data;
    return o;
}

/* Round the f32 scale and bias of every MLX block to bfloat16 values, as MLX files of
 * bf16 models hold them: the CUDA backend then uploads its compact bf16-scale layout. */
static owned_weight bf16_headers(owned_weight o) {
    const size_t block = lp_qtype(o.w.type)->block_bytes, n = o.w.expert_bytes * (size_t)o.w.ne[2] / block;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 2; k++) {
            float *f = (float *)((uint8_t *)o.data + i * block) + k;
            *f = lp_bf16_to_f32(lp_f32_to_bf16(*f));
        }
    return o;
}

/* Load rows [first, first+n) of an F32 table into buffer i of both backends, as the
 * batch (pos/slot given); the table must be prepared. */
static void pair_batch(pair *p, const lp_weight *table, int first, int n, const int32_t *pos, const int32_t *slot, int i) {
    int32_t tok[64];
    for (int t = 0; t < n; t++) tok[t] = first + t;
    lp_batch_meta m = {.n = n, .tokens = tok, .pos = pos, .slot = slot};
    for (int b = 0; b < 2; b++) {
        p->be[b]->ops->set_batch(p->be[b], &m);
        p->be[b]->ops->embed(p->be[b], table, p->buf[b][i]);
    }
}

static float *pair_read(pair *p, int b, int i, size_t n) {
    float *out = lp_xmalloc(n * sizeof(float));
    p->be[b]->ops->read(p->be[b], p->buf[b][i], 0, n, out);
    assert_int_equal(p->be[b]->ops->sync(p->be[b]), 0);
    return out;
}

static double rel_l2(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Compare buffer i of both backends (n floats) within bound; prints the error. */
static void pair_check(pair *p, int i, size_t n, double bound, const char *what) {
    float *cpu = pair_read(p, 0, i, n), *gpu = pair_read(p, 1, i, n);
    const double e = rel_l2(gpu, cpu, n);
    printf("  %-32s rel L2 %.2e (bound %.0e)\n", what, e, bound);
    assert_true(e < bound);
    free(cpu);
    free(gpu);
}

/* ---- tests ---- */

static void test_create(void **state) {
    (void)state;
    if (!have_gpu) {
        assert_null(lp_backend_cuda_create(0));
        assert_non_null(strstr(lp_errmsg(), "CUDA"));
        return;
    }
    assert_null(lp_backend_cuda_create(lp_cuda_device_count()));
    lp_backend *be = lp_backend_cuda_create(0);
    assert_non_null(be);
    printf("  device: %s\n", lp_backend_cuda_device_name(be));
    lp_backend_free(be);
}

static const lp_type matmul_types[] = {LP_TYPE_F32, LP_TYPE_F16, LP_TYPE_BF16, LP_TYPE_Q8_0, LP_TYPE_Q4_0, LP_TYPE_Q4_K,
                                       LP_TYPE_Q5_K, LP_TYPE_Q6_K, LP_TYPE_Q3_K, LP_TYPE_Q2_K, LP_TYPE_Q4_1, LP_TYPE_IQ4_NL};
/* MLX (bits, group, bf16 scales): every width (one decoder each), every group size
 * somewhere, 4 bits with both plane-B layouts (f32 scales from the quantizer, bf16). */
static const int mlx_matmul_pairs[][3] = {{4, 64, 0}, {4, 64, 1}, {4, 32, 1}, {8, 32, 0}, {3, 32, 0},
                                          {2, 128, 0}, {5, 64, 0}, {6, 128, 0}, {4, 128, 0}};
enum { N_GGUF_MATMUL = sizeof matmul_types / sizeof matmul_types[0],
       N_MATMUL = N_GGUF_MATMUL + sizeof mlx_matmul_pairs / sizeof mlx_matmul_pairs[0] };

static owned_weight matmul_weight(int i, int K, int M) {
    if (i < N_GGUF_MATMUL) return make_weight(matmul_types[i], K, M, 1, 0.5f);
    const int *mp = mlx_matmul_pairs[i - N_GGUF_MATMUL];
    owned_weight o = make_weight(lp_mlx_type(mp[0], mp[1]), K, M, 1, 0.5f);
    return mp[2] ? bf16_headers(o) : o;
}

static void test_matmul(void **state) {
    (void)state;
    NEED_GPU();
    enum { K = 512, M = 96, NMAX = 40 };
    pair p;
    pair_init(&p, LP_ROPE_NEOX, 1, 2, 64, 64);
    owned_weight table = make_weight(LP_TYPE_F32, K, NMAX, 1, 1.0f);
    pair_prepare(&p, &table.w);
    pair_alloc(&p, 0, (size_t)NMAX * K);
    pair_alloc(&p, 1, (size_t)NMAX * M);
    pair_alloc(&p, 2, (size_t)NMAX * M);
    int32_t pos[NMAX], slot[NMAX];
    for (int i = 0; i < NMAX; i++) pos[i] = i, slot[i] = 0;
    /* The backends key device copies by the lp_weight's address: every type gets its own
     * lp_weight objects, alive until the backends are freed (one reused local made every
     * type after F32 run the F32 device copy). */
    enum { NTYPES = N_MATMUL };
    owned_weight ws[NTYPES][2];
    for (size_t ti = 0; ti < NTYPES; ti++) {
        ws[ti][0] = matmul_weight((int)ti, K, M), ws[ti][1] = matmul_weight((int)ti, K, M / 2);
        const lp_type type = ws[ti][0].w.type;
        owned_weight *w = &ws[ti][0], *w2 = &ws[ti][1];
        pair_prepare(&p, &w->w);
        pair_prepare(&p, &w2->w);
        static const int batch_sizes[] = {1, 5, 40};
        for (int bi = 0; bi < 3; bi++) {
            const int n = batch_sizes[bi];
            pair_batch(&p, &table.w, 0, n, pos, slot, 0);
            for (int b = 0; b < 2; b++) {
                lp_matmul_args a[2] = {{&w->w, -1, p.buf[b][0], p.buf[b][1]}, {&w2->w, -1, p.buf[b][0], p.buf[b][2]}};
                p.be[b]->ops->matmul(p.be[b], 2, a, n);
            }
            const bool is_float = !lp_qtype(type)->quantized;
            const double bound = !is_float ? BOUND_QUANT : n > 32 && type != LP_TYPE_F32 ? BOUND_F16_GEMM : BOUND_EXACT;
            char what[64];
            snprintf(what, sizeof what, "matmul %s%s n=%d", lp_qtype(type)->name,
                     ti >= N_GGUF_MATMUL && mlx_matmul_pairs[ti - N_GGUF_MATMUL][2] ? " (bf16 scales)" : "", n);
            pair_check(&p, 1, (size_t)n * M, bound, what);
            pair_check(&p, 2, (size_t)n * M / 2, bound, what);
        }
    }
    pair_free(&p);
    for (size_t ti = 0; ti < NTYPES; ti++) free(ws[ti][0].data), free(ws[ti][1].data);
    free(table.data);
}

/* The int8 MMA kernel where its row tiles are split along K (K 4096, 4 row tiles: the
 * partials merged by each tile's last block) at 24 and 64 columns, run three times (eager,
 * captured, replayed: the split counters must be back at zero each time), and with
 * LP_CUDA_MMA_MAX_N=0 the same batch through cuBLAS for comparison. */
static void test_matmul_mma(void **state) {
    (void)state;
    NEED_GPU();
    enum { K = 4096, M = 300, NMAX = 64 };
    const lp_type types[5] = {LP_TYPE_Q4_K, LP_TYPE_Q6_K, LP_TYPE_Q8_0, LP_TYPE_Q3_K, lp_mlx_type(4, 64)};
    owned_weight table = make_weight(LP_TYPE_F32, K, NMAX, 1, 1.0f);
    int32_t pos[NMAX], slot[NMAX];
    for (int i = 0; i < NMAX; i++) pos[i] = i, slot[i] = 0;
    for (int off = 0; off < 2; off++) {
        if (off) setenv("LP_CUDA_MMA_MAX_N", "0", 1); /* read at backend creation */
        pair p;
        pair_init(&p, LP_ROPE_NEOX, 1, 2, 64, 64);
        unsetenv("LP_CUDA_MMA_MAX_N");
        pair_prepare(&p, &table.w);
        pair_alloc(&p, 0, (size_t)NMAX * K);
        pair_alloc(&p, 1, (size_t)NMAX * M);
        pair_alloc(&p, 2, (size_t)NMAX * M / 2);
        owned_weight ws[5][2];
        for (int ti = 0; ti < 5; ti++) {
            const lp_type type = types[ti];
            ws[ti][0] = make_weight(type, K, M, 1, 0.5f), ws[ti][1] = make_weight(type, K, M / 2, 1, 0.5f);
            pair_prepare(&p, &ws[ti][0].w);
            pair_prepare(&p, &ws[ti][1].w);
            for (int n = 24; n <= 64; n += 40)
                for (int rep = 0; rep < 3; rep++) {
                    pair_batch(&p, &table.w, 0, n, pos, slot, 0);
                    for (int b = 0; b < 2; b++) {
                        lp_matmul_args a[2] = {{&ws[ti][0].w, -1, p.buf[b][0], p.buf[b][1]},
                                               {&ws[ti][1].w, -1, p.buf[b][0], p.buf[b][2]}};
                        p.be[b]->ops->matmul(p.be[b], 2, a, n);
                    }
                    char what[64];
                    snprintf(what, sizeof what, "%s %s n=%d #%d", off ? "gemm" : "mma", lp_qtype(type)->name, n, rep);
                    pair_check(&p, 1, (size_t)n * M, BOUND_QUANT, what);
                    pair_check(&p, 2, (size_t)n * M / 2, BOUND_QUANT, what);
                }
        }
        pair_free(&p);
        for (int ti = 0; ti < 5; ti++) free(ws[ti][0].data), free(ws[ti][1].data);
    }
    free(table.data);
}

static void test_rowwise(void **state) {
    (void)state;
    NEED_GPU();
    enum { D = 256, n = 6 };
    pair p;
    pair_init(&p, LP_ROPE_NEOX, 1, 2, 64, 64);
    owned_weight table = make_weight(LP_TYPE_F32, D, 2 * n, 1, 3.0f), norm = make_weight(LP_TYPE_F32, D, 1, 1, 1.0f);
    pair_prepare(&p, &table.w);
    pair_prepare(&p, &norm.w);
    for (int i = 0; i < 4; i++) pair_alloc(&p, i, (size_t)n * D);
    int32_t pos[n], slot[n], rows[3] = {5, 0, 5};
    for (int i = 0; i < n; i++) pos[i] = i, slot[i] = 0;
    pair_batch(&p, &table.w, n, n, pos, slot, 1); /* second half of the table into buffer 1 */
    pair_batch(&p, &table.w, 0, n, pos, slot, 0);
    for (int b = 0; b < 2; b++) {
        const lp_backend_ops *o = p.be[b]->ops;
        o->rmsnorm(p.be[b], p.buf[b][0], &norm.w, n, 1e-6f, p.buf[b][2]);
        o->add(p.be[b], p.buf[b][2], p.buf[b][1], (size_t)n * D);
        o->add_bias(p.be[b], p.buf[b][2], &norm.w, n);
        o->swiglu(p.be[b], p.buf[b][0], p.buf[b][1], (size_t)n * D, 0.0f);
        o->swiglu(p.be[b], p.buf[b][1], p.buf[b][2], (size_t)n * D, 2.5f);
        o->gather_rows(p.be[b], p.buf[b][1], D, rows, 3, p.buf[b][3]);
    }
    pair_check(&p, 2, (size_t)n * D, BOUND_EXACT, "rmsnorm + add + bias");
    pair_check(&p, 0, (size_t)n * D, BOUND_EXACT, "swiglu");
    pair_check(&p, 1, (size_t)n * D, BOUND_EXACT, "swiglu (clamped)");
    pair_check(&p, 3, (size_t)3 * D, BOUND_EXACT, "gather_rows");
    free(table.data);
    free(norm.data);
    pair_free(&p);
}

/* q/k per-head norm and rope, then attention over two steps in two slots. */
static void check_attention(lp_rope_kind rope, int window, bool sinks) {
    enum { hd = 64, n_head = 8, n_kv = 2, n_ctx = 96, n1 = 40, n2 = 3 };
    pair p;
    pair_init(&p, rope, 2, n_kv, hd, n_ctx);
    owned_weight table = make_weight(LP_TYPE_F32, n_head * hd, 64, 1, 2.0f), qn = make_weight(LP_TYPE_F32, hd, 1, 1, 1.0f);
    owned_weight sink = make_weight(LP_TYPE_F32, n_head, 1, 1, 2.0f);
    pair_prepare(&p, &table.w);
    pair_prepare(&p, &qn.w);
    pair_prepare(&p, &sink.w);
    pair_alloc(&p, 0, (size_t)n1 * n_head * hd); /* q */
    pair_alloc(&p, 1, (size_t)n1 * n_head * hd); /* k (first n_kv*hd of each row used) */
    pair_alloc(&p, 2, (size_t)n1 * n_head * hd); /* out */
    lp_attn_params ap = {.n_head = n_head, .n_head_kv = n_kv, .head_dim = hd, .scale = 0.125f, .window = window,
                         .sinks = sinks ? &sink.w : NULL};
    int32_t pos1[n1], slot1[n1];
    for (int i = 0; i < n1; i++) pos1[i] = i % 20, slot1[i] = i / 20; /* two sequences of 20 */
    const int32_t pos2[n2] = {20, 21, 20}, slot2[n2] = {0, 0, 1};
    const int32_t *pos[2] = {pos1, pos2}, *slot[2] = {slot1, slot2};
    const int n[2] = {n1, n2};
    for (int step = 0; step < 2; step++) {
        /* q and k from different table rows; k is used as [n][n_kv*hd] (a prefix of each row) */
        pair_batch(&p, &table.w, 0, n[step], pos[step], slot[step], 1);
        for (int b = 0; b < 2; b++) p.be[b]->ops->rmsnorm(p.be[b], p.buf[b][1], &qn.w, n[step] * n_kv, 1e-6f, p.buf[b][1]);
        pair_batch(&p, &table.w, 20, n[step], pos[step], slot[step], 0);
        for (int b = 0; b < 2; b++) {
            const lp_backend_ops *o = p.be[b]->ops;
            o->rmsnorm(p.be[b], p.buf[b][0], &qn.w, n[step] * n_head, 1e-6f, p.buf[b][0]);
            o->rope(p.be[b], p.buf[b][0], n_head);
            o->rope(p.be[b], p.buf[b][1], n_kv);
            /* v = k (same buffer) keeps the test small */
            o->attention(p.be[b], 1, p.buf[b][0], p.buf[b][1], p.buf[b][1], &ap, p.buf[b][2]);
        }
        char what[64];
        snprintf(what, sizeof what, "attention %s w=%d sinks=%d step %d", rope == LP_ROPE_NEOX ? "neox" : "norm", window, sinks,
                 step);
        pair_check(&p, 2, (size_t)n[step] * n_head * hd, BOUND_ATTN, what);
        pair_check(&p, 0, (size_t)n[step] * n_head * hd, BOUND_EXACT, "q after norm + rope");
    }
    /* prefix copy: slot 0's first 21 positions into slot 1, then attend from slot 1 */
    const int32_t pos3[1] = {21}, slot3[1] = {1};
    for (int b = 0; b < 2; b++) p.be[b]->ops->kv_copy(p.be[b], 0, 1, 21);
    pair_batch(&p, &table.w, 3, 1, pos3, slot3, 1);
    pair_batch(&p, &table.w, 30, 1, pos3, slot3, 0);
    for (int b = 0; b < 2; b++)
        p.be[b]->ops->attention(p.be[b], 1, p.buf[b][0], p.buf[b][1], p.buf[b][1], &ap, p.buf[b][2]);
    pair_check(&p, 2, (size_t)n_head * hd, BOUND_ATTN, "attention after kv_copy");
    free(table.data);
    free(qn.data);
    free(sink.data);
    pair_free(&p);
}

static void test_attention(void **state) {
    (void)state;
    NEED_GPU();
    check_attention(LP_ROPE_NEOX, 0, false);
    check_attention(LP_ROPE_NORM, 8, true);
}

/* One MoE layer with gate/up of type gu and down of type dn, both routings; bf16: MLX
 * gate/up with bfloat16 scales (the compact layout in expert mode). */
static void check_moe(lp_type gu, lp_type dn, bool bf16) {
    /* E = 8: the router logits enter through an F32 table of E-element rows, and float
     * weight rows on the device must be multiples of 16 bytes (E = 6 was refused). */
    enum { D = 256, F = 256, E = 8, n = 5 };
    pair p;
    pair_init(&p, LP_ROPE_NEOX, 1, 2, 64, 64);
    owned_weight table = make_weight(LP_TYPE_F32, D, n, 1, 1.0f), logits = make_weight(LP_TYPE_F32, E, n, 1, 3.0f);
    owned_weight gate = make_weight(gu, D, F, E, 0.5f), up = make_weight(gu, D, F, E, 0.5f);
    if (bf16) gate = bf16_headers(gate), up = bf16_headers(up);
    owned_weight down = make_weight(dn, F, D, E, 0.5f), bias = make_weight(LP_TYPE_F32, F, E, 1, 0.5f);
    bias.w.n_dims = 2;
    owned_weight *ws[] = {&table, &logits, &gate, &up, &down, &bias};
    for (size_t i = 0; i < 6; i++) pair_prepare(&p, &ws[i]->w);
    pair_alloc(&p, 0, (size_t)n * D);
    pair_alloc(&p, 1, (size_t)n * E);
    pair_alloc(&p, 2, (size_t)n * D);
    int32_t pos[n], slot[n];
    for (int i = 0; i < n; i++) pos[i] = i, slot[i] = 0;
    for (int norm = 0; norm < 2; norm++) {
        pair_batch(&p, &logits.w, 0, n, pos, slot, 1);
        pair_batch(&p, &table.w, 0, n, pos, slot, 0);
        lp_moe_params mp = {.gate = &gate.w, .up = &up.w, .down = &down.w, .gate_b = norm ? &bias.w : NULL,
                            .n_expert_used = 2, .norm_topk = norm, .swiglu_limit = norm ? 0.0f : 7.0f};
        for (int b = 0; b < 2; b++) p.be[b]->ops->moe(p.be[b], &mp, p.buf[b][0], p.buf[b][1], n, p.buf[b][2]);
        char what[96];
        snprintf(what, sizeof what, "moe %s/%s (%s)", lp_qtype(gu)->name, lp_qtype(dn)->name,
                 norm ? "norm_topk, bias" : "softmax all, clamped");
        pair_check(&p, 2, (size_t)n * D, BOUND_QUANT, what);
    }
    for (size_t i = 0; i < 6; i++) free(ws[i]->data);
    pair_free(&p);
}

static void test_moe(void **state) {
    (void)state;
    NEED_GPU();
    check_moe(LP_TYPE_Q4_K, LP_TYPE_Q6_K, false);
    check_moe(lp_mlx_type(4, 64), lp_mlx_type(8, 64), false); /* mlx-lm's switch_mlp experts */
    check_moe(lp_mlx_type(4, 64), lp_mlx_type(3, 32), true);
}

/* ---- tiny-qwen3 end to end ---- */

enum { NPROMPT = 64, NGEN = 32 };

/* The 64 tokens of refs/<fixture>.json (the HF reference logits are theirs); without the
 * file, deterministic pseudo-random ones. */
static void prompt_tokens(const char *fixture, int32_t *tok, int V) {
    char *path = lp_xasprintf("%s/refs/%s.json", LP_FIXTURES_DIR, fixture);
    json_t *refs = json_load_file(path, 0, NULL);
    free(path);
    const json_t *arr = refs ? json_object_get(json_object_get(refs, "logits"), "tokens") : NULL;
    for (int i = 0; i < NPROMPT; i++)
        tok[i] = arr && json_array_size(arr) == NPROMPT ? (int32_t)json_integer_value(json_array_get(arr, (size_t)i))
                                                       : (int32_t)((1103515245u * (unsigned)i + 12345u) % (unsigned)V);
    json_decref(refs);
}

/* Prefill logits of all 64 prompt tokens, then NGEN greedy tokens decoded one by one. */
static void run_model(lp_engine *e, const int32_t *prompt, float *logits, int32_t *gen) {
    const int V = lp_engine_n_vocab(e);
    assert_int_equal(lp_engine_eval(e, 0, 0, prompt, NPROMPT, logits, true), 0);
    float *last = lp_xmalloc((size_t)V * sizeof(float));
    memcpy(last, logits + (size_t)(NPROMPT - 1) * V, (size_t)V * sizeof(float));
    for (int i = 0; i < NGEN; i++) {
        gen[i] = lp_argmax(last, V);
        assert_int_equal(lp_engine_eval(e, 0, NPROMPT + i, &gen[i], 1, last, false), 0);
    }
    free(last);
}

/* Largest and RMS |a - b| over all prompt logits. */
static void logit_diff(const float *a, const float *b, size_t count, double *max_abs, double *rms) {
    double mx = 0, ss = 0;
    for (size_t i = 0; i < count; i++) {
        const double d = fabs((double)a[i] - b[i]);
        mx = fmax(mx, isfinite(d) ? d : INFINITY);
        ss += d * d;
    }
    *max_abs = mx;
    *rms = sqrt(ss / (double)count);
}

/* Both backends on one model file. Without ref: CUDA logits within `bound` of the CPU's.
 * With ref (the CPU's logits of the f32 GGUF, for a quantized file): both backends
 * quantize activations differently (CPU Q8_K per 256 or Q8_0, CUDA int8 per 32), so
 * their direct difference is two independent rounding noises on top of the same weight
 * error; what matters is that CUDA is no further from the f32 model than the CPU is:
 * RMS within 1.2x (an average over all logits: stable) and max within 1.5x (an extreme
 * value: noisier). Float files must give identical greedy continuations. Quantized
 * files need not: the 64-token prompt runs through the CUDA prefill GEMM (F16
 * activations) while the CPU multiplies int8 activations, so a near-tie can fork
 * (tiny-qwen3 q8_0 forks at token 9 while CUDA is the closer of the two to the f32
 * logits); there top-1 must agree at >= 60 of the 64 prompt positions. Returns the
 * CPU logits when keep is set (caller frees). */
static float *check_model(const char *path, const char *fixture, double bound, const float *ref, bool keep) {
    lp_model *m = lp_model_load(path);
    if (!m) {
        printf("  %s: not found, skipped (%s)\n", path, lp_errmsg());
        return NULL;
    }
    const int V = m->hp.n_vocab;
    const size_t count = (size_t)NPROMPT * V;
    int32_t prompt[NPROMPT], gen[2][NGEN];
    float *logits[2];
    prompt_tokens(fixture, prompt, V);
    for (int b = 0; b < 2; b++) {
        lp_engine_params ep = {.n_ctx = 256, .n_slots = 2, .n_threads = 2};
        lp_engine *e = b == 0 ? lp_engine_create(m, &ep) : lp_engine_create_with_backend(m, lp_backend_cuda_create(0), &ep);
        assert_non_null(e);
        logits[b] = lp_xmalloc(count * sizeof(float));
        run_model(e, prompt, logits[b], gen[b]);
        lp_engine_free(e);
    }
    double max_abs, rms;
    int top1 = 0, same_gen = 0;
    logit_diff(logits[1], logits[0], count, &max_abs, &rms);
    for (int t = 0; t < NPROMPT; t++) top1 += lp_argmax(logits[1] + (size_t)t * V, V) == lp_argmax(logits[0] + (size_t)t * V, V);
    while (same_gen < NGEN && gen[0][same_gen] == gen[1][same_gen]) same_gen++;
    printf("  %s: max |logit cuda - cpu| %.3g (rms %.3g), top-1 %d/%d, greedy %d/%d identical\n", path, max_abs, rms, top1,
           NPROMPT, same_gen, NGEN);
    if (ref) {
        double max_ref[2], rms_ref[2];
        for (int b = 0; b < 2; b++) logit_diff(logits[b], ref, count, &max_ref[b], &rms_ref[b]);
        printf("    vs f32 reference: cpu max %.3g rms %.3g, cuda max %.3g rms %.3g (bounds: cuda rms <= 1.2x, max <= 1.5x cpu)\n",
               max_ref[0], rms_ref[0], max_ref[1], rms_ref[1]);
        assert_true(rms_ref[1] <= 1.2 * rms_ref[0]);
        assert_true(max_ref[1] <= 1.5 * max_ref[0]);
    } else {
        printf("    bound on max %.2g\n", bound);
        assert_true(max_abs < bound);
    }
    if (ref)
        assert_true(top1 >= 60);
    else
        assert_int_equal(same_gen, NGEN);
    free(logits[1]);
    if (!keep) free(logits[0]);
    lp_model_free(m);
    return keep ? logits[0] : NULL;
}

static void test_tiny_qwen3(void **state) {
    (void)state;
    NEED_GPU();
    /* HF BF16 weights: decode GEMV in F32 math, prefill GEMM with F16 activations */
    free(check_model(LP_SOURCE_DIR "/models/tiny-qwen3", "tiny-qwen3", 0.05, NULL, false));
    const char *dir = getenv("LP_CUDA_TEST_GGUF_DIR");
    char base[1024];
    snprintf(base, sizeof base, "%s", dir ? dir : LP_SOURCE_DIR "/out/tiny");
    /* f32 first: its CPU logits are the reference for the quantized files; without it
     * they fall back to the direct CUDA-vs-CPU bound */
    const struct {
        const char *precision;
        double bound;
    } files[] = {{"f32", 0.02}, {"q8_0", 0.3}, {"q4_k_m", 0.3}, {"q6_k", 0.3}};
    float *ref = NULL;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/gguf/%s/tiny-qwen3-%s.gguf", base, files[i].precision, files[i].precision);
        if (access(path, R_OK) != 0) {
            printf("  %s: absent, skipped\n", path);
            continue;
        }
        float *cpu = check_model(path, "tiny-qwen3", files[i].bound, i == 0 ? NULL : ref, i == 0);
        if (i == 0) ref = cpu;
    }
    free(ref);
}

/* MLX directories of tiny-qwen3 written by our pipeline (bf16 scales; 4-bit: the fast
 * decoder and compact layout; 3-bit: the generic one, codes straddling words), beside the f32 GGUF whose CPU logits are the
 * reference: same bounds as the quantized GGUFs. The CPU multiplies MLX weights with F32
 * activations and CUDA's GEMV with int8 ones, which at 3-4 bits is small beside the
 * weight error (8-bit, where it is not, is covered op by op in test_matmul). */
static void test_tiny_qwen3_mlx(void **state) {
    (void)state;
    NEED_GPU();
    char *out = test_tmpdir();
    const char *mlx[] = {"4bit", "3bit"}, *gguf[] = {"f32"};
    lp_convert_opts o = {.model = LP_SOURCE_DIR "/models/tiny-qwen3", .output_dir = out, .mlx = mlx, .n_mlx = 2,
                         .gguf = gguf, .n_gguf = 1, .n_threads = 2, .quiet = true, .offline = true};
    if (lp_pipeline_convert(&o) != 0) fail_msg("conversion: %s", lp_errmsg());
    char *f32 = lp_xasprintf("%s/gguf/f32/tiny-qwen3-f32.gguf", out);
    float *ref = check_model(f32, "tiny-qwen3", 0.02, NULL, true);
    assert_non_null(ref);
    for (int i = 0; i < 2; i++) {
        char *dir = lp_xasprintf("%s/mlx/%s-pure", out, mlx[i]);
        lp_model *m = lp_model_load(dir); /* check_model skips what does not load */
        if (!m) fail_msg("%s: %s", dir, lp_errmsg());
        lp_model_free(m);
        free(check_model(dir, "tiny-qwen3", 0.3, ref, false));
        free(dir);
    }
    free(ref);
    free(f32);
    test_rm_rf(out);
    free(out);
}

/* lp_engine_logits_alloc: pinned host memory on CUDA (read() lands there by DMA); the
 * same prompt and greedy steps in two slots, one read into it and one into malloc'd
 * memory, give the same bits. */
static void test_logits_pinned(void **state) {
    (void)state;
    NEED_GPU();
    lp_model *m = lp_model_load(LP_SOURCE_DIR "/models/tiny-qwen3");
    if (!m) fail_msg("tiny-qwen3: %s", lp_errmsg());
    lp_engine_params ep = {.n_ctx = 64, .n_slots = 2};
    lp_engine *e = lp_engine_create_with_backend(m, lp_backend_cuda_create(0), &ep);
    assert_non_null(e);
    const int V = lp_engine_n_vocab(e), steps = 6;
    float *buf[2] = {lp_engine_logits_alloc(e, 1), lp_xmalloc((size_t)V * sizeof(float))};
    float *rows[2];
    int32_t prompt[12];
    for (int i = 0; i < 12; i++) prompt[i] = (int32_t)((7919u * (unsigned)i + 11u) % (unsigned)V);
    for (int s = 0; s < 2; s++) {
        rows[s] = lp_xmalloc((size_t)(steps + 1) * V * sizeof(float));
        assert_int_equal(lp_engine_eval(e, s, 0, prompt, 12, buf[s], false), 0);
        memcpy(rows[s], buf[s], (size_t)V * sizeof(float));
        for (int i = 0; i < steps; i++) {
            const int32_t tok = lp_argmax(buf[s], V);
            assert_int_equal(lp_engine_eval(e, s, 12 + i, &tok, 1, buf[s], false), 0);
            memcpy(rows[s] + (size_t)(i + 1) * V, buf[s], (size_t)V * sizeof(float));
        }
    }
    assert_memory_equal(rows[0], rows[1], (size_t)(steps + 1) * V * sizeof(float));
    lp_engine_logits_free(e, buf[0]);
    free(buf[1]);
    free(rows[0]);
    free(rows[1]);
    lp_engine_free(e);
    lp_model_free(m);
}

/* small-qwen3 (fixtures/models, 63 MB of bf16: more than a GPU machine is sent, so a
 * GGUF of it, LP_CUDA_TEST_SMALL_GGUF, made by bench/cuda_device.sh prepare): both
 * backends against the HF reference logits of refs/small-qwen3, CUDA no further from
 * them than the CPU (the rule of the quantized tiny-qwen3 files). */
static void test_small_qwen3(void **state) {
    (void)state;
    NEED_GPU();
    const char *path = getenv("LP_CUDA_TEST_SMALL_GGUF");
    if (!path) {
        printf("  LP_CUDA_TEST_SMALL_GGUF unset: skipped\n");
        skip();
    }
    size_t len = 0;
    float *hf = (float *)lp_read_file(LP_FIXTURES_DIR "/refs/small-qwen3.logits64.f32", &len);
    lp_model *m = lp_model_load(path);
    if (!m) fail_msg("%s: %s", path, lp_errmsg());
    const size_t want = (size_t)NPROMPT * m->hp.n_vocab * sizeof(float);
    lp_model_free(m);
    if (!hf || len != want) fail_msg("refs/small-qwen3.logits64.f32: missing or not 64 x n_vocab floats");
    free(check_model(path, "small-qwen3", 0.3, hf, false));
    free(hf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create), cmocka_unit_test(test_matmul), cmocka_unit_test(test_matmul_mma),
        cmocka_unit_test(test_rowwise),
        cmocka_unit_test(test_attention), cmocka_unit_test(test_moe), cmocka_unit_test(test_tiny_qwen3),
        cmocka_unit_test(test_tiny_qwen3_mlx), cmocka_unit_test(test_logits_pinned), cmocka_unit_test(test_small_qwen3),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
