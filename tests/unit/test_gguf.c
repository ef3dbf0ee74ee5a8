/* test_gguf.c — GGUF reader/writer: gguf-py reference files (values and byte-exact rewrite),
 * round trips of every value type, determinism, custom alignment, writer misuse, every
 * truncation of a valid file, and hand-crafted malformed files. */
#include <dirent.h>
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

#include "core/err.h"
#include "core/fileio.h"
#include "formats/gguf.h"

static char tmp_dir[] = "/tmp/lp_test_gguf_XXXXXX";

static char *tmp_path(const char *name) { return lp_path_join(tmp_dir, name); }

static int setup(void **state) { return mkdtemp(tmp_dir) ? 0 : -1; }

static int teardown(void **state) {
    DIR *d = opendir(tmp_dir);
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = tmp_path(e->d_name);
        unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(tmp_dir);
    return 0;
}

static uint8_t *read_all(const char *path, size_t *len) {
    char *data = lp_read_file(path, len);
    assert_non_null(data);
    return (uint8_t *)data;
}

static void assert_files_equal(const char *a, const char *b) {
    size_t na, nb;
    uint8_t *da = read_all(a, &na), *db = read_all(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(da);
    free(db);
}

/* Bytes of the reference tensors (mirrors tests/data/make_gguf_ref.py). */
static uint8_t pattern_byte(size_t k, unsigned mul, unsigned add) { return (uint8_t)((k * mul + add) & 255); }

/* f16 bits of a non-negative value exactly representable as a normal f16 (or zero). */
static uint16_t f16_bits_exact(float v) {
    if (v == 0) return 0;
    int e;
    float m = frexpf(v, &e); /* v = m * 2^e, m in [0.5, 1) */
    return (uint16_t)((e - 1 + 15) << 10 | (uint16_t)((m * 2 - 1) * 1024));
}

typedef struct {
    const char *name;
    lp_type type;
    int n_dims;
    int64_t ne[4];
    uint64_t nbytes;
} ref_tensor;

static const ref_tensor ref_tensors[] = {
    {"tok.f32", LP_TYPE_F32, 2, {4, 3, 1, 1}, 48},
    {"blk.f16", LP_TYPE_F16, 3, {8, 2, 2, 1}, 64},
    {"q8", LP_TYPE_Q8_0, 2, {64, 2, 1, 1}, 136},
    {"bf16", LP_TYPE_BF16, 2, {3, 5, 1, 1}, 30},
    {"one", LP_TYPE_F32, 1, {1, 1, 1, 1}, 4},
};
#define N_REF_TENSORS (sizeof ref_tensors / sizeof ref_tensors[0])

static void ref_tensor_bytes(int i, uint8_t *out) {
    switch (i) {
    case 0:
        for (int k = 0; k < 12; k++) {
            float v = k * 0.5f - 3;
            memcpy(out + 4 * k, &v, 4);
        }
        break;
    case 1:
        for (int k = 0; k < 32; k++) {
            uint16_t h = f16_bits_exact(k * 0.25f);
            memcpy(out + 2 * k, &h, 2);
        }
        break;
    case 2:
        for (size_t k = 0; k < 136; k++) out[k] = pattern_byte(k, 31, 7);
        break;
    case 3:
        for (size_t k = 0; k < 30; k++) out[k] = pattern_byte(k, 17, 3);
        break;
    default: {
        float v = 42;
        memcpy(out, &v, 4);
    }
    }
}

static const char *const ref_arr_str[] = {"a", "", "\xc3\xbcn\xc3\xaf" "code", "with space"};
static const int32_t ref_arr_i32[] = {1, -2, 3, 2147483647};
static const float ref_arr_f32[] = {0.5f, -1.25f, 1e-6f};
static const bool ref_arr_bool[] = {true, false, true};
static const uint8_t ref_arr_u8[] = {1, 2, 255};
static const int64_t ref_arr_i64[] = {-1, (int64_t)1 << 40};
static const double ref_arr_f64[] = {0.1, -2.5};
static const char ref_str[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93";

static const char *const ref_keys[] = {
    "general.architecture", "t.u8", "t.i8", "t.u16", "t.i16", "t.u32", "t.i32", "t.f32", "t.u64", "t.i64", "t.f64",
    "t.bool_true", "t.bool_false", "t.str", "t.arr_str", "t.arr_i32", "t.arr_f32", "t.arr_bool", "t.arr_u8",
    "t.arr_i64", "t.arr_f64", "general.alignment"};

/* Same content as make_gguf_ref.py, through our public setters. */
static void write_reference_file(const char *path, uint32_t alignment) {
    lp_gguf_writer *w = lp_gguf_writer_new();
    lp_gguf_set_str(w, "general.architecture", "testarch");
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 65000;
    int16_t i16 = -30000;
    uint64_t u64 = ((uint64_t)1 << 63) + 5;
    int64_t i64 = -((int64_t)1 << 40) - 3;
    double f64 = 3.141592653589793;
    assert_int_equal(lp_gguf_set_scalar(w, "t.u8", LP_GGUF_U8, &u8), 0);
    assert_int_equal(lp_gguf_set_scalar(w, "t.i8", LP_GGUF_I8, &i8), 0);
    assert_int_equal(lp_gguf_set_scalar(w, "t.u16", LP_GGUF_U16, &u16), 0);
    assert_int_equal(lp_gguf_set_scalar(w, "t.i16", LP_GGUF_I16, &i16), 0);
    lp_gguf_set_u32(w, "t.u32", 4000000000u);
    lp_gguf_set_i32(w, "t.i32", -2000000000);
    lp_gguf_set_f32(w, "t.f32", 0.15625f);
    assert_int_equal(lp_gguf_set_scalar(w, "t.u64", LP_GGUF_U64, &u64), 0);
    assert_int_equal(lp_gguf_set_scalar(w, "t.i64", LP_GGUF_I64, &i64), 0);
    assert_int_equal(lp_gguf_set_scalar(w, "t.f64", LP_GGUF_F64, &f64), 0);
    lp_gguf_set_bool(w, "t.bool_true", true);
    lp_gguf_set_bool(w, "t.bool_false", false);
    lp_gguf_set_str(w, "t.str", ref_str);
    lp_gguf_set_arr_str(w, "t.arr_str", ref_arr_str, 4);
    lp_gguf_set_arr_i32(w, "t.arr_i32", ref_arr_i32, 4);
    lp_gguf_set_arr_f32(w, "t.arr_f32", ref_arr_f32, 3);
    assert_int_equal(lp_gguf_set_arr(w, "t.arr_bool", LP_GGUF_BOOL, ref_arr_bool, 3), 0);
    assert_int_equal(lp_gguf_set_arr(w, "t.arr_u8", LP_GGUF_U8, ref_arr_u8, 3), 0);
    assert_int_equal(lp_gguf_set_arr(w, "t.arr_i64", LP_GGUF_I64, ref_arr_i64, 2), 0);
    assert_int_equal(lp_gguf_set_arr(w, "t.arr_f64", LP_GGUF_F64, ref_arr_f64, 2), 0);
    if (alignment != LP_GGUF_DEFAULT_ALIGNMENT) lp_gguf_set_u32(w, "general.alignment", alignment);
    for (size_t i = 0; i < N_REF_TENSORS; i++) {
        const ref_tensor *t = &ref_tensors[i];
        assert_int_equal(lp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne), (int)i);
        assert_int_equal(lp_gguf_writer_tensor_nbytes(w, (int)i), t->nbytes);
    }
    assert_int_equal(lp_gguf_writer_begin(w, path), 0);
    for (size_t i = 0; i < N_REF_TENSORS; i++) {
        uint8_t data[256];
        ref_tensor_bytes((int)i, data);
        /* in two pieces: streaming may split a tensor anywhere */
        size_t half = ref_tensors[i].nbytes / 2;
        assert_int_equal(lp_gguf_writer_tensor_data(w, (int)i, data, half), 0);
        assert_int_equal(lp_gguf_writer_tensor_data(w, (int)i, data + half, ref_tensors[i].nbytes - half), 0);
    }
    assert_int_equal(lp_gguf_writer_finish(w), 0);
    lp_gguf_writer_free(w);
}

static void expect_reference_values(const lp_gguf *g, uint32_t alignment) {
    size_t n_keys = alignment == LP_GGUF_DEFAULT_ALIGNMENT ? 21 : 22;
    assert_int_equal(lp_gguf_n_kv(g), n_keys);
    for (size_t i = 0; i < n_keys; i++) {
        assert_string_equal(lp_gguf_kv_key(g, (int64_t)i), ref_keys[i]);
        assert_int_equal(lp_gguf_find_kv(g, ref_keys[i]), (int64_t)i);
    }
    assert_int_equal(lp_gguf_find_kv(g, "t.missing"), -1);
    assert_int_equal(lp_gguf_kv_type(g, 1), LP_GGUF_U8);
    assert_int_equal(lp_gguf_kv_type(g, 14), LP_GGUF_ARRAY);
    assert_string_equal(lp_gguf_get_str(g, "general.architecture"), "testarch");

    uint32_t u32;
    int64_t i64;
    float f32;
    double f64;
    bool b;
    assert_int_equal(lp_gguf_get_u32(g, "t.u8", &u32), 0);
    assert_int_equal(u32, 200);
    assert_int_equal(lp_gguf_get_u32(g, "t.u16", &u32), 0);
    assert_int_equal(u32, 65000);
    assert_int_equal(lp_gguf_get_u32(g, "t.u32", &u32), 0);
    assert_int_equal(u32, 4000000000u);
    assert_int_equal(lp_gguf_get_i64(g, "t.i8", &i64), 0);
    assert_int_equal(i64, -100);
    assert_int_equal(lp_gguf_get_i64(g, "t.i16", &i64), 0);
    assert_int_equal(i64, -30000);
    assert_int_equal(lp_gguf_get_i64(g, "t.i32", &i64), 0);
    assert_int_equal(i64, -2000000000);
    assert_int_equal(lp_gguf_get_i64(g, "t.i64", &i64), 0);
    assert_true(i64 == -((int64_t)1 << 40) - 3);
    assert_int_equal(lp_gguf_get_i64(g, "t.u32", &i64), 0);
    assert_int_equal(i64, 4000000000);
    /* integer getters refuse values that do not fit, naming the key */
    assert_int_equal(lp_gguf_get_u32(g, "t.i8", &u32), -1);
    assert_non_null(strstr(lp_errmsg(), "'t.i8'"));
    assert_non_null(strstr(lp_errmsg(), "does not fit"));
    assert_int_equal(lp_gguf_get_i64(g, "t.u64", &i64), -1);
    assert_int_equal(lp_gguf_get_u32(g, "t.f32", &u32), -1);
    assert_non_null(strstr(lp_errmsg(), "expected an integer"));
    assert_int_equal(lp_gguf_get_u32(g, "t.missing", &u32), -1);
    assert_non_null(strstr(lp_errmsg(), "'t.missing': missing"));
    assert_int_equal(lp_gguf_get_f32(g, "t.f32", &f32), 0);
    assert_true(f32 == 0.15625f);
    assert_int_equal(lp_gguf_get_f32(g, "t.f64", &f32), -1);
    assert_int_equal(lp_gguf_get_f64(g, "t.f64", &f64), 0);
    assert_true(f64 == 3.141592653589793);
    assert_int_equal(lp_gguf_get_f64(g, "t.f32", &f64), 0);
    assert_true(f64 == 0.15625);
    assert_int_equal(lp_gguf_get_bool(g, "t.bool_true", &b), 0);
    assert_true(b);
    assert_int_equal(lp_gguf_get_bool(g, "t.bool_false", &b), 0);
    assert_false(b);
    assert_int_equal(lp_gguf_get_bool(g, "t.u8", &b), -1);
    assert_string_equal(lp_gguf_get_str(g, "t.str"), ref_str);
    assert_null(lp_gguf_get_str(g, "t.u8"));

    lp_gguf_vtype et;
    uint64_t n, len;
    assert_int_equal(lp_gguf_get_arr(g, "t.arr_str", &et, &n), 0);
    assert_int_equal(et, LP_GGUF_STRING);
    assert_int_equal(n, 4);
    for (uint64_t i = 0; i < n; i++) {
        const char *s = lp_gguf_get_arr_str(g, "t.arr_str", i, &len);
        assert_non_null(s);
        assert_int_equal(len, strlen(ref_arr_str[i]));
        assert_memory_equal(s, ref_arr_str[i], len);
    }
    assert_null(lp_gguf_get_arr_str(g, "t.arr_str", 4, &len));
    assert_null(lp_gguf_get_arr_str(g, "t.arr_i32", 0, &len));
    assert_null(lp_gguf_get_arr_data(g, "t.arr_str"));
    struct {
        const char *key;
        lp_gguf_vtype type;
        uint64_t n;
        const void *values;
        size_t bytes;
    } arrays[] = {
        {"t.arr_i32", LP_GGUF_I32, 4, ref_arr_i32, sizeof ref_arr_i32},
        {"t.arr_f32", LP_GGUF_F32, 3, ref_arr_f32, sizeof ref_arr_f32},
        {"t.arr_bool", LP_GGUF_BOOL, 3, ref_arr_bool, sizeof ref_arr_bool},
        {"t.arr_u8", LP_GGUF_U8, 3, ref_arr_u8, sizeof ref_arr_u8},
        {"t.arr_i64", LP_GGUF_I64, 2, ref_arr_i64, sizeof ref_arr_i64},
        {"t.arr_f64", LP_GGUF_F64, 2, ref_arr_f64, sizeof ref_arr_f64},
    };
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) {
        assert_int_equal(lp_gguf_get_arr(g, arrays[i].key, &et, &n), 0);
        assert_int_equal(et, arrays[i].type);
        assert_int_equal(n, arrays[i].n);
        const void *data = lp_gguf_get_arr_data(g, arrays[i].key);
        assert_non_null(data);
        assert_memory_equal(data, arrays[i].values, arrays[i].bytes);
    }
    assert_int_equal(lp_gguf_get_arr(g, "t.u8", &et, &n), -1);

    assert_int_equal(lp_gguf_alignment(g), alignment);
    assert_int_equal(lp_gguf_data_offset(g) % alignment, 0);
    assert_int_equal(lp_gguf_n_tensors(g), N_REF_TENSORS);
    uint64_t offset = 0;
    for (size_t i = 0; i < N_REF_TENSORS; i++) {
        const ref_tensor *r = &ref_tensors[i];
        const lp_gguf_tensor *t = lp_gguf_tensor_at(g, (int64_t)i);
        assert_non_null(t);
        assert_ptr_equal(lp_gguf_find_tensor(g, r->name), t);
        assert_string_equal(t->name, r->name);
        assert_int_equal(t->type, r->type);
        assert_int_equal(t->n_dims, r->n_dims);
        for (int d = 0; d < 4; d++) assert_int_equal(t->ne[d], r->ne[d]);
        assert_int_equal(t->nbytes, r->nbytes);
        assert_int_equal(t->offset, offset); /* packed in info order, as gguf.cpp requires */
        offset += (r->nbytes + alignment - 1) / alignment * alignment;
        uint8_t expect[256];
        ref_tensor_bytes((int)i, expect);
        assert_memory_equal(t->data, expect, r->nbytes);
    }
    const float *tok = lp_gguf_find_tensor(g, "tok.f32")->data;
    assert_true(tok[0] == -3.0f && tok[11] == 2.5f);
    assert_null(lp_gguf_find_tensor(g, "absent"));
    assert_null(lp_gguf_tensor_at(g, (int64_t)N_REF_TENSORS));
}

