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


def llama_greedy(path, prompt_ids, n, **kw):
    """n greedy tokens of llama-cpp-python on a GGUF; kw: more Llama() options (KV types)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, **kw)
    out = []
    for tok in llm.generate(prompt_ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(tok)
        if len(out) == n:
            break
    return out


# ---- `llama-pajamas-run serve`: a server on a free loopback port (test_server_*.py, test_webui.py) ----
import signal  # noqa: E402
import time  # noqa: E402

SERVER_API_KEY = "lp-test-key"
SERVER_MODEL_DIR = ROOT / "models" / "tiny-qwen3"


class ServerProcess:
    """A running `serve`: url, pid, api_key; stop() sends SIGTERM and returns the exit code."""

    def __init__(self, proc, host, port, api_key, log_path):
        self.proc, self.host, self.port, self.api_key, self.log_path = proc, host, port, api_key, log_path
        self.url = f"http://{host}:{port}"
        self.pid = proc.pid

    def headers(self):
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def rss_kb(self):
        for line in open(f"/proc/{self.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_idle(self, timeout):
        """Poll /health until no slot is busy and nothing is queued: that health, or None
        after `timeout` seconds."""
        import requests

        deadline = time.time() + timeout
        while time.time() < deadline:
            h = requests.get(self.url + "/health", timeout=10).json()
            if h["slots_busy"] == 0 and h["queue_depth"] == 0:
                return h
            time.sleep(0.02)
        return None

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not exit after SIGTERM:\n" + self.log())
        return self.proc.returncode


def start_server(workdir, *extra, model=SERVER_MODEL_DIR, api_key=None, timeout=60):
    """Start `serve` on a free loopback port (--port 0) and wait until it listens."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "ready"
    log_path = workdir / "server.log"
    if ready.exists():
        ready.unlink()
    cmd = [str(RUN), "serve", "--model", str(model), "--host", "127.0.0.1", "--port", "0",
           "--ready-file", str(ready), "--threads", "2", *[str(a) for a in extra]]
    if api_key:
        cmd += ["--api-key", api_key]
    env = dict(os.environ, LP_SERVE_TEST_HOOKS="1")
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n" + log_path.read_text())
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("serve did not start listening:\n" + log_path.read_text())
        time.sleep(0.05)
    host, port = ready.read_text().split()
    return ServerProcess(proc, host, int(port), api_key, log_path)


@pytest.fixture(scope="session")
def lp_server(tmp_path_factory):
    """One server for the API tests: tiny-qwen3 from its HF dir, 4 slots, an API key."""
    if not RUN.exists():
        pytest.skip(f"{RUN} not built")
    srv = start_server(tmp_path_factory.mktemp("server"), "--parallel", "4", "--ctx-size", "512",
                       "--max-body", "1048576", api_key=SERVER_API_KEY)
    yield srv
    assert srv.stop() == 0, srv.log()


# ---- MLX (test_mlx_interop.py) ----
MLX_RECIPES = ["4bit", "4bit-mixed", "8bit", "6bit", "3bit", "2bit", "mixed_3_6", "mixed_2_6"]


@pytest.fixture(scope="session")
def tiny_mlx(tmp_path_factory):
    """tiny-qwen3 converted to every MLX recipe in one pass: {recipe: directory}."""
    out = tmp_path_factory.mktemp("tiny-qwen3-mlx")
    run(QUANT, "convert", "--model", FIXTURES / "models" / "tiny-qwen3", "--output", out, "--formats", "mlx",
        "--precision", ",".join(MLX_RECIPES), "--quiet")
    manifest = json.loads((out / "manifest.json").read_text())
    dirs = {a["precision"]: out / a["path"] for a in manifest["artifacts"] if a["format"] == "mlx"}
    assert set(dirs) == set(MLX_RECIPES)
    return dirs
