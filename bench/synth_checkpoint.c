/* synth_checkpoint.c — writes an HF-layout checkpoint with the exact tensor
 * names and shapes of a real config.json and random bf16 values, for speed and
 * memory benchmarks at full size (speed does not depend on the values).
 *
 *   synth_checkpoint CONFIG.json TOKENIZER_DIR OUT_DIR [--layers N]
 *   synth_checkpoint CONFIG.json TOKENIZER_DIR OUT.gguf --gguf RECIPE [--layers N]
 *   synth_checkpoint CONFIG.json TOKENIZER_DIR OUT_DIR --mlx RECIPE [--layers N]
 *
 * Shards at ~4 GB like the hub, writes model.safetensors.index.json, copies
 * config.json (optionally with fewer layers) and the tokenizer files.
 *
 * --gguf writes a GGUF of a precision recipe directly (the recipe's per-tensor
 * types, llama.cpp metadata and tokenizer), skipping the bf16 checkpoint and
 * the K-quant search: each tensor cycles through a few random rows quantized
 * once. Seconds instead of minutes for the GPU benchmarks, where only the
 * shapes and types matter.
 *
 * --mlx writes an MLX directory of an MLX recipe ("4bit": mlx-lm's default 4 bits,
 * group 64) the same way: the pipeline's MLX sink (names, bf16 scales and biases,
 * config.json quantization sections, shards, index, tokenizer) fed with a few random
 * rows per tensor, cycled, and quantized on all cores. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "core/err.h"
#include "core/fileio.h"
#include "core/pool.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "pipeline/convert.h"
#include "pipeline/gguf_meta.h"
#include "pipeline/mlx_recipe.h"
#include "pipeline/plan.h"
#include "pipeline/sink_mlx.h"
#include "quant/qtype.h"

#define SHARD_BYTES (4000ull * 1000 * 1000)

typedef struct {
    char name[160];
    int n_dims;
    int64_t shape[3];
    bool is_norm;
} hf_tensor;

static int present(void *ctx, lp_role role, int layer) {
    const lp_hparams *hp = ctx;
    (void)layer;
    if (role == LP_T_OUTPUT) return !hp->tied_embeddings;
    if (role == LP_T_ATTN_Q_BIAS || role == LP_T_ATTN_K_BIAS || role == LP_T_ATTN_V_BIAS) return hp->attn_bias;
    return 0;
}

/* HF tensors of a plan row: one, or one per expert. HF shape = GGUF ne reversed. */
static int hf_tensors(const lp_hparams *hp, const lp_plan_tensor *t, hf_tensor *out, int max) {
    const lp_tensor_map *m = lp_arch_tensor(hp->arch, t->role);
    int n = m->src == LP_SRC_EXPERT_STACK ? (int)t->ne[2] : 1;
    if (n > max) return -1;
    for (int e = 0; e < n; e++) {
        hf_tensor *h = &out[e];
        lp_tensor_name_hf(m, t->layer, e, h->name, sizeof h->name);
        h->n_dims = m->src == LP_SRC_EXPERT_STACK ? 2 : t->n_dims;
        for (int d = 0; d < h->n_dims; d++) h->shape[d] = t->ne[h->n_dims - 1 - d];
        h->is_norm = t->n_dims == 1;
    }
    return n;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static void fill(uint16_t *buf, int64_t n, bool is_norm) {
    for (int64_t i = 0; i < n; i++) {
        /* roughly N(0, 0.02): sum of 4 uniforms */
        float u = 0;
        for (int k = 0; k < 4; k++) u += (float)next_u32() / 4294967296.0f - 0.5f;
        buf[i] = lp_f32_to_bf16(is_norm ? 1.0f : u * 0.0346f);
    }
}

static int write_shard(const char *path, hf_tensor *ts, int n, json_t *weight_map, const char *shard_name) {
    lp_st_writer *w = lp_st_writer_new();
    lp_st_writer_set_metadata(w, "format", "pt");
    for (int i = 0; i < n; i++) {
        if (lp_st_writer_add(w, ts[i].name, LP_ST_BF16, ts[i].n_dims, ts[i].shape) < 0) goto fail;
        json_object_set_new(weight_map, ts[i].name, json_string(shard_name));
    }
    if (lp_st_writer_begin(w, path) != 0) goto fail;
    for (int i = 0; i < n; i++) {
        int64_t count = 1;
        for (int d = 0; d < ts[i].n_dims; d++) count *= ts[i].shape[d];
        const int64_t chunk = 1 << 22;
        uint16_t *buf = lp_xmalloc(sizeof(uint16_t) * (size_t)chunk);
        for (int64_t off = 0; off < count; off += chunk) {
            int64_t k = count - off < chunk ? count - off : chunk;
            fill(buf, k, ts[i].is_norm);
            if (lp_st_writer_data(w, i, buf, sizeof(uint16_t) * (size_t)k) != 0) {
                free(buf);
                goto fail;
            }
        }
        free(buf);
    }
    if (lp_st_writer_finish(w) != 0) goto fail;
    lp_st_writer_free(w);
    return 0;
fail:
    lp_st_writer_free(w);
    return -1;
}

static int copy_tokenizer(const char *tok_dir, const char *out) {
    const char *files[] = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *src = lp_path_join(tok_dir, files[i]), *dst = lp_path_join(out, files[i]);
        int rc = lp_path_exists(src) ? lp_copy_file(src, dst) : 0;
        free(src);
        free(dst);
        if (rc != 0) return -1;
    }
    return 0;
}

