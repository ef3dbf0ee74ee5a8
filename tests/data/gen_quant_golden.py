#!/usr/bin/env python3
"""gen_quant_golden.py — tools-only: writes tests/data/quant_golden.bin, the llama.cpp
reference data that tests/unit/test_qtype.c checks our quantizers and dequantizers
against bit for bit.

Reference bytes come from llama.cpp's own ggml-quants.c through quant_oracle.c (see
its header for how to build it). Where the Python `gguf` package can do the same job
(quantize Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/MXFP4/BF16, dequantize every type here) this
script asserts that it agrees with the oracle, as an independent second opinion.

    python3 tests/data/gen_quant_golden.py --oracle /path/to/quant_oracle

File format (little endian):
    "LPQGOLD1"
    u32 n_sets;    per set:    u32 n; f32 values[n]
    u32 n_records; per record: u32 ggml_type; i32 set (-1: none); u32 n_elems;
                               u32 n_bytes; u8 bytes[n_bytes]; f32 expected[n_elems]
A record with set >= 0 says: from_float(set[:n_elems]) == bytes. Every record says:
to_float(bytes) == expected (bitwise).
"""
import argparse
import json
import os
import struct
import subprocess
import tempfile

import numpy as np
import gguf.quants as gq
from gguf.constants import GGMLQuantizationType as T

FIXTURE = "/work/shared/fixtures/models/small-qwen3/model-00001-of-00006.safetensors"

QUANT_TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl", "mxfp4",
               "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K"]
TYPE_ID = {"f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_K": 10, "q3_K": 11,
           "q4_K": 12, "q5_K": 13, "q6_K": 14, "q8_K": 15, "iq4_nl": 20, "bf16": 30, "mxfp4": 39}
BLOCK = {t: (256 if t.endswith("K") else 32) for t in QUANT_TYPES}
BYTES = {"q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24, "q8_0": 34, "iq4_nl": 18, "mxfp4": 17,
         "q2_K": 84, "q3_K": 110, "q4_K": 144, "q5_K": 176, "q6_K": 210, "q8_K": 292}
# Byte offsets of the f16 scale fields, which random layout blocks get sane values in.
F16_FIELDS = {"q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q8_0": [0], "iq4_nl": [0],
              "q2_K": [80, 82], "q3_K": [108], "q4_K": [0, 2], "q5_K": [0, 2], "q6_K": [208]}
GGUF_QUANTIZES = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0, "q5_1": T.Q5_1, "q8_0": T.Q8_0,
                  "mxfp4": T.MXFP4}


def load_bf16(path, name, count):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        begin, _ = header[name]["data_offsets"]
        f.seek(8 + n + begin)
        raw = np.frombuffer(f.read(2 * count), dtype=np.uint16)
    return (raw.astype(np.uint32) << 16).view(np.float32)


def quant_input(rng):
    """4 super-blocks: two of real weights, one of edge cases per 32-block, one heavy-tailed."""
    real_q = load_bf16(FIXTURE, "model.layers.0.self_attn.q_proj.weight", 256)
    real_g = load_bf16(FIXTURE, "model.layers.0.mlp.gate_proj.weight", 256) * 3.0
    edge = [np.zeros(32), np.full(32, 1e-20), np.full(32, 3.0), np.full(32, -2.5),
            np.round(rng.standard_normal(32) * 4) / 4,               # many rounding ties
            np.where(np.arange(32) == 5, 100.0, rng.standard_normal(32) * 0.01),  # outlier
            np.arange(-16, 16, dtype=np.float64),                    # exact integer grid
            np.abs(rng.standard_normal(32)) + 0.5]                    # all positive
    tail = rng.standard_t(2, 256) * 0.02
    x = np.concatenate([real_q, real_g, np.concatenate(edge), tail]).astype(np.float32)
    assert x.size == 1024
    return x