static void test_reads_gguf_py_reference_files(void **state) {
    const char *files[] = {LP_SOURCE_DIR "/tests/data/gguf_ref_py.gguf", LP_SOURCE_DIR "/tests/data/gguf_ref_py_align64.gguf"};
    const uint32_t alignments[] = {32, 64};
    for (int i = 0; i < 2; i++) {
        lp_gguf *g = lp_gguf_open(files[i]);
        if (!g) fail_msg("%s", lp_errmsg());
        assert_string_equal(lp_gguf_path(g), files[i]);
        expect_reference_values(g, alignments[i]);
        lp_gguf_close(g);
    }
}

static void test_writer_reproduces_gguf_py_bytes(void **state) {
    const char *files[] = {LP_SOURCE_DIR "/tests/data/gguf_ref_py.gguf", LP_SOURCE_DIR "/tests/data/gguf_ref_py_align64.gguf"};
    const uint32_t alignments[] = {32, 64};
    char *ours = tmp_path("ours.gguf");
    for (int i = 0; i < 2; i++) {
        write_reference_file(ours, alignments[i]);
        assert_files_equal(ours, files[i]);
    }
    free(ours);
}

static void test_copy_kv_and_tensors_reproduces_file(void **state) {
    const char *src = LP_SOURCE_DIR "/tests/data/gguf_ref_py_align64.gguf";
    char *dst = tmp_path("copy.gguf");
    lp_gguf *g = lp_gguf_open(src);
    assert_non_null(g);
    lp_gguf_writer *w = lp_gguf_writer_new();
    for (int64_t i = 0; i < lp_gguf_n_kv(g); i++) assert_int_equal(lp_gguf_copy_kv(w, g, i), 0);
    for (int64_t i = 0; i < lp_gguf_n_tensors(g); i++) {
        const lp_gguf_tensor *t = lp_gguf_tensor_at(g, i);
        assert_int_equal(lp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne), (int)i);
    }
    assert_int_equal(lp_gguf_writer_begin(w, dst), 0);
    for (int64_t i = 0; i < lp_gguf_n_tensors(g); i++) {
        const lp_gguf_tensor *t = lp_gguf_tensor_at(g, i);
        assert_int_equal(lp_gguf_writer_tensor_data(w, (int)i, t->data, t->nbytes), 0);
        lp_gguf_release(g, t);
    }
    assert_int_equal(lp_gguf_writer_finish(w), 0);
    size_t size;
    free(read_all(src, &size));
    assert_int_equal(lp_gguf_writer_bytes(w), size);
    lp_gguf_writer_free(w);
    lp_gguf_close(g);
    assert_files_equal(dst, src);
    free(dst);
}

