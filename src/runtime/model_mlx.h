/* model_mlx.h — loading an MLX (mlx-lm) model directory into an lp_model.
 *
 * Quantized modules (P.weight U32 + P.scales + P.biases, affine) are repacked once
 * into the runtime's MLX block types (quant/mlx_types.h): an owned copy, about the
 * size of the file. Bits and group size come from config.json "quantization"
 * (per-module entries first, a null group_size meaning 64), and are otherwise
 * inferred from the tensor shapes as mlx-lm does; both are checked against the
 * shapes. Float tensors are used in place (matrices) or copied to F32 (vectors),
 * as for HF checkpoints. Names are HF's; MoE experts are the stacked
 * `switch_mlp` tensors mlx-lm writes. Rows are in HF order, so the model's rope
 * is NEOX-style like lp_model_load_hf's. */
#ifndef LP_MODEL_MLX_H
#define LP_MODEL_MLX_H

#include <stdbool.h>

#include "model.h"

lp_model *lp_model_load_mlx(const char *dir);
/* Does dir hold an MLX model: config.json with a "quantization" section, or weight
 * files whose safetensors metadata says format "mlx"? */
bool lp_model_dir_is_mlx(const char *dir);

/* Dequantize the weight stored as `name` in an MLX dir ("model.layers.0.mlp.down_proj"
 * or its ".weight" tensor name) through the runtime's blocks, as raw little-endian f32
 * in row-major (MLX) order, to out_path (used by the interop tests against mx.dequantize). */
int lp_mlx_dequantize_tensor(const char *dir, const char *name, const char *out_path);

#endif
