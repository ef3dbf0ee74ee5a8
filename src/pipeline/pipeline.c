/* pipeline.c — orchestrates a conversion: resolve the source, read config and
 * checkpoint, build one plan per requested precision, run the streaming engine
 * with one sink per artifact, then fingerprint the outputs and (re)write
 * metadata.json files and the manifest. */
#include "pipeline.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/fileio.h"
#include "../core/pool.h"
#include "../core/sha256.h"
#include "convert.h"
#include "mlx_recipe.h"
#include "plan.h"
#include "report.h"
#include "sink_gguf.h"
#include "sink_mlx.h"
#include "source.h"

typedef struct {
    char *format;    /* "gguf" or "mlx" */
    char *precision;
    char *dir;       /* artifact directory */
    char *path;      /* artifact file (GGUF) or directory (MLX) */
    lp_plan plan;    /* GGUF: the recipe's types; MLX: the tensor list only */
    bool is_mlx;
    lp_mlx_plan mlx; /* MLX: what each tensor of `plan` becomes */
} artifact;

typedef struct {
    lp_model_source src;
    char *name;      /* model name used in file names */
    lp_hparams hp;
    lp_checkpoint *ckpt;
    lp_report report;
} model_input;

static char *model_name(const lp_model_source *src) {
    if (src->repo_id) return lp_xstrdup(lp_path_basename(src->repo_id));
    char *dir = lp_xstrdup(src->dir);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') dir[--n] = 0;
    char *name = lp_xstrdup(lp_path_basename(dir));
    free(dir);
    return name;
}

static int open_input(model_input *in, const char *spec, bool offline, bool quiet) {
    memset(in, 0, sizeof *in);
    lp_source_options so = {.offline = offline, .quiet = quiet};
    if (lp_source_resolve(spec, &in->src, &so) != 0) return -1;
    in->name = model_name(&in->src);
    char *cfg = lp_path_join(in->src.dir, "config.json");
    int rc = lp_hparams_from_config_file(cfg, &in->hp);
    free(cfg);
    if (rc != 0) return -1;
    in->ckpt = lp_checkpoint_open(in->src.dir);
    if (!in->ckpt) return -1;
    return lp_report_build(&in->report, &in->hp, in->ckpt);
}

static void close_input(model_input *in) {
    if (in->ckpt) lp_checkpoint_close(in->ckpt);
    lp_source_free(&in->src);
    free(in->name);
}

