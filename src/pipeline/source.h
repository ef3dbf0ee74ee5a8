/* source.h — where a model's files come from: a local directory, the Hugging Face
 * cache, or a download from the hub into that same cache.
 *
 * `--model M` accepts
 *   1. a directory containing config.json, used as is;
 *   2. a repo id "org/name" or "org/name@revision", looked up OFFLINE in the HF cache
 *      (layout and environment variables: FORMATS.md section 9);
 *   3. if that snapshot is missing or incomplete and offline mode is not on, the
 *      missing files are downloaded (libcurl) into exactly the cache layout
 *      huggingface_hub uses, so both tools share one cache.
 * A snapshot is complete when it has config.json and every weight file
 * (model.safetensors, or model.safetensors.index.json plus every shard it names). */
#ifndef LP_SOURCE_H
#define LP_SOURCE_H

#include <stdbool.h>

typedef struct {
    bool offline; /* never touch the network (also on when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is true) */
    bool quiet;   /* no progress output, even when stderr is a terminal */
} lp_source_options;

typedef struct {
    char *dir;       /* directory holding config.json and the weights */
    char *repo_id;   /* "org/name"; NULL for a local directory */
    char *revision;  /* as requested ("main" when not given); NULL for a local directory */
    char *commit;    /* 40-hex commit sha of the snapshot; NULL for a local directory */
    bool downloaded; /* at least one file was fetched from the hub */
} lp_model_source;

/* Resolve spec into a usable model directory. opt may be NULL (online, progress on a TTY).
 * On failure out is zeroed and the message says what was tried. */
int lp_source_resolve(const char *spec, lp_model_source *out, const lp_source_options *opt);
void lp_source_free(lp_model_source *src);

/* The hub cache directory per the HF precedence: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE,
 * $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub. malloc'd. */
char *lp_hf_cache_dir(void);

/* $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (malloc'd). */
char *lp_hf_home(void);

/* "models--org--name" (malloc'd). */
char *lp_hf_repo_folder(const char *repo_id);

/* A plain file name from a remote listing: no '/', not "." / "..", no control chars.
 * Everything the hub names becomes a path, so nothing else is accepted. */
bool lp_source_plain_name(const char *name);

/* Shard file names named by a model.safetensors.index.json weight_map (unique, sorted).
 * Each name is checked to be a plain file name. Returns the count, or -1. */
int lp_source_index_shards(const char *index_path, char ***names_out);
void lp_source_free_names(char **names, int n);

/* Does snapshot directory dir hold config.json and all weights? If not and missing is
 * non-NULL, *missing gets the first missing file's name (malloc'd). */
bool lp_source_snapshot_complete(const char *dir, char **missing);

/* ---- hub.c: the network part ---- */

/* Download what a conversion needs of repo_id at revision into cache_dir (the hub
 * cache root), reusing every file already present in the snapshot, and write
 * refs/<revision> when revision is a branch or tag. *commit_out gets the commit sha
 * (malloc'd), *fetched the number of files actually transferred. */
int lp_hub_download(const char *repo_id, const char *revision, const char *cache_dir, bool quiet,
                    char **commit_out, int *fetched);

/* $HF_ENDPOINT without trailing '/', or https://huggingface.co (malloc'd). */
char *lp_hub_endpoint(void);
/* $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, or the trimmed token file ($HF_TOKEN_PATH, else
 * $HF_HOME/token, else ~/.cache/huggingface/token); NULL when none (malloc'd). */
char *lp_hub_token(void);
/* Is an HF boolean environment variable (1/ON/YES/TRUE, any case) set? */
bool lp_env_true(const char *name);

#endif
