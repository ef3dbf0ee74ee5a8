/* test_runtime.c — the inference engine against HF transformers references
 * (fixtures/refs): logits of 64 tokens, greedy continuations, per-chunk
 * perplexity; prefill vs token-by-token decode; several sequences batched in
 * one step; KV prefix copy; GGUF loading (BF16 and Q8_0 files written here
 * from the HF weights, dense and MoE) with a KL-divergence check; bad input. */
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
#include <jansson.h>

#include "arch/arch.h"
#include "core/err.h"
#include "core/fileio.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

/* Measured on the fixtures: max |logit - HF| is 1.4e-5 (tiny), 1.5e-5 (small),
 * 1.4e-5 (MoE); prefill and decode are bit-identical. Bounds keep ~7x margin. */
#define LOGIT_BOUND 1e-4
#define NREF 64
#define NGREEDY 48

typedef struct {
    const char *name;
    lp_model *model;
    lp_engine *engine;
    json_t *refs;
    float *ref_logits; /* [NREF][V] */
    int32_t ref_tokens[NREF];
    bool f32_activations; /* gpt-oss: MXFP4 experts times F32 activations, as HF computes */
} fixture;

static fixture fx_tiny = {.name = "tiny-qwen3"}, fx_small = {.name = "small-qwen3"}, fx_moe = {.name = "tiny-qwen3-moe"},
               fx_oss = {.name = "tiny-gptoss", .f32_activations = true};

static char *fixture_path(const char *fmt, const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, fmt, name);
    return lp_path_join(LP_FIXTURES_DIR, rel);
}

static int load_fixture(fixture *f) {
    char *dir = fixture_path("models/%s", f->name);
    f->model = lp_model_load_hf(dir);
    free(dir);
    if (!f->model) return fprintf(stderr, "load %s: %s\n", f->name, lp_errmsg()), -1;
    lp_engine_params p = {.n_ctx = 1024, .n_slots = 4, .n_threads = 2, .f32_activations = f->f32_activations};
    f->engine = lp_engine_create(f->model, &p);
    if (!f->engine) return fprintf(stderr, "engine %s: %s\n", f->name, lp_errmsg()), -1;
    char *refs = fixture_path("refs/%s.json", f->name);
    f->refs = json_load_file(refs, 0, NULL);
    free(refs);
    if (!f->refs) return -1;
    const json_t *toks = json_object_get(json_object_get(f->refs, "logits"), "tokens");
    if (json_array_size(toks) != NREF) return -1;
    for (int i = 0; i < NREF; i++) f->ref_tokens[i] = (int32_t)json_integer_value(json_array_get(toks, (size_t)i));
    char *bin = fixture_path("refs/%s.logits64.f32", f->name);
    size_t len;
    f->ref_logits = (float *)lp_read_file(bin, &len);
    free(bin);
    return f->ref_logits && len == (size_t)NREF * f->model->hp.n_vocab * sizeof(float) ? 0 : -1;
}

static int setup(void **state) {
    (void)state;
    return load_fixture(&fx_tiny) || load_fixture(&fx_small) || load_fixture(&fx_moe) || load_fixture(&fx_oss) ? -1 : 0;
}

static void free_fixture(fixture *f) {
    lp_engine_free(f->engine);
    lp_model_free(f->model);
    json_decref(f->refs);
    free(f->ref_logits);
}

