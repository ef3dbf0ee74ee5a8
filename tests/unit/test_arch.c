/* test_arch.c — config reading and the architecture report against the real
 * configs of the target models and the fixture checkpoints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "core/err.h"
#include "core/fileio.h"
#include "formats/safetensors.h"
#include "pipeline/report.h"

static lp_report report_for_config(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/configs/%s.config.json", LP_FIXTURES_DIR, name);
    lp_hparams hp;
    if (lp_hparams_from_config_file(path, &hp) != 0) fail_msg("%s", lp_errmsg());
    lp_report r;
    assert_int_equal(lp_report_build(&r, &hp, NULL), 0);
    return r;
}

static void assert_near_billions(uint64_t got, double want_billions, double tol) {
    double g = (double)got / 1e9;
    if (g < want_billions - tol || g > want_billions + tol) fail_msg("got %.4fB, want %.2fB", g, want_billions);
}

static void test_qwen3_8b(void **state) {
    (void)state;
    lp_report r = report_for_config("Qwen3-8B");
    assert_string_equal(r.hp.arch->gguf_arch, "qwen3");
    assert_int_equal(r.hp.n_layer, 36);
    assert_int_equal(r.hp.n_head, 32);
    assert_int_equal(r.hp.n_head_kv, 8);
    assert_int_equal(r.hp.head_dim, 128);
    assert_true(r.hp.arch->qk_norm);
    assert_false(r.hp.tied_embeddings);
    assert_near_billions(r.params_total, 8.19, 0.005);
    assert_near_billions(r.params_non_embedding, 6.95, 0.005);
    assert_int_equal(r.params_active, r.params_total);
    assert_string_equal(r.attention, "GQA 32:8 (ratio 4)");
    assert_true(r.hp.rope_theta == 1000000.0f);
    /* 36 layers * 8 kv heads * 128 * 2 (K,V) * 2 bytes * 1024 tokens = 144 MiB */
    assert_int_equal(r.kv_bytes_per_1k, 36ull * 8 * 128 * 2 * 2 * 1024);
    assert_string_equal(r.recommended_gguf, "q4_k_m");
}

static void test_qwen25_7b(void **state) {
    (void)state;
    lp_report r = report_for_config("Qwen2.5-7B-Instruct");
    assert_string_equal(r.hp.arch->gguf_arch, "qwen2");
    assert_true(r.hp.attn_bias);
    assert_int_equal(r.hp.n_head / r.hp.n_head_kv, 7);
    assert_int_equal(r.hp.sliding_window, 0); /* use_sliding_window false */
    assert_near_billions(r.params_total, 7.62, 0.005);
    assert_near_billions(r.params_non_embedding, 6.53, 0.005);
}

static void test_qwen3_30b_a3b(void **state) {
    (void)state;
    lp_report r = report_for_config("Qwen3-30B-A3B");
    assert_string_equal(r.hp.arch->gguf_arch, "qwen3moe");
    assert_int_equal(r.hp.n_expert, 128);
    assert_int_equal(r.hp.n_expert_used, 8);
    assert_int_equal(r.hp.n_ff_exp, 768);
    assert_true(r.hp.expert_norm_topk);
    assert_near_billions(r.params_total, 30.53, 0.01);
    assert_near_billions(r.params_active, 3.35, 0.01);
}

static void test_gpt_oss_20b(void **state) {
    (void)state;
    lp_report r = report_for_config("gpt-oss-20b");
    assert_string_equal(r.hp.arch->gguf_arch, "gpt-oss");
    assert_int_equal(r.hp.n_expert, 32);
    assert_int_equal(r.hp.n_expert_used, 4);
    assert_int_equal(r.hp.sliding_window, 128);
    assert_true(r.hp.swa_layers[0]);
    assert_false(r.hp.swa_layers[1]);
    assert_int_equal(r.hp.rope_scaling, LP_ROPE_SCALING_YARN);
    assert_int_equal(r.ctx_native, 4096);
    assert_int_equal(r.ctx_extended, 131072);
    assert_near_billions(r.params_total, 20.91, 0.01);
    assert_near_billions(r.params_active, 4.19, 0.01);
}