enum { POOL_ROWS = 7 }; /* distinct rows per tensor (odd: no period aligned with blocks of rows) */

/* POOL_ROWS random rows of length K (norms: ones), as f32 from bf16 like a checkpoint's. */
static float *random_rows(int64_t K, bool is_norm) {
    float *f = lp_xmalloc(sizeof(float) * (size_t)K * POOL_ROWS);
    uint16_t *bf = lp_xmalloc(sizeof(uint16_t) * (size_t)K);
    for (int r = 0; r < POOL_ROWS; r++) {
        fill(bf, K, is_norm);
        for (int64_t i = 0; i < K; i++) f[(size_t)r * K + i] = lp_bf16_to_f32(bf[i]);
    }
    free(bf);
    return f;
}

/* One tensor of a GGUF: POOL_ROWS random rows quantized to its type, cycled. */
static int write_gguf_tensor(lp_gguf_writer *w, int idx, const lp_plan_tensor *t) {
    const lp_qtype_traits *q = lp_qtype(t->type);
    const int64_t K = t->ne[0], rows = lp_gguf_writer_tensor_nbytes(w, idx) / lp_row_size(t->type, K);
    const size_t row_bytes = lp_row_size(t->type, K);
    float *f = random_rows(K, t->n_dims == 1);
    uint8_t *pool = lp_xmalloc(row_bytes * POOL_ROWS);
    for (int r = 0; r < POOL_ROWS; r++) q->from_float(f + (size_t)r * K, pool + (size_t)r * row_bytes, K);
    int rc = 0;
    for (int64_t r = 0; r < rows && rc == 0; r++)
        rc = lp_gguf_writer_tensor_data(w, idx, pool + (size_t)(r % POOL_ROWS) * row_bytes, row_bytes);
    free(f);
    free(pool);
    return rc;
}

static int write_gguf(const lp_hparams *hp, const char *recipe_name, const char *tok_dir, const char *path) {
    const lp_recipe *recipe = lp_recipe_find(recipe_name);
    if (!recipe) return lp_fail("--gguf %s: unknown recipe", recipe_name);
    lp_plan plan;
    if (lp_plan_build(&plan, hp, recipe, present, (void *)hp) != 0) return -1;
    lp_gguf_writer *w = lp_gguf_writer_new();
    const lp_gguf_meta_args meta = {tok_dir, "synthetic", recipe->ftype};
    int rc = lp_gguf_meta_write(w, hp, &meta);
    for (int i = 0; i < plan.n && rc == 0; i++)
        rc = lp_gguf_writer_add_tensor(w, plan.tensors[i].gguf_name, plan.tensors[i].type, plan.tensors[i].n_dims,
                                       plan.tensors[i].ne) < 0;
    if (rc == 0) rc = lp_gguf_writer_begin(w, path);
    for (int i = 0; i < plan.n && rc == 0; i++) rc = write_gguf_tensor(w, i, &plan.tensors[i]);
    if (rc == 0) rc = lp_gguf_writer_finish(w);
    if (rc == 0) printf("wrote %s: %s, %.2f GB\n", path, recipe->name, (double)lp_plan_bytes(&plan) / 1e9);
    lp_gguf_writer_free(w);
    lp_plan_free(&plan);
    return rc;
}

