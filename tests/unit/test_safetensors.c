/* test_safetensors.c — safetensors reader on the real sharded fixtures (tiny-qwen3 bf16,
 * tiny-gptoss MXFP4 U8 blocks), writer round trips and determinism, and malformed shards and
 * indexes (each must fail with a message naming the file and the problem). */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/err.h"
#include "core/fileio.h"
#include "formats/safetensors.h"

#define QWEN3_DIR LP_FIXTURES_DIR "/models/tiny-qwen3"
#define GPTOSS_DIR LP_FIXTURES_DIR "/models/tiny-gptoss"

static char tmp_dir[] = "/tmp/lp_test_st_XXXXXX";

static char *tmp_path(const char *name) { return lp_path_join(tmp_dir, name); }

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        for (struct dirent *e; (e = readdir(d));) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char *p = lp_path_join(path, e->d_name);
            remove_tree(p);
            free(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int setup(void **state) { return mkdtemp(tmp_dir) ? 0 : -1; }
static int teardown(void **state) {
    remove_tree(tmp_dir);
    return 0;
}

static json_t *load_json(const char *path) {
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) fail_msg("%s: %s", path, err.text);
    return j;
}

static void expect_shape(const lp_st_tensor *t, int n_dims, int64_t d0, int64_t d1) {
    assert_int_equal(t->n_dims, n_dims);
    assert_int_equal(t->shape[0], d0);
    if (n_dims > 1) assert_int_equal(t->shape[1], d1);
}

/* Shape the HF Qwen3 layout implies for a tensor name, from config.json. */
static void expect_qwen3_shape(const lp_st_tensor *t, const json_t *cfg) {
    int64_t hidden = json_integer_value(json_object_get(cfg, "hidden_size"));
    int64_t ffn = json_integer_value(json_object_get(cfg, "intermediate_size"));
    int64_t vocab = json_integer_value(json_object_get(cfg, "vocab_size"));
    int64_t head_dim = json_integer_value(json_object_get(cfg, "head_dim"));
    int64_t q_dim = json_integer_value(json_object_get(cfg, "num_attention_heads")) * head_dim;
    int64_t kv_dim = json_integer_value(json_object_get(cfg, "num_key_value_heads")) * head_dim;
    const char *n = t->name;
    if (!strcmp(n, "model.embed_tokens.weight") || !strcmp(n, "lm_head.weight")) return expect_shape(t, 2, vocab, hidden);
    if (!strcmp(n, "model.norm.weight") || strstr(n, "layernorm.weight")) return expect_shape(t, 1, hidden, 0);
    if (strstr(n, "q_norm.weight") || strstr(n, "k_norm.weight")) return expect_shape(t, 1, head_dim, 0);
    if (strstr(n, "q_proj.weight")) return expect_shape(t, 2, q_dim, hidden);
    if (strstr(n, "k_proj.weight") || strstr(n, "v_proj.weight")) return expect_shape(t, 2, kv_dim, hidden);
    if (strstr(n, "o_proj.weight")) return expect_shape(t, 2, hidden, q_dim);
    if (strstr(n, "gate_proj.weight") || strstr(n, "up_proj.weight")) return expect_shape(t, 2, ffn, hidden);
    if (strstr(n, "down_proj.weight")) return expect_shape(t, 2, hidden, ffn);
    fail_msg("unexpected tensor %s", n);
}

/* Every tensor of the index is where the index says, with the dtype and byte total it promises. */
static void expect_matches_index(const lp_checkpoint *c, const char *dir) {
    char *index_path = lp_path_join(dir, "model.safetensors.index.json");
    json_t *index = load_json(index_path);
    json_t *weight_map = json_object_get(index, "weight_map");
    assert_int_equal(lp_checkpoint_n_tensors(c), json_object_size(weight_map));
    const char *name;
    json_t *file;
    json_object_foreach(weight_map, name, file) {
        const lp_st_tensor *t = lp_checkpoint_find(c, name);
        if (!t) fail_msg("%s missing", name);
        assert_string_equal(lp_path_basename(lp_checkpoint_shard_path(c, t->shard)), json_string_value(file));
        int64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
        assert_int_equal(t->n_elements, n);
        assert_int_equal(t->nbytes, (uint64_t)n * lp_st_dtype_size(t->dtype));
    }
    json_t *total = json_object_get(json_object_get(index, "metadata"), "total_size");
    if (total) assert_int_equal(lp_checkpoint_total_bytes(c), json_integer_value(total));
    for (int64_t i = 1; i < lp_checkpoint_n_tensors(c); i++)
        assert_true(strcmp(lp_checkpoint_tensor_at(c, i - 1)->name, lp_checkpoint_tensor_at(c, i)->name) < 0);
    assert_null(lp_checkpoint_tensor_at(c, lp_checkpoint_n_tensors(c)));
    json_decref(index);
    free(index_path);
}