/* Fixture checkpoints: counts from the safetensors must equal counts from config. */
static void check_fixture(const char *model, const char *gguf_arch, uint64_t want_total_approx) {
    char dir[512], cfg[600];
    snprintf(dir, sizeof dir, "%s/models/%s", LP_FIXTURES_DIR, model);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    lp_hparams hp;
    if (lp_hparams_from_config_file(cfg, &hp) != 0) fail_msg("%s", lp_errmsg());
    assert_string_equal(hp.arch->gguf_arch, gguf_arch);
    lp_checkpoint *ck = lp_checkpoint_open(dir);
    if (!ck) fail_msg("%s", lp_errmsg());
    lp_report from_ck, from_cfg;
    assert_int_equal(lp_report_build(&from_ck, &hp, ck), 0);
    assert_int_equal(lp_report_build(&from_cfg, &hp, NULL), 0);
    assert_true(from_ck.counted_from_checkpoint);
    assert_int_equal(from_ck.params_total, from_cfg.params_total);
    assert_int_equal(from_ck.params_embedding, from_cfg.params_embedding);
    assert_int_equal(from_ck.params_experts, from_cfg.params_experts);
    double rel = (double)from_ck.params_total / (double)want_total_approx;
    if (rel < 0.995 || rel > 1.005) fail_msg("%s: %llu params, README says ~%llu", model,
                                             (unsigned long long)from_ck.params_total, (unsigned long long)want_total_approx);
    lp_checkpoint_close(ck);
}

static void test_fixture_counts(void **state) {
    (void)state;
    check_fixture("tiny-qwen3", "qwen3", 8720000);
    check_fixture("tiny-qwen3-moe", "qwen3moe", 17450000);
    check_fixture("small-qwen3", "qwen3", 32500000);
    check_fixture("tiny-gptoss", "gpt-oss", 17600000);
}

static void test_generation_config_eos(void **state) {
    (void)state;
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/models/tiny-qwen3/config.json", LP_FIXTURES_DIR);
    lp_hparams hp;
    assert_int_equal(lp_hparams_from_config_file(cfg, &hp), 0);
    assert_int_equal(hp.n_eos, 2); /* generation_config.json lists [8179, 8177] */
    assert_int_equal(hp.eos_token_ids[0], 8179);
    assert_int_equal(hp.eos_token_ids[1], 8177);
    assert_true(hp.rope_theta == 1000000.0f); /* from rope_parameters */
    assert_string_equal(hp.dtype, "bfloat16");
}

static void expect_config_error(const char *json, const char *needle) {
    json_error_t jerr;
    json_t *cfg = json_loads(json, 0, &jerr);
    assert_non_null(cfg);
    lp_hparams hp;
    assert_int_equal(lp_hparams_from_config(cfg, "config.json", &hp), -1);
    if (!strstr(lp_errmsg(), needle)) fail_msg("error '%s' lacks '%s'", lp_errmsg(), needle);
    json_decref(cfg);
}

static void test_bad_configs(void **state) {
    (void)state;
    expect_config_error("{}", "model_type");
    expect_config_error("{\"model_type\": \"bert\"}", "unsupported architecture 'bert'");
    expect_config_error("{\"model_type\": \"qwen3\", \"num_hidden_layers\": \"six\"}", "num_hidden_layers");
    expect_config_error("{\"model_type\": \"qwen3\", \"num_hidden_layers\": 2, \"hidden_size\": 64, "
                        "\"num_attention_heads\": 4, \"num_key_value_heads\": 3, \"vocab_size\": 10}",
                        "num_key_value_heads");
    expect_config_error("{\"model_type\": \"qwen3_moe\", \"num_hidden_layers\": 2, \"hidden_size\": 64, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 10}",
                        "moe_intermediate_size");
}

static void test_use_more_bits(void **state) {
    (void)state;
    /* FORMATS.md s.7: n=28 -> {0,1,2,5,8,11,14,17,20,23,24,25,26,27} */
    int want[] = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27};
    int k = 0;
    for (int i = 0; i < 28; i++)
        if (lp_use_more_bits(i, 28)) assert_int_equal(i, want[k++]);
    assert_int_equal(k, 14);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3_8b),          cmocka_unit_test(test_qwen25_7b),
        cmocka_unit_test(test_qwen3_30b_a3b),     cmocka_unit_test(test_gpt_oss_20b),
        cmocka_unit_test(test_fixture_counts),    cmocka_unit_test(test_generation_config_eos),
        cmocka_unit_test(test_bad_configs),       cmocka_unit_test(test_use_more_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
