/* lpc_tc.cuh — tensor-core fragments: the mma.sync wrappers (int8 for the batched matmul,
 * f16 with f32 accumulation for attention), ldmatrix (shared memory -> fragments, plain
 * and transposed) and movmatrix (a fragment transposed in registers). PTX on the GPU (the
 * callers run on sm_80+; older targets trap), an emulation on the CPU emulator that reads
 * the operands where the PTX ISA's fragment layouts put them (exact for int8; the f16 mma
 * sums its exact products in float, in an order of its own, so callers' tests bound it). */
#ifndef LPC_TC_CUH
#define LPC_TC_CUH

#include "lpc_port.cuh"

/* ---- mma.sync wrappers: D = A . B + C, A 16 x K row-major s8, B K x 8 column-major s8 ----
 *
 * Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 / m16n8k32", integer types), with
 * g = lane / 4 and t = lane % 4: a[2h] holds A[g][16h + 4t .. +3], a[2h + 1] holds
 * A[g + 8][16h + 4t .. +3] (h = 0 for k16, 0..1 for k32); b[h] holds B[16h + 4t .. +3][g];
 * c[0], c[1] are D[g][2t], D[g][2t + 1]; c[2], c[3] the same columns of row g + 8. */

#ifdef LPC_EMU
/* The emulator: each lane gathers every lane's fragments (one warp-wide exchange), then
 * computes its four outputs D[row][col] (row = g + 8 (i / 2), col = 2t + i % 2) as
 * dot(all, row, col, c[i]), reading A and B where the fragment layout puts them. */
template <int NA, int NB, class C, class Dot>
inline void lpc_mma_emu(C (&c)[4], const uint32_t (&a)[NA], const uint32_t (&b)[NB], Dot dot) {
    struct frag {
        uint32_t a[NA], b[NB];
    } mine, all[32];
    memcpy(mine.a, a, sizeof mine.a);
    memcpy(mine.b, b, sizeof mine.b);
    emu::warp_gather(mine, all);
    const int lane = emu::me().linear % 32, g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; i++) c[i] = dot(all, g + 8 * (i / 2), 2 * t + i % 2, c[i]);
}

/* int8: H = number of 16-deep halves (1: k16, 2: k32); A[row][16h + 4tq ..] is in lane
 * 4 (row % 8) + tq, B[16h + 4tq ..][col] in lane 4 col + tq. */
template <int H>
inline void lpc_mma_emu_s8(int (&c)[4], const uint32_t (&a)[2 * H], const uint32_t (&b)[H]) {
    lpc_mma_emu(c, a, b, [](const auto *all, int row, int col, int sum) {
        for (int h = 0; h < H; h++)
            for (int tq = 0; tq < 4; tq++)
                sum = __dp4a((int)all[4 * (row % 8) + tq].a[2 * h + row / 8], (int)all[4 * col + tq].b[h], sum);
        return sum;
    });
}
#endif

__device__ __forceinline__ void lpc_mma_s8_16x8x16(int (&c)[4], const uint32_t (&a)[2], uint32_t b) {
#if defined(LPC_EMU)
    const uint32_t bb[1] = {b};
    lpc_mma_emu_s8<1>(c, a, bb);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(b));
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}

