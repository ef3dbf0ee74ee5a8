/* bench_qtype.c — single-thread vec_dot throughput per weight type (GB/s of weight
 * bytes streamed), the number that bounds CPU decode speed. Not built by CMake:
 *   gcc -std=c11 -O2 -march=native -ffp-contract=off -D_DEFAULT_SOURCE -Isrc
 *       src/core/err.c src/quant/[a-z]*.c bench/bench_qtype.c -o /tmp/bench_qtype -lm
 *   /tmp/bench_qtype [rows=8192] [cols=4096]
 * Weights are random bytes with sane f16 scales (every byte pattern is a valid block),
 * so setting up a 30 MB matrix takes milliseconds instead of a reference quantization.
 * Reports a DRAM-sized matrix and a 256 KB (cache-resident) one. Time is the thread's
 * CPU time, so a busy shared machine skews the numbers less than wall time would. */
#include "quant/qblocks.h"
#include "quant/qtype.h"
#include "core/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint32_t rng = 1;
static uint8_t rnd8(void) {
    rng = rng * 1664525u + 1013904223u;
    return (uint8_t)(rng >> 24);
}

/* Random weights; every f16 field gets a small positive scale so no NaN/inf appears. */
static void *random_weights(lp_type t, int64_t rows, int64_t cols) {
    const lp_qtype_traits *tr = lp_qtype(t);
    size_t row_bytes = lp_row_size(t, cols), total = row_bytes * (size_t)rows;
    uint8_t *w = lp_xmalloc(total);
    for (size_t i = 0; i < total; i++) w[i] = rnd8();
    if (!tr->quantized && t != LP_TYPE_F32) { /* f16/bf16: clear the exponent's top bit */
        for (size_t i = 1; i < total; i += 2) w[i] &= 0x3f;
    } else if (t == LP_TYPE_F32) {
        float *f = (float *)w;
        for (size_t i = 0; i < total / 4; i++) f[i] = (float)(rnd8() - 128) / 128.0f;
    } else {
        /* the f16 scales sit at fixed offsets; overwrite those 2-byte fields */
        static const struct { lp_type t; int off[2]; } fields[] = {
            {LP_TYPE_Q4_0, {0, -1}}, {LP_TYPE_Q8_0, {0, -1}}, {LP_TYPE_IQ4_NL, {0, -1}}, {LP_TYPE_Q4_1, {0, 2}},
            {LP_TYPE_Q5_0, {0, -1}}, {LP_TYPE_Q5_1, {0, 2}},  {LP_TYPE_Q2_K, {80, 82}},  {LP_TYPE_Q3_K, {108, -1}},
            {LP_TYPE_Q4_K, {0, 2}},  {LP_TYPE_Q5_K, {0, 2}},  {LP_TYPE_Q6_K, {208, -1}},
        };
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
            if (fields[f].t != t) continue;
            for (size_t b = 0; b < total / tr->block_bytes; b++)
                for (int k = 0; k < 2; k++)
                    if (fields[f].off[k] >= 0) {
                        uint16_t h = lp_f32_to_f16(0.001f * (1 + (rnd8() & 15)));
                        memcpy(w + b * tr->block_bytes + fields[f].off[k], &h, 2);
                    }
        }
        if (t == LP_TYPE_MXFP4)
            for (size_t b = 0; b < total / tr->block_bytes; b++) w[b * tr->block_bytes] = 120;
    }
    return w;
}

static double bench(lp_type t, lp_vec_dot_fn dot, int64_t rows, int64_t cols, double min_seconds) {
    const lp_qtype_traits *tr = lp_qtype(t);
    uint8_t *w = random_weights(t, rows, cols);
    float *x = lp_xmalloc((size_t)cols * sizeof(float));
    for (int64_t i = 0; i < cols; i++) x[i] = (float)(rnd8() - 128) / 64.0f;
    lp_type at = tr->vec_dot_type;
    void *act = lp_xmalloc(lp_row_size(at, cols) + 64);
    lp_qtype(at)->from_float(x, act, cols);
    size_t row_bytes = lp_row_size(t, cols);
    volatile float sink = 0;
    for (int64_t r = 0; r < rows; r++) sink += dot(cols, w + r * row_bytes, act); /* warm up */
    int reps = 0;
    double t0 = now(), t1;
    do {
        for (int64_t r = 0; r < rows; r++) sink += dot(cols, w + r * row_bytes, act);
        reps++;
        t1 = now();
    } while (t1 - t0 < min_seconds);
    free(w);
    free(x);
    free(act);
    (void)sink;
    return (double)row_bytes * rows * reps / (t1 - t0) / 1e9;
}

int main(int argc, char **argv) {
    int64_t rows = argc > 1 ? atoll(argv[1]) : 8192, cols = argc > 2 ? atoll(argv[2]) : 4096;
    static const lp_type types[] = {LP_TYPE_F32, LP_TYPE_F16, LP_TYPE_BF16, LP_TYPE_Q8_0, LP_TYPE_Q4_0,
                                    LP_TYPE_Q4_1, LP_TYPE_Q5_0, LP_TYPE_Q5_1, LP_TYPE_IQ4_NL, LP_TYPE_MXFP4,
                                    LP_TYPE_Q2_K, LP_TYPE_Q3_K, LP_TYPE_Q4_K, LP_TYPE_Q5_K, LP_TYPE_Q6_K};
    printf("single-thread vec_dot, GB/s of weights (%lld x %lld matrix | 256 KB in cache) [scalar]\n",
           (long long)rows, (long long)cols);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        lp_type t = types[i];
        const lp_qtype_traits *tr = lp_qtype(t);
        int64_t small_rows = (int64_t)(262144 / lp_row_size(t, cols));
        if (small_rows < 1) small_rows = 1;
        double big = bench(t, tr->vec_dot, rows, cols, 0.5);
        double small = bench(t, tr->vec_dot, small_rows, cols, 0.3);
        double scalar = bench(t, lp_vec_dot_scalar(t), small_rows, cols, 0.2);
        printf("  %-7s %6.2f | %6.2f   [%5.2f]\n", tr->name, big, small, scalar);
    }
    return 0;
}
