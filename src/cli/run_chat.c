/* run_chat.c — `llama-pajamas-run chat`: interactive multi-turn chat with line
 * editing and history (libedit). Thinking is shown dimmed and kept out of the
 * history; /reset, /save FILE, /help, /quit. */
#define _GNU_SOURCE /* memmem */
#include <editline/readline.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/run_opts.h"
#include "core/err.h"

#define PROG "llama-pajamas-run"

int lp_build_prompt(lp_textgen *tg, const lp_run_opts *o, const char *user_text, int32_t **ids, int *n);
void lp_print_stats(const lp_textgen *tg, const lp_gen_stats *st);

typedef struct {
    bool tty;
    bool in_think;
    char *reply; /* the whole reply, thinking included */
    size_t len, cap;
} chat_out;

static void out_write(chat_out *c, const char *s, size_t n) {
    if (n == 0) return;
    if (c->in_think && c->tty) fputs("\033[2m", stdout);
    fwrite(s, 1, n, stdout);
    if (c->in_think && c->tty) fputs("\033[0m", stdout);
}

/* Print streamed text, switching to dim between <think> and </think>. */
static int chat_emit(void *ud, const char *text, size_t len) {
    chat_out *c = ud;
    if (c->len + len + 1 > c->cap) {
        c->cap = (c->len + len + 1) * 2;
        c->reply = lp_xrealloc(c->reply, c->cap);
    }
    memcpy(c->reply + c->len, text, len);
    c->len += len;
    c->reply[c->len] = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *tag = c->in_think ? "</think>" : "<think>";
        const char *hit = memmem(p, (size_t)(end - p), tag, strlen(tag));
        if (!hit) {
            out_write(c, p, (size_t)(end - p));
            break;
        }
        out_write(c, p, (size_t)(hit - p));
        c->in_think = !c->in_think;
        p = hit + strlen(tag);
    }
    fflush(stdout);
    return 0;
}

/* The reply without its <think>...</think> block, trimmed: what goes into the history. */
static char *strip_thinking(const char *reply) {
    const char *end = strstr(reply, "</think>");
    const char *s = end ? end + strlen("</think>") : reply;
    while (*s == '\n' || *s == ' ') s++;
    char *out = lp_xstrdup(s);
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) out[--n] = 0;
    return out;
}

static void help(void) {
    printf("commands: /reset (forget the conversation), /save FILE (write it as JSON), /help, /quit\n");
}

static int handle_command(const char *line, json_t *messages) {
    if (strcmp(line, "/quit") == 0 || strcmp(line, "/exit") == 0) return 1;
    if (strcmp(line, "/reset") == 0) {
        json_array_clear(messages);
        printf("(conversation cleared)\n");
    } else if (strncmp(line, "/save ", 6) == 0) {
        if (json_dump_file(messages, line + 6, JSON_INDENT(2)) == 0)
            printf("(saved %zu messages to %s)\n", json_array_size(messages), line + 6);
        else
            printf("(could not write %s)\n", line + 6);
    } else {
        help();
    }
    return 0;
}

static int chat_turn(lp_textgen *tg, lp_run_opts *o, json_t *messages, bool tty) {
    json_t *extra = json_pack("{s:b}", "enable_thinking", o->mode != LP_MODE_NON_THINKING);
    char *text = lp_textgen_render_chat(tg, messages, NULL, true, extra);
    json_decref(extra);
    if (!text) return -1;
    int32_t *ids = NULL;
    int n = 0;
    int rc = lp_textgen_encode(tg, text, true, &ids, &n);
    free(text);
    chat_out c = {.tty = tty};
    lp_gen_stats st;
    if (rc == 0) rc = lp_textgen_generate(tg, ids, n, &o->gen, chat_emit, &c, &st);
    free(ids);
    if (tty) fputs("\033[0m", stdout);
    printf("\n");
    if (rc == 0) {
        char *answer = strip_thinking(c.reply ? c.reply : "");
        json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "assistant", "content", answer));
        free(answer);
        if (tty) lp_print_stats(tg, &st);
    }
    free(c.reply);
    return rc;
}

int lp_cmd_chat(int argc, char **argv) {
    lp_args a;
    lp_args_init(&a, argc, argv, "chat");
    lp_run_opts o;
    lp_run_opts_init(&o);
    int err = 0;
    while (!lp_args_done(&a) && !err) {
        int r = lp_run_opts_parse(&o, &a);
        if (r < 0) return lp_cli_error(PROG);
        if (r == 0) err = lp_fail("chat: unknown option '%s'", lp_args_current(&a)) != 0;
    }
    if (!err && !o.load.model_path) err = lp_fail("chat: --model is required") != 0;
    if (err) return lp_cli_error(PROG);
    if (o.mode == LP_MODE_RAW) {
        lp_fail("chat: --mode raw is not available in chat (use generate)");
        return lp_cli_error(PROG);
    }
    lp_run_opts_finish(&o);
    lp_textgen *tg = lp_textgen_open(&o.load);
    if (!tg) return lp_cli_error(PROG);
    if (!tg->chat_template) {
        lp_fail("%s: the model has no chat template; use generate", tg->name);
        lp_textgen_free(tg);
        return lp_cli_error(PROG);
    }
    bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    if (tty) printf("chatting with %s on %s — /help for commands, Ctrl-D to quit\n", tg->name, tg->backend_name);
    json_t *messages = json_array();
    int rc = 0;
    for (;;) {
        char *line = readline(tty ? "> " : "");
        if (!line) break;
        if (*line == 0) {
            free(line);
            continue;
        }
        add_history(line);
        int quit = 0;
        if (line[0] == '/') {
            quit = handle_command(line, messages);
        } else {
            json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "user", "content", line));
            if (chat_turn(tg, &o, messages, tty) != 0) {
                fprintf(stderr, PROG ": error: %s\n", lp_errmsg());
                json_array_remove(messages, json_array_size(messages) - 1);
            }
        }
        free(line);
        if (quit) break;
    }
    json_decref(messages);
    lp_textgen_free(tg);
    return rc;
}
