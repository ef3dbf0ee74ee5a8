/* test_qtype.c — tests of src/quant: the traits table, f16/bf16 conversions,
 * bit-exactness against llama.cpp (tests/data/quant_golden.bin, made by
 * tests/data/gen_quant_golden.py from llama.cpp's ggml-quants.c), block layouts against
 * the per-element formulas of docs/FORMATS.md s.6 (computed here from raw byte offsets,
 * independently of src/quant's structs and decoders), quantization error bounds on real
 * fixture weights, and vec_dot accuracy plus SIMD == scalar. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/err.h"
#include "core/fileio.h"
#include "quant/qblocks.h"
#include "quant/qtype.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const lp_type quant_types[] = {LP_TYPE_Q4_0, LP_TYPE_Q4_1, LP_TYPE_Q5_0, LP_TYPE_Q5_1, LP_TYPE_Q8_0,
                                      LP_TYPE_IQ4_NL, LP_TYPE_MXFP4, LP_TYPE_Q2_K, LP_TYPE_Q3_K, LP_TYPE_Q4_K,
                                      LP_TYPE_Q5_K, LP_TYPE_Q6_K};
#define N_QUANT (sizeof quant_types / sizeof quant_types[0])

static const lp_type weight_types[] = {LP_TYPE_F32,  LP_TYPE_F16,  LP_TYPE_BF16,  LP_TYPE_Q4_0,  LP_TYPE_Q4_1,
                                       LP_TYPE_Q5_0, LP_TYPE_Q5_1, LP_TYPE_Q8_0,  LP_TYPE_IQ4_NL, LP_TYPE_MXFP4,
                                       LP_TYPE_Q2_K, LP_TYPE_Q3_K, LP_TYPE_Q4_K,  LP_TYPE_Q5_K,  LP_TYPE_Q6_K};
#define N_WEIGHT (sizeof weight_types / sizeof weight_types[0])

/* ---- helpers ---- */

static uint32_t lcg_state = 12345;
static uint32_t lcg(void) {
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state >> 8;
}
static float uniform01(void) { return (float)(lcg() & 0xffffff) / 16777216.0f; }
static float gauss(void) {
    float u = uniform01() + 1e-7f, v = uniform01();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Minimal safetensors reader for one BF16 tensor: 8-byte LE header length + JSON header. */
static float *load_fixture_bf16(const char *file, const char *name, int64_t count) {
    char *path = lp_xasprintf("%s/models/small-qwen3/%s", LP_FIXTURES_DIR, file);
    lp_mmap m;
    if (lp_mmap_open(&m, path) != 0) fail_msg("cannot open fixture %s: %s", path, lp_errmsg());
    free(path);
    assert_true(m.size > 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | m.data[i];
    assert_true(8 + hlen <= m.size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)m.data + 8, (size_t)hlen, 0, &jerr);
    assert_non_null(root);
    json_t *t = json_object_get(root, name);
    assert_non_null(t);
    assert_string_equal(json_string_value(json_object_get(t, "dtype")), "BF16");
    uint64_t begin = (uint64_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0));
    uint64_t end = (uint64_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 1));
    assert_true(end - begin >= (uint64_t)count * 2 && 8 + hlen + end <= m.size);
    const uint8_t *p = m.data + 8 + hlen + begin;
    float *out = lp_xmalloc((size_t)count * sizeof(float));
    for (int64_t i = 0; i < count; i++) out[i] = lp_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    json_decref(root);
    lp_mmap_close(&m);
    return out;
}

static void *quantize_new(lp_type t, const float *x, int64_t n) {
    const lp_qtype_traits *tr = lp_qtype(t);
    assert_non_null(tr);
    void *q = lp_xcalloc(1, lp_row_size(t, n) + 1);
    tr->from_float(x, q, n);
    return q;
}

/* ---- traits table ---- */

static void test_traits_table(void **state) {
    (void)state;
    static const struct {
        lp_type t;
        const char *name;
        int block;
        size_t bytes;
        lp_type act;
    } want[] = {
        {LP_TYPE_F32, "f32", 1, 4, LP_TYPE_F32},         {LP_TYPE_F16, "f16", 1, 2, LP_TYPE_F32},
        {LP_TYPE_BF16, "bf16", 1, 2, LP_TYPE_F32},       {LP_TYPE_Q4_0, "q4_0", 32, 18, LP_TYPE_Q8_0},
        {LP_TYPE_Q4_1, "q4_1", 32, 20, LP_TYPE_Q8_0},    {LP_TYPE_Q5_0, "q5_0", 32, 22, LP_TYPE_Q8_0},
        {LP_TYPE_Q5_1, "q5_1", 32, 24, LP_TYPE_Q8_0},    {LP_TYPE_Q8_0, "q8_0", 32, 34, LP_TYPE_Q8_0},
        {LP_TYPE_IQ4_NL, "iq4_nl", 32, 18, LP_TYPE_Q8_0}, {LP_TYPE_MXFP4, "mxfp4", 32, 17, LP_TYPE_Q8_0},
        {LP_TYPE_Q2_K, "q2_K", 256, 84, LP_TYPE_Q8_K},   {LP_TYPE_Q3_K, "q3_K", 256, 110, LP_TYPE_Q8_K},
        {LP_TYPE_Q4_K, "q4_K", 256, 144, LP_TYPE_Q8_K},  {LP_TYPE_Q5_K, "q5_K", 256, 176, LP_TYPE_Q8_K},
        {LP_TYPE_Q6_K, "q6_K", 256, 210, LP_TYPE_Q8_K},  {LP_TYPE_Q8_K, "q8_K", 256, 292, LP_TYPE_Q8_K},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const lp_qtype_traits *tr = lp_qtype(want[i].t);
        assert_non_null(tr);
        assert_string_equal(tr->name, want[i].name);
        assert_int_equal(tr->block_size, want[i].block);
        assert_int_equal(tr->block_bytes, want[i].bytes);
        assert_int_equal(tr->quantized, want[i].block > 1);
        assert_int_equal(tr->vec_dot_type, want[i].act);
        assert_non_null(tr->to_float);
        assert_non_null(tr->from_float);
        if (want[i].t == LP_TYPE_Q8_K) assert_null(tr->vec_dot);
        else assert_non_null(tr->vec_dot);
        assert_int_equal(lp_row_size(want[i].t, 4096), want[i].bytes * (4096 / want[i].block));
    }
    assert_null(lp_qtype((lp_type)4));  /* removed Q4_2 */
    assert_null(lp_qtype((lp_type)16)); /* IQ2_XXS: not supported */
    assert_null(lp_qtype((lp_type)-1));
    assert_null(lp_qtype((lp_type)1000));
    assert_int_equal(lp_row_size((lp_type)16, 256), 0);
}