static void test_tiny_qwen3_sharded(void **state) {
    lp_checkpoint *c = lp_checkpoint_open(QWEN3_DIR);
    if (!c) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_checkpoint_n_shards(c), 2);
    assert_string_equal(lp_path_basename(lp_checkpoint_shard_path(c, 0)), "model-00001-of-00002.safetensors");
    assert_string_equal(lp_path_basename(lp_checkpoint_shard_path(c, 1)), "model-00002-of-00002.safetensors");
    assert_int_equal(lp_checkpoint_n_tensors(c), 69);
    expect_matches_index(c, QWEN3_DIR);
    assert_int_equal(lp_checkpoint_total_bytes(c), 17440000);
    json_t *cfg = load_json(QWEN3_DIR "/config.json");
    for (int64_t i = 0; i < lp_checkpoint_n_tensors(c); i++) {
        const lp_st_tensor *t = lp_checkpoint_tensor_at(c, i);
        assert_int_equal(t->dtype, LP_ST_BF16);
        expect_qwen3_shape(t, cfg);
    }
    json_decref(cfg);
    assert_string_equal(lp_checkpoint_metadata(c, 0, "format"), "pt");
    assert_null(lp_checkpoint_metadata(c, 0, "absent"));

    /* bf16 -> f32, checked against numpy on the same bytes */
    const lp_st_tensor *norm = lp_checkpoint_find(c, "model.norm.weight");
    float v[4];
    assert_int_equal(lp_st_to_f32(norm, 0, 4, v), 0);
    assert_true(v[0] == 2.0625f && v[1] == 2.125f && v[2] == 2.0625f && v[3] == 2.109375f);
    const lp_st_tensor *embd = lp_checkpoint_find(c, "model.embed_tokens.weight");
    expect_shape(embd, 2, 8192, 256);
    assert_int_equal(lp_st_to_f32(embd, 1000, 4, v), 0);
    assert_true(v[0] == -0.0625f && v[1] == -0.0224609375f && v[2] == 0.00830078125f && v[3] == -0.01458740234375f);
    assert_int_equal(lp_st_to_f32(embd, 8192 * 256 - 2, 4, v), -1);
    assert_non_null(strstr(lp_errmsg(), "model.embed_tokens.weight"));
    lp_checkpoint_release(c, embd);
    assert_null(lp_checkpoint_find(c, "model.nope"));
    lp_checkpoint_close(c);
}

static void test_tiny_gptoss_mxfp4(void **state) {
    lp_checkpoint *c = lp_checkpoint_open(GPTOSS_DIR);
    if (!c) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_checkpoint_n_shards(c), 2);
    assert_int_equal(lp_checkpoint_n_tensors(c), 79);
    expect_matches_index(c, GPTOSS_DIR); /* this index has no total_size */
    /* Sum of both shards' data buffers (last data_offsets END of each shard). */
    assert_int_equal(lp_checkpoint_total_bytes(c), 12522576 + 4265552);
    for (int layer = 0; layer < 4; layer++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.gate_up_proj_blocks", layer);
        const lp_st_tensor *t = lp_checkpoint_find(c, name);
        assert_non_null(t);
        assert_int_equal(t->dtype, LP_ST_U8);
        assert_int_equal(t->n_dims, 4);
        assert_true(t->shape[0] == 16 && t->shape[1] == 512 && t->shape[2] == 8 && t->shape[3] == 16);
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.down_proj_scales", layer);
        t = lp_checkpoint_find(c, name);
        assert_int_equal(t->dtype, LP_ST_U8);
        assert_true(t->n_dims == 3 && t->shape[0] == 16 && t->shape[1] == 256 && t->shape[2] == 8);
        float f;
        assert_int_equal(lp_st_to_f32(t, 0, 1, &f), -1);
        assert_non_null(strstr(lp_errmsg(), name));
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.gate_up_proj_bias", layer);
        t = lp_checkpoint_find(c, name);
        assert_int_equal(t->dtype, LP_ST_BF16);
        expect_shape(t, 2, 16, 512);
    }
    lp_checkpoint_close(c);

    /* a single shard opened directly */
    c = lp_checkpoint_open(GPTOSS_DIR "/model-00002-of-00002.safetensors");
    if (!c) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_checkpoint_n_shards(c), 1);
    assert_int_equal(lp_checkpoint_total_bytes(c), 4265552);
    assert_non_null(lp_checkpoint_find(c, "model.layers.3.mlp.experts.down_proj_blocks"));
    assert_null(lp_checkpoint_find(c, "model.embed_tokens.weight"));
    lp_checkpoint_close(c);

    /* the index file itself may be given */
    c = lp_checkpoint_open(GPTOSS_DIR "/model.safetensors.index.json");
    if (!c) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_checkpoint_n_tensors(c), 79);
    lp_checkpoint_close(c);
}

