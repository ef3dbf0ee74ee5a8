/* test_convert.c — the GGUF conversion pipeline end to end on tiny-qwen3:
 * plans follow llama.cpp's recipes, f32 output equals the bf16 source exactly,
 * quantized tensors stay within per-type error bounds, failures leave nothing
 * behind, and the output is byte-for-byte reproducible. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_util.h"
#include <dirent.h>
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

static char model_dir[512];


static int convert(const char *out, const char *precision, int threads) {
    const char *one[1] = {precision};
    lp_convert_opts o = {.model = model_dir, .output_dir = out, .gguf = one, .n_gguf = 1, .n_threads = threads,
                         .quiet = true, .offline = true};
    return lp_pipeline_convert(&o);
}

static char *artifact_path(const char *out, const char *precision) {
    return lp_xasprintf("%s/gguf/%s/tiny-qwen3-%s.gguf", out, precision, precision);
}

static void load_hp(lp_hparams *hp) {
    char *cfg = lp_path_join(model_dir, "config.json");
    assert_int_equal(lp_hparams_from_config_file(cfg, hp), 0);
    free(cfg);
}

static void test_plan_q4_k_m(void **state) {
    (void)state;
    lp_hparams hp;
    load_hp(&hp);
    lp_checkpoint *ck = lp_checkpoint_open(model_dir);
    assert_non_null(ck);
    lp_source_ref ref = {&hp, ck};
    lp_plan plan;
    assert_int_equal(lp_plan_build(&plan, &hp, lp_recipe_find("Q4_K_M"), lp_convert_role_present, &ref), 0);
    assert_int_equal(plan.n, 3 + 6 * 11); /* embd, norm, output + 11 per qwen3 layer */
    for (int i = 0; i < plan.n; i++) {
        const lp_plan_tensor *t = &plan.tensors[i];
        lp_type want = LP_TYPE_Q4_K;
        if (t->n_dims == 1) want = LP_TYPE_F32;
        else if (t->role == LP_T_OUTPUT) want = LP_TYPE_Q6_K;
        else if ((t->role == LP_T_ATTN_V || t->role == LP_T_FFN_DOWN) && lp_use_more_bits(t->layer, 6)) want = LP_TYPE_Q6_K;
        if (t->type != want) fail_msg("%s: got %s want %s", t->gguf_name, lp_qtype(t->type)->name, lp_qtype(want)->name);
    }
    lp_plan_free(&plan);
    /* q2_k: GQA 4 -> attn_v Q4_K; ffn_down and attn_output Q3_K */
    assert_int_equal(lp_plan_build(&plan, &hp, lp_recipe_find("q2_k"), lp_convert_role_present, &ref), 0);
    for (int i = 0; i < plan.n; i++) {
        const lp_plan_tensor *t = &plan.tensors[i];
        if (t->role == LP_T_ATTN_V) assert_int_equal(t->type, LP_TYPE_Q4_K);
        if (t->role == LP_T_FFN_DOWN || t->role == LP_T_ATTN_OUT) assert_int_equal(t->type, LP_TYPE_Q3_K);
        if (t->role == LP_T_FFN_UP) assert_int_equal(t->type, LP_TYPE_Q2_K);
    }
    lp_plan_free(&plan);
    assert_null(lp_recipe_find("q4_k_x"));
    lp_checkpoint_close(ck);
}

/* Relative RMS error of every 2-D tensor vs the bf16 source. */
static double max_rel_rmse(const char *gguf_path) {
    lp_gguf *g = lp_gguf_open(gguf_path);
    if (!g) fail_msg("%s", lp_errmsg());
    lp_checkpoint *ck = lp_checkpoint_open(model_dir);
    assert_non_null(ck);
    double worst = 0;
    /* every tensor, through the arch's HF -> GGUF name map */
    lp_hparams hp;
    load_hp(&hp);
    for (const lp_tensor_map *m = hp.arch->tensors; m->role != LP_T_COUNT; m++) {
        for (int l = 0; l < (lp_role_per_layer(m->role) ? hp.n_layer : 1); l++) {
            char gname[96], hname[160];
            lp_tensor_name_gguf(m, l, gname, sizeof gname);
            lp_tensor_name_hf(m, l, 0, hname, sizeof hname);
            const lp_gguf_tensor *t = lp_gguf_find_tensor(g, gname);
            const lp_st_tensor *s = lp_checkpoint_find(ck, hname);
            if (!s) continue;
            if (!t) fail_msg("%s missing from %s", gname, gguf_path);
            int64_t n = s->n_elements, rows = n / t->ne[0];
            assert_int_equal(t->ne[0] * t->ne[1] * t->ne[2], n);
            float *a = lp_xmalloc(sizeof(float) * (size_t)n), *b = lp_xmalloc(sizeof(float) * (size_t)n);
            assert_int_equal(lp_st_to_f32(s, 0, n, a), 0);
            size_t rb = lp_row_size(t->type, t->ne[0]);
            for (int64_t r = 0; r < rows; r++)
                lp_qtype(t->type)->to_float((const char *)t->data + (size_t)r * rb, b + r * t->ne[0], t->ne[0]);
            double err = 0, ref = 0;
            for (int64_t k = 0; k < n; k++) {
                err += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
                ref += (double)a[k] * a[k];
            }
            double rel = ref > 0 ? sqrt(err / ref) : sqrt(err);
            if (rel > worst) worst = rel;
            free(a);
            free(b);
        }
    }
    lp_checkpoint_close(ck);
    lp_gguf_close(g);
    return worst;
}

