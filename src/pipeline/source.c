/* source.c — resolves `--model M` to a directory: local directories, repo ids looked up
 * offline in the Hugging Face cache, and (via hub.c) downloads of what is missing.
 * Owns the cache-location rules, repo-id / revision syntax and snapshot completeness. */
#include "pipeline/source.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jansson.h>

#include "core/err.h"
#include "core/fileio.h"

#define LP_HF_INDEX_NAME "model.safetensors.index.json"
#define LP_HF_SINGLE_WEIGHTS "model.safetensors"

/* ---------------- environment ---------------- */

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

bool lp_env_true(const char *name) {
    const char *v = getenv(name);
    if (!v) return false;
    static const char *const yes[] = {"1", "on", "yes", "true"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (strcasecmp(v, yes[i]) == 0) return true;
    return false;
}

/* ~/.cache, honouring $XDG_CACHE_HOME; "." when even $HOME is unset. */
static char *xdg_cache_home(void) {
    const char *xdg = env_nonempty("XDG_CACHE_HOME");
    if (xdg) return lp_xstrdup(xdg);
    const char *home = env_nonempty("HOME");
    return lp_path_join(home ? home : ".", ".cache");
}

char *lp_hf_home(void) {
    const char *hf_home = env_nonempty("HF_HOME");
    if (hf_home) return lp_xstrdup(hf_home);
    char *cache = xdg_cache_home();
    char *dir = lp_path_join(cache, "huggingface");
    free(cache);
    return dir;
}

char *lp_hf_cache_dir(void) {
    const char *dir = env_nonempty("HF_HUB_CACHE");
    if (!dir) dir = env_nonempty("HUGGINGFACE_HUB_CACHE");
    if (dir) return lp_xstrdup(dir);
    char *home = lp_hf_home();
    char *hub = lp_path_join(home, "hub");
    free(home);
    return hub;
}

/* ---------------- names ---------------- */

char *lp_hf_repo_folder(const char *repo_id) {
    size_t n = strlen(repo_id), slashes = 0;
    for (size_t i = 0; i < n; i++) slashes += repo_id[i] == '/';
    static const char prefix[] = "models--";
    char *out = lp_xmalloc(sizeof prefix + n + slashes), *o = out;
    memcpy(o, prefix, sizeof prefix - 1);
    o += sizeof prefix - 1;
    for (size_t i = 0; i < n; i++) {
        if (repo_id[i] == '/') {
            *o++ = '-';
            *o++ = '-';
        } else {
            *o++ = repo_id[i];
        }
    }
    *o = 0;
    return out;
}

bool lp_source_plain_name(const char *name) {
    if (!name || !*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strlen(name) > 255) return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p == '/' || *p == '\\' || *p < 0x20 || *p == 0x7f) return false;
    return true;
}

/* One component of a repo id, per the hub's rules: [A-Za-z0-9._-], not starting or ending
 * with '-' or '.', and without "--" or ".." (which would make the cache folder ambiguous). */
static bool repo_part_ok(const char *s, size_t n) {
    if (n == 0 || n > 96) return false;
    if (s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.')) return false;
        if (i > 0 && (c == '-' || c == '.') && s[i - 1] == c) return false;
    }
    return true;
}

static bool repo_id_ok(const char *id) {
    const char *slash = strchr(id, '/');
    if (!slash) return repo_part_ok(id, strlen(id));
    return !strchr(slash + 1, '/') && repo_part_ok(id, (size_t)(slash - id)) && repo_part_ok(slash + 1, strlen(slash + 1));
}

/* Branch, tag, "refs/pr/N" or a commit sha: it becomes a path under refs/, so every
 * '/'-separated part must be non-empty and neither "." nor "..". */
static bool revision_ok(const char *rev) {
    size_t n = strlen(rev);
    if (n == 0 || n > 255) return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)rev[i]) || strchr("-_./", rev[i]))) return false;
    for (const char *part = rev;; part++) {
        size_t len = strcspn(part, "/");
        if (len == 0 || (len == 1 && part[0] == '.') || (len == 2 && part[0] == '.' && part[1] == '.')) return false;
        part += len;
        if (!*part) return true;
    }
}

