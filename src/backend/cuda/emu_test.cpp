/* emu_test.cpp — the CUDA kernels (lpc_kernels.cuh) run on the CPU emulator
 * (simt_emu.h) against CPU references, so CI and machines without a GPU check
 * the kernels' indexing, block decoding, reductions and softmax logic. Built by
 * cmake/cuda.cmake as test_cuda_emu (needs only a C++ compiler, not nvcc).
 * Sizes are small: the emulator runs one fiber per GPU thread. */
#define LPC_EMU 1
#include "lpc_kernels.cuh"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <iterator>
#include <vector>

extern "C" {
#include <cmocka.h>

#include "quant/mlx_types.h"
#include "quant/qtype.h"
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}
static std::vector<float> rand_vec(size_t n, float scale) {
    std::vector<float> v(n);
    for (auto &x : v) x = frand() * scale;
    return v;
}

/* A weight as the backend holds it on the device (host memory here). */
struct dev_weight {
    int type, K, M, bpr;
    size_t row_bytes;
    std::vector<uint8_t> a, b;
    std::vector<float> ref; /* dequantized by the project's to_float */
};

/* Round the f32s of plane B of every block to bfloat16 values, as MLX files of bf16 models
 * hold them: the weights the b_bf16 splits are for. */
static void round_b_to_bf16(const lpc_plane_split *sp, uint8_t *raw, size_t n_blocks) {
    for (size_t i = 0; i < n_blocks; i++)
        for (int k = 0; k < sp->b_len; k += 4) {
            uint8_t *p = raw + i * (size_t)sp->raw_bytes + sp->b_off + k;
            float f;
            memcpy(&f, p, 4);
            f = lp_bf16_to_f32(lp_f32_to_bf16(f));
            memcpy(p, &f, 4);
        }
}

/* type: a kernel type (its host blocks are those of the split's src_type). */
static dev_weight make_weight(int type, int M, int K, const std::vector<float> &w) {
    dev_weight d;
    d.type = type, d.K = K, d.M = M;
    const lpc_plane_split *sp = lpc_find_split(type);
    const lp_type src = (lp_type)(sp ? sp->src_type : type);
    const lp_qtype_traits *tr = lp_qtype(src);
    d.row_bytes = lp_row_size(src, K);
    std::vector<uint8_t> raw(d.row_bytes * M);
    for (int r = 0; r < M; r++) tr->from_float(w.data() + (size_t)r * K, raw.data() + r * d.row_bytes, K);
    const size_t nb = sp ? (size_t)M * K / sp->block : 0;
    if (sp && sp->b_bf16) round_b_to_bf16(sp, raw.data(), nb);
    d.ref.resize((size_t)M * K);
    for (int r = 0; r < M; r++) tr->to_float(raw.data() + r * d.row_bytes, d.ref.data() + (size_t)r * K, K);
    if (sp) {
        assert_true(lpc_split_fits(sp, raw.data(), nb));
        d.bpr = K / sp->block;
        d.a.resize(nb * sp->a_len);
        d.b.resize(nb * sp->b_stride);
        lpc_repack(sp, raw.data(), nb, d.a.data(), d.b.data());
    } else {
        d.bpr = 0;
        d.a = raw;
    }
    return d;
}

struct q8_buf {
    std::vector<int8_t> q;
    std::vector<float> d, s;
    explicit q8_buf(size_t n) : q(n), d(n / 32), s(n / 16) {}
    lpc_q8 view() { return lpc_q8{q.data(), d.data(), s.data()}; }
    float value(size_t i) const { return d[i / 32] * (float)q[i]; }
};

/* Problem i of p (the last one so far): weight w into y, accumulating or not; K, bpr and
 * row_bytes from w. */
static void set_problem(lpc_gemv_args &p, int i, const dev_weight &w, float *y, bool acc) {
    p.nprob = i + 1, p.K = w.K, p.bpr = w.bpr, p.row_bytes = w.row_bytes;
    p.a[i] = w.a.data(), p.b[i] = w.b.data(), p.y[i] = y;
    p.M[i] = w.M, p.row0[i + 1] = p.row0[i] + w.M, p.accumulate[i] = acc;
}

static const int gguf_quant_types[] = {LPC_Q4_K, LPC_Q5_K, LPC_Q6_K, LPC_Q3_K, LPC_Q2_K, LPC_Q8_0, LPC_Q4_0};
static const int mlx_bits[] = {2, 3, 4, 5, 6, 8}, mlx_groups[] = {32, 64, 128};

/* The GGUF types, every MLX (bits, group) by the runtime's own ids, then the kernel-only
 * bf16-scale variants. */
static std::vector<int> all_quant_types(void) {
    std::vector<int> t(std::begin(gguf_quant_types), std::end(gguf_quant_types));
    for (int bits : mlx_bits)
        for (int group : mlx_groups) t.push_back((int)lp_mlx_type(bits, group));
    for (const lpc_plane_split &sp : lpc_plane_splits)
        if (sp.b_bf16) t.push_back(sp.type);
    return t;
}
static const std::vector<int> quant_types = all_quant_types();

static bool is_mlx_kernel_type(int type) { return lp_type_is_mlx((lp_type)lpc_find_split(type)->src_type); }

/* Block decoders through the dequant kernel equal the project's to_float. */
static void test_dequant_matches_to_float(void **state) {
    (void)state;
    const int M = 3, K = 512;
    for (int type : quant_types) {
        dev_weight w = make_weight(type, M, K, rand_vec((size_t)M * K, 1.0f));
        std::vector<float> out((size_t)M * K, NAN);
        std::vector<uint16_t> out16((size_t)M * K, 0xffff);
        const int ids[3] = {2, 0, 1};
        assert_true(lpc_dequant_rows<float>(0, type, w.a.data(), w.b.data(), 0, w.bpr, K, ids, 0, M, out.data()));
        assert_true(lpc_dequant_rows<uint16_t>(0, type, w.a.data(), w.b.data(), 0, w.bpr, K, NULL, 0, M, out16.data()));
        for (int r = 0; r < M; r++)
            for (int i = 0; i < K; i++) {
                const float ref = w.ref[(size_t)ids[r] * K + i], got = out[(size_t)r * K + i];
                if (fabsf(ref - got) > 1e-5f * (1.0f + fabsf(ref))) fail_msg("type %d row %d elem %d: %g vs %g", type, r, i, got, ref);
                const float h = lpc_h2f_soft(out16[(size_t)r * K + i]), ref2 = w.ref[(size_t)r * K + i];
                if (fabsf(h - ref2) > 1e-3f * (1.0f + fabsf(ref2))) fail_msg("type %d f16 elem %d: %g vs %g", type, i, h, ref2);
            }
    }
}

/* The split table, the decoders and the runtime's traits describe each type alike, and
 * the MLX ids here are mlx_types.c's. */
struct split_check {
    int hits = 0;
    template <class T>
    void run() {
        const lpc_plane_split *sp = lpc_find_split(T::TYPE);
        assert_non_null(sp);
        const lp_qtype_traits *tr = lp_qtype((lp_type)sp->src_type);
        assert_non_null(tr);
        assert_int_equal(sp->type == sp->src_type, !sp->b_bf16); /* only variants have ids of their own */
        assert_int_equal(sp->block, T::BLOCK);
        assert_int_equal(sp->block, tr->block_size);
        assert_int_equal(sp->raw_bytes, tr->block_bytes);
        assert_int_equal(sp->a_len, T::A_BYTES);
        assert_int_equal(sp->b_stride, T::B_BYTES);
        assert_int_equal(T::BLOCK, T::SLICES * T::RUNS * 16); /* slices cover the block in runs of 16 */
        hits++;
    }
};

static void test_split_table(void **state) {
    (void)state;
    assert_int_equal(LPC_MLX_FIRST, LP_TYPE_MLX_FIRST);
    assert_true(LPC_MLX_BF16_FIRST >= LP_TYPE_MLX_FIRST + LP_TYPE_MLX_COUNT);
    for (int bits : mlx_bits)
        for (int group : mlx_groups) assert_int_equal(lpc_mlx_type_id(bits, group), (int)lp_mlx_type(bits, group));
    split_check c;
    for (int type : quant_types) assert_true(lpc_dispatch_quant(type, c));
    for (const lpc_plane_split &sp : lpc_plane_splits) assert_true(lpc_dispatch_quant(sp.type, c));
    assert_int_equal(c.hits, (int)(quant_types.size() + sizeof lpc_plane_splits / sizeof lpc_plane_splits[0]));
}

/* A value with 11 significant bits (an f16's), or 8 (a bfloat16's): what MLX files hold. */
static float short_rand(float scale, bool bf16) {
    const float f = frand() * scale;
    return bf16 ? lp_bf16_to_f32(lp_f32_to_bf16(f)) : lpc_h2f_soft(lpc_f2h_soft(f));
}

/* MLX blocks with random codes (every bit pattern is valid), short scales of either sign
 * and biases up to 2^bits scales away, through every MLX split (bf16 plane B or not):
 * dequantization via the slice decoders (both output types, rows gathered by id) equals
 * to_float bit for bit. */
