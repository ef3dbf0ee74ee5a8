"""Peer for bench_runtime.sh: prefill and decode tokens/s of llama.cpp (llama-cpp-python)
on a GGUF, measured the way `llama-pajamas-run benchmark` measures: prefill DEPTH
pseudo-random tokens in one eval, then N_GEN single-token evals.
usage: peer_llama_bench.py MODEL.gguf DEPTH N_GEN THREADS  -> JSON on stdout"""
import json
import sys
import time

import llama_cpp

path, depth, n_gen, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, n_ctx=depth + n_gen + 8, n_batch=512, n_threads=threads,
                      n_threads_batch=threads, verbose=False)
x = 12345
toks = []
for _ in range(depth + n_gen):
    x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
    toks.append((x >> 8) % 1000 + 10)
t0 = time.perf_counter()
llm.eval(toks[:depth])
t1 = time.perf_counter()
for t in toks[depth:]:
    llm.eval([t])
t2 = time.perf_counter()
print(json.dumps({"prefill_tok_s": depth / (t1 - t0), "decode_tok_s": n_gen / (t2 - t1)}))
