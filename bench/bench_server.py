#!/usr/bin/env python3
"""Server benchmark helper (bench/bench_server.sh runs it): aggregate decode tokens/s and
time to first token at 1, 2, 4, 8 concurrent streaming chat requests, for
`llama-pajamas-run serve` and llama-cpp-python's OpenAI server on the same GGUF file.

Each level runs ROUNDS rounds; in a round every one of the C clients sends one streaming
request (max_tokens N, temperature 0.8, its own seed) at the same moment. Tokens are
counted from usage when the server reports it (stream_options.include_usage), else as
content chunks. aggregate tok/s = all tokens of the round / the round's wall time;
decode tok/s = tokens after each stream's first / (last token time - first first-token
time). Only 127.0.0.1 is used; servers are stopped at the end."""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

PROMPT = [{"role": "user", "content": "Write a short Python function that reads a file and counts its lines."}]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                return json.loads(r.read())["data"][0]["id"]
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("server did not become ready")


LOGIT_BIAS = {}  # end-of-generation tokens banned, so every stream produces max_tokens tokens


def stream_once(url, model, seed, max_tokens, out):
    body = json.dumps({"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0.8,
                       "seed": seed, "stream": True, "stream_options": {"include_usage": True},
                       "logit_bias": LOGIT_BIAS}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = last = None
    chunks = 0
    usage = None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices") or []:
                d = ch.get("delta") or {}
                if d.get("content") or d.get("reasoning_content"):
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    chunks += 1
    tokens = usage["completion_tokens"] if usage else chunks
    out.append({"t0": t0, "first": first, "last": last, "tokens": tokens})


def run_level(url, model, clients, max_tokens, rounds):
    agg, dec, ttft, n_tokens = [], [], [], []
    for rnd in range(rounds):
        results = []
        threads = [threading.Thread(target=stream_once, args=(url, model, 1000 * rnd + i, max_tokens, results))
                   for i in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        assert len(results) == clients, "a request failed"
        total = sum(r["tokens"] for r in results)
        n_tokens += [r["tokens"] for r in results]
        agg.append(total / wall)
        firsts = [r["first"] for r in results if r["first"] is not None]
        lasts = [r["last"] for r in results if r["last"] is not None]
        if firsts and max(lasts) > min(firsts):
            dec.append(sum(r["tokens"] - 1 for r in results) / (max(lasts) - min(firsts)))
        ttft += [r["first"] - r["t0"] for r in results if r["first"] is not None]
    return {"clients": clients, "tokens_per_stream": round(statistics.mean(n_tokens), 1),
            "aggregate_tok_s": round(statistics.median(agg), 1),
            "decode_tok_s": round(statistics.median(dec), 1) if dec else None,
            "ttft_ms_mean": round(1000 * statistics.mean(ttft), 1),
            "ttft_ms_p50": round(1000 * statistics.median(ttft), 1),
            "ttft_ms_max": round(1000 * max(ttft), 1)}


def eog_bias(url):
    """Ban the chat end tokens (ids from our server's tokenizer; both servers load the same GGUF)."""
    req = urllib.request.Request(url + "/tokenize", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"content": "<|im_end|><|endoftext|>", "parse_special": True}).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return {str(t): -100 for t in json.loads(r.read())["tokens"]}


def bench_server(name, cmd, url, levels, max_tokens, rounds, log_path):
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        model = wait_ready(url, proc)
        if not LOGIT_BIAS:
            LOGIT_BIAS.update(eog_bias(url))
        run_level(url, model, 1, 8, 1)  # warm-up
        rows = []
        for c in levels:
            row = run_level(url, model, c, max_tokens, rounds)
            rows.append(row)
            print(f"{name:18s} {c:3d} {row['tokens_per_stream']:8.1f} {row['aggregate_tok_s']:10.1f} {row['decode_tok_s'] or 0:10.1f} "
                  f"{row['ttft_ms_p50']:10.1f} {row['ttft_ms_max']:10.1f}", flush=True)
        return rows
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-bin", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--levels", default="1,2,4,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--out", required=True)
    ap.add_argument("--logdir", default="/tmp")
    ap.add_argument("--skip-peer", action="store_true")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    print(f"{'server':18s} {'c':>3s} {'tok/req':>8s} {'agg tok/s':>10s} {'dec tok/s':>10s} {'ttft p50':>10s} {'ttft max':>10s}")
    port = free_port()
    ours = bench_server("llama-pajamas", [a.run_bin, "serve", "--model", a.gguf, "--port", str(port),
                                          "--parallel", str(max(levels)), "--ctx-size", str(a.ctx),
                                          "--threads", str(a.threads), "--quiet"],
                        f"http://127.0.0.1:{port}", levels, a.max_tokens, a.rounds,
                        os.path.join(a.logdir, "bench-server-ours.log"))
    results = {"llama-pajamas": ours}
    if not a.skip_peer:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError:
            print("llama-cpp-python[server] not installed: peer skipped", file=sys.stderr)
        else:
            port = free_port()
            # llama-cpp-python's server decodes one request at a time; by default a new request
            # interrupts the running one, which would cut streams short
            peer = bench_server("llama-cpp-python", [sys.executable, "-m", "llama_cpp.server", "--model", a.gguf,
                                                     "--host", "127.0.0.1", "--port", str(port), "--n_ctx",
                                                     str(a.ctx), "--n_threads", str(a.threads),
                                                     "--interrupt_requests", "False"],
                                f"http://127.0.0.1:{port}", levels, a.max_tokens, a.rounds,
                                os.path.join(a.logdir, "bench-server-peer.log"))
            results["llama-cpp-python"] = peer
    doc = {"gguf": os.path.basename(a.gguf), "threads": a.threads, "max_tokens": a.max_tokens, "rounds": a.rounds,
           "cpu": cpu_name(), "results": results}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {a.out}")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
