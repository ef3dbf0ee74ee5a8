/* test_source.c — model sources: local directories, Hugging Face cache resolution (env
 * precedence, refs, revisions, incomplete snapshots) and downloads from a fake hub that
 * runs in this process on 127.0.0.1 (libmicrohttpd), serving the tiny-qwen3 fixture the
 * way huggingface.co does: API listing, resolve URLs with X-Repo-Commit / ETag /
 * X-Linked-*, a CDN redirect for LFS files, Range requests and bearer-token checks. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include "core/err.h"
#include "core/fileio.h"
#include "pipeline/source.h"

#define FIXTURE LP_FIXTURES_DIR "/models/tiny-qwen3"
#define REPO "lp-test/tiny-qwen3"
#define REPO_FOLDER "models--lp-test--tiny-qwen3"
#define COMMIT "0123456789abcdef0123456789abcdef01234567"
#define COMMIT2 "fedcba9876543210fedcba9876543210fedcba98"
#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"
#define SHARD1_SHA256 "79fdf2b66ed6c65ccf9e1625f2b968a2b5978dcc6c2ba8b8befd6a6621301267"
#define SHARD2_SHA256 "b7fe85db7d4f8b2f3f663a20761b4ce578b926d2d2892d911151dc78207d51c2"
#define SHARD1_SIZE 11939680

/* The fixture as a hub repo: small files carry their git blob sha1 as ETag, LFS files
 * their sha256 (sha256sum of the fixture, so verification is checked independently). */
typedef struct {
    const char *name, *etag;
    bool lfs, needed;
} hub_file;

static const hub_file hub_files[] = {
    {"chat_template.jinja", "699ff8df401fe4788525e9c1f9b86a99eadd6230", false, true},
    {"config.json", "713994f3273a5b2388c7d7320dd541883cb1267b", false, true},
    {"generation_config.json", "3c53974d7553910a25dc83c49499300f6f64b06d", false, true},
    {"model.safetensors.index.json", "adb8e62943719d175749dfb996bb4fb77be8fa2c", false, true},
    {"tokenizer.json", "5e1fa23373f3c799acef88697d5d01d1d682213b", false, true},
    {"tokenizer_config.json", "34b7199861a6aee6faeb78a1a306231e63dfba58", false, true},
    {"training.json", "2c23aa682221c239c452cf00c8a03d0a50abdbba", false, false},
    {SHARD1, SHARD1_SHA256, true, true},
    {SHARD2, SHARD2_SHA256, true, true},
};
#define N_HUB_FILES (sizeof hub_files / sizeof hub_files[0])

/* ---------------- fake hub ---------------- */

#define MAX_LOG 256
typedef struct {
    char method[8], url[160], range[48];
    bool auth;
} req_entry;

typedef struct {
    struct MHD_Daemon *daemon;
    int port;
    pthread_mutex_t mu;
    int n_requests;
    req_entry log[MAX_LOG];
    const char *require_token; /* NULL: public repo */
    bool truncate_lfs;         /* the CDN closes the connection halfway */
    bool corrupt_lfs;          /* the CDN flips one byte */
} fake_hub;

static const hub_file *find_hub_file(const char *name, bool by_etag) {
    for (size_t i = 0; i < N_HUB_FILES; i++)
        if (strcmp(by_etag ? hub_files[i].etag : hub_files[i].name, name) == 0) return &hub_files[i];
    return NULL;
}

static char *fixture_bytes(const char *name, size_t *len) {
    char *path = lp_path_join(FIXTURE, name);
    char *data = lp_read_file(path, len);
    free(path);
    return data;
}

static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r) {
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    return queue(c, status, r);
}

typedef struct {
    char *data;
    size_t stop; /* bytes sent before the connection is dropped */
} truncating_body;

static ssize_t truncating_read(void *cls, uint64_t pos, char *buf, size_t max) {
    truncating_body *t = cls;
    if (pos >= t->stop) return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = t->stop - (size_t)pos < max ? t->stop - (size_t)pos : max;
    memcpy(buf, t->data + pos, n);
    return (ssize_t)n;
}

static void truncating_free(void *cls) {
    truncating_body *t = cls;
    free(t->data);
    free(t);
}