/* ---------------- round trip of our own writer ---------------- */

typedef struct {
    const char *name;
    lp_type type;
    int n_dims;
    int64_t ne[4];
} rt_tensor;

/* Writes a file exercising every setter; returns the number of tensors written. */
static int write_roundtrip_file(const char *path, const rt_tensor *tensors, int n_tensors) {
    lp_gguf_writer *w = lp_gguf_writer_new();
    lp_gguf_set_str(w, "general.architecture", "qwen3");
    lp_gguf_set_u32(w, "qwen3.block_count", 7);
    lp_gguf_set_str(w, "general.name", "to be replaced");
    lp_gguf_set_i32(w, "rt.i32", -5);
    lp_gguf_set_f32(w, "rt.f32", -0.75f);
    lp_gguf_set_bool(w, "rt.bool", true);
    const char *tokens[] = {"<s>", "h\xc3\xa9", "", "\xe2\x96\x81world"};
    lp_gguf_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 4);
    const int32_t types[] = {3, 1, 1, 1};
    lp_gguf_set_arr_i32(w, "tokenizer.ggml.token_type", types, 4);
    const float scores[] = {0.0f, -1.5f, -2.5f, 1e30f};
    lp_gguf_set_arr_f32(w, "tokenizer.ggml.scores", scores, 4);
    lp_gguf_set_arr_f32(w, "rt.empty_arr", NULL, 0);
    for (int t = 0; t <= LP_GGUF_F64; t++) {
        if (t == LP_GGUF_STRING || t == LP_GGUF_ARRAY) continue;
        uint8_t value[8];
        for (int k = 0; k < 8; k++) value[k] = (uint8_t)(0x81 + 17 * t + k);
        if (t == LP_GGUF_BOOL) value[0] = 1;
        char key[32];
        snprintf(key, sizeof key, "rt.scalar.%s", lp_gguf_vtype_name((lp_gguf_vtype)t));
        assert_int_equal(lp_gguf_set_scalar(w, key, (lp_gguf_vtype)t, value), 0);
    }
    lp_gguf_set_str(w, "general.name", "replaced"); /* keeps its place */
    for (int i = 0; i < n_tensors; i++)
        assert_int_equal(lp_gguf_writer_add_tensor(w, tensors[i].name, tensors[i].type, tensors[i].n_dims, tensors[i].ne), i);
    assert_int_equal(lp_gguf_writer_begin(w, path), 0);
    for (int i = 0; i < n_tensors; i++) {
        uint64_t nbytes = lp_gguf_writer_tensor_nbytes(w, i);
        uint8_t *data = lp_xmalloc((size_t)nbytes);
        for (uint64_t k = 0; k < nbytes; k++) data[k] = pattern_byte(k, 13 + 2 * (unsigned)i, (unsigned)i);
        /* uneven pieces, including empty ones */
        uint64_t done = 0, piece = 1;
        while (done < nbytes) {
            uint64_t n = piece < nbytes - done ? piece : nbytes - done;
            assert_int_equal(lp_gguf_writer_tensor_data(w, i, data + done, (size_t)n), 0);
            done += n;
            piece = piece * 3 + 1;
        }
        free(data);
    }
    assert_int_equal(lp_gguf_writer_finish(w), 0);
    lp_gguf_writer_free(w);
    return n_tensors;
}

