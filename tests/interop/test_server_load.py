"""Bounded loopback load on `llama-pajamas-run serve`: 64 chat requests from 8 concurrent
clients over 4 slots (so requests queue), most streaming, some hanging up early (mid-stream
or before a non-streamed answer). Zero failures, every slot idle afterwards, and the
server's resident memory back near its baseline (a second identical round must not grow
it further: no per-request leak). Everything stays on 127.0.0.1 and ends in under 60 s."""
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import RUN, start_server

N_REQUESTS = 64
N_CLIENTS = 8
MAX_TOKENS = 48
MSG = [{"role": "user", "content": "Explain what a file descriptor is."}]


def streaming(srv, i):
    body = {"messages": MSG, "max_tokens": MAX_TOKENS, "stream": True, "seed": i, "temperature": 0.8}
    with requests.post(srv.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        assert r.status_code == 200, r.text
        events, finish = 0, None
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith(b"data: ")
            data = line[6:]
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            assert "error" not in chunk, chunk
            events += 1
            if chunk["choices"] and chunk["choices"][0]["finish_reason"]:
                finish = chunk["choices"][0]["finish_reason"]
        assert finish in ("stop", "length") and events >= 2
    return "stream"


def stream_then_hang_up(srv, i):
    body = {"messages": MSG, "max_tokens": 4000, "stream": True, "seed": i}
    r = requests.post(srv.url + "/v1/chat/completions", json=body, stream=True, timeout=60)
    assert r.status_code == 200
    lines = r.iter_lines()
    got = 0
    while got < 3:
        if next(lines):
            got += 1
    r.close()  # mid-stream: the server must cancel and free the slot
    return "hangup-stream"


def blocking(srv, i):
    r = requests.post(srv.url + "/v1/chat/completions", timeout=60,
                      json={"messages": MSG, "max_tokens": MAX_TOKENS, "seed": i})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] <= MAX_TOKENS
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    return "blocking"


def blocking_then_hang_up(srv, i):
    body = json.dumps({"messages": MSG, "max_tokens": 4000, "seed": i})
    s = socket.create_connection((srv.host, srv.port), timeout=30)
    s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    time.sleep(0.05)
    s.close()  # before the answer: the server notices while waiting and cancels
    return "hangup-blocking"


KINDS = [streaming, streaming, stream_then_hang_up, blocking, streaming, blocking_then_hang_up, streaming, blocking]


def run_round(srv):
    with ThreadPoolExecutor(max_workers=N_CLIENTS) as pool:
        futures = [pool.submit(KINDS[i % len(KINDS)], srv, i) for i in range(N_REQUESTS)]
        return [f.result() for f in futures]  # re-raises any client-side failure


def wait_idle(srv, timeout=10):
    h = srv.wait_idle(timeout)
    assert h is not None, f"server not idle after {timeout} s"
    return h


def metric(srv, name):
    for line in requests.get(srv.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(name)


def test_bounded_load(tmp_path):
    if not RUN.exists():
        pytest.skip(f"{RUN} not built")
    t_start = time.time()
    srv = start_server(tmp_path, "--parallel", "4", "--max-queue", "64", "--ctx-size", "4096", "--quiet")
    try:
        # warm-up: allocator arenas, caches, the first connection threads
        with ThreadPoolExecutor(max_workers=N_CLIENTS) as pool:
            list(pool.map(lambda i: blocking(srv, i), range(N_CLIENTS)))
        wait_idle(srv)
        baseline = srv.rss_kb()

        kinds = run_round(srv)
        assert len(kinds) == N_REQUESTS
        wait_idle(srv)
        after_first = srv.rss_kb()
        kinds = run_round(srv)
        wait_idle(srv)
        after_second = srv.rss_kb()

        assert after_first - baseline < 64 * 1024, (baseline, after_first)  # KB
        assert after_second - after_first < 8 * 1024, (after_first, after_second)
        statuses = {}
        for line in requests.get(srv.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith('lp_requests_total{endpoint="/v1/chat/completions"'):
                statuses[line.split('status="')[1].split('"')[0]] = float(line.split()[-1])
        hangups = 2 * sum(1 for i in range(N_REQUESTS)
                          if KINDS[i % len(KINDS)] in (stream_then_hang_up, blocking_then_hang_up))
        # every completed request answered 200; every hang-up is logged as 499 (client closed)
        assert statuses == {"200": N_CLIENTS + 2 * N_REQUESTS - hangups, "499": hangups}
        print(f"RSS KB: baseline {baseline}, after round 1 {after_first}, after round 2 {after_second}")
        assert metric(srv, "lp_slots_busy") == 0
        assert srv.stop() == 0, srv.log()
    finally:
        srv.stop()
    assert time.time() - t_start < 60
