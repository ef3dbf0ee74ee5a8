/* test_convert_gptoss.c — converting tiny-gptoss (MXFP4 experts, interleaved gate/up,
 * attention sinks) to GGUF: the plans of every recipe, tensor names/shapes/types per
 * FORMATS.md 4.3, f32 experts equal to the exact dequantization of the source blocks,
 * mxfp4_moe expert blocks byte-equal to the source blocks in ggml's nibble layout, the
 * runtime reproducing the HF reference logits from our files, and bad shapes refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/fileio.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "pipeline/convert.h"
#include "pipeline/pipeline.h"
#include "pipeline/plan.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/sampler.h"

#define N_LAYER 4
#define N_EXPERT 16
#define N_EMBD 256
#define N_FF_EXP 256
#define N_HEAD 4
#define HEAD_DIM 64
#define N_HEAD_KV 2
#define N_VOCAB 8192
#define NREF 64

static char model_dir[512];
static char *out_dir;
static lp_checkpoint *ckpt;

static char *gguf_path(const char *precision) {
    return lp_xasprintf("%s/gguf/%s/tiny-gptoss-%s.gguf", out_dir, precision, precision);
}

/* One conversion run writes the three files every test reads. */
static int setup(void **state) {
    (void)state;
    char tmpl[] = "/tmp/lp-gptoss-XXXXXX";
    if (!mkdtemp(tmpl)) return -1;
    out_dir = lp_xstrdup(tmpl);
    const char *precisions[] = {"f32", "q8_0", "mxfp4_moe"};
    lp_convert_opts o = {.model = model_dir, .output_dir = out_dir, .gguf = precisions, .n_gguf = 3, .n_threads = 2,
                         .quiet = true, .offline = true};
    if (lp_pipeline_convert(&o) != 0) return fprintf(stderr, "convert: %s\n", lp_errmsg()), -1;
    ckpt = lp_checkpoint_open(model_dir);
    return ckpt ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    lp_checkpoint_close(ckpt);
    char *cmd = lp_xasprintf("rm -rf '%s'", out_dir);
    int rc = system(cmd);
    free(cmd);
    free(out_dir);
    return rc == 0 ? 0 : -1;
}

static const lp_st_tensor *hf(const char *fmt, int layer) {
    char name[200];
    snprintf(name, sizeof name, fmt, layer);
    const lp_st_tensor *t = lp_checkpoint_find(ckpt, name);
    if (!t) fail_msg("checkpoint has no '%s'", name);
    return t;
}

static const lp_gguf_tensor *tensor(const lp_gguf *g, const char *fmt, int layer) {
    char name[128];
    snprintf(name, sizeof name, fmt, layer);
    const lp_gguf_tensor *t = lp_gguf_find_tensor(g, name);
    if (!t) fail_msg("%s: no tensor '%s'", lp_gguf_path(g), name);
    return t;
}

/* ---- plans ---- */

static void load_hp(lp_hparams *hp) {
    char *cfg = lp_path_join(model_dir, "config.json");
    assert_int_equal(lp_hparams_from_config_file(cfg, hp), 0);
    free(cfg);
}

static bool is_stacked_expert(lp_role r) {
    return r == LP_T_FFN_GATE_EXPS || r == LP_T_FFN_UP_EXPS || r == LP_T_FFN_DOWN_EXPS;
}

