/* validate.c — scores every artifact of a conversion against the original
 * weights on the same held-out chunks: all models are loaded (weights are mmapped,
 * not copied), and for each chunk the baseline's logits are computed once and
 * compared with each artifact's, so nothing of size n_tokens x vocab is kept. */
#include "validate.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/fileio.h"
#include "../core/progress.h"
#include "../gen/textgen.h"
#include "../runtime/perplexity.h"

typedef struct {
    const char *name;
    double max_increase_pct;
} threshold_row;

/* Perplexity increase allowed per precision (issue #3; MLX recipes by bits). */
static const threshold_row thresholds[] = {
    {"f32", 0.1},  {"f16", 0.1},    {"bf16", 0.1},       {"q8_0", 0.5},   {"8bit", 0.5},     {"q6_k", 1.0},
    {"6bit", 1.0}, {"q5_k_m", 2.0}, {"q4_k_m", 5.0},     {"4bit", 5.0},   {"4bit-mixed", 5.0}, {"q3_k_m", 12.0},
    {"3bit", 12.0}, {"mixed_3_6", 12.0}, {"q2_k", 60.0}, {"2bit", 80.0}, {"mixed_2_6", 60.0}, {NULL, 0},
};

double lp_validate_threshold(const char *precision) {
    for (int i = 0; thresholds[i].name; i++)
        if (strcmp(thresholds[i].name, precision) == 0) return thresholds[i].max_increase_pct;
    return -1;
}

typedef struct {
    char *precision, *format, *path;
    lp_textgen *tg;
    double nll_all, nll_second;
    size_t n_all, n_second;
    lp_kld *kld;
    char *samples[2];
} model_eval;

static void free_eval(model_eval *m) {
    lp_textgen_free(m->tg);
    if (m->kld) lp_kld_free(m->kld);
    free(m->precision);
    free(m->format);
    free(m->path);
    free(m->samples[0]);
    free(m->samples[1]);
}

static int open_eval(model_eval *m, const char *path, const lp_validate_opts *o) {
    lp_textgen_opts to = {.model_path = path, .backend = o->backend, .n_threads = o->n_threads, .n_ctx = o->ctx};
    m->tg = lp_textgen_open(&to);
    m->kld = lp_kld_new();
    return m->tg ? 0 : lp_fail_prefix("validate");
}

/* NLL of every next token of a chunk; positions >= ctx/2 also go to the second half. */
static void score_chunk(model_eval *m, const float *logits, const int32_t *toks, int ctx, int V) {
    for (int i = 0; i + 1 < ctx; i++) {
        double nll = lp_token_nll(logits + (size_t)i * V, V, toks[i + 1]);
        m->nll_all += nll;
        m->n_all++;
        if (i + 1 >= ctx / 2) {
            m->nll_second += nll;
            m->n_second++;
        }
    }
}

static int load_artifacts(const lp_validate_opts *o, model_eval **out, int *n_out) {
    char *path = lp_path_join(o->quantized, "manifest.json");
    json_error_t jerr;
    json_t *man = json_load_file(path, 0, &jerr);
    if (!man) {
        int rc = lp_fail("%s: %s", path, lp_path_exists(path) ? jerr.text : "not found (run convert first)");
        free(path);
        return rc;
    }
    free(path);
    const json_t *arts = json_object_get(man, "artifacts");
    int n = (int)json_array_size(arts), rc = 0;
    if (n == 0) rc = lp_fail("%s/manifest.json: no artifacts", o->quantized);
    model_eval *ev = lp_xcalloc((size_t)n + 1, sizeof *ev);
    for (int i = 0; i < n && rc == 0; i++) {
        const json_t *a = json_array_get(arts, (size_t)i);
        const char *prec = json_string_value(json_object_get(a, "precision"));
        const char *fmt = json_string_value(json_object_get(a, "format"));
        const char *rel = json_string_value(json_object_get(a, "path"));
        if (!prec || !fmt || !rel) {
            rc = lp_fail("%s/manifest.json: artifact %d lacks precision/format/path", o->quantized, i);
            break;
        }
        ev[i].precision = lp_xstrdup(prec);
        ev[i].format = lp_xstrdup(fmt);
        ev[i].path = lp_path_join(o->quantized, rel);
        rc = open_eval(&ev[i], ev[i].path, o);
    }
    json_decref(man);
    *out = ev;
    *n_out = n;
    return rc;
}

