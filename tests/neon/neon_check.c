/* neon_check.c — owns the check of the AArch64 NEON kernels. scripts/test-neon.sh builds
 * it for aarch64 (with and without dotprod) and runs it under qemu-aarch64.
 *
 * Checked: every NEON vec_dot against the scalar reference (== where all the float
 * arithmetic is exact, so the integer parts are compared exactly; elsewhere within a
 * bound for summation order), the x4 kernels against vec_dot bit for bit, the Q8_0
 * activation quantizer against lp_from_float_act byte for byte, and the CPU backend's
 * NEON paths (dot, axpy, float and quantized matmul, attention) against double-precision
 * references and batch invariance. The harness is its own (cmocka would need an arm64
 * build); the exit status is 1 on any failure. Inputs are finite (NaN/inf order
 * differently by design). */
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_internal.h"
#include "core/err.h"
#include "quant/qblocks.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !LP_QUANT_NEON
#error "neon_check is built for AArch64 targets with NEON"
#endif

/* ---- harness ---- */

static long n_checks, n_failed, n_exact;

#define CHECK(cond, ...)                                             \
    do {                                                             \
        n_checks++;                                                  \
        if (!(cond) && n_failed++ < 25) {                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);     \
            fprintf(stderr, __VA_ARGS__);                            \
            fputc('\n', stderr);                                     \
        }                                                            \
    } while (0)

/* A section's summary line; counts since `mark` (taken with section_start). */
typedef struct {
    long checks, exact;
} section_mark;

static section_mark section_start(void) { return (section_mark){n_checks, n_exact}; }

static void section_done(const char *name, section_mark m) {
    printf("  %-40s %7ld checks", name, n_checks - m.checks);
    if (n_exact > m.exact) printf(" (%ld exact ==)", n_exact - m.exact);
    putchar('\n');
}

/* ---- random data (xorshift64*, fixed seed: failures reproduce) ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}
static float uni(void) { return (float)(rnd() >> 40) / 16777216.0f; } /* [0, 1) */
static int irange(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }
static float gauss(void) { return sqrtf(-2.0f * logf(uni() + 1e-7f)) * cosf(6.2831853f * uni()); }
static float signed_pow2(int lo, int hi) { return (rnd() & 1 ? -1.0f : 1.0f) * ldexpf(1.0f, irange(lo, hi)); }

/* ---- the kernels under test ---- */

typedef struct {
    lp_type type;
    lp_vec_dot_fn neon;
} dot_kernel;

static const dot_kernel kernels[] = {
    {LP_TYPE_F32, lp_vec_dot_f32_neon},     {LP_TYPE_F16, lp_vec_dot_f16_neon},   {LP_TYPE_BF16, lp_vec_dot_bf16_neon},
    {LP_TYPE_Q8_0, lp_vec_dot_q8_0_neon},   {LP_TYPE_Q4_0, lp_vec_dot_q4_0_neon}, {LP_TYPE_Q4_1, lp_vec_dot_q4_1_neon},
    {LP_TYPE_Q5_0, lp_vec_dot_q5_0_neon},   {LP_TYPE_Q5_1, lp_vec_dot_q5_1_neon}, {LP_TYPE_IQ4_NL, lp_vec_dot_iq4_nl_neon},
    {LP_TYPE_MXFP4, lp_vec_dot_mxfp4_neon}, {LP_TYPE_Q2_K, lp_vec_dot_q2_K_neon}, {LP_TYPE_Q3_K, lp_vec_dot_q3_K_neon},
    {LP_TYPE_Q4_K, lp_vec_dot_q4_K_neon},   {LP_TYPE_Q5_K, lp_vec_dot_q5_K_neon}, {LP_TYPE_Q6_K, lp_vec_dot_q6_K_neon},
};
#define N_KERNELS (sizeof kernels / sizeof kernels[0])

static const char *name_of(lp_type t) { return lp_qtype(t)->name; }

/* ---- bounds: sum of |terms| a kernel adds up, from the decoded blocks ---- */

static lp_dec32_fn dec32_of(lp_type t) {
    switch (t) {
    case LP_TYPE_Q4_0: return lp_decode_q4_0;
    case LP_TYPE_Q4_1: return lp_decode_q4_1;
    case LP_TYPE_Q5_0: return lp_decode_q5_0;
    case LP_TYPE_Q5_1: return lp_decode_q5_1;
    case LP_TYPE_Q8_0: return lp_decode_q8_0;
    case LP_TYPE_IQ4_NL: return lp_decode_iq4_nl;
    case LP_TYPE_MXFP4: return lp_decode_mxfp4;
    default: return NULL;
    }
}