static void test_plans(void **state) {
    (void)state;
    lp_hparams hp;
    load_hp(&hp);
    lp_source_ref ref = {&hp, ckpt};
    lp_plan plan;
    /* every recipe plans gpt-oss; 3 global tensors + 19 per layer */
    for (int i = 0; i < lp_recipe_count(); i++) {
        assert_int_equal(lp_plan_build(&plan, &hp, lp_recipe_at(i), lp_convert_role_present, &ref), 0);
        assert_int_equal(plan.n, 3 + N_LAYER * 19);
        lp_plan_free(&plan);
    }
    const lp_recipe *r = lp_recipe_find("MXFP4_MOE");
    assert_non_null(r);
    assert_int_equal(r->ftype, 38);
    assert_int_equal(lp_plan_build(&plan, &hp, r, lp_convert_role_present, &ref), 0);
    for (int i = 0; i < plan.n; i++) {
        const lp_plan_tensor *t = &plan.tensors[i];
        lp_type want = t->n_dims == 1 || t->role == LP_T_FFN_ROUTER || strstr(t->gguf_name, ".bias") ? LP_TYPE_F32
                       : is_stacked_expert(t->role)                                                    ? LP_TYPE_MXFP4
                                                                                                        : LP_TYPE_Q8_0;
        if (t->type != want) fail_msg("%s: %s, want %s", t->gguf_name, lp_qtype(t->type)->name, lp_qtype(want)->name);
    }
    lp_plan_free(&plan);
    /* q4_k_m: experts like other FFN weights (down_exps Q6_K on use_more_bits layers) */
    assert_int_equal(lp_plan_build(&plan, &hp, lp_recipe_find("q4_k_m"), lp_convert_role_present, &ref), 0);
    for (int i = 0; i < plan.n; i++) {
        const lp_plan_tensor *t = &plan.tensors[i];
        if (t->role == LP_T_FFN_GATE_EXPS || t->role == LP_T_FFN_UP_EXPS) assert_int_equal(t->type, LP_TYPE_Q4_K);
        if (t->role == LP_T_FFN_DOWN_EXPS)
            assert_int_equal(t->type, lp_use_more_bits(t->layer, N_LAYER) ? LP_TYPE_Q6_K : LP_TYPE_Q4_K);
        if (t->role == LP_T_ATTN_SINKS || t->role == LP_T_FFN_ROUTER) assert_int_equal(t->type, LP_TYPE_F32);
    }
    lp_plan_free(&plan);
}

static int all_present(void *ctx, lp_role role, int layer) {
    (void)ctx, (void)role, (void)layer;
    return 1;
}

/* gpt-oss-20b's real shapes: rows of 2880 = 11.25 K-blocks, so K-quants fall back
 * (FORMATS.md 7), while MXFP4 and Q8_0 (32-element blocks) fit. */
static void test_plans_gpt_oss_20b_shapes(void **state) {
    (void)state;
    lp_hparams hp;
    char *cfg = lp_path_join(LP_FIXTURES_DIR, "configs/gpt-oss-20b.config.json");
    assert_int_equal(lp_hparams_from_config_file(cfg, &hp), 0);
    free(cfg);
    assert_int_equal(hp.n_embd, 2880);
    lp_plan plan;
    assert_int_equal(lp_plan_build(&plan, &hp, lp_recipe_find("q4_k_m"), all_present, NULL), 0);
    for (int i = 0; i < plan.n; i++) {
        const lp_plan_tensor *t = &plan.tensors[i];
        if (t->role == LP_T_FFN_GATE_EXPS || t->role == LP_T_FFN_UP_EXPS) assert_int_equal(t->type, LP_TYPE_Q5_0);
        if (t->role == LP_T_FFN_DOWN_EXPS)
            assert_int_equal(t->type, lp_use_more_bits(t->layer, hp.n_layer) ? LP_TYPE_Q8_0 : LP_TYPE_Q5_0);
    }
    lp_plan_free(&plan);
    assert_int_equal(lp_plan_build(&plan, &hp, lp_recipe_find("mxfp4_moe"), all_present, NULL), 0);
    for (int i = 0; i < plan.n; i++) {
        const lp_plan_tensor *t = &plan.tensors[i];
        if (is_stacked_expert(t->role)) assert_int_equal(t->type, LP_TYPE_MXFP4);
        if (t->role == LP_T_ATTN_Q || t->role == LP_T_TOKEN_EMBD) assert_int_equal(t->type, LP_TYPE_Q8_0);
    }
    lp_plan_free(&plan);
}

/* ---- names, shapes, types, keys ---- */

typedef struct {
    const char *name;
    int n_dims;
    int64_t ne[3];
} expected_tensor;

