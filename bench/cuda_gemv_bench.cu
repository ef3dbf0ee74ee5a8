/* cuda_gemv_bench.cu — the decode GEMV kernels alone on Qwen3-8B shapes: time per
 * call inside a CUDA graph (as in the decode step), weights rotated over enough
 * copies that L2 (50 MB on an H100) cannot hold them, achieved GB/s, and every
 * variant's output against the production kernel's. A tuning tool for
 * lpc_gemv.cuh: `bench/cuda_device.sh gemv` builds and runs it on the GPU.
 * Standalone (nvcc + the kernel headers), no lpcore. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
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

/* every F16 scale field of plane B set to a small value (random bytes could be inf/NaN) */
__global__ void fix_scales(uint8_t *b, size_t n_blocks, int stride, int n_halves) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_blocks; i += (size_t)gridDim.x * blockDim.x)
        for (int k = 0; k < n_halves; k++) ((uint16_t *)(b + i * stride))[k] = 0x2000; /* 2^-7 */
}

__global__ void fill_x(float *x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = sinf(0.37f * i) * 2.0f;
}

struct variant {
    const char *name;
    void (*launch)(cudaStream_t, const lpc_gemv_args &);
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
    const int bpr = K / T::BLOCK;
    const size_t a_bytes = (size_t)M * bpr * T::A_BYTES, b_bytes = (size_t)M * bpr * T::B_BYTES, bytes = a_bytes + b_bytes;
    const int copies = (int)std::max<size_t>(1, std::min<size_t>(16, ((size_t)400 << 20) / bytes));
    std::vector<uint8_t *> A(copies), B(copies);
    for (int c = 0; c < copies; c++) {
        CK(cudaMalloc(&A[c], a_bytes));
        CK(cudaMalloc(&B[c], b_bytes));
        fill_bytes<<<1024, 256, 0, st>>>(A[c], a_bytes, 17u + c);
        fill_bytes<<<1024, 256, 0, st>>>(B[c], b_bytes, 91u + c);
        fix_scales<<<1024, 256, 0, st>>>(B[c], (size_t)M * bpr, T::B_BYTES, (int)T::TYPE == LPC_Q4_K || (int)T::TYPE == LPC_Q5_K ? 2 : 1);
    }
    float *x, *y;
    CK(cudaMalloc(&x, (size_t)K * 4));
    CK(cudaMalloc(&y, (size_t)M * 4));
    int8_t *xq;
    float *xd, *xs;
    CK(cudaMalloc(&xq, K));
    CK(cudaMalloc(&xd, K / 32 * 4));
    CK(cudaMalloc(&xs, K / 16 * 4));
    fill_x<<<64, 256, 0, st>>>(x, K);
    lpc_q8 q8 = {xq, xd, xs};
    lpc_quantize(st, x, K, q8);
    lpc_gemv_args p;
    memset(&p, 0, sizeof p);
    p.nprob = 1;
    p.M[0] = M;
    p.row0[1] = M;
    p.K = K;
    p.bpr = bpr;
    p.ncols = 1;
    p.xq = q8;
    p.y[0] = y;
    std::vector<float> ref(M), got(M);
    const int iters = (int)std::max<size_t>(20, std::min<size_t>(400, ((size_t)2 << 30) / bytes));
    const std::vector<variant> vs = variants<T>();
    for (int pass = 0; pass < 2; pass++)
    for (const variant &v : vs) {
        if (pass == 1 && &v == &vs[0]) continue; /* the old kernel has no PDL launch */
        lpc_pdl_enabled() = pass == 1 && g_pdl;
        if (pass == 1 && !g_pdl) break;
        /* correctness: copy 0 against the first (production) variant */
        p.a[0] = A[0], p.b[0] = B[0];
        CK(cudaMemsetAsync(y, 0xff, (size_t)M * 4, st));
        v.launch(st, p);
        CK(cudaGetLastError());
        CK(cudaMemcpyAsync(got.data(), y, (size_t)M * 4, cudaMemcpyDeviceToHost, st));
        CK(cudaStreamSynchronize(st));
        if (&v == &vs[0]) ref = got;
        double err = 0, mag = 0;
        for (int i = 0; i < M; i++) err = std::max(err, (double)fabsf(got[i] - ref[i])), mag = std::max(mag, (double)fabsf(ref[i]));
        /* timing: a graph of `iters` calls rotating over the copies */
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        for (int i = 0; i < iters; i++) {
            p.a[0] = A[i % copies], p.b[0] = B[i % copies];
            v.launch(st, p);
        }
        CK(cudaStreamEndCapture(st, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        float best = 1e30f;
        for (int rep = 0; rep < 4; rep++) {
            CK(cudaEventRecord(e0, st));
            CK(cudaGraphLaunch(ge, st));
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            if (rep > 0) best = std::min(best, ms);
        }
        const double us = best * 1000.0 / iters;
        printf("%-5s %6d x %-6d %-12s%s %8.2f us %7.0f GB/s  rel.err %.1e\n", tname, M, K, v.name, pass ? " pdl" : "    ", us, bytes / us / 1e3,
               mag > 0 ? err / mag : err);
        CK(cudaGraphExecDestroy(ge));
        CK(cudaGraphDestroy(g));
        CK(cudaEventDestroy(e0));
        CK(cudaEventDestroy(e1));
    }
    for (int c = 0; c < copies; c++) cudaFree(A[c]), cudaFree(B[c]);
    cudaFree(x), cudaFree(y), cudaFree(xq), cudaFree(xd), cudaFree(xs);
}

int main(void) {
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);
    g_pdl = prop.major >= 9;
    const int shapes[][2] = {{4096, 4096}, {6144, 4096}, {24576, 4096}, {4096, 12288}};
    for (auto &s : shapes) run_shape<lpc_q4_K>("q4_K", s[0], s[1], st);
    for (auto &s : shapes) run_shape<lpc_q6_K>("q6_K", s[0], s[1], st);
    run_shape<lpc_q6_K>("q6_K", 151936, 4096, st);
    for (auto &s : shapes) run_shape<lpc_q8_0>("q8_0", s[0], s[1], st);
    return 0;
}