/* GET /cdn/<etag>: content with Range support (206 + Content-Range), like a CDN. */
static enum MHD_Result serve_cdn(fake_hub *hub, struct MHD_Connection *c, const char *etag, const char *range) {
    const hub_file *f = find_hub_file(etag, true);
    if (!f || !f->lfs) return reply_text(c, 404, "{\"error\":\"no such object\"}");
    size_t len;
    char *data = fixture_bytes(f->name, &len);
    if (!data) return reply_text(c, 500, "{}");
    if (hub->corrupt_lfs) data[len / 3] ^= 0x5a;
    unsigned long long from = 0;
    if (range && sscanf(range, "bytes=%llu-", &from) != 1) from = 0;
    if (from > len) {
        free(data);
        return reply_text(c, 416, "{}");
    }
    size_t n = len - (size_t)from;
    struct MHD_Response *r;
    if (hub->truncate_lfs) {
        truncating_body *t = lp_xmalloc(sizeof *t);
        t->data = lp_xmalloc(n ? n : 1);
        memcpy(t->data, data + from, n);
        t->stop = n / 2;
        r = MHD_create_response_from_callback(n, 65536, truncating_read, t, truncating_free);
    } else {
        r = MHD_create_response_from_buffer(n, data + from, MHD_RESPMEM_MUST_COPY);
    }
    free(data);
    unsigned status = 200;
    if (range) {
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %llu-%zu/%zu", from, len - 1, len);
        MHD_add_response_header(r, "Content-Range", cr);
        status = 206;
    }
    return queue(c, status, r);
}

static char *listing_json(void) {
    size_t cap = 4096, off = 0;
    char *j = lp_xmalloc(cap);
    off += (size_t)snprintf(j + off, cap - off, "{\"id\":\"%s\",\"sha\":\"%s\",\"siblings\":[", REPO, COMMIT);
    static const char *const extra[] = {".gitattributes", "README.md", "original/model.safetensors"};
    for (size_t i = 0; i < 3; i++) off += (size_t)snprintf(j + off, cap - off, "{\"rfilename\":\"%s\"},", extra[i]);
    for (size_t i = 0; i < N_HUB_FILES; i++)
        off += (size_t)snprintf(j + off, cap - off, "{\"rfilename\":\"%s\"}%s", hub_files[i].name,
                                i + 1 < N_HUB_FILES ? "," : "]}");
    return j;
}

/* /<repo>/resolve/<rev>/<file>: small files inline with their ETag, LFS files as a 302 to
 * the CDN carrying X-Linked-Etag / X-Linked-Size, as huggingface.co answers. */
static enum MHD_Result serve_resolve(fake_hub *hub, struct MHD_Connection *c, const char *name) {
    const hub_file *f = find_hub_file(name, false);
    if (!f) return reply_text(c, 404, "{\"error\":\"Entry not found\"}");
    size_t len;
    char *data = fixture_bytes(f->name, &len);
    if (!data) return reply_text(c, 500, "{}");
    char size[32], quoted[80];
    snprintf(size, sizeof size, "%zu", len);
    struct MHD_Response *r;
    unsigned status;
    if (f->lfs) {
        r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        char loc[160];
        snprintf(loc, sizeof loc, "http://127.0.0.1:%d/cdn/%s", hub->port, f->etag);
        MHD_add_response_header(r, "Location", loc);
        snprintf(quoted, sizeof quoted, "\"%s\"", f->etag);
        MHD_add_response_header(r, "X-Linked-Etag", quoted);
        MHD_add_response_header(r, "X-Linked-Size", size);
        MHD_add_response_header(r, "ETag", "\"0000000000000000000000000000000000000000\""); /* the pointer's */
        status = 302;
    } else {
        r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_COPY);
        /* tokenizer.json gets a weak ETag: W/ must be stripped. */
        snprintf(quoted, sizeof quoted, "%s\"%s\"", strcmp(name, "tokenizer.json") == 0 ? "W/" : "", f->etag);
        MHD_add_response_header(r, "ETag", quoted);
        status = 200;
    }
    free(data);
    MHD_add_response_header(r, "X-Repo-Commit", COMMIT);
    return queue(c, status, r);
}