static const expected_tensor layer_tensors[] = {
    {"blk.%d.attn_norm.weight", 1, {N_EMBD}},
    {"blk.%d.attn_q.weight", 2, {N_EMBD, N_HEAD * HEAD_DIM}},
    {"blk.%d.attn_k.weight", 2, {N_EMBD, N_HEAD_KV * HEAD_DIM}},
    {"blk.%d.attn_v.weight", 2, {N_EMBD, N_HEAD_KV * HEAD_DIM}},
    {"blk.%d.attn_output.weight", 2, {N_HEAD * HEAD_DIM, N_EMBD}},
    {"blk.%d.attn_q.bias", 1, {N_HEAD * HEAD_DIM}},
    {"blk.%d.attn_k.bias", 1, {N_HEAD_KV * HEAD_DIM}},
    {"blk.%d.attn_v.bias", 1, {N_HEAD_KV * HEAD_DIM}},
    {"blk.%d.attn_output.bias", 1, {N_EMBD}},
    {"blk.%d.attn_sinks.weight", 1, {N_HEAD}},
    {"blk.%d.post_attention_norm.weight", 1, {N_EMBD}},
    {"blk.%d.ffn_gate_inp.weight", 2, {N_EMBD, N_EXPERT}},
    {"blk.%d.ffn_gate_inp.bias", 1, {N_EXPERT}},
    {"blk.%d.ffn_gate_exps.weight", 3, {N_EMBD, N_FF_EXP, N_EXPERT}},
    {"blk.%d.ffn_up_exps.weight", 3, {N_EMBD, N_FF_EXP, N_EXPERT}},
    {"blk.%d.ffn_down_exps.weight", 3, {N_FF_EXP, N_EMBD, N_EXPERT}},
    {"blk.%d.ffn_gate_exps.bias", 2, {N_FF_EXP, N_EXPERT}},
    {"blk.%d.ffn_up_exps.bias", 2, {N_FF_EXP, N_EXPERT}},
    {"blk.%d.ffn_down_exps.bias", 2, {N_EMBD, N_EXPERT}},
};
enum { N_LAYER_TENSORS = sizeof layer_tensors / sizeof layer_tensors[0] };

static void check_shape(const lp_gguf *g, const expected_tensor *x, int layer) {
    const lp_gguf_tensor *t = tensor(g, x->name, layer);
    assert_int_equal(t->n_dims, x->n_dims);
    for (int d = 0; d < x->n_dims; d++) assert_int_equal(t->ne[d], x->ne[d]);
}

static void expect_u32(const lp_gguf *g, const char *key, uint32_t want) {
    uint32_t v = 0;
    if (lp_gguf_get_u32(g, key, &v) != 0) fail_msg("%s: key '%s' missing or not u32", lp_gguf_path(g), key);
    if (v != want) fail_msg("%s: %s = %u, want %u", lp_gguf_path(g), key, v, want);
}

static void test_names_shapes_keys(void **state) {
    (void)state;
    const char *precisions[] = {"f32", "q8_0", "mxfp4_moe"};
    const uint32_t ftypes[] = {0, 7, 38};
    for (int p = 0; p < 3; p++) {
        char *path = gguf_path(precisions[p]);
        lp_gguf *g = lp_gguf_open(path);
        assert_non_null(g);
        assert_int_equal(lp_gguf_n_tensors(g), 3 + N_LAYER * N_LAYER_TENSORS);
        const expected_tensor globals[] = {{"token_embd.weight", 2, {N_EMBD, N_VOCAB}},
                                           {"output.weight", 2, {N_EMBD, N_VOCAB}},
                                           {"output_norm.weight", 1, {N_EMBD}}};
        for (int i = 0; i < 3; i++) check_shape(g, &globals[i], 0);
        for (int l = 0; l < N_LAYER; l++)
            for (int i = 0; i < N_LAYER_TENSORS; i++) check_shape(g, &layer_tensors[i], l);
        assert_string_equal(lp_gguf_get_str(g, "general.architecture"), "gpt-oss");
        expect_u32(g, "general.file_type", ftypes[p]);
        expect_u32(g, "gpt-oss.block_count", N_LAYER);
        expect_u32(g, "gpt-oss.expert_count", N_EXPERT);
        expect_u32(g, "gpt-oss.expert_used_count", 4);
        expect_u32(g, "gpt-oss.expert_feed_forward_length", N_FF_EXP);
        expect_u32(g, "gpt-oss.attention.sliding_window", 128);
        expect_u32(g, "gpt-oss.attention.key_length", HEAD_DIM);
        expect_u32(g, "gpt-oss.attention.value_length", HEAD_DIM);
        expect_u32(g, "gpt-oss.attention.head_count_kv", N_HEAD_KV);
        expect_u32(g, "gpt-oss.rope.scaling.original_context_length", 4096);
        assert_string_equal(lp_gguf_get_str(g, "gpt-oss.rope.scaling.type"), "yarn");
        float f;
        assert_int_equal(lp_gguf_get_f32(g, "gpt-oss.rope.scaling.factor", &f), 0);
        assert_true(f == 32.0f);
        assert_int_equal(lp_gguf_get_f32(g, "gpt-oss.rope.freq_base", &f), 0);
        assert_true(f == 150000.0f);
        assert_non_null(lp_gguf_get_str(g, "tokenizer.ggml.pre"));
        /* types: sinks, norms, biases and routers F32 whatever the recipe */
        assert_int_equal(tensor(g, "blk.%d.attn_sinks.weight", 1)->type, LP_TYPE_F32);
        assert_int_equal(tensor(g, "blk.%d.ffn_gate_inp.weight", 1)->type, LP_TYPE_F32);
        assert_int_equal(tensor(g, "blk.%d.ffn_up_exps.bias", 1)->type, LP_TYPE_F32);
        lp_type matrix = p == 0 ? LP_TYPE_F32 : LP_TYPE_Q8_0, experts = p == 2 ? LP_TYPE_MXFP4 : matrix;
        assert_int_equal(tensor(g, "token_embd.weight", 0)->type, matrix);
        assert_int_equal(tensor(g, "blk.%d.attn_q.weight", 2)->type, matrix);
        assert_int_equal(tensor(g, "blk.%d.ffn_down_exps.weight", 2)->type, experts);
        lp_gguf_close(g);
        free(path);
    }
}