/* ---------------- writer ---------------- */

typedef struct {
    const char *name;
    lp_st_dtype dtype;
    int n_dims;
    int64_t shape[3];
} wt;

static const wt written[] = {
    {"w.f32", LP_ST_F32, 2, {3, 4}}, {"w.f16", LP_ST_F16, 1, {6}},      {"w.bf16", LP_ST_BF16, 2, {2, 3}},
    {"w.f64", LP_ST_F64, 1, {2}},    {"scalar", LP_ST_I32, 0, {0}},     {"empty", LP_ST_U8, 2, {0, 5}},
    {"a.u8", LP_ST_U8, 3, {2, 1, 3}}, {"b.i64", LP_ST_I64, 1, {1}},     {"flags", LP_ST_BOOL, 1, {3}},
};
#define N_WRITTEN (int)(sizeof written / sizeof written[0])

static uint8_t data_byte(int t, size_t k) { return (uint8_t)(k * 29 + 5 * t + 1); }

/* Float tensors hold known values so lp_st_to_f32 can be checked; others a byte pattern. */
static void tensor_bytes(int t, uint8_t *out, size_t n) {
    static const float f32[12] = {0, 1, -2, 0.5f, 3.25f, -0.125f, 1e-3f, 65504, -7, 8, 9.5f, -10};
    static const uint16_t f16[6] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000}; /* 1 -2 .5 65504 2^-24 -0 */
    static const uint16_t bf16[6] = {0x3f80, 0xc040, 0x4049, 0x0000, 0xbf00, 0x7f7f};
    static const double f64[2] = {1.5, -1e300};
    switch (t) {
    case 0: memcpy(out, f32, n); break;
    case 1: memcpy(out, f16, n); break;
    case 2: memcpy(out, bf16, n); break;
    case 3: memcpy(out, f64, n); break;
    default:
        for (size_t k = 0; k < n; k++) out[k] = data_byte(t, k);
    }
}

static void write_test_file(const char *path, bool with_metadata) {
    lp_st_writer *w = lp_st_writer_new();
    if (with_metadata) {
        lp_st_writer_set_metadata(w, "format", "pt");
        lp_st_writer_set_metadata(w, "note", "caf\xc3\xa9 \"quoted\"");
    }
    for (int i = 0; i < N_WRITTEN; i++)
        assert_int_equal(lp_st_writer_add(w, written[i].name, written[i].dtype, written[i].n_dims, written[i].shape), i);
    assert_int_equal(lp_st_writer_begin(w, path), 0);
    for (int i = 0; i < N_WRITTEN; i++) {
        int64_t n = 1;
        for (int d = 0; d < written[i].n_dims; d++) n *= written[i].shape[d];
        size_t nbytes = (size_t)n * lp_st_dtype_size(written[i].dtype);
        uint8_t buf[64];
        tensor_bytes(i, buf, nbytes);
        for (size_t k = 0; k < nbytes; k++) assert_int_equal(lp_st_writer_data(w, i, buf + k, 1), 0);
    }
    assert_int_equal(lp_st_writer_finish(w), 0);
    lp_st_writer_free(w);
}

