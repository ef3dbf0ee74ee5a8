/* model_mlx.c — owns loading MLX (mlx-lm) directories into lp_model: the tensor
 * list by role (from the converter's plan builder, so shapes follow the hparams),
 * MLX names, per-module quantization parameters from config.json or the shapes,
 * and the repacking of affine weights into the runtime's MLX block types. */
#include "model_internal.h"
#include "model_mlx.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/fileio.h"
#include "../formats/safetensors.h"
#include "../pipeline/mlx_recipe.h"
#include "../pipeline/plan.h"
#include "../quant/mlx_affine.h"
#include "../quant/mlx_types.h"

#define MLX_DEFAULT_GROUP 64
#define MLX_DEFAULT_BITS 4

typedef struct {
    lp_model *m;
    json_t *config;
    const json_t *quant; /* config "quantization", or NULL (an unquantized MLX dir) */
} mlx_loader;

bool lp_model_dir_is_mlx(const char *dir) {
    char *path = lp_path_join(dir, "config.json");
    json_t *cfg = json_load_file(path, 0, NULL);
    free(path);
    bool mlx = json_is_object(json_object_get(cfg, "quantization"));
    json_decref(cfg);
    if (mlx) return true;
    lp_checkpoint *c = lp_checkpoint_open(dir);
    if (!c) {
        lp_err_clear();
        return false;
    }
    const char *format = lp_checkpoint_metadata(c, 0, "format");
    mlx = format && strcmp(format, "mlx") == 0;
    lp_checkpoint_close(c);
    return mlx;
}

/* ---- quantization parameters ---- */