static void test_mlx_decode_exact(void **state) {
    (void)state;
    const int M = 3, K = 384, ids[M] = {1, 2, 0};
    for (const lpc_plane_split &sp : lpc_plane_splits) {
        const lp_type t = (lp_type)sp.src_type;
        if (!lp_type_is_mlx(t)) continue;
        const int bits = lp_mlx_type_bits(t), group = lp_mlx_type_group(t);
        const lp_qtype_traits *tr = lp_qtype(t);
        const size_t row_bytes = lp_row_size(t, K), nb = (size_t)M * K / group;
        std::vector<uint8_t> raw(row_bytes * M);
        for (size_t b = 0; b < nb; b++) {
            uint8_t *blk = raw.data() + b * tr->block_bytes;
            const float scale = short_rand(0.05f, sp.b_bf16), bias = short_rand(fabsf(scale) * (float)(1 << bits), sp.b_bf16);
            memcpy(blk, &scale, 4);
            memcpy(blk + 4, &bias, 4);
            for (int i = 8; i < (int)tr->block_bytes; i++) blk[i] = (uint8_t)(frand() * 128.0f + 128.0f);
        }
        std::vector<float> ref((size_t)M * K), out((size_t)M * K, NAN);
        std::vector<uint16_t> out16((size_t)M * K);
        for (int r = 0; r < M; r++) tr->to_float(raw.data() + r * row_bytes, ref.data() + (size_t)r * K, K);
        std::vector<uint8_t> a(nb * sp.a_len), bp(nb * sp.b_stride);
        assert_true(lpc_split_fits(&sp, raw.data(), nb));
        lpc_repack(&sp, raw.data(), nb, a.data(), bp.data());
        assert_true(lpc_dequant_rows<float>(0, sp.type, a.data(), bp.data(), 0, K / group, K, ids, 0, M, out.data()));
        assert_true(lpc_dequant_rows<uint16_t>(0, sp.type, a.data(), bp.data(), 0, K / group, K, NULL, 0, M, out16.data()));
        for (int r = 0; r < M; r++)
            for (int i = 0; i < K; i++) {
                const float want = ref[(size_t)ids[r] * K + i], got = out[(size_t)r * K + i];
                if (got != want)
                    fail_msg("mlx %d-bit g%d%s row %d elem %d: %.9g vs %.9g", bits, group, sp.b_bf16 ? " bf16" : "", r, i,
                             got, want);
                if (out16[(size_t)r * K + i] != lpc_f2h_soft(ref[(size_t)r * K + i]))
                    fail_msg("mlx %d-bit g%d f16 row %d elem %d", bits, group, r, i);
            }
    }
}

/* The bf16 variant is chosen only where narrowing is exact. */
static void test_mlx_bf16_choice(void **state) {
    (void)state;
    const lp_type t = lp_mlx_type(4, 64);
    const lpc_plane_split *narrow = lpc_split_for(t, true), *plain = lpc_split_for(t, false);
    assert_true(narrow && narrow->b_bf16 && plain && !plain->b_bf16 && plain->type == (int)t);
    assert_ptr_equal(lpc_split_for(LPC_Q4_K, true), lpc_find_split(LPC_Q4_K)); /* no variant: the plain split */
    std::vector<uint8_t> raw(3 * (size_t)plain->raw_bytes, 0);
    const float ok = 0.5f, bad = 0.1f; /* 0.1 is not a bfloat16 value */
    memcpy(&raw[plain->raw_bytes + 4], &ok, 4);
    assert_true(lpc_split_fits(narrow, raw.data(), 3));
    memcpy(&raw[2 * plain->raw_bytes + 4], &bad, 4);
    assert_false(lpc_split_fits(narrow, raw.data(), 3));
    assert_true(lpc_split_fits(plain, raw.data(), 3));
}

/* The activation quantizer is llama.cpp's x86 Q8_0 arithmetic: d = max|x|/127 rounded
 * to F16, codes rint(x * 127/max) (ties to even); sums right. */
static void test_quantize(void **state) {
    (void)state;
    const size_t n = 256;
    std::vector<float> x = rand_vec(n, 3.0f);
    x[5] = 0.0f;
    for (int i = 64; i < 96; i++) x[i] = 0.0f; /* an all-zero block */
    q8_buf o(n);
    lpc_quantize(0, x.data(), n, o.view());
    for (size_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        assert_true(o.d[b] == lpc_h2f_soft(lpc_f2h_soft(amax / 127.0f)));
        for (int i = 0; i < 32; i++)
            assert_int_equal(o.q[b * 32 + i], amax > 0 ? (int)rintf(x[b * 32 + i] * (127.0f / amax)) : 0);
        for (int h = 0; h < 2; h++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += o.q[b * 32 + h * 16 + i];
            assert_float_equal(o.s[b * 2 + h], o.d[b] * sum, 1e-5);
        }
    }
}

/* Problems of Ms rows of one quantized type sharing an activation of ncols columns (the
 * second one accumulating onto 0.25), as the GEMV and MMA launchers take them, and the
 * exact check of their outputs against the dequantized weights times the dequantized
 * codes in double. outlier: one large activation (a column whose codes are mostly small). */
struct quant_probs {
    int type, K, ncols;
    std::vector<int> Ms;
    std::vector<dev_weight> ws;
    std::vector<float> x;
    q8_buf xq;
    std::vector<std::vector<float>> y;
    lpc_gemv_args p = {};
    quant_probs(int type_, std::vector<int> Ms_, int K_, int ncols_, bool outlier)
        : type(type_), K(K_), ncols(ncols_), Ms(Ms_), xq((size_t)ncols_ * K_), y(Ms_.size()) {
        const int np = (int)Ms.size();
        for (int pi = 0; pi < np; pi++) ws.push_back(make_weight(type, Ms[pi], K, rand_vec((size_t)Ms[pi] * K, 0.5f)));
        x = rand_vec((size_t)ncols * K, 2.0f);
        if (outlier) x[3] = 40.0f;
        lpc_quantize(0, x.data(), x.size(), xq.view());
        p.ncols = ncols, p.xq = xq.view();
        for (int pi = 0; pi < np; pi++) {
            y[pi].assign((size_t)ncols * Ms[pi], pi == 1 ? 0.25f : NAN);
            set_problem(p, pi, ws[pi], y[pi].data(), pi == 1);
        }
    }
    void check(const char *what, int splits) const {
        for (size_t pi = 0; pi < Ms.size(); pi++)
            for (int c = 0; c < ncols; c++)
                for (int r = 0; r < Ms[pi]; r++) {
                    double ref = pi == 1 ? 0.25 : 0.0, mag = 0;
                    for (int k = 0; k < K; k++) {
                        ref += (double)ws[pi].ref[(size_t)r * K + k] * xq.value((size_t)c * K + k);
                        mag += fabs((double)ws[pi].ref[(size_t)r * K + k] * x[(size_t)c * K + k]);
                    }
                    const float got = y[pi][(size_t)c * Ms[pi] + r];
                    if (!(fabs(got - ref) <= 1e-5 * (mag + 1.0)))
                        fail_msg("%s type %d K %d ncols %d splits %d prob %zu row %d col %d: %g vs %g", what, type, K, ncols, splits,
                                 pi, r, c, got, ref);
                }
    }
};

/* GEMV of every quantized type, 1..11 columns, three problems in one launch, one of them
 * accumulating: exact against the dequantized weights times the dequantized codes. The
 * MLX types share one decoder per width, so besides MLX 4-bit g64 (both plane B
 * layouts) they run 1 and 11 columns only (the 1- and 8-column kernels and the 4-column one for the last 3). */
static void test_gemv_quant(void **state) {
    (void)state;
    const std::vector<int> Ms = {5, 8, 3}, all_cols = {1, 2, 3, 5, 8, 11}, few_cols = {1, 11};
    for (int type : quant_types) {
        const bool few = is_mlx_kernel_type(type) && lpc_find_split(type)->src_type != (int)lp_mlx_type(4, 64);
        /* K = 4352: 17 super-blocks, more slices than one batch of the batch-1 kernel */
        for (int K : {512, 4352})
        for (int ncols : few ? few_cols : all_cols) {
            if (K > 512 && ncols > 2) continue;
            quant_probs q(type, Ms, K, ncols, false);
            assert_true(lpc_gemv(0, type, q.p, 0));
            q.check("gemv", 0);
            if (ncols > 1) continue;
            /* the batch-1 kernel on a capped grid: 1 block walks every row group (the
             * emulator has one block resident per "SM") */
            quant_probs c(type, Ms, K, ncols, false);
            c.p.per_sm = 1, c.p.n_sm = 1;
            assert_true(lpc_gemv(0, type, c.p, 0));
            c.check("gemv one block", 0);
        }
    }
}

/* F32/F16/BF16 weights with F32 activations. */
static void test_gemv_float(void **state) {
    (void)state;
    const int K = 256, M = 6;
    for (int type : {LPC_F32, LPC_F16, LPC_BF16}) {
        for (int ncols : {1, 4, 9}) {
            dev_weight w = make_weight(type, M, K, rand_vec((size_t)M * K, 1.0f));
            std::vector<float> x = rand_vec((size_t)ncols * K, 1.0f), y((size_t)ncols * M, NAN);
            lpc_gemv_args p = {};
            set_problem(p, 0, w, y.data(), false);
            p.ncols = ncols;
            p.x = x.data();
            assert_true(lpc_gemv(0, type, p, 0));
            for (int c = 0; c < ncols; c++)
                for (int r = 0; r < M; r++) {
                    double ref = 0;
                    for (int k = 0; k < K; k++) ref += (double)w.ref[(size_t)r * K + k] * x[(size_t)c * K + k];
                    assert_true(fabs(y[(size_t)c * M + r] - ref) < 1e-4);
                }
            std::vector<float> rows((size_t)M * K);
            assert_true(lpc_dequant_rows<float>(0, type, w.a.data(), NULL, w.row_bytes, 0, K, NULL, 0, M, rows.data()));
            for (size_t i = 0; i < rows.size(); i++) assert_float_equal(rows[i], w.ref[i], 0);
        }
    }
}

/* Expert mode: pair p uses expert sel[p] and x column p / x_div. */
struct expert_offsets {
    size_t M, bpr, a, b;
    template <class T>
    void run() {
        a = M * bpr * T::A_BYTES;
        b = M * bpr * T::B_BYTES;
    }
};

