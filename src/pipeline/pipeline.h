/* pipeline.h — the `llama-pajamas-quant` jobs: info (architecture report) and
 * convert (source -> GGUF/MLX artifacts + manifest.json). */
#ifndef LP_PIPELINE_H
#define LP_PIPELINE_H

#include <stdbool.h>

typedef struct {
    const char *model;       /* dir, HF cache id, or hub id */
    const char *output_dir;
    const char **gguf;       /* GGUF precision recipes ("q4_k_m", ...) */
    int n_gguf;
    const char **mlx;        /* MLX recipes ("4bit-mixed", ...) */
    int n_mlx;
    int mlx_group_size;      /* 0 = recipe default */
    int mlx_embedding_bits;  /* 0 = recipe default */
    int mlx_output_bits;     /* 0 = recipe default */
    int n_threads;           /* 0 = all cores */
    bool quiet;
    bool offline;
    bool dry_run;            /* print the plans, write nothing */
} lp_convert_opts;

int lp_pipeline_convert(const lp_convert_opts *o);
int lp_pipeline_info(const char *model, bool json, bool offline);

#endif