static lp_dec256_fn dec256_of(lp_type t) {
    switch (t) {
    case LP_TYPE_Q2_K: return lp_decode_q2_K;
    case LP_TYPE_Q3_K: return lp_decode_q3_K;
    case LP_TYPE_Q4_K: return lp_decode_q4_K;
    case LP_TYPE_Q5_K: return lp_decode_q5_K;
    case LP_TYPE_Q6_K: return lp_decode_q6_K;
    default: return NULL;
    }
}

static double magnitude_float(lp_type t, int64_t n, const void *w, const float *x) {
    float *wd = lp_xmalloc((size_t)(n ? n : 1) * sizeof(float));
    lp_qtype(t)->to_float(w, wd, n);
    double m = 0;
    for (int64_t i = 0; i < n; i++) m += fabs((double)wd[i] * x[i]);
    free(wd);
    return m;
}

static double magnitude32(lp_type t, int64_t n, const void *w, const lp_block_q8_0 *xb) {
    const size_t bytes = lp_qtype(t)->block_bytes;
    double m = 0;
    for (int64_t i = 0; i < n / LP_QK; i++) {
        lp_dec32 b;
        dec32_of(t)((const uint8_t *)w + i * bytes, &b);
        double qx = 0, ax = 0, dx = lp_half_to_float(xb[i].d);
        for (int j = 0; j < LP_QK; j++) qx += abs(b.q[j] * xb[i].qs[j]), ax += abs(xb[i].qs[j]);
        m += fabs(b.d * dx) * qx + (b.affine ? fabs(b.m * dx) * ax : 0);
    }
    return m;
}

static double magnitude256(lp_type t, int64_t n, const void *w, const lp_block_q8_K *xb) {
    const size_t bytes = lp_qtype(t)->block_bytes;
    double m = 0;
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        lp_dec256 b;
        dec256_of(t)((const uint8_t *)w + i * bytes, &b);
        double s = 0, mins = 0;
        for (int e = 0; e < LP_QK_K; e++) s += abs(b.scale[e / b.sub] * b.q[e] * xb[i].qs[e]);
        for (int k = 0; k < 16; k++) mins += abs(b.min[k * 16 / b.sub] * xb[i].bsums[k]);
        m += fabs(xb[i].d) * (fabs(b.d) * s + fabs(b.dmin) * mins);
    }
    return m;
}

static double magnitude(lp_type t, int64_t n, const void *w, const void *x) {
    if (!lp_qtype(t)->quantized) return magnitude_float(t, n, w, x);
    return dec32_of(t) ? magnitude32(t, n, w, x) : magnitude256(t, n, w, x);
}

/* NEON vs scalar for one row. Where every term is an integer below 2^23 (exact inputs)
 * any summation order gives the same float: require ==. Elsewhere each side is off the
 * exact sum by at most ~(terms added + a few) * 2^-24 * magnitude. */
static void check_dot(const dot_kernel *k, int64_t n, const void *w, const void *x, bool exact_inputs, const char *what) {
    const float got = k->neon(n, w, x), want = lp_vec_dot_scalar(k->type)(n, w, x);
    const double m = magnitude(k->type, n, w, x);
    if (exact_inputs && m < 0x1p23) {
        n_exact++;
        CHECK(got == want, "%s %s n=%lld: neon %.9g scalar %.9g (exact case)", name_of(k->type), what, (long long)n, got,
              want);
        return;
    }
    const double terms = lp_qtype(k->type)->quantized ? (double)(n / lp_qtype(k->type)->block_size) : n / 16.0 + 16;
    const double tol = (2 * terms + 32) * 0x1p-24 * m;
    CHECK(fabs((double)got - want) <= tol, "%s %s n=%lld: neon %.9g scalar %.9g (tol %.3g)", name_of(k->type), what,
          (long long)n, got, want, tol);
}

/* ---- inputs ---- */

/* Float rows of a given character; mode 1 gives small integers (exact dot products). */
enum { F_GAUSS, F_SMALL_INT, F_EDGE, F_SKEWED, F_OUTLIERS, F_ZERO, F_TINY, F_LARGE, F_MODES };

static float edge_value(void) {
    static const float v[] = {0.0f, -0.0f, 1e-30f, -3e-6f, 6e-8f, 65504.0f, -60000.0f, 1.0f, -1.0f, 0.5f};
    return rnd() & 1 ? v[rnd() % (sizeof v / sizeof v[0])] : gauss();
}