static int teardown(void **state) {
    (void)state;
    free_fixture(&fx_tiny);
    free_fixture(&fx_small);
    free_fixture(&fx_moe);
    free_fixture(&fx_oss);
    return 0;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* ---- logits of the 64 reference tokens: prefill, then decode one by one ---- */

static void check_logits(fixture *f) {
    const int V = f->model->hp.n_vocab;
    float *prefill = lp_xmalloc((size_t)NREF * V * sizeof(float)), *decode = lp_xmalloc((size_t)NREF * V * sizeof(float));
    assert_int_equal(lp_engine_eval(f->engine, 0, 0, f->ref_tokens, NREF, prefill, true), 0);
    for (int i = 0; i < NREF; i++)
        assert_int_equal(lp_engine_eval(f->engine, 1, i, &f->ref_tokens[i], 1, decode + (size_t)i * V, false), 0);
    for (int i = 0; i < NREF; i++)
        assert_int_equal(lp_argmax(prefill + (size_t)i * V, V), lp_argmax(f->ref_logits + (size_t)i * V, V));
    double d_ref = max_abs_diff(prefill, f->ref_logits, (size_t)NREF * V);
    double d_dec = max_abs_diff(prefill, decode, (size_t)NREF * V);
    printf("  %s: max |logit - HF| %.3g, prefill vs decode %.3g\n", f->name, d_ref, d_dec);
    assert_true(d_ref < LOGIT_BOUND);
    assert_true(d_dec < 1e-6);
    free(prefill);
    free(decode);
}

static void test_logits_tiny(void **state) { (void)state; check_logits(&fx_tiny); }
static void test_logits_small(void **state) { (void)state; check_logits(&fx_small); }
static void test_logits_moe(void **state) { (void)state; check_logits(&fx_moe); }
static void test_logits_gptoss(void **state) { (void)state; check_logits(&fx_oss); }

/* gpt-oss with llama.cpp's default math: MXFP4 experts times Q8_0-rounded activations */
static void test_gptoss_q8_activations(void **state) {
    (void)state;
    fixture *f = &fx_oss;
    const int V = f->model->hp.n_vocab;
    lp_engine *e = lp_engine_create(f->model, &(lp_engine_params){.n_ctx = 128, .n_threads = 2});
    assert_non_null(e);
    float *logits = lp_xmalloc((size_t)NREF * V * sizeof(float));
    assert_int_equal(lp_engine_eval(e, 0, 0, f->ref_tokens, NREF, logits, true), 0);
    lp_kld *k = lp_kld_new();
    for (int i = 0; i < NREF; i++) lp_kld_add(k, f->ref_logits + (size_t)i * V, logits + (size_t)i * V, V);
    lp_kld_stats st;
    lp_kld_get(k, &st);
    printf("  tiny-gptoss, Q8_0 activations: mean KLD %.2g, top-1 agreement %.3f\n", st.mean_kld, st.top1_agree);
    assert_true(st.mean_kld < 1e-2 && st.top1_agree >= 0.9);
    lp_kld_free(k);
    free(logits);
    lp_engine_free(e);
}

/* ---- greedy continuations ---- */

static int json_ids(const json_t *arr, int32_t *out, int cap) {
    int n = (int)json_array_size(arr);
    assert_true(n <= cap);
    for (int i = 0; i < n; i++) out[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return n;
}

static void check_greedy(fixture *f) {
    const int V = f->model->hp.n_vocab;
    float *logits = lp_xmalloc((size_t)V * sizeof(float));
    const json_t *cases = json_object_get(f->refs, "greedy");
    assert_int_equal(json_array_size(cases), 3);
    for (size_t c = 0; c < 3; c++) {
        int32_t prompt[256], want[NGREEDY];
        int np = json_ids(json_object_get(json_array_get(cases, c), "prompt_ids"), prompt, 256);
        int nw = json_ids(json_object_get(json_array_get(cases, c), "greedy_ids"), want, NGREEDY);
        assert_int_equal(nw, NGREEDY);
        assert_int_equal(lp_engine_eval(f->engine, 2, 0, prompt, np, logits, false), 0);
        for (int i = 0; i < NGREEDY; i++) {
            int32_t next = lp_argmax(logits, V);
            assert_int_equal(next, want[i]);
            assert_int_equal(lp_engine_eval(f->engine, 2, np + i, &next, 1, logits, false), 0);
        }
    }
    free(logits);
}

static void test_greedy_tiny(void **state) { (void)state; check_greedy(&fx_tiny); }
static void test_greedy_small(void **state) { (void)state; check_greedy(&fx_small); }
static void test_greedy_moe(void **state) { (void)state; check_greedy(&fx_moe); }
static void test_greedy_gptoss(void **state) { (void)state; check_greedy(&fx_oss); }

/* ---- three sequences in one batch: mixed prefill, then batched decode steps ---- */

static void check_batched(fixture *f) {
    const int V = f->model->hp.n_vocab;
    const json_t *cases = json_object_get(f->refs, "greedy");
    int32_t prompt[3][256], want[3][NGREEDY], np[3];
    int32_t tok[1024], pos[1024], slot[1024];
    int8_t flag[1024];
    int n = 0;
    for (int c = 0; c < 3; c++) {
        np[c] = json_ids(json_object_get(json_array_get(cases, (size_t)c), "prompt_ids"), prompt[c], 256);
        json_ids(json_object_get(json_array_get(cases, (size_t)c), "greedy_ids"), want[c], NGREEDY);
    }
    /* prefill: the prompts interleaved token by token (each sequence still in order) */
    for (int i = 0; i < 256; i++)
        for (int c = 0; c < 3; c++)
            if (i < np[c]) {
                tok[n] = prompt[c][i], pos[n] = i, slot[n] = c + 1;
                flag[n++] = i == np[c] - 1;
            }
    float *logits = lp_xmalloc((size_t)3 * V * sizeof(float));
    lp_batch b = {.n_tokens = n, .tokens = tok, .pos = pos, .slot = slot, .logits = flag};
    assert_int_equal(lp_engine_decode(f->engine, &b, logits), 0);
    /* flagged rows come back in batch order: find which sequence each row is */
    int row_seq[3], r = 0;
    for (int i = 0; i < n; i++)
        if (flag[i]) row_seq[r++] = slot[i] - 1;
    for (int step = 0; step < NGREEDY; step++) {
        int32_t next[3], p3[3], s3[3];
        for (int k = 0; k < 3; k++) {
            const int c = row_seq[k];
            next[k] = lp_argmax(logits + (size_t)k * V, V);
            assert_int_equal(next[k], want[c][step]);
            p3[k] = np[c] + step, s3[k] = c + 1;
        }
        int8_t all[3] = {1, 1, 1};
        lp_batch d = {.n_tokens = 3, .tokens = next, .pos = p3, .slot = s3, .logits = all};
        assert_int_equal(lp_engine_decode(f->engine, &d, logits), 0);
    }
    free(logits);
}

static void test_batched_tiny(void **state) { (void)state; check_batched(&fx_tiny); }
static void test_batched_moe(void **state) { (void)state; check_batched(&fx_moe); }

/* ---- KV prefix copy: continuing in a copied slot equals continuing in the original ---- */

static void test_kv_copy(void **state) {
    (void)state;
    fixture *f = &fx_tiny;
    const int V = f->model->hp.n_vocab;
    float *a = lp_xmalloc((size_t)V * sizeof(float)), *b = lp_xmalloc((size_t)V * sizeof(float));
    assert_int_equal(lp_engine_eval(f->engine, 0, 0, f->ref_tokens, 40, NULL, false), 0);
    assert_int_equal(lp_engine_kv_copy(f->engine, 0, 3, 32), 0);
    /* slot 3 got the first 32 positions; feed both the same tokens 32..39 */
    assert_int_equal(lp_engine_eval(f->engine, 0, 32, f->ref_tokens + 32, 8, a, false), 0);
    assert_int_equal(lp_engine_eval(f->engine, 3, 32, f->ref_tokens + 32, 8, b, false), 0);
    assert_true(max_abs_diff(a, b, (size_t)V) == 0.0);
    assert_true(max_abs_diff(b, f->ref_logits + (size_t)39 * V, (size_t)V) < LOGIT_BOUND);
    assert_int_equal(lp_engine_kv_copy(f->engine, 0, 9, 4), -1);
    free(a);
    free(b);
}

/* ---- perplexity: per-chunk mean NLL at ctx 512 against refs ppl_ctx512.chunk_mean_nll ---- */

static int32_t *eval_tokens(size_t want, size_t *n) {
    char *tok_path = fixture_path("models/%s/tokenizer.json", "tiny-qwen3");
    lp_tokenizer *tok = lp_tokenizer_load_json(tok_path);
    free(tok_path);
    assert_non_null(tok);
    size_t len;
    char *text = lp_read_file(LP_FIXTURES_DIR "/eval.txt", &len);
    assert_non_null(text);
    /* ~3.6 bytes per token: a prefix with margin tokenizes like the whole file up to `want` */
    size_t prefix = want * 6 < len ? want * 6 : len;
    while (prefix < len && (text[prefix] & 0xC0) == 0x80) prefix++;
    int32_t *ids;
    assert_int_equal(lp_tokenizer_encode(tok, text, prefix, false, &ids, n), 0);
    assert_true(*n >= want + 64);
    free(text);
    lp_tokenizer_free(tok);
    return ids;
}

static void check_ppl(fixture *f, int chunks) {
    size_t n;
    int32_t *ids = eval_tokens((size_t)chunks * 512, &n);
    lp_ppl_result r;
    assert_int_equal(lp_perplexity(f->engine, ids, n, 512, chunks, NULL, NULL, &r), 0);
    assert_int_equal(r.n_chunks, chunks);
    const json_t *want = json_object_get(json_object_get(f->refs, "ppl_ctx512"), "chunk_mean_nll");
    double worst = 0.0;
    for (int c = 0; c < chunks; c++) {
        double ref = json_real_value(json_array_get(want, (size_t)c));
        worst = fmax(worst, fabs(r.chunk_nll[c] - ref) / ref);
    }
    printf("  %s: %d chunks, worst relative NLL error %.2g (ppl %.4f)\n", f->name, chunks, worst, r.ppl_all);
    assert_true(worst < 1e-4); /* the brief allows 0.5%; measured ~1e-7 */
    lp_ppl_result_free(&r);
    free(ids);
}

static void test_ppl_tiny(void **state) { (void)state; check_ppl(&fx_tiny, 4); }
static void test_ppl_small(void **state) { (void)state; check_ppl(&fx_small, 2); }
static void test_ppl_moe(void **state) { (void)state; check_ppl(&fx_moe, 2); }
/* ctx 512 > the 128-token sliding window of gpt-oss's even layers */
static void test_ppl_gptoss(void **state) { (void)state; check_ppl(&fx_oss, 1); }

/* ---- GGUF: write the HF weights into a GGUF here (matrices BF16 or Q8_0), load it back ---- */

static void set_arch_kvs(lp_gguf_writer *w, const lp_hparams *hp, int embd_override) {
    const char *a = hp->arch->gguf_arch;
    char key[128];
#define KEY(s) (snprintf(key, sizeof key, "%s.%s", a, s), key)
    lp_gguf_set_str(w, "general.architecture", a);
    lp_gguf_set_u32(w, KEY("block_count"), (uint32_t)hp->n_layer);
    lp_gguf_set_u32(w, KEY("context_length"), (uint32_t)hp->n_ctx_train);
    lp_gguf_set_u32(w, KEY("embedding_length"), (uint32_t)(embd_override ? embd_override : hp->n_embd));
    lp_gguf_set_u32(w, KEY("feed_forward_length"), (uint32_t)hp->n_ff);
    lp_gguf_set_u32(w, KEY("attention.head_count"), (uint32_t)hp->n_head);
    lp_gguf_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)hp->n_head_kv);
    lp_gguf_set_u32(w, KEY("attention.key_length"), (uint32_t)hp->head_dim);
    lp_gguf_set_u32(w, KEY("attention.value_length"), (uint32_t)hp->head_dim);
    lp_gguf_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), hp->rms_eps);
    lp_gguf_set_f32(w, KEY("rope.freq_base"), hp->rope_theta);
    if (hp->n_expert > 0) {
        lp_gguf_set_u32(w, KEY("expert_count"), (uint32_t)hp->n_expert);
        lp_gguf_set_u32(w, KEY("expert_used_count"), (uint32_t)hp->n_expert_used);
        lp_gguf_set_u32(w, KEY("expert_feed_forward_length"), (uint32_t)hp->n_ff_exp);
    }
    if (hp->sliding_window > 0) lp_gguf_set_u32(w, KEY("attention.sliding_window"), (uint32_t)hp->sliding_window);
    if (hp->rope_scaling == LP_ROPE_SCALING_YARN) {
        lp_gguf_set_str(w, KEY("rope.scaling.type"), "yarn");
        lp_gguf_set_f32(w, KEY("rope.scaling.factor"), hp->rope_factor);
        lp_gguf_set_u32(w, KEY("rope.scaling.original_context_length"), (uint32_t)hp->rope_orig_ctx);
        lp_gguf_set_f32(w, KEY("rope.scaling.yarn_beta_fast"), hp->yarn_beta_fast);
        lp_gguf_set_f32(w, KEY("rope.scaling.yarn_beta_slow"), hp->yarn_beta_slow);
    }