static void test_roundtrip_every_type(void **state) {
    rt_tensor tensors[] = {
        {"token_embd.weight", LP_TYPE_F32, 2, {64, 3, 1, 1}},
        {"blk.0.attn_q.weight", LP_TYPE_F16, 2, {32, 5, 1, 1}},
        {"blk.0.ffn_gate_exps.weight", LP_TYPE_Q8_0, 3, {64, 3, 2, 1}},
        {"blk.0.attn_k.weight", LP_TYPE_BF16, 4, {2, 3, 1, 2}},
        {"empty", LP_TYPE_F32, 2, {0, 4, 1, 1}},
        {"blk.0.ffn_down.weight", LP_TYPE_Q4_K, 2, {256, 2, 1, 1}},
        {"output_norm.weight", LP_TYPE_F32, 1, {8, 1, 1, 1}}, /* 32 bytes: no trailing padding */
    };
    int n = (int)(sizeof tensors / sizeof tensors[0]);
    char *a = tmp_path("rt_a.gguf"), *b = tmp_path("rt_b.gguf");
    write_roundtrip_file(a, tensors, n);
    write_roundtrip_file(b, tensors, n);
    assert_files_equal(a, b); /* deterministic */

    lp_gguf *g = lp_gguf_open(a);
    if (!g) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_gguf_n_kv(g), 10 + 11); /* named keys + one per scalar type */
    assert_string_equal(lp_gguf_kv_key(g, 2), "general.name");
    assert_string_equal(lp_gguf_get_str(g, "general.name"), "replaced");
    uint32_t u32;
    int64_t i64;
    float f32;
    bool bv;
    assert_int_equal(lp_gguf_get_u32(g, "qwen3.block_count", &u32), 0);
    assert_int_equal(u32, 7);
    assert_int_equal(lp_gguf_get_i64(g, "rt.i32", &i64), 0);
    assert_int_equal(i64, -5);
    assert_int_equal(lp_gguf_get_f32(g, "rt.f32", &f32), 0);
    assert_true(f32 == -0.75f);
    assert_int_equal(lp_gguf_get_bool(g, "rt.bool", &bv), 0);
    assert_true(bv);
    uint64_t count, len;
    lp_gguf_vtype et;
    assert_int_equal(lp_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &count), 0);
    assert_int_equal(count, 4);
    const char *tokens[] = {"<s>", "h\xc3\xa9", "", "\xe2\x96\x81world"};
    for (uint64_t i = 0; i < 4; i++) {
        const char *s = lp_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &len);
        assert_int_equal(len, strlen(tokens[i]));
        assert_memory_equal(s, tokens[i], len);
    }
    const int32_t types[] = {3, 1, 1, 1};
    assert_memory_equal(lp_gguf_get_arr_data(g, "tokenizer.ggml.token_type"), types, sizeof types);
    const float scores[] = {0.0f, -1.5f, -2.5f, 1e30f};
    assert_memory_equal(lp_gguf_get_arr_data(g, "tokenizer.ggml.scores"), scores, sizeof scores);
    assert_int_equal(lp_gguf_get_arr(g, "rt.empty_arr", &et, &count), 0);
    assert_int_equal(et, LP_GGUF_F32);
    assert_int_equal(count, 0);
    for (int t = 0; t <= LP_GGUF_F64; t++) {
        if (t == LP_GGUF_STRING || t == LP_GGUF_ARRAY) continue;
        char key[32];
        snprintf(key, sizeof key, "rt.scalar.%s", lp_gguf_vtype_name((lp_gguf_vtype)t));
        int64_t i = lp_gguf_find_kv(g, key);
        assert_true(i >= 0);
        assert_int_equal(lp_gguf_kv_type(g, i), t);
    }
    assert_int_equal(lp_gguf_get_i64(g, "rt.scalar.INT16", &i64), 0);
    assert_int_equal(i64, (int16_t)((0x81 + 17 * 3) | (0x81 + 17 * 3 + 1) << 8));
    assert_int_equal(lp_gguf_get_i64(g, "rt.scalar.UINT8", &i64), 0);
    assert_int_equal(i64, 0x81);

    assert_int_equal(lp_gguf_n_tensors(g), n);
    for (int i = 0; i < n; i++) {
        const lp_gguf_tensor *t = lp_gguf_tensor_at(g, i);
        assert_string_equal(t->name, tensors[i].name);
        assert_int_equal(t->type, tensors[i].type);
        assert_int_equal(t->n_dims, tensors[i].n_dims);
        for (int d = 0; d < 4; d++) assert_int_equal(t->ne[d], tensors[i].ne[d]);
        assert_int_equal(t->offset % 32, 0);
        for (uint64_t k = 0; k < t->nbytes; k++)
            if (((const uint8_t *)t->data)[k] != pattern_byte(k, 13 + 2 * (unsigned)i, (unsigned)i))
                fail_msg("tensor %s byte %llu differs", t->name, (unsigned long long)k);
    }
    assert_int_equal(lp_gguf_find_tensor(g, "empty")->nbytes, 0);
    assert_int_equal(lp_gguf_find_tensor(g, "blk.0.ffn_down.weight")->nbytes, 2 * 144);
    assert_int_equal(lp_gguf_find_tensor(g, "blk.0.ffn_gate_exps.weight")->nbytes, 6 * 2 * 34);
    lp_gguf_close(g);
    free(a);
    free(b);
}