static float float_value(int mode, int64_t i) {
    switch (mode) {
    case F_SMALL_INT: return (float)irange(-8, 8);
    case F_EDGE: return edge_value();
    case F_SKEWED: return gauss() * 0.02f + 0.5f;
    case F_OUTLIERS: return gauss() * (i % 97 == 0 ? 40.0f : 1.0f);
    case F_ZERO: return (i / 32) % 3 ? 0.0f : gauss(); /* whole zero blocks */
    case F_TINY: return gauss() * 1e-6f;
    case F_LARGE: return gauss() * 1e3f;
    default: return gauss();
    }
}

static void fill_floats(float *x, int64_t n, int mode) {
    for (int64_t i = 0; i < n; i++) x[i] = float_value(mode, i);
}

/* A row of type t from floats by the reference quantizer / conversion. */
static void *encode(lp_type t, const float *x, int64_t n) {
    void *q = lp_xmalloc(lp_row_size(t, n) + 64);
    lp_qtype(t)->from_float(x, q, n);
    return q;
}

/* Where a weight type keeps its f16 scales: d and (m or dmin, else -1). */
typedef struct {
    int d, m;
} scale_offsets;

static scale_offsets scale_fields(lp_type t) {
    switch (t) {
    case LP_TYPE_Q4_1: return (scale_offsets){offsetof(lp_block_q4_1, d), offsetof(lp_block_q4_1, m)};
    case LP_TYPE_Q5_1: return (scale_offsets){offsetof(lp_block_q5_1, d), offsetof(lp_block_q5_1, m)};
    case LP_TYPE_Q2_K: return (scale_offsets){offsetof(lp_block_q2_K, d), offsetof(lp_block_q2_K, dmin)};
    case LP_TYPE_Q3_K: return (scale_offsets){offsetof(lp_block_q3_K, d), -1};
    case LP_TYPE_Q4_K: return (scale_offsets){offsetof(lp_block_q4_K, d), offsetof(lp_block_q4_K, dmin)};
    case LP_TYPE_Q5_K: return (scale_offsets){offsetof(lp_block_q5_K, d), offsetof(lp_block_q5_K, dmin)};
    case LP_TYPE_Q6_K: return (scale_offsets){offsetof(lp_block_q6_K, d), -1};
    default: return (scale_offsets){0, -1}; /* Q8_0, Q4_0, Q5_0, IQ4_NL: d first; MXFP4: e */
    }
}

static void put_f16(uint8_t *p, float v) {
    uint16_t h = lp_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* Random block bytes (every code and scale bit pattern), then finite scales: 1 (and
 * small integer m) when exact, else random powers of two in a range that cannot overflow. */
static void *raw_weights(lp_type t, int64_t n, bool exact) {
    const size_t bytes = lp_qtype(t)->block_bytes, nb = (size_t)(n / lp_qtype(t)->block_size);
    uint8_t *w = lp_xmalloc(nb * bytes + 64);
    for (size_t i = 0; i < nb * bytes; i++) w[i] = (uint8_t)rnd();
    const scale_offsets f = scale_fields(t);
    for (size_t i = 0; i < nb; i++) {
        uint8_t *b = w + i * bytes;
        if (t == LP_TYPE_MXFP4) {
            b[0] = exact ? 128 : (uint8_t)irange(118, 138); /* 2^(e-128) */
            continue;
        }
        put_f16(b + f.d, exact ? 1.0f : signed_pow2(-10, 2) * (1.0f + uni()));
        if (f.m >= 0) put_f16(b + f.m, exact ? (float)irange(-4, 4) : signed_pow2(-10, 2) * (1.0f + uni()));
    }
    return w;
}

/* Random activation blocks with codes in [-amp, amp] (amp 128: the full i8 range). */
static void *raw_acts(lp_type at, int64_t n, int amp, bool exact) {
    void *x = lp_xmalloc(lp_row_size(at, n) + 64);
    if (at == LP_TYPE_Q8_0) {
        lp_block_q8_0 *b = x;
        for (int64_t i = 0; i < n / LP_QK; i++) {
            b[i].d = lp_f32_to_f16(exact ? 1.0f : signed_pow2(-8, 0) * (1.0f + uni()));
            for (int j = 0; j < LP_QK; j++) b[i].qs[j] = (int8_t)irange(-amp, amp < 128 ? amp : 127);
        }
        return x;
    }
    lp_block_q8_K *b = x;
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        b[i].d = exact ? 1.0f : signed_pow2(-10, 0) * (1.0f + uni());
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int e = 16 * j; e < 16 * j + 16; e++) sum += b[i].qs[e] = (int8_t)irange(-amp, amp < 128 ? amp : 127);
            b[i].bsums[j] = (int16_t)sum;
        }
    }
    return x;
}

