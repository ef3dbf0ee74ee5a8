/* hub.c — downloads from the Hugging Face hub (libcurl) into the huggingface_hub cache
 * layout (FORMATS.md section 9): blobs/<etag>, snapshots/<commit>/<file> as relative
 * symlinks to the blobs, refs/<branch>. Bytes stream into blobs/<etag>.incomplete, which
 * is resumed with an HTTP Range request after an interruption and renamed only once its
 * size (and sha256, for LFS files) is verified, so no half file ever has a final name. */
#include "pipeline/source.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "core/err.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "core/sha256.h"

#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"
#define HUB_USER_AGENT "llama-pajamas/0.1; libcurl"
#define HUB_MAX_JSON_BYTES (64u << 20)
#define HUB_MAX_REDIRECTS 10
#define HUB_INDEX_NAME "model.safetensors.index.json"

/* What a conversion reads besides the weights; everything else in a repo is skipped. */
static const char *const hub_meta_files[] = {
    "config.json",           "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja",  HUB_INDEX_NAME,
};
#define HUB_N_META_FILES (sizeof hub_meta_files / sizeof hub_meta_files[0])

/* ---------------- environment ---------------- */

char *lp_hub_endpoint(void) {
    const char *env = getenv("HF_ENDPOINT");
    char *ep = lp_xstrdup(env && *env ? env : HUB_DEFAULT_ENDPOINT);
    size_t n = strlen(ep);
    while (n > 0 && ep[n - 1] == '/') ep[--n] = 0;
    return ep;
}

static char *trimmed_or_null(char *s) {
    if (!s) return NULL;
    char *start = s;
    while (isspace((unsigned char)*start)) start++;
    size_t n = strlen(start);
    while (n > 0 && isspace((unsigned char)start[n - 1])) n--;
    memmove(s, start, n);
    s[n] = 0;
    if (n > 0) return s;
    free(s);
    return NULL;
}

char *lp_hub_token(void) {
    static const char *const token_vars[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"};
    for (size_t i = 0; i < 2; i++) {
        const char *v = getenv(token_vars[i]);
        char *tok = trimmed_or_null(v ? lp_xstrdup(v) : NULL);
        if (tok) return tok;
    }
    const char *path_env = getenv("HF_TOKEN_PATH");
    char *path;
    if (path_env && *path_env) {
        path = lp_xstrdup(path_env);
    } else {
        char *home = lp_hf_home();
        path = lp_path_join(home, "token");
        free(home);
    }
    char *tok = lp_path_exists(path) ? trimmed_or_null(lp_read_file(path, NULL)) : NULL;
    free(path);
    lp_err_clear();
    return tok;
}

/* ---------------- small helpers ---------------- */

/* Percent-encode everything but unreserved characters (and '/' when keep_slash). */
static char *url_quote(const char *s, bool keep_slash) {
    char *out = lp_xmalloc(strlen(s) * 3 + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || strchr("-._~", *p) || (keep_slash && *p == '/')) *o++ = (char)*p;
        else o += sprintf(o, "%%%02X", *p);
    }
    *o = 0;
    return out;
}

static bool is_hex(const char *s, size_t len) {
    if (strlen(s) != len) return false;
    for (size_t i = 0; i < len; i++)
        if (!isxdigit((unsigned char)s[i])) return false;
    return true;
}

/* An etag becomes a blob file name: W/ and quotes are dropped, then only [A-Za-z0-9_-]. */
static char *normalize_etag(const char *raw) {
    if (strncmp(raw, "W/", 2) == 0) raw += 2;
    size_t n = strlen(raw);
    if (n >= 2 && raw[0] == '"' && raw[n - 1] == '"') {
        raw++;
        n -= 2;
    }
    if (n == 0 || n > 128) return NULL;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)raw[i]) || raw[i] == '-' || raw[i] == '_')) return NULL;
    return strndup(raw, n);
}

static int64_t file_size_or(const char *path, int64_t fallback) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : fallback;
}

/* ---------------- HTTP ---------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct {
    CURL *curl;
    struct curl_slist *headers;
    char *endpoint;
    bool have_token;
    bool progress; /* stderr is a terminal and not quiet */
    char errbuf[CURL_ERROR_SIZE];
} hub_session;