typedef struct {
    lp_sink *sink;
    int t;
    int64_t K, row0;
    const float *pool;
    uint8_t *out;
    size_t row_bytes;
} mlx_chunk;

static void mlx_row_task(void *ctx, int task, int thread) {
    (void)thread;
    const mlx_chunk *c = ctx;
    const int64_t row = c->row0 + task;
    const float *src = c->pool + (size_t)(row % POOL_ROWS) * c->K;
    c->sink->convert_row(c->sink->self, c->t, row, src, c->out + (size_t)task * c->row_bytes);
}

/* Tensor t of the plan through the sink, CHUNK rows at a time (converted on the pool). */
static int feed_mlx_tensor(lp_sink *sink, lp_pool *pool, int t, const lp_plan_tensor *pt) {
    enum { CHUNK = 1024 };
    const int64_t K = pt->ne[0], rows = pt->ne[1] * (pt->ne[2] > 0 ? pt->ne[2] : 1);
    mlx_chunk c = {sink, t, K, 0, random_rows(K, pt->n_dims == 1), NULL, sink->row_bytes(sink->self, t)};
    c.out = lp_xmalloc(c.row_bytes * CHUNK + 1);
    int rc = 0;
    for (c.row0 = 0; c.row0 < rows && rc == 0; c.row0 += CHUNK) {
        const int64_t n = rows - c.row0 < CHUNK ? rows - c.row0 : CHUNK;
        lp_pool_run(pool, (int)n, mlx_row_task, &c);
        rc = sink->write_rows(sink->self, t, c.row0, n, c.out);
    }
    if (rc == 0 && sink->end_tensor) rc = sink->end_tensor(sink->self, t);
    free((void *)c.pool);
    free(c.out);
    return rc;
}

/* OUT_DIR gets config.json and the tokenizer first: it is the sink's source directory
 * too (the sink rewrites config.json with the quantization sections and copies the
 * tokenizer files onto themselves, atomically). */