__device__ __forceinline__ void lpc_mma_s8_16x8x32(int (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(LPC_EMU)
    lpc_mma_emu_s8<2>(c, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}

/* The k-depth the kernel steps by (16 or 32): one wrapper per depth, same arguments. */
__device__ __forceinline__ void lpc_mma_s8(int (&c)[4], const uint32_t (&a)[2], const uint32_t (&b)[1]) {
    lpc_mma_s8_16x8x16(c, a, b[0]);
}
__device__ __forceinline__ void lpc_mma_s8(int (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    lpc_mma_s8_16x8x32(c, a, b);
}

/* ---- f16: D (f32) = A . B + C at m16n8k16 ----
 *
 * Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), g =
 * lane / 4, t = lane % 4, two halves per register, the lower half first: a[0] holds
 * A[g][2t .. 2t+1], a[1] A[g + 8][2t ..], a[2] A[g][2t + 8 ..], a[3] A[g + 8][2t + 8 ..];
 * b[0] holds B[2t .. 2t+1][g], b[1] B[2t + 8 ..][g]; c as for int8 (c[0], c[1] = D[g][2t ..],
 * c[2], c[3] = D[g + 8][2t ..]). An 8 x 8 block of halves held one register per lane, lane
 * 4r + c/2 holding row r's columns c, c+1, is what ldmatrix loads and movmatrix takes. */

#ifdef LPC_EMU
inline float lpc_tc_half(uint32_t reg, int hi) { return lpc_h2f((uint16_t)(hi ? reg >> 16 : reg & 0xffff)); }
#endif

__device__ __forceinline__ void lpc_mma_f16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(LPC_EMU)
    /* A[row][k]: register row / 8 + 2 (k / 8) of lane 4 (row % 8) + (k % 8) / 2; B[k][col]:
     * register k / 8 of lane 4 col + (k % 8) / 2; half k % 2 of each */
    lpc_mma_emu(c, a, b, [](const auto *all, int row, int col, float sum) {
        for (int k = 0; k < 16; k++)
            sum += lpc_tc_half(all[4 * (row % 8) + (k % 8) / 2].a[row / 8 + 2 * (k / 8)], k % 2) *
                   lpc_tc_half(all[4 * col + (k % 8) / 2].b[k / 8], k % 2);
        return sum;
    });
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}

/* Four 8 x 8 blocks of halves from shared memory: lane l gives the address of row l % 8
 * of block l / 8 (16 bytes, 16-byte aligned); r[i] is block i in the layout above, or with
 * TRANS its transpose (lane 4r + c/2 gets column r's rows c, c+1). */
template <bool TRANS>
__device__ __forceinline__ void lpc_ldsm4(uint32_t (&r)[4], const void *row) {
#if defined(LPC_EMU)
    const uint8_t *mine = (const uint8_t *)row, *all[32];
    emu::warp_gather(mine, all);
    const int lane = emu::me().linear % 32, g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; i++) {
        if (!TRANS) {
            memcpy(&r[i], all[8 * i + g] + 4 * t, 4);
        } else {
            uint16_t lo, hi;
            memcpy(&lo, all[8 * i + 2 * t] + 2 * g, 2);
            memcpy(&hi, all[8 * i + 2 * t + 1] + 2 * g, 2);
            r[i] = (uint32_t)lo | (uint32_t)hi << 16;
        }
    }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(row);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(s));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(s));
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}

/* The transpose of an 8 x 8 block of halves held one register per lane. */
__device__ __forceinline__ uint32_t lpc_movm_trans(uint32_t x) {
#if defined(LPC_EMU)
    uint32_t all[32];
    emu::warp_gather(x, all);
    const int lane = emu::me().linear % 32, g = lane / 4, t = lane % 4;
    /* T[g][2t] = M[2t][g]: lane 4 (2t) + g / 2, half g % 2 */
    const uint32_t lo = all[8 * t + g / 2] >> (16 * (g % 2)) & 0xffff, hi = all[8 * t + 4 + g / 2] >> (16 * (g % 2)) & 0xffff;
    return lo | hi << 16;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t y;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
    return y;
#else
    (void)x;
#if defined(__CUDA_ARCH__)
    __trap();
#endif
    return 0;
#endif
}

/* The two halves at p (4-byte aligned) as one register. */
__device__ __forceinline__ uint32_t lpc_h2_at(const uint16_t *p) {
#ifdef LPC_EMU
    uint32_t r;
    memcpy(&r, p, 4);
    return r;
#else
    return *(const uint32_t *)p;
#endif
}

/* Two floats as halves in one register, lo in the lower half (round to nearest). */
__device__ __forceinline__ uint32_t lpc_pack_h2(float lo, float hi) {
    return (uint32_t)lpc_f2h(lo) | (uint32_t)lpc_f2h(hi) << 16;
}

#endif
