"""`llama-pajamas-quant validate` on tiny-qwen3: the report's numbers, thresholds and
exit codes, and `convert --validate`."""
import json
import shutil

import pytest

from conftest import QUANT, ROOT, run

MODEL = ROOT / "models" / "tiny-qwen3"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    r = run(QUANT, "convert", "--model", MODEL, "--output", out, "--precision", "f32,q8_0,q4_k_m", "--quiet",
            "--validate")
    return out, r


def test_convert_validate_reports_each_artifact(converted):
    out, r = converted
    assert r.returncode == 0
    rep = json.loads((out / "validation.json").read_text())
    assert rep["pass"] is True
    arts = {a["precision"]: a for a in rep["artifacts"]}
    assert set(arts) == {"f32", "q8_0", "q4_k_m"}
    assert abs(arts["f32"]["ppl_increase_pct"]) < 0.01 and arts["f32"]["kld_mean"] < 1e-6
    assert arts["f32"]["top1_agreement"] == 1.0
    assert 0 < arts["q8_0"]["ppl_increase_pct"] < 0.5
    assert arts["q8_0"]["kld_mean"] < arts["q4_k_m"]["kld_mean"]
    assert arts["q4_k_m"]["ppl_increase_pct"] < 5
    assert arts["q4_k_m"]["kld_p99"] >= arts["q4_k_m"]["kld_mean"]
    assert rep["baseline"]["ppl"] > 1
    assert arts["f32"]["samples"] == rep["baseline"]["samples"]
    assert "q4_k_m" in r.stdout and "perplexity" in r.stdout


def test_threshold_failure_exits_1(converted, tmp_path):
    out, _ = converted
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    m = json.loads((bad / "manifest.json").read_text())
    q4 = next(a for a in m["artifacts"] if a["precision"] == "q4_k_m")
    q4["precision"] = "q8_0"  # a q4 file held to the q8_0 bar (< 0.5%) must fail
    m["artifacts"] = [q4]
    (bad / "manifest.json").write_text(json.dumps(m))
    r = run(QUANT, "validate", "--original", MODEL, "--quantized", bad, "--chunks", "2", "--metrics",
            "perplexity", check=False)
    assert r.returncode == 1
    rep = json.loads((bad / "validation.json").read_text())
    assert rep["pass"] is False and rep["artifacts"][0]["pass"] is False


@pytest.mark.parametrize("args,needle", [
    (["--original", MODEL, "--quantized", "/nonexistent"], "manifest.json"),
    (["--original", MODEL, "--quantized", ROOT, "--metrics", "bleu"], "bleu"),
    (["--quantized", ROOT], "--original"),
])
def test_validate_errors(args, needle):
    r = run(QUANT, "validate", *args, check=False)
    assert r.returncode != 0
    assert needle in r.stderr