static void test_gemv_experts(void **state) {
    (void)state;
    const int K = 256, M = 4, E = 3, pairs = 4, x_div = 2;
    for (int type : {(int)LPC_Q4_K, (int)lp_mlx_type(4, 64), lpc_split_for(lp_mlx_type(4, 64), true)->type,
                     (int)lp_mlx_type(3, 32), (int)lp_mlx_type(8, 128)}) {
        dev_weight w = make_weight(type, M * E, K, rand_vec((size_t)M * E * K, 1.0f));
        std::vector<float> x = rand_vec((size_t)2 * K, 1.0f), y((size_t)pairs * M, NAN);
        q8_buf xq(x.size());
        lpc_quantize(0, x.data(), x.size(), xq.view());
        const int sel[pairs] = {2, 0, 1, 2};
        expert_offsets off = {(size_t)M, (size_t)w.bpr, 0, 0};
        assert_true(lpc_dispatch_quant(type, off));
        lpc_gemv_args p = {};
        p.nprob = 1;
        p.a[0] = w.a.data();
        p.b[0] = w.b.data();
        p.y[0] = y.data();
        p.M[0] = M;
        p.row0[1] = M;
        p.K = K;
        p.bpr = w.bpr;
        p.ncols = 1;
        p.xq = xq.view();
        p.sel = sel;
        p.x_div = x_div;
        p.expert_a = off.a;
        p.expert_b = off.b;
        assert_true(lpc_gemv(0, type, p, pairs));
        for (int pr = 0; pr < pairs; pr++)
            for (int r = 0; r < M; r++) {
                double ref = 0;
                for (int k = 0; k < K; k++)
                    ref += (double)w.ref[((size_t)sel[pr] * M + r) * K + k] * xq.value((size_t)(pr / x_div) * K + k);
                const float got = y[(size_t)pr * M + r];
                if (!(fabs(got - ref) < 1e-4)) fail_msg("type %d pair %d row %d: %g vs %g", type, pr, r, got, ref);
            }
    }
}

/* ---- the batch-1 GEMV's staged RMSNorm against the ops it replaces ---- */

