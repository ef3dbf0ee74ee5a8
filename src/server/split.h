/* split.h — separates a model's streamed output into reasoning, content and tool calls.
 *
 * Qwen3-style models write "<think>\n...\n</think>\n\n" before the answer and call tools
 * as "<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>". The splitter reads
 * text deltas as they are generated and hands back reasoning and content deltas, holding
 * back only what could still turn out to be a tag (or whitespace a tag would trim), so the
 * streamed pieces concatenate to exactly what a non-streamed response contains. Tool-call
 * blocks are collected and parsed at the end. */
#ifndef LP_SPLIT_H
#define LP_SPLIT_H

#include <jansson.h>
#include <stdbool.h>

#include "srvutil.h"

typedef struct {
    int state;        /* split.c: before anything / reasoning / content / tool calls */
    bool parse_tools; /* look for <tool_call> blocks (the request carried tools) */
    srv_buf pend;     /* text not yet classified */
    srv_buf tools;    /* raw text from the first <tool_call> on */
    srv_buf reasoning_all, content_all;
    size_t reasoning_sent, content_sent; /* how much of the *_all buffers the last push returned */
} srv_split;

/* in_reasoning: the prompt already opened a <think> block (the model starts inside it). */
void srv_split_init(srv_split *s, bool in_reasoning, bool parse_tools);
void srv_split_free(srv_split *s);
/* Feed a delta. Afterwards reasoning_all / content_all hold everything classified so far;
 * srv_split_take() returns the parts not returned before. */
void srv_split_push(srv_split *s, const char *text, size_t len);
/* End of generation: classify what was held back. Returns the parsed tool calls (a JSON
 * array in OpenAI form, ids assigned) or NULL when there were none or they did not parse
 * (their raw text is then content). */
json_t *srv_split_finish(srv_split *s);
/* New reasoning / content since the last take (pointers into the buffers). */
void srv_split_take(srv_split *s, const char **reasoning, size_t *rlen, const char **content, size_t *clen);

/* Parse the text of <tool_call> blocks into OpenAI tool_calls, or NULL if any block is
 * not {"name": string, "arguments": object|string}. */
json_t *srv_parse_tool_calls(const char *text, size_t len);

#endif
