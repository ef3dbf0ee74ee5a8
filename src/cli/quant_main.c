/* quant_main.c — `llama-pajamas-quant`: info, convert, validate. Parses arguments
 * and calls the pipeline library; no logic of its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/common.h"
#include "core/err.h"
#include "core/fileio.h"
#include "pipeline/inspect.h"
#include "pipeline/mlx_recipe.h"
#include "pipeline/pipeline.h"
#include "pipeline/plan.h"
#include "pipeline/validate.h"
#include "runtime/model_mlx.h"

#define PROG "llama-pajamas-quant"

static void usage(FILE *f) {
    fprintf(f,
            "usage: " PROG " <command> [options]\n"
            "\n"
            "commands:\n"
            "  info MODEL [--json] [--offline]\n"
            "      architecture report of a model dir, HF cache id (org/name), or config.json\n"
            "  convert --model MODEL --output DIR [--formats gguf[,mlx]] --precision P[,P...]\n"
            "          [--threads N] [--dry-run] [--quiet] [--offline] [--validate]\n"
            "          [--group-size 32|64|128] [--embedding-bits B] [--output-bits B]\n"
            "      write DIR/gguf/<P>/<name>-<P>.gguf and/or DIR/mlx/<dir>/ (MLX), metadata.json and\n"
            "      DIR/manifest.json in one pass; \"g:m\" in --precision names a GGUF and an MLX recipe\n"
            "      (e.g. q4_k_m:4bit-mixed); the other options tune MLX recipes\n"
            "  validate --original HF_DIR --quantized OUT_DIR [--metrics perplexity,kld,generation]\n"
            "          [--text FILE] [--ctx N] [--chunks N] [--threads N] [--backend auto|cpu|cuda]\n"
            "      perplexity, KL divergence, top-1 agreement and generations of every artifact vs the\n"
            "      original; writes OUT_DIR/validation.json; exit 1 if an artifact misses its threshold\n"
            "  inspect FILE.gguf [--tensor NAME --dequantize OUT.f32]\n"
            "      list key/values and tensors, or dump one tensor dequantized to raw f32\n"
            "  inspect MLX_DIR --tensor NAME --dequantize OUT.f32\n"
            "      one weight of an MLX directory (e.g. model.layers.0.mlp.down_proj) dequantized to raw f32\n"
            "\n"
            "GGUF precisions:");
    for (int i = 0; i < lp_recipe_count(); i++) fprintf(f, " %s", lp_recipe_at(i)->name);
    fprintf(f, "\nMLX recipes (output dir):");
    for (int i = 0; i < lp_mlx_recipe_count(); i++)
        fprintf(f, " %s (mlx/%s)", lp_mlx_recipe_at(i)->name, lp_mlx_recipe_at(i)->dir);
    fprintf(f, "\n");
}

static int cmd_info(int argc, char **argv) {
    lp_args a;
    lp_args_init(&a, argc, argv, "info");
    const char *model = NULL;
    bool json = false, offline = false;
    while (!lp_args_done(&a)) {
        if (lp_args_flag(&a, "--json"))
            json = true;
        else if (lp_args_flag(&a, "--offline"))
            offline = true;
        else if (!model && (model = lp_args_positional(&a)))
            continue;
        else {
            lp_fail("info: unexpected argument '%s'", lp_args_current(&a));
            return lp_cli_error(PROG);
        }
    }
    if (!model) {
        lp_fail("info: missing MODEL (a directory, org/name, or config.json)");
        return lp_cli_error(PROG);
    }
    return lp_pipeline_info(model, json, offline) == 0 ? 0 : lp_cli_error(PROG);
}

/* "--precision q4_k_m:4bit,q8_0" -> GGUF recipes and MLX recipes. An item "g:m" names
 * both; a plain item goes to whichever format knows the name (GGUF first). */