static void test_custom_alignment(void **state) {
    char *path = tmp_path("align.gguf");
    const int64_t ne[] = {3, 1, 1, 1}, ne2[] = {40, 1, 1, 1};
    lp_gguf_writer *w = lp_gguf_writer_new();
    lp_gguf_set_u32(w, "general.alignment", 256);
    lp_gguf_writer_add_tensor(w, "a", LP_TYPE_F32, 1, ne);
    lp_gguf_writer_add_tensor(w, "b", LP_TYPE_F32, 1, ne2);
    assert_int_equal(lp_gguf_writer_begin(w, path), 0);
    float data[40] = {1, 2, 3};
    assert_int_equal(lp_gguf_writer_tensor_data(w, 0, data, 12), 0);
    assert_int_equal(lp_gguf_writer_tensor_data(w, 1, data, 160), 0);
    assert_int_equal(lp_gguf_writer_finish(w), 0);
    lp_gguf_writer_free(w);
    lp_gguf *g = lp_gguf_open(path);
    assert_non_null(g);
    assert_int_equal(lp_gguf_alignment(g), 256);
    assert_int_equal(lp_gguf_data_offset(g), 256);
    assert_int_equal(lp_gguf_find_tensor(g, "b")->offset, 256);
    size_t size;
    free(read_all(path, &size));
    assert_int_equal(size, 256 + 256 + 256); /* header, a + padding, b + padding */
    lp_gguf_close(g);

    /* not a power of two, or not UINT32: refused before anything is written */
    w = lp_gguf_writer_new();
    lp_gguf_set_u32(w, "general.alignment", 48);
    assert_int_equal(lp_gguf_writer_begin(w, path), -1);
    assert_non_null(strstr(lp_errmsg(), "power of two"));
    lp_gguf_writer_free(w);
    w = lp_gguf_writer_new();
    lp_gguf_set_i32(w, "general.alignment", 64);
    assert_int_equal(lp_gguf_writer_begin(w, path), -1);
    assert_non_null(strstr(lp_errmsg(), "UINT32"));
    lp_gguf_writer_free(w);
    free(path);
}