/* ---- expert weights against the source blocks ---- */

/* Element i of an HF MXFP4 row: code in nibble i%2 of byte i/2 of its block. */
static int hf_code(const uint8_t *row_blocks, int64_t i) { return row_blocks[i / 2] >> (4 * (i % 2)) & 15; }

static double e2m1(int code) {
    static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    return (code & 8 ? -1 : 1) * mag[code & 7];
}

typedef struct {
    const char *gguf, *hf;
    int split, pick; /* HF row of GGUF row r: r * split + pick */
} expert_tensor;

static const expert_tensor experts[] = {
    {"blk.%d.ffn_gate_exps.weight", "model.layers.%d.mlp.experts.gate_up_proj", 2, 0},
    {"blk.%d.ffn_up_exps.weight", "model.layers.%d.mlp.experts.gate_up_proj", 2, 1},
    {"blk.%d.ffn_down_exps.weight", "model.layers.%d.mlp.experts.down_proj", 1, 0},
};

/* Calls check(ggml_row, hf_blocks_row, hf_scales_row, n) for every row of every expert tensor. */
typedef void (*row_check_fn)(const void *gguf_row, const uint8_t *blocks, const uint8_t *scales, int64_t n, void *ud);

static void for_each_expert_row(const char *precision, row_check_fn check, void *ud) {
    char *path = gguf_path(precision);
    lp_gguf *g = lp_gguf_open(path);
    assert_non_null(g);
    for (int l = 0; l < N_LAYER; l++)
        for (size_t k = 0; k < sizeof experts / sizeof experts[0]; k++) {
            char bname[200], sname[200];
            snprintf(bname, sizeof bname, "%s_blocks", experts[k].hf);
            snprintf(sname, sizeof sname, "%s_scales", experts[k].hf);
            const lp_st_tensor *b = hf(bname, l), *s = hf(sname, l);
            const lp_gguf_tensor *t = tensor(g, experts[k].gguf, l);
            const int64_t n = t->ne[0], rows = t->ne[1], hf_rows = rows * experts[k].split;
            const size_t row_bytes = lp_row_size(t->type, n);
            for (int64_t e = 0; e < t->ne[2]; e++)
                for (int64_t r = 0; r < rows; r++) {
                    const int64_t src = e * hf_rows + r * experts[k].split + experts[k].pick;
                    check((const uint8_t *)t->data + (size_t)(e * rows + r) * row_bytes,
                          (const uint8_t *)b->data + src * (n / 2), (const uint8_t *)s->data + src * (n / 32), n, ud);
                }
        }
    lp_gguf_close(g);
    free(path);
}