static bool is_commit_sha(const char *s) {
    size_t n = strlen(s);
    if (n != 40) return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return false;
    return true;
}

/* ---------------- snapshots ---------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void lp_source_free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

int lp_source_index_shards(const char *index_path, char ***names_out) {
    *names_out = NULL;
    json_error_t jerr;
    json_t *root = json_load_file(index_path, 0, &jerr);
    if (!root) return lp_fail("%s: invalid JSON at line %d: %s", index_path, jerr.line, jerr.text);
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        json_decref(root);
        return lp_fail("%s: weight_map: missing or empty", index_path);
    }
    char **names = lp_xmalloc(json_object_size(map) * sizeof *names);
    int n = 0;
    const char *tensor;
    json_t *file;
    json_object_foreach(map, tensor, file) {
        const char *name = json_string_value(file);
        if (!lp_source_plain_name(name)) {
            lp_source_free_names(names, n);
            json_decref(root);
            return lp_fail("%s: weight_map: '%s': shard is not a plain file name", index_path, tensor);
        }
        names[n++] = lp_xstrdup(name);
    }
    json_decref(root);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int unique = 0;
    for (int i = 0; i < n; i++) {
        if (unique > 0 && strcmp(names[unique - 1], names[i]) == 0) {
            free(names[i]);
            continue;
        }
        names[unique++] = names[i];
    }
    *names_out = names;
    return unique;
}

/* A regular file, following symlinks: a dangling link into a missing blob does not count. */
static bool has_file(const char *dir, const char *name) {
    char *path = lp_path_join(dir, name);
    struct stat st;
    bool ok = stat(path, &st) == 0 && S_ISREG(st.st_mode);
    free(path);
    return ok;
}

static bool report_missing(char **missing, const char *name) {
    if (missing) *missing = lp_xstrdup(name);
    return false;
}

bool lp_source_snapshot_complete(const char *dir, char **missing) {
    if (missing) *missing = NULL;
    if (!has_file(dir, "config.json")) return report_missing(missing, "config.json");
    if (!has_file(dir, LP_HF_INDEX_NAME))
        return has_file(dir, LP_HF_SINGLE_WEIGHTS) || report_missing(missing, LP_HF_SINGLE_WEIGHTS);
    char *index = lp_path_join(dir, LP_HF_INDEX_NAME);
    char **shards;
    int n = lp_source_index_shards(index, &shards);
    free(index);
    if (n < 0) return report_missing(missing, LP_HF_INDEX_NAME " (unreadable)");
    bool complete = true;
    for (int i = 0; i < n && complete; i++)
        if (!has_file(dir, shards[i])) complete = report_missing(missing, shards[i]);
    lp_source_free_names(shards, n);
    return complete;
}

/* ---------------- cache lookup ---------------- */

/* The commit a revision names in the cache: refs/<rev> if present, else the revision
 * itself when it is a full sha. NULL when the cache does not know the revision. */
static char *cached_commit(const char *repo_dir, const char *revision) {
    char *refs = lp_path_join(repo_dir, "refs");
    char *ref_path = lp_path_join(refs, revision);
    free(refs);
    char *commit = NULL;
    if (lp_path_exists(ref_path)) {
        char *text = lp_read_file(ref_path, NULL);
        if (text) {
            text[strcspn(text, " \t\r\n")] = 0;
            if (is_commit_sha(text)) commit = text;
            else free(text);
        }
    }
    free(ref_path);
    if (!commit && is_commit_sha(revision)) commit = lp_xstrdup(revision);
    return commit;
}

static char *snapshot_dir(const char *repo_dir, const char *commit) {
    char *snaps = lp_path_join(repo_dir, "snapshots");
    char *dir = lp_path_join(snaps, commit);
    free(snaps);
    return dir;
}