#undef KEY
}

typedef struct {
    const lp_weight *w;
    lp_type type;
    int idx;
} gguf_item;

/* Float matrices become `matrix_type`; vectors stay F32; the token embedding and
 * already-quantized weights (gpt-oss MXFP4 experts) keep their type and the MoE router
 * is F32, as llama.cpp's converter does. */
static void write_gguf(const lp_model *m, const char *path, lp_type matrix_type, int embd_override) {
    lp_gguf_writer *w = lp_gguf_writer_new();
    set_arch_kvs(w, &m->hp, embd_override);
    gguf_item items[LP_T_COUNT * LP_MAX_LAYERS];
    int n_items = 0;
    for (const lp_tensor_map *t = m->arch->tensors; t->role != LP_T_COUNT; t++) {
        const int layers = lp_role_per_layer(t->role) ? m->hp.n_layer : 1;
        for (int l = 0; l < layers; l++) {
            const lp_weight *wt = lp_model_weight(m, t->role, l);
            if (!wt) continue;
            char name[128];
            lp_tensor_name_gguf(t, l, name, sizeof name);
            const bool matrix = wt->n_dims >= 2 && t->role != LP_T_TOKEN_EMBD && !lp_qtype(wt->type)->quantized;
            gguf_item *it = &items[n_items++];
            it->w = wt;
            it->type = t->role == LP_T_FFN_ROUTER ? LP_TYPE_F32 : matrix ? matrix_type : wt->type;
            it->idx = lp_gguf_writer_add_tensor(w, name, it->type, wt->n_dims, wt->ne);
            assert_true(it->idx >= 0);
        }
    }
    assert_int_equal(lp_gguf_writer_begin(w, path), 0);
    for (int i = 0; i < n_items; i++) {
        const lp_weight *wt = items[i].w;
        const size_t out_row = lp_row_size(items[i].type, wt->ne[0]);
        float *row = lp_xmalloc((size_t)wt->ne[0] * sizeof(float));
        uint8_t *conv = lp_xmalloc(out_row);
        for (int64_t e = 0; e < wt->ne[2]; e++) {
            const uint8_t *src = lp_weight_expert(wt, (int)e);
            for (int64_t r = 0; r < wt->ne[1]; r++) {
                const uint8_t *in = src + (size_t)r * wt->row_bytes;
                if (items[i].type != wt->type) {
                    lp_qtype(wt->type)->to_float(in, row, wt->ne[0]);
                    lp_qtype(items[i].type)->from_float(row, conv, wt->ne[0]);
                    in = conv;
                }
                assert_int_equal(lp_gguf_writer_tensor_data(w, items[i].idx, in, out_row), 0);
            }
        }
        free(row);
        free(conv);
    }
    assert_int_equal(lp_gguf_writer_finish(w), 0);
    lp_gguf_writer_free(w);
}

