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
#include "plan.h"
#include "report.h"
#include "sink_gguf.h"
#include "source.h"

typedef struct {
    char *format;    /* "gguf" */
    char *precision;
    char *dir;       /* artifact directory */
    char *path;      /* artifact file (GGUF) or directory (MLX) */
    lp_plan plan;
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

static void print_plan(const artifact *a) {
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

static void free_artifact(artifact *a) {
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

static int run_conversion(artifact *arts, int n, const model_input *in, const lp_convert_opts *o) {
    lp_sink *sinks = lp_xcalloc((size_t)n, sizeof *sinks);
    int rc = 0, made = 0;
    for (; made < n && rc == 0; made++) {
        lp_gguf_meta_args meta = {in->src.dir, in->name, arts[made].plan.recipe->ftype};
        rc = lp_mkdir_p(arts[made].dir);
        if (rc == 0) rc = lp_sink_gguf_create(&sinks[made], arts[made].path, &in->hp, &arts[made].plan, &meta);
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
        char sha[65];
        rc = lp_sha256_file(arts[i].path, sha);
        if (rc == 0) rc = write_metadata(&arts[i], in, sha, job.seconds);
        if (rc == 0) json_array_append_new(entries, artifact_entry(&arts[i], o->output_dir, sha));
        if (rc == 0 && !o->quiet) printf("wrote %s (%s)\n", arts[i].path, arts[i].precision);
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
    if (o->n_mlx > 0) return lp_fail("--formats mlx: not available in this build yet");
    model_input in;
    if (open_input(&in, o->model, o->offline, o->quiet) != 0) {
        close_input(&in);
        return -1;
    }
    artifact *arts = lp_xcalloc((size_t)o->n_gguf, sizeof *arts);
    int rc = 0, n = 0;
    for (; n < o->n_gguf && rc == 0; n++) rc = plan_gguf(&arts[n], &in, o->gguf[n], o->output_dir);
    if (rc == 0 && o->dry_run)
        for (int i = 0; i < n; i++) print_plan(&arts[i]);
    else if (rc == 0)
        rc = lp_mkdir_p(o->output_dir) == 0 ? run_conversion(arts, n, &in, o) : -1;
    for (int i = 0; i < n; i++) free_artifact(&arts[i]);
    free(arts);
    close_input(&in);
    return rc;
}