static int int_or(const json_t *obj, const char *key, int def, int *out, const char *where) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return *out = def, 0; /* mlx-lm: group_size None means 64 */
    if (!json_is_integer(v)) return lp_fail("%s: field '%s': not an integer", where, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int check_mode(const json_t *obj, const char *where) {
    const json_t *mode = json_object_get(obj, "mode");
    if (mode && !(json_is_string(mode) && strcmp(json_string_value(mode), "affine") == 0))
        return lp_fail("%s: field 'mode': only affine MLX quantization is supported", where);
    return 0;
}

static int64_t last_dim(const lp_st_tensor *t) { return t->n_dims ? t->shape[t->n_dims - 1] : 1; }

/* Bits and group of module P: its config entry if any, else inferred from the shapes
 * (mlx-lm infer_quant_config); then both checked against the shapes. */
static int module_params(const mlx_loader *L, const char *module, const lp_st_tensor *w, const lp_st_tensor *sc,
                         int64_t in, int *bits, int *group) {
    char where[256];
    snprintf(where, sizeof where, "%s/config.json: quantization.%s", L->m->path, module);
    const json_t *entry = L->quant ? json_object_get(L->quant, module) : NULL;
    if (json_is_object(entry)) {
        if (check_mode(entry, where) != 0 || int_or(entry, "group_size", MLX_DEFAULT_GROUP, group, where) != 0 ||
            int_or(entry, "bits", MLX_DEFAULT_BITS, bits, where) != 0)
            return -1;
    } else {
        if (last_dim(sc) <= 0 || in % last_dim(sc) != 0)
            return lp_fail("%s: tensor '%s.scales': %lld groups do not divide a row of %lld", L->m->path, module,
                           (long long)last_dim(sc), (long long)in);
        *group = (int)(in / last_dim(sc));
        *bits = (int)(last_dim(w) * 32 / in);
    }
    if (!lp_mlx_params_valid(*bits, *group) || in % *group != 0)
        return lp_fail("%s: module '%s': %d bits with group %d is not an MLX affine format for rows of %lld", L->m->path,
                       module, *bits, *group, (long long)in);
    if (last_dim(w) != lp_mlx_row_words(in, *bits) || last_dim(sc) != in / *group)
        return lp_fail("%s: module '%s': weight/scales shapes do not match %d bits, group %d, rows of %lld", L->m->path,
                       module, *bits, *group, (long long)in);
    return 0;
}

/* ---- tensors ---- */

/* Leading (all but the last) dimensions of t must be the plan's, HF order. */
static int check_leading(const lp_model *m, const lp_st_tensor *t, const lp_plan_tensor *pt) {
    bool ok = t->n_dims == pt->n_dims;
    for (int d = 0; ok && d + 1 < pt->n_dims; d++) ok = t->shape[d] == pt->ne[pt->n_dims - 1 - d];
    if (!ok)
        return lp_fail("%s: tensor '%s': shape does not match config.json (expected %d dims, [%lld, %lld, %lld] in "
                       "GGUF order)",
                       m->path, t->name, pt->n_dims, (long long)pt->ne[0], (long long)pt->ne[1], (long long)pt->ne[2]);
    return 0;
}

static const lp_st_tensor *find_part(const lp_model *m, const char *module, const char *part) {
    char name[224];
    snprintf(name, sizeof name, "%s.%s", module, part);
    return lp_checkpoint_find(m->ckpt, name);
}

/* P.weight/P.scales/P.biases -> owned rows of MLX blocks. */
static int load_quantized(const mlx_loader *L, const char *module, const lp_plan_tensor *pt, lp_weight *w) {
    lp_model *m = L->m;
    const lp_st_tensor *qw = find_part(m, module, "weight"), *sc = find_part(m, module, "scales");
    const lp_st_tensor *bi = find_part(m, module, "biases");
    if (!bi) return lp_fail("%s: module '%s': scales without biases (only affine quantization is supported)", m->path, module);
    if (qw->dtype != LP_ST_U32) return lp_fail("%s: tensor '%s': quantized weight must be U32", m->path, qw->name);
    const int64_t in = pt->ne[0];
    int bits = 0, group = 0;
    if (check_leading(m, qw, pt) != 0 || check_leading(m, sc, pt) != 0 || check_leading(m, bi, pt) != 0 ||
        module_params(L, module, qw, sc, in, &bits, &group) != 0)
        return -1;
    if (last_dim(bi) != last_dim(sc)) return lp_fail("%s: module '%s': biases and scales differ in shape", m->path, module);
    const lp_type type = lp_mlx_type(bits, group);
    const int64_t rows = pt->ne[1] * pt->ne[2], groups = in / group, words = lp_mlx_row_words(in, bits);
    const size_t row_bytes = (size_t)groups * lp_mlx_block_bytes(bits, group);
    uint8_t *out = lp_model_own(m, lp_xmalloc((size_t)rows * row_bytes));
    float *scales = lp_xmalloc((size_t)groups * 2 * sizeof(float)), *biases = scales + groups;
    int rc = 0;
    for (int64_t r = 0; r < rows && rc == 0; r++) {
        rc = lp_st_to_f32(sc, r * groups, groups, scales);
        if (rc == 0) rc = lp_st_to_f32(bi, r * groups, groups, biases);
        if (rc == 0)
            lp_mlx_pack_blocks((const uint8_t *)qw->data + (size_t)(r * words) * 4, scales, biases, in, bits, group,
                               out + (size_t)r * row_bytes);
    }
    free(scales);
    if (rc != 0) return lp_fail_prefix("%s", m->path);
    lp_checkpoint_release(m->ckpt, qw);
    w->type = type;
    w->data = out;
    w->row_bytes = row_bytes;
    return 0;
}

static int float_type(const lp_model *m, const lp_st_tensor *t, lp_type *type) {
    switch (t->dtype) {
    case LP_ST_F32: *type = LP_TYPE_F32; return 0;
    case LP_ST_F16: *type = LP_TYPE_F16; return 0;
    case LP_ST_BF16: *type = LP_TYPE_BF16; return 0;
    default:
        return lp_fail("%s: tensor '%s': dtype %s is not supported (F32, F16, BF16 or MLX affine)", m->path, t->name,
                       lp_st_dtype_name(t->dtype));
    }
}

/* A float tensor: matrices in place (copied if the file leaves them misaligned, as
 * MLX's unpadded headers may), everything else as an owned F32 copy. */
static int load_float(lp_model *m, const lp_st_tensor *t, const lp_plan_tensor *pt, lp_weight *w) {
    lp_type type = LP_TYPE_F32;
    if (float_type(m, t, &type) != 0 || check_leading(m, t, pt) != 0) return -1;
    if (last_dim(t) != pt->ne[0])
        return lp_fail("%s: tensor '%s': rows of %lld where config.json needs %lld", m->path, t->name,
                       (long long)last_dim(t), (long long)pt->ne[0]);
    const size_t esize = lp_st_dtype_size(t->dtype);
    if (!lp_mlx_role_is_linear(pt->role) || pt->n_dims < 2) {
        float *f = lp_model_own(m, lp_xmalloc((size_t)t->n_elements * sizeof(float)));
        if (lp_st_to_f32(t, 0, t->n_elements, f) != 0) return lp_fail_prefix("%s", m->path);
        w->type = LP_TYPE_F32;
        w->data = f;
        w->row_bytes = (size_t)pt->ne[0] * sizeof(float);
        return 0;
    }
    w->type = type;
    w->data = t->data;
    if ((uintptr_t)t->data % esize != 0) w->data = memcpy(lp_model_own(m, lp_xmalloc(t->nbytes)), t->data, t->nbytes);
    w->row_bytes = (size_t)pt->ne[0] * esize;
    return 0;
}

static int load_tensor(const mlx_loader *L, const lp_plan_tensor *pt) {
    lp_model *m = L->m;
    char name[200];
    if (lp_mlx_tensor_name(lp_arch_tensor(m->arch, pt->role), pt->layer, name, sizeof name) != 0)
        return lp_fail_prefix("%s", m->path);
    const lp_st_tensor *t = lp_checkpoint_find(m->ckpt, name);
    if (!t) return lp_fail("%s: tensor '%s': missing", m->path, name);
    lp_weight *w = lp_model_slot(m, pt->role, pt->layer < 0 ? 0 : pt->layer);
    memset(w, 0, sizeof *w);
    w->n_dims = pt->n_dims;
    memcpy(w->ne, pt->ne, sizeof w->ne);
    /* a quantized module P has P.scales beside P.weight */
    char module[200];
    size_t len = strlen(name);
    bool is_weight = len > 7 && strcmp(name + len - 7, ".weight") == 0;
    snprintf(module, sizeof module, "%.*s", (int)(is_weight ? len - 7 : len), name);
    int rc = is_weight && find_part(m, module, "scales") ? load_quantized(L, module, pt, w) : load_float(m, t, pt, w);
    if (rc != 0) return -1;
    w->expert_bytes = w->row_bytes * (size_t)w->ne[1];
    w->present = true;
    return 0;
}

static int mlx_role_present(void *ctx, lp_role role, int layer) {
    const lp_model *m = ctx;
    char name[200];
    const lp_tensor_map *map = lp_arch_tensor(m->arch, role);
    if (!map || lp_mlx_tensor_name(map, layer, name, sizeof name) != 0) {
        lp_err_clear();
        return 0;
    }
    return lp_checkpoint_find(m->ckpt, name) != NULL;
}

static int read_config(mlx_loader *L, const char *dir) {
    lp_model *m = L->m;
    char *path = lp_path_join(dir, "config.json");
    int rc = lp_hparams_from_config_file(path, &m->hp);
    json_error_t jerr;
    if (rc == 0) L->config = json_load_file(path, 0, &jerr);
    if (rc == 0 && !L->config) rc = lp_fail("%s: line %d: %s", path, jerr.line, jerr.text);
    if (rc == 0) {
        L->quant = json_object_get(L->config, "quantization");
        if (L->quant && !json_is_object(L->quant)) rc = lp_fail("%s: field 'quantization': not an object", path);
        else if (L->quant) rc = check_mode(L->quant, path);
    }
    free(path);
    return rc;
}

static int check_hparams(const lp_model *m) {
    const lp_hparams *hp = &m->hp;
    if (hp->head_dim <= 0 || hp->head_dim % 2)
        return lp_fail("%s: head size %d must be positive and even", m->path, hp->head_dim);
    if (hp->n_vocab <= 0) return lp_fail("%s: vocabulary size must be positive", m->path);
    if (hp->arch->moe ? hp->n_ff_exp <= 0 : hp->n_ff <= 0)
        return lp_fail("%s: feed-forward width missing (n_ff %d, n_ff_exp %d)", m->path, hp->n_ff, hp->n_ff_exp);
    return 0;
}

lp_model *lp_model_load_mlx(const char *dir) {
    lp_model *m = lp_xcalloc(1, sizeof *m);
    m->path = lp_xstrdup(dir);
    m->source = LP_MODEL_FROM_HF; /* HF names and row order */
    m->rope = LP_ROPE_NEOX;       /* rows are HF's (llama q/k un-permuted), as for lp_model_load_hf */
    mlx_loader L = {.m = m};
    lp_plan plan = {0};
    if (read_config(&L, dir) != 0) goto fail;
    m->arch = m->hp.arch;
    if (check_hparams(m) != 0) goto fail;
    m->layers = lp_xcalloc((size_t)m->hp.n_layer * LP_N_LAYER_ROLES, sizeof(lp_weight));
    m->ckpt = lp_checkpoint_open(dir);
    if (!m->ckpt || lp_plan_build(&plan, &m->hp, lp_recipe_find("f32"), mlx_role_present, m) != 0) goto fail;
    for (int i = 0; i < plan.n; i++)
        if (load_tensor(&L, &plan.tensors[i]) != 0) goto fail;
    if (!m->global[LP_T_OUTPUT].present) m->global[LP_T_OUTPUT] = m->global[LP_T_TOKEN_EMBD]; /* tied head */
    lp_plan_free(&plan);
    json_decref(L.config);
    return m;
fail:
    lp_plan_free(&plan);
    json_decref(L.config);
    lp_model_free(m);
    return NULL;
}

/* ---- one tensor dequantized to a file ---- */

/* The loaded weight whose MLX name is `name` (with or without ".weight"). */
static const lp_weight *weight_named(const lp_model *m, const char *name) {
    for (const lp_tensor_map *t = m->arch->tensors; t->role != LP_T_COUNT; t++) {
        for (int l = 0; l < (lp_role_per_layer(t->role) ? m->hp.n_layer : 1); l++) {
            char full[200];
            if (lp_mlx_tensor_name(t, l, full, sizeof full) != 0) {
                lp_err_clear();
                continue;
            }
            size_t n = strlen(name);
            bool same = strcmp(full, name) == 0 || (strncmp(full, name, n) == 0 && strcmp(full + n, ".weight") == 0);
            if (same) return lp_model_weight(m, t->role, l);
        }
    }
    return NULL;
}

int lp_mlx_dequantize_tensor(const char *dir, const char *name, const char *out_path) {
    lp_model *m = lp_model_load_mlx(dir);
    if (!m) return -1;
    const lp_weight *w = weight_named(m, name);
    int rc;
    const lp_qtype_traits *tr = w ? (lp_type_is_mlx(w->type) ? lp_mlx_qtype(w->type) : lp_qtype(w->type)) : NULL;
    if (!w || !tr) {
        rc = lp_fail("%s: tensor '%s': not found (give an MLX name such as model.layers.0.mlp.down_proj)", dir, name);
    } else {
        const int64_t rows = w->ne[1] * w->ne[2];
        float *f = lp_xmalloc((size_t)(rows * w->ne[0]) * sizeof(float));
        for (int64_t r = 0; r < rows; r++)
            tr->to_float((const uint8_t *)w->data + (size_t)r * w->row_bytes, f + r * w->ne[0], w->ne[0]);
        rc = lp_write_file_atomic(out_path, f, (size_t)(rows * w->ne[0]) * sizeof(float));
        free(f);
    }
    lp_model_free(m);
    return rc;
}