def conversion_input():
    specials = [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65520.0, -65520.0, 1e9, 2.0 ** -14,
                2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0001, 1.5 * 2.0 ** -24, 2.0 ** -26, 1e-30,
                1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8,
                3.14159265, -2.718281828, 1e38, 3.4e38, np.inf, -np.inf, 1e-40, -1e-45]
    u = np.array(specials, dtype=np.float32).view(np.uint32).tolist()
    u += [0x7FC00000, 0x7F800001, 0xFFA00000, 0x7FFFFFFF]  # NaNs: quiet, signalling, negative
    u += [0x3F808000, 0x3F818000, 0x3F808001, 0x477FEFFF, 0x477FF000, 0x33000001, 0x387FFFFF]
    return np.array(u, dtype=np.uint32).view(np.float32)


def run(*args):
    subprocess.run(list(args), check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oracle", required=True)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "quant_golden.bin"))
    args = ap.parse_args()
    rng = np.random.default_rng(20260101)
    tmp = tempfile.mkdtemp()
    fin, fq, fd = (os.path.join(tmp, n) for n in ("in.f32", "q.bin", "dq.f32"))

    def oracle_dequant(t, raw):
        with open(fq, "wb") as f:
            f.write(raw)
        run(args.oracle, "d", t, fq, fd)
        return np.fromfile(fd, dtype=np.float32)

    sets = [quant_input(rng), conversion_input()]
    records = []
    sets[0].tofile(fin)
    for t in QUANT_TYPES:
        run(args.oracle, "q", t, fin, fq)
        raw = open(fq, "rb").read()
        if t in GGUF_QUANTIZES:
            assert gq.quantize(sets[0].reshape(1, -1), GGUF_QUANTIZES[t]).tobytes() == raw, t
        expected = oracle_dequant(t, raw)
        records.append((TYPE_ID[t], 0, sets[0].size, raw, expected))
    sets[1].tofile(fin)
    for t in ("f16", "bf16"):
        run(args.oracle, t, fin, fq)
        u16 = np.fromfile(fq, dtype=np.uint16)
        if t == "bf16":
            assert gq.quantize(sets[1], T.BF16).view(np.uint16).tolist() == u16.tolist()
            expected = (u16.astype(np.uint32) << 16).view(np.float32)
        else:
            expected = u16.view(np.float16).astype(np.float32)
        records.append((TYPE_ID[t], 1, sets[1].size, u16.tobytes(), expected))
    # Layout stress: random bytes with sane f16 scales, dequantized by ggml.
    for t in QUANT_TYPES:
        if t == "q8_K":
            continue
        nblocks = 2 if BLOCK[t] == 256 else 8
        raw = bytearray(rng.integers(0, 256, nblocks * BYTES[t], dtype=np.uint8).tobytes())
        for b in range(nblocks):
            for off in F16_FIELDS.get(t, []):
                h = np.float16(rng.uniform(0.01, 2.0) * rng.choice([-1, 1]) * 2.0 ** -4)
                raw[b * BYTES[t] + off: b * BYTES[t] + off + 2] = h.tobytes()
            if t == "mxfp4":
                raw[b * BYTES[t]] = int(rng.integers(100, 140))
        raw = bytes(raw)
        expected = oracle_dequant(t, raw)
        gguf_type = getattr(T, t.upper())
        ours = gq.dequantize(np.frombuffer(raw, dtype=np.uint8), gguf_type).reshape(-1)
        assert np.allclose(ours, expected, rtol=1e-6, atol=1e-7), t
        records.append((TYPE_ID[t], -1, nblocks * BLOCK[t], raw, expected))

    with open(args.out, "wb") as f:
        f.write(b"LPQGOLD1")
        f.write(struct.pack("<I", len(sets)))
        for s in sets:
            f.write(struct.pack("<I", s.size))
            f.write(s.astype("<f4").tobytes())
        f.write(struct.pack("<I", len(records)))
        for type_id, set_id, n, raw, expected in records:
            f.write(struct.pack("<IiII", type_id, set_id, n, len(raw)))
            f.write(raw)
            f.write(np.asarray(expected, dtype="<f4").tobytes())
    print(f"{args.out}: {len(records)} records, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
