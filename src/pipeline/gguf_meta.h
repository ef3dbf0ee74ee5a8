/* gguf_meta.h — the GGUF key/values llama.cpp needs for a model: general.*,
 * {arch}.* hyper-parameters and tokenizer.* (vocab, types, merges, special ids,
 * chat template), taken from config.json, tokenizer.json, tokenizer_config.json
 * and chat_template.jinja (FORMATS.md s.3). */
#ifndef LP_GGUF_META_H
#define LP_GGUF_META_H

#include "../arch/arch.h"
#include "../formats/gguf.h"

typedef struct {
    const char *model_dir;  /* HF directory with tokenizer files */
    const char *model_name; /* general.name */
    uint32_t file_type;     /* llama_ftype */
} lp_gguf_meta_args;

int lp_gguf_meta_write(lp_gguf_writer *w, const lp_hparams *hp, const lp_gguf_meta_args *args);
/* The chat template of an HF model dir (tokenizer_config.json "chat_template" or
 * chat_template.jinja); malloc'd, NULL (no error) if the model has none. */
char *lp_hf_chat_template(const char *model_dir);

#endif
