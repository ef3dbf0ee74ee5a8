/* test_synth_mlx.c — bench/synth_checkpoint --mlx (the CUDA benchmark's MLX 4-bit
 * model, written without a bf16 checkpoint) on the tiny-qwen3 config: the directory
 * loads through lp_model_load as MLX 4-bit group 64 (mlx-lm's default), every scale and
 * bias is a bfloat16 value (so the CUDA backend takes its compact bf16-scale layout, the
 * one the benchmark is meant to measure), and the CPU backend generates from it. Runs
 * the built tool (skipped when it was not built); a few milliseconds of work. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "quant/mlx_types.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/sampler.h"

#define TOOL LP_BINARY_DIR "/synth_checkpoint"
#define TINY LP_FIXTURES_DIR "/models/tiny-qwen3"

/* Every f32 of the blocks' scale | bias headers has a zero low half. */
static bool headers_are_bf16(const lp_weight *w) {
    const size_t block = lp_mlx_block_bytes(lp_mlx_type_bits(w->type), lp_mlx_type_group(w->type));
    const size_t n = w->expert_bytes * (size_t)(w->ne[2] > 0 ? w->ne[2] : 1) / block;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *h = (const uint8_t *)w->data + i * block;
        if (h[0] | h[1] | h[4] | h[5]) return false;
    }
    return true;
}

static void test_synth_mlx_4bit(void **state) {
    (void)state;
    if (access(TOOL, X_OK) != 0) {
        printf("  %s not built: skipped\n", TOOL);
        skip();
    }
    char *dir = test_tmpdir();
    char *cmd = lp_xasprintf("'%s' '%s/config.json' '%s' '%s/m' --mlx 4bit >/dev/null", TOOL, TINY, TINY, dir);
    assert_int_equal(system(cmd), 0);
    char *model_dir = lp_xasprintf("%s/m", dir);
    lp_model *m = lp_model_load(model_dir);
    if (!m) fail_msg("%s: %s", model_dir, lp_errmsg());
    const lp_role roles[] = {LP_T_ATTN_Q, LP_T_FFN_DOWN};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        const lp_weight *w = lp_model_weight(m, roles[i], 0);
        assert_true(w && w->type == lp_mlx_type(4, 64));
        assert_true(headers_are_bf16(w));
    }
    assert_int_equal(lp_model_weight(m, LP_T_TOKEN_EMBD, -1)->type, lp_mlx_type(4, 64));
    /* the CPU backend: a short prompt, then a few decode steps with finite logits */
    lp_engine_params ep = {.n_ctx = 64, .n_slots = 1, .n_threads = 2};
    lp_engine *e = lp_engine_create(m, &ep);
    assert_non_null(e);
    const int V = lp_engine_n_vocab(e);
    float *logits = lp_xmalloc((size_t)V * sizeof(float));
    int32_t tok[4] = {1, 2, 3, 4};
    assert_int_equal(lp_engine_eval(e, 0, 0, tok, 4, logits, false), 0);
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < V; k++) assert_true(isfinite(logits[k]));
        int32_t next = lp_argmax(logits, V);
        assert_int_equal(lp_engine_eval(e, 0, 4 + i, &next, 1, logits, false), 0);
    }
    free(logits);
    lp_engine_free(e);
    lp_model_free(m);
    test_rm_rf(dir);
    free(model_dir);
    free(cmd);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_synth_mlx_4bit)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
