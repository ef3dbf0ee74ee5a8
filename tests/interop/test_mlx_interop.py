"""Our MLX directories as MLX and mlx-lm see them, and mlx-lm's as our runtime sees them:
 - mlx_lm.load loads every recipe; in float32 its logits on the fixture prompt equal our
   runtime's on the same directory (and its default bfloat16 run stays near the HF
   reference, per bits);
 - our files are bit-identical to mlx_lm.convert's (4-bit, mixed_3_6, and the MoE
   fixture with its switch_mlp experts and 8-bit routers);
 - directories written by mlx_lm.convert run in our runtime with the same greedy output
   as MLX itself;
 - mx.dequantize of our tensors equals our dequantizer exactly.
Skipped when MLX is not installed (pip install mlx mlx-cpu mlx-lm on Linux)."""
import glob
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, QUANT, RUN, refs, run

mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")
from mlx.utils import tree_map  # noqa: E402
from mlx_lm import load as mlx_load  # noqa: E402

TINY = FIXTURES / "models" / "tiny-qwen3"
MOE = FIXTURES / "models" / "tiny-qwen3-moe"

# Top-1 agreement with the HF reference of mlx-lm's own (bfloat16) run on the 64 reference
# positions; measured on tiny-qwen3 (mlx 0.32.4): 8bit 0.94, 6bit 0.92, 4bit-mixed 0.83,
# 4bit 0.78, mixed_3_6 0.69, 3bit 0.63, mixed_2_6 0.28, 2bit 0.23.
MIN_TOP1 = {"8bit": 0.88, "6bit": 0.85, "4bit-mixed": 0.72, "4bit": 0.68, "mixed_3_6": 0.55, "3bit": 0.5,
            "mixed_2_6": 0.17, "2bit": 0.12}


def ref_tokens_and_logits(model="tiny-qwen3"):
    r = refs(model)
    tokens = r["logits"]["tokens"]
    logits = np.fromfile(FIXTURES / "refs" / f"{model}.logits64.f32", dtype=np.float32).reshape(len(tokens), -1)
    return tokens, logits


def our_logits(path, tokens, tmp_path):
    out = tmp_path / "logits.f32"
    run(RUN, "score", "--model", path, "--tokens", ",".join(map(str, tokens)), "--logits-out", out, "--threads", "2")
    return np.fromfile(out, dtype=np.float32).reshape(-1, 8192)[-len(tokens):]


def mlx_logits(model, tokens, f32=True):
    if f32:
        model.update(tree_map(lambda x: x.astype(mx.float32) if mx.issubdtype(x.dtype, mx.floating) else x,
                              model.parameters()))
    return np.array(model(mx.array([tokens])).astype(mx.float32))[0]


def mlx_convert(src, dst, *args):
    subprocess.run([sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(src), "--mlx-path", str(dst), "-q",
                    *args], check=True, capture_output=True, text=True)


def load_weights(d):
    w = {}
    for f in sorted(glob.glob(str(d / "model*.safetensors"))):
        w.update(mx.load(f))
    return w


