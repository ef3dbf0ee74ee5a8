/* simt_emu.h — a tiny CPU emulator of the CUDA features our kernels use, so the
 * kernels in lpc_kernels.cuh can be compiled by a host C++ compiler and checked
 * against CPU references on machines without a GPU (CI, the dev box).
 *
 * Each block runs as one fiber per thread (ucontext), blocks one after another
 * (in grid order, or shuffled: block_order_seed).
 * __syncthreads() parks a fiber until every live thread of the block arrives;
 * warp shuffles exchange values through a per-warp slot array between two warp
 * barriers. `__shared__` becomes `static`: static locals are shared by all the
 * fibers of the block, exactly CUDA's shared memory, because only one block runs
 * at a time. What it cannot show: races, memory-model and performance issues.
 * Host memory stands in for device memory. Only for tests: never in lpcore. */
#ifndef LPC_SIMT_EMU_H
#define LPC_SIMT_EMU_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }

namespace emu {

enum { RUN, BAR, WBAR, DONE };

struct fiber {
    ucontext_t ctx;
    dim3 tid;
    int linear, state;
    unsigned gathers; /* warp_gather calls so far: picks the buffer of the next one */
    std::vector<char> stack;
};

struct block_state {
    std::vector<fiber> th;
    ucontext_t sched;
    dim3 bid, grid, block;
    int cur;
    uint64_t slot[32][32]; /* [warp][lane] shuffle exchange */
    unsigned char wide[2][32][32][32]; /* [buffer][warp][lane] warp_gather exchange */
    std::function<void()> body;
};

inline block_state *&cur_block() {
    static block_state *b;
    return b;
}
inline fiber &me() { return cur_block()->th[cur_block()->cur]; }

inline void park(int state) {
    block_state *b = cur_block();
    fiber &f = b->th[b->cur];
    f.state = state;
    swapcontext(&f.ctx, &b->sched);
}

inline void trampoline() {
    cur_block()->body();
    park(DONE);
}

/* Release a barrier when every live thread (or every live lane of one warp) waits at it. */
inline bool release_barriers(block_state *b) {
    bool any_live = false, all_bar = true;
    for (auto &f : b->th) {
        if (f.state == DONE) continue;
        any_live = true;
        if (f.state != BAR) all_bar = false;
    }
    if (!any_live) return false;
    if (all_bar) {
        for (auto &f : b->th)
            if (f.state == BAR) f.state = RUN;
        return true;
    }
    int n_warps = ((int)b->th.size() + 31) / 32;
    for (int w = 0; w < n_warps; w++) {
        bool has = false, all = true;
        for (int i = w * 32; i < (int)b->th.size() && i < w * 32 + 32; i++) {
            if (b->th[i].state == DONE) continue;
            has = true;
            if (b->th[i].state != WBAR) all = false;
        }
        if (has && all) {
            for (int i = w * 32; i < (int)b->th.size() && i < w * 32 + 32; i++)
                if (b->th[i].state == WBAR) b->th[i].state = RUN;
            return true;
        }
    }
    fprintf(stderr, "simt_emu: deadlock (threads wait at different barriers)\n");
    abort();
}

inline void run_block(block_state *b) {
    for (;;) {
        bool ran = false;
        for (int i = 0; i < (int)b->th.size(); i++) {
            if (b->th[i].state != RUN) continue;
            b->cur = i;
            swapcontext(&b->sched, &b->th[i].ctx);
            ran = true;
        }
        if (!ran && !release_barriers(b)) return;
    }
}

/* Kept out of launch(): getcontext returns twice, which would make the compiler
 * distrust launch()'s loop counters. */
__attribute__((noinline)) inline void start_fibers(block_state *b) {
    const int n = (int)b->th.size();
    for (int i = 0; i < n; i++) {
        fiber &f = b->th[i];
        f.linear = i;
        f.tid = dim3(i % b->block.x, (i / b->block.x) % b->block.y, i / (b->block.x * b->block.y));
        f.state = RUN;
        f.gathers = 0;
        f.stack.resize(256 * 1024);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, trampoline, 0);
    }
    run_block(b);
}

/* Nonzero: launches run their blocks in an order shuffled with this seed (a GPU runs
 * them in any order; kernels where blocks cooperate must not depend on it). */
inline uint64_t &block_order_seed() {
    static uint64_t seed;
    return seed;
}

inline std::vector<dim3> block_order(dim3 grid) {
    std::vector<dim3> order;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) order.push_back(dim3(bx, by, bz));
    uint64_t &s = block_order_seed();
    for (size_t i = order.size(); s && i > 1; i--) { /* Fisher-Yates, xorshift */
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const size_t j = (size_t)(s % i);
        const dim3 t = order[i - 1];
        order[i - 1] = order[j], order[j] = t;
    }
    return order;
}

inline void launch(dim3 grid, dim3 block, std::function<void()> body) {
    block_state b;
    b.grid = grid;
    b.block = block;
    b.body = body;
    b.th.resize(block.x * block.y * block.z);
    cur_block() = &b;
    for (const dim3 &bid : block_order(grid)) {
        b.bid = bid;
        start_fibers(&b);
    }
    cur_block() = nullptr;
}

template <class T>
inline T exchange(T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffle of a scalar");
    block_state *b = cur_block();
    fiber &f = me();
    const int warp = f.linear / 32, lane = f.linear % 32;
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    b->slot[warp][lane] = bits;
    park(WBAR);
    T out;
    memcpy(&out, &b->slot[warp][src & 31], sizeof out);
    park(WBAR);
    return out;
}

/* Every lane's v, in lane order, to every lane of the warp: 32 shuffles in one warp
 * barrier (the emulator's mma.sync gathers the fragments it needs with it; a barrier costs
 * ~20 us here, so one per mma instead of a dozen keeps the MMA tests short). Two buffers
 * used in turn: a lane can refill buffer b only after the next call's barrier, which every
 * lane reaches only once done reading b, so one barrier per call suffices. */
template <class T>
inline void warp_gather(const T &v, T (&all)[32]) {
    static_assert(sizeof(T) <= 32, "gather of up to 32 bytes per lane");
    block_state *b = cur_block();
    fiber &f = me();
    const int warp = f.linear / 32, lane = f.linear % 32, buf = f.gathers++ & 1;
    memcpy(b->wide[buf][warp][lane], &v, sizeof v);
    park(WBAR);
    for (int i = 0; i < 32; i++) memcpy(&all[i], b->wide[buf][warp][i], sizeof v);
}

} // namespace emu

#define threadIdx (emu::me().tid)
#define blockIdx (emu::cur_block()->bid)
#define blockDim (emu::cur_block()->block)
#define gridDim (emu::cur_block()->grid)

inline void __syncthreads() { emu::park(emu::BAR); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::park(emu::WBAR); }
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int m) { return emu::exchange(v, (emu::me().linear % 32) ^ m); }
template <class T>
inline T __shfl_sync(unsigned, T v, int src) { return emu::exchange(v, src); }

inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <class T>
inline T __ldg(const T *p) { return *p; }
template <class T>
inline T __ldcg(const T *p) { return *p; }
/* Blocks run one after another, each to completion: memory is always coherent, and an
 * atomic is a plain read-modify-write. */
inline void __threadfence() {}
template <class T>
inline T atomicAdd(T *p, T v) {
    const T old = *p;
    *p = old + v;
    return old;
}

#define LPC_LAUNCH(kernel, grid, block, stream, ...) emu::launch((grid), (block), [=] { kernel(__VA_ARGS__); })
typedef int lpc_stream;

#endif
