/* textgen.h — text generation over one loaded artifact: what `generate`, `chat`,
 * `benchmark`, `validate` and the server share.
 *
 * lp_textgen_open() resolves PATH (a .gguf file, an MLX or HF model directory, or a
 * pipeline output directory whose manifest.json names the artifacts), loads the
 * model, its tokenizer (GGUF metadata or tokenizer.json), chat template and
 * end-of-generation tokens, and creates an engine with n_slots KV-cache slots.
 *
 * lp_detok turns sampled tokens into text safely for streaming: it holds back
 * incomplete UTF-8 sequences and any tail that could be the start of a stop
 * string, and reports when a stop string completes. */
#ifndef LP_TEXTGEN_H
#define LP_TEXTGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/sampler.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

#define LP_MAX_EOG 16

typedef struct {
    const char *model_path;
    const char *backend; /* "auto" (default), "cpu", "cuda" */
    int n_threads;       /* 0: all cores */
    int n_ctx;           /* 0: min(model context, 4096) */
    int n_slots;         /* 0: 1 */
    int n_batch;         /* 0: 512 */
} lp_textgen_opts;

typedef struct {
    lp_model *model;
    lp_engine *engine;
    lp_tokenizer *tok;
    lp_template *chat_template; /* NULL if the model has none */
    int32_t eog[LP_MAX_EOG];    /* tokens that end generation */
    int n_eog;
    char *artifact;             /* the file or directory actually loaded */
    char *name;                 /* model name for display / the API */
    const char *backend_name;
    int32_t *cached;            /* tokens whose K/V are in slot 0, in order */
    int n_cached;
} lp_textgen;

lp_textgen *lp_textgen_open(const lp_textgen_opts *o);
void lp_textgen_free(lp_textgen *tg);
bool lp_textgen_is_eog(const lp_textgen *tg, int32_t token);
/* The artifact a PATH resolves to for a backend (manifest dirs pick one); malloc'd. */
char *lp_resolve_artifact(const char *path, const char *backend);

/* ---- streaming detokenizer ---- */
typedef struct {
    const lp_tokenizer *tok;
    const char *const *stops;
    int n_stops;
    char *buf;        /* text not yet emitted */
    size_t len, cap;
    char *out;        /* the text handed to the caller by the last push/flush */
    size_t out_cap;
    bool stopped;     /* a stop string completed: nothing more will be emitted */
} lp_detok;

void lp_detok_init(lp_detok *d, const lp_tokenizer *tok, const char *const *stops, int n_stops);
void lp_detok_free(lp_detok *d);
/* Add a token; *out and *out_len get the text that is now safe to emit (pointer valid until
 * the next call). Returns true when a stop string completed (text before it is emitted). */
bool lp_detok_push(lp_detok *d, int32_t token, const char **out, size_t *out_len);
/* Flush what was held back (end of generation without a stop string). */
void lp_detok_flush(lp_detok *d, const char **out, size_t *out_len);

/* ---- one sequence, start to finish ---- */
typedef struct {
    lp_sampler_params sampling;
    int max_tokens;          /* <= 0: until the context is full */
    const char *const *stops;
    int n_stops;
    bool ignore_eos;
} lp_gen_params;

typedef enum { LP_FINISH_STOP, LP_FINISH_LENGTH, LP_FINISH_CANCELLED } lp_finish_reason;

typedef struct {
    int n_prompt, n_generated;
    double prefill_seconds, decode_seconds;
    lp_finish_reason finish;
} lp_gen_stats;

/* Streamed text; return non-zero to cancel. */
typedef int (*lp_emit_fn)(void *ud, const char *text, size_t len);

/* Prompts that share a prefix with the previous call (a chat's growing history) reuse
 * its KV cache: only the new suffix is evaluated. */
int lp_textgen_generate(lp_textgen *tg, const int32_t *prompt, int n_prompt, const lp_gen_params *p, lp_emit_fn emit,
                        void *ud, lp_gen_stats *stats);

/* Render a chat (messages JSON array) with the model's template; malloc'd. */
char *lp_textgen_render_chat(const lp_textgen *tg, const json_t *messages, const json_t *tools,
                             bool add_generation_prompt, const json_t *extra);
/* Encode text; parse_special lets control tokens in the text through (templates only). */
int lp_textgen_encode(const lp_textgen *tg, const char *text, bool parse_special, int32_t **ids, int *n);

#endif