static bool same_bits(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

/* One batch-1 problem set over q8 input xq: M rows per problem (all of type), K columns. */
static lpc_gemv_args gemv1_args(const std::vector<dev_weight *> &ws, const q8_buf &xq, std::vector<float> *const *y, bool acc) {
    lpc_gemv_args p = {};
    p.ncols = 1, p.xq = const_cast<q8_buf &>(xq).view();
    for (int i = 0; i < (int)ws.size(); i++) set_problem(p, i, *ws[i], y[i]->data(), acc);
    return p;
}

/* A GEMV whose input is RMSNorm(x) * w made while staging (lpc_gemv_xnorm): equal to
 * rounding to the GEMV over the shadow of w * x scaled by 1/rms (the same codes: only
 * the sum of squares' order differs), and within a code step per element of the
 * separate RMSNorm + GEMV; with blocks walking row groups, input lengths that leave
 * warps partly idle or making several rounds of loads, and never reading the shadow it
 * replaces. The same from the shadow of w * x and the group sums of squares a producer
 * wrote (xn.ss, lpc_grp_norm). */
static void test_gemv_xnorm(void **state) {
    (void)state;
    const int M = 64;
    const float eps = 1e-6f;
    for (int type : {(int)LPC_Q4_K, (int)LPC_Q6_K, (int)LPC_Q8_0, (int)lp_mlx_type(4, 64)})
        for (int size = 0; size < 3; size++) { /* 5120: a warp's passes past one round of loads */
            const int K = size == 2 ? 5120 : size ? 2304 : type == LPC_Q8_0 ? 224 : type == LPC_Q4_K || type == LPC_Q6_K ? 256 : 192;
            dev_weight w = make_weight(type, M, K, rand_vec((size_t)M * K, 0.5f));
            std::vector<float> x = rand_vec(K, 3.0f), nw = rand_vec(K, 1.0f), wx(K);
            double ss = 0;
            for (int i = 0; i < K; i++) wx[i] = nw[i] * x[i], ss += (double)x[i] * x[i];
            const double inv_rms = 1.0 / sqrt(ss / K + eps);
            /* reference 1: the GEMV over the shadow of w * x, scaled by 1/rms */
            q8_buf wq(K);
            lpc_quantize(0, wx.data(), K, wq.view());
            std::vector<float> ref(M), *yr[] = {&ref};
            assert_true(lpc_gemv(0, type, gemv1_args({&w}, wq, yr, false), 0));
            /* reference 2: RMSNorm (with its shadow), then the GEMV */
            std::vector<float> normed(K), sep(M), *ys[] = {&sep};
            q8_buf nq(K);
            assert_true(lpc_rmsnorm(0, x.data(), nw.data(), 1, K, eps, normed.data(), 1, nq.view()));
            assert_true(lpc_gemv(0, type, gemv1_args({&w}, nq, ys, false), 0));
            /* staged: the shadow it would have read is poison, never read */
            q8_buf poison(K);
            memset(poison.q.data(), 0x7f, K);
            std::vector<float> got(M), *yg[] = {&got};
            lpc_gemv_args p = gemv1_args({&w}, poison, yg, false);
            p.xn.x = x.data(), p.xn.w = nw.data(), p.xn.eps = eps;
            p.per_sm = 1, p.n_sm = 3; /* 3 blocks walk the row groups: each stages once */
            assert_true(lpc_gemv(0, type, p, 0));
            double mag = 0;
            for (int r = 0; r < M; r++) mag = fmax(mag, fabs(sep[r]));
            for (int r = 0; r < M; r++) {
                if (!(fabs(got[r] - ref[r] * inv_rms) <= 1e-5 * mag))
                    fail_msg("xnorm type %d K %d row %d: %g vs %g", type, K, r, got[r], ref[r] * inv_rms);
                if (!(fabs(got[r] - sep[r]) <= 0.02 * mag)) /* codes of w*x and w*x/rms may round apart */
                    fail_msg("xnorm vs separate type %d K %d row %d: %g vs %g", type, K, r, got[r], sep[r]);
            }
            std::vector<float> gss(K / 32, 0.0f); /* the producer's sums: the shadow is wq's */
            for (int i = 0; i < K; i++) gss[i / 32] += x[i] * x[i];
            lpc_gemv_args ps = gemv1_args({&w}, wq, yg, false);
            ps.xn.ss = gss.data(), ps.xn.eps = eps, ps.per_sm = 1, ps.n_sm = 3;
            assert_true(lpc_gemv(0, type, ps, 0));
            for (int r = 0; r < M; r++)
                if (!(fabs(got[r] - ref[r] * inv_rms) <= 1e-5 * mag))
                    fail_msg("xnorm.ss type %d K %d row %d: %g vs %g", type, K, r, got[r], ref[r] * inv_rms);
            p.xn.x = NULL; /* off: the poison is read */
            assert_true(lpc_gemv(0, type, p, 0));
            bool differs = false;
            for (int r = 0; r < M; r++) differs = differs || got[r] != sep[r];
            assert_true(differs);
        }
}

/* A GEMV accumulating into the residual with the RMSNorm's shadow in its epilogue
 * (lpc_gemv_ynorm, a block per 32-row group) against the plain GEMV: the residual bit for
 * bit, the shadow that of w * y bit for bit, each group's sum of squares to rounding; one
 * group, and six walked by three blocks; a K that takes the two-row shape. Refused for
 * more than one problem or rows not in whole groups. */
static void test_gemv_ynorm(void **state) {
    (void)state;
    for (int type : {(int)LPC_Q4_K, (int)LPC_Q6_K, (int)LPC_Q8_0, (int)lp_mlx_type(4, 64)})
        for (int M : {32, 192})
            for (int K : {256, 5120}) {
                if (K > 256 && M > 32) continue;
                dev_weight w = make_weight(type, M, K, rand_vec((size_t)M * K, 0.5f));
                std::vector<float> x = rand_vec(K, 2.0f), res = rand_vec(M, 4.0f), nw = rand_vec(M, 1.0f);
                q8_buf xq(K);
                lpc_quantize(0, x.data(), K, xq.view());
                std::vector<float> ya = res, yb = res, *pa[] = {&ya}, *pb[] = {&yb};
                assert_true(lpc_gemv(0, type, gemv1_args({&w}, xq, pa, true), 0));
                std::vector<float> wy(M);
                for (int i = 0; i < M; i++) wy[i] = nw[i] * ya[i];
                q8_buf ref(M), got(M);
                lpc_quantize(0, wy.data(), M, ref.view());
                std::vector<float> ss(M / 32, NAN);
                lpc_gemv_args p = gemv1_args({&w}, xq, pb, true);
                p.yn.w = nw.data(), p.yn.o = got.view(), p.yn.ss = ss.data();
                p.per_sm = 1, p.n_sm = 3; /* 3 blocks: 2 groups each at M = 192 */
                assert_true(lpc_gemv(0, type, p, 0));
                assert_true(same_bits(ya.data(), yb.data(), M * sizeof(float)));
                assert_true(same_bits(ref.q.data(), got.q.data(), M) && same_bits(ref.d.data(), got.d.data(), M / 32 * 4) &&
                            same_bits(ref.s.data(), got.s.data(), M / 16 * 4));
                for (int g = 0; g < M / 32; g++) {
                    double want = 0;
                    for (int i = 0; i < 32; i++) want += (double)ya[g * 32 + i] * ya[g * 32 + i];
                    if (!(fabs(ss[g] - want) <= 1e-5 * want)) fail_msg("ynorm type %d group %d: ss %g vs %g", type, g, ss[g], want);
                }
            }
    dev_weight w = make_weight(LPC_Q4_K, 48, 256, rand_vec(48 * 256, 0.5f));
    std::vector<float> x = rand_vec(256, 1.0f), y(48), nw(48, 1.0f), ss(2), *py[] = {&y, &y};
    q8_buf xq(256), o(64);
    lpc_quantize(0, x.data(), 256, xq.view());
    lpc_gemv_args p = gemv1_args({&w}, xq, py, true);
    p.yn.w = nw.data(), p.yn.o = o.view(), p.yn.ss = ss.data();
    assert_false(lpc_gemv(0, LPC_Q4_K, p, 0)); /* 48 rows */
    dev_weight w2 = make_weight(LPC_Q4_K, 32, 256, rand_vec(32 * 256, 0.5f));
    p = gemv1_args({&w2, &w2}, xq, py, true);
    p.yn.w = nw.data(), p.yn.o = o.view(), p.yn.ss = ss.data();
    assert_false(lpc_gemv(0, LPC_Q4_K, p, 0)); /* two problems */
}

/* Gate/up with the SwiGLU in the GEMV (lpc_gemv_glu) against the GEMV and the SwiGLU
 * kernel: the same F32 result and shadow bit for bit, with and without a staged RMSNorm
 * and the gpt-oss clamp, blocks walking one and two groups; refused where waves would be
 * left half empty. */
static void test_gemv_glu(void **state) {
    (void)state;
    const int K = 256;
    for (int type : {(int)LPC_Q4_K, (int)LPC_Q6_K, (int)LPC_Q8_0, (int)lp_mlx_type(4, 64)})
        for (int M : {32, 192})
            for (int normed = 0; normed < 2; normed++) {
                const float limit = normed ? 1.5f : 0.0f;
                dev_weight g = make_weight(type, M, K, rand_vec((size_t)M * K, 0.5f));
                dev_weight u = make_weight(type, M, K, rand_vec((size_t)M * K, 0.5f));
                std::vector<float> x = rand_vec(K, 2.0f), nw = rand_vec(K, 1.0f);
                q8_buf xq(K);
                lpc_quantize(0, x.data(), K, xq.view());
                std::vector<float> ga(M), ua(M), gb(M, NAN), ub(M, NAN);
                std::vector<float> *ya[] = {&ga, &ua}, *yb[] = {&gb, &ub};
                lpc_gemv_args pa = gemv1_args({&g, &u}, xq, ya, false);
                if (normed) pa.xn.x = x.data(), pa.xn.w = nw.data(), pa.xn.eps = 1e-6f;
                assert_true(lpc_gemv(0, type, pa, 0));
                q8_buf oa(M);
                lpc_swiglu(0, ga.data(), ua.data(), M, limit, 1, oa.view());
                lpc_gemv_args pb = gemv1_args({&g, &u}, xq, yb, false);
                pb.xn = pa.xn;
                pb.per_sm = 1, pb.n_sm = 3; /* 3 blocks: 2 groups each at M = 192 */
                q8_buf ob(M);
                std::vector<float> out(M, NAN);
                pb.glu.on = 1, pb.glu.limit = limit, pb.glu.out = normed ? NULL : out.data(), pb.glu.o = ob.view();
                assert_true(lpc_gemv_glu(0, type, pb));
                assert_true(same_bits(oa.q.data(), ob.q.data(), M) && same_bits(oa.d.data(), ob.d.data(), M / 32 * 4) &&
                            same_bits(oa.s.data(), ob.s.data(), M / 16 * 4));
                if (!normed) assert_true(same_bits(ga.data(), out.data(), M * sizeof(float)));
                for (int i = 0; i < M; i++) assert_true(std::isnan(gb[i]) && std::isnan(ub[i])); /* gate, up never stored */
                if (M == 192) { /* 6 groups on 4 slots: a second wave of 2, refused; on 6 or 7, one wave */
                    pb.n_sm = 7;
                    assert_true(lpc_gemv_glu(0, type, pb));
                    pb.n_sm = 4;
                    assert_false(lpc_gemv_glu(0, type, pb));
                }
            }
}

/* ---- int8 tensor-core matmul (lpc_mma.cuh) ---- */

/* 4 int8 at p, p + stride, ... as one little-endian word. */
static uint32_t pack4(const int8_t *p, int stride) {
    uint32_t w = 0;
    for (int i = 0; i < 4; i++) w |= (uint32_t)(uint8_t)p[i * stride] << (8 * i);
    return w;
}

/* Each warp: D = A . B + C for its own A (16 x 16H, row-major), B (16H x 8, row-major
 * here) and C (16 x 8), the fragments built from the PTX ISA's formulas (written out
 * here, apart from the kernel's use of them). */
template <int H>
static void mma_frag_kernel(const int8_t *A, const int8_t *B, const int *C, int *D) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    A += warp * 16 * 16 * H, B += warp * 16 * H * 8, C += warp * 128, D += warp * 128;
    uint32_t a[2 * H], b[H];
    for (int h = 0; h < H; h++) {
        a[2 * h] = pack4(A + g * 16 * H + 16 * h + 4 * t, 1);           /* row g, k = 16h + 4t .. +3 */
        a[2 * h + 1] = pack4(A + (g + 8) * 16 * H + 16 * h + 4 * t, 1); /* row g + 8 */
        b[h] = pack4(B + (16 * h + 4 * t) * 8 + g, 8);                   /* column g, k = 16h + 4t .. +3 */
    }
    int c[4];
    for (int i = 0; i < 4; i++) c[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
    lpc_mma_s8(c, a, b);
    for (int i = 0; i < 4; i++) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = c[i];
}

/* The emulated mma.sync (k16 and k32) against a plain integer matmul, two warps with
 * different operands; extreme codes included (-128 * -128 sums). */
static void test_mma_fragments(void **state) {
    (void)state;
    for (int H = 1; H <= 2; H++) {
        const int KD = 16 * H, warps = 2;
        std::vector<int8_t> A((size_t)warps * 16 * KD), B((size_t)warps * KD * 8);
        std::vector<int> C((size_t)warps * 128), D(C.size(), 0x7fffffff);
        for (auto &v : A) v = (int8_t)(frand() * 128.0f);
        for (auto &v : B) v = (int8_t)(frand() * 128.0f);
        for (auto &v : C) v = (int)(frand() * 100000.0f);
        A[3] = B[5] = -128;
        const int8_t *pa = A.data(), *pb = B.data();
        const int *pc = C.data();
        int *pd = D.data();
        if (H == 1) LPC_LAUNCH(mma_frag_kernel<1>, dim3(1), dim3(32 * warps), 0, pa, pb, pc, pd);
        else LPC_LAUNCH(mma_frag_kernel<2>, dim3(1), dim3(32 * warps), 0, pa, pb, pc, pd);
        for (int w = 0; w < warps; w++)
            for (int r = 0; r < 16; r++)
                for (int n = 0; n < 8; n++) {
                    int ref = C[w * 128 + r * 8 + n];
                    for (int k = 0; k < KD; k++) ref += A[(size_t)w * 16 * KD + r * KD + k] * B[(size_t)w * KD * 8 + k * 8 + n];
                    const int got = D[w * 128 + r * 8 + n];
                    if (got != ref) fail_msg("k%d warp %d D[%d][%d] = %d, want %d", KD, w, r, n, got, ref);
                }
    }
}

/* The kernel's assumptions about each decoder, checked on random blocks: the slices of a
 * k-step cover exactly its LPC_MMA_KT elements; PAIRED: both runs of each 32-group share
 * scale and minv; ZERO >= 0: minv == ZERO * scale, and bytes < 128 so lpc_sub_bytes gives
 * byte - ZERO. */
struct mma_kind_check {
    int hits = 0;
    template <class T>
    void run() {
        typedef lpc_mma_kind<T> kind;
        typedef lpc_mma_shape<T> S;
        const int M = 2, K = 512;
        dev_weight w = make_weight(T::TYPE, M, K, rand_vec((size_t)M * K, 1.0f));
        for (int r = 0; r < M; r++) {
            std::vector<int> seen(K, 0);
            std::vector<float> sc(K / 16), mn(K / 16);
            for (int gs = 0; gs < w.bpr * T::SLICES; gs++) {
                const int blk = gs / T::SLICES, ks = gs / S::SPK;
                lpc_slice<T::RUNS> sl;
                T::decode(w.a.data() + ((size_t)r * w.bpr + blk) * T::A_BYTES, w.b.data() + ((size_t)r * w.bpr + blk) * T::B_BYTES,
                          gs % T::SLICES, sl);
                for (int q = 0; q < T::RUNS; q++) {
                    const int e = blk * T::BLOCK + sl.off[q];
                    if (e % 16 || e / LPC_MMA_KT != ks)
                        fail_msg("type %d slice %d run %d at %d: outside k-step %d", T::TYPE, gs, q, e, ks);
                    seen[e]++;
                    sc[e / 16] = sl.scale[q], mn[e / 16] = sl.minv[q];
                    if (kind::ZERO < 0) continue;
                    if (sl.minv[q] != (float)kind::ZERO * sl.scale[q])
                        fail_msg("type %d: minv %g != %d * %g", T::TYPE, sl.minv[q], kind::ZERO, sl.scale[q]);
                    for (int k = 0; k < 4 && kind::ZERO > 0; k++) {
                        const uint32_t v = sl.v[q][k], z = lpc_sub_bytes(v, kind::ZERO);
                        for (int i = 0; i < 4; i++) {
                            const int byte = (int)((v >> (8 * i)) & 0xff);
                            if (byte >= 128) fail_msg("type %d: byte %d >= 128 with ZERO %d", T::TYPE, byte, kind::ZERO);
                            if ((int)(int8_t)(z >> (8 * i)) != byte - kind::ZERO) fail_msg("type %d: lpc_sub_bytes", T::TYPE);
                        }
                    }
                }
            }
            for (int e = 0; e < K; e += 16) assert_int_equal(seen[e], 1);
            for (int j = 0; kind::PAIRED && j < K / 16; j += 2)
                if (sc[j] != sc[j + 1] || mn[j] != mn[j + 1])
                    fail_msg("type %d row %d group %d: runs differ in scale", T::TYPE, r, j / 2);
        }
        hits++;
    }
};

static void test_mma_kinds(void **state) {
    (void)state;
    mma_kind_check c;
    for (const lpc_plane_split &sp : lpc_plane_splits) assert_true(lpc_dispatch_quant(sp.type, c));
    assert_int_equal(c.hits, (int)(sizeof lpc_plane_splits / sizeof lpc_plane_splits[0]));
}

/* The MMA kernel on problems of Ms rows sharing x (the middle one accumulating), ncols
 * columns, `splits` K splits (blocks in a shuffled order then): against the dequantized
 * weights times the dequantized codes in double, the GEMV test's bound; split counters
 * back at zero. */
static void run_mma_case(int type, std::vector<int> Ms, int K, int ncols, int splits) {
    quant_probs q(type, Ms, K, ncols, true);
    lpc_gemv_args &p = q.p;
    const int tiles = lpc_mma_tiles(p.row0[p.nprob], ncols);
    std::vector<float> part(lpc_mma_part_floats(tiles, splits), NAN);
    std::vector<unsigned> counters(tiles, 0);
    const lpc_mma_split sp = {part.data(), counters.data(), splits};
    emu::block_order_seed() = splits > 1 ? 0x3c6ef372u + (uint64_t)K : 0;
    assert_true(lpc_mma(0, type, p, sp));
    emu::block_order_seed() = 0;
    for (unsigned v : counters) assert_int_equal(v, 0);
    q.check("mma", splits);
}

/* The fast-path types (Q4_K, Q5_K, Q6_K, Q8_0, MLX 4-bit g64 in both plane-B layouts)
 * over batch widths 1..70 (two column tiles), K up to 4096, row counts that are no
 * multiple of the 128-row tile (three problems, one straddling a tile edge), with and
 * without K splits; every other type once (small). */
/* Under the sanitizers (CI's Debug build) the emulator is ~10x slower: the long-K MMA
 * cases run at a quarter of K there (still several k-steps per split). */
#if defined(__SANITIZE_ADDRESS__)
enum { SLOW_EMU_DIV = 4 };
#else
enum { SLOW_EMU_DIV = 1 };
#endif

static void test_mma_quant(void **state) {
    (void)state;
    const int mlx4 = (int)lp_mlx_type(4, 64), mlx4_bf16 = lpc_split_for(lp_mlx_type(4, 64), true)->type;
    struct mma_case {
        int type, K, ncols, splits;
        std::vector<int> Ms;
    };
    const std::vector<mma_case> cases = {
        {LPC_Q4_K, 512, 9, 1, {70, 100, 20}},  {LPC_Q4_K, 4096, 64, 3, {150}},   {LPC_Q4_K, 256, 1, 1, {129}},
        {LPC_Q5_K, 1024, 33, 2, {40, 130}},    {LPC_Q6_K, 1024, 33, 1, {70, 100, 20}}, {LPC_Q6_K, 2048, 64, 4, {130}},
        {LPC_Q8_0, 1024, 64, 1, {140}},        {LPC_Q8_0, 2880, 9, 2, {33, 20}}, /* K tail: 2880 = 22.5 k-steps */
        {mlx4, 1024, 70, 1, {90, 60}},         {mlx4_bf16, 512, 33, 2, {130}},   {LPC_Q3_K, 512, 9, 2, {100, 50}},
        {(int)lp_mlx_type(3, 32), 512, 9, 1, {130}},
    };
    for (const mma_case &mc : cases) run_mma_case(mc.type, mc.Ms, mc.K >= 2048 ? mc.K / SLOW_EMU_DIV : mc.K, mc.ncols, mc.splits);
    for (int type : quant_types) {
        const lpc_plane_split *sp = lpc_find_split(type);
        run_mma_case(type, {140}, sp->block == 256 ? 256 : 384, 9, 1);
    }
}

static void test_rmsnorm_swiglu_add(void **state) {
    (void)state;
    for (int D : {64, 96, 100, 1024, 2880, 4096, 9024}) { /* 9024: the 32-per-thread kernel */
        const int rows = 3;
        std::vector<float> x = rand_vec((size_t)rows * D, 2.0f), w = rand_vec(D, 1.0f), out(x.size(), NAN);
        q8_buf o(x.size());
        assert_true(lpc_rmsnorm(0, x.data(), w.data(), rows, D, 1e-6f, out.data(), D % 32 == 0, o.view()));
        for (int r = 0; r < rows; r++) {
            double ss = 0;
            for (int i = 0; i < D; i++) ss += (double)x[(size_t)r * D + i] * x[(size_t)r * D + i];
            const float scale = 1.0f / sqrtf((float)(ss / D) + 1e-6f);
            for (int i = 0; i < D; i++) {
                const float ref = w[i] * (x[(size_t)r * D + i] * scale);
                assert_true(fabsf(out[(size_t)r * D + i] - ref) <= 1e-5f * (1 + fabsf(ref)));
                /* half a code, plus the F16 rounding of the scale over up to 127 codes */
                const float d = o.d[((size_t)r * D + i) / 32];
                if (D % 32 == 0) assert_true(fabsf(o.value((size_t)r * D + i) - ref) <= d * (0.5f + 127.0f / 2048.0f) + 1e-6f);
            }
        }
    }
    const size_t n = 96;
    for (float limit : {0.0f, 1.5f}) {
        std::vector<float> g = rand_vec(n, 4.0f), u = rand_vec(n, 4.0f), g0 = g;
        q8_buf o(n);
        lpc_swiglu(0, g.data(), u.data(), n, limit, 1, o.view());
        for (size_t i = 0; i < n; i++) {
            float ref;
            if (limit > 0) {
                float gg = fminf(g0[i], limit), uu = fminf(fmaxf(u[i], -limit), limit);
                ref = gg / (1.0f + expf(-1.702f * gg)) * (uu + 1.0f);
            } else {
                ref = g0[i] / (1.0f + expf(-g0[i])) * u[i];
            }
            assert_float_equal(g[i], ref, 1e-6);
        }
    }
    std::vector<float> a = rand_vec(300, 1), b = rand_vec(300, 1), a0 = a, bias = rand_vec(100, 1);
    lpc_add(0, a.data(), b.data(), 300);
    for (int i = 0; i < 300; i++) assert_float_equal(a[i], a0[i] + b[i], 0);
    lpc_add_bias(0, a.data(), bias.data(), 100, 300, NULL);
    for (int i = 0; i < 300; i++) assert_float_equal(a[i], a0[i] + b[i] + bias[i % 100], 1e-6);
    std::vector<float> src = rand_vec(5 * 40, 1), dst(3 * 40, NAN);
    lpc_gather_rows_t rows = {{4, 0, 4}};
    lpc_gather(0, src.data(), 40, rows, 3, dst.data());
    for (int i = 0; i < 40; i++) {
        assert_float_equal(dst[i], src[4 * 40 + i], 0);
        assert_float_equal(dst[40 + i], src[i], 0);
        assert_float_equal(dst[80 + i], src[4 * 40 + i], 0);
    }
}

/* Per-head norm + rope against the CPU backend's formulas, both rotations. */
static void test_norm_rope(void **state) {
    (void)state;
    const int n = 3, H = 5, hd = 64, half = hd / 2;
    const int pos[n] = {0, 7, 1000};
    std::vector<float> inv(half), cs((size_t)n * half), sn((size_t)n * half), w = rand_vec(hd, 1.0f);
    for (int i = 0; i < half; i++) inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / hd);
    lpc_rope_table(0, n, pos, inv.data(), half, 1.0f, cs.data(), sn.data());
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            const float angle = (float)pos[t] * inv[i];
            assert_float_equal(cs[(size_t)t * half + i], (float)cos((double)angle), 0);
            assert_float_equal(sn[(size_t)t * half + i], (float)sin((double)angle), 0);
        }
    for (int neox = 0; neox < 2; neox++)
        for (int with_norm = 0; with_norm < 2; with_norm++) {
            std::vector<float> x = rand_vec((size_t)n * H * hd, 3.0f), ref = x;
            lpc_norm_rope(0, x.data(), n * H, H, hd, with_norm ? w.data() : NULL, 1e-6f, cs.data(), sn.data(), neox);
            for (int t = 0; t < n; t++)
                for (int h = 0; h < H; h++) {
                    float *v = ref.data() + ((size_t)t * H + h) * hd;
                    if (with_norm) {
                        double ss = 0;
                        for (int i = 0; i < hd; i++) ss += (double)v[i] * v[i];
                        const float scale = 1.0f / sqrtf((float)(ss / hd) + 1e-6f);
                        for (int i = 0; i < hd; i++) v[i] = w[i] * (v[i] * scale);
                    }
                    for (int i = 0; i < half; i++) {
                        float *a = v + (neox ? i : 2 * i), *b = neox ? v + i + half : a + 1;
                        const float x0 = *a, x1 = *b, c = cs[(size_t)t * half + i], s = sn[(size_t)t * half + i];
                        *a = x0 * c - x1 * s;
                        *b = x1 * c + x0 * s;
                    }
                }
            for (size_t i = 0; i < x.size(); i++) assert_true(fabsf(x[i] - ref[i]) < 1e-5f * (1 + fabsf(ref[i])));
        }
}