int lp_pipeline_info(const char *model, bool json, bool offline) {
    lp_report r;
    model_input in;
    int rc;
    /* a bare config.json file (the big target models) is reported from config alone */
    size_t n = strlen(model);
    if (n >= 5 && strcmp(model + n - 5, ".json") == 0 && !lp_is_dir(model)) {
        lp_hparams hp;
        if (lp_hparams_from_config_file(model, &hp) != 0 || lp_report_build(&r, &hp, NULL) != 0) return -1;
        rc = 0;
        memset(&in, 0, sizeof in);
        in.name = lp_xstrdup(lp_path_basename(model));
    } else {
        rc = open_input(&in, model, offline, true);
        if (rc == 0) r = in.report;
    }
    if (rc == 0) {
        if (json) {
            json_t *j = lp_report_json(&r);
            json_object_set_new(j, "model", json_string(in.name));
            char *s = json_dumps(j, JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
            json_decref(j);
        } else {
            lp_report_print(&r, in.name);
        }
    }
    close_input(&in);
    return rc;
}

static void print_mlx_plan(const artifact *a) {
    const lp_mlx_plan *p = &a->mlx;
    printf("mlx %s (mlx/%s): group %d, %.2f bits per weight\n", a->precision, p->dir, p->group, lp_mlx_plan_bpw(p));
    for (int i = 0; i < p->n; i++) {
        const lp_mlx_tensor *t = &p->tensors[i];
        char kind[16];
        if (t->kind == LP_MLX_QUANT)
            snprintf(kind, sizeof kind, "%dbit-g%d", t->bits, t->group);
        else
            snprintf(kind, sizeof kind, "%s", t->kind == LP_MLX_DROP ? "dropped" : lp_st_dtype_name(p->dtype));
        printf("  %-48s %-9s %s\n", t->name, kind, t->why);
    }
}

static void print_plan(const artifact *a) {
    if (a->is_mlx) {
        print_mlx_plan(a);
        return;
    }
    printf("%s %s: %d tensors, %.2f bits per weight\n", a->format, a->precision, a->plan.n,
           8.0 * (double)lp_plan_bytes(&a->plan) / (double)lp_plan_params(&a->plan));
    for (int i = 0; i < a->plan.n; i++) {
        const lp_plan_tensor *t = &a->plan.tensors[i];
        printf("  %-32s %-7s [%lld, %lld, %lld]  %s\n", t->gguf_name, lp_qtype(t->type)->name, (long long)t->ne[0],
               (long long)t->ne[1], (long long)t->ne[2], t->why);
    }
}

static int plan_gguf(artifact *a, const model_input *in, const char *precision, const char *out_dir) {
    memset(a, 0, sizeof *a);
    const lp_recipe *r = lp_recipe_find(precision);
    if (!r) return lp_fail("--precision: unknown GGUF precision '%s' (try q4_k_m, q6_k, q8_0, f16, ...)", precision);
    lp_source_ref ref = {&in->hp, in->ckpt};
    if (lp_plan_build(&a->plan, &in->hp, r, lp_convert_role_present, &ref) != 0) return -1;
    a->format = lp_xstrdup("gguf");
    a->precision = lp_xstrdup(r->name);
    char *sub = lp_xasprintf("gguf/%s", r->name);
    a->dir = lp_path_join(out_dir, sub);
    free(sub);
    char *file = lp_xasprintf("%s-%s.gguf", in->name, r->name);
    a->path = lp_path_join(a->dir, file);
    free(file);
    return 0;
}

/* An MLX artifact: the converter's tensor list (any GGUF recipe gives the same list)
 * plus the MLX plan; written to DIR/mlx/<recipe dir>/. */
static int plan_mlx(artifact *a, const model_input *in, const char *recipe, const lp_convert_opts *o) {
    memset(a, 0, sizeof *a);
    const lp_mlx_recipe *r = lp_mlx_recipe_find(recipe);
    if (!r) {
        char known[256] = "";
        for (int i = 0; i < lp_mlx_recipe_count(); i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", lp_mlx_recipe_at(i)->name);
        return lp_fail("--precision: unknown MLX recipe '%s' (%s)", recipe, known);
    }
    a->is_mlx = true;
    lp_source_ref ref = {&in->hp, in->ckpt};
    if (lp_plan_build(&a->plan, &in->hp, lp_recipe_find("f32"), lp_convert_role_present, &ref) != 0) return -1;
    lp_mlx_overrides ov = {o->mlx_group_size, o->mlx_embedding_bits, o->mlx_output_bits};
    if (lp_mlx_plan_build(&a->mlx, &in->hp, &a->plan, r, &ov) != 0) return -1;
    a->format = lp_xstrdup("mlx");
    a->precision = lp_xstrdup(r->name);
    char *sub = lp_xasprintf("mlx/%s", a->mlx.dir);
    a->dir = lp_path_join(o->output_dir, sub);
    a->path = lp_xstrdup(a->dir);
    free(sub);
    return 0;
}

static void free_artifact(artifact *a) {
    lp_mlx_plan_free(&a->mlx);
    lp_plan_free(&a->plan);
    free(a->format);
    free(a->precision);
    free(a->dir);
    free(a->path);
}

/* Type histogram: {"q4_K": 120, "q6_K": 40, "f32": 60} */
static json_t *type_counts(const lp_plan *p) {
    json_t *o = json_object();
    for (int i = 0; i < p->n; i++) {
        const char *name = lp_qtype(p->tensors[i].type)->name;
        json_t *v = json_object_get(o, name);
        json_object_set_new(o, name, json_integer(v ? json_integer_value(v) + 1 : 1));
    }
    return o;
}

static json_t *artifact_entry(const artifact *a, const char *out_dir, const char *sha) {
    uint64_t size = 0;
    lp_mmap m;
    if (lp_mmap_open(&m, a->path) == 0) {
        size = m.size;
        lp_mmap_close(&m);
    }
    size_t prefix = strlen(out_dir);
    const char *rel = strncmp(a->path, out_dir, prefix) == 0 ? a->path + prefix + (a->path[prefix] == '/') : a->path;
    double bpw = 8.0 * (double)lp_plan_bytes(&a->plan) / (double)lp_plan_params(&a->plan);
    return json_pack("{s:s, s:s, s:s, s:I, s:f, s:s, s:i, s:o}", "path", rel, "format", a->format, "precision",
                     a->precision, "size_bytes", (json_int_t)size, "bits_per_weight", bpw, "sha256", sha, "tensors",
                     a->plan.n, "tensor_types", type_counts(&a->plan));
}

static int write_json_file(const char *path, json_t *j) {
    char *s = json_dumps(j, JSON_INDENT(2));
    size_t n = strlen(s);
    char *with_nl = lp_xasprintf("%s\n", s);
    int rc = lp_write_file_atomic(path, with_nl, n + 1);
    free(with_nl);
    free(s);
    return rc;
}

/* manifest.json keeps artifacts from earlier runs into the same directory, replacing
 * entries for the same path. */
static int update_manifest(const char *out_dir, const model_input *in, json_t *new_entries) {
    char *path = lp_path_join(out_dir, "manifest.json");
    json_t *old = lp_path_exists(path) ? json_load_file(path, 0, NULL) : NULL;
    json_t *arts = json_array();
    size_t i, j;
    json_t *e, *n;
    json_array_foreach(json_object_get(old, "artifacts"), i, e) {
        bool replaced = false;
        json_array_foreach(new_entries, j, n) {
            if (json_equal(json_object_get(e, "path"), json_object_get(n, "path"))) replaced = true;
        }
        if (!replaced) json_array_append(arts, e);
    }
    json_array_extend(arts, new_entries);
    json_t *source = json_pack("{s:s, s:s?, s:s?}", "dir", in->src.dir, "repo_id", in->src.repo_id, "commit",
                               in->src.commit);
    json_t *man = json_pack("{s:i, s:s, s:s, s:o, s:o, s:o}", "manifest_version", 1, "generator", "llama-pajamas",
                            "model", in->name, "source", source, "architecture", lp_report_json(&in->report),
                            "artifacts", arts);
    int rc = write_json_file(path, man);
    json_decref(man);
    json_decref(old);
    free(path);
    return rc;
}

static int write_metadata(const artifact *a, const model_input *in, const char *sha, double seconds) {
    char *path = lp_path_join(a->dir, "metadata.json");
    json_t *tensors = json_array();
    for (int i = 0; i < a->plan.n; i++) {
        const lp_plan_tensor *t = &a->plan.tensors[i];
        json_array_append_new(tensors, json_pack("{s:s, s:s, s:s}", "name", t->gguf_name, "type",
                                                 lp_qtype(t->type)->name, "why", t->why));
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:f, s:s, s:o}", "model", in->name, "format", a->format,
                          "precision", a->precision, "recipe", a->plan.recipe->summary, "ftype",
                          (json_int_t)a->plan.recipe->ftype, "convert_seconds", seconds, "sha256", sha, "tensors",
                          tensors);
    int rc = write_json_file(path, j);
    json_decref(j);
    free(path);
    return rc;
}

static int create_sink(lp_sink *sink, const artifact *a, const model_input *in) {
    if (lp_mkdir_p(a->dir) != 0) return -1;
    if (a->is_mlx) {
        lp_mlx_sink_args args = {.dir = a->dir, .source_dir = in->src.dir, .hp = &in->hp, .plan = &a->mlx};
        return lp_sink_mlx_create(sink, &args);
    }
    lp_gguf_meta_args meta = {in->src.dir, in->name, a->plan.recipe->ftype};
    return lp_sink_gguf_create(sink, a->path, &in->hp, &a->plan, &meta);
}

/* ---- MLX artifact records: weight files, metadata.json, manifest entry ---- */

typedef struct {
    int n;
    char **names;      /* shard file names */
    uint64_t *sizes;
    char (*sha)[65];
    uint64_t total;    /* bytes of all weight files */
    char main_sha[65]; /* model.safetensors, or the index when sharded */
} mlx_files;

static void free_mlx_files(mlx_files *f) {
    for (int i = 0; i < f->n; i++) free(f->names[i]);
    free(f->names);
    free(f->sizes);
    free(f->sha);
}

static int hash_mlx_files(const artifact *a, mlx_files *f) {
    memset(f, 0, sizeof *f);
    int *shard_of = lp_xcalloc((size_t)(a->mlx.n ? a->mlx.n : 1), sizeof *shard_of);
    f->n = lp_mlx_shard_layout(&a->mlx, LP_MLX_MAX_SHARD_BYTES, shard_of);
    free(shard_of);
    f->names = lp_xcalloc((size_t)f->n, sizeof *f->names);
    f->sizes = lp_xcalloc((size_t)f->n, sizeof *f->sizes);
    f->sha = lp_xcalloc((size_t)f->n, sizeof *f->sha);
    int rc = 0;
    for (int i = 0; i < f->n && rc == 0; i++) {
        f->names[i] = lp_mlx_shard_name(i, f->n);
        char *path = lp_path_join(a->dir, f->names[i]);
        lp_mmap m;
        rc = lp_sha256_file(path, f->sha[i]);
        if (rc == 0 && (rc = lp_mmap_open(&m, path)) == 0) {
            f->sizes[i] = m.size;
            f->total += m.size;
            lp_mmap_close(&m);
        }
        free(path);
    }
    if (rc == 0 && f->n == 1) memcpy(f->main_sha, f->sha[0], 65);
    if (rc == 0 && f->n > 1) {
        char *index = lp_path_join(a->dir, "model.safetensors.index.json");
        rc = lp_sha256_file(index, f->main_sha);
        free(index);
    }
    return rc;
}

static const char *mlx_kind_name(const lp_mlx_plan *p, const lp_mlx_tensor *t, char *buf, size_t n) {
    if (t->kind == LP_MLX_QUANT) snprintf(buf, n, "%dbit-g%d", t->bits, t->group);
    else snprintf(buf, n, "%s", t->kind == LP_MLX_DROP ? "dropped" : lp_st_dtype_name(p->dtype));
    return buf;
}

static int write_mlx_metadata(const artifact *a, const model_input *in, const mlx_files *f, double seconds) {
    const lp_mlx_plan *p = &a->mlx;
    json_t *files = json_array(), *tensors = json_array();
    for (int i = 0; i < f->n; i++)
        json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "name", f->names[i], "size_bytes",
                                               (json_int_t)f->sizes[i], "sha256", f->sha[i]));
    for (int i = 0; i < p->n; i++) {
        char kind[32];
        json_array_append_new(tensors, json_pack("{s:s, s:s, s:s}", "name", p->tensors[i].name, "type",
                                                 mlx_kind_name(p, &p->tensors[i], kind, sizeof kind), "why",
                                                 p->tensors[i].why));
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:f, s:I, s:I, s:f, s:o, s:o, s:o}", "model",
                          in->name, "format", "mlx", "precision", a->precision, "recipe", p->recipe->summary,
                          "directory", p->dir, "group_size", p->group, "bits", p->bits, "dtype",
                          lp_st_dtype_name(p->dtype), "bits_per_weight", lp_mlx_plan_bpw(p), "parameters",
                          (json_int_t)lp_mlx_plan_params(p), "size_bytes", (json_int_t)f->total, "convert_seconds",
                          seconds, "modules_by_setting", lp_mlx_plan_histogram(p), "files", files, "tensors", tensors);
    char *path = lp_path_join(a->dir, "metadata.json");
    int rc = write_json_file(path, j);
    free(path);
    json_decref(j);
    return rc;
}