/* Headers of the last response of a request (reset at each status line). */
typedef struct {
    char *repo_commit, *linked_etag, *etag, *location;
    int64_t linked_size, content_length;
} hub_headers;

static void headers_clear(hub_headers *h) {
    free(h->repo_commit);
    free(h->linked_etag);
    free(h->etag);
    free(h->location);
    memset(h, 0, sizeof *h);
    h->linked_size = h->content_length = -1;
}

static void set_header_str(char **slot, const char *v, size_t n) {
    free(*slot);
    *slot = strndup(v, n);
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata) {
    hub_headers *h = userdata;
    size_t len = size * nitems;
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        headers_clear(h);
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon) return len;
    size_t name_len = (size_t)(colon - line);
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t vlen = (size_t)(end - v);
#define HDR_IS(name) (name_len == strlen(name) && strncasecmp(line, name, name_len) == 0)
    if (HDR_IS("X-Repo-Commit")) set_header_str(&h->repo_commit, v, vlen);
    else if (HDR_IS("X-Linked-Etag")) set_header_str(&h->linked_etag, v, vlen);
    else if (HDR_IS("ETag")) set_header_str(&h->etag, v, vlen);
    else if (HDR_IS("Location")) set_header_str(&h->location, v, vlen);
    else if (HDR_IS("X-Linked-Size") || HDR_IS("Content-Length")) {
        char num[32];
        if (vlen == 0 || vlen >= sizeof num) return len;
        memcpy(num, v, vlen);
        num[vlen] = 0;
        char *num_end;
        long long n = strtoll(num, &num_end, 10);
        if (*num_end || n < 0) return len;
        if (HDR_IS("X-Linked-Size")) h->linked_size = n;
        else h->content_length = n;
    }
#undef HDR_IS
    return len;
}

static int session_open(hub_session *s, bool quiet) {
    memset(s, 0, sizeof *s);
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) return lp_fail("libcurl: global init failed: %s", curl_easy_strerror(curl_init_rc));
    s->curl = curl_easy_init();
    if (!s->curl) return lp_fail("libcurl: cannot create a handle");
    s->endpoint = lp_hub_endpoint();
    char *token = lp_hub_token();
    if (token) {
        char *auth = lp_xasprintf("Authorization: Bearer %s", token);
        s->headers = curl_slist_append(s->headers, auth);
        free(auth);
        free(token);
        s->have_token = true;
    }
    s->progress = !quiet && isatty(STDERR_FILENO);
    return 0;
}

static void session_close(hub_session *s) {
    if (s->curl) curl_easy_cleanup(s->curl);
    curl_slist_free_all(s->headers);
    free(s->endpoint);
    memset(s, 0, sizeof *s);
}

/* Fresh options for one request on the shared handle (connections stay pooled). The
 * Authorization header is custom, so libcurl drops it on redirects to another host
 * (the CDN gets a pre-signed URL and must not see the token). */
static void request_reset(hub_session *s, const char *url, hub_headers *h) {
    CURL *c = s->curl;
    curl_easy_reset(c);
    s->errbuf[0] = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_USERAGENT, HUB_USER_AGENT);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    /* A stalled connection fails after a minute below 1 byte/s instead of hanging. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    headers_clear(h);
}

static int network_error(const hub_session *s, const char *method, const char *url, CURLcode rc) {
    return lp_fail("%s %s: network error: %s", method, url, s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc));
}

/* not_found says what a 404 means for this URL ("repository or revision", "file"). */
static int status_error(const hub_session *s, const char *what, const char *url, long status, const char *not_found) {
    switch (status) {
    case 401:
        return lp_fail("%s: %s: HTTP 401 Unauthorized: %s", what, url,
                       s->have_token ? "the access token was rejected; check HF_TOKEN"
                                     : "the repository is private or gated; set HF_TOKEN to a Hugging Face access token");
    case 403:
        return lp_fail("%s: %s: HTTP 403 Forbidden: no access; accept the model's terms on its hub page and set "
                       "HF_TOKEN to a token of that account",
                       what, url);
    case 404:
        return lp_fail("%s: %s: HTTP 404: %s not found%s", what, url, not_found,
                       s->have_token ? "" : " (a private repository also answers 404 without HF_TOKEN)");
    default:
        return lp_fail("%s: %s: unexpected HTTP status %ld", what, url, status);
    }
}