/* One configuration of the fused q/k/v kernel: q_op / k_op say whether q's / k's per-head
 * op (norm when with_norm, rope when rope) is folded in; keep_k: the F32 k written back. */
struct heads_case {
    int hd, n_head, n_kv, neox, with_norm, rope, q_op, k_op, keep_k;
};

/* The fused kernel (one launch) against the separate path the backend ran before (q's op
 * in place, k's op in place, then the KV store): the same bits in q, in the F32 k where
 * written back, and in the whole of both caches. Tokens in two slots, one at a position
 * another token of the batch does not share. */
static void run_heads_case(const heads_case &hc) {
    const int hd = hc.hd, half = hd / 2, n = 3, n_ctx = 16, n_slots = 2, n_kv = hc.n_kv;
    const int pos[n] = {5, 6, 9}, slot[n] = {0, 0, 1};
    const float eps = 1e-6f;
    std::vector<float> inv(half), cs((size_t)n * half), sn(cs.size()), qw = rand_vec(hd, 1.0f), kw = rand_vec(hd, 1.0f);
    for (int i = 0; i < half; i++) inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / hd);
    lpc_rope_table(0, n, pos, inv.data(), half, 1.0f, cs.data(), sn.data());
    const std::vector<float> q0 = rand_vec((size_t)n * hc.n_head * hd, 3.0f), k0 = rand_vec((size_t)n * n_kv * hd, 3.0f),
                             v = rand_vec(k0.size(), 3.0f);
    const std::vector<uint16_t> cache0((size_t)n_slots * n_kv * n_ctx * hd, 0x7e00);
    const float *w[2] = {hc.with_norm ? qw.data() : NULL, hc.with_norm ? kw.data() : NULL};
    const float *tc = hc.rope ? cs.data() : NULL, *ts = hc.rope ? sn.data() : NULL;
    /* separate launches */
    std::vector<float> q1 = q0, k1 = k0;
    std::vector<uint16_t> kc1 = cache0, vc1 = cache0;
    if (hc.q_op) lpc_norm_rope(0, q1.data(), n * hc.n_head, hc.n_head, hd, w[0], eps, tc, ts, hc.neox);
    if (hc.k_op) lpc_norm_rope(0, k1.data(), n * n_kv, n_kv, hd, w[1], eps, tc, ts, hc.neox);
    lpc_kv_store(0, n, k1.data(), v.data(), kc1.data(), vc1.data(), pos, slot, n_kv, n_ctx, hd);
    /* fused */
    std::vector<float> q2 = q0, k2 = k0;
    std::vector<uint16_t> kc2 = cache0, vc2 = cache0;
    lpc_heads_args a = {};
    lpc_head_set &qs = a.set[0], &ks = a.set[1], &vs = a.set[2];
    if (hc.q_op) {
        qs.x = q2.data(), qs.back = q2.data(), qs.rows = n * hc.n_head, qs.n_head = hc.n_head;
        qs.w = w[0], qs.eps = eps, qs.rope = hc.rope;
    }
    ks.x = k2.data(), ks.cache = kc2.data(), ks.rows = n * n_kv, ks.n_head = n_kv;
    if (hc.k_op) ks.w = w[1], ks.eps = eps, ks.rope = hc.rope, ks.back = hc.keep_k ? k2.data() : NULL;
    vs.x = v.data(), vs.cache = vc2.data(), vs.rows = n * n_kv, vs.n_head = n_kv;
    a.cs = cs.data(), a.sn = sn.data(), a.pos = pos, a.slot = slot, a.hd = hd, a.neox = hc.neox, a.n_kv = n_kv, a.n_ctx = n_ctx;
    lpc_heads(0, a);
    char what[160];
    snprintf(what, sizeof what, "hd %d heads %d/%d neox %d norm %d rope %d q_op %d k_op %d keep_k %d", hd, hc.n_head, n_kv,
             hc.neox, hc.with_norm, hc.rope, hc.q_op, hc.k_op, hc.keep_k);
    if (!same_bits(q1.data(), q2.data(), q1.size() * 4)) fail_msg("%s: q differs", what);
    if (!same_bits(kc1.data(), kc2.data(), kc1.size() * 2)) fail_msg("%s: K cache differs", what);
    if (!same_bits(vc1.data(), vc2.data(), vc1.size() * 2)) fail_msg("%s: V cache differs", what);
    const std::vector<float> &k_want = hc.k_op && hc.keep_k ? k1 : k0; /* not written back: untouched */
    if (!same_bits(k_want.data(), k2.data(), k0.size() * 4)) fail_msg("%s: F32 k differs", what);
    /* and the cache holds exactly the batch's rows: a written row is no sentinel */
    for (int t = 0; t < n; t++)
        for (int h = 0; h < n_kv; h++)
            for (int d = 0; d < hd; d++) {
                const size_t at = (((size_t)slot[t] * n_kv + h) * n_ctx + pos[t]) * hd + d;
                assert_int_equal(vc2[at], lpc_f2h_soft(v[((size_t)t * n_kv + h) * hd + d]));
                assert_int_equal(kc2[at], lpc_f2h_soft(k1[((size_t)t * n_kv + h) * hd + d]));
            }
}