static void test_writer_misuse(void **state) {
    char *path = tmp_path("misuse.gguf");
    const int64_t ne[] = {32, 2, 1, 1}, bad_ne[] = {33, 1, 1, 1};
    char long_name[80];
    memset(long_name, 'x', 64);
    long_name[64] = 0;
    lp_gguf_writer *w = lp_gguf_writer_new();
    assert_int_equal(lp_gguf_writer_add_tensor(w, long_name, LP_TYPE_F32, 1, ne), -1);
    assert_non_null(strstr(lp_errmsg(), "longer than 63"));
    long_name[63] = 0;
    assert_int_equal(lp_gguf_writer_add_tensor(w, long_name, LP_TYPE_F32, 1, ne), 0);
    assert_int_equal(lp_gguf_writer_add_tensor(w, long_name, LP_TYPE_F32, 1, ne), -1);
    assert_non_null(strstr(lp_errmsg(), "duplicate"));
    assert_int_equal(lp_gguf_writer_add_tensor(w, "", LP_TYPE_F32, 1, ne), -1);
    assert_int_equal(lp_gguf_writer_add_tensor(w, "z", LP_TYPE_F32, 0, ne), -1);
    assert_int_equal(lp_gguf_writer_add_tensor(w, "z", LP_TYPE_F32, 5, ne), -1);
    assert_int_equal(lp_gguf_writer_add_tensor(w, "z", LP_TYPE_Q8_0, 1, bad_ne), -1);
    assert_non_null(strstr(lp_errmsg(), "block size"));
    assert_int_equal(lp_gguf_writer_add_tensor(w, "z", (lp_type)4, 1, ne), -1);
    assert_int_equal(lp_gguf_writer_add_tensor(w, "z", (lp_type)1000, 1, ne), -1);
    assert_int_equal(lp_gguf_writer_add_tensor(w, "second", LP_TYPE_F32, 2, ne), 1);
    assert_int_equal(lp_gguf_writer_begin(w, path), 0);
    float data[64] = {0};
    assert_int_equal(lp_gguf_writer_tensor_data(w, 1, data, 8), -1); /* out of order */
    assert_non_null(strstr(lp_errmsg(), "out of order"));
    assert_int_equal(lp_gguf_writer_tensor_data(w, 0, data, 129), -1); /* too many bytes */
    assert_int_equal(lp_gguf_writer_tensor_data(w, 0, data, 128), 0);
    assert_int_equal(lp_gguf_writer_tensor_data(w, 1, data, 100), 0);
    assert_int_equal(lp_gguf_writer_finish(w), -1); /* 'second' incomplete */
    assert_non_null(strstr(lp_errmsg(), "'second'"));
    lp_gguf_writer_free(w);
    assert_false(lp_path_exists(path)); /* nothing under the final name */

    w = lp_gguf_writer_new();
    lp_gguf_set_u32(w, "", 1);
    assert_int_equal(lp_gguf_writer_begin(w, path), -1);
    assert_non_null(strstr(lp_errmsg(), "empty key"));
    lp_gguf_writer_free(w);

    w = lp_gguf_writer_new();
    assert_int_equal(lp_gguf_writer_begin(w, path), 0);
    lp_gguf_set_u32(w, "late", 1);
    assert_int_equal(lp_gguf_writer_finish(w), -1);
    assert_non_null(strstr(lp_errmsg(), "after the header"));
    lp_gguf_writer_free(w);
    assert_false(lp_path_exists(path));

    w = lp_gguf_writer_new(); /* freed mid-stream: temp file removed, nothing committed */
    lp_gguf_writer_add_tensor(w, "t", LP_TYPE_F32, 1, ne);
    assert_int_equal(lp_gguf_writer_begin(w, path), 0);
    lp_gguf_writer_free(w);
    assert_false(lp_path_exists(path));
    DIR *d = opendir(tmp_dir);
    for (struct dirent *e; (e = readdir(d));) assert_null(strstr(e->d_name, "misuse.gguf.tmp"));
    closedir(d);
    free(path);
}