typedef struct {
    char *data;
    size_t len;
    bool too_big;
} mem_sink;

static size_t on_body_to_mem(char *ptr, size_t size, size_t nmemb, void *userdata) {
    mem_sink *m = userdata;
    size_t n = size * nmemb;
    if (m->len + n > HUB_MAX_JSON_BYTES) {
        m->too_big = true;
        return 0;
    }
    m->data = lp_xrealloc(m->data, m->len + n + 1);
    memcpy(m->data + m->len, ptr, n);
    m->len += n;
    m->data[m->len] = 0;
    return n;
}

/* GET a JSON document (redirects followed). */
static json_t *get_json(hub_session *s, const char *what, const char *url, const char *not_found) {
    hub_headers h = {0};
    mem_sink body = {0};
    request_reset(s, url, &h);
    curl_easy_setopt(s->curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(s->curl, CURLOPT_MAXREDIRS, (long)HUB_MAX_REDIRECTS);
    curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_body_to_mem);
    curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &body);
    CURLcode rc = curl_easy_perform(s->curl);
    long status = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    headers_clear(&h);
    json_t *root = NULL;
    if (body.too_big) lp_fail("%s: %s: response larger than %u bytes", what, url, HUB_MAX_JSON_BYTES);
    else if (rc != CURLE_OK) network_error(s, "GET", url, rc);
    else if (status != 200) status_error(s, what, url, status, not_found);
    else {
        json_error_t jerr;
        root = json_loadb(body.data ? body.data : "", body.len, 0, &jerr);
        if (!root) lp_fail("%s: %s: invalid JSON: %s", what, url, jerr.text);
    }
    free(body.data);
    return root;
}

typedef struct {
    char *etag;     /* normalized: blob name */
    int64_t size;   /* -1 when the server did not say */
} file_meta;

/* HEAD the resolve URL the way huggingface_hub does: follow only relative redirects (a
 * renamed repo), stop at the absolute one to the CDN, whose headers no longer carry the
 * hub's X-Linked-Etag / X-Linked-Size. */
static int head_file(hub_session *s, const char *what, const char *url, const char *commit, file_meta *meta) {
    memset(meta, 0, sizeof *meta);
    struct curl_slist *hdrs = NULL;
    for (struct curl_slist *p = s->headers; p; p = p->next) hdrs = curl_slist_append(hdrs, p->data);
    hdrs = curl_slist_append(hdrs, "Accept-Encoding: identity");
    hub_headers h = {0};
    char *cur = lp_xstrdup(url);
    int rc = -1;
    for (int hop = 0;; hop++) {
        request_reset(s, cur, &h);
        curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(s->curl, CURLOPT_NOBODY, 1L);
        CURLcode crc = curl_easy_perform(s->curl);
        long status = 0;
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
        if (crc != CURLE_OK) {
            network_error(s, "HEAD", cur, crc);
            break;
        }
        bool redirect = status >= 300 && status < 400 && h.location;
        char *next = NULL;
        if (redirect && h.location[0] == '/' && h.location[1] != '/') {
            curl_easy_getinfo(s->curl, CURLINFO_REDIRECT_URL, &next);
            if (hop >= HUB_MAX_REDIRECTS || !next) {
                lp_fail("%s: %s: too many or unusable redirects", what, url);
                break;
            }
            next = lp_xstrdup(next); /* owned by the handle until the next request */
            free(cur);
            cur = next;
            continue;
        }
        if (!redirect && status != 200) {
            status_error(s, what, cur, status, "file");
            break;
        }
        const char *raw_etag = h.linked_etag ? h.linked_etag : h.etag;
        if (!raw_etag || !(meta->etag = normalize_etag(raw_etag))) {
            lp_fail("%s: %s: no usable ETag in the response (not a Hugging Face hub endpoint?)", what, cur);
            break;
        }
        if (h.repo_commit && strcmp(h.repo_commit, commit) != 0) {
            lp_fail("%s: %s: X-Repo-Commit %s differs from the listed commit %s", what, cur, h.repo_commit, commit);
            break;
        }
        meta->size = h.linked_size >= 0 ? h.linked_size : (redirect ? -1 : h.content_length);
        rc = 0;
        break;
    }
    headers_clear(&h);
    free(cur);
    curl_slist_free_all(hdrs);
    if (rc != 0) {
        free(meta->etag);
        meta->etag = NULL;
    }
    return rc;
}

