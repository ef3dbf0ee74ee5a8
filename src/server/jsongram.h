/* jsongram.h — an incremental JSON syntax checker for constrained decoding.
 *
 * The server's response_format {"type":"json_object"} samples only tokens whose bytes
 * keep the output a valid prefix of a JSON document whose top level is an object. The
 * state is a small plain struct, so trying a candidate token is: copy, feed, look. */
#ifndef LP_JSONGRAM_H
#define LP_JSONGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LP_JG_MAX_DEPTH 48

typedef struct {
    uint8_t stack[LP_JG_MAX_DEPTH]; /* '{' or '[' per open container */
    int depth;
    uint8_t st;        /* parser state (jsongram.c) */
    uint8_t lit;       /* literal being matched: index into the literal table */
    uint8_t lit_pos;   /* bytes of it matched so far */
    uint8_t hex_left;  /* \uXXXX digits still expected */
    bool in_key;       /* the open string is an object key */
    bool object_only;  /* the top level must be an object */
} lp_jg;

void lp_jg_init(lp_jg *g, bool object_only);
/* Feed bytes; false (and g left in an undefined state) when they cannot continue a
 * valid document. Feed a copy when only trying. */
bool lp_jg_feed(lp_jg *g, const char *bytes, size_t n);
/* A complete document has been read (only whitespace may follow). */
bool lp_jg_complete(const lp_jg *g);

#endif