static bool authorized(const fake_hub *hub, const char *auth) {
    if (!hub->require_token) return true;
    char want[128];
    snprintf(want, sizeof want, "Bearer %s", hub->require_token);
    return auth && strcmp(auth, want) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    fake_hub *hub = cls;
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    pthread_mutex_lock(&hub->mu);
    if (hub->n_requests < MAX_LOG) {
        req_entry *e = &hub->log[hub->n_requests];
        snprintf(e->method, sizeof e->method, "%s", method);
        snprintf(e->url, sizeof e->url, "%s", url);
        snprintf(e->range, sizeof e->range, "%s", range ? range : "");
        e->auth = auth != NULL;
    }
    hub->n_requests++;
    pthread_mutex_unlock(&hub->mu);

    static const char api_prefix[] = "/api/models/" REPO "/revision/";
    static const char resolve_prefix[] = "/" REPO "/resolve/";
    if (strncmp(url, "/cdn/", 5) == 0) return serve_cdn(hub, c, url + 5, range);
    if (!authorized(hub, auth)) return reply_text(c, 401, "{\"error\":\"Invalid credentials in Authorization header\"}");
    const char *renamed = strstr(url, "/lp-test/old-name/");
    if (renamed) { /* a renamed repo answers with a relative redirect to its new name */
        char loc[256];
        snprintf(loc, sizeof loc, "%.*s/" REPO "/%s", (int)(renamed - url), url, renamed + strlen("/lp-test/old-name/"));
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Location", loc);
        return queue(c, 307, r);
    }
    const char *rest;
    bool api = strncmp(url, api_prefix, strlen(api_prefix)) == 0;
    if (api) rest = url + strlen(api_prefix);
    else if (strncmp(url, resolve_prefix, strlen(resolve_prefix)) == 0) rest = url + strlen(resolve_prefix);
    else return reply_text(c, 404, "{\"error\":\"Repository not found\"}");
    size_t rev_len = strcspn(rest, "/");
    bool rev_ok = (rev_len == 4 && strncmp(rest, "main", 4) == 0) || (rev_len == 40 && strncmp(rest, COMMIT, 40) == 0);
    if (!rev_ok || (api && rest[rev_len])) return reply_text(c, 404, "{\"error\":\"Revision not found\"}");
    if (api) {
        char *json = listing_json();
        enum MHD_Result rc = reply_text(c, 200, json);
        free(json);
        return rc;
    }
    return rest[rev_len] == '/' ? serve_resolve(hub, c, rest + rev_len + 1) : reply_text(c, 404, "{}");
}

static void hub_start(fake_hub *hub) {
    memset(hub, 0, sizeof *hub);
    pthread_mutex_init(&hub->mu, NULL);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    hub->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, hub,
                                   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_END);
    assert_non_null(hub->daemon);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(hub->daemon, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    hub->port = info->port;
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d/", hub->port); /* trailing '/' is stripped */
    setenv("HF_ENDPOINT", endpoint, 1);
}

static void hub_stop(fake_hub *hub) {
    MHD_stop_daemon(hub->daemon);
    pthread_mutex_destroy(&hub->mu);
}

static int hub_count(fake_hub *hub) {
    pthread_mutex_lock(&hub->mu);
    int n = hub->n_requests;
    pthread_mutex_unlock(&hub->mu);
    return n;
}

/* Requests whose URL contains needle (optionally with that method). */
static int hub_count_url(fake_hub *hub, const char *method, const char *needle) {
    int n = 0;
    pthread_mutex_lock(&hub->mu);
    for (int i = 0; i < hub->n_requests && i < MAX_LOG; i++)
        if (strstr(hub->log[i].url, needle) && (!method || strcmp(hub->log[i].method, method) == 0)) n++;
    pthread_mutex_unlock(&hub->mu);
    return n;
}

static const req_entry *hub_find(fake_hub *hub, const char *method, const char *needle) {
    for (int i = 0; i < hub->n_requests && i < MAX_LOG; i++)
        if (strstr(hub->log[i].url, needle) && strcmp(hub->log[i].method, method) == 0) return &hub->log[i];
    return NULL;
}

/* ---------------- per-test environment ---------------- */

typedef struct {
    char root[64];
    char *cache; /* root/hub, exported as HF_HUB_CACHE */
    char *saved_home;
} test_env;

static const char *const hf_vars[] = {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME",
                                      "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE",
                                      "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"};

