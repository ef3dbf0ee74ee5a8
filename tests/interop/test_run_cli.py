"""End-to-end tests of `llama-pajamas-run` on the bundled model: greedy output equals the
HF reference (from GGUF and straight from the HF directory), equals llama.cpp's on the same
quantized GGUF, and bad input gets a one-line error and a non-zero exit."""
import json

import numpy as np

import pytest

from conftest import FIXTURES, ROOT, RUN, refs, run

MODEL_DIR = ROOT / "models" / "tiny-qwen3"


def generate(model, prompt, n, *extra):
    r = run(RUN, "generate", "--model", model, "--prompt", prompt, "--mode", "raw", "--temperature", "0",
            "--max-tokens", n, "--ignore-eos", "--quiet", "--threads", "2", *extra)
    assert r.stdout.endswith("\n")
    return r.stdout[:-1]


@pytest.mark.parametrize("source", ["f32", "f16", "bf16", "hf"])
def test_greedy_matches_hf_reference(tiny_gguf, source):
    model = MODEL_DIR if source == "hf" else tiny_gguf[source]
    for case in refs("tiny-qwen3")["greedy"]:
        assert generate(model, case["prompt"], len(case["greedy_ids"])) == case["text"], case["prompt"]


llama_cpp = pytest.importorskip("llama_cpp")


def llama_cpp_greedy(path, prompt_ids, n):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)
    toks = []
    for t in llm.generate(prompt_ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        toks.append(t)
        if len(toks) == n:
            break
    return llm.detokenize(toks).decode("utf-8", errors="replace")


@pytest.mark.parametrize("precision", ["f32", "f16", "bf16"])
def test_greedy_equals_llama_cpp_on_same_file(tiny_gguf, precision):
    for case in refs("tiny-qwen3")["greedy"]:
        theirs = llama_cpp_greedy(tiny_gguf[precision], case["prompt_ids"], 48)
        assert generate(tiny_gguf[precision], case["prompt"], 48) == theirs, case["prompt"]


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl(ref, test):
    p, q = softmax(ref), softmax(test)
    return float((p * (np.log(p) - np.log(q))).sum(-1).mean())


@pytest.mark.parametrize("precision", ["q8_0", "q6_k", "q4_k_m", "q2_k"])
def test_quantized_logits_as_close_to_hf_as_llama_cpp(tiny_gguf, precision, tmp_path):
    """Same quantized file in both runtimes, scored on the 64 reference tokens: our KL
    divergence from the HF float32 logits is no worse than llama.cpp's (float summation
    order and llama.cpp's F16 KV cache keep the two from being bit-identical), and both
    pick the same top-1 token almost everywhere."""
    r = refs("tiny-qwen3")
    toks = r["logits"]["tokens"]
    ref = np.fromfile(FIXTURES / "refs" / "tiny-qwen3.logits64.f32", dtype=np.float32).reshape(64, -1)
    out = tmp_path / "ours.f32"
    run(RUN, "score", "--model", tiny_gguf[precision], "--tokens", ",".join(map(str, toks)), "--logits-out", out)
    ours = np.fromfile(out, dtype=np.float32).reshape(64, -1)
    llm = llama_cpp.Llama(model_path=str(tiny_gguf[precision]), n_ctx=128, n_threads=2, verbose=False,
                          logits_all=True)
    llm.eval(toks)
    theirs = np.array(llm.scores[:64])
    assert kl(ref, ours) <= kl(ref, theirs) * 1.15 + 2e-4
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.9


def test_manifest_dir_picks_an_artifact(tiny_gguf):
    out = tiny_gguf["q4_k_m"].parents[2]
    case = refs("tiny-qwen3")["greedy"][0]
    direct = generate(tiny_gguf["q4_k_m"], case["prompt"], 8)
    assert generate(out, case["prompt"], 8) == direct  # q4_k_m is preferred


def test_seeded_sampling_is_reproducible(tiny_gguf):
    args = ["generate", "--model", tiny_gguf["q8_0"], "--prompt", "NAME", "--mode", "raw", "--temperature", "0.9",
            "--max-tokens", "24", "--quiet", "--seed", "7"]
    a, b = run(RUN, *args).stdout, run(RUN, *args).stdout
    c = run(RUN, *args[:-1], "8").stdout
    assert a == b and a != c


def test_chat_template_path(tiny_gguf):
    r = run(RUN, "generate", "--model", tiny_gguf["q8_0"], "--prompt", "What does ls do?", "--mode", "non-thinking",
            "--max-tokens", "8", "--seed", "1")
    assert "prompt" in r.stderr and "generated" in r.stderr


def test_chat_command_multi_turn(tiny_gguf, tmp_path):
    save = tmp_path / "conv.json"
    r = run(RUN, "chat", "--model", tiny_gguf["q8_0"], "--max-tokens", "6", "--mode", "non-thinking",
            input=f"hello\n/save {save}\nsecond turn\n/reset\n/quit\n")
    assert r.returncode == 0
    conv = json.loads(save.read_text())
    assert [m["role"] for m in conv] == ["user", "assistant"]
    assert "<think>" not in conv[1]["content"]


@pytest.mark.parametrize("args,needle", [
    (["--model", "/nonexistent.gguf", "--prompt", "x"], "/nonexistent.gguf"),
    (["--prompt", "x"], "--model"),
    (["--model", "MODEL", "--prompt", "x", "--temperature", "hot"], "--temperature"),
    (["--model", "MODEL", "--prompt", "word " * 400, "--ctx-size", "64"], "context"),
    (["--model", "MODEL", "--prompt", "x", "--backend", "tpu"], "--backend"),
])
def test_bad_input_one_line_error(tiny_gguf, args, needle):
    args = [str(tiny_gguf["q8_0"]) if a == "MODEL" else a for a in args]
    r = run(RUN, "generate", *args, check=False)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_invalid_utf8_prompt(tiny_gguf):
    import subprocess
    r = subprocess.run([str(RUN), "generate", "--model", str(tiny_gguf["q8_0"]), "--prompt", b"bad \xff\xfe utf8"],
                       capture_output=True)
    assert r.returncode != 0 and b"UTF-8" in r.stderr


def test_corrupt_gguf(tmp_path, tiny_gguf):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(tiny_gguf["q8_0"].read_bytes()[:100000])
    r = run(RUN, "generate", "--model", bad, "--prompt", "x", check=False)
    assert r.returncode != 0 and "bad.gguf" in r.stderr


def test_benchmark_json(tiny_gguf, tmp_path):
    out = tmp_path / "b.json"
    run(RUN, "benchmark", "--model", tiny_gguf["q4_k_m"], "--context-lengths", "64,128", "--n-gen", "8", "--json", out)
    j = json.loads(out.read_text())
    assert [r["context"] for r in j["results"]] == [64, 128]
    assert all(r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 for r in j["results"])