static void check_gguf(fixture *f) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/lp_test_runtime_%d_%s.gguf", (int)getpid(), f->name);
    const int V = f->model->hp.n_vocab;
    float *logits = lp_xmalloc((size_t)NREF * V * sizeof(float)), *hf = lp_xmalloc((size_t)NREF * V * sizeof(float));
    assert_int_equal(lp_engine_eval(f->engine, 0, 0, f->ref_tokens, NREF, hf, true), 0);

    /* BF16 matrices: the same numbers as the HF load, so the same logits */
    write_gguf(f->model, path, LP_TYPE_BF16, 0);
    lp_model *m = lp_model_load_gguf(path);
    assert_non_null(m);
    assert_int_equal(m->hp.n_layer, f->model->hp.n_layer);
    assert_int_equal(m->hp.n_vocab, V);
    assert_int_equal(m->hp.n_expert, f->model->hp.n_expert);
    assert_true(m->hp.expert_norm_topk == f->model->hp.expert_norm_topk);
    const lp_engine_params same = {.n_ctx = 128, .n_threads = 2, .f32_activations = f->f32_activations};
    lp_engine *e = lp_engine_create(m, &same);
    assert_non_null(e);
    assert_int_equal(lp_engine_eval(e, 0, 0, f->ref_tokens, NREF, logits, true), 0);
    assert_true(max_abs_diff(logits, hf, (size_t)NREF * V) == 0.0);
    lp_engine_free(e);
    lp_model_free(m);

    /* Q8_0 matrices: the quantized (vec_dot) path; close to the BF16 model */
    write_gguf(f->model, path, LP_TYPE_Q8_0, 0);
    m = lp_model_load_gguf(path);
    assert_non_null(m);
    e = lp_engine_create(m, &same);
    assert_non_null(e);
    assert_int_equal(lp_engine_eval(e, 0, 0, f->ref_tokens, NREF, logits, true), 0);
    lp_kld *k = lp_kld_new();
    for (int i = 0; i < NREF; i++) lp_kld_add(k, f->ref_logits + (size_t)i * V, logits + (size_t)i * V, V);
    lp_kld_stats st;
    lp_kld_get(k, &st);
    printf("  %s Q8_0: mean KLD %.2g, p99 %.2g, top-1 agreement %.3f\n", f->name, st.mean_kld, st.p99_kld, st.top1_agree);
    assert_int_equal(st.n, NREF);
    /* measured: dense 9e-4 / 0.98, MoE 4.8e-3 / 0.95 (expert choices flip under quantization noise;
     * Q8_0-rounded weights in F32 math give 7e-3, so this is the weights, not the kernels) */
    assert_true(st.mean_kld < (f->model->arch->moe ? 1e-2 : 2e-3));
    assert_true(st.top1_agree >= 0.9);
    lp_kld_free(k);
    lp_engine_free(e);
    lp_model_free(m);

    /* hparams that contradict the tensors are refused, naming the tensor */
    write_gguf(f->model, path, LP_TYPE_BF16, 128);
    lp_err_clear();
    assert_null(lp_model_load_gguf(path));
    assert_non_null(strstr(lp_errmsg(), "token_embd.weight"));
    unlink(path);
    free(logits);
    free(hf);
}