/* ---- vec_dot ---- */

static void check_quant_row(const dot_kernel *k, int64_t n) {
    const lp_type at = lp_qtype(k->type)->vec_dot_type;
    float *wf = lp_xmalloc((size_t)n * sizeof(float) + 4), *xf = lp_xmalloc((size_t)n * sizeof(float) + 4);
    for (int mode = 0; mode < F_MODES; mode++) { /* what the runtime sees: reference-quantized rows */
        fill_floats(wf, n, mode), fill_floats(xf, n, (mode + 3) % F_MODES);
        void *w = encode(k->type, wf, n), *x = encode(at, xf, n);
        check_dot(k, n, w, x, false, "quantized");
        free(w), free(x);
    }
    for (int trial = 0; trial < 12; trial++) { /* every bit pattern; odd trials: integer scales */
        const bool exact = trial & 1;
        void *w = raw_weights(k->type, n, exact), *x = raw_acts(at, n, exact ? irange(1, 4) : 128, exact);
        check_dot(k, n, w, x, exact, exact ? "raw exact" : "raw");
        free(w), free(x);
    }
    free(wf), free(xf);
}

static void check_float_row(const dot_kernel *k, int64_t n) {
    float *wf = lp_xmalloc((size_t)n * sizeof(float) + 4), *xf = lp_xmalloc((size_t)n * sizeof(float) + 4);
    for (int mode = 0; mode < F_MODES; mode++) {
        fill_floats(wf, n, mode), fill_floats(xf, n, mode == F_SMALL_INT ? F_SMALL_INT : F_GAUSS);
        void *w = encode(k->type, wf, n);
        check_dot(k, n, w, xf, mode == F_SMALL_INT, "float");
        free(w);
    }
    free(wf), free(xf);
}

static void test_vec_dot(void) {
    static const int64_t sizes32[] = {0, 32, 64, 96, 160, 512, 2880, 4096};
    static const int64_t sizes256[] = {0, 256, 512, 768, 2048, 4096};
    static const int64_t sizes_float[] = {127, 128, 129, 1000, 4099};
    for (size_t i = 0; i < N_KERNELS; i++) {
        const dot_kernel *k = &kernels[i];
        const section_mark before = section_start();
        CHECK(lp_qtype(k->type)->vec_dot == k->neon, "%s: the traits table does not use the NEON vec_dot", name_of(k->type));
        if (!lp_qtype(k->type)->quantized) {
            for (int64_t n = 0; n <= 70; n++) check_float_row(k, n);
            for (size_t s = 0; s < sizeof sizes_float / sizeof sizes_float[0]; s++) check_float_row(k, sizes_float[s]);
        } else if (lp_qtype(k->type)->block_size == LP_QK) {
            for (size_t s = 0; s < sizeof sizes32 / sizeof sizes32[0]; s++) check_quant_row(k, sizes32[s]);
        } else {
            for (size_t s = 0; s < sizeof sizes256 / sizeof sizes256[0]; s++) check_quant_row(k, sizes256[s]);
        }
        char label[64];
        snprintf(label, sizeof label, "vec_dot %s", name_of(k->type));
        section_done(label, before);
    }
}

/* ---- x4: bit-identical to vec_dot, activation rows any stride apart ---- */

static void check_x4(lp_type t, lp_vec_dot_x4_fn x4, int64_t n) {
    const lp_type at = lp_qtype(t)->vec_dot_type;
    const size_t row = lp_row_size(at, n), stride = row + 4 * (size_t)irange(0, 16);
    float *f = lp_xmalloc((size_t)n * sizeof(float));
    uint8_t *acts = lp_xmalloc(4 * stride);
    for (int tok = 0; tok < 4; tok++) {
        fill_floats(f, n, (tok + 2) % F_MODES);
        lp_qtype(at)->from_float(f, acts + tok * stride, n);
    }
    fill_floats(f, n, irange(0, F_MODES - 1));
    void *w = encode(t, f, n);
    float out[4];
    x4(n, w, acts, stride, out);
    for (int tok = 0; tok < 4; tok++) {
        const float one = lp_qtype(t)->vec_dot(n, w, acts + tok * stride);
        CHECK(memcmp(&one, &out[tok], sizeof one) == 0, "%s x4 n=%lld token %d: %.9g vs vec_dot %.9g", name_of(t),
              (long long)n, tok, out[tok], one);
    }
    free(w), free(f), free(acts);
}