static void test_writer_round_trip(void **state) {
    char *a = tmp_path("a.safetensors"), *b = tmp_path("b.safetensors");
    write_test_file(a, true);
    write_test_file(b, true);
    size_t na, nb;
    char *da = lp_read_file(a, &na), *db = lp_read_file(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na); /* deterministic */

    uint64_t header_len;
    memcpy(&header_len, da, 8);
    assert_int_equal(header_len % 8, 0);
    const char *expect_start = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\xc3\xa9 \\\"quoted\\\"\"},"
                               "\"w.f32\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48]},"
                               "\"w.f16\":{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[48,60]},";
    assert_memory_equal(da + 8, expect_start, strlen(expect_start));
    assert_non_null(strstr(da + 8, "\"scalar\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[88,92]}"));
    free(da);
    free(db);

    lp_checkpoint *c = lp_checkpoint_open(a);
    if (!c) fail_msg("%s", lp_errmsg());
    assert_string_equal(lp_checkpoint_metadata(c, 0, "format"), "pt");
    assert_string_equal(lp_checkpoint_metadata(c, 0, "note"), "caf\xc3\xa9 \"quoted\"");
    assert_int_equal(lp_checkpoint_n_tensors(c), N_WRITTEN);
    for (int i = 0; i < N_WRITTEN; i++) {
        const lp_st_tensor *t = lp_checkpoint_find(c, written[i].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, written[i].dtype);
        assert_int_equal(t->n_dims, written[i].n_dims);
        for (int d = 0; d < t->n_dims; d++) assert_int_equal(t->shape[d], written[i].shape[d]);
        uint8_t expect[64];
        tensor_bytes(i, expect, t->nbytes);
        assert_memory_equal(t->data, expect, t->nbytes);
    }
    assert_int_equal(lp_checkpoint_find(c, "scalar")->n_elements, 1);
    assert_int_equal(lp_checkpoint_find(c, "empty")->nbytes, 0);

    float f[12];
    assert_int_equal(lp_st_to_f32(lp_checkpoint_find(c, "w.f32"), 2, 3, f), 0);
    assert_true(f[0] == -2 && f[1] == 0.5f && f[2] == 3.25f);
    assert_int_equal(lp_st_to_f32(lp_checkpoint_find(c, "w.f16"), 0, 6, f), 0);
    assert_true(f[0] == 1 && f[1] == -2 && f[2] == 0.5f && f[3] == 65504 && f[4] == 0x1p-24f && f[5] == 0);
    assert_int_equal(lp_st_to_f32(lp_checkpoint_find(c, "w.bf16"), 0, 6, f), 0);
    assert_true(f[0] == 1 && f[1] == -3 && f[2] == 3.140625f && f[3] == 0 && f[4] == -0.5f && f[5] == 0x1.fep127f);
    assert_int_equal(lp_st_to_f32(lp_checkpoint_find(c, "w.f64"), 0, 2, f), 0);
    assert_true(f[0] == 1.5f && f[1] == -INFINITY);
    assert_int_equal(lp_st_to_f32(lp_checkpoint_find(c, "scalar"), 0, 1, f), -1);
    assert_non_null(strstr(lp_errmsg(), "'scalar'"));
    lp_checkpoint_close(c);

    /* without metadata there is no __metadata__ key at all */
    write_test_file(b, false);
    da = lp_read_file(b, &na);
    assert_memory_equal(da + 8, "{\"w.f32\":", 9);
    free(da);
    free(a);
    free(b);
}