static void test_heads_fused(void **state) {
    (void)state;
    for (int neox = 0; neox < 2; neox++)
        for (int with_norm = 0; with_norm < 2; with_norm++) {
            run_heads_case({64, 8, 2, neox, with_norm, 1, 1, 1, 0});  /* Qwen3 (norm) / Qwen2 (rope only), GQA 4 */
            run_heads_case({128, 4, 4, neox, with_norm, 1, 1, 1, 1}); /* no GQA; k read later: written back */
        }
    run_heads_case({64, 8, 2, 1, 1, 0, 1, 1, 1});  /* norm without rope */
    run_heads_case({32, 12, 1, 0, 0, 1, 1, 0, 0}); /* q's op only (k == v in the op list) */
    run_heads_case({256, 2, 2, 1, 1, 1, 0, 1, 1}); /* k's op only */
    run_heads_case({64, 4, 2, 1, 0, 0, 0, 0, 0});  /* the plain KV store */
}

/* The combine as lpc_attn_combine_kernel computed it before it became lpc_attn_merge:
 * per element, splits in order, sinks first in the denominator. */
static float combine_ref(const float *part, int nsplit, int live, int hd, int row, int n_head, const float *sinks, int d) {
    const int h = row % n_head;
    const int stride = hd + LPC_ATTN_PART_HEAD;
    const float *base = part + (size_t)row * nsplit * stride;
    float M = sinks ? sinks[h] : -INFINITY;
    for (int s = 0; s < live; s++) M = fmaxf(M, base[(size_t)s * stride]);
    float L = sinks ? expf(sinks[h] - M) : 0.0f, acc = 0.0f;
    for (int s = 0; s < live; s++) {
        const float ms = base[(size_t)s * stride];
        if (ms == -INFINITY) continue;
        const float w = expf(ms - M);
        L += w * base[(size_t)s * stride + 1];
        acc += w * base[(size_t)s * stride + LPC_ATTN_PART_HEAD + d];
    }
    return acc / L;
}

/* The folded combine (last split block merges, counters) against the separate combine
 * launch and the old per-element formula, bit for bit, output and int8 shadow; blocks in a
 * shuffled order (any split may finish last); launched twice on the same counters (a graph
 * replay), which must be back at zero after each launch. */
static void check_folded_combine(lpc_attn_args a, int n, int hd, const std::vector<float> &sep, const q8_buf &sep_q) {
    const size_t count = (size_t)n * a.n_head * hd;
    std::vector<float> part_sep(a.part, a.part + (size_t)n * a.n_head * a.nsplit * (hd + LPC_ATTN_PART_HEAD));
    for (size_t row = 0; row < (size_t)n * a.n_head; row++)
        for (int d = 0; d < hd; d++) {
            const int t = (int)row / a.n_head, len = a.pos[t] - (a.window > 0 ? std::max(0, a.pos[t] - a.window + 1) : 0) + 1;
            const int live = a.min_chunk ? std::max(1, std::min(a.nsplit, (len + a.min_chunk - 1) / a.min_chunk)) : a.nsplit;
            const float ref = combine_ref(part_sep.data(), a.nsplit, live, hd, (int)row, a.n_head, a.sinks, d);
            if (!same_bits(&ref, &sep[row * hd + d], 4))
                fail_msg("combine row %zu d %d: %a vs old %a", row, d, sep[row * hd + d], ref);
        }
    std::vector<unsigned> counters((size_t)n * a.n_kv, 0);
    for (int replay = 0; replay < 2; replay++) {
        std::vector<float> out(count, NAN);
        q8_buf o(count);
        std::fill(a.part, a.part + part_sep.size(), NAN); /* a merge before every split wrote its partials shows */
        a.out = out.data(), a.o = o.view(), a.emit = 1, a.counters = counters.data();
        emu::block_order_seed() = 0x51ed2701u + replay;
        lpc_attention(0, a, n, hd);
        emu::block_order_seed() = 0;
        if (!same_bits(out.data(), sep.data(), count * 4)) fail_msg("folded combine differs (launch %d)", replay);
        if (!same_bits(o.q.data(), sep_q.q.data(), count) || !same_bits(o.d.data(), sep_q.d.data(), count / 32 * 4) ||
            !same_bits(o.s.data(), sep_q.s.data(), count / 16 * 4))
            fail_msg("folded combine: int8 shadow differs (launch %d)", replay);
        for (unsigned v : counters) assert_int_equal(v, 0);
    }
}