static void f32_row_is_exact(const void *row, const uint8_t *blocks, const uint8_t *scales, int64_t n, void *ud) {
    const float *f = row;
    for (int64_t i = 0; i < n; i++) {
        double want = ldexp(e2m1(hf_code(blocks, i)), scales[i / 32] - 127);
        if ((double)f[i] != want) fail_msg("element %lld: %g, want %g", (long long)i, (double)f[i], want);
    }
    ++*(int64_t *)ud;
}

static void test_f32_experts_exact(void **state) {
    (void)state;
    int64_t rows = 0;
    for_each_expert_row("f32", f32_row_is_exact, &rows);
    assert_int_equal(rows, N_LAYER * N_EXPERT * (2 * N_FF_EXP + N_EMBD));
}

/* ggml block_mxfp4: scale byte, then byte j = element j (low nibble) | element j+16 (high). */
static void mxfp4_row_is_source(const void *row, const uint8_t *blocks, const uint8_t *scales, int64_t n, void *ud) {
    const uint8_t *q = row;
    for (int64_t b = 0; b < n / 32; b++, q += 17) {
        assert_int_equal(q[0], scales[b]);
        for (int j = 0; j < 16; j++) {
            int lo = hf_code(blocks, b * 32 + j), hi = hf_code(blocks, b * 32 + j + 16);
            if (q[1 + j] != (lo | hi << 4))
                fail_msg("block %lld byte %d: %02x, want %02x", (long long)b, j, q[1 + j], lo | hi << 4);
        }
    }
    ++*(int64_t *)ud;
}

static void test_mxfp4_blocks_are_the_source(void **state) {
    (void)state;
    int64_t rows = 0;
    for_each_expert_row("mxfp4_moe", mxfp4_row_is_source, &rows);
    assert_int_equal(rows, N_LAYER * N_EXPERT * (2 * N_FF_EXP + N_EMBD));
}

/* Why the sink takes the source blocks: requantizing the exact values with the reference
 * quantizer gives back the same values, but blocks whose largest |code| is 3 get a scale
 * one lower (ggml picks e from floor(log2(amax)) - 2), so other bytes. */
typedef struct {
    int64_t blocks, other_bytes;
} requant_stats;

static void requantize_row(const void *row, const uint8_t *blocks, const uint8_t *scales, int64_t n, void *ud) {
    requant_stats *st = ud;
    float x[N_EMBD > N_FF_EXP ? N_EMBD : N_FF_EXP], back[sizeof x / sizeof x[0]];
    uint8_t ref[sizeof x / sizeof x[0] / 32 * 17];
    assert_true(n <= (int64_t)(sizeof x / sizeof x[0]));
    for (int64_t i = 0; i < n; i++) x[i] = (float)ldexp(e2m1(hf_code(blocks, i)), scales[i / 32] - 127);
    lp_qtype(LP_TYPE_MXFP4)->from_float(x, ref, n);
    lp_qtype(LP_TYPE_MXFP4)->to_float(ref, back, n);
    for (int64_t i = 0; i < n; i++) assert_true(back[i] == x[i]);
    const uint8_t *ours = row;
    for (int64_t b = 0; b < n / 32; b++) st->other_bytes += memcmp(ours + 17 * b, ref + 17 * b, 17) != 0;
    st->blocks += n / 32;
}

static void test_requantizing_is_lossless_but_not_byte_equal(void **state) {
    (void)state;
    requant_stats st = {0, 0};
    for_each_expert_row("mxfp4_moe", requantize_row, &st);
    printf("  reference MXFP4 requantizer: %lld of %lld blocks get other bytes (same values)\n",
           (long long)st.other_bytes, (long long)st.blocks);
    assert_int_equal(st.blocks, N_LAYER * N_EXPERT * (2 * N_FF_EXP * (N_EMBD / 32) + N_EMBD * (N_FF_EXP / 32)));
    assert_true(st.other_bytes > 0 && st.other_bytes < st.blocks / 2); /* measured: 106058 of 393216 */
}

/* ---- biases and sinks ---- */