static void test_writer_misuse(void **state) {
    char *path = tmp_path("misuse.safetensors");
    const int64_t shape[] = {2, -1};
    lp_st_writer *w = lp_st_writer_new();
    assert_int_equal(lp_st_writer_add(w, "", LP_ST_F32, 1, shape), -1);
    assert_int_equal(lp_st_writer_add(w, "__metadata__", LP_ST_F32, 1, shape), -1);
    assert_int_equal(lp_st_writer_add(w, "neg", LP_ST_F32, 2, shape), -1);
    assert_int_equal(lp_st_writer_add(w, "bad\xff", LP_ST_F32, 1, shape), -1);
    assert_int_equal(lp_st_writer_add(w, "x", LP_ST_F32, 9, shape), -1);
    assert_int_equal(lp_st_writer_add(w, "x", LP_ST_F32, 1, shape), 0);
    assert_int_equal(lp_st_writer_add(w, "x", LP_ST_F32, 1, shape), -1);
    assert_int_equal(lp_st_writer_add(w, "y", LP_ST_F32, 1, shape), 1);
    assert_int_equal(lp_st_writer_begin(w, path), 0);
    float v[2] = {1, 2};
    assert_int_equal(lp_st_writer_data(w, 1, v, 8), -1);
    assert_int_equal(lp_st_writer_data(w, 0, v, 8), 0);
    assert_int_equal(lp_st_writer_finish(w), -1);
    assert_non_null(strstr(lp_errmsg(), "'y'"));
    lp_st_writer_free(w);
    assert_false(lp_path_exists(path));
    free(path);
}

static int cmp_data_order(const void *a, const void *b) {
    const lp_st_tensor *x = *(const lp_st_tensor *const *)a, *y = *(const lp_st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* Re-writing a shard written by the Rust safetensors library (via transformers), tensors in its
 * data order, must reproduce it byte for byte: header JSON, padding and data. */
static void test_writer_reproduces_hf_shard(void **state) {
    const char *src = QWEN3_DIR "/model-00002-of-00002.safetensors";
    char *dst = tmp_path("rewritten.safetensors");
    lp_checkpoint *c = lp_checkpoint_open(src);
    assert_non_null(c);
    int64_t n = lp_checkpoint_n_tensors(c);
    const lp_st_tensor **order = lp_xmalloc((size_t)n * sizeof *order);
    for (int64_t i = 0; i < n; i++) order[i] = lp_checkpoint_tensor_at(c, i);
    qsort(order, (size_t)n, sizeof *order, cmp_data_order);
    lp_st_writer *w = lp_st_writer_new();
    lp_st_writer_set_metadata(w, "format", lp_checkpoint_metadata(c, 0, "format"));
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(lp_st_writer_add(w, order[i]->name, order[i]->dtype, order[i]->n_dims, order[i]->shape), i);
    assert_int_equal(lp_st_writer_begin(w, dst), 0);
    for (int64_t i = 0; i < n; i++) assert_int_equal(lp_st_writer_data(w, (int)i, order[i]->data, order[i]->nbytes), 0);
    assert_int_equal(lp_st_writer_finish(w), 0);
    lp_st_writer_free(w);
    free(order);
    lp_checkpoint_close(c);
    size_t na, nb;
    char *a = lp_read_file(src, &na), *b = lp_read_file(dst, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a);
    free(b);
    free(dst);
}

/* ---------------- malformed ---------------- */

static void write_shard(const char *path, const char *header, size_t data_len) {
    size_t hl = strlen(header);
    size_t total = 8 + hl + data_len;
    uint8_t *buf = lp_xcalloc(total, 1);
    uint64_t n = hl;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) buf[8 + hl + i] = (uint8_t)i;
    assert_int_equal(lp_write_file_atomic(path, buf, total), 0);
    free(buf);
}

static void expect_open_fails(const char *path, const char *names_file, const char *what) {
    lp_err_clear();
    lp_checkpoint *c = lp_checkpoint_open(path);
    if (c) {
        lp_checkpoint_close(c);
        fail_msg("%s: opened although it should fail with '%s'", path, what);
    }
    if (!strstr(lp_errmsg(), names_file)) fail_msg("message does not name %s: %s", names_file, lp_errmsg());
    if (!strstr(lp_errmsg(), what)) fail_msg("expected '%s' in: %s", what, lp_errmsg());
}

static void bad_shard(const char *file, const char *header, size_t data_len, const char *what) {
    char *path = tmp_path(file);
    write_shard(path, header, data_len);
    expect_open_fails(path, path, what);
    free(path);
}

#define T_F32(name, shape, b, e) "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_malformed_shards(void **state) {
    char *path = tmp_path("tiny.safetensors");
    assert_int_equal(lp_write_file_atomic(path, "\x10\0\0", 3), 0);
    expect_open_fails(path, path, "too small");
    uint8_t big[16] = {0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(lp_write_file_atomic(path, big, sizeof big), 0);
    expect_open_fails(path, path, "exceeds the 100000000-byte limit");
    uint8_t past[16] = {200};
    memcpy(past + 8, "{}      ", 8);
    assert_int_equal(lp_write_file_atomic(path, past, sizeof past), 0);
    expect_open_fails(path, path, "header length 200 past end of file");
    free(path);

    bad_shard("json.safetensors", "{\"a\":{\"dtype\":", 0, "invalid header JSON");
    bad_shard("array.safetensors", "[1,2]", 0, "not a JSON object");
    bad_shard("dupkey.safetensors", "{" T_F32("a", "[1]", 0, 4) "," T_F32("a", "[1]", 4, 8) "}", 8, "invalid header JSON");
    bad_shard("dtype.safetensors", "{\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1,
              "tensor 'a': unknown dtype 'F4'");
    bad_shard("negdim.safetensors", "{" T_F32("a", "[-1]", 0, 4) "}", 4, "tensor 'a': shape[0]");
    bad_shard("floatdim.safetensors", "{" T_F32("a", "[1.0]", 0, 4) "}", 4, "tensor 'a': shape[0]");
    bad_shard("noshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing shape");
    bad_shard("offsets3.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
              "data_offsets must be");
    bad_shard("reversed.safetensors", "{" T_F32("a", "[0]", 4, 0) "}", 4, "end before begin");
    bad_shard("size.safetensors", "{" T_F32("a", "[3]", 0, 8) "}", 8, "tensor 'a': data_offsets span 8 bytes but F32 shape needs 12");
    bad_shard("overlap.safetensors", "{" T_F32("a", "[2]", 0, 8) "," T_F32("b", "[2]", 4, 12) "}", 12,
              "tensor 'b': data_offsets [4, 12] overlap");
    bad_shard("hole.safetensors", "{" T_F32("a", "[1]", 0, 4) "," T_F32("b", "[1]", 8, 12) "}", 12, "tensor 'b': hole");
    bad_shard("start.safetensors", "{" T_F32("a", "[1]", 4, 8) "}", 8, "hole");
    bad_shard("trailing.safetensors", "{" T_F32("a", "[1]", 0, 4) "}", 5, "1 trailing bytes");
    bad_shard("pasteof.safetensors", "{" T_F32("a", "[2]", 0, 8) "}", 7, "tensor 'a': data_offsets [0, 8] past end of file");
    bad_shard("entry.safetensors", "{\"a\":[1]}", 0, "tensor 'a': entry is not a JSON object");

    /* tolerated: space padding, any key order, zero-size and rank-0 tensors, odd metadata */
    path = tmp_path("ok.safetensors");
    write_shard(path,
                "{" T_F32("b", "[1]", 4, 8) ",\"__metadata__\":{\"n\":1}," T_F32("z", "[0,3]", 8, 8) "," T_F32("a", "[]", 0, 4)
                "}     ",
                8);
    lp_checkpoint *c = lp_checkpoint_open(path);
    if (!c) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_checkpoint_n_tensors(c), 3);
    assert_string_equal(lp_checkpoint_tensor_at(c, 0)->name, "a");
    assert_int_equal(((const uint8_t *)lp_checkpoint_find(c, "b")->data)[0], 4);
    assert_null(lp_checkpoint_metadata(c, 0, "n"));
    lp_checkpoint_close(c);
    free(path);
}

