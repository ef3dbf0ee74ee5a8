/* cuda_gemv_bench.cu — the matmul kernels of lpc_gemv.cuh / lpc_mma.cuh alone on Qwen3-8B
 * shapes: time per call inside a CUDA graph (as in a decode step), weights rotated over
 * enough copies that L2 (50 MB on an H100) cannot hold them, achieved weight GB/s, and
 * every variant's output against the production kernel's. Two parts:
 *   x1   batch-1 decode: the GEMV variants (`bench/cuda_device.sh gemv`);
 *   mma  8/16/32/64 columns: the GEMV in passes of 8 columns (the reference) against the
 *        int8 MMA kernel with the backend's split-K choice and without splits.
 *   chain  the matmuls of a whole q4_k_m decode step in one graph, against their sum alone.
 * Usage: cuda_gemv_bench [x1|mma|chain] (default x1 and mma). Standalone (nvcc + the kernel
 * headers), no lpcore. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#include "backend/cuda/lpc_kernels.cuh"

#define CK(x)                                                                                   \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) {                                                                \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

__global__ void fill_bytes(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = (uint8_t)h;
    }
}

/* the first n_halves 16-bit fields of each plane-B block (F16 or BF16 scales) set to a
 * small value (random bytes could be inf/NaN) */
__global__ void fix_scales(uint8_t *b, size_t n_blocks, int stride, int n_halves, uint16_t value) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_blocks; i += (size_t)gridDim.x * blockDim.x)
        for (int k = 0; k < n_halves; k++) ((uint16_t *)(b + i * stride))[k] = value;
}

__global__ void fill_x(float *x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = sinf(0.37f * i) * 2.0f;
}

static int g_n_sm;

/* M x K weights of type T in n_copies copies (0: enough that together they exceed L2). */
template <class T>
struct bench_weight {
    int M, K, bpr, copies;
    size_t bytes; /* one copy: planes A + B */
    std::vector<uint8_t *> A, B;
    bench_weight(int m, int k, cudaStream_t st, int n_copies = 0) : M(m), K(k), bpr(k / T::BLOCK) {
        const size_t a_bytes = (size_t)M * bpr * T::A_BYTES, b_bytes = (size_t)M * bpr * T::B_BYTES;
        bytes = a_bytes + b_bytes;
        copies = n_copies > 0 ? n_copies : (int)std::max<size_t>(1, std::min<size_t>(16, ((size_t)400 << 20) / bytes));
        A.resize(copies), B.resize(copies);
        for (int c = 0; c < copies; c++) {
            CK(cudaMalloc(&A[c], a_bytes));
            CK(cudaMalloc(&B[c], b_bytes));
            fill_bytes<<<1024, 256, 0, st>>>(A[c], a_bytes, 17u + c);
            fill_bytes<<<1024, 256, 0, st>>>(B[c], b_bytes, 91u + c);
            if ((int)T::TYPE >= LPC_MLX_BF16_FIRST) /* bf16 scale | bias: both 2^-7 */
                fix_scales<<<1024, 256, 0, st>>>(B[c], (size_t)M * bpr, T::B_BYTES, 2, 0x3c00);
            else /* f16 d (and dmin): 2^-7 */
                fix_scales<<<1024, 256, 0, st>>>(B[c], (size_t)M * bpr, T::B_BYTES,
                                                 (int)T::TYPE == LPC_Q4_K || (int)T::TYPE == LPC_Q5_K ? 2 : 1, 0x2000);
        }
    }
    ~bench_weight() {
        for (int c = 0; c < copies; c++) cudaFree(A[c]), cudaFree(B[c]);
    }
    int iters() const { return (int)std::max<size_t>(20, std::min<size_t>(400, ((size_t)2 << 30) / bytes)); }
};