static int append_text(void *ud, const char *t, size_t k) {
    char **buf = ud;
    size_t len = strlen(*buf);
    *buf = lp_xrealloc(*buf, len + k + 1);
    memcpy(*buf + len, t, k);
    (*buf)[len + k] = 0;
    return 0;
}

/* Greedy continuation of a prompt, as text. */
static char *greedy_sample(lp_textgen *tg, const int32_t *prompt, int n) {
    lp_gen_params p = {.max_tokens = 24, .ignore_eos = true};
    p.sampling = lp_sampler_default_params();
    p.sampling.temperature = 0;
    char *buf = lp_xcalloc(1, 1);
    lp_gen_stats st;
    tg->n_cached = 0;
    if (lp_textgen_generate(tg, prompt, n, &p, append_text, &buf, &st) != 0) {
        free(buf);
        return lp_xstrdup("(generation failed)");
    }
    return buf;
}

static double ppl(double nll, size_t n) { return n ? exp(nll / (double)n) : NAN; }

static json_t *report_json(const lp_validate_opts *o, const model_eval *base, const model_eval *ev, int n,
                           int n_chunks, bool *all_pass) {
    double base_ppl = ppl(base->nll_all, base->n_all);
    json_t *arts = json_array();
    *all_pass = true;
    for (int i = 0; i < n; i++) {
        const model_eval *m = &ev[i];
        lp_kld_stats ks = {0};
        lp_kld_get(m->kld, &ks);
        double p = ppl(m->nll_all, m->n_all), inc = 100.0 * (p / base_ppl - 1.0);
        double thr = lp_validate_threshold(m->precision);
        bool pass = thr < 0 || !o->want_ppl || inc < thr;
        *all_pass &= pass;
        json_t *a = json_pack("{s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:b}", "precision", m->precision,
                              "format", m->format, "path", m->path, "ppl", p, "ppl_second_half",
                              ppl(m->nll_second, m->n_second), "ppl_increase_pct", inc, "kld_mean", ks.mean_kld,
                              "kld_p99", ks.p99_kld, "top1_agreement", ks.top1_agree, "threshold_pct", thr, "pass",
                              pass);
        if (m->samples[0]) json_object_set_new(a, "samples", json_pack("[s, s]", m->samples[0], m->samples[1]));
        json_array_append_new(arts, a);
    }
    json_t *b = json_pack("{s:s, s:f, s:f}", "path", o->original, "ppl", base_ppl, "ppl_second_half",
                          ppl(base->nll_second, base->n_second));
    if (base->samples[0]) json_object_set_new(b, "samples", json_pack("[s, s]", base->samples[0], base->samples[1]));
    return json_pack("{s:s, s:i, s:i, s:I, s:o, s:o, s:b}", "text", o->text_path, "ctx", o->ctx, "chunks", n_chunks,
                     "tokens_scored", (json_int_t)base->n_all, "baseline", b, "artifacts", arts, "pass", *all_pass);
}

static void print_table(const json_t *rep) {
    const json_t *b = json_object_get(rep, "baseline");
    printf("\n%-12s %-5s %10s %9s %10s %10s %8s %6s\n", "precision", "fmt", "perplexity", "increase", "KLD mean",
           "KLD p99", "top-1", "result");
    printf("%-12s %-5s %10.4f %9s %10s %10s %8s %6s\n", "original", "hf", json_real_value(json_object_get(b, "ppl")), "-",
           "-", "-", "-", "");
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(rep, "artifacts"), i, a) {
        double thr = json_real_value(json_object_get(a, "threshold_pct"));
        char verdict[32];
        snprintf(verdict, sizeof verdict, "%s", thr < 0 ? "n/a" : json_is_true(json_object_get(a, "pass")) ? "pass" : "FAIL");
        printf("%-12s %-5s %10.4f %+8.2f%% %10.5f %10.5f %7.1f%% %6s\n",
               json_string_value(json_object_get(a, "precision")), json_string_value(json_object_get(a, "format")),
               json_real_value(json_object_get(a, "ppl")), json_real_value(json_object_get(a, "ppl_increase_pct")),
               json_real_value(json_object_get(a, "kld_mean")), json_real_value(json_object_get(a, "kld_p99")),
               100 * json_real_value(json_object_get(a, "top1_agreement")), verdict);
    }
}

/* A sample on one line: newlines shown as "\n", at most 90 bytes. */
static void print_sample(const char *label, const char *text) {
    printf("  %-12s ", label);
    int col = 0;
    for (const char *p = text; *p && col < 90; p++, col++) {
        if (*p == '\n') fputs("\\n", stdout);
        else putchar(*p);
    }
    putchar('\n');
}