static int split_precisions(const char *spec, bool want_gguf, bool want_mlx, lp_convert_opts *o, char ***gguf,
                            char ***mlx) {
    int n;
    char **items = lp_split_list(spec, &n);
    *gguf = lp_xcalloc((size_t)n + 1, sizeof(char *));
    *mlx = lp_xcalloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; i < n; i++) {
        char *colon = strchr(items[i], ':');
        if (colon) *colon = 0;
        const char *g = items[i], *m = colon ? colon + 1 : NULL;
        if (!colon && !lp_recipe_find(g)) m = g, g = NULL;
        if (g && want_gguf) (*gguf)[o->n_gguf++] = lp_xstrdup(g);
        if (m && want_mlx) (*mlx)[o->n_mlx++] = lp_xstrdup(m);
        if (g && !want_gguf && !m) {
            lp_free_list(items);
            return lp_fail("--precision: '%s' is a GGUF precision but --formats has no gguf", g);
        }
    }
    lp_free_list(items);
    return 0;
}

/* Default held-out text: data/validation.txt next to the binary's source tree, or
 * $LP_VALIDATION_TEXT. */
static const char *default_text(void) {
    const char *env = getenv("LP_VALIDATION_TEXT");
    return env ? env : LP_DATA_DIR "/validation.txt";
}

static void validate_defaults(lp_validate_opts *v) {
    memset(v, 0, sizeof *v);
    v->want_ppl = v->want_kld = v->want_generation = true;
    v->ctx = 512;
    v->max_chunks = 16;
    v->backend = "auto";
    v->text_path = default_text();
}

static int parse_metrics(lp_validate_opts *v, const char *list) {
    v->want_ppl = v->want_kld = v->want_generation = false;
    int n;
    char **items = lp_split_list(list, &n);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (strcmp(items[i], "perplexity") == 0) v->want_ppl = true;
        else if (strcmp(items[i], "kld") == 0) v->want_kld = true;
        else if (strcmp(items[i], "generation") == 0) v->want_generation = true;
        else rc = lp_fail("--metrics: unknown metric '%s' (perplexity, kld, generation)", items[i]);
    }
    lp_free_list(items);
    return rc;
}

static int cmd_validate(int argc, char **argv) {
    lp_args a;
    lp_args_init(&a, argc, argv, "validate");
    lp_validate_opts v;
    validate_defaults(&v);
    int err = 0;
    while (!lp_args_done(&a) && !err) {
        if (lp_args_opt(&a, "--original", &err)) v.original = a.value;
        else if (lp_args_opt(&a, "--quantized", &err)) v.quantized = a.value;
        else if (lp_args_opt(&a, "--text", &err)) v.text_path = a.value;
        else if (lp_args_opt(&a, "--backend", &err)) v.backend = a.value;
        else if (lp_args_opt(&a, "--metrics", &err)) err = parse_metrics(&v, a.value) != 0;
        else if (lp_args_opt(&a, "--ctx", &err)) err = lp_parse_int("--ctx", a.value, 16, 1 << 20, &v.ctx) != 0;
        else if (lp_args_opt(&a, "--chunks", &err)) err = lp_parse_int("--chunks", a.value, 0, 1 << 20, &v.max_chunks) != 0;
        else if (lp_args_opt(&a, "--threads", &err)) err = lp_parse_int("--threads", a.value, 1, 1024, &v.n_threads) != 0;
        else if (lp_args_flag(&a, "--quiet")) v.quiet = true;
        else err = lp_fail("validate: unknown option '%s'", lp_args_current(&a)) != 0;
    }
    if (!err && (!v.original || !v.quantized)) err = lp_fail("validate: --original and --quantized are required") != 0;
    if (err) return lp_cli_error(PROG);
    int rc = lp_validate(&v);
    return rc < 0 ? lp_cli_error(PROG) : rc;
}

