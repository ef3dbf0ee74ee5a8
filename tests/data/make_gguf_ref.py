#!/usr/bin/env python3
"""Generate the GGUF reference files read by tests/unit/test_gguf.c, with gguf-py's GGUFWriter.

    python3 tests/data/make_gguf_ref.py tests/data

writes gguf_ref_py.gguf (default alignment 32) and gguf_ref_py_align64.gguf (general.alignment = 64).
Every value below is mirrored in test_gguf.c (expect_reference_file / write_reference_file); change both
together. Tensor bytes follow integer formulas so the C test can regenerate them exactly.
"""
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter


def pattern(n, mul, add):
    return np.array([(k * mul + add) & 255 for k in range(n)], dtype=np.uint8)


def write(path, alignment=None):
    w = GGUFWriter(str(path), "testarch")  # general.architecture comes first
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.15625)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**40) - 3)
    w.add_float64("t.f64", 3.141592653589793)
    w.add_bool("t.bool_true", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.str", "h\u00e9llo w\u00f6rld \u2713")
    w.add_array("t.arr_str", ["a", "", "\u00fcn\u00efcode", "with space"])
    w.add_array("t.arr_i32", [1, -2, 3, 2147483647])
    w.add_array("t.arr_f32", [0.5, -1.25, 1e-6])
    w.add_array("t.arr_bool", [True, False, True])
    w.add_key_value("t.arr_u8", [1, 2, 255], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT8)
    w.add_key_value("t.arr_i64", [-1, 2**40], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT64)
    w.add_key_value("t.arr_f64", [0.1, -2.5], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT64)
    if alignment is not None:
        w.add_custom_alignment(alignment)

    # numpy shapes are slowest-first; GGUF ne is the reverse.
    w.add_tensor("tok.f32", (np.arange(12, dtype=np.float32) * 0.5 - 3).reshape(3, 4))
    w.add_tensor("blk.f16", (np.arange(32, dtype=np.float32) * 0.25).astype(np.float16).reshape(2, 2, 8))
    w.add_tensor("q8", pattern(2 * 68, 31, 7).reshape(2, 68), raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("bf16", pattern(5 * 6, 17, 3).reshape(5, 6), raw_dtype=GGMLQuantizationType.BF16)
    w.add_tensor("one", np.array([42.0], dtype=np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    write(out / "gguf_ref_py.gguf")
    write(out / "gguf_ref_py_align64.gguf", alignment=64)