/* ---------------- progress ---------------- */

typedef struct {
    const char *name;
    int64_t resumed; /* bytes already on disk before this request */
    int64_t total;
    double start, last_print;
    bool printed;
} progress_line;

static void format_eta(char *buf, size_t n, double seconds) {
    if (seconds < 0 || seconds > 360000) {
        snprintf(buf, n, "--:--");
        return;
    }
    int s = (int)seconds;
    if (s >= 3600) snprintf(buf, n, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
    else snprintf(buf, n, "%d:%02d", s / 60, s % 60);
}

static void progress_print(progress_line *p, int64_t done_now) {
    double t = lp_now(), dt = t - p->start;
    double rate = dt > 0 ? (double)done_now / dt : 0; /* bytes of this request only */
    int64_t have = p->resumed + done_now;
    char eta[32];
    format_eta(eta, sizeof eta, p->total > 0 && rate > 0 ? (double)(p->total - have) / rate : -1);
    if (p->total > 0)
        fprintf(stderr, "\r\033[K  %-40.40s %8.1f / %.1f MB  %7.1f MB/s  ETA %s", p->name, have / 1e6, p->total / 1e6,
                rate / 1e6, eta);
    else
        fprintf(stderr, "\r\033[K  %-40.40s %8.1f MB  %7.1f MB/s", p->name, have / 1e6, rate / 1e6);
    p->last_print = t;
    p->printed = true;
}

static int on_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    progress_line *p = clientp;
    if (lp_now() - p->last_print >= 0.25) progress_print(p, (int64_t)dlnow);
    return 0;
}

/* ---------------- blob download ---------------- */

typedef struct {
    FILE *fp;
    const char *path;
    int64_t have;   /* bytes in the .incomplete file */
    int64_t expect; /* -1: unknown */
    CURL *curl;
    bool too_big, write_failed;
} blob_sink;

static size_t on_body_to_blob(char *ptr, size_t size, size_t nmemb, void *userdata) {
    blob_sink *b = userdata;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(b->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) return n; /* an error page: status_error reports it */
    if (b->expect >= 0 && b->have + (int64_t)n > b->expect) {
        b->too_big = true;
        return 0;
    }
    if (fwrite(ptr, 1, n, b->fp) != n) {
        b->write_failed = true;
        return 0;
    }
    b->have += (int64_t)n;
    return n;
}

/* One GET into the .incomplete file, resuming from its current size. */
static int get_into_incomplete(hub_session *s, const char *file, const char *what, const char *url,
                               const char *tmp_path, int64_t expect, bool *range_refused) {
    *range_refused = false;
    int64_t have = file_size_or(tmp_path, 0);
    FILE *fp = fopen(tmp_path, "ab");
    if (!fp) return lp_fail("%s: cannot open: %s", tmp_path, strerror(errno));
    blob_sink sink = {.fp = fp, .path = tmp_path, .have = have, .expect = expect, .curl = s->curl};
    progress_line prog = {.name = file, .resumed = have, .total = expect, .start = lp_now()};
    hub_headers h = {0};
    request_reset(s, url, &h);
    curl_easy_setopt(s->curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(s->curl, CURLOPT_MAXREDIRS, (long)HUB_MAX_REDIRECTS);
    curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_body_to_blob);
    curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &sink);
    if (have > 0) curl_easy_setopt(s->curl, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)have);
    if (s->progress) {
        curl_easy_setopt(s->curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(s->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(s->curl, CURLOPT_XFERINFODATA, &prog);
    }
    CURLcode rc = curl_easy_perform(s->curl);
    long status = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    headers_clear(&h);
    if (fclose(fp) != 0) sink.write_failed = true;
    if (s->progress) {
        progress_print(&prog, sink.have - have);
        fputc('\n', stderr);
    }
    if (sink.write_failed) return lp_fail("%s: write failed: %s", tmp_path, strerror(errno));
    if (sink.too_big) {
        unlink(tmp_path);
        return lp_fail("%s: %s: server sent more than the announced %lld bytes", what, url, (long long)expect);
    }
    if (rc == CURLE_RANGE_ERROR) {
        *range_refused = true;
        return lp_fail("%s: %s: server refused to resume", what, url);
    }
    if (rc != CURLE_OK) {
        const char *effective = NULL; /* the CDN URL after redirects: where it broke */
        curl_easy_getinfo(s->curl, CURLINFO_EFFECTIVE_URL, &effective);
        return lp_fail("%s: GET %s: transfer failed after %lld of %lld bytes (%s); the part is kept in %s and the "
                       "next run resumes it",
                       what, effective ? effective : url, (long long)sink.have, (long long)expect,
                       s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc), tmp_path);
    }
    if (status != 200 && status != 206) return status_error(s, what, url, status, "file");
    if (expect >= 0 && sink.have != expect)
        return lp_fail("%s: %s: truncated download: %lld of %lld bytes", what, url, (long long)sink.have,
                       (long long)expect);
    return 0;
}