static void test_gguf_dense(void **state) { (void)state; check_gguf(&fx_tiny); }
static void test_gguf_moe(void **state) { (void)state; check_gguf(&fx_moe); }
static void test_gguf_gptoss(void **state) { (void)state; check_gguf(&fx_oss); }

/* ---- llama: HF rows with NEOX rope == GGUF-permuted rows with NORM rope ----
 * A llama checkpoint is made from tiny-qwen3's weights minus the q/k norms (no reference
 * exists for it, but both layouts of the same weights must give the same logits). */

static void write_llama_hf(const lp_model *src, const char *dir) {
    lp_st_writer *w = lp_st_writer_new();
    const lp_tensor_map *rows[LP_T_COUNT * LP_MAX_LAYERS];
    const lp_weight *ws[LP_T_COUNT * LP_MAX_LAYERS];
    int n = 0;
    for (const lp_tensor_map *t = lp_arch_by_model_type("llama")->tensors; t->role != LP_T_COUNT; t++) {
        const int layers = lp_role_per_layer(t->role) ? src->hp.n_layer : 1;
        for (int l = 0; l < layers; l++) {
            const lp_weight *wt = lp_model_weight(src, t->role, l);
            if (!wt) continue;
            char name[128];
            lp_tensor_name_hf(t, l, 0, name, sizeof name);
            int64_t shape[2] = {wt->n_dims == 2 ? wt->ne[1] : wt->ne[0], wt->ne[0]};
            assert_int_equal(lp_st_writer_add(w, name, wt->type == LP_TYPE_BF16 ? LP_ST_BF16 : LP_ST_F32, wt->n_dims, shape), n);
            rows[n] = t, ws[n++] = wt;
        }
    }
    char *path = lp_path_join(dir, "model.safetensors");
    assert_int_equal(lp_st_writer_begin(w, path), 0);
    for (int i = 0; i < n; i++) assert_int_equal(lp_st_writer_data(w, i, ws[i]->data, ws[i]->expert_bytes), 0);
    assert_int_equal(lp_st_writer_finish(w), 0);
    lp_st_writer_free(w);
    free(path);
    (void)rows;
    const lp_hparams *hp = &src->hp;
    char *cfg = lp_xasprintf("{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": %d, "
                             "\"hidden_size\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
                             "\"intermediate_size\": %d, \"vocab_size\": %d, \"max_position_embeddings\": %d, "
                             "\"rms_norm_eps\": %g, \"rope_theta\": %g, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\"}",
                             hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff, hp->n_vocab,
                             hp->n_ctx_train, (double)hp->rms_eps, (double)hp->rope_theta);
    path = lp_path_join(dir, "config.json");
    assert_int_equal(lp_write_file_atomic(path, cfg, strlen(cfg)), 0);
    free(path);
    free(cfg);
}