/* ---------------- malformed input ---------------- */

static void expect_open_fails(const char *path, const char *what) {
    lp_err_clear();
    lp_gguf *g = lp_gguf_open(path);
    if (g) {
        lp_gguf_close(g);
        fail_msg("%s: opened although %s", path, what);
    }
    if (!strstr(lp_errmsg(), path)) fail_msg("message does not name the file: %s", lp_errmsg());
    if (!strstr(lp_errmsg(), what)) fail_msg("expected '%s' in: %s", what, lp_errmsg());
}

static void test_every_truncation_fails(void **state) {
    rt_tensor tensors[] = {
        {"a", LP_TYPE_Q8_0, 2, {32, 2, 1, 1}},
        {"output_norm.weight", LP_TYPE_F32, 1, {8, 1, 1, 1}}, /* last tensor ends on an alignment boundary */
    };
    char *full = tmp_path("full.gguf"), *cut = tmp_path("cut.gguf");
    write_roundtrip_file(full, tensors, 2);
    size_t size;
    uint8_t *bytes = read_all(full, &size);
    lp_gguf *g = lp_gguf_open(full);
    assert_non_null(g);
    lp_gguf_close(g);
    for (size_t n = 0; n < size; n++) {
        assert_int_equal(lp_write_file_atomic(cut, bytes, n), 0);
        lp_err_clear();
        g = lp_gguf_open(cut);
        if (g) fail_msg("file cut to %zu of %zu bytes was accepted", n, size);
        if (!strstr(lp_errmsg(), cut) ||
            (!strstr(lp_errmsg(), "past end of file") && !strstr(lp_errmsg(), "more than the file can hold")))
            fail_msg("cut %zu: unexpected message: %s", n, lp_errmsg());
    }
    free(bytes);
    free(full);
    free(cut);
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void put(bytes *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = lp_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void put_u32(bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_str(bytes *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_header(bytes *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void put_kv_u32(bytes *b, const char *key, uint32_t type, uint32_t v) {
    put_str(b, key);
    put_u32(b, type);
    put_u32(b, v);
}
static void put_tensor_info(bytes *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                            uint64_t offset) {
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) put_u64(b, ne[d]);
    put_u32(b, type);
    put_u64(b, offset);
}
/* Zero padding to 32 and `n` data bytes. */
static void put_data(bytes *b, size_t n) {
    static const uint8_t zeros[64];
    put(b, zeros, (32 - b->len % 32) % 32);
    for (size_t i = 0; i < n; i += 64) put(b, zeros, n - i < 64 ? n - i : 64);
}

static void check_case(const char *name, bytes *b, const char *what) {
    char *path = tmp_path(name);
    assert_int_equal(lp_write_file_atomic(path, b->p, b->len), 0);
    expect_open_fails(path, what);
    free(path);
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* A file with one F32 tensor of shape ne (n_dims given), type and offset as given, 32 data bytes. */
static void one_tensor_case(const char *file, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset,
                            const char *what) {
    bytes b = {0};
    put_header(&b, 3, 1, 0);
    put_tensor_info(&b, "t", n_dims, ne, type, offset);
    put_data(&b, 32);
    check_case(file, &b, what);
}

static void test_malformed_headers_and_kvs(void **state) {
    bytes b = {0};
    check_case("empty.gguf", &b, "past end of file");

    put(&b, "GGUX", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 0);
    check_case("bad_magic.gguf", &b, "bad magic");

    put_header(&b, 1, 0, 0);
    check_case("v1.gguf", &b, "unsupported GGUF version 1");
    put_header(&b, 4, 0, 0);
    check_case("v4.gguf", &b, "unsupported GGUF version 4");
    put_header(&b, 0x03000000, 0, 0);
    check_case("big_endian.gguf", &b, "big-endian");

    put_header(&b, 3, 0, (uint64_t)1 << 62);
    check_case("huge_kv_count.gguf", &b, "kv_count");
    put_header(&b, 3, UINT64_MAX, 0);
    check_case("huge_tensor_count.gguf", &b, "tensor_count");

    put_header(&b, 3, 0, 1);
    put_u64(&b, (uint64_t)1 << 40); /* key length */
    put(&b, "abcdefgh", 8);
    check_case("key_past_eof.gguf", &b, "key length 1099511627776 past end of file");

    put_header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, LP_GGUF_STRING);
    put_u64(&b, 100);
    put(&b, "short", 5);
    check_case("string_past_eof.gguf", &b, "string value length 100 past end of file");

    put_header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, LP_GGUF_ARRAY);
    put_u32(&b, LP_GGUF_ARRAY);
    put_u64(&b, 1);
    put_u32(&b, LP_GGUF_U8);
    put_u64(&b, 1);
    put(&b, "x", 1);
    check_case("nested_array.gguf", &b, "nested arrays");

    put_header(&b, 3, 0, 2);
    put_kv_u32(&b, "dup.key", LP_GGUF_U32, 1);
    put_kv_u32(&b, "dup.key", LP_GGUF_U32, 2);
    check_case("dup_key.gguf", &b, "key 'dup.key': duplicate key");

    put_header(&b, 3, 0, 1);
    put_kv_u32(&b, "", LP_GGUF_U32, 1);
    check_case("empty_key.gguf", &b, "empty key");

    put_header(&b, 3, 0, 1);
    put_u64(&b, 3);
    put(&b, "a\0b", 3); /* a key with an embedded NUL byte */
    put_u32(&b, LP_GGUF_U8);
    put(&b, "x", 1);
    check_case("nul_key.gguf", &b, "NUL byte");

    put_header(&b, 3, 0, 1);
    put_kv_u32(&b, "k", 13, 0);
    check_case("bad_vtype.gguf", &b, "unknown value type 13");

    put_header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, LP_GGUF_ARRAY);
    put_u32(&b, 99);
    put_u64(&b, 0);
    check_case("bad_elem_type.gguf", &b, "unknown array element type 99");

    put_header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, LP_GGUF_ARRAY);
    put_u32(&b, LP_GGUF_U32);
    put_u64(&b, (uint64_t)1 << 61);
    put_u32(&b, 0);
    check_case("huge_array.gguf", &b, "past end of file");

    put_header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, LP_GGUF_ARRAY);
    put_u32(&b, LP_GGUF_STRING);
    put_u64(&b, UINT64_MAX);
    put_str(&b, "one");
    check_case("huge_str_array.gguf", &b, "past end of file");

    put_header(&b, 3, 0, 1);
    put_kv_u32(&b, "general.alignment", LP_GGUF_I32, 32);
    check_case("align_type.gguf", &b, "expected UINT32");
    put_header(&b, 3, 0, 1);
    put_kv_u32(&b, "general.alignment", LP_GGUF_U32, 48);
    check_case("align_48.gguf", &b, "not a power of two");
    put_header(&b, 3, 0, 1);
    put_kv_u32(&b, "general.alignment", LP_GGUF_U32, 0);
    check_case("align_0.gguf", &b, "not a power of two");
}

