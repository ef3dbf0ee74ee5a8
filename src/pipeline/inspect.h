/* inspect.h — `llama-pajamas-quant inspect FILE.gguf`: list KVs and tensors, or
 * dequantize one tensor to raw little-endian f32 (used by the interop tests to
 * compare our dequantizer with other implementations). */
#ifndef LP_INSPECT_H
#define LP_INSPECT_H

int lp_inspect_gguf(const char *path);
int lp_dequantize_tensor(const char *gguf_path, const char *tensor, const char *out_path);

#endif