/* GGUF row 2i + t of each head = HF row t * hd/2 + i (FORMATS.md 4.4). */
static void permute_rows(const uint8_t *src, uint8_t *dst, int n_rows, int hd, size_t row_bytes) {
    for (int r = 0; r < n_rows; r++) {
        const int head = r / hd, j = r % hd, i = j / 2, t = j % 2;
        memcpy(dst + (size_t)r * row_bytes, src + (size_t)(head * hd + t * (hd / 2) + i) * row_bytes, row_bytes);
    }
}

static void write_llama_gguf(const lp_model *m, const char *path) {
    lp_gguf_writer *w = lp_gguf_writer_new();
    set_arch_kvs(w, &m->hp, 0);
    lp_gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)m->hp.head_dim);
    const lp_weight *ws[LP_T_COUNT * LP_MAX_LAYERS];
    lp_role roles[LP_T_COUNT * LP_MAX_LAYERS];
    int n = 0;
    for (const lp_tensor_map *t = m->arch->tensors; t->role != LP_T_COUNT; t++) {
        const int layers = lp_role_per_layer(t->role) ? m->hp.n_layer : 1;
        for (int l = 0; l < layers; l++) {
            const lp_weight *wt = lp_model_weight(m, t->role, l);
            if (!wt) continue;
            char name[128];
            lp_tensor_name_gguf(t, l, name, sizeof name);
            assert_int_equal(lp_gguf_writer_add_tensor(w, name, wt->type, wt->n_dims, wt->ne), n);
            ws[n] = wt, roles[n++] = t->role;
        }
    }
    assert_int_equal(lp_gguf_writer_begin(w, path), 0);
    for (int i = 0; i < n; i++) {
        const size_t bytes = ws[i]->expert_bytes;
        uint8_t *buf = lp_xmalloc(bytes);
        if (roles[i] == LP_T_ATTN_Q || roles[i] == LP_T_ATTN_K)
            permute_rows(ws[i]->data, buf, (int)ws[i]->ne[1], m->hp.head_dim, ws[i]->row_bytes);
        else
            memcpy(buf, ws[i]->data, bytes);
        assert_int_equal(lp_gguf_writer_tensor_data(w, i, buf, bytes), 0);
        free(buf);
    }
    assert_int_equal(lp_gguf_writer_finish(w), 0);
    lp_gguf_writer_free(w);
}