/* Why the cache cannot serve repo@rev (an lp_fail message), or 0 with *dir and *commit set. */
static int lookup_cache(const char *cache, const char *repo_id, const char *revision, char **dir_out,
                        char **commit_out) {
    *dir_out = *commit_out = NULL;
    char *folder = lp_hf_repo_folder(repo_id);
    char *repo_dir = lp_path_join(cache, folder);
    free(folder);
    int rc = -1;
    char *commit = NULL, *dir = NULL, *missing = NULL;
    if (!lp_is_dir(repo_dir)) {
        lp_fail("%s: not in the Hugging Face cache (%s)", repo_id, cache);
    } else if (!(commit = cached_commit(repo_dir, revision))) {
        lp_fail("%s@%s: revision not in the Hugging Face cache (no %s/refs/%s)", repo_id, revision, repo_dir, revision);
    } else if (dir = snapshot_dir(repo_dir, commit), !lp_source_snapshot_complete(dir, &missing)) {
        lp_fail("%s@%s: cached snapshot %s is incomplete (missing %s)", repo_id, revision, commit, missing);
    } else {
        *dir_out = dir;
        *commit_out = commit;
        dir = commit = NULL;
        rc = 0;
    }
    free(missing);
    free(dir);
    free(commit);
    free(repo_dir);
    return rc;
}

/* ---------------- resolve ---------------- */

static int resolve_local(const char *spec, lp_model_source *out) {
    char *config = lp_path_join(spec, "config.json");
    bool ok = lp_path_exists(config);
    free(config);
    if (!ok) return lp_fail("%s: directory has no config.json (not a Hugging Face model directory)", spec);
    out->dir = lp_xstrdup(spec);
    return 0;
}

/* Split "org/name@rev" into a validated repo id and revision ("main" by default). */
static int parse_repo_spec(const char *spec, char **repo_id, char **revision) {
    const char *at = strchr(spec, '@');
    char *id = at ? strndup(spec, (size_t)(at - spec)) : lp_xstrdup(spec);
    if (!id) id = lp_xstrdup("");
    const char *rev = at ? at + 1 : "main";
    if (!repo_id_ok(id)) {
        free(id);
        return lp_fail("%s: no such directory, and not a Hugging Face repo id (org/name[@revision])", spec);
    }
    if (!revision_ok(rev)) {
        free(id);
        return lp_fail("%s: revision '%s' is not a valid branch, tag or commit name", spec, rev);
    }
    *repo_id = id;
    *revision = lp_xstrdup(rev);
    return 0;
}

static int resolve_repo(const char *spec, lp_model_source *out, const lp_source_options *opt) {
    if (parse_repo_spec(spec, &out->repo_id, &out->revision) != 0) return -1;
    char *cache = lp_hf_cache_dir();
    int rc = lookup_cache(cache, out->repo_id, out->revision, &out->dir, &out->commit);
    if (rc != 0) {
        bool offline = opt->offline || lp_env_true("HF_HUB_OFFLINE") || lp_env_true("TRANSFORMERS_OFFLINE");
        if (offline) {
            char *why = lp_xstrdup(lp_errmsg());
            lp_fail("%s; offline mode (HF_HUB_OFFLINE) is on, so nothing is downloaded", why);
            free(why);
        } else {
            int fetched = 0;
            char *commit = NULL;
            rc = lp_hub_download(out->repo_id, out->revision, cache, opt->quiet, &commit, &fetched);
            if (rc == 0) rc = lookup_cache(cache, out->repo_id, commit, &out->dir, &out->commit);
            if (rc != 0 && commit) lp_fail_prefix("%s: after downloading", spec);
            out->downloaded = fetched > 0;
            free(commit);
        }
    }
    free(cache);
    return rc;
}

int lp_source_resolve(const char *spec, lp_model_source *out, const lp_source_options *opt) {
    static const lp_source_options defaults = {0};
    memset(out, 0, sizeof *out);
    if (!opt) opt = &defaults;
    if (!spec || !*spec) return lp_fail("--model: empty model name");
    int rc = lp_is_dir(spec) ? resolve_local(spec, out) : resolve_repo(spec, out, opt);
    if (rc != 0) lp_source_free(out);
    return rc;
}

void lp_source_free(lp_model_source *src) {
    if (!src) return;
    free(src->dir);
    free(src->repo_id);
    free(src->revision);
    free(src->commit);
    memset(src, 0, sizeof *src);
}