static int cmd_convert(int argc, char **argv) {
    lp_args a;
    lp_args_init(&a, argc, argv, "convert");
    lp_convert_opts o = {0};
    const char *formats = "gguf", *precision = NULL;
    bool validate = false;
    int err = 0;
    while (!lp_args_done(&a) && !err) {
        if (lp_args_opt(&a, "--model", &err))
            o.model = a.value;
        else if (lp_args_opt(&a, "--output", &err))
            o.output_dir = a.value;
        else if (lp_args_opt(&a, "--formats", &err))
            formats = a.value;
        else if (lp_args_opt(&a, "--precision", &err))
            precision = a.value;
        else if (lp_args_opt(&a, "--threads", &err))
            err = lp_parse_int("--threads", a.value, 1, 1024, &o.n_threads) != 0;
        else if (lp_args_opt(&a, "--group-size", &err))
            err = lp_parse_int("--group-size", a.value, 32, 128, &o.mlx_group_size) != 0;
        else if (lp_args_opt(&a, "--embedding-bits", &err))
            err = lp_parse_int("--embedding-bits", a.value, 2, 8, &o.mlx_embedding_bits) != 0;
        else if (lp_args_opt(&a, "--output-bits", &err))
            err = lp_parse_int("--output-bits", a.value, 2, 8, &o.mlx_output_bits) != 0;
        else if (lp_args_flag(&a, "--dry-run"))
            o.dry_run = true;
        else if (lp_args_flag(&a, "--quiet"))
            o.quiet = true;
        else if (lp_args_flag(&a, "--offline"))
            o.offline = true;
        else if (lp_args_flag(&a, "--validate"))
            validate = true;
        else {
            lp_fail("convert: unknown option '%s'", lp_args_current(&a));
            err = 1;
        }
    }
    if (!err && !o.model) err = lp_fail("convert: --model is required") != 0;
    if (!err && !o.output_dir) err = lp_fail("convert: --output is required") != 0;
    if (!err && !precision) err = lp_fail("convert: --precision is required (e.g. q4_k_m)") != 0;
    if (err) return lp_cli_error(PROG);
    bool want_gguf = strstr(formats, "gguf") != NULL, want_mlx = strstr(formats, "mlx") != NULL;
    if (!want_gguf && !want_mlx) {
        lp_fail("--formats: expected gguf, mlx or gguf,mlx, got '%s'", formats);
        return lp_cli_error(PROG);
    }
    char **gguf = NULL, **mlx = NULL;
    int rc = split_precisions(precision, want_gguf, want_mlx, &o, &gguf, &mlx);
    o.gguf = (const char **)gguf;
    o.mlx = (const char **)mlx;
    if (rc == 0) rc = lp_pipeline_convert(&o);
    lp_free_list(gguf);
    lp_free_list(mlx);
    if (rc != 0) return lp_cli_error(PROG);
    if (!validate || o.dry_run) return 0;
    lp_validate_opts v;
    validate_defaults(&v);
    v.original = o.model;
    v.quantized = o.output_dir;
    v.n_threads = o.n_threads;
    v.quiet = o.quiet;
    rc = lp_validate(&v);
    return rc < 0 ? lp_cli_error(PROG) : rc;
}

static int cmd_inspect(int argc, char **argv) {
    lp_args a;
    lp_args_init(&a, argc, argv, "inspect");
    const char *path = NULL, *tensor = NULL, *out = NULL;
    int err = 0;
    while (!lp_args_done(&a) && !err) {
        if (lp_args_opt(&a, "--tensor", &err))
            tensor = a.value;
        else if (lp_args_opt(&a, "--dequantize", &err))
            out = a.value;
        else if (!path && (path = lp_args_positional(&a)))
            continue;
        else
            err = lp_fail("inspect: unexpected argument '%s'", lp_args_current(&a)) != 0;
    }
    if (!err && !path) err = lp_fail("inspect: missing FILE.gguf") != 0;
    if (!err && (tensor == NULL) != (out == NULL)) err = lp_fail("inspect: --tensor and --dequantize go together") != 0;
    if (err) return lp_cli_error(PROG);
    if (lp_is_dir(path) && !tensor) {
        lp_fail("inspect: %s is a directory: MLX directories take --tensor NAME --dequantize OUT.f32", path);
        return lp_cli_error(PROG);
    }
    int rc = lp_is_dir(path) ? lp_mlx_dequantize_tensor(path, tensor, out)
             : tensor        ? lp_dequantize_tensor(path, tensor, out)
                             : lp_inspect_gguf(path);
    return rc == 0 ? 0 : lp_cli_error(PROG);
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "info") == 0) return cmd_info(argc - 2, argv + 2);
    if (strcmp(argv[1], "convert") == 0) return cmd_convert(argc - 2, argv + 2);
    if (strcmp(argv[1], "validate") == 0) return cmd_validate(argc - 2, argv + 2);
    if (strcmp(argv[1], "inspect") == 0) return cmd_inspect(argc - 2, argv + 2);
    fprintf(stderr, PROG ": unknown command '%s' (try --help)\n", argv[1]);
    return 2;
}