static void test_x4(void) {
    const section_mark before = section_start();
    static const lp_type expected[] = {LP_TYPE_Q8_0, LP_TYPE_Q4_K, LP_TYPE_Q5_K, LP_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        CHECK(lp_vec_dot_x4_neon(expected[i]) != NULL, "%s has no NEON x4 kernel", name_of(expected[i]));
    for (size_t i = 0; i < N_KERNELS; i++) {
        const lp_type t = kernels[i].type;
        lp_vec_dot_x4_fn x4 = lp_vec_dot_x4_neon(t);
        if (!x4) continue;
        const int64_t bs = lp_qtype(t)->block_size;
        for (int trial = 0; trial < 6; trial++) check_x4(t, x4, bs * irange(1, 16));
    }
    section_done("x4 kernels == vec_dot", before);
}

/* ---- Q8_0 activation quantizer: byte-identical to lp_from_float_act ---- */

enum { B_GAUSS, B_TIES, B_NEAR_TIES, B_ZERO, B_NEG_ZERO, B_TINY, B_ID_OVERFLOW, B_HUGE, B_SPIKE, B_MODES };

/* One 32-element block. B_TIES: amax = 127 * 2^p makes id = 2^-p exact, so (k + 0.5) *
 * 2^p lands exactly on a rounding tie; B_NEAR_TIES puts (k + 0.5) * (amax / 127) next to
 * one for any amax, where id = 127/amax and 1/d can round apart. B_ID_OVERFLOW: amax so small that 127/amax is inf
 * (x86 turns x * inf and 0 * inf into code -128). */
static void fill_block(float *x, int mode) {
    const float p2 = ldexpf(1.0f, irange(-10, 10)), scale = ldexpf(1.0f, irange(-20, 20)), amax = scale * (1 + uni());
    for (int j = 0; j < LP_QK; j++) {
        switch (mode) {
        case B_TIES: x[j] = j == 0 ? (rnd() & 1 ? -127.0f : 127.0f) * p2 : ((float)irange(-127, 126) + 0.5f) * p2; break;
        case B_NEAR_TIES: x[j] = j == 0 ? amax : ((float)irange(-127, 126) + 0.5f) * (amax / 127.f); break;
        case B_ZERO: x[j] = 0.0f; break;
        case B_NEG_ZERO: x[j] = rnd() & 1 ? -0.0f : 0.0f; break;
        case B_TINY: x[j] = gauss() * 1e-30f; break;
        case B_ID_OVERFLOW: x[j] = j % 4 ? gauss() * 1e-39f : 0.0f; break;
        case B_HUGE: x[j] = gauss() * 1e37f; break;
        case B_SPIKE: x[j] = j == 7 ? gauss() * scale : 0.0f; break;
        default: x[j] = gauss() * scale; break;
        }
    }
}

static void test_quantizer(void) {
    const section_mark before = section_start();
    const lp_from_float_fn fast = lp_from_float_fast_neon(LP_TYPE_Q8_0), ref = lp_from_float_act(LP_TYPE_Q8_0);
    CHECK(fast != ref, "q8_0 has no NEON quantizer");
    CHECK(lp_from_float_fast_neon(LP_TYPE_Q8_K) == lp_from_float_act(LP_TYPE_Q8_K), "q8_K: expected lp_from_float_act's");
    enum { N = 4096 };
    static float x[N];
    static uint8_t a[N / LP_QK * sizeof(lp_block_q8_0)], b[sizeof a];
    for (int trial = 0; trial < 24; trial++) {
        for (int blk = 0; blk < N / LP_QK; blk++) fill_block(x + blk * LP_QK, (blk + trial) % B_MODES);
        const int64_t n = LP_QK * irange(1, N / LP_QK);
        fast(x, a, n), ref(x, b, n);
        const size_t bb = sizeof(lp_block_q8_0);
        for (int64_t blk = 0; blk < n / LP_QK; blk++)
            CHECK(memcmp(a + blk * bb, b + blk * bb, bb) == 0, "q8_0 quantizer: block %lld (mode %d) differs",
                  (long long)blk, (int)((blk + trial) % B_MODES));
    }
    section_done("q8_0 activation quantizer == act", before);
}

/* ---- CPU backend: f32 helpers ---- */

static void test_dot_axpy(void) {
    const section_mark before = section_start();
    static float a[1100], b[1100], y[1100], y0[1100];
    for (int n = 0; n <= 1030; n += n < 70 ? 1 : 320) {
        for (int exact = 0; exact < 2; exact++) {
            double want = 0, mag = 0;
            for (int i = 0; i < n; i++) {
                a[i] = exact ? (float)irange(-8, 8) : gauss(), b[i] = exact ? (float)irange(-8, 8) : gauss();
                want += (double)a[i] * b[i], mag += fabs((double)a[i] * b[i]);
            }
            const float got = cpu_dot_f32(a, b, n);
            CHECK(exact ? got == (float)want : fabs(got - want) <= (n / 4.0 + 16) * 0x1p-23 * mag,
                  "cpu_dot_f32 n=%d: %.9g vs %.9g", n, got, want);
            const float s = exact ? (float)irange(-4, 4) : gauss();
            for (int i = 0; i < n; i++) y0[i] = y[i] = b[i];
            cpu_axpy_f32(s, a, y, n);
            for (int i = 0; i < n; i++) { /* fused or not: within one rounding of the exact value */
                const double e = (double)y0[i] + (double)s * a[i];
                CHECK(exact ? y[i] == (float)e : fabs(y[i] - e) <= 0x1p-23 * (fabs(y0[i]) + fabs(s * a[i])),
                      "cpu_axpy_f32 n=%d i=%d: %.9g vs %.9g", n, i, y[i], e);
            }
        }
    }
    section_done("cpu_dot_f32 / cpu_axpy_f32", before);
}

/* ---- CPU backend: matmul through the backend's own entry point ---- */

static lp_backend *new_backend(int n_head_kv, int head_dim, int n_ctx) {
    static float inv_freq[256];
    for (int i = 0; i < head_dim / 2; i++) inv_freq[i] = powf(10000.0f, -2.0f * i / head_dim);
    lp_backend_config cfg = {.n_layer = 1, .n_slots = 1, .n_ctx = n_ctx, .n_head_kv = n_head_kv, .head_dim = head_dim,
                             .rope = LP_ROPE_NEOX, .rope_inv_freq = inv_freq, .rope_attn_factor = 1.0f};
    lp_backend *be = lp_backend_cpu_create(2);
    if (be->ops->init(be, &cfg) != 0) {
        fprintf(stderr, "backend init: %s\n", lp_errmsg());
        exit(2);
    }
    return be;
}

static lp_weight weight_of(lp_type t, int K, int M, const void *data) {
    const size_t row = lp_row_size(t, K);
    return (lp_weight){.present = true, .type = t, .n_dims = 2, .ne = {K, M, 1}, .row_bytes = row,
                       .expert_bytes = row * (size_t)M, .data = data};
}

/* y[n][M] = x[n][K] W^T */
static void run_matmul(lp_backend *be, const lp_weight *w, const float *x, int n, float *y) {
    const int K = (int)w->ne[0], M = (int)w->ne[1];
    lp_bbuf *bx = be->ops->alloc(be, (size_t)n * K), *by = be->ops->alloc(be, (size_t)n * M);
    memcpy(bx->data, x, (size_t)n * K * sizeof(float));
    const lp_matmul_args args = {.w = w, .expert = -1, .x = bx, .y = by};
    be->ops->matmul(be, 1, &args, n);
    memcpy(y, by->data, (size_t)n * M * sizeof(float));
    be->ops->release(be, bx), be->ops->release(be, by);
}

/* Each token's row alone must give the same bits as inside the batch. */
static void check_batch_invariance(lp_backend *be, const lp_weight *w, const float *x, int n, const float *y) {
    const int K = (int)w->ne[0], M = (int)w->ne[1];
    float *y1 = lp_xmalloc((size_t)M * sizeof(float));
    for (int t = 0; t < n; t++) {
        run_matmul(be, w, x + (size_t)t * K, 1, y1);
        CHECK(memcmp(y1, y + (size_t)t * M, (size_t)M * sizeof(float)) == 0, "%s K=%d M=%d n=%d: token %d alone differs",
              name_of(w->type), K, M, n, t);
    }
    free(y1);
}

static void check_float_matmul(lp_backend *be, lp_type t, int K, int M, int n) {
    float *wf = lp_xmalloc((size_t)K * M * sizeof(float)), *x = lp_xmalloc((size_t)n * K * sizeof(float));
    float *y = lp_xmalloc((size_t)n * M * sizeof(float)), *wd = lp_xmalloc((size_t)K * M * sizeof(float));
    fill_floats(wf, (int64_t)K * M, F_GAUSS), fill_floats(x, (int64_t)n * K, F_GAUSS);
    void *wq = encode(t, wf, (int64_t)K * M);
    lp_qtype(t)->to_float(wq, wd, (int64_t)K * M);
    const lp_weight w = weight_of(t, K, M, wq);
    run_matmul(be, &w, x, n, y);
    for (int tok = 0; tok < n; tok++)
        for (int r = 0; r < M; r++) {
            double want = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                const double p = (double)wd[(size_t)r * K + k] * x[(size_t)tok * K + k];
                want += p, mag += fabs(p);
            }
            const float got = y[(size_t)tok * M + r];
            CHECK(fabs(got - want) <= (K / 4.0 + 16) * 0x1p-23 * mag, "%s matmul K=%d M=%d n=%d [%d][%d]: %.9g vs %.9g",
                  name_of(t), K, M, n, tok, r, got, want);
        }
    check_batch_invariance(be, &w, x, n, y);
    free(wf), free(x), free(y), free(wd), free(wq);
}