static void test_precisions_error_bounds(void **state) {
    (void)state;
    struct { const char *p; double bound; } cases[] = {
        {"f32", 0.0}, {"bf16", 0.0}, {"f16", 1e-3}, {"q8_0", 0.01}, {"q6_k", 0.03},
        {"q5_k_m", 0.06}, {"q4_k_m", 0.12}, {"q3_k_m", 0.25}, {"q2_k", 0.45},
    };
    char *out = test_tmpdir();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (convert(out, cases[i].p, 2) != 0) fail_msg("%s: %s", cases[i].p, lp_errmsg());
        char *path = artifact_path(out, cases[i].p);
        double rel = max_rel_rmse(path);
        printf("  %-7s worst tensor relative RMSE %.5f (bound %.3f)\n", cases[i].p, rel, cases[i].bound);
        if (rel > cases[i].bound) fail_msg("%s: relative RMSE %g > %g", cases[i].p, rel, cases[i].bound);
        free(path);
    }
    char *manifest = lp_path_join(out, "manifest.json");
    json_t *m = json_load_file(manifest, 0, NULL);
    assert_non_null(m);
    assert_int_equal(json_array_size(json_object_get(m, "artifacts")), 9); /* runs accumulate */
    json_decref(m);
    free(manifest);
    test_rm_rf(out);
    free(out);
}

static void test_reproducible_across_thread_counts(void **state) {
    (void)state;
    char *a = test_tmpdir(), *b = test_tmpdir();
    assert_int_equal(convert(a, "q4_k_m", 1), 0);
    assert_int_equal(convert(b, "q4_k_m", 2), 0);
    char *pa = artifact_path(a, "q4_k_m"), *pb = artifact_path(b, "q4_k_m");
    lp_mmap ma, mb;
    assert_int_equal(lp_mmap_open(&ma, pa), 0);
    assert_int_equal(lp_mmap_open(&mb, pb), 0);
    assert_int_equal(ma.size, mb.size);
    assert_memory_equal(ma.data, mb.data, ma.size);
    lp_mmap_close(&ma);
    lp_mmap_close(&mb);
    free(pa);
    free(pb);
    test_rm_rf(a);
    test_rm_rf(b);
    free(a);
    free(b);
}

static int count_files(const char *dir) {
    char *cmd = lp_xasprintf("find '%s' -type f | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (fscanf(p, "%d", &n) != 1) n = -1;
    pclose(p);
    free(cmd);
    return n;
}

/* A truncated shard: clear error naming the file, and no artifact or temp file left. */
static void test_corrupt_checkpoint_leaves_nothing(void **state) {
    (void)state;
    char *bad = test_tmpdir(), *out = test_tmpdir();
    char *cmd = lp_xasprintf("cp '%s'/* '%s'/ && truncate -s -1000 '%s/model-00002-of-00002.safetensors'", model_dir,
                             bad, bad);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    const char *one[1] = {"q8_0"};
    lp_convert_opts o = {.model = bad, .output_dir = out, .gguf = one, .n_gguf = 1, .quiet = true, .offline = true};
    assert_int_equal(lp_pipeline_convert(&o), -1);
    if (!strstr(lp_errmsg(), "model-00002-of-00002.safetensors")) fail_msg("error does not name the shard: %s", lp_errmsg());
    assert_int_equal(count_files(out), 0);
    o.model = "/nonexistent/model";
    assert_int_equal(lp_pipeline_convert(&o), -1);
    const char *unknown[1] = {"q9_k"};
    o.model = model_dir;
    o.gguf = unknown;
    assert_int_equal(lp_pipeline_convert(&o), -1);
    assert_non_null(strstr(lp_errmsg(), "q9_k"));
    assert_int_equal(count_files(out), 0);
    test_rm_rf(bad);
    test_rm_rf(out);
    free(bad);
    free(out);
}

int main(void) {
    snprintf(model_dir, sizeof model_dir, "%s/models/tiny-qwen3", LP_SOURCE_DIR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_q4_k_m),
        cmocka_unit_test(test_precisions_error_bounds),
        cmocka_unit_test(test_reproducible_across_thread_counts),
        cmocka_unit_test(test_corrupt_checkpoint_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
