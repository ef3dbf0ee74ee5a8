"""Peer for bench_convert.sh: llama.cpp's quantizer (via llama-cpp-python) on a GGUF.
usage: peer_quantize.py SRC.gguf DST.gguf FTYPE THREADS"""
import ctypes
import sys

import llama_cpp

src, dst, ftype, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = ftype
params.nthread = threads
sys.exit(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
