/* jsongram.c — byte-at-a-time JSON (RFC 8259) prefix checker: a state machine with
 * an explicit container stack, no allocation, so a server can test thousands of
 * candidate tokens per step by copying the state. */
#include "jsongram.h"

#include <string.h>

enum {
    JG_TOP,        /* before the top-level value */
    JG_VALUE,      /* a value is expected (after ':' or ',' in an array) */
    JG_ARR_FIRST,  /* just after '[': a value or ']' */
    JG_OBJ_FIRST,  /* just after '{': a key or '}' */
    JG_OBJ_KEY,    /* after ',' in an object: a key */
    JG_COLON,      /* after a key */
    JG_AFTER,      /* after a value inside a container: ',' or the closer */
    JG_STR,        /* inside a string */
    JG_STR_ESC,    /* after a backslash */
    JG_STR_HEX,    /* inside \uXXXX */
    JG_LIT,        /* inside true / false / null */
    JG_NUM_MINUS,  /* "-" */
    JG_NUM_ZERO,   /* "0" or "-0" */
    JG_NUM_INT,    /* [1-9][0-9]* */
    JG_NUM_DOT,    /* "1." */
    JG_NUM_FRAC,   /* "1.5" */
    JG_NUM_E,      /* "1e" */
    JG_NUM_ESIGN,  /* "1e-" */
    JG_NUM_EXP,    /* "1e5" */
    JG_DONE,       /* the document is complete */
};

static const char *const literals[] = {"true", "false", "null"};

void lp_jg_init(lp_jg *g, bool object_only) {
    memset(g, 0, sizeof *g);
    g->st = JG_TOP;
    g->object_only = object_only;
}

static bool is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static void value_done(lp_jg *g) { g->st = g->depth == 0 ? JG_DONE : JG_AFTER; }

static bool push(lp_jg *g, unsigned char c) {
    if (g->depth >= LP_JG_MAX_DEPTH) return false;
    g->stack[g->depth++] = c;
    g->st = c == '{' ? JG_OBJ_FIRST : JG_ARR_FIRST;
    return true;
}

/* The first byte of a value. */
static bool start_value(lp_jg *g, unsigned char c) {
    if (g->st == JG_TOP && g->object_only && c != '{') return false;
    switch (c) {
    case '{':
    case '[': return push(g, c);
    case '"': g->in_key = false; g->st = JG_STR; return true;
    case '-': g->st = JG_NUM_MINUS; return true;
    case '0': g->st = JG_NUM_ZERO; return true;
    default: break;
    }
    if (c >= '1' && c <= '9') {
        g->st = JG_NUM_INT;
        return true;
    }
    for (uint8_t i = 0; i < 3; i++)
        if (c == (unsigned char)literals[i][0]) {
            g->st = JG_LIT;
            g->lit = i;
            g->lit_pos = 1;
            return true;
        }
    return false;
}

static bool close_container(lp_jg *g, unsigned char c) {
    if (g->depth == 0 || g->stack[g->depth - 1] != (c == '}' ? '{' : '[')) return false;
    g->depth--;
    value_done(g);
    return true;
}

/* A number ends at the first byte that cannot continue it; that byte is then read in
 * the state after the value. */
static bool number_byte(lp_jg *g, unsigned char c, bool *consumed) {
    *consumed = true;
    switch (g->st) {
    case JG_NUM_MINUS:
        if (c == '0') g->st = JG_NUM_ZERO;
        else if (c >= '1' && c <= '9') g->st = JG_NUM_INT;
        else return false;
        return true;
    case JG_NUM_ZERO:
    case JG_NUM_INT:
        if (g->st == JG_NUM_INT && is_digit(c)) return true;
        if (c == '.') { g->st = JG_NUM_DOT; return true; }
        if (c == 'e' || c == 'E') { g->st = JG_NUM_E; return true; }
        break;
    case JG_NUM_DOT:
        if (!is_digit(c)) return false;
        g->st = JG_NUM_FRAC;
        return true;
    case JG_NUM_FRAC:
        if (is_digit(c)) return true;
        if (c == 'e' || c == 'E') { g->st = JG_NUM_E; return true; }
        break;
    case JG_NUM_E:
        if (c == '+' || c == '-') { g->st = JG_NUM_ESIGN; return true; }
        if (!is_digit(c)) return false;
        g->st = JG_NUM_EXP;
        return true;
    case JG_NUM_ESIGN:
        if (!is_digit(c)) return false;
        g->st = JG_NUM_EXP;
        return true;
    case JG_NUM_EXP:
        if (is_digit(c)) return true;
        break;
    default: return false;
    }
    *consumed = false; /* a complete number followed by something else */
    value_done(g);
    return true;
}

static bool feed_byte(lp_jg *g, unsigned char c) {
    switch (g->st) {
    case JG_TOP:
    case JG_VALUE: return is_ws(c) || start_value(g, c);
    case JG_ARR_FIRST: return is_ws(c) || (c == ']' ? close_container(g, c) : start_value(g, c));
    case JG_OBJ_FIRST:
    case JG_OBJ_KEY:
        if (is_ws(c)) return true;
        if (c == '"') {
            g->st = JG_STR;
            g->in_key = true;
            return true;
        }
        return g->st == JG_OBJ_FIRST && c == '}' && close_container(g, c);
    case JG_COLON:
        if (is_ws(c)) return true;
        if (c != ':') return false;
        g->st = JG_VALUE;
        return true;
    case JG_AFTER:
        if (is_ws(c)) return true;
        if (c == ',') {
            g->st = g->stack[g->depth - 1] == '{' ? JG_OBJ_KEY : JG_VALUE;
            return true;
        }
        return (c == '}' || c == ']') && close_container(g, c);
    case JG_STR:
        if (c == '"') {
            if (g->in_key) g->st = JG_COLON;
            else value_done(g);
            return true;
        }
        if (c == '\\') g->st = JG_STR_ESC;
        return c >= 0x20; /* raw control characters are not allowed in strings */
    case JG_STR_ESC:
        if (c == 'u') {
            g->st = JG_STR_HEX;
            g->hex_left = 4;
            return true;
        }
        g->st = JG_STR;
        return strchr("\"\\/bfnrt", c) != NULL && c != 0;
    case JG_STR_HEX:
        if (!is_hex(c)) return false;
        if (--g->hex_left == 0) g->st = JG_STR;
        return true;
    case JG_LIT: {
        const char *lit = literals[g->lit];
        if (c != (unsigned char)lit[g->lit_pos]) return false;
        if (lit[++g->lit_pos] == 0) value_done(g);
        return true;
    }
    case JG_DONE: return is_ws(c);
    default: {
        bool consumed;
        if (!number_byte(g, c, &consumed)) return false;
        return consumed || feed_byte(g, c);
    }
    }
}

bool lp_jg_feed(lp_jg *g, const char *bytes, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!feed_byte(g, (unsigned char)bytes[i])) return false;
    return true;
}

bool lp_jg_complete(const lp_jg *g) {
    if (g->st == JG_DONE) return true;
    /* A bare top-level number is complete only when nothing can extend it; with an
     * object required at the top this never applies. */
    return !g->object_only && g->depth == 0 &&
           (g->st == JG_NUM_ZERO || g->st == JG_NUM_INT || g->st == JG_NUM_FRAC || g->st == JG_NUM_EXP);
}
