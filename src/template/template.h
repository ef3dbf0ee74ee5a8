/* template.h — Jinja2 chat templates, rendered the way Hugging Face transformers renders them.
 *
 * A model ships its prompt format as a Jinja template (tokenizer_config.json "chat_template" or
 * chat_template.jinja). To produce byte-identical prompts we implement the Jinja subset those
 * templates use, with transformers' environment: an ImmutableSandboxedEnvironment with
 * trim_blocks=True, lstrip_blocks=True, the loopcontrols extension ({% break %}, {% continue %}),
 * the {% generation %} tag, default (non-strict) Undefined, and the globals raise_exception(msg)
 * and strftime_now(fmt), plus transformers' own `tojson` filter (json.dumps with
 * ensure_ascii=False, optional indent / separators / sort_keys).
 *
 * Values come in as jansson JSON; output is UTF-8 text.
 *
 * Errors: compile and render return NULL after lp_fail(). A template's own
 * raise_exception("msg") leaves exactly "msg" in lp_errmsg() (lp_template_raised() is then true);
 * every other error reads "<name>:<line>: what is wrong". */
#ifndef LP_TEMPLATE_H
#define LP_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

typedef struct lp_template lp_template;

/* Parse once, render many times (also from several threads at once: a compiled template is
 * read-only). `name` (may be NULL: "template") prefixes error messages. */
lp_template *lp_template_compile(const char *src);
lp_template *lp_template_compile_named(const char *src, const char *name);
void lp_template_free(lp_template *t);

/* Render with `context` (a JSON object: the template's variables; NULL = none). Returns a
 * malloc'd NUL-terminated string; *len_out (optional) gets its length in bytes. */
char *lp_template_render(const lp_template *t, const json_t *context, size_t *len_out);

/* True when the last failed render on this thread failed in the template's raise_exception(). */
bool lp_template_raised(void);

/* The chat entry point, like transformers' apply_chat_template(tokenize=False):
 * variables messages, tools (JSON null when NULL), documents (null), add_generation_prompt,
 * bos_token / eos_token (left undefined when NULL), then every key of extra_kwargs (e.g.
 * {"enable_thinking": false}), which may override the ones before. */
char *lp_chat_render(const lp_template *t, const json_t *messages, const json_t *tools,
                     bool add_generation_prompt, const json_t *extra_kwargs,
                     const char *bos_token, const char *eos_token);

/* Ceilings that stop runaway templates: loop iterations + calls per render (default 20M) and
 * an estimate of the memory one render holds (default 512 MiB). 0 restores a default.
 * Process-wide. */
void lp_template_set_limits(long long max_steps, size_t max_bytes);

/* strftime_now() reads the local time of this clock. 0 (the default) = the real clock; tests
 * fix it so renders are reproducible. Process-wide. */
void lp_template_set_clock(time_t fixed_now);

#endif