static int setup(void **state) {
    test_env *env = lp_xcalloc(1, sizeof *env);
    snprintf(env->root, sizeof env->root, "/tmp/lp_source_XXXXXX");
    if (!mkdtemp(env->root)) return -1;
    for (size_t i = 0; i < sizeof hf_vars / sizeof hf_vars[0]; i++) unsetenv(hf_vars[i]);
    const char *home = getenv("HOME");
    env->saved_home = home ? lp_xstrdup(home) : NULL;
    env->cache = lp_path_join(env->root, "hub");
    setenv("HF_HUB_CACHE", env->cache, 1);
    char *hf_home = lp_path_join(env->root, "hf_home"); /* no token file there */
    setenv("HF_HOME", hf_home, 1);
    free(hf_home);
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    *state = env;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static int teardown(void **state) {
    test_env *env = *state;
    nftw(env->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (env->saved_home) setenv("HOME", env->saved_home, 1);
    free(env->saved_home);
    free(env->cache);
    free(env);
    return 0;
}

static char *repo_path(const test_env *env, const char *rel) {
    return lp_xasprintf("%s/%s/%s", env->cache, REPO_FOLDER, rel);
}

static void write_text(const char *path, const char *text) {
    char *dir = lp_xstrdup(path);
    *strrchr(dir, '/') = 0;
    assert_int_equal(lp_mkdir_p(dir), 0);
    free(dir);
    assert_int_equal(lp_write_file_atomic(path, text, strlen(text)), 0);
}

/* A hub-style cache entry built by hand: blobs are symlinks to the fixture files (the
 * cache only needs them to resolve), snapshot entries relative links to the blobs. */
static void make_snapshot(const char *cache, const char *commit, bool with_shard2) {
    char *snap = lp_xasprintf("%s/%s/snapshots/%s", cache, REPO_FOLDER, commit);
    char *blobs = lp_xasprintf("%s/%s/blobs", cache, REPO_FOLDER);
    assert_int_equal(lp_mkdir_p(snap), 0);
    assert_int_equal(lp_mkdir_p(blobs), 0);
    for (size_t i = 0; i < N_HUB_FILES; i++) {
        const hub_file *f = &hub_files[i];
        if (!f->needed || (!with_shard2 && strcmp(f->name, SHARD2) == 0)) continue;
        char *blob = lp_path_join(blobs, f->etag), *src = lp_path_join(FIXTURE, f->name);
        char *link = lp_path_join(snap, f->name), *target = lp_xasprintf("../../blobs/%s", f->etag);
        if (!lp_path_exists(blob)) assert_int_equal(symlink(src, blob), 0);
        assert_int_equal(symlink(target, link), 0);
        free(blob);
        free(src);
        free(link);
        free(target);
    }
    free(snap);
    free(blobs);
}

static void write_ref(const char *cache, const char *name, const char *commit) {
    char *path = lp_xasprintf("%s/%s/refs/%s", cache, REPO_FOLDER, name);
    write_text(path, commit);
    free(path);
}

static void assert_err_contains(const char *needle) {
    if (!strstr(lp_errmsg(), needle)) fail_msg("error \"%s\" lacks \"%s\"", lp_errmsg(), needle);
}

static void assert_same_file(const char *path, const char *fixture_name) {
    size_t a_len, b_len;
    char *a = lp_read_file(path, &a_len), *b = fixture_bytes(fixture_name, &b_len);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a_len, b_len);
    assert_memory_equal(a, b, a_len);
    free(a);
    free(b);
}

/* ---------------- local directories and spec syntax ---------------- */

static void test_local_directory(void **state) {
    lp_model_source src;
    assert_int_equal(lp_source_resolve(FIXTURE, &src, NULL), 0);
    assert_string_equal(src.dir, FIXTURE);
    assert_null(src.repo_id);
    assert_null(src.commit);
    assert_false(src.downloaded);
    lp_source_free(&src);

    /* A directory without config.json is not silently treated as a repo id. */
    test_env *env = *state;
    assert_int_equal(lp_source_resolve(env->root, &src, NULL), -1);
    assert_err_contains("config.json");
    assert_null(src.dir);
}

static void test_bad_specs(void **state) {
    static const char *const bad[] = {"", "a/b/c", "../nope", "org/na--me", "org/-name", "org/name@",
                                      "org/name@../../x", "org/name@a//b", "org name/x"};
    setenv("HF_HUB_OFFLINE", "1", 1);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lp_model_source src;
        lp_err_clear();
        if (lp_source_resolve(bad[i], &src, NULL) != -1) fail_msg("spec '%s' was accepted", bad[i]);
        assert_true(strlen(lp_errmsg()) > 0);
    }
    test_env *env = *state;
    assert_false(lp_path_exists(env->cache)); /* nothing was created */
}

/* ---------------- cache location and resolution ---------------- */

static void expect_cache_dir(const char *want) {
    char *dir = lp_hf_cache_dir();
    assert_string_equal(dir, want);
    free(dir);
}