/* Attention: keys/values of two slots stored over two steps, GQA, several splits,
 * a sliding window and sinks; against a double-precision reference over the same
 * F16-rounded cache. */
static void run_attention_case(int hd, int n_head, int n_kv, int nsplit, int window, bool sinks, int len0 = 70,
                               int min_chunk = 0) {
    const int n_ctx = len0 + 10, n_slots = 2, G = n_head / n_kv;
    std::vector<uint16_t> kc((size_t)n_slots * n_kv * n_ctx * hd, 0x7e00), vc(kc.size(), 0x7e00); /* NaN: unwritten */
    std::vector<float> kref(kc.size()), vref(kc.size());
    /* step 1: slot 0 positions 0..len0-1, slot 1 positions 0..39; step 2 (checked): new tokens */
    std::vector<int> pos, slot;
    for (int p = 0; p < len0; p++) pos.push_back(p), slot.push_back(0);
    for (int p = 0; p < 40; p++) pos.push_back(p), slot.push_back(1);
    for (int step = 0; step < 2; step++) {
        if (step == 1) {
            pos = {len0, len0 + 1, 40, 5};
            slot = {0, 0, 1, 1}; /* slot 1 pos 5 overwrites an old position: still valid */
        }
        const int n = (int)pos.size();
        std::vector<float> k = rand_vec((size_t)n * n_kv * hd, 1.0f), v = rand_vec(k.size(), 1.0f);
        lpc_kv_store(0, n, k.data(), v.data(), kc.data(), vc.data(), pos.data(), slot.data(), n_kv, n_ctx, hd);
        for (int t = 0; t < n; t++)
            for (int i = 0; i < n_kv * hd; i++) {
                const size_t at = (((size_t)slot[t] * n_kv + i / hd) * n_ctx + pos[t]) * hd + i % hd;
                kref[at] = lpc_h2f_soft(lpc_f2h_soft(k[(size_t)t * n_kv * hd + i]));
                vref[at] = lpc_h2f_soft(lpc_f2h_soft(v[(size_t)t * n_kv * hd + i]));
                assert_float_equal(lpc_h2f_soft(kc[at]), kref[at], 0);
            }
        if (step == 0) continue;
        std::vector<float> q = rand_vec((size_t)n * n_head * hd, 1.0f), out(q.size(), NAN), sink = rand_vec(n_head, 2.0f);
        std::vector<float> part((size_t)n * n_head * nsplit * (hd + LPC_ATTN_PART_HEAD), NAN);
        q8_buf o(out.size());
        lpc_attn_args a = {};
        a.q = q.data(), a.kc = kc.data(), a.vc = vc.data(), a.pos = pos.data(), a.slot = slot.data(), a.part = part.data();
        a.n_ctx = n_ctx, a.n_head = n_head, a.n_kv = n_kv, a.G = G, a.nsplit = nsplit, a.window = window;
        a.min_chunk = min_chunk;
        a.scale = 1.0f / sqrtf((float)hd);
        a.sinks = sinks ? sink.data() : NULL, a.out = out.data(), a.emit = 1, a.o = o.view();
        lpc_attention(0, a, n, hd); /* split + combine launch */
        check_folded_combine(a, n, hd, out, o);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < n_head; h++) {
                const int kvh = h / G, p = pos[t];
                const int first = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
                std::vector<double> sc;
                double mx = sinks ? sink[h] : -INFINITY;
                for (int j = first; j <= p; j++) {
                    double s = 0;
                    for (int d = 0; d < hd; d++)
                        s += (double)q[((size_t)t * n_head + h) * hd + d] * kref[(((size_t)slot[t] * n_kv + kvh) * n_ctx + j) * hd + d];
                    s *= a.scale;
                    sc.push_back(s);
                    mx = fmax(mx, s);
                }
                double sum = sinks ? exp(sink[h] - mx) : 0;
                for (double &s : sc) sum += (s = exp(s - mx));
                for (int d = 0; d < hd; d++) {
                    double ref = 0;
                    for (int j = first; j <= p; j++)
                        ref += sc[j - first] / sum * vref[(((size_t)slot[t] * n_kv + kvh) * n_ctx + j) * hd + d];
                    const float got = out[((size_t)t * n_head + h) * hd + d];
                    if (!(fabs(got - ref) < 2e-5)) fail_msg("hd %d split %d window %d t %d h %d d %d: %g vs %g", hd, nsplit, window, t, h, d, got, ref);
                }
            }
    }
}

static void test_attention(void **state) {
    (void)state;
    run_attention_case(32, 8, 2, 1, 0, false);
    run_attention_case(64, 4, 4, 3, 0, true);
    run_attention_case(128, 8, 1, 2, 16, false);
    run_attention_case(32, 12, 1, 4, 0, true); /* G = 12 -> the 16-head kernel */
    run_attention_case(32, 4, 2, 1, 0, false, 600); /* several tiles per warp: online-softmax rescaling */
    run_attention_case(128, 16, 4, 5, 0, false, 700); /* Qwen3's head_dim and GQA 4, five splits */
    run_attention_case(256, 4, 2, 2, 100, true, 300); /* one V row per step, window */
    /* live splits: 32-position minimum, so the tokens (pos 300/301 in slot 0, 40 and 5
     * in slot 1) use 10, 2 and 1 of 16 splits; the rest exit without counting in */
    run_attention_case(64, 8, 2, 16, 0, false, 300, 32);
    run_attention_case(64, 8, 2, 8, 32, true, 300, 32); /* window 32: one live split */
}

/* One configuration of the one-token attention (lpc_attention1) against the launches it
 * replaces: the fused heads kernel, then the split kernel with the folded merge. Its
 * products run in f16 on tensor cores (q and P rounded), the split kernel's in f32: the
 * outputs agree within ATTN1_BOUND (relative to 1 + |out|; the worst case is printed). */
#define ATTN1_BOUND 2e-3
static double worst_attn1 = 0.0;
struct attn1_case {
    int hd, n_head, n_kv, nsplit, min_chunk, window, sinks, pos;
    int with_norm, rope, q_op, k_op, keep_k, neox;
};

/* The same bits everywhere else: both caches whole (the token's row written, nothing else
 * touched: positions after it hold NaN sentinels, the token's own row a stale value that
 * must not be read), the F32 k written back, q untouched, the int8 shadow that of the
 * output; blocks in shuffled orders over two launches on the same counters (a graph
 * replay), which must be back at zero after each, with the same output. */
