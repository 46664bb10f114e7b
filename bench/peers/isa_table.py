#!/usr/bin/env python3
"""The converted MiniLM encoder against its own FP32 on the CPUs users have, in one run.

One tquant_minilm_bench server per instruction-set level, each started with the environment
that makes both oneDNN and tquant behave as that CPU would (docs/backends.md, "Every CPU"):

  native        nothing set: this CPU's own level
  avx512_core   ONEDNN_MAX_CPU_ISA=AVX512_CORE  (AVX-512 without VNNI, as Skylake-SP)
  avx2          ONEDNN_MAX_CPU_ISA=AVX2         (AVX2 only, as Haswell or AMD Zen 1-3)

ONEDNN_MAX_CPU_ISA caps tquant's own kernels too. LibTorch's FP32 Linear runs MKL, which that
variable does not cap, so each capped server also gets MKL_ENABLE_INSTRUCTIONS (AVX512 or AVX2):
its FP32 baseline is then the FP32 that CPU would run. Rounds are interleaved over every server
and model; each figure is the median of `--rounds` rounds of `--reps` forwards. glibc defaults.

  bench/peers/isa_table.py [--batch 32 1] [--rounds 5] [--reps 3] [--threads 2]
                           [--levels native avx512_core avx2]

Needs the built build/bench/peers/tquant_minilm_bench and the BERT assets
(scripts/setup_bert_assets.sh); tokenizes real test reviews with the model's tokenizer.json
(PyPI `tokenizers`, installed into the project's .venv by bench/peers/run.sh).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peer_inputs  # noqa: E402
import peer_machine  # noqa: E402
from peer_systems import TquantServer  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LEVELS = {
    "native": {},
    "avx512_core": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[32, 1])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration-reviews", type=int, default=256)
    p.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    p.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "peers",
                                                    "tquant_minilm_bench"))
    return p.parse_args()


def start_server(args, level, model_dir, data_dir, work_dir):
    saved = dict(os.environ)
    try:
        for key in ("ONEDNN_MAX_CPU_ISA", "TQUANT_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"):
            os.environ.pop(key, None)
        os.environ.update(LEVELS[level])
        server = TquantServer(args.bench, [
            "--model-dir", model_dir, "--data-dir", data_dir, "--threads", str(args.threads),
            "--calibration-reviews", str(args.calibration_reviews)], work_dir)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    server.wait_ready()
    return server


def main():
    args = parse_args()
    model_dir, data_dir = peer_inputs.read_assets(ROOT)
    reviews = peer_inputs.read_reviews(os.path.join(data_dir, "fine_foods_test.csv"))
    ids, mask = peer_inputs.tokenize(model_dir, reviews[: max(args.batch)], args.seq)
    model, flags = peer_machine._cpuinfo()
    print(f"machine: {model}; flags: "
          f"{' '.join(f for f in ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8') if f in flags)}")
    print(f"threads {args.threads}, seq {args.seq}, {args.rounds} interleaved rounds x "
          f"{args.reps} forwards, median; glibc malloc defaults")
    with tempfile.TemporaryDirectory(prefix="tquant-isa-") as work_dir:
        servers = {}
        for level in args.levels:
            print(f"[isa] starting {level} ({LEVELS[level] or 'no cap'}): load, calibrate, convert",
                  file=sys.stderr, flush=True)
            level_dir = os.path.join(work_dir, level)
            os.makedirs(level_dir)
            servers[level] = start_server(args, level, model_dir, data_dir, level_dir)
        for level, server in servers.items():
            for b in args.batch:
                server.send_input(f"b{b}", ids[:b], mask[:b])
        times = {(level, system, b): [] for level in servers for system in
                 ("tquant_fp32", "tquant_int8") for b in args.batch}
        for r in range(args.rounds):
            for level, server in servers.items():
                for b in args.batch:
                    for system in ("tquant_fp32", "tquant_int8"):
                        ms = [float(v) for v in
                              server.request(f"time {system} b{b} {args.reps}").split()]
                        times[(level, system, b)].append(statistics.median(ms))
            print(f"[isa] round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        for server in servers.values():
            server.close()
    print()
    print("| level | environment | batch | FP32 ms | INT8 ms | INT8 speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for level in servers:
        env = " ".join(f"{k}={v}" for k, v in LEVELS[level].items()) or "(none)"
        for b in args.batch:
            fp32 = statistics.median(times[(level, "tquant_fp32", b)])
            int8 = statistics.median(times[(level, "tquant_int8", b)])
            print(f"| {level} | {env} | {b} | {fp32:.1f} | {int8:.1f} | {fp32 / int8:.2f}x |")
    print(f"\nload average at the end: {peer_machine.load_average()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