static void test_biases_and_sinks(void **state) {
    (void)state;
    char *path = gguf_path("mxfp4_moe");
    lp_gguf *g = lp_gguf_open(path);
    assert_non_null(g);
    float src[N_EXPERT * 2 * N_FF_EXP];
    for (int l = 0; l < N_LAYER; l++) {
        const lp_st_tensor *gu = hf("model.layers.%d.mlp.experts.gate_up_proj_bias", l);
        assert_int_equal(lp_st_to_f32(gu, 0, N_EXPERT * 2 * N_FF_EXP, src), 0);
        const float *gate = tensor(g, "blk.%d.ffn_gate_exps.bias", l)->data;
        const float *up = tensor(g, "blk.%d.ffn_up_exps.bias", l)->data;
        for (int e = 0; e < N_EXPERT; e++)
            for (int j = 0; j < N_FF_EXP; j++) {
                assert_true(gate[e * N_FF_EXP + j] == src[e * 2 * N_FF_EXP + 2 * j]);
                assert_true(up[e * N_FF_EXP + j] == src[e * 2 * N_FF_EXP + 2 * j + 1]);
            }
        const lp_st_tensor *down = hf("model.layers.%d.mlp.experts.down_proj_bias", l);
        assert_int_equal(lp_st_to_f32(down, 0, N_EXPERT * N_EMBD, src), 0);
        assert_memory_equal(tensor(g, "blk.%d.ffn_down_exps.bias", l)->data, src, N_EXPERT * N_EMBD * sizeof(float));
        assert_int_equal(lp_st_to_f32(hf("model.layers.%d.self_attn.sinks", l), 0, N_HEAD, src), 0);
        assert_memory_equal(tensor(g, "blk.%d.attn_sinks.weight", l)->data, src, N_HEAD * sizeof(float));
        assert_int_equal(lp_st_to_f32(hf("model.layers.%d.mlp.router.bias", l), 0, N_EXPERT, src), 0);
        assert_memory_equal(tensor(g, "blk.%d.ffn_gate_inp.bias", l)->data, src, N_EXPERT * sizeof(float));
    }
    lp_gguf_close(g);
    free(path);
}

/* ---- the runtime on our files against the HF reference logits ---- */

static float *ref_logits(int32_t *tokens) {
    char *json = lp_path_join(LP_FIXTURES_DIR, "refs/tiny-gptoss.json");
    json_t *refs = json_load_file(json, 0, NULL);
    free(json);
    assert_non_null(refs);
    const json_t *toks = json_object_get(json_object_get(refs, "logits"), "tokens");
    assert_int_equal(json_array_size(toks), NREF);
    for (int i = 0; i < NREF; i++) tokens[i] = (int32_t)json_integer_value(json_array_get(toks, (size_t)i));
    json_decref(refs);
    char *bin = lp_path_join(LP_FIXTURES_DIR, "refs/tiny-gptoss.logits64.f32");
    size_t len = 0;
    float *logits = (float *)lp_read_file(bin, &len);
    free(bin);
    assert_non_null(logits);
    assert_int_equal(len, (size_t)NREF * N_VOCAB * sizeof(float));
    return logits;
}

static lp_kld_stats run_against_hf(const char *precision, bool f32_activations, double *max_diff) {
    int32_t tokens[NREF];
    float *ref = ref_logits(tokens);
    char *path = gguf_path(precision);
    lp_model *m = lp_model_load_gguf(path);
    if (!m) fail_msg("%s: %s", path, lp_errmsg());
    lp_engine_params p = {.n_ctx = 128, .n_threads = 2, .f32_activations = f32_activations};
    lp_engine *e = lp_engine_create(m, &p);
    assert_non_null(e);
    float *logits = lp_xmalloc((size_t)NREF * N_VOCAB * sizeof(float));
    assert_int_equal(lp_engine_eval(e, 0, 0, tokens, NREF, logits, true), 0);
    *max_diff = 0;
    lp_kld *k = lp_kld_new();
    for (int i = 0; i < NREF; i++) {
        lp_kld_add(k, ref + (size_t)i * N_VOCAB, logits + (size_t)i * N_VOCAB, N_VOCAB);
        for (int v = 0; v < N_VOCAB; v++)
            *max_diff = fmax(*max_diff, fabs((double)logits[(size_t)i * N_VOCAB + v] - ref[(size_t)i * N_VOCAB + v]));
    }
    lp_kld_stats st;
    lp_kld_get(k, &st);
    printf("  %s%s: max |logit - HF| %.3g, mean KLD %.3g, top-1 agreement %.3f\n", precision,
           f32_activations ? " (f32 activations)" : "", *max_diff, st.mean_kld, st.top1_agree);
    lp_kld_free(k);
    free(logits);
    lp_engine_free(e);
    lp_model_free(m);
    free(path);
    free(ref);
    return st;
}