static void run_attn1_case(const attn1_case &ac) {
    const int hd = ac.hd, half = hd / 2, n_kv = ac.n_kv, n_head = ac.n_head, G = n_head / n_kv, n_slots = 2, slot = 1;
    const int n_ctx = ac.pos + 40;
    const float eps = 1e-6f;
    std::vector<float> inv(half), cs(half), sn(half), qw = rand_vec(hd, 1.0f), kw = rand_vec(hd, 1.0f), sink = rand_vec(n_head, 2.0f);
    for (int i = 0; i < half; i++) inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / hd);
    const int pos_arr[1] = {ac.pos}, slot_arr[1] = {slot};
    lpc_rope_table(0, 1, pos_arr, inv.data(), half, 1.0f, cs.data(), sn.data());
    std::vector<uint16_t> cache0((size_t)n_slots * n_kv * n_ctx * hd, 0x7e00); /* NaN: never read */
    for (int h = 0; h < n_kv; h++)
        for (int p = 0; p <= ac.pos; p++) /* earlier steps' rows, and a stale row at pos */
            for (int d = 0; d < hd; d++) cache0[(((size_t)slot * n_kv + h) * n_ctx + p) * hd + d] = lpc_f2h_soft(frand());
    std::vector<uint16_t> vcache0 = cache0;
    for (auto &x : vcache0)
        if (x != 0x7e00) x = lpc_f2h_soft(frand());
    const std::vector<float> q0 = rand_vec((size_t)n_head * hd, 3.0f), k0 = rand_vec((size_t)n_kv * hd, 3.0f),
                             v = rand_vec(k0.size(), 1.0f);
    lpc_head_set qs = {}, ks = {};
    qs.n_head = n_head, qs.rows = n_head, ks.n_head = n_kv, ks.rows = n_kv;
    if (ac.q_op) qs.w = ac.with_norm ? qw.data() : NULL, qs.eps = eps, qs.rope = ac.rope;
    if (ac.k_op) ks.w = ac.with_norm ? kw.data() : NULL, ks.eps = eps, ks.rope = ac.rope;
    lpc_attn_args a = {};
    a.pos = pos_arr, a.slot = slot_arr, a.n_ctx = n_ctx, a.n_head = n_head, a.n_kv = n_kv, a.G = G, a.nsplit = ac.nsplit;
    a.window = ac.window, a.min_chunk = ac.min_chunk, a.scale = 1.0f / sqrtf((float)hd), a.sinks = ac.sinks ? sink.data() : NULL;
    a.emit = 1;
    const size_t count = (size_t)n_head * hd;
    std::vector<float> part((size_t)n_head * ac.nsplit * (hd + LPC_ATTN_PART_HEAD), NAN);
    a.part = part.data();
    /* the launches it replaces */
    std::vector<float> q1 = q0, k1 = k0, out1(count, NAN);
    std::vector<uint16_t> kc1 = cache0, vc1 = vcache0;
    std::vector<unsigned> cnt1(n_kv, 0);
    q8_buf o1(count);
    lpc_heads_args h = {};
    h.set[0] = qs, h.set[1] = ks;
    if (ac.q_op) h.set[0].x = q1.data(), h.set[0].back = q1.data();
    else h.set[0].rows = 0;
    h.set[1].x = k1.data(), h.set[1].cache = kc1.data(), h.set[1].back = ac.k_op && ac.keep_k ? k1.data() : NULL;
    h.set[2] = lpc_head_set{}, h.set[2].x = v.data(), h.set[2].cache = vc1.data(), h.set[2].rows = n_kv, h.set[2].n_head = n_kv;
    h.cs = cs.data(), h.sn = sn.data(), h.pos = pos_arr, h.slot = slot_arr, h.hd = hd, h.neox = ac.neox, h.n_kv = n_kv, h.n_ctx = n_ctx;
    lpc_heads(0, h);
    lpc_attn_args a1 = a;
    a1.q = q1.data(), a1.kc = kc1.data(), a1.vc = vc1.data(), a1.out = out1.data(), a1.o = o1.view(), a1.counters = cnt1.data();
    lpc_attention(0, a1, 1, hd);
    char what[200];
    snprintf(what, sizeof what, "hd %d heads %d/%d splits %d chunk %d window %d sinks %d pos %d norm %d rope %d q %d k %d keep %d neox %d",
             hd, n_head, n_kv, ac.nsplit, ac.min_chunk, ac.window, ac.sinks, ac.pos, ac.with_norm, ac.rope, ac.q_op, ac.k_op,
             ac.keep_k, ac.neox);
    std::vector<float> out_first;
    for (int replay = 0; replay < 2; replay++) {
        std::vector<float> q2 = q0, k2 = k0, out2(count, NAN);
        std::vector<uint16_t> kc2 = cache0, vc2 = vcache0;
        std::vector<unsigned> cnt2(n_kv, 0);
        q8_buf o2(count);
        std::fill(part.begin(), part.end(), NAN);
        lpc_attn1_args p = {};
        p.a = a;
        p.a.q = q2.data(), p.a.kc = kc2.data(), p.a.vc = vc2.data(), p.a.out = out2.data(), p.a.o = o2.view();
        p.a.counters = cnt2.data();
        p.qh = qs, p.qh.x = q2.data();
        p.kh = ks, p.kh.x = k2.data(), p.kh.back = ac.k_op && ac.keep_k ? k2.data() : NULL;
        p.v = v.data(), p.cs = cs.data(), p.sn = sn.data(), p.neox = ac.neox;
        emu::block_order_seed() = 0x7a11u + 77u * replay;
        /* the launch of the live splits only (as the backend does), then all of them */
        const int len = ac.window > 0 ? std::min(ac.window, ac.pos + 1) : ac.pos + 1;
        const int live = ac.min_chunk ? std::max(1, std::min(ac.nsplit, (len + ac.min_chunk - 1) / ac.min_chunk)) : ac.nsplit;
        lpc_attention1(0, p, hd, replay == 0 ? live : ac.nsplit);
        emu::block_order_seed() = 0;
        for (size_t i = 0; i < count; i++) {
            const double err = fabs((double)out2[i] - out1[i]) / (1.0 + fabs(out1[i]));
            if (!(err < ATTN1_BOUND)) fail_msg("%s: output %zu off by %g (launch %d)", what, i, err, replay); /* NaN too */
            if (replay == 0) worst_attn1 = fmax(worst_attn1, err);
        }
        if (replay == 1 && !same_bits(out_first.data(), out2.data(), count * 4)) fail_msg("%s: launches differ", what);
        out_first = out2;
        q8_buf oq(count); /* the shadow is of the output it came with */
        lpc_quantize(0, out2.data(), count, oq.view());
        if (!same_bits(oq.q.data(), o2.q.data(), count) || !same_bits(oq.d.data(), o2.d.data(), count / 32 * 4) ||
            !same_bits(oq.s.data(), o2.s.data(), count / 16 * 4))
            fail_msg("%s: int8 shadow differs", what);
        if (!same_bits(kc1.data(), kc2.data(), kc1.size() * 2)) fail_msg("%s: K cache differs", what);
        if (!same_bits(vc1.data(), vc2.data(), vc1.size() * 2)) fail_msg("%s: V cache differs", what);
        if (!same_bits(q0.data(), q2.data(), q0.size() * 4)) fail_msg("%s: q was written", what);
        if (!same_bits(k1.data(), k2.data(), k1.size() * 4)) fail_msg("%s: F32 k differs", what);
        for (unsigned c : cnt2) assert_int_equal(c, 0);
    }
    /* and against a plain reading of the output: no NaN came through from the sentinels */
    for (float x : out1) assert_false(isnan(x));
}

static void test_attention1(void **state) {
    (void)state;
    /* Qwen3-8B's shape at 512 positions: 4 live splits of one tile per warp, the token in the last row */
    run_attn1_case({128, 16, 4, 8, 128, 0, 0, 511, 1, 1, 1, 1, 0, 1});
    run_attn1_case({128, 16, 4, 8, 128, 0, 0, 300, 1, 1, 1, 1, 1, 1}); /* the token mid-tile; k read later */
    run_attn1_case({64, 8, 2, 2, 0, 0, 1, 1000, 1, 1, 1, 1, 0, 0});    /* 4 tiles per warp: restaged tiles; sinks */
    run_attn1_case({64, 16, 2, 16, 32, 100, 0, 700, 0, 1, 1, 1, 0, 1}); /* window; rope only (Qwen2); G 8 */
    run_attn1_case({256, 4, 2, 4, 32, 0, 1, 90, 1, 0, 1, 1, 1, 1});    /* norm without rope; one V row per step */
    run_attn1_case({32, 12, 1, 3, 0, 0, 0, 45, 0, 1, 1, 0, 0, 0});     /* G 12 (the 16-head kernel); q's op only */
    run_attn1_case({128, 8, 8, 4, 128, 0, 0, 0, 1, 1, 0, 1, 0, 1});    /* the first token: only its own row; no GQA */
    run_attn1_case({64, 4, 2, 2, 0, 0, 0, 33, 0, 0, 0, 0, 0, 0});      /* nothing folded: q and k as they come */
    printf("  attention1 (f16 tensor cores) vs the f32 split kernel: worst %.2e (bound %.0e)\n", worst_attn1, ATTN1_BOUND);
}

static void test_moe_routing(void **state) {
    (void)state;
    const int n = 3, E = 40, k = 4;
    std::vector<float> logits = rand_vec((size_t)n * E, 3.0f);
    logits[7] = logits[9] = 10.0f; /* a tie: lower expert first */
    for (int norm = 0; norm < 2; norm++) {
        std::vector<int> sel((size_t)n * k, -1);
        std::vector<float> wt((size_t)n * k, NAN);
        lpc_topk(0, n, logits.data(), E, k, norm, sel.data(), wt.data());
        for (int t = 0; t < n; t++) {
            std::vector<int> ref;
            for (int i = 0; i < k; i++) {
                int best = -1;
                for (int e = 0; e < E; e++) {
                    bool taken = false;
                    for (int j : ref) taken |= j == e;
                    if (!taken && (best < 0 || logits[(size_t)t * E + e] > logits[(size_t)t * E + best])) best = e;
                }
                ref.push_back(best);
            }
            const float mx = logits[(size_t)t * E + ref[0]];
            double denom = 0;
            if (norm)
                for (int e : ref) denom += exp(logits[(size_t)t * E + e] - mx);
            else
                for (int e = 0; e < E; e++) denom += exp(logits[(size_t)t * E + e] - mx);
            for (int i = 0; i < k; i++) {
                assert_int_equal(sel[(size_t)t * k + i], ref[i]);
                assert_true(fabs(wt[(size_t)t * k + i] - exp(logits[(size_t)t * E + ref[i]] - mx) / denom) < 1e-6);
            }
        }
        if (norm) {
            const int D = 8;
            std::vector<float> dres = rand_vec((size_t)n * k * D, 1.0f), out((size_t)n * D, NAN);
            lpc_moe_combine(0, n, dres.data(), sel.data(), wt.data(), k, D, out.data());
            for (int t = 0; t < n; t++)
                for (int i = 0; i < D; i++) {
                    double ref = 0;
                    for (int j = 0; j < k; j++) ref += wt[(size_t)t * k + j] * dres[((size_t)t * k + j) * D + i];
                    assert_true(fabs(out[(size_t)t * D + i] - ref) < 1e-5);
                }
        }
    }
}

static void test_half_conversion(void **state) {
    (void)state;
    /* every half round-trips; float -> half agrees with the project's converter */
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = lpc_h2f_soft((uint16_t)h);
        assert_true(f == lp_f16_to_f32((uint16_t)h) || (isnan(f) && isnan(lp_f16_to_f32((uint16_t)h))));
        if (!isnan(f)) assert_int_equal(lpc_f2h_soft(f), h);
    }
    for (int i = 0; i < 200000; i++) {
        const float f = frand() * powf(2.0f, (float)(i % 40) - 26.0f);
        assert_int_equal(lpc_f2h_soft(f), lp_f32_to_f16(f));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_conversion),   cmocka_unit_test(test_split_table),
        cmocka_unit_test(test_mlx_decode_exact),  cmocka_unit_test(test_mlx_bf16_choice),
        cmocka_unit_test(test_dequant_matches_to_float),
        cmocka_unit_test(test_quantize),          cmocka_unit_test(test_gemv_quant),
        cmocka_unit_test(test_gemv_float),        cmocka_unit_test(test_gemv_experts),
        cmocka_unit_test(test_gemv_xnorm),    cmocka_unit_test(test_gemv_ynorm),    cmocka_unit_test(test_gemv_glu),
        cmocka_unit_test(test_rmsnorm_swiglu_add), cmocka_unit_test(test_norm_rope),
        cmocka_unit_test(test_heads_fused),       cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention1),
        cmocka_unit_test(test_moe_routing),       cmocka_unit_test(test_mma_fragments),
        cmocka_unit_test(test_mma_kinds),         cmocka_unit_test(test_mma_quant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
