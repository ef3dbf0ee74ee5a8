/* sink_mlx.h — a conversion sink writing one MLX (mlx-lm) model directory:
 * model.safetensors or model-0000i-of-0000N.safetensors (5 GiB shards, like
 * mlx-lm), model.safetensors.index.json, config.json with the "quantization" /
 * "quantization_config" sections, and the tokenizer, chat template and
 * generation config copied from the source. */
#ifndef LP_SINK_MLX_H
#define LP_SINK_MLX_H

#include "convert.h"
#include "mlx_recipe.h"

#define LP_MLX_MAX_SHARD_BYTES (5ull << 30) /* mlx-lm MAX_FILE_SIZE_GB = 5, as 5 << 30 */

typedef struct {
    const char *dir;          /* output directory (must exist) */
    const char *source_dir;   /* where config.json and the tokenizer files are */
    const lp_hparams *hp;
    const lp_mlx_plan *plan;  /* parallel to the job's tensor list; must outlive the sink */
    uint64_t max_shard_bytes; /* 0 = LP_MLX_MAX_SHARD_BYTES */
} lp_mlx_sink_args;

int lp_sink_mlx_create(lp_sink *sink, const lp_mlx_sink_args *args);

/* Shard of each stored tensor of the plan (shard_of[i], -1 for dropped ones);
 * returns the number of shards. A module's weight, scales and biases share a shard. */
int lp_mlx_shard_layout(const lp_mlx_plan *p, uint64_t max_shard_bytes, int *shard_of);
/* "model.safetensors" (one shard) or "model-00001-of-00003.safetensors"; malloc'd. */
char *lp_mlx_shard_name(int shard, int n_shards);

#endif