static void test_llama_rope_layouts(void **state) {
    (void)state;
    char dir[] = "/tmp/lp_test_runtime_llama_XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_llama_hf(fx_tiny.model, dir);
    lp_model *hf = lp_model_load_hf(dir);
    assert_non_null(hf);
    assert_int_equal(hf->rope, LP_ROPE_NEOX);
    char *gguf_path = lp_path_join(dir, "llama.gguf");
    write_llama_gguf(hf, gguf_path);
    lp_model *gg = lp_model_load_gguf(gguf_path);
    assert_non_null(gg);
    assert_int_equal(gg->rope, LP_ROPE_NORM);
    const int V = hf->hp.n_vocab, N = 24;
    float *a = lp_xmalloc((size_t)N * V * sizeof(float)), *b = lp_xmalloc((size_t)N * V * sizeof(float));
    lp_engine *ea = lp_engine_create(hf, &(lp_engine_params){.n_ctx = 64, .n_threads = 2});
    lp_engine *eb = lp_engine_create(gg, &(lp_engine_params){.n_ctx = 64, .n_threads = 2});
    assert_int_equal(lp_engine_eval(ea, 0, 0, fx_tiny.ref_tokens, N, a, true), 0);
    assert_int_equal(lp_engine_eval(eb, 0, 0, fx_tiny.ref_tokens, N, b, true), 0);
    double d = max_abs_diff(a, b, (size_t)N * V);
    printf("  llama HF/NEOX vs GGUF/NORM: max |diff| %.3g\n", d);
    assert_true(d < LOGIT_BOUND); /* 6e-6 with AVX2, 1.8e-5 scalar: summation order only */
    /* and the model is not the qwen3 one (q/k norms gone): the logits differ */
    assert_true(max_abs_diff(a, fx_tiny.ref_logits, (size_t)N * V) > 1e-2);
    lp_engine_free(ea);
    lp_engine_free(eb);
    lp_model_free(hf);
    lp_model_free(gg);
    unlink(gguf_path);
    free(gguf_path);
    char *p = lp_path_join(dir, "model.safetensors");
    unlink(p);
    free(p);
    p = lp_path_join(dir, "config.json");
    unlink(p);
    free(p);
    rmdir(dir);
    free(a);
    free(b);
}