static void test_cache_dir_precedence(void **state) {
    setenv("HF_HUB_CACHE", "/a/hub_cache", 1);
    setenv("HUGGINGFACE_HUB_CACHE", "/b/legacy", 1);
    setenv("HF_HOME", "/c/hf", 1);
    setenv("XDG_CACHE_HOME", "/d/xdg", 1);
    setenv("HOME", "/e/home", 1);
    expect_cache_dir("/a/hub_cache");
    unsetenv("HF_HUB_CACHE");
    expect_cache_dir("/b/legacy");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    expect_cache_dir("/c/hf/hub");
    setenv("HF_HOME", "", 1); /* empty counts as unset */
    expect_cache_dir("/d/xdg/huggingface/hub");
    unsetenv("HF_HOME");
    unsetenv("XDG_CACHE_HOME");
    expect_cache_dir("/e/home/.cache/huggingface/hub");

    char *folder = lp_hf_repo_folder("Qwen/Qwen3-8B");
    assert_string_equal(folder, "models--Qwen--Qwen3-8B");
    free(folder);
}

static void resolve_ok(const char *spec, const char *want_commit, const char *cache) {
    lp_model_source src;
    lp_source_options opt = {.offline = true};
    if (lp_source_resolve(spec, &src, &opt) != 0) fail_msg("%s: %s", spec, lp_errmsg());
    char *want_dir = lp_xasprintf("%s/%s/snapshots/%s", cache, REPO_FOLDER, want_commit);
    assert_string_equal(src.dir, want_dir);
    assert_string_equal(src.commit, want_commit);
    assert_string_equal(src.repo_id, REPO);
    assert_false(src.downloaded);
    char *config = lp_path_join(src.dir, "config.json");
    assert_same_file(config, "config.json");
    free(config);
    free(want_dir);
    lp_source_free(&src);
}

static void test_cache_revisions(void **state) {
    test_env *env = *state;
    make_snapshot(env->cache, COMMIT, true);
    make_snapshot(env->cache, COMMIT2, true);
    write_ref(env->cache, "main", COMMIT "\n"); /* a trailing newline is tolerated */
    write_ref(env->cache, "v1.0", COMMIT2);
    write_ref(env->cache, "refs/pr/1", COMMIT2);
    resolve_ok(REPO, COMMIT, env->cache);
    resolve_ok(REPO "@main", COMMIT, env->cache);
    resolve_ok(REPO "@v1.0", COMMIT2, env->cache);
    resolve_ok(REPO "@refs/pr/1", COMMIT2, env->cache);
    resolve_ok(REPO "@" COMMIT2, COMMIT2, env->cache); /* a sha needs no ref */

    lp_model_source src;
    lp_source_options offline = {.offline = true};
    assert_int_equal(lp_source_resolve(REPO "@v2.0", &src, &offline), -1);
    assert_err_contains("revision not in the Hugging Face cache");
    assert_err_contains("offline");
}

/* The same cache found through $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub and ~/.cache. */
static void test_cache_env_variants(void **state) {
    test_env *env = *state;
    static const char *const layouts[][2] = {
        {"HUGGINGFACE_HUB_CACHE", "legacy"},
        {"HF_HOME", "hf_home2"},
        {"XDG_CACHE_HOME", "xdg"},
        {"HOME", "home"},
    };
    static const char *const cache_suffix[] = {"", "/hub", "/huggingface/hub", "/.cache/huggingface/hub"};
    for (size_t i = 0; i < 4; i++) {
        for (size_t v = 0; v < sizeof hf_vars / sizeof hf_vars[0]; v++) unsetenv(hf_vars[v]);
        char *base = lp_path_join(env->root, layouts[i][1]);
        char *cache = lp_xasprintf("%s%s", base, cache_suffix[i]);
        setenv(layouts[i][0], base, 1);
        make_snapshot(cache, COMMIT, true);
        write_ref(cache, "main", COMMIT);
        resolve_ok(REPO, COMMIT, cache);
        free(base);
        free(cache);
    }
}