/* ncols activation columns of K and their int8 shadow, y for M rows. */
struct bench_io {
    float *x = nullptr, *y = nullptr;
    lpc_q8 q8 = {};
    bench_io(int K, int M, int ncols, cudaStream_t st) {
        const size_t n = (size_t)ncols * K;
        CK(cudaMalloc(&x, n * 4));
        CK(cudaMalloc(&y, (size_t)ncols * M * 4));
        CK(cudaMalloc(&q8.q, n));
        CK(cudaMalloc(&q8.d, n / 32 * 4));
        CK(cudaMalloc(&q8.s, n / 16 * 4));
        fill_x<<<64, 256, 0, st>>>(x, (int)n);
        lpc_quantize(st, x, n, q8);
    }
    ~bench_io() { cudaFree(x), cudaFree(y), cudaFree(q8.q), cudaFree(q8.d), cudaFree(q8.s); }
};

template <class T>
static lpc_gemv_args bench_args(const bench_weight<T> &w, const bench_io &io, int ncols) {
    lpc_gemv_args p;
    memset(&p, 0, sizeof p);
    p.nprob = 1;
    p.M[0] = w.M;
    p.row0[1] = w.M;
    p.K = w.K;
    p.bpr = w.bpr;
    p.ncols = ncols;
    p.xq = io.q8;
    p.y[0] = io.y;
    p.a[0] = w.A[0], p.b[0] = w.B[0];
    return p;
}

typedef std::function<void(cudaStream_t, const lpc_gemv_args &)> launch_fn;

/* One call on copy 0 into y (poisoned first), copied back. */
static std::vector<float> run_once(cudaStream_t st, lpc_gemv_args p, size_t n_out, const launch_fn &launch) {
    std::vector<float> out(n_out);
    CK(cudaMemsetAsync(p.y[0], 0xff, n_out * 4, st));
    launch(st, p);
    CK(cudaGetLastError());
    CK(cudaMemcpyAsync(out.data(), p.y[0], n_out * 4, cudaMemcpyDeviceToHost, st));
    CK(cudaStreamSynchronize(st));
    return out;
}

static double rel_err(const std::vector<float> &got, const std::vector<float> &ref) {
    double err = 0, mag = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        err = std::max(err, (double)fabsf(got[i] - ref[i]));
        mag = std::max(mag, (double)fabsf(ref[i]));
    }
    return mag > 0 ? err / mag : err;
}