/* Quantized weights: the backend's result must be exactly the traits' vec_dot on the
 * activations as lp_from_float_act writes them (its own quantizer and x4 kernels must not
 * change a bit). */
static void check_quant_matmul(lp_backend *be, lp_type t, int K, int M, int n) {
    const lp_type at = lp_qtype(t)->vec_dot_type;
    const size_t arow = lp_row_size(at, K);
    float *wf = lp_xmalloc((size_t)K * M * sizeof(float)), *x = lp_xmalloc((size_t)n * K * sizeof(float));
    float *y = lp_xmalloc((size_t)n * M * sizeof(float));
    uint8_t *xq = lp_xmalloc(arow);
    fill_floats(wf, (int64_t)K * M, irange(0, F_MODES - 1)), fill_floats(x, (int64_t)n * K, F_OUTLIERS);
    void *wq = encode(t, wf, (int64_t)K * M);
    const lp_weight w = weight_of(t, K, M, wq);
    run_matmul(be, &w, x, n, y);
    for (int tok = 0; tok < n; tok++) {
        lp_from_float_act(at)(x + (size_t)tok * K, xq, K);
        for (int r = 0; r < M; r++) {
            const float want = lp_qtype(t)->vec_dot(K, (const uint8_t *)wq + r * w.row_bytes, xq);
            const float got = y[(size_t)tok * M + r];
            CHECK(memcmp(&got, &want, sizeof got) == 0, "%s matmul K=%d n=%d [%d][%d]: %.9g vs vec_dot %.9g", name_of(t), K,
                  n, tok, r, got, want);
        }
    }
    check_batch_invariance(be, &w, x, n, y);
    free(wf), free(x), free(y), free(xq), free(wq);
}