static void test_every_truncation_fails(void **state) {
    char *full = tmp_path("full.safetensors"), *cut = tmp_path("cut.safetensors");
    write_test_file(full, true);
    size_t size;
    char *bytes = lp_read_file(full, &size);
    for (size_t n = 0; n < size; n++) {
        assert_int_equal(lp_write_file_atomic(cut, bytes, n), 0);
        lp_err_clear();
        lp_checkpoint *c = lp_checkpoint_open(cut);
        if (c) fail_msg("file cut to %zu of %zu bytes was accepted", n, size);
        if (!strstr(lp_errmsg(), cut)) fail_msg("cut %zu: message does not name the file: %s", n, lp_errmsg());
    }
    free(bytes);
    free(full);
    free(cut);
}

/* A sharded checkpoint dir with two shards: s1 holds a, b; s2 holds c. */
static char *make_sharded_dir(const char *name, const char *index_json) {
    char *dir = tmp_path(name);
    assert_int_equal(lp_mkdir_p(dir), 0);
    char *s1 = lp_path_join(dir, "model-00001-of-00002.safetensors");
    char *s2 = lp_path_join(dir, "model-00002-of-00002.safetensors");
    char *index = lp_path_join(dir, "model.safetensors.index.json");
    write_shard(s1, "{" T_F32("a", "[1]", 0, 4) "," T_F32("b", "[1]", 4, 8) "}", 8);
    write_shard(s2, "{" T_F32("c", "[2]", 0, 8) "}", 8);
    assert_int_equal(lp_write_file_atomic(index, index_json, strlen(index_json)), 0);
    free(s1);
    free(s2);
    free(index);
    return dir;
}

