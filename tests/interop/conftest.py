"""Shared fixtures for the interop suite: where the binaries and the shared
fixtures are, and GGUF conversions of the bundled model made once per session."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LP_BUILD_DIR", ROOT / "build"))
FIXTURES = Path(os.environ.get("LP_FIXTURES_DIR", ROOT.parent / "shared" / "fixtures"))
QUANT = BUILD / "llama-pajamas-quant"
RUN = BUILD / "llama-pajamas-run"


def run(*args, check=True, **kw):
    """Run a command, returning CompletedProcess with text output."""
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def fixtures():
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """tiny-qwen3 converted to several precisions: {precision: path}."""
    out = tmp_path_factory.mktemp("tiny-qwen3")
    precisions = ["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k"]
    run(QUANT, "convert", "--model", FIXTURES / "models" / "tiny-qwen3", "--output", out,
        "--precision", ",".join(precisions), "--quiet")
    manifest = json.loads((out / "manifest.json").read_text())
    paths = {a["precision"]: out / a["path"] for a in manifest["artifacts"] if a["format"] == "gguf"}
    assert set(paths) == set(precisions)
    return paths


def refs(model):
    return json.loads((FIXTURES / "refs" / f"{model}.json").read_text())