static void test_matmul(void) {
    section_mark before = section_start();
    lp_backend *be = new_backend(1, 64, 16);
    static const int Ks[] = {4, 7, 8, 33, 64, 130}, Ms[] = {1, 5, 16, 21}, ns[] = {1, 2, 3, 5, 7};
    static const lp_type float_types[] = {LP_TYPE_F32, LP_TYPE_F16, LP_TYPE_BF16};
    for (size_t t = 0; t < 3; t++)
        for (size_t a = 0; a < sizeof Ks / sizeof Ks[0]; a++)
            for (size_t b = 0; b < sizeof Ms / sizeof Ms[0]; b++)
                for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++)
                    check_float_matmul(be, float_types[t], Ks[a], Ms[b], ns[c]);
    check_float_matmul(be, LP_TYPE_BF16, 96, 40, 37); /* more than one token tile */
    section_done("matmul f32/f16/bf16", before);
    before = section_start();
    for (size_t i = 0; i < N_KERNELS; i++) {
        const lp_type t = kernels[i].type;
        if (!lp_qtype(t)->quantized) continue;
        const int bs = lp_qtype(t)->block_size;
        check_quant_matmul(be, t, bs == LP_QK ? 96 : 256, 17, 9);
        check_quant_matmul(be, t, 512, 3, irange(4, 6));
    }
    section_done("matmul quantized (x4, quantizer)", before);
    lp_backend_free(be);
}

/* ---- CPU backend: attention ---- */

typedef struct {
    int hd, n_head_kv, group, n, window;
} attn_case;

