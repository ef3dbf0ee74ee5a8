/* chat.c — the chat-prompt entry point: builds the variables transformers'
 * apply_chat_template passes to a chat template and renders it. */
#include "template/tmpl_int.h"

char *lp_chat_render(const lp_template *t, const json_t *messages, const json_t *tools,
                     bool add_generation_prompt, const json_t *extra_kwargs,
                     const char *bos_token, const char *eos_token) {
    if (!messages || !json_is_array(messages)) {
        lp_fail("chat template: messages must be a JSON array");
        return NULL;
    }
    if (extra_kwargs && !json_is_object(extra_kwargs)) {
        lp_fail("chat template: extra kwargs must be a JSON object");
        return NULL;
    }
    /* render(messages=..., tools=..., documents=None, add_generation_prompt=..., **kwargs) where
     * kwargs carry the tokenizer's special tokens and the caller's extras. */
    json_t *ctx = json_object();
    json_object_set(ctx, "messages", (json_t *)messages);
    json_object_set(ctx, "tools", tools ? (json_t *)tools : json_null());
    json_object_set_new(ctx, "documents", json_null());
    json_object_set_new(ctx, "add_generation_prompt", json_boolean(add_generation_prompt));
    if (bos_token) json_object_set_new(ctx, "bos_token", json_string_nocheck(bos_token));
    if (eos_token) json_object_set_new(ctx, "eos_token", json_string_nocheck(eos_token));
    if (extra_kwargs) json_object_update(ctx, (json_t *)extra_kwargs);
    char *out = lp_template_render(t, ctx, NULL);
    json_decref(ctx);
    return out;
}