static void test_incomplete_snapshot_offline(void **state) {
    test_env *env = *state;
    make_snapshot(env->cache, COMMIT, false);
    write_ref(env->cache, "main", COMMIT);
    setenv("HF_HUB_OFFLINE", "1", 1);
    lp_model_source src;
    assert_int_equal(lp_source_resolve(REPO, &src, NULL), -1);
    assert_err_contains("incomplete");
    assert_err_contains(SHARD2);
    assert_err_contains("HF_HUB_OFFLINE");
    assert_null(src.dir);

    /* A snapshot link whose blob is gone is just as missing. */
    make_snapshot(env->cache, COMMIT2, true);
    write_ref(env->cache, "main", COMMIT2);
    char *blob = repo_path(env, "blobs/" SHARD1_SHA256);
    assert_int_equal(unlink(blob), 0);
    free(blob);
    assert_int_equal(lp_source_resolve(REPO, &src, NULL), -1);
    assert_err_contains(SHARD1);
}

static void test_unknown_repo_offline(void **state) {
    setenv("HF_HUB_OFFLINE", "true", 1);
    lp_model_source src;
    assert_int_equal(lp_source_resolve("nobody/nothing", &src, NULL), -1);
    assert_err_contains("nobody/nothing");
    assert_err_contains("not in the Hugging Face cache");
    assert_err_contains("offline");
    /* The options flag alone is enough, and "0" does not mean offline. */
    setenv("HF_HUB_OFFLINE", "0", 1);
    lp_source_options opt = {.offline = true};
    assert_int_equal(lp_source_resolve("nobody/nothing", &src, &opt), -1);
    assert_err_contains("offline");
}

/* ---------------- downloads ---------------- */

static const lp_source_options quiet_online = {.quiet = true};