/* ---- bad input ---- */

static void test_bad_input(void **state) {
    (void)state;
    lp_err_clear();
    assert_null(lp_model_load("/nonexistent/model"));
    assert_true(strlen(lp_errmsg()) > 0);
    lp_err_clear();
    assert_null(lp_model_load_gguf(LP_FIXTURES_DIR "/eval.txt"));
    assert_true(strlen(lp_errmsg()) > 0);

    lp_engine *e = fx_tiny.engine;
    int32_t tok = 1, pos = 0, slot = 0, big = 1 << 20, neg = -1, far = 1024;
    lp_batch b = {.n_tokens = 1, .tokens = &big, .pos = &pos, .slot = &slot};
    assert_int_equal(lp_engine_decode(e, &b, NULL), -1);
    assert_non_null(strstr(lp_errmsg(), "vocabulary"));
    b.tokens = &tok, b.pos = &far;
    assert_int_equal(lp_engine_decode(e, &b, NULL), -1);
    assert_non_null(strstr(lp_errmsg(), "position"));
    b.pos = &pos, b.slot = &neg;
    assert_int_equal(lp_engine_decode(e, &b, NULL), -1);
    assert_non_null(strstr(lp_errmsg(), "slot"));
    b.n_tokens = 0;
    assert_int_equal(lp_engine_decode(e, &b, NULL), -1);
    assert_int_equal(lp_engine_eval(e, 0, 1020, fx_tiny.ref_tokens, 8, NULL, false), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_tiny),  cmocka_unit_test(test_logits_small), cmocka_unit_test(test_logits_moe),
        cmocka_unit_test(test_greedy_tiny),  cmocka_unit_test(test_greedy_small), cmocka_unit_test(test_greedy_moe),
        cmocka_unit_test(test_batched_tiny), cmocka_unit_test(test_batched_moe),  cmocka_unit_test(test_kv_copy),
        cmocka_unit_test(test_ppl_tiny),     cmocka_unit_test(test_ppl_small),    cmocka_unit_test(test_ppl_moe),
        cmocka_unit_test(test_gguf_dense),   cmocka_unit_test(test_gguf_moe),    cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_logits_gptoss), cmocka_unit_test(test_greedy_gptoss), cmocka_unit_test(test_ppl_gptoss),
        cmocka_unit_test(test_gptoss_q8_activations), cmocka_unit_test(test_gguf_gptoss),
        cmocka_unit_test(test_llama_rope_layouts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