static void test_runtime_f32_reproduces_hf(void **state) {
    (void)state;
    double d;
    lp_kld_stats st = run_against_hf("f32", true, &d);
    assert_true(d < 1e-4); /* the HF load of the same weights measures 1.4e-5 */
    assert_true(st.top1_agree == 1.0);
}

static void test_runtime_mxfp4_moe_close_to_hf(void **state) {
    (void)state;
    double d;
    /* the experts are the exact weights; only the Q8_0 attention/embeddings/head differ */
    lp_kld_stats st = run_against_hf("mxfp4_moe", true, &d);
    assert_true(st.top1_agree >= 0.9 && st.mean_kld < 1e-2);
    st = run_against_hf("mxfp4_moe", false, &d); /* llama.cpp's math: Q8_0-rounded activations */
    assert_true(st.top1_agree >= 0.9 && st.mean_kld < 2e-2);
}

/* ---- bad input ---- */

/* A copy of the model whose layer-0 gate_up blocks claim another (same-size) shape. */
static void test_bad_block_shape_names_tensor(void **state) {
    (void)state;
    char tmpl[] = "/tmp/lp-gptoss-bad-XXXXXX", tmpl_out[] = "/tmp/lp-gptoss-out-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    assert_non_null(mkdtemp(tmpl_out));
    char *cmd = lp_xasprintf("cp '%s'/* '%s'/", model_dir, tmpl);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    char *shard = lp_path_join(tmpl, "model-00001-of-00002.safetensors");
    size_t len;
    char *bytes = lp_read_file(shard, &len);
    assert_non_null(bytes);
    const char *key = "\"model.layers.0.mlp.experts.gate_up_proj_blocks\":{\"dtype\":\"U8\",\"shape\":[16,512,8,16]";
    char *at = NULL;
    for (size_t i = 0; !at && i + strlen(key) <= len && i < 65536; i++)
        if (memcmp(bytes + i, key, strlen(key)) == 0) at = bytes + i;
    assert_non_null(at);
    memcpy(at + strlen(key) - strlen("8,16]"), "16,8]", 5); /* same element count, wrong layout */
    assert_int_equal(lp_write_file_atomic(shard, bytes, len), 0);
    free(bytes);
    free(shard);
    const char *one[1] = {"mxfp4_moe"};
    lp_convert_opts o = {.model = tmpl, .output_dir = tmpl_out, .gguf = one, .n_gguf = 1, .n_threads = 1,
                         .quiet = true, .offline = true};
    lp_err_clear();
    assert_int_equal(lp_pipeline_convert(&o), -1);
    if (!strstr(lp_errmsg(), "model.layers.0.mlp.experts.gate_up_proj_blocks") ||
        !strstr(lp_errmsg(), "blk.0.ffn_gate_exps.weight"))
        fail_msg("error does not name the tensor: %s", lp_errmsg());
    cmd = lp_xasprintf("rm -rf '%s' '%s'", tmpl, tmpl_out);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

int main(void) {
    snprintf(model_dir, sizeof model_dir, "%s/models/tiny-gptoss", LP_FIXTURES_DIR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plans),
        cmocka_unit_test(test_plans_gpt_oss_20b_shapes),
        cmocka_unit_test(test_names_shapes_keys),
        cmocka_unit_test(test_f32_experts_exact),
        cmocka_unit_test(test_mxfp4_blocks_are_the_source),
        cmocka_unit_test(test_requantizing_is_lossless_but_not_byte_equal),
        cmocka_unit_test(test_biases_and_sinks),
        cmocka_unit_test(test_runtime_f32_reproduces_hf),
        cmocka_unit_test(test_runtime_mxfp4_moe_close_to_hf),
        cmocka_unit_test(test_bad_block_shape_names_tensor),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