static json_t *mlx_manifest_entry(const artifact *a, const char *out_dir, const mlx_files *f) {
    size_t prefix = strlen(out_dir);
    const char *rel = strncmp(a->dir, out_dir, prefix) == 0 ? a->dir + prefix + (a->dir[prefix] == '/') : a->dir;
    int stored = 0;
    for (int i = 0; i < a->mlx.n; i++) stored += a->mlx.tensors[i].kind != LP_MLX_DROP;
    return json_pack("{s:s, s:s, s:s, s:I, s:f, s:s, s:i, s:o}", "path", rel, "format", "mlx", "precision",
                     a->precision, "size_bytes", (json_int_t)f->total, "bits_per_weight", lp_mlx_plan_bpw(&a->mlx),
                     "sha256", f->main_sha, "tensors", stored, "tensor_types", lp_mlx_plan_histogram(&a->mlx));
}

/* Fingerprint an artifact, write its metadata.json and return its manifest entry (NULL on error). */
static json_t *record_artifact(const artifact *a, const model_input *in, const lp_convert_opts *o, double seconds) {
    if (!a->is_mlx) {
        char sha[65];
        if (lp_sha256_file(a->path, sha) != 0 || write_metadata(a, in, sha, seconds) != 0) return NULL;
        return artifact_entry(a, o->output_dir, sha);
    }
    mlx_files f;
    json_t *entry = NULL;
    if (hash_mlx_files(a, &f) == 0 && write_mlx_metadata(a, in, &f, seconds) == 0)
        entry = mlx_manifest_entry(a, o->output_dir, &f);
    free_mlx_files(&f);
    return entry;
}