static void test_type_names(void **state) {
    (void)state;
    assert_int_equal(lp_type_from_name("q4_K"), LP_TYPE_Q4_K);
    assert_int_equal(lp_type_from_name("Q4_K"), LP_TYPE_Q4_K);
    assert_int_equal(lp_type_from_name("q4_k"), LP_TYPE_Q4_K);
    assert_int_equal(lp_type_from_name("BF16"), LP_TYPE_BF16);
    assert_int_equal(lp_type_from_name("IQ4_NL"), LP_TYPE_IQ4_NL);
    assert_int_equal(lp_type_from_name("MXFP4"), LP_TYPE_MXFP4);
    assert_int_equal(lp_type_from_name("q4_K_M"), -1); /* an ftype, not a type */
    assert_int_equal(lp_type_from_name(""), -1);
    assert_int_equal(lp_type_from_name(NULL), -1);
    for (int t = 0; t < LP_TYPE_COUNT; t++) {
        const lp_qtype_traits *tr = lp_qtype((lp_type)t);
        if (tr) assert_int_equal(lp_type_from_name(tr->name), t);
    }
}

/* ---- scalar conversions ---- */

static void test_f16_conversions(void **state) {
    (void)state;
    /* every f16 survives f16 -> f32 -> f16; the value matches IEEE decoding in double */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lp_f16_to_f32((uint16_t)h);
        int exp = (h >> 10) & 31, man = h & 1023;
        if (exp == 31 && man) {
            assert_true(isnan(f));
            assert_int_equal(lp_f32_to_f16(f), (h & 0x8000) | 0x7e00);
            continue;
        }
        double mag = exp == 0 ? ldexp(man, -24) : exp == 31 ? INFINITY : ldexp(1024 + man, exp - 25);
        assert_true((double)f == ((h & 0x8000) ? -mag : mag));
        assert_int_equal(lp_f32_to_f16(f), h);
    }
    /* rounding: nearest, ties to even, overflow to inf, underflow to zero */
    assert_int_equal(lp_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);        /* tie -> even (down) */
    assert_int_equal(lp_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);    /* tie -> even (up) */
    assert_int_equal(lp_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    assert_int_equal(lp_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(lp_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(lp_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(lp_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(lp_f32_to_f16(0x1p-25f), 0x0000);               /* tie -> 0 */
    assert_int_equal(lp_f32_to_f16(0x1p-25f * 1.0001f), 0x0001);
    assert_int_equal(lp_f32_to_f16(1.5f * 0x1p-24f), 0x0002);        /* tie -> even (up) */
    assert_int_equal(lp_f32_to_f16(0x1p-14f - 0x1p-26f), 0x0400);    /* rounds up into normals */
    assert_int_equal(lp_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(lp_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(lp_f32_to_f16(bits_f32(0xffa00000)), 0xfe00);   /* NaN keeps sign, quiet */
}

static void test_bf16_conversions(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lp_bf16_to_f32((uint16_t)h);
        assert_int_equal(f32_bits(f), h << 16);
        uint16_t back = lp_f32_to_bf16(f);
        if (isnan(f)) assert_int_equal(back, h | 64);
        else assert_int_equal(back, h);
    }
    assert_int_equal(lp_f32_to_bf16(bits_f32(0x3f808000)), 0x3f80); /* tie -> even (down) */
    assert_int_equal(lp_f32_to_bf16(bits_f32(0x3f818000)), 0x3f82); /* tie -> even (up) */
    assert_int_equal(lp_f32_to_bf16(bits_f32(0x3f808001)), 0x3f81);
    assert_int_equal(lp_f32_to_bf16(bits_f32(0x7f800001)), 0x7fc0); /* signalling NaN made quiet */
    assert_int_equal(lp_f32_to_bf16(bits_f32(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to inf */
}

/* ---- bit-exactness against llama.cpp ---- */

typedef struct {
    const uint8_t *p, *end;
} reader;

static uint32_t rd_u32(reader *r) {
    assert_true(r->end - r->p >= 4);
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

static const uint8_t *rd_bytes(reader *r, size_t n) {
    assert_true((size_t)(r->end - r->p) >= n);
    const uint8_t *at = r->p;
    r->p += n;
    return at;
}

static float *rd_floats(reader *r, uint32_t n) {
    const uint8_t *b = rd_bytes(r, (size_t)n * 4);
    float *f = lp_xmalloc((size_t)n * 4 + 4);
    memcpy(f, b, (size_t)n * 4);
    return f;
}

static void test_golden_llama_cpp(void **state) {
    (void)state;
    char *path = lp_xasprintf("%s/tests/data/quant_golden.bin", LP_SOURCE_DIR);
    size_t len;
    char *data = lp_read_file(path, &len);
    if (!data) fail_msg("%s", lp_errmsg());
    free(path);
    reader r = {(const uint8_t *)data, (const uint8_t *)data + len};
    assert_memory_equal(rd_bytes(&r, 8), "LPQGOLD1", 8);
    uint32_t n_sets = rd_u32(&r);
    assert_true(n_sets >= 1 && n_sets <= 8);
    float *sets[8];
    uint32_t set_n[8];
    for (uint32_t s = 0; s < n_sets; s++) {
        set_n[s] = rd_u32(&r);
        sets[s] = rd_floats(&r, set_n[s]);
    }
    uint32_t n_records = rd_u32(&r);
    int quantize_checked = 0, seen[LP_TYPE_COUNT] = {0};
    for (uint32_t k = 0; k < n_records; k++) {
        lp_type t = (lp_type)rd_u32(&r);
        int32_t set = (int32_t)rd_u32(&r);
        uint32_t n = rd_u32(&r), n_bytes = rd_u32(&r);
        const uint8_t *bytes = rd_bytes(&r, n_bytes);
        float *expected = rd_floats(&r, n);
        const lp_qtype_traits *tr = lp_qtype(t);
        assert_non_null(tr);
        assert_int_equal(lp_row_size(t, n), n_bytes);
        seen[t]++;
        if (set >= 0) { /* our quantizer must write llama.cpp's bytes */
            assert_true((uint32_t)set < n_sets && set_n[set] >= n);
            uint8_t *ours = quantize_new(t, sets[set], n);
            for (uint32_t b = 0; b < n_bytes; b++)
                if (ours[b] != bytes[b]) fail_msg("%s: quantized byte %u differs: ours %02x, llama.cpp %02x", tr->name, b, ours[b], bytes[b]);
            free(ours);
            quantize_checked++;
        }
        float *y = lp_xmalloc((size_t)n * 4);
        tr->to_float(bytes, y, n);
        for (uint32_t e = 0; e < n; e++) {
            bool same = f32_bits(y[e]) == f32_bits(expected[e]) || (isnan(y[e]) && isnan(expected[e]));
            if (!same) fail_msg("%s (set %d): element %u dequantizes to %.9g, llama.cpp %.9g", tr->name, set, e, y[e], expected[e]);
        }
        free(y);
        free(expected);
    }
    assert_true(r.p == r.end);
    /* every quantizer (13 block types + f16 + bf16) was checked against llama.cpp */
    assert_int_equal(quantize_checked, 15);
    for (size_t i = 0; i < N_QUANT; i++) assert_true(seen[quant_types[i]] >= 1);
    for (uint32_t s = 0; s < n_sets; s++) free(sets[s]);
    free(data);
}

/* ---- known-answer block layouts (docs/FORMATS.md s.6) ---- */

static void fill_random(uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)lcg();
}

/* Powers of two as f16, so every expected value is exact. */
static const struct {
    uint16_t h;
    float f;
} pow2_f16[] = {{0x3800, 0.5f}, {0x3400, 0.25f}, {0xb000, -0.125f}, {0x4000, 2.0f}, {0x2c00, 0.0625f}};

static float put_pow2(uint8_t *b, size_t off) {
    int k = (int)(lcg() % 5);
    b[off] = (uint8_t)pow2_f16[k].h;
    b[off + 1] = (uint8_t)(pow2_f16[k].h >> 8);
    return pow2_f16[k].f;
}

static void check_block(lp_type t, const uint8_t *b, const float *want, int n) {
    float got[256];
    lp_qtype(t)->to_float(b, got, n);
    for (int e = 0; e < n; e++)
        if (got[e] != want[e]) fail_msg("%s element %d: got %g want %g", lp_qtype(t)->name, e, got[e], want[e]);
}

static void test_known_answer_32(void **state) {
    (void)state;
    static const int iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    static const float fp4[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    for (int trial = 0; trial < 50; trial++) {
        uint8_t b[64];
        float want[32];
        /* Q4_0: 0 d; 2 qs[16] */
        fill_random(b, sizeof b);
        float d = put_pow2(b, 0);
        for (int e = 0; e < 32; e++) {
            int j = e % 16, nib = e < 16 ? b[2 + j] & 0xf : b[2 + j] >> 4;
            want[e] = (float)(nib - 8) * d;
        }
        check_block(LP_TYPE_Q4_0, b, want, 32);
        /* Q4_1: 0 d; 2 m; 4 qs */
        d = put_pow2(b, 0);
        float m = put_pow2(b, 2);
        for (int e = 0; e < 32; e++) {
            int j = e % 16, nib = e < 16 ? b[4 + j] & 0xf : b[4 + j] >> 4;
            want[e] = (float)nib * d + m;
        }
        check_block(LP_TYPE_Q4_1, b, want, 32);
        /* Q5_0: 0 d; 2 qh (u32 LE); 6 qs */
        d = put_pow2(b, 0);
        uint32_t qh = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
        for (int e = 0; e < 32; e++) {
            int j = e % 16, nib = e < 16 ? b[6 + j] & 0xf : b[6 + j] >> 4, h = (qh >> e) & 1;
            want[e] = (float)((nib | h << 4) - 16) * d;
        }
        check_block(LP_TYPE_Q5_0, b, want, 32);
        /* Q5_1: 0 d; 2 m; 4 qh; 8 qs */
        d = put_pow2(b, 0);
        m = put_pow2(b, 2);
        qh = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
        for (int e = 0; e < 32; e++) {
            int j = e % 16, nib = e < 16 ? b[8 + j] & 0xf : b[8 + j] >> 4, h = (qh >> e) & 1;
            want[e] = (float)(nib | h << 4) * d + m;
        }
        check_block(LP_TYPE_Q5_1, b, want, 32);
        /* Q8_0: 0 d; 2 qs[32] int8 */
        d = put_pow2(b, 0);
        for (int e = 0; e < 32; e++) want[e] = (float)(int8_t)b[2 + e] * d;
        check_block(LP_TYPE_Q8_0, b, want, 32);
        /* IQ4_NL: 0 d; 2 qs */
        d = put_pow2(b, 0);
        for (int e = 0; e < 32; e++) {
            int j = e % 16, nib = e < 16 ? b[2 + j] & 0xf : b[2 + j] >> 4;
            want[e] = d * (float)iq4nl[nib];
        }
        check_block(LP_TYPE_IQ4_NL, b, want, 32);
        /* MXFP4: 0 e (E8M0); 1 qs; value = E2M1 * 2^(e-127) */
        b[0] = (uint8_t)(110 + lcg() % 40);
        for (int e = 0; e < 32; e++) {
            int j = e % 16, nib = e < 16 ? b[1 + j] & 0xf : b[1 + j] >> 4;
            want[e] = ldexpf(fp4[nib], b[0] - 127);
        }
        check_block(LP_TYPE_MXFP4, b, want, 32);
    }
    /* E8M0 extremes: e = 0 and 1 are the two scales below the normal range */
    assert_true(lp_e8m0_half_to_f32(0) == ldexpf(1, -128));
    assert_true(lp_e8m0_half_to_f32(1) == ldexpf(1, -127));
    assert_true(lp_e8m0_half_to_f32(254) == ldexpf(1, 126));
}

static void test_known_answer_k(void **state) {
    (void)state;
    for (int trial = 0; trial < 50; trial++) {
        uint8_t b[256];
        float want[256];
        /* Q2_K: 0 scales[16]; 16 qs[64]; 80 d; 82 dmin */
        fill_random(b, sizeof b);
        float d = put_pow2(b, 80), dmin = put_pow2(b, 82);
        for (int e = 0; e < 256; e++) {
            int n = e / 128, s = (e % 128) / 32, l = e % 32, j = e / 16;
            int q = (b[16 + 32 * n + l] >> (2 * s)) & 3;
            want[e] = d * (float)(b[j] & 0xf) * (float)q - dmin * (float)(b[j] >> 4);
        }
        check_block(LP_TYPE_Q2_K, b, want, 256);
        /* Q3_K: 0 hmask[32]; 32 qs[64]; 96 scales[12]; 108 d */
        fill_random(b, sizeof b);
        d = put_pow2(b, 108);
        for (int e = 0; e < 256; e++) {
            int n = e / 128, s = (e % 128) / 32, l = e % 32, j = e / 16;
            int low2 = (b[32 + 32 * n + l] >> (2 * s)) & 3;
            int h = (b[e % 32] >> (e / 32)) & 1;
            int lo4 = j < 8 ? b[96 + j] & 0xf : b[96 + j - 8] >> 4;
            int hi2 = (b[96 + 8 + j % 4] >> (2 * (j / 4))) & 3;
            int sc = (lo4 | hi2 << 4) - 32;
            want[e] = d * (float)sc * (float)(low2 + 4 * h - 4);
        }
        check_block(LP_TYPE_Q3_K, b, want, 256);
        /* Q4_K: 0 d; 2 dmin; 4 scales[12]; 16 qs[128]; Q5_K: ... 16 qh[32]; 48 qs */
        for (int five = 0; five < 2; five++) {
            fill_random(b, sizeof b);
            d = put_pow2(b, 0);
            dmin = put_pow2(b, 2);
            const uint8_t *sc12 = b + 4, *qs = b + (five ? 48 : 16), *qh = b + 16;
            for (int e = 0; e < 256; e++) {
                int j = e / 32, c = e / 64, r = e % 64, sc, mn;
                if (j < 4) {
                    sc = sc12[j] & 63;
                    mn = sc12[j + 4] & 63;
                } else {
                    sc = (sc12[j + 4] & 0xf) | ((sc12[j - 4] >> 6) << 4);
                    mn = (sc12[j + 4] >> 4) | ((sc12[j] >> 6) << 4);
                }
                int q = r < 32 ? qs[32 * c + r] & 0xf : qs[32 * c + r - 32] >> 4;
                if (five) q += 16 * ((qh[e % 32] >> (e / 32)) & 1);
                want[e] = d * (float)sc * (float)q - dmin * (float)mn;
            }
            check_block(five ? LP_TYPE_Q5_K : LP_TYPE_Q4_K, b, want, 256);
        }
        /* Q6_K: 0 ql[128]; 128 qh[64]; 192 scales[16] int8; 208 d */
        fill_random(b, sizeof b);
        d = put_pow2(b, 208);
        for (int e = 0; e < 256; e++) {
            int n = e / 128, s = (e % 128) / 32, l = e % 32;
            int lo = (s & 1) ? b[64 * n + 32 + l] : b[64 * n + l];
            int lo4 = s < 2 ? lo & 0xf : lo >> 4;
            int hi2 = (b[128 + 32 * n + l] >> (2 * s)) & 3;
            want[e] = d * (float)(int8_t)b[192 + e / 16] * (float)((lo4 | hi2 << 4) - 32);
        }
        check_block(LP_TYPE_Q6_K, b, want, 256);
    }
}

/* Q8_K: f32 d at 0, qs[256] at 4, bsums[16] (i16) at 260. */
static void test_q8_K_layout(void **state) {
    (void)state;
    float x[512];
    for (int i = 0; i < 512; i++) x[i] = gauss();
    x[300] = -5.0f; /* the signed maximum of block 1 maps to code -127 */
    x[0] = 0.0f;
    uint8_t *q = quantize_new(LP_TYPE_Q8_K, x, 512);
    for (int blk = 0; blk < 2; blk++) {
        const uint8_t *b = q + 292 * blk;
        float d;
        memcpy(&d, b, 4);
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += (int8_t)b[4 + 16 * j + i];
            assert_int_equal((int16_t)(b[260 + 2 * j] | b[261 + 2 * j] << 8), sum);
        }
        for (int i = 0; i < 256; i++) assert_true(fabsf((int8_t)b[4 + i] * d - x[256 * blk + i]) <= fabsf(d) * 0.5001f);
    }
    float d1;
    memcpy(&d1, q + 292, 4);
    assert_true(d1 == 1 / (-127.f / -5.0f));
    assert_int_equal((int8_t)q[292 + 4 + 300 - 256], -127);
    free(q);
}

/* ---- activation quantizers: llama.cpp's x86 CPU arithmetic ---- */

/* Q8_0 activation row (lp_from_float_fast, i.e. what the matmul runs) checked against the
 * formula of llama.cpp's quantize_row_q8_0 for x86 (ggml-cpu/arch/x86/quants.c), written
 * out independently: d = f16(amax / 127), code = round-half-even(x * (127 / amax)),
 * saturated to int8. Returns the block for the known-answer checks. */
static lp_block_q8_0 q8_0_act_checked(const float x[32]) {
    lp_block_q8_0 fast, act;
    lp_from_float_fast(LP_TYPE_Q8_0)(x, &fast, 32);
    lp_from_float_act(LP_TYPE_Q8_0)(x, &act, 32);
    if (memcmp(&fast, &act, sizeof fast) != 0) fail_msg("q8_0: SIMD and portable activation quantizers differ");
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    assert_int_equal(act.d, lp_f32_to_f16(amax / 127.f));
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    for (int j = 0; j < 32; j++) {
        const float v = x[j] * id; /* nearbyintf: the default rounding mode, ties to even */
        const int want = isfinite(v) ? (int)fmaxf(-128.f, fminf(127.f, nearbyintf(v))) : -128; /* cvtps2dq: INT_MIN */
        if (act.qs[j] != want) fail_msg("q8_0 act element %d (x %a): code %d, llama.cpp %d", j, x[j], act.qs[j], want);
    }
    return act;
}

static void test_q8_0_activation_quantizer(void **state) {
    (void)state;
    float x[32] = {0};
    /* ties at .5 go to even (the weight quantizer's roundf goes away from zero) */
    static const float ties[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -125.5f};
    static const int8_t even[] = {0, 2, 2, 0, -2, -2, 126, -126}, away[] = {1, 2, 3, -1, -2, -3, 127, -126};
    x[31] = 127.0f; /* amax 127: id = 1 */
    for (int j = 0; j < 8; j++) x[j] = ties[j];
    lp_block_q8_0 a = q8_0_act_checked(x), w;
    lp_from_float_q8_0(x, &w, 32);
    for (int j = 0; j < 8; j++) {
        assert_int_equal(a.qs[j], even[j]);
        assert_int_equal(w.qs[j], away[j]);
    }
    assert_int_equal(a.qs[31], 127);
    assert_int_equal(a.d, lp_f32_to_f16(1.0f));
    /* id = 127/amax, not 1/d: here x*id = 1.5000001 but x*(1/d) = 1.4999999 */
    memset(x, 0, sizeof x);
    x[0] = 0x1.71ba98p+0f;
    x[1] = 0x1.177ae8p-6f;
    a = q8_0_act_checked(x);
    lp_from_float_q8_0(x, &w, 32);
    assert_int_equal(a.qs[1], 2);
    assert_int_equal(w.qs[1], 1);
    /* amax 0 (with -0.0): scale and codes 0 */
    memset(x, 0, sizeof x);
    x[3] = -0.0f;
    a = q8_0_act_checked(x);
    assert_int_equal(a.d, 0);
    for (int j = 0; j < 32; j++) assert_int_equal(a.qs[j], 0);
    /* negative maximum: it gets code -127 */
    for (int j = 0; j < 32; j++) x[j] = 0.1f * (float)(j % 7) - 0.3f;
    x[9] = -3.0f;
    a = q8_0_act_checked(x);
    assert_int_equal(a.qs[9], -127);
    assert_int_equal(a.d, lp_f32_to_f16(3.0f / 127.f));
    /* subnormal amax: 127/amax overflows, x * inf converts to INT_MIN -> -128 everywhere
     * (0 * inf too); the f16 scale is 0, so only the bytes, not the dots, depend on it */
    for (int j = 0; j < 32; j++) x[j] = (j % 3 ? 1e-39f : -1e-39f) * (float)(j % 5);
    a = q8_0_act_checked(x);
    assert_int_equal(a.d, 0);
    for (int j = 0; j < 32; j++) assert_int_equal(a.qs[j], -128);
    /* ordinary rows, including values right at code boundaries */
    for (int trial = 0; trial < 2000; trial++) {
        const float scale = trial % 3 == 0 ? 1e-3f : trial % 3 == 1 ? 1.0f : 40.0f;
        for (int j = 0; j < 32; j++) x[j] = gauss() * scale;
        if (trial % 2) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
            for (int j = 0; j < 32; j += 3) x[j] = ((float)(int)(x[j] * 127.f / amax) + 0.5f) * (amax / 127.f);
        }
        q8_0_act_checked(x);
    }
}

/* Q8_K (K-quant activations): llama.cpp runs quantize_row_q8_K_ref on x86 and ARM, which
 * is our from_float: iscale = -127 / max with max the signed value of largest magnitude
 * (the first one on a +-tie), codes nearest_int (ties to even), d = 1 / iscale. (The x86
 * repack path for Q4_K prefill, ggml_quantize_mat_q8_K_4x8, prefers the positive one on a
 * +-tie: the only case where it differs.) Checked against that formula here. */
static lp_block_q8_K q8_K_act_checked(const float x[256]) {
    lp_block_q8_K fast, act, ref;
    lp_from_float_fast(LP_TYPE_Q8_K)(x, &fast, 256);
    lp_from_float_act(LP_TYPE_Q8_K)(x, &act, 256);
    lp_qtype(LP_TYPE_Q8_K)->from_float(x, &ref, 256);
    assert_memory_equal(&fast, &act, sizeof act);
    assert_memory_equal(&act, &ref, sizeof act);
    float amax = 0, max = 0;
    for (int j = 0; j < 256; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    const float iscale = amax ? -127.f / max : 0.0f;
    assert_true(act.d == (amax ? 1 / iscale : 0.0f));
    for (int j = 0; j < 256; j++) assert_int_equal(act.qs[j], (int)nearbyintf(iscale * x[j]));
    return act;
}

static void test_q8_K_activation_quantizer(void **state) {
    (void)state;
    float x[256] = {0};
    /* ties at .5 with a negative max of -127 (iscale 1): to even */
    static const int8_t even[] = {-4, -2, -2, 0, 0, 2, 2, 4}; /* -3.5 .. 3.5 */
    x[255] = -127.0f;
    for (int j = 0; j < 8; j++) x[j] = (float)(j - 4) + 0.5f;
    lp_block_q8_K a = q8_K_act_checked(x);
    assert_true(a.d == 1.0f);
    for (int j = 0; j < 8; j++) assert_int_equal(a.qs[j], even[j]);
    /* positive max: iscale -1, codes negated, d < 0 */
    for (int j = 0; j < 256; j++) x[j] = -x[j];
    a = q8_K_act_checked(x);
    assert_true(a.d == -1.0f);
    assert_int_equal(a.qs[255], -127);
    for (int j = 0; j < 8; j++) assert_int_equal(a.qs[j], even[j]);
    /* +-tie: the first (negative) one is the max */
    memset(x, 0, sizeof x);
    x[3] = -4.0f;
    x[7] = 4.0f;
    a = q8_K_act_checked(x);
    assert_int_equal(a.qs[3], -127);
    assert_int_equal(a.qs[7], 127);
    /* amax 0: an all-zero block */
    x[3] = x[7] = 0.0f;
    x[10] = -0.0f;
    a = q8_K_act_checked(x);
    lp_block_q8_K zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&a, &zero, sizeof a);
    for (int trial = 0; trial < 200; trial++) {
        for (int j = 0; j < 256; j++) x[j] = gauss() * (trial % 2 ? 30.0f : 1e-3f);
        q8_K_act_checked(x);
    }
}

/* ---- quantization error on real weights ---- */

typedef struct {
    lp_type t;
    double max_rel_rmse; /* RMSE(dequant(quant(x)) - x) / RMS(x) */
} error_bound;

/* Measured on the fixture slice below (small-qwen3 layer 0: 32K values of q_proj and 32K
 * of gate_proj, trained bf16 weights): q8_0 0.0053, q6_K 0.0177, q5_K 0.0361,
 * q5_1 0.0378, q5_0 0.0425, q4_K 0.0715, iq4_nl 0.0759, q4_1 0.0782, q4_0 0.0857,
 * mxfp4 0.1133, q3_K 0.1506, q2_K 0.2969, q8_K 0.0069. The quantizers are
 * deterministic, so the bounds keep only ~12% headroom: a regression shows. */
static const error_bound bounds[] = {
    {LP_TYPE_Q8_0, 0.0060}, {LP_TYPE_Q6_K, 0.020}, {LP_TYPE_Q5_K, 0.040},   {LP_TYPE_Q5_1, 0.042},
    {LP_TYPE_Q5_0, 0.048},  {LP_TYPE_Q4_K, 0.080}, {LP_TYPE_IQ4_NL, 0.085}, {LP_TYPE_Q4_1, 0.088},
    {LP_TYPE_Q4_0, 0.096},  {LP_TYPE_MXFP4, 0.127}, {LP_TYPE_Q3_K, 0.169},  {LP_TYPE_Q2_K, 0.333},
    {LP_TYPE_Q8_K, 0.0078},
};

#define REAL_N (2 * 32768)

static float *real_weights(void) {
    float *x = lp_xmalloc(REAL_N * sizeof(float));
    float *q = load_fixture_bf16("model-00001-of-00006.safetensors", "model.layers.0.self_attn.q_proj.weight", 32768);
    float *g = load_fixture_bf16("model-00001-of-00006.safetensors", "model.layers.0.mlp.gate_proj.weight", 32768);
    memcpy(x, q, 32768 * sizeof(float));
    memcpy(x + 32768, g, 32768 * sizeof(float));
    free(q);
    free(g);
    return x;
}

static double rel_rmse(lp_type t, const float *x, int64_t n) {
    void *q = quantize_new(t, x, n);
    float *y = lp_xmalloc((size_t)n * sizeof(float));
    lp_qtype(t)->to_float(q, y, n);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < n; i++) {
        err += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        ref += (double)x[i] * x[i];
    }
    free(q);
    free(y);
    return sqrt(err / ref);
}

static void test_roundtrip_real_weights(void **state) {
    (void)state;
    float *x = real_weights();
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        double e = rel_rmse(bounds[i].t, x, REAL_N);
        if (getenv("LP_TEST_VERBOSE")) printf("  %-6s rel RMSE %.4f (bound %.4f)\n", lp_qtype(bounds[i].t)->name, e, bounds[i].max_rel_rmse);
        if (!(e <= bounds[i].max_rel_rmse)) fail_msg("%s: relative RMSE %.5f exceeds %.5f", lp_qtype(bounds[i].t)->name, e, bounds[i].max_rel_rmse);
        assert_true(e > 0);
    }
    /* more bits, less error: the K-quant ladder must be strictly ordered */
    const lp_type ladder[] = {LP_TYPE_Q2_K, LP_TYPE_Q3_K, LP_TYPE_Q4_K, LP_TYPE_Q5_K, LP_TYPE_Q6_K, LP_TYPE_Q8_0};
    double prev_k = 0;
    for (size_t i = 0; i < 6; i++) {
        double e = rel_rmse(ladder[i], x, REAL_N);
        if (i) assert_true(e < prev_k);
        prev_k = e;
    }
    /* the fixture is bf16: F32 and BF16 are exact; F16 has more mantissa but loses the
     * smallest values to its subnormal range */
    assert_true(rel_rmse(LP_TYPE_F32, x, REAL_N) == 0.0);
    assert_true(rel_rmse(LP_TYPE_BF16, x, REAL_N) == 0.0);
    double e16 = rel_rmse(LP_TYPE_F16, x, REAL_N);
    if (getenv("LP_TEST_VERBOSE")) printf("  f16    rel RMSE %.2e\n", e16);
    assert_true(e16 < 1e-4);
    free(x);
}

static void test_zero_and_nonfinite_rows(void **state) {
    (void)state;
    float zeros[512] = {0}, y[512];
    float bad[512];
    for (int i = 0; i < 512; i++) bad[i] = (i % 3 == 0) ? NAN : (i % 3 == 1) ? INFINITY : 1e30f;
    for (size_t i = 0; i < N_QUANT; i++) {
        lp_type t = quant_types[i];
        void *q = quantize_new(t, zeros, 512);
        lp_qtype(t)->to_float(q, y, 512);
        for (int e = 0; e < 512; e++) assert_true(y[e] == 0.0f);
        free(q);
        q = quantize_new(t, bad, 512); /* must not crash or hang; the values are unspecified */
        lp_qtype(t)->to_float(q, y, 512);
        free(q);
    }
}

/* ---- vec_dot ---- */

static double dot_double(const float *a, const float *b, int64_t n, double *abs_sum) {
    double s = 0, as = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)a[i] * b[i];
        as += fabs((double)a[i] * b[i]);
    }
    *abs_sum = as;
    return s;
}

/* Activation vector in the weight type's vec_dot_type, quantized as the matmul does. */
static void *make_act(lp_type wt, const float *x, int64_t n, float *x_dequant) {
    lp_type at = lp_qtype(wt)->vec_dot_type;
    void *a = lp_xcalloc(1, lp_row_size(at, n) + 1);
    lp_from_float_act(at)(x, a, n);
    lp_qtype(at)->to_float(a, x_dequant, n);
    return a;
}

static void test_vec_dot_accuracy(void **state) {
    (void)state;
    const int64_t n = 1024;
    float *w = real_weights(), x[1024], xd[1024], wd[1024];
    for (int i = 0; i < n; i++) x[i] = gauss() * (1.0f + (i % 97 == 0) * 8.0f); /* some outliers */
    for (size_t k = 0; k < N_WEIGHT; k++) {
        lp_type t = weight_types[k];
        const lp_qtype_traits *tr = lp_qtype(t);
        for (int row = 0; row < 4; row++) {
            const float *wr = w + row * 9000; /* rows straddling the q/gate boundary too */
            void *q = quantize_new(t, wr, n);
            tr->to_float(q, wd, n);
            void *a = make_act(t, x, n, xd);
            double abs_sum, abs_sum_true;
            double exact = dot_double(wd, xd, n, &abs_sum);
            double truth = dot_double(wd, x, n, &abs_sum_true);
            float got = tr->vec_dot(n, q, a), scalar = lp_vec_dot_scalar(t)(n, q, a);
            /* the kernel computes exactly dot(dequant(w), dequant(act)) up to f32 rounding */
            if (!(fabs(got - exact) <= 2e-6 * abs_sum)) fail_msg("%s: vec_dot %.7g vs exact %.7g", tr->name, got, exact);
            if (!(fabs(scalar - exact) <= 2e-6 * abs_sum)) fail_msg("%s: scalar %.7g vs exact %.7g", tr->name, scalar, exact);
            /* and the activation quantization (Q8_0 / Q8_K) costs little */
            if (!(fabs(got - truth) <= 4e-3 * abs_sum_true)) fail_msg("%s: vec_dot %.7g vs f32 activations %.7g", tr->name, got, truth);
            free(q);
            free(a);
        }
    }
    free(w);
}

static void test_vec_dot_simd_matches_scalar(void **state) {
    (void)state;
    if (getenv("LP_TEST_VERBOSE")) printf("  SIMD vec_dot compiled in: %s\n", LP_QUANT_AVX2 ? "AVX2" : "no");
    float x[2048], w[2048], wd[2048], xd[2048];
    const int64_t sizes[] = {256, 512, 2048};
    for (int trial = 0; trial < 20; trial++) {
        for (int i = 0; i < 2048; i++) {
            w[i] = gauss() * (trial % 2 ? 0.02f : 3.0f) + (trial % 3 == 0 ? 0.5f : 0.0f); /* skewed: exercises mins */
            x[i] = gauss();
        }
        for (size_t k = 0; k < N_WEIGHT; k++) {
            lp_type t = weight_types[k];
            const lp_qtype_traits *tr = lp_qtype(t);
            for (size_t s = 0; s < 3; s++) {
                int64_t n = sizes[s];
                void *q = quantize_new(t, w, n);
                void *a = make_act(t, x, n, xd);
                tr->to_float(q, wd, n);
                double abs_sum;
                dot_double(wd, xd, n, &abs_sum);
                float fast = tr->vec_dot(n, q, a), slow = lp_vec_dot_scalar(t)(n, q, a);
                if (!(fabs(fast - slow) <= 2e-6 * abs_sum + 1e-30))
                    fail_msg("%s n=%lld: fast %.8g scalar %.8g", tr->name, (long long)n, fast, slow);
                free(q);
                free(a);
            }
        }
    }
    /* float weights: lengths that are not a multiple of the SIMD width use the tail loop */
    for (int64_t n = 1; n < 80; n += 7) {
        const lp_type ft[] = {LP_TYPE_F32, LP_TYPE_F16, LP_TYPE_BF16};
        for (int k = 0; k < 3; k++) {
            void *q = quantize_new(ft[k], w, n);
            lp_qtype(ft[k])->to_float(q, wd, n);
            double abs_sum;
            double exact = dot_double(wd, x, n, &abs_sum);
            float fast = lp_qtype(ft[k])->vec_dot(n, q, x);
            assert_true(fabs(fast - exact) <= 2e-6 * abs_sum + 1e-30);
            free(q);
        }
    }
}

/* The prefill kernels: 4 tokens per weight-row pass must give exactly the 4 single-token
 * vec_dot results (the runtime relies on prefill == decode bit for bit); and the SIMD
 * activation quantizer must write the portable one's bytes. */
static void test_vec_dot_x4_and_fast_quantizer(void **state) {
    (void)state;
    enum { N = 1536 };
    static float w[N], x[4][N];
    int checked = 0;
    for (int trial = 0; trial < 4; trial++) {
        for (int i = 0; i < N; i++) {
            w[i] = gauss() * (trial % 2 ? 0.02f : 2.0f) + (trial == 3 ? 0.3f : 0.0f);
            for (int t = 0; t < 4; t++) x[t][i] = gauss() * (t + 1) + (i % 101 == 0 ? 0.5f : 0.0f); /* exact .5 ties */
        }
        for (int k = 0; k < LP_TYPE_COUNT; k++) {
            lp_vec_dot_x4_fn x4 = lp_vec_dot_x4((lp_type)k);
            const lp_qtype_traits *tr = lp_qtype((lp_type)k);
            if (!x4 || !tr) continue;
            lp_type at = tr->vec_dot_type;
            size_t row = lp_row_size(at, N);
            uint8_t *acts = lp_xmalloc(4 * row), *ref = lp_xmalloc(row);
            for (int t = 0; t < 4; t++) {
                lp_from_float_fast(at)(x[t], acts + (size_t)t * row, N);
                lp_from_float_act(at)(x[t], ref, N);
                if (memcmp(ref, acts + (size_t)t * row, row) != 0) fail_msg("%s: fast quantizer differs", lp_qtype(at)->name);
            }
            void *q = quantize_new((lp_type)k, w, N);
            float out[4];
            x4(N, q, acts, row, out);
            for (int t = 0; t < 4; t++) {
                float one = tr->vec_dot(N, q, acts + (size_t)t * row);
                if (memcmp(&one, &out[t], sizeof one) != 0)
                    fail_msg("%s token %d: x4 %.9g vec_dot %.9g", tr->name, t, out[t], one);
            }
            checked++;
            free(q);
            free(acts);
            free(ref);
        }
    }
    if (LP_QUANT_AVX2) assert_true(checked >= 4 * 4); /* Q8_0, Q4_K, Q5_K, Q6_K at least */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traits_table),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_f16_conversions),
        cmocka_unit_test(test_bf16_conversions),
        cmocka_unit_test(test_golden_llama_cpp),
        cmocka_unit_test(test_known_answer_32),
        cmocka_unit_test(test_known_answer_k),
        cmocka_unit_test(test_q8_K_layout),
        cmocka_unit_test(test_q8_0_activation_quantizer),
        cmocka_unit_test(test_q8_K_activation_quantizer),
        cmocka_unit_test(test_roundtrip_real_weights),
        cmocka_unit_test(test_zero_and_nonfinite_rows),
        cmocka_unit_test(test_vec_dot_accuracy),
        cmocka_unit_test(test_vec_dot_simd_matches_scalar),
        cmocka_unit_test(test_vec_dot_x4_and_fast_quantizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
