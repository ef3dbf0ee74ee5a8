#!/usr/bin/env python3
"""gen_mlx_golden.py — tools-only: writes tests/data/mlx_golden.bin, MLX's own affine
quantization of a few rows, which tests/unit/test_mlx_affine.c checks
lp_mlx_quantize_row against bit for bit. Needs MLX's CPU build (pip install mlx-cpu;
generated with mlx 0.32.4):

    python3 tests/data/gen_mlx_golden.py

File format (little endian):
    "LPMLXGD1"
    u32 rows; u32 cols; f32 x[rows*cols]
    u32 n_cases; per case: u32 bits; u32 group; u32 words_per_row;
        u32 w[rows*words_per_row]; f32 scales[rows*cols/group]; f32 biases[rows*cols/group]
"""
import json
import os
import struct

import mlx.core as mx
import numpy as np

FIXTURE = "/work/shared/fixtures/models/small-qwen3/model-00001-of-00006.safetensors"


def load_bf16_rows(name, rows, cols):
    with open(FIXTURE, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        begin, _ = header[name]["data_offsets"]
        f.seek(8 + n + begin)
        raw = np.frombuffer(f.read(2 * rows * cols), dtype=np.uint16)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(rows, cols)


def main():
    rng = np.random.default_rng(7)
    real = load_bf16_rows("model.layers.0.self_attn.q_proj.weight", 2, 512)[:, :256]
    edge = np.concatenate([np.zeros(32), np.full(32, 0.75), -np.abs(rng.standard_normal(32)),
                           np.abs(rng.standard_normal(32)), np.round(rng.standard_normal(32) * 3),
                           rng.standard_normal(32) * 1e-8, np.linspace(-1, 0.5, 32),
                           np.where(np.arange(32) == 9, 40.0, rng.standard_normal(32))])
    x = np.vstack([real, edge[None, :]]).astype(np.float32)
    rows, cols = x.shape
    out = bytearray(b"LPMLXGD1")
    out += struct.pack("<II", rows, cols) + x.astype("<f4").tobytes()
    cases = [(b, g) for b in (2, 3, 4, 5, 6, 8) for g in (32, 64, 128)]
    out += struct.pack("<I", len(cases))
    for bits, group in cases:
        w, s, b = mx.quantize(mx.array(x), group_size=group, bits=bits, stream=mx.cpu)
        w, s, b = np.array(w), np.array(s), np.array(b)
        assert w.dtype == np.uint32 and s.dtype == np.float32 and w.shape == (rows, cols * bits // 32)
        out += struct.pack("<III", bits, group, w.shape[1])
        out += w.astype("<u4").tobytes() + s.astype("<f4").tobytes() + b.astype("<f4").tobytes()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlx_golden.bin")
    with open(path, "wb") as f:
        f.write(out)
    print(f"{path}: {len(cases)} cases, {len(out)} bytes (mlx {mx.__version__})")


if __name__ == "__main__":
    main()