/* LFS files are named by their sha256: check the bytes before giving them that name. */
static int verify_blob(const char *what, const char *tmp_path, const char *etag) {
    if (!is_hex(etag, 64)) return 0;
    char hex[65];
    if (lp_sha256_file(tmp_path, hex) != 0) return lp_fail_prefix("%s", what);
    if (strcasecmp(hex, etag) == 0) return 0;
    unlink(tmp_path);
    return lp_fail("%s: sha256 mismatch: downloaded %s, hub says %s (corrupt transfer; partial file removed)", what,
                   hex, etag);
}

/* ---------------- one repository ---------------- */

typedef struct {
    hub_session s;
    const char *repo_id;
    char *repo_dir, *blobs_dir, *locks_dir, *snap_dir;
    char *commit;
    char **siblings; /* top-level files of the commit */
    int n_siblings;
    int fetched;
} hub_repo;

static void repo_close(hub_repo *r) {
    session_close(&r->s);
    free(r->repo_dir);
    free(r->blobs_dir);
    free(r->locks_dir);
    free(r->snap_dir);
    free(r->commit);
    lp_source_free_names(r->siblings, r->n_siblings);
    memset(r, 0, sizeof *r);
}

static bool repo_has(const hub_repo *r, const char *name) {
    for (int i = 0; i < r->n_siblings; i++)
        if (strcmp(r->siblings[i], name) == 0) return true;
    return false;
}

/* GET /api/models/{repo}/revision/{rev}: the commit sha and the file list. */
static int fetch_listing(hub_repo *r, const char *revision) {
    char *rev_q = url_quote(revision, false);
    char *url = lp_xasprintf("%s/api/models/%s/revision/%s", r->s.endpoint, r->repo_id, rev_q);
    char *what = lp_xasprintf("%s@%s", r->repo_id, revision);
    free(rev_q);
    json_t *root = get_json(&r->s, what, url, "repository or revision");
    int rc = -1;
    if (root) {
        const char *sha = json_string_value(json_object_get(root, "sha"));
        json_t *siblings = json_object_get(root, "siblings");
        if (!sha || !is_hex(sha, 40)) {
            lp_fail("%s: %s: 'sha': missing or not a 40-hex commit", what, url);
        } else if (!json_is_array(siblings)) {
            lp_fail("%s: %s: 'siblings': missing or not an array", what, url);
        } else {
            r->commit = lp_xstrdup(sha);
            r->siblings = lp_xmalloc((json_array_size(siblings) + 1) * sizeof *r->siblings);
            size_t i;
            json_t *sib;
            json_array_foreach(siblings, i, sib) {
                const char *name = json_string_value(json_object_get(sib, "rfilename"));
                if (lp_source_plain_name(name)) r->siblings[r->n_siblings++] = lp_xstrdup(name);
            }
            rc = 0;
        }
        json_decref(root);
    }
    free(what);
    free(url);
    return rc;
}

/* snapshots/<commit>/<file> -> ../../blobs/<etag>, replaced atomically (the link may exist
 * dangling). Without symlink support the blob is copied, like huggingface_hub does. */