static void check_downloaded_layout(const test_env *env) {
    char *ref = repo_path(env, "refs/main");
    size_t len;
    char *text = lp_read_file(ref, &len);
    assert_non_null(text);
    assert_int_equal(len, 40); /* no newline */
    assert_string_equal(text, COMMIT);
    free(text);
    free(ref);
    for (size_t i = 0; i < N_HUB_FILES; i++) {
        const hub_file *f = &hub_files[i];
        char *rel = lp_xasprintf("snapshots/" COMMIT "/%s", f->name);
        char *link = repo_path(env, rel);
        free(rel);
        if (!f->needed) {
            assert_false(lp_path_exists(link));
            free(link);
            continue;
        }
        char target[256];
        ssize_t n = readlink(link, target, sizeof target - 1);
        assert_true(n > 0);
        target[n] = 0;
        char *want = lp_xasprintf("../../blobs/%s", f->etag);
        assert_string_equal(target, want);
        char *blob_rel = lp_xasprintf("blobs/%s", f->etag);
        char *blob = repo_path(env, blob_rel);
        struct stat st;
        assert_int_equal(lstat(blob, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_same_file(link, f->name);
        char *incomplete = lp_xasprintf("%s.incomplete", blob);
        assert_false(lp_path_exists(incomplete));
        free(incomplete);
        free(blob);
        free(blob_rel);
        free(want);
        free(link);
    }
    char *readme = repo_path(env, "snapshots/" COMMIT "/README.md");
    assert_false(lp_path_exists(readme));
    free(readme);
}

static void test_download_full(void **state) {
    test_env *env = *state;
    fake_hub hub;
    hub_start(&hub);
    lp_model_source src;
    if (lp_source_resolve(REPO, &src, &quiet_online) != 0) fail_msg("%s", lp_errmsg());
    assert_true(src.downloaded);
    assert_string_equal(src.commit, COMMIT);
    assert_string_equal(src.revision, "main");
    char *want_dir = repo_path(env, "snapshots/" COMMIT);
    assert_string_equal(src.dir, want_dir);
    free(want_dir);
    lp_source_free(&src);
    check_downloaded_layout(env);

    /* Unneeded files are never requested; LFS files go through the CDN redirect. */
    assert_int_equal(hub_count_url(&hub, NULL, "training.json"), 0);
    assert_int_equal(hub_count_url(&hub, NULL, "README.md"), 0);
    assert_int_equal(hub_count_url(&hub, NULL, "original"), 0);
    assert_int_equal(hub_count_url(&hub, "GET", "/cdn/" SHARD1_SHA256), 1);
    assert_int_equal(hub_count_url(&hub, "GET", "/cdn/" SHARD2_SHA256), 1);
    assert_int_equal(hub_count_url(&hub, "GET", "/api/models/" REPO "/revision/main"), 1);

    /* A complete cache answers without a single request, online or offline. */
    int before = hub_count(&hub);
    assert_int_equal(lp_source_resolve(REPO, &src, &quiet_online), 0);
    assert_false(src.downloaded);
    assert_string_equal(src.commit, COMMIT);
    lp_source_free(&src);
    setenv("HF_HUB_OFFLINE", "1", 1);
    assert_int_equal(lp_source_resolve(REPO "@main", &src, NULL), 0);
    lp_source_free(&src);
    assert_int_equal(hub_count(&hub), before);
    hub_stop(&hub);
}

/* A snapshot missing one shard fetches exactly that shard. */
static void test_download_completes_snapshot(void **state) {
    test_env *env = *state;
    make_snapshot(env->cache, COMMIT, false);
    write_ref(env->cache, "main", COMMIT);
    fake_hub hub;
    hub_start(&hub);
    lp_model_source src;
    if (lp_source_resolve(REPO, &src, &quiet_online) != 0) fail_msg("%s", lp_errmsg());
    assert_true(src.downloaded);
    char *shard = lp_path_join(src.dir, SHARD2);
    assert_same_file(shard, SHARD2);
    free(shard);
    lp_source_free(&src);
    assert_int_equal(hub_count_url(&hub, "HEAD", "/resolve/"), 1); /* shard 2 only */
    assert_int_equal(hub_count_url(&hub, "HEAD", SHARD2), 1);
    assert_int_equal(hub_count_url(&hub, NULL, SHARD1), 0);
    assert_int_equal(hub_count_url(&hub, "GET", "/cdn/" SHARD2_SHA256), 1);
    assert_int_equal(hub_count_url(&hub, "GET", "/cdn/" SHARD1_SHA256), 0);
    hub_stop(&hub);
}

static void check_resumed_from(fake_hub *hub, long from) {
    const req_entry *get = hub_find(hub, "GET", "/cdn/" SHARD1_SHA256);
    assert_non_null(get);
    char want[48];
    snprintf(want, sizeof want, "bytes=%ld-", from);
    assert_string_equal(get->range, want);
}

static void test_download_resume(void **state) {
    test_env *env = *state;
    char *blobs = repo_path(env, "blobs");
    assert_int_equal(lp_mkdir_p(blobs), 0);
    char *partial = lp_xasprintf("%s/%s.incomplete", blobs, SHARD1_SHA256);
    size_t len;
    char *data = fixture_bytes(SHARD1, &len);
    assert_int_equal(len, SHARD1_SIZE);
    FILE *fp = fopen(partial, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len / 2, fp), len / 2);
    fclose(fp);
    free(data);

    fake_hub hub;
    hub_start(&hub);
    lp_model_source src;
    if (lp_source_resolve(REPO, &src, &quiet_online) != 0) fail_msg("%s", lp_errmsg());
    lp_source_free(&src);
    check_resumed_from(&hub, SHARD1_SIZE / 2);
    assert_string_equal(hub_find(&hub, "GET", "/cdn/" SHARD2_SHA256)->range, ""); /* fresh file: no Range */
    check_downloaded_layout(env);
    hub_stop(&hub);
    free(partial);
    free(blobs);
}

/* A connection dropped mid-file: error, no final name, the part is kept and resumed later. */
static void test_download_truncated(void **state) {
    test_env *env = *state;
    fake_hub hub;
    hub_start(&hub);
    hub.truncate_lfs = true;
    lp_model_source src;
    assert_int_equal(lp_source_resolve(REPO, &src, &quiet_online), -1);
    assert_err_contains(SHARD1);
    assert_err_contains("/cdn/" SHARD1_SHA256);
    assert_null(src.dir);
    char *blob = repo_path(env, "blobs/" SHARD1_SHA256);
    char *link = repo_path(env, "snapshots/" COMMIT "/" SHARD1);
    char *partial = lp_xasprintf("%s.incomplete", blob);
    struct stat st;
    assert_int_equal(lstat(blob, &st), -1);
    assert_int_equal(lstat(link, &st), -1);
    assert_int_equal(stat(partial, &st), 0);
    assert_true(st.st_size > 0 && st.st_size < SHARD1_SIZE);
    long kept = (long)st.st_size;
    char *ref = repo_path(env, "refs/main");
    assert_false(lp_path_exists(ref)); /* refs only after a complete snapshot */

    hub.truncate_lfs = false;
    pthread_mutex_lock(&hub.mu);
    hub.n_requests = 0;
    pthread_mutex_unlock(&hub.mu);
    if (lp_source_resolve(REPO, &src, &quiet_online) != 0) fail_msg("%s", lp_errmsg());
    lp_source_free(&src);
    check_resumed_from(&hub, kept);
    check_downloaded_layout(env);
    free(ref);
    free(partial);
    free(link);
    free(blob);
    hub_stop(&hub);
}

static void test_download_corrupt(void **state) {
    test_env *env = *state;
    fake_hub hub;
    hub_start(&hub);
    hub.corrupt_lfs = true;
    lp_model_source src;
    assert_int_equal(lp_source_resolve(REPO, &src, &quiet_online), -1);
    assert_err_contains("sha256 mismatch");
    char *blob = repo_path(env, "blobs/" SHARD1_SHA256);
    char *partial = lp_xasprintf("%s.incomplete", blob);
    assert_false(lp_path_exists(blob));
    assert_false(lp_path_exists(partial));
    free(partial);
    free(blob);
    hub_stop(&hub);
}

static void test_download_auth(void **state) {
    test_env *env = *state;
    fake_hub hub;
    hub_start(&hub);
    hub.require_token = "hf_test_secret";
    lp_model_source src;
    assert_int_equal(lp_source_resolve(REPO, &src, &quiet_online), -1);
    assert_err_contains("401");
    assert_err_contains("HF_TOKEN");

    setenv("HF_TOKEN", "hf_wrong", 1);
    assert_int_equal(lp_source_resolve(REPO, &src, &quiet_online), -1);
    assert_err_contains("rejected");

    /* The token file ($HF_TOKEN_PATH), trimmed, is used when no variable is set. */
    unsetenv("HF_TOKEN");
    char *token_file = lp_path_join(env->root, "token");
    write_text(token_file, "  hf_test_secret\n");
    setenv("HF_TOKEN_PATH", token_file, 1);
    if (lp_source_resolve(REPO, &src, &quiet_online) != 0) fail_msg("%s", lp_errmsg());
    lp_source_free(&src);
    check_downloaded_layout(env);
    assert_true(hub_find(&hub, "HEAD", "/resolve/")->auth);
    free(token_file);

    /* HF_TOKEN wins over the file. */
    setenv("HF_TOKEN", "hf_env_token", 1);
    char *tok = lp_hub_token();
    assert_string_equal(tok, "hf_env_token");
    free(tok);
    hub_stop(&hub);
}

static void test_download_not_found(void **state) {
    test_env *env = *state;
    fake_hub hub;
    hub_start(&hub);
    lp_model_source src;
    assert_int_equal(lp_source_resolve("lp-test/missing", &src, &quiet_online), -1);
    assert_err_contains("404");
    assert_err_contains("not found");
    assert_err_contains("lp-test/missing");
    assert_int_equal(lp_source_resolve(REPO "@no-such-branch", &src, &quiet_online), -1);
    assert_err_contains("404");
    assert_err_contains("no-such-branch");
    char *repo_dir = lp_path_join(env->cache, "models--lp-test--missing");
    assert_false(lp_path_exists(repo_dir));
    free(repo_dir);
    hub_stop(&hub);
}

/* Relative redirects (a renamed repo) are followed for the listing and the HEAD probe;
 * the cache entry keeps the name that was asked for. */
static void test_download_renamed_repo(void **state) {
    test_env *env = *state;
    fake_hub hub;
    hub_start(&hub);
    lp_model_source src;
    if (lp_source_resolve("lp-test/old-name", &src, &quiet_online) != 0) fail_msg("%s", lp_errmsg());
    char *want = lp_path_join(env->cache, "models--lp-test--old-name/snapshots/" COMMIT);
    assert_string_equal(src.dir, want);
    char *shard = lp_path_join(src.dir, SHARD2);
    assert_same_file(shard, SHARD2);
    assert_int_equal(hub_count_url(&hub, "HEAD", "/lp-test/old-name/resolve/"), 8); /* 6 small files, 2 shards */
    assert_int_equal(hub_count_url(&hub, "HEAD", "/" REPO "/resolve/"), 8);
    free(shard);
    free(want);
    lp_source_free(&src);
    hub_stop(&hub);
}

static void test_download_network_error(void **state) {
    fake_hub hub;
    hub_start(&hub);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", hub.port);
    hub_stop(&hub); /* nothing listens there any more */
    lp_model_source src;
    assert_int_equal(lp_source_resolve(REPO, &src, &quiet_online), -1);
    assert_err_contains("network error");
    assert_err_contains(endpoint);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_local_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_specs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_dir_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_revisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_env_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incomplete_snapshot_offline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_repo_offline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_completes_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_renamed_repo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_network_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