static void test_malformed_tensor_infos(void **state) {
    const uint64_t ne8[] = {8}, ne4[] = {2, 2, 2, 2, 2};
    bytes b = {0};
    put_header(&b, 3, 2, 0);
    put_tensor_info(&b, "same", 1, ne8, LP_TYPE_F32, 0);
    put_tensor_info(&b, "same", 1, ne8, LP_TYPE_F32, 32);
    put_data(&b, 64);
    check_case("dup_tensor.gguf", &b, "tensor 'same': duplicate tensor name");

    char name64[65];
    memset(name64, 'n', 64);
    name64[64] = 0;
    put_header(&b, 3, 1, 0);
    put_tensor_info(&b, name64, 1, ne8, LP_TYPE_F32, 0);
    put_data(&b, 32);
    check_case("long_name.gguf", &b, "name is 64 bytes (at most 63 allowed)");

    one_tensor_case("ndims0.gguf", 0, ne8, LP_TYPE_F32, 0, "n_dims 0");
    one_tensor_case("ndims5.gguf", 5, ne4, LP_TYPE_F32, 0, "n_dims 5");
    const uint64_t neg[] = {UINT64_MAX};
    one_tensor_case("neg_dim.gguf", 1, neg, LP_TYPE_F32, 0, "negative ne[0]");
    one_tensor_case("type4.gguf", 1, ne8, 4, 0, "unknown or unsupported type");
    one_tensor_case("type99.gguf", 1, ne8, 99, 0, "unknown or unsupported type");
    const uint64_t ne33[] = {33};
    one_tensor_case("block.gguf", 1, ne33, LP_TYPE_Q8_0, 0, "block size");
    const uint64_t big[] = {(uint64_t)1 << 31, (uint64_t)1 << 31, (uint64_t)1 << 31, (uint64_t)1 << 31};
    one_tensor_case("overflow.gguf", 4, big, LP_TYPE_F32, 0, "overflows");
    one_tensor_case("misaligned.gguf", 1, ne8, LP_TYPE_F32, 4, "tensor 't': offset 4 is not a multiple of the alignment 32");
    one_tensor_case("past_eof.gguf", 1, ne8, LP_TYPE_F32, 32, "tensor 't': offset past end of file");
    const uint64_t ne9[] = {9};
    one_tensor_case("data_past_eof.gguf", 1, ne9, LP_TYPE_F32, 0, "tensor 't': offset past end of file");
    one_tensor_case("huge_offset.gguf", 1, ne8, LP_TYPE_F32, UINT64_MAX - 31, "offset past end of file");

    /* sanity: the same builder with valid values opens */
    char *path = tmp_path("valid.gguf");
    put_header(&b, 3, 1, 0);
    put_tensor_info(&b, "t", 1, ne8, LP_TYPE_F32, 0);
    put_data(&b, 32);
    assert_int_equal(lp_write_file_atomic(path, b.p, b.len), 0);
    lp_gguf *g = lp_gguf_open(path);
    if (!g) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_gguf_find_tensor(g, "t")->nbytes, 32);
    lp_gguf_close(g);
    free(b.p);
    free(path);
}

static void test_missing_file(void **state) {
    assert_null(lp_gguf_open("/nonexistent/x.gguf"));
    assert_non_null(strstr(lp_errmsg(), "/nonexistent/x.gguf"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_gguf_py_reference_files),
        cmocka_unit_test(test_writer_reproduces_gguf_py_bytes),
        cmocka_unit_test(test_copy_kv_and_tensors_reproduces_file),
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_custom_alignment),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_malformed_headers_and_kvs),
        cmocka_unit_test(test_malformed_tensor_infos),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