static int link_snapshot(const hub_repo *r, const char *file, const char *etag) {
    char *link_path = lp_path_join(r->snap_dir, file);
    char *blob = lp_path_join(r->blobs_dir, etag);
    char *target = lp_xasprintf("../../blobs/%s", etag);
    char *tmp = lp_xasprintf("%s.tmp.%d", link_path, (int)getpid());
    int rc = 0;
    unlink(tmp);
    if (symlink(target, tmp) != 0) {
        if (errno == EPERM || errno == ENOSYS || errno == EOPNOTSUPP) rc = lp_copy_file(blob, link_path);
        else rc = lp_fail("%s: cannot create symlink: %s", link_path, strerror(errno));
    } else if (rename(tmp, link_path) != 0) {
        rc = lp_fail("%s: cannot rename symlink into place: %s", link_path, strerror(errno));
        unlink(tmp);
    }
    free(link_path);
    free(blob);
    free(target);
    free(tmp);
    return rc;
}

/* Serialize processes fetching the same blob, like huggingface_hub's .locks/<repo>/<etag>.lock. */
static int lock_blob(const hub_repo *r, const char *etag) {
    char *path = lp_xasprintf("%s/%s.lock", r->locks_dir, etag);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        lp_fail("%s: cannot open lock file: %s", path, strerror(errno));
    } else if (flock(fd, LOCK_EX) != 0) {
        lp_fail("%s: cannot lock: %s", path, strerror(errno));
        close(fd);
        fd = -1;
    }
    free(path);
    return fd;
}

/* Fill <blob>.incomplete (resuming what an earlier run left), verify it and rename it to
 * <blob>. A part longer than the announced size cannot be a prefix and is dropped; one of
 * exactly that size only missed its rename. A server that refuses ranges gets one fresh try. */
static int download_blob(hub_repo *r, const char *file, const char *what, const char *url, const file_meta *meta,
                         const char *blob) {
    char *tmp = lp_xasprintf("%s.incomplete", blob);
    if (meta->size >= 0 && file_size_or(tmp, 0) > meta->size) unlink(tmp);
    int rc = 0;
    if (meta->size < 0 || file_size_or(tmp, -1) != meta->size) {
        bool range_refused = false;
        rc = get_into_incomplete(&r->s, file, what, url, tmp, meta->size, &range_refused);
        if (rc != 0 && range_refused) {
            unlink(tmp);
            rc = get_into_incomplete(&r->s, file, what, url, tmp, meta->size, &range_refused);
        }
    }
    if (rc == 0) rc = verify_blob(what, tmp, meta->etag);
    if (rc == 0 && rename(tmp, blob) != 0) rc = lp_fail("%s: cannot rename into place: %s", blob, strerror(errno));
    free(tmp);
    return rc;
}

/* Make blobs/<etag> exist, unless it already does (another snapshot or process made it). */
static int ensure_blob(hub_repo *r, const char *file, const char *what, const char *url, const file_meta *meta) {
    int lock = lock_blob(r, meta->etag);
    if (lock < 0) return -1;
    char *blob = lp_path_join(r->blobs_dir, meta->etag);
    int64_t cached = file_size_or(blob, -1);
    int rc = 0;
    if (cached < 0 || (meta->size >= 0 && cached != meta->size)) {
        rc = download_blob(r, file, what, url, meta, blob);
        if (rc == 0) r->fetched++;
    }
    close(lock);
    free(blob);
    return rc;
}

/* One file of the snapshot: skipped when already there, else metadata, blob, link. */
static int fetch_file(hub_repo *r, const char *file) {
    char *present = lp_path_join(r->snap_dir, file);
    bool have = file_size_or(present, -1) >= 0;
    free(present);
    if (have) return 0;
    char *file_q = url_quote(file, true);
    char *url = lp_xasprintf("%s/%s/resolve/%s/%s", r->s.endpoint, r->repo_id, r->commit, file_q);
    char *what = lp_xasprintf("%s: %s", r->repo_id, file);
    free(file_q);
    file_meta meta;
    int rc = head_file(&r->s, what, url, r->commit, &meta);
    if (rc == 0) rc = ensure_blob(r, file, what, url, &meta);
    if (rc == 0) rc = link_snapshot(r, file, meta.etag);
    free(meta.etag);
    free(what);
    free(url);
    return rc;
}

/* Which weight files to fetch: the shards the index names, else model.safetensors, else
 * every top-level *.safetensors. Other formats (.bin, .gguf, original/) are never fetched. */