/* Reference for token t, head h: softmax(q.k * scale) over its window, times v, in double. */
static void attn_reference(const attn_case *a, const float *q, const float *k, const float *v, int t, int h, double *out,
                           double *bound) {
    const int kvh = h / a->group, kv_row = a->n_head_kv * a->hd;
    const int first = a->window && t - a->window + 1 > 0 ? t - a->window + 1 : 0;
    const float *qh = q + ((size_t)t * a->n_head_kv * a->group + h) * a->hd;
    double s[64], max = -INFINITY, sum = 0;
    for (int i = first; i <= t; i++) {
        double d = 0;
        for (int j = 0; j < a->hd; j++) d += (double)qh[j] * k[(size_t)i * kv_row + kvh * a->hd + j];
        s[i] = d / sqrt((double)a->hd), max = s[i] > max ? s[i] : max;
    }
    for (int i = first; i <= t; i++) sum += s[i] = exp(s[i] - max);
    for (int j = 0; j < a->hd; j++) {
        out[j] = bound[j] = 0;
        for (int i = first; i <= t; i++) {
            out[j] += s[i] / sum * v[(size_t)i * kv_row + kvh * a->hd + j];
            bound[j] += s[i] / sum * fabs(v[(size_t)i * kv_row + kvh * a->hd + j]);
        }
    }
}

static void check_attention(const attn_case *a) {
    const int n_head = a->n_head_kv * a->group, kv = a->n_head_kv * a->hd;
    lp_backend *be = new_backend(a->n_head_kv, a->hd, 64);
    int32_t tokens[64] = {0}, pos[64], slot[64] = {0};
    for (int i = 0; i < a->n; i++) pos[i] = i;
    be->ops->set_batch(be, &(lp_batch_meta){.n = a->n, .tokens = tokens, .pos = pos, .slot = slot});
    lp_bbuf *q = be->ops->alloc(be, (size_t)a->n * n_head * a->hd), *k = be->ops->alloc(be, (size_t)a->n * kv);
    lp_bbuf *v = be->ops->alloc(be, (size_t)a->n * kv), *out = be->ops->alloc(be, (size_t)a->n * n_head * a->hd);
    for (size_t i = 0; i < q->n; i++) q->data[i] = gauss() * 0.7f;
    for (size_t i = 0; i < k->n; i++) k->data[i] = gauss() * 0.7f, v->data[i] = gauss();
    const lp_attn_params p = {.n_head = n_head, .n_head_kv = a->n_head_kv, .head_dim = a->hd,
                              .scale = 1.0f / sqrtf((float)a->hd), .window = a->window};
    be->ops->attention(be, 0, q, k, v, &p, out);
    double want[128], bound[128];
    for (int t = 0; t < a->n; t++)
        for (int h = 0; h < n_head; h++) {
            attn_reference(a, q->data, k->data, v->data, t, h, want, bound);
            for (int j = 0; j < a->hd; j++) {
                const float got = out->data[((size_t)t * n_head + h) * a->hd + j];
                CHECK(fabs(got - want[j]) <= 1e-4 * bound[j] + 1e-6,
                      "attention hd=%d n=%d window=%d t=%d h=%d d=%d: %.7g vs %.7g", a->hd, a->n, a->window, t, h, j, got,
                      want[j]);
            }
        }
    be->ops->release(be, q), be->ops->release(be, k), be->ops->release(be, v), be->ops->release(be, out);
    lp_backend_free(be);
}

static void test_attention(void) {
    const section_mark before = section_start();
    static const int hds[] = {4, 12, 16, 34, 36, 48, 64, 72, 80, 128}, ns[] = {1, 6, 13, 37};
    for (size_t i = 0; i < sizeof hds / sizeof hds[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++)
            for (int window = 0; window <= 7; window += 7) check_attention(&(attn_case){hds[i], 2, 2, ns[j], window});
    section_done("attention (qk scores, weighted values)", before);
}

int main(int argc, char **argv) {
    if (argc > 1) rng = strtoull(argv[1], NULL, 0) | 1;
#ifdef __ARM_FEATURE_DOTPROD
    printf("neon_check: NEON with dotprod (SDOT)\n");
#else
    printf("neon_check: NEON without dotprod\n");
#endif
    test_vec_dot();
    test_x4();
    test_quantizer();
    test_dot_axpy();
    test_matmul();
    test_attention();
    printf("neon_check: %ld checks (%ld of them exact ==), %ld failed\n", n_checks, n_exact, n_failed);
    return n_failed ? 1 : 0;
}