#define S1 "\"model-00001-of-00002.safetensors\""
#define S2 "\"model-00002-of-00002.safetensors\""

static void test_sharded_index_errors(void **state) {
    char *dir = make_sharded_dir("good", "{\"metadata\":{\"total_size\":16},\"weight_map\":{\"c\":" S2 ",\"a\":" S1
                                         ",\"b\":" S1 "}}");
    lp_checkpoint *c = lp_checkpoint_open(dir);
    if (!c) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_checkpoint_n_tensors(c), 3);
    assert_int_equal(lp_checkpoint_total_bytes(c), 16);
    assert_int_equal(lp_checkpoint_find(c, "c")->shard, 1);
    lp_checkpoint_close(c);
    free(dir);

    dir = make_sharded_dir("missing_shard", "{\"weight_map\":{\"a\":" S1 ",\"b\":" S1 ",\"c\":\"model-00003.safetensors\"}}");
    expect_open_fails(dir, "model.safetensors.index.json", "shard model-00003.safetensors named in weight_map does not exist");
    free(dir);

    dir = make_sharded_dir("absent_tensor", "{\"weight_map\":{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 ",\"d\":" S2 "}}");
    expect_open_fails(dir, "model.safetensors.index.json", "tensor 'd': listed in weight_map (shard model-00002-of-00002.safetensors) but not found");
    free(dir);

    dir = make_sharded_dir("wrong_shard", "{\"weight_map\":{\"a\":" S2 ",\"b\":" S1 ",\"c\":" S2 "}}");
    expect_open_fails(dir, "model.safetensors.index.json", "tensor 'a': weight_map names shard model-00002-of-00002.safetensors but it is in model-00001");
    free(dir);

    dir = make_sharded_dir("escape", "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
    expect_open_fails(dir, "model.safetensors.index.json", "inside the model directory");
    free(dir);

    dir = make_sharded_dir("no_map", "{\"metadata\":{}}");
    expect_open_fails(dir, "model.safetensors.index.json", "weight_map");
    free(dir);

    dir = make_sharded_dir("bad_json", "{\"weight_map\":");
    expect_open_fails(dir, "model.safetensors.index.json", "invalid JSON");
    free(dir);

    /* the same tensor in two shards */
    dir = make_sharded_dir("dup", "{\"weight_map\":{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 "}}");
    char *s2 = lp_path_join(dir, "model-00002-of-00002.safetensors");
    write_shard(s2, "{" T_F32("a", "[2]", 0, 8) "}", 8);
    expect_open_fails(dir, "model-00002-of-00002.safetensors", "tensor 'a' appears in both");
    free(s2);
    free(dir);

    /* a broken shard is reported with the shard's name */
    dir = make_sharded_dir("bad_shard", "{\"weight_map\":{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 "}}");
    s2 = lp_path_join(dir, "model-00002-of-00002.safetensors");
    write_shard(s2, "{" T_F32("c", "[2]", 0, 8) "}", 6);
    expect_open_fails(dir, s2, "past end of file");
    free(s2);
    free(dir);

    dir = tmp_path("empty_dir");
    assert_int_equal(lp_mkdir_p(dir), 0);
    expect_open_fails(dir, dir, "no model.safetensors or model.safetensors.index.json");
    free(dir);
    expect_open_fails("/nonexistent/model", "/nonexistent/model", "no such file");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_qwen3_sharded),
        cmocka_unit_test(test_tiny_gptoss_mxfp4),
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_writer_reproduces_hf_shard),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_malformed_shards),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_sharded_index_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