/* Time per replay (us, best of 4) of a graph recorded by rec. */
static double replay_us(cudaStream_t st, const std::function<void()> &rec) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    rec();
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float best = 1e30f;
    for (int rep = 0; rep < 5; rep++) {
        CK(cudaEventRecord(e0, st));
        CK(cudaGraphLaunch(ge, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (rep > 0) best = std::min(best, ms);
    }
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return best * 1000.0;
}

/* Best time per call (us) of a graph of `iters` calls rotating over the weight copies. */
template <class T>
static double graph_us(cudaStream_t st, const bench_weight<T> &w, lpc_gemv_args p, const launch_fn &launch) {
    const int iters = w.iters();
    return replay_us(st, [&] {
        for (int i = 0; i < iters; i++) {
            p.a[0] = w.A[i % w.copies], p.b[0] = w.B[i % w.copies];
            launch(st, p);
        }
    }) / iters;
}

/* ---- x1: batch-1 GEMV variants ---- */

struct variant {
    const char *name;
    launch_fn launch;
};

template <class T>
static void old_kernel(cudaStream_t st, const lpc_gemv_args &p) {
    lpc_gemv_launch l = {st, p, 0};
    l.go(LPC_GEMV_ROWS, lpc_gemv_q<T, 1>, lpc_gemv_q<T, 2>, lpc_gemv_q<T, 4>, lpc_gemv_q<T, 8>);
}
template <class T, int R, int U, int W>
static void new_kernel(cudaStream_t st, const lpc_gemv_args &p) {
    lpc_gemv1_launch<T, R, U, W>(st, p, 0);
}
/* The production choice of shape for T (lpc_gemv1::launch). */
template <class T>
static void default_kernel(cudaStream_t st, const lpc_gemv_args &p) {
    lpc_gemv1<T>::launch(st, p, 0);
}
static bool g_pdl; /* PDL for the x1 variants of this pass */

template <class T>
static std::vector<variant> variants() {
    return {{"old R2 4w", old_kernel<T>},
            {"x1 R1 U4", new_kernel<T, 1, 4, 8>},
            {"x1 R2 U2", new_kernel<T, 2, 2, 8>},
            {"x1 R2 U4", new_kernel<T, 2, 4, 8>},
            {"x1 default", default_kernel<T>}};
}

template <class T>
static void run_shape(const char *tname, int M, int K, cudaStream_t st) {
    bench_weight<T> w(M, K, st);
    bench_io io(K, M, 1, st);
    const lpc_gemv_args p = bench_args(w, io, 1);
    std::vector<float> ref;
    const std::vector<variant> vs = variants<T>();
    for (int pass = 0; pass < 2; pass++)
        for (const variant &v : vs) {
            if (pass == 1 && &v == &vs[0]) continue; /* the old kernel has no PDL launch */
            lpc_pdl_enabled() = pass == 1 && g_pdl;
            if (pass == 1 && !g_pdl) break;
            /* correctness: copy 0 against the first (production) variant */
            const std::vector<float> got = run_once(st, p, (size_t)M, v.launch);
            if (&v == &vs[0]) ref = got;
            const double us = graph_us(st, w, p, v.launch);
            printf("%-5s %6d x %-6d %-12s%s %8.2f us %7.0f GB/s  rel.err %.1e\n", tname, M, K, v.name, pass ? " pdl" : "    ", us,
                   w.bytes / us / 1e3, rel_err(got, ref));
        }
    lpc_pdl_enabled() = false;
}

/* ---- mma: 8-64 columns, GEMV passes against the MMA kernel ---- */

/* Split-K workspace for the biggest launch of a shape: partials and zeroed counters. */
struct mma_ws {
    float *part = nullptr;
    unsigned *counters = nullptr;
    mma_ws(int M, int ncols, int splits) {
        const int tiles = lpc_mma_tiles(M, ncols);
        CK(cudaMalloc(&part, std::max<size_t>(16, lpc_mma_part_floats(tiles, splits) * 4)));
        CK(cudaMalloc(&counters, (size_t)tiles * 4));
        CK(cudaMemset(counters, 0, (size_t)tiles * 4));
    }
    ~mma_ws() { cudaFree(part), cudaFree(counters); }
};

template <class T>
static void run_batched(const char *tname, int M, int K, int ncols, cudaStream_t st) {
    bench_weight<T> w(M, K, st);
    bench_io io(K, M, ncols, st);
    const lpc_gemv_args p = bench_args(w, io, ncols);
    const int auto_splits = lpc_mma_splits(M, ncols, K, g_n_sm);
    mma_ws ws(M, ncols, auto_splits);
    auto mma = [&](int splits) {
        return [&ws, splits](cudaStream_t s, const lpc_gemv_args &q) {
            const lpc_mma_split sp = {ws.part, ws.counters, splits};
            lpc_mma(s, T::TYPE, q, sp);
        };
    };
    char auto_name[32];
    snprintf(auto_name, sizeof auto_name, "mma split %d", auto_splits);
    const std::vector<variant> vs = {{"gemv x8", [](cudaStream_t s, const lpc_gemv_args &q) { lpc_gemv(s, T::TYPE, q, 0); }},
                                     {auto_name, mma(auto_splits)},
                                     {"mma split 1", mma(1)}};
    std::vector<float> ref;
    double ref_us = 0;
    for (const variant &v : vs) {
        if (&v == &vs[2] && auto_splits == 1) break;
        const std::vector<float> got = run_once(st, p, (size_t)ncols * M, v.launch);
        const double us = graph_us(st, w, p, v.launch);
        if (&v == &vs[0]) ref = got, ref_us = us;
        printf("%-5s %6d x %-6d n=%-3d %-12s %8.2f us %7.0f GB/s  x%.2f  rel.err %.1e\n", tname, M, K, ncols, v.name, us,
               w.bytes / us / 1e3, ref_us / us, rel_err(got, ref));
    }
}


/* ---- chain: the matmuls of a whole decode step, one graph ----
 * Qwen3-8B q4_k_m shapes (36 layers of q+k, v, o, gate/up, down; v and down Q6_K in
 * every other layer, as in half of q4_k_m's layers; the Q6_K lm_head), launched as the
 * backend does (one-wave grid, PDL). Printed: the step's time as a chain, with and
 * without small PDL kernels where heads, attention and SwiGLU run, against the sum of
 * each matmul's time alone (the same launch repeated): the difference is what the
 * boundaries between different kernels cost. */

__global__ void gap_kernel(float *sink) {
    LPC_PDL_ENTRY();
    if (threadIdx.x == 0) sink[blockIdx.x] += 1.0f;
}

struct chain_mat {
    std::shared_ptr<void> weight; /* the bench_weight<T> (one copy) the launch reads */
    size_t bytes;
    lpc_gemv_args p;
    launch_fn launch;
};

template <class T>
static chain_mat chain_alloc(int M, int K, const bench_io &io, cudaStream_t st) {
    auto w = std::make_shared<bench_weight<T>>(M, K, st, 1);
    chain_mat m;
    m.weight = w;
    m.bytes = w->bytes;
    m.p = bench_args(*w, io, 1);
    m.p.per_sm = 8, m.p.n_sm = g_n_sm; /* the backend's default (LP_CUDA_GEMV_BPS) */
    m.launch = [](cudaStream_t s, const lpc_gemv_args &q) { lpc_gemv1<T>::launch(s, q, 0); };
    return m;
}

static void chain(cudaStream_t st) {
    enum { LAYERS = 36, H = 4096, KV = 1024, FF = 12288, VOCAB = 151936 };
    lpc_pdl_enabled() = g_pdl;
    bench_io xh(H, VOCAB, 1, st), xf(FF, H, 1, st);
    float *sink;
    CK(cudaMalloc(&sink, 4096 * 4));
    CK(cudaMemset(sink, 0, 4096 * 4));
    std::vector<chain_mat> mats; /* in step order; kinds[i]: which GEMV of the layer */
    std::vector<int> kinds;
    for (int l = 0; l < LAYERS; l++) {
        const bool six = l % 2 == 0;
        mats.push_back(chain_alloc<lpc_q4_K>(H + KV, H, xh, st)), kinds.push_back(0);
        mats.push_back(six ? chain_alloc<lpc_q6_K>(KV, H, xh, st)
                           : chain_alloc<lpc_q4_K>(KV, H, xh, st)), kinds.push_back(1);
        mats.push_back(chain_alloc<lpc_q4_K>(H, H, xh, st)), kinds.push_back(2);
        mats.push_back(chain_alloc<lpc_q4_K>(2 * FF, H, xh, st)), kinds.push_back(3);
        mats.push_back(six ? chain_alloc<lpc_q6_K>(H, FF, xf, st)
                           : chain_alloc<lpc_q4_K>(H, FF, xf, st)), kinds.push_back(4);
    }
    mats.push_back(chain_alloc<lpc_q6_K>(VOCAB, H, xh, st)), kinds.push_back(5);
    CK(cudaStreamSynchronize(st));
    double bytes = 0;
    for (const chain_mat &m : mats) bytes += (double)m.bytes;
    /* gaps: after v (heads, attention) and after gate/up (SwiGLU), as many blocks as the real kernels */
    auto step = [&](bool gaps) {
        for (size_t i = 0; i < mats.size(); i++) {
            mats[i].launch(st, mats[i].p);
            if (gaps && kinds[i] == 1) {
                LPC_LAUNCH_PDL(gap_kernel, dim3(40), dim3(128), st, sink);
                LPC_LAUNCH_PDL(gap_kernel, dim3(32), dim3(128), st, sink);
            }
            if (gaps && kinds[i] == 3) LPC_LAUNCH_PDL(gap_kernel, dim3(48), dim3(256), st, sink);
        }
    };
    const double plain = replay_us(st, [&] { step(false); }), gapped = replay_us(st, [&] { step(true); });
    /* each matmul alone: the same launch 8 times over consecutive layers' weights (past L2) */
    double alone = 0;
    const char *names[] = {"q+k", "v", "o", "gate/up", "down", "lm_head"};
    double per_kind[6] = {0};
    for (size_t i = 0; i < mats.size(); i++) {
        const int reps = 8;
        const double us = replay_us(st, [&] {
            for (int r = 0; r < reps; r++) {
                size_t j = i;
                if (kinds[i] != 5) j = (i + 5 * 2 * r) % (5 * LAYERS); /* same kind and type, another layer */
                mats[j].launch(st, mats[j].p);
            }
        }) / reps;
        alone += us;
        per_kind[kinds[i]] += us;
    }
    printf("chain: %d matmuls, %.2f GB of weights per step\n", (int)mats.size(), bytes / 1e9);
    for (int k = 0; k < 6; k++) printf("  alone %-8s %8.1f us per step\n", names[k], per_kind[k]);
    printf("  sum alone        %8.1f us  %6.0f GB/s  %6.1f tok/s\n", alone, bytes / alone / 1e3, 1e6 / alone);
    printf("  chain            %8.1f us  %6.0f GB/s  %6.1f tok/s\n", plain, bytes / plain / 1e3, 1e6 / plain);
    printf("  chain + gaps     %8.1f us  %6.0f GB/s  %6.1f tok/s\n", gapped, bytes / gapped / 1e3, 1e6 / gapped);
    CK(cudaFree(sink));
    lpc_pdl_enabled() = false;
}

static const int shapes[][2] = {{4096, 4096}, {6144, 4096}, {24576, 4096}, {4096, 12288}};

template <class T>
static void x1_type(const char *tname, cudaStream_t st) {
    for (auto &s : shapes) run_shape<T>(tname, s[0], s[1], st);
}

template <class T>
static void mma_type(const char *tname, cudaStream_t st) {
    for (int n : {8, 16, 32, 64}) /* 8: one GEMV pass, where the backend switches (LP_CUDA_GEMV_MAX_N) */
        for (auto &s : shapes) run_batched<T>(tname, s[0], s[1], n, st);
}

int main(int argc, char **argv) {
    const char *part = argc > 1 ? argv[1] : "all";
    const bool x1 = !strcmp(part, "all") || !strcmp(part, "x1"), mma = !strcmp(part, "all") || !strcmp(part, "mma");
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);
    g_pdl = prop.major >= 9;
    g_n_sm = prop.multiProcessorCount;
    if (!strcmp(part, "chain")) chain(st);
    if (x1) {
        x1_type<lpc_q4_K>("q4_K", st);
        x1_type<lpc_q6_K>("q6_K", st);
        run_shape<lpc_q6_K>("q6_K", 151936, 4096, st);
        x1_type<lpc_q8_0>("q8_0", st);
    }
    if (mma) {
        printf("mma: time per call, weight GB/s, speed-up over the GEMV in passes of 8 columns, max error against it\n");
        mma_type<lpc_q4_K>("q4_K", st);
        mma_type<lpc_q6_K>("q6_K", st);
        mma_type<lpc_q8_0>("q8_0", st);
        mma_type<lpc_mlx<4, 64, 1>>("mlx4", st);
    }
    return 0;
}