static int write_mlx(const lp_hparams *hp, json_t *cfg, const char *recipe_name, const char *tok_dir, const char *dir) {
    const lp_mlx_recipe *recipe = lp_mlx_recipe_find(recipe_name);
    if (!recipe) return lp_fail("--mlx %s: unknown MLX recipe", recipe_name);
    char *cfg_path = lp_path_join(dir, "config.json");
    int rc = lp_mkdir_p(dir) != 0 || json_dump_file(cfg, cfg_path, JSON_INDENT(2)) != 0 || copy_tokenizer(tok_dir, dir) != 0
                 ? lp_fail("%s: cannot write config.json or the tokenizer", dir)
                 : 0;
    free(cfg_path);
    lp_plan plan = {0};
    lp_mlx_plan mplan = {0};
    const lp_mlx_overrides none = {0, 0, 0};
    if (rc == 0) rc = lp_plan_build(&plan, hp, lp_recipe_find("bf16"), present, (void *)hp);
    if (rc == 0) rc = lp_mlx_plan_build(&mplan, hp, &plan, recipe, &none);
    lp_sink sink = {0};
    const lp_mlx_sink_args args = {.dir = dir, .source_dir = dir, .hp = hp, .plan = &mplan};
    if (rc == 0) rc = lp_sink_mlx_create(&sink, &args);
    lp_pool *pool = lp_pool_create(0);
    for (int i = 0; i < plan.n && rc == 0; i++) rc = feed_mlx_tensor(&sink, pool, i, &plan.tensors[i]);
    if (rc == 0) rc = sink.finish(sink.self);
    if (rc == 0) printf("wrote %s: MLX %s, %.2f GB\n", dir, recipe->name, (double)lp_mlx_plan_bytes(&mplan) / 1e9);
    if (sink.destroy) sink.destroy(sink.self);
    lp_pool_free(pool);
    lp_mlx_plan_free(&mplan);
    lp_plan_free(&plan);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CONFIG.json TOKENIZER_DIR OUT_DIR [--layers N]\n"
                        "       %s CONFIG.json TOKENIZER_DIR OUT.gguf --gguf RECIPE [--layers N]\n"
                        "       %s CONFIG.json TOKENIZER_DIR OUT_DIR --mlx RECIPE [--layers N]\n", argv[0], argv[0], argv[0]);
        return 2;
    }
    const char *config = argv[1], *tok_dir = argv[2], *out = argv[3], *recipe = NULL, *mlx_recipe = NULL;
    int layers = 0;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--layers") == 0) layers = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--gguf") == 0) recipe = argv[i + 1];
        else if (strcmp(argv[i], "--mlx") == 0) mlx_recipe = argv[i + 1];
        else return fprintf(stderr, "%s: unknown option\n", argv[i]), 2;
    }
    json_t *cfg = json_load_file(config, 0, NULL);
    if (!cfg) return fprintf(stderr, "%s: cannot parse\n", config), 1;
    if (layers > 0) json_object_set_new(cfg, "num_hidden_layers", json_integer(layers));
    lp_hparams hp;
    if (lp_hparams_from_config(cfg, config, &hp) != 0) return fprintf(stderr, "%s\n", lp_errmsg()), 1;
    if (recipe || mlx_recipe) {
        const int rc = recipe ? write_gguf(&hp, recipe, tok_dir, out) : write_mlx(&hp, cfg, mlx_recipe, tok_dir, out);
        json_decref(cfg);
        return rc == 0 ? 0 : (fprintf(stderr, "%s\n", lp_errmsg()), 1);
    }
    if (lp_mkdir_p(out) != 0) return fprintf(stderr, "%s\n", lp_errmsg()), 1;
    lp_plan plan;
    if (lp_plan_build(&plan, &hp, lp_recipe_find("bf16"), present, &hp) != 0) return fprintf(stderr, "%s\n", lp_errmsg()), 1;
    json_t *weight_map = json_object();
    hf_tensor *pending = lp_xcalloc(4096, sizeof *pending);
    int n_pending = 0, n_shards = 0;
    uint64_t shard_bytes = 0, total = 0;
    /* first pass: count shards */
    for (int pass = 0; pass < 2; pass++) {
        int shard = 0;
        n_pending = 0;
        shard_bytes = 0;
        for (int i = 0; i <= plan.n; i++) {
            hf_tensor ts[512];
            int n = i < plan.n ? hf_tensors(&hp, &plan.tensors[i], ts, 512) : 0;
            uint64_t bytes = 0;
            for (int k = 0; k < n; k++) {
                uint64_t c = 2;
                for (int d = 0; d < ts[k].n_dims; d++) c *= (uint64_t)ts[k].shape[d];
                bytes += c;
            }
            bool flush = i == plan.n || (shard_bytes > 0 && shard_bytes + bytes > SHARD_BYTES) || n_pending + n > 4096;
            if (flush && n_pending > 0) {
                shard++;
                if (pass == 1) {
                    char name[64];
                    snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", shard, n_shards);
                    char *path = lp_path_join(out, name);
                    fprintf(stderr, "writing %s (%.2f GB)\n", name, (double)shard_bytes / 1e9);
                    if (write_shard(path, pending, n_pending, weight_map, name) != 0) return fprintf(stderr, "%s\n", lp_errmsg()), 1;
                    free(path);
                }
                n_pending = 0;
                shard_bytes = 0;
            }
            memcpy(pending + n_pending, ts, sizeof *ts * (size_t)n);
            n_pending += n;
            shard_bytes += bytes;
            if (pass == 0) total += bytes;
        }
        n_shards = shard;
    }
    json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", weight_map);
    char *index_path = lp_path_join(out, "model.safetensors.index.json"), *cfg_path = lp_path_join(out, "config.json");
    int rc = json_dump_file(index, index_path, JSON_INDENT(2) | JSON_SORT_KEYS) | json_dump_file(cfg, cfg_path, JSON_INDENT(2));
    if (rc == 0) rc = copy_tokenizer(tok_dir, out);
    printf("wrote %s: %d shards, %.2f GB of bf16 weights\n", out, n_shards, (double)total / 1e9);
    return rc == 0 ? 0 : 1;
}