static int plan_weights(const hub_repo *r, char ***names_out) {
    *names_out = NULL;
    if (repo_has(r, HUB_INDEX_NAME)) {
        char *index = lp_path_join(r->snap_dir, HUB_INDEX_NAME);
        char **shards;
        int n = lp_source_index_shards(index, &shards);
        free(index);
        for (int i = 0; i < n; i++) {
            if (repo_has(r, shards[i])) continue;
            lp_fail("%s@%s: %s names shard %s, which the repository does not have", r->repo_id, r->commit,
                    HUB_INDEX_NAME, shards[i]);
            lp_source_free_names(shards, n);
            return -1;
        }
        *names_out = shards;
        return n;
    }
    char **names = lp_xmalloc(((size_t)r->n_siblings + 1) * sizeof *names);
    int n = 0;
    bool single = repo_has(r, "model.safetensors");
    for (int i = 0; i < r->n_siblings; i++) {
        const char *f = r->siblings[i];
        size_t len = strlen(f);
        bool st = len > 12 && strcmp(f + len - 12, ".safetensors") == 0;
        if (single ? strcmp(f, "model.safetensors") == 0 : st) names[n++] = lp_xstrdup(f);
    }
    if (n == 0) {
        free(names);
        return lp_fail("%s@%s: no safetensors weights in the repository (only safetensors checkpoints are supported)",
                       r->repo_id, r->commit);
    }
    *names_out = names;
    return n;
}

static int fetch_all(hub_repo *r) {
    if (!repo_has(r, "config.json"))
        return lp_fail("%s@%s: the repository has no config.json (not a transformers model)", r->repo_id, r->commit);
    for (size_t i = 0; i < HUB_N_META_FILES; i++)
        if (repo_has(r, hub_meta_files[i]) && fetch_file(r, hub_meta_files[i]) != 0) return -1;
    char **weights;
    int n = plan_weights(r, &weights);
    if (n < 0) return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) rc = fetch_file(r, weights[i]);
    lp_source_free_names(weights, n);
    return rc;
}

/* refs/<revision> holds the commit (no newline), written only for branch/tag names. */
static int write_ref(const hub_repo *r, const char *revision) {
    if (strcmp(revision, r->commit) == 0) return 0;
    char *refs = lp_path_join(r->repo_dir, "refs");
    char *ref_path = lp_path_join(refs, revision);
    char *parent = lp_xstrdup(ref_path);
    *strrchr(parent, '/') = 0;
    int rc = lp_mkdir_p(parent);
    if (rc == 0) rc = lp_write_file_atomic(ref_path, r->commit, strlen(r->commit));
    free(refs);
    free(ref_path);
    free(parent);
    return rc;
}

static int repo_dirs(hub_repo *r, const char *cache_dir) {
    char *folder = lp_hf_repo_folder(r->repo_id);
    r->repo_dir = lp_path_join(cache_dir, folder);
    r->blobs_dir = lp_path_join(r->repo_dir, "blobs");
    r->locks_dir = lp_xasprintf("%s/.locks/%s", cache_dir, folder);
    r->snap_dir = lp_xasprintf("%s/snapshots/%s", r->repo_dir, r->commit);
    free(folder);
    if (lp_mkdir_p(r->blobs_dir) != 0 || lp_mkdir_p(r->locks_dir) != 0 || lp_mkdir_p(r->snap_dir) != 0) return -1;
    return 0;
}

int lp_hub_download(const char *repo_id, const char *revision, const char *cache_dir, bool quiet,
                    char **commit_out, int *fetched) {
    *commit_out = NULL;
    *fetched = 0;
    hub_repo r = {.repo_id = repo_id};
    int rc = session_open(&r.s, quiet);
    if (rc == 0) rc = fetch_listing(&r, revision);
    if (rc == 0) rc = repo_dirs(&r, cache_dir);
    if (rc == 0 && r.s.progress)
        fprintf(stderr, "downloading %s@%s (commit %.12s) from %s\n", repo_id, revision, r.commit, r.s.endpoint);
    if (rc == 0) rc = fetch_all(&r);
    if (rc == 0) rc = write_ref(&r, revision);
    *fetched = r.fetched;
    if (rc == 0) *commit_out = lp_xstrdup(r.commit);
    repo_close(&r);
    return rc;
}