static int run_conversion(artifact *arts, int n, const model_input *in, const lp_convert_opts *o) {
    lp_sink *sinks = lp_xcalloc((size_t)n, sizeof *sinks);
    int rc = 0, made = 0;
    for (; made < n && rc == 0; made++) {
        rc = create_sink(&sinks[made], &arts[made], in);
        if (rc != 0) break;
    }
    lp_convert_job job = {0};
    if (rc == 0) {
        job = (lp_convert_job){.hp = &in->hp, .ckpt = in->ckpt, .tensors = &arts[0].plan, .sinks = sinks,
                               .n_sinks = n, .pool = lp_pool_create(o->n_threads), .quiet = o->quiet};
        rc = lp_convert_run(&job);
        lp_pool_free(job.pool);
    }
    for (int i = 0; i < made; i++) sinks[i].destroy(sinks[i].self);
    free(sinks);
    if (rc != 0) return -1;
    json_t *entries = json_array();
    for (int i = 0; i < n && rc == 0; i++) {
        json_t *entry = record_artifact(&arts[i], in, o, job.seconds);
        rc = entry ? json_array_append_new(entries, entry) : -1;
        if (rc == 0 && !o->quiet) printf("wrote %s (%s %s)\n", arts[i].path, arts[i].format, arts[i].precision);
    }
    if (rc == 0) rc = update_manifest(o->output_dir, in, entries);
    if (rc == 0 && !o->quiet)
        printf("converted %.1f MB of %s in %.2f s (%.1f MB/s)\n", (double)job.source_bytes_read / 1e6, in->name,
               job.seconds, job.seconds > 0 ? (double)job.source_bytes_read / 1e6 / job.seconds : 0);
    json_decref(entries);
    return rc;
}

int lp_pipeline_convert(const lp_convert_opts *o) {
    if (o->n_gguf == 0 && o->n_mlx == 0) return lp_fail("convert: nothing to do (no --precision for any format)");
    model_input in;
    if (open_input(&in, o->model, o->offline, o->quiet) != 0) {
        close_input(&in);
        return -1;
    }
    /* one engine run feeds every artifact: GGUF precisions and MLX recipes alike */
    artifact *arts = lp_xcalloc((size_t)(o->n_gguf + o->n_mlx), sizeof *arts);
    int rc = 0, n = 0;
    for (; n < o->n_gguf && rc == 0; n++) rc = plan_gguf(&arts[n], &in, o->gguf[n], o->output_dir);
    for (int i = 0; i < o->n_mlx && rc == 0; i++, n++) rc = plan_mlx(&arts[n], &in, o->mlx[i], o);
    if (rc == 0 && o->dry_run)
        for (int i = 0; i < n; i++) print_plan(&arts[i]);
    else if (rc == 0)
        rc = lp_mkdir_p(o->output_dir) == 0 ? run_conversion(arts, n, &in, o) : -1;
    for (int i = 0; i < n; i++) free_artifact(&arts[i]);
    free(arts);
    close_input(&in);
    return rc;
}