def effective_settings(d):
    """{module: (bits, group)} by mlx-lm's loading rules (entry, else shapes; null group = 64)."""
    q = json.loads((d / "config.json").read_text())["quantization"]
    w = load_weights(d)
    out = {}
    for name in w:
        if not name.endswith(".scales"):
            continue
        p = name[: -len(".scales")]
        entry = q.get(p)
        if isinstance(entry, dict):
            out[p] = (entry.get("bits") or 4, entry.get("group_size") or 64)
        else:
            in_dims = w[p + ".scales"].shape[-1] * q["group_size"]
            out[p] = (w[p + ".weight"].shape[-1] * 32 // in_dims, q["group_size"])
    return out


def assert_same_tensors(a, b):
    wa, wb = load_weights(a), load_weights(b)
    assert set(wa) == set(wb)
    for k in wa:
        assert wa[k].dtype == wb[k].dtype and wa[k].shape == wb[k].shape, k
        assert mx.array_equal(wa[k], wb[k]).item(), k


@pytest.mark.parametrize("recipe", list(MIN_TOP1))
def test_mlx_lm_loads_our_directories(tiny_mlx, recipe, tmp_path):
    tokens, ref = ref_tokens_and_logits()
    model, _ = mlx_load(str(tiny_mlx[recipe]))
    top1 = float((mlx_logits(model, tokens, f32=False).argmax(-1) == ref.argmax(-1)).mean())
    assert top1 >= MIN_TOP1[recipe], (recipe, top1)
    # the same weights in float32: MLX and our runtime compute the same function (measured 2e-5)
    theirs = mlx_logits(model, tokens)
    ours = our_logits(tiny_mlx[recipe], tokens, tmp_path)
    assert np.abs(theirs - ours).max() < 1e-3


def test_bit_identical_to_mlx_lm_convert(tiny_mlx, tmp_path):
    mlx_convert(TINY, tmp_path / "q4", "--q-bits", "4")
    assert_same_tensors(tmp_path / "q4", tiny_mlx["4bit"])
    cfg = json.loads((tmp_path / "q4" / "config.json").read_text())
    ours = json.loads((tiny_mlx["4bit"] / "config.json").read_text())
    assert cfg["quantization"] == ours["quantization"] == ours["quantization_config"]
    # mixed_3_6: mlx-lm lists every module (group_size null); we list the overrides only
    mlx_convert(TINY, tmp_path / "m36", "--quant-predicate", "mixed_3_6")
    assert_same_tensors(tmp_path / "m36", tiny_mlx["mixed_3_6"])
    assert effective_settings(tmp_path / "m36") == effective_settings(tiny_mlx["mixed_3_6"])


def test_moe_bit_identical_to_mlx_lm_convert(tmp_path):
    ours = tmp_path / "ours"
    run(QUANT, "convert", "--model", MOE, "--output", ours, "--formats", "mlx", "--precision", "4bit", "--quiet")
    # mlx-lm's qwen3_moe reads num_experts / top-level rope_theta: give its converter a copy that has them
    src = tmp_path / "src"
    shutil.copytree(MOE, src)
    for f in src.iterdir():
        f.chmod(0o644)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_experts"] = cfg["num_local_experts"]
    cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
    (src / "config.json").write_text(json.dumps(cfg))
    mlx_convert(src, tmp_path / "theirs", "--q-bits", "4")
    assert_same_tensors(tmp_path / "theirs", ours / "mlx" / "4bit-pure")
    q = json.loads((ours / "mlx" / "4bit-pure" / "config.json").read_text())["quantization"]
    assert json.loads((tmp_path / "theirs" / "config.json").read_text())["quantization"] == q
    assert q["model.layers.0.mlp.gate"] == {"group_size": 64, "bits": 8}
    # our directory loads in mlx-lm as it is, and agrees with our runtime in float32
    model, _ = mlx_load(str(ours / "mlx" / "4bit-pure"))
    tokens, _ = ref_tokens_and_logits("tiny-qwen3-moe")
    assert np.abs(mlx_logits(model, tokens) - our_logits(ours / "mlx" / "4bit-pure", tokens, tmp_path)).max() < 1e-3


def mlx_greedy(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(np.array(model(mx.array([ids]))[0, -1]).argmax()))
    return ids[len(prompt):]


def test_mlx_lm_convert_output_runs_in_our_runtime(tmp_path):
    d = tmp_path / "q4"
    mlx_convert(TINY, d, "--q-bits", "4")
    model, tok = mlx_load(str(d))
    model.update(tree_map(lambda x: x.astype(mx.float32) if mx.issubdtype(x.dtype, mx.floating) else x,
                          model.parameters()))
    for case in refs("tiny-qwen3")["greedy"][:2]:
        want = tok.decode(mlx_greedy(model, case["prompt_ids"], 16))
        got = run(RUN, "generate", "--model", d, "--prompt", case["prompt"], "--mode", "raw", "--temperature", "0",
                  "--max-tokens", "16", "--ignore-eos", "--threads", "2").stdout
        assert got.startswith(want), (got, want)
    tokens, _ = ref_tokens_and_logits()
    assert np.abs(mlx_logits(model, tokens) - our_logits(d, tokens, tmp_path)).max() < 1e-3


def test_mx_dequantize_equals_ours(tiny_mlx, tmp_path):
    for recipe in ["4bit", "mixed_3_6"]:
        d = tiny_mlx[recipe]
        w = load_weights(d)
        settings = effective_settings(d)
        for module in ["model.embed_tokens", "model.layers.0.self_attn.q_proj", "model.layers.2.mlp.down_proj",
                       "model.layers.5.self_attn.v_proj", "lm_head"]:
            bits, group = settings[module]
            out = tmp_path / "w.f32"
            run(QUANT, "inspect", d, "--tensor", module, "--dequantize", out)
            ours = np.fromfile(out, dtype=np.float32)
            # bf16 scales/biases widened exactly to f32: the same arithmetic as ours
            theirs = mx.dequantize(w[module + ".weight"], w[module + ".scales"].astype(mx.float32),
                                   w[module + ".biases"].astype(mx.float32), group_size=group, bits=bits)
            assert np.array_equal(np.array(theirs).reshape(-1), ours), (recipe, module)