static void print_samples(const model_eval *base, const model_eval *ev, int n) {
    for (int s = 0; s < 2 && base->samples[s]; s++) {
        printf("\ngreedy sample %d\n", s + 1);
        print_sample("original", base->samples[s]);
        for (int i = 0; i < n; i++) print_sample(ev[i].precision, ev[i].samples[s]);
    }
}

/* One chunk through the baseline and every artifact. */
static int eval_chunk(model_eval *base, model_eval *ev, int n, const int32_t *toks, int ctx, float *bl, float *al,
                      bool want_kld) {
    int V = lp_engine_n_vocab(base->tg->engine);
    base->tg->n_cached = 0;
    if (lp_engine_eval(base->tg->engine, 0, 0, toks, ctx, bl, true) != 0) return -1;
    score_chunk(base, bl, toks, ctx, V);
    for (int i = 0; i < n; i++) {
        ev[i].tg->n_cached = 0;
        if (lp_engine_n_vocab(ev[i].tg->engine) != V)
            return lp_fail("%s: vocabulary %d differs from the original's %d", ev[i].path, lp_engine_n_vocab(ev[i].tg->engine), V);
        if (lp_engine_eval(ev[i].tg->engine, 0, 0, toks, ctx, al, true) != 0) return -1;
        score_chunk(&ev[i], al, toks, ctx, V);
        for (int p = 0; want_kld && p + 1 < ctx; p++) lp_kld_add(ev[i].kld, bl + (size_t)p * V, al + (size_t)p * V, V);
    }
    return 0;
}

int lp_validate(const lp_validate_opts *o) {
    model_eval base = {0}, *ev = NULL;
    int n = 0, rc = open_eval(&base, o->original, o);
    if (rc == 0) rc = load_artifacts(o, &ev, &n);
    char *text = rc == 0 ? lp_read_file(o->text_path, NULL) : NULL;
    int32_t *toks = NULL;
    int n_tok = 0;
    if (rc == 0 && !text) rc = -1;
    if (rc == 0) rc = lp_textgen_encode(base.tg, text, false, &toks, &n_tok);
    int n_chunks = rc == 0 ? n_tok / o->ctx : 0;
    if (o->max_chunks > 0 && n_chunks > o->max_chunks) n_chunks = o->max_chunks;
    if (rc == 0 && n_chunks == 0) rc = lp_fail("%s: %d tokens, fewer than one chunk of %d", o->text_path, n_tok, o->ctx);
    size_t V = rc == 0 ? (size_t)lp_engine_n_vocab(base.tg->engine) : 0;
    float *bl = lp_xmalloc(sizeof(float) * V * (size_t)o->ctx + 1), *al = lp_xmalloc(sizeof(float) * V * (size_t)o->ctx + 1);
    lp_progress prog;
    lp_progress_start(&prog, n_chunks, (uint64_t)n_chunks, o->quiet);
    for (int c = 0; c < n_chunks && rc == 0; c++) {
        lp_progress_update(&prog, c + 1, "scoring chunks", (uint64_t)c);
        rc = eval_chunk(&base, ev, n, toks + (size_t)c * (size_t)o->ctx, o->ctx, bl, al, o->want_kld);
    }
    lp_progress_finish(&prog);
    for (int s = 0; s < 2 && rc == 0 && o->want_generation; s++) {
        const int32_t *prompt = toks + (size_t)s * (size_t)o->ctx;
        base.samples[s] = greedy_sample(base.tg, prompt, 16);
        for (int i = 0; i < n; i++) ev[i].samples[s] = greedy_sample(ev[i].tg, prompt, 16);
    }
    bool all_pass = false;
    if (rc == 0) {
        json_t *rep = report_json(o, &base, ev, n, n_chunks, &all_pass);
        print_table(rep);
        print_samples(&base, ev, n);
        char *path = lp_path_join(o->quantized, "validation.json");
        char *s = json_dumps(rep, JSON_INDENT(2));
        rc = lp_write_file_atomic(path, s, strlen(s));
        if (rc == 0) printf("\nwrote %s: %s\n", path, all_pass ? "all artifacts within thresholds" : "SOME ARTIFACTS FAILED");
        free(s);
        free(path);
        json_decref(rep);
    }
    free(bl);
    free(al);
    free(toks);
    free(text);
    for (int i = 0; i < n; i++) free_eval(&ev[i]);
    free(ev);
    free_eval(&base);
    return rc != 0 ? -1 : all_pass ? 0 : 1;
}
