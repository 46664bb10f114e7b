#!/usr/bin/env python3
"""Peer benchmark: tquant's all-MiniLM-L6-v2 encoder against ONNX Runtime and PyTorch on the CPU.

Same encoder (the BERT example's pretrained weights, no pooler, no head), same token ids (real
test reviews), same threads (2 intra-op everywhere), batch 32 x 128 and 1 x 128. The systems
are timed interleaved: in every round each system runs once per batch size (the order rotates
from round to round), so drift of a shared machine hits all of them alike; the table shows the
median over the rounds. Each INT8 system's sentence embeddings are compared with its own FP32.

Run it through bench/peers/run.sh (set-up, build, then this script); docs/benchmarks.md,
"Peers on CPU", explains the systems and the columns. Logs go to stderr, the table to stdout.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

# name, table label, own FP32 reference (None: an FP32 system)
SYSTEMS = [
    ("tquant_fp32", "tquant FP32 (the BERT example's model)", None),
    ("tquant_int8", "tquant INT8 static (the demo's mapping, per-token keys)", "tquant_fp32"),
    ("tquant_dynamic", "tquant `quantize_dynamic`", "tquant_fp32"),
    ("ort_fp32", "ONNX Runtime FP32, plain export", None),
    ("ort_int8", "ONNX Runtime `quantize_dynamic` per-channel, plain export", "ort_fp32"),
    ("ort_opt_fp32", "ONNX Runtime FP32, BERT-optimized graph", None),
    ("ort_opt_int8", "ONNX Runtime `quantize_dynamic` per-channel, BERT-optimized graph",
     "ort_opt_fp32"),
    ("torch_fp32", "PyTorch FP32 (transformers, SDPA)", None),
    ("torch_dynamic", "PyTorch `quantize_dynamic` (per-tensor qint8)", "torch_fp32"),
]
LABELS = {name: label for name, label, _ in SYSTEMS}
REFERENCES = {name: ref for name, _, ref in SYSTEMS}
ORT_INT8 = ("ort_int8", "ort_opt_int8")
BATCHES = ("b32", "b1")


def log(text):
    print(f"[peers] {text}", file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="bench/peers/run.sh passes these options on; it also takes --skip-build.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median of these)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards per system and batch")
    p.add_argument("--reps-b1", type=int, default=5,
                   help="forwards per round at batch 1 (their mean is the round's time)")
    p.add_argument("--reps-b32", type=int, default=1, help="forwards per round at batch 32")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of every system")
    p.add_argument("--seq", type=int, default=128, help="tokens per review (padded / truncated)")
    p.add_argument("--batch", type=int, default=32, help="the large batch")
    p.add_argument("--cosine-reviews", type=int, default=256,
                   help="test reviews whose embeddings are compared with the own FP32's")
    p.add_argument("--calibration-reviews", type=int, default=256,
                   help="training reviews tquant's static INT8 model is calibrated on")
    p.add_argument("--calibrator", default="mse", choices=["max", "percentile", "entropy", "mse"],
                   help="tquant's range method after calibration (the demo's full runs pick mse)")
    p.add_argument("--pause", type=float, default=0.2,
                   help="seconds of idle between systems, so spinning worker threads of the "
                        "previous one go to sleep")
    p.add_argument("--profile", type=int, default=0, metavar="RUNS",
                   help="after the rounds, a per-op profile (LibTorch's profiler, self time per "
                        "op) of RUNS forwards of each tquant system at each batch, printed after "
                        "the table and written to WORK_DIR/profile_<system>_<batch>.md; 0: none")
    p.add_argument("--systems", default=",".join(n for n, _, _ in SYSTEMS),
                   help="comma-separated subset; an INT8 system brings its FP32 reference")
    p.add_argument("--tquant-bench", default=os.path.join(ROOT, "build", "bench", "peers",
                                                          "tquant_minilm_bench"),
                   help="the C++ server program")
    p.add_argument("--work-dir", default=os.path.join(ROOT, "build", "peers"),
                   help="cached ONNX files, id files, embeddings, the last table (peers_table.md)")
    args = p.parse_args()
    chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in LABELS]
    if unknown:
        p.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(LABELS)}")
    wanted = set(chosen) | {REFERENCES[s] for s in chosen if REFERENCES[s]}
    args.systems = [n for n, _, _ in SYSTEMS if n in wanted]
    if args.rounds < 1 or args.warmup < 0 or args.reps_b1 < 1 or args.reps_b32 < 1:
        p.error("--rounds, --reps-b1 and --reps-b32 must be >= 1, --warmup >= 0")
    return args


def build_systems(args, model_dir, data_dir, log_fn):
    """The chosen systems, in table order; the tquant server (or None)."""
    import peer_onnx
    import peer_systems as ps

    names = set(args.systems)
    server = None
    if names & {"tquant_fp32", "tquant_int8", "tquant_dynamic"}:
        # Started first: it calibrates while the Python side exports and loads its models.
        log_fn("starting tquant_minilm_bench (load, calibrate, convert)")
        server = ps.TquantServer(args.tquant_bench, [
            "--model-dir", model_dir, "--data-dir", data_dir, "--threads", str(args.threads),
            "--calibration-reviews", str(args.calibration_reviews),
            "--calibrator", args.calibrator], args.work_dir)
    systems, fused = {}, {}
    if names & {"ort_fp32", "ort_int8", "ort_opt_fp32", "ort_opt_int8"}:
        paths, fused = peer_onnx.build(model_dir, args.work_dir, args.seq, num_heads=12,
                                       hidden_size=384, log=log_fn)
        files = {"ort_fp32": "plain", "ort_int8": "plain_int8", "ort_opt_fp32": "optimized",
                 "ort_opt_int8": "optimized_int8"}
        for name, file in files.items():
            if name in names:
                systems[name] = ps.OrtSystem(name, LABELS[name], paths[file], args.threads,
                                             REFERENCES[name])
    if names & {"torch_fp32", "torch_dynamic"}:
        fp32, int8 = ps.torch_models(model_dir)
        for name, model in (("torch_fp32", fp32), ("torch_dynamic", int8)):
            if name in names:
                systems[name] = ps.TorchSystem(name, LABELS[name], model, REFERENCES[name])
    if server is not None:
        server.wait_ready()
        for name in ("tquant_fp32", "tquant_int8", "tquant_dynamic"):
            if name in names:
                systems[name] = ps.TquantSystem(name, LABELS[name], server, REFERENCES[name])
    return [systems[n] for n in args.systems], server, fused


def cosines(systems, name, batch):
    """Mean cosine of each INT8 system's embeddings against its own FP32's, and the minimum
    cosine of each FP32 system against the first FP32 (a check that all run the same model on
    the same ids)."""
    embeddings = {}
    for system in systems:
        log(f"embeddings of {system.name}")
        embeddings[system.name] = system.embed(name, batch)
    result = {}
    for system in systems:
        if system.reference:
            result[system.name] = float(
                (embeddings[system.name] * embeddings[system.reference]).sum(axis=1).mean())
    fp32 = [s.name for s in systems if not s.reference]
    agreement = {n: float((embeddings[n] * embeddings[fp32[0]]).sum(axis=1).min())
                 for n in fp32[1:]}
    return result, fp32[0], agreement


def run_rounds(systems, args):
    """times[name][batch] = the per-round times (mean ms of that round's forwards)."""
    reps = {"b32": args.reps_b32, "b1": args.reps_b1}
    if args.warmup:
        log(f"warm-up: {args.warmup} forwards per system and batch")
        for system in systems:
            for batch in BATCHES:
                system.time(batch, args.warmup)
            time.sleep(args.pause)
    times = {s.name: {b: [] for b in BATCHES} for s in systems}
    for r in range(args.rounds):
        shift = r % len(systems)
        for system in systems[shift:] + systems[:shift]:
            for batch in BATCHES:
                times[system.name][batch].append(statistics.mean(system.time(batch, reps[batch])))
            time.sleep(args.pause)
        log(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{s.name} {times[s.name]['b32'][-1]:.0f}/{times[s.name]['b1'][-1]:.1f}"
            for s in systems) + " ms (batch 32 / batch 1)")
    return times


def versions():
    import importlib.metadata as md

    out = []
    for package in ("torch", "onnxruntime", "onnx", "transformers"):
        try:
            out.append(f"{package} {md.version(package)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


def report(args, systems, times, cos, agreement_ref, agreement, fused, machine, started):
    median = {s.name: {b: statistics.median(times[s.name][b]) for b in BATCHES} for s in systems}
    lines = [
        f"peer benchmark, {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} UTC, "
        f"{time.time() - started:.0f} s in all",
        f"MiniLM-L6 encoder (all-MiniLM-L6-v2, no pooler, no head), {args.seq} tokens, "
        f"{args.threads} intra-op threads everywhere (tquant and PyTorch set_num_threads, ONNX "
        f"Runtime intra {args.threads} / inter 1 / sequential); median of {args.rounds} "
        f"interleaved rounds (batch {args.batch}: mean of {args.reps_b32} forward(s) per round, "
        f"batch 1: mean of {args.reps_b1}), {args.warmup} warm-up forwards; cosine: mean over "
        f"{args.cosine_reviews} test reviews of the mean-pooled sentence embedding against the "
        f"system's own FP32; x FP32 = own FP32 ms / ms",
        machine,
        "glibc malloc thresholds (all processes): mmap "
        f"{os.environ.get('MALLOC_MMAP_THRESHOLD_', 'default')}, trim "
        f"{os.environ.get('MALLOC_TRIM_THRESHOLD_', 'default')}",
        f"versions: {versions()}" + (
            "; ORT optimized graph fuses " + ", ".join(f"{v} {k}" for k, v in fused.items())
            if fused else ""),
        "",
        f"| system | batch {args.batch} ms | batch 1 ms | x FP32 b{args.batch} | x FP32 b1 "
        "| cosine vs own FP32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in systems:
        m = median[s.name]
        if s.reference:
            ref = median[s.reference]
            ratios = [f"{ref[b] / m[b]:.2f}x" for b in BATCHES]
            cosine = f"{cos[s.name]:.4f}"
        else:
            ratios, cosine = ["-", "-"], "-"
        lines.append(f"| {s.label} | {m['b32']:.1f} | {m['b1']:.2f} | {ratios[0]} | {ratios[1]} "
                     f"| {cosine} |")
    lines.append("")
    spread = {b: max(max(times[s.name][b]) / min(times[s.name][b]) - 1 for s in systems)
              for b in BATCHES}
    lines.append(f"round-to-round spread (max / min - 1, worst system): batch {args.batch} "
                 f"{spread['b32'] * 100:.0f} %, batch 1 {spread['b1'] * 100:.0f} %")
    if agreement:
        lines.append(f"FP32 agreement (min cosine against {LABELS[agreement_ref]}): " + ", ".join(
            f"{LABELS[n]} {v:.5f}" for n, v in agreement.items()))
    ort = [s.name for s in systems if s.name in ORT_INT8]
    if "tquant_int8" in median and ort:
        parts = []
        for b, label in (("b32", f"batch {args.batch}"), ("b1", "batch 1")):
            best = min(ort, key=lambda n: median[n][b])
            t, o = median["tquant_int8"][b], median[best][b]
            where = "optimized graph" if best == "ort_opt_int8" else "plain export"
            parts.append(f"{label} {o / t:.2f}x (tquant {t:.1f} ms, ORT {where} {o:.1f} ms)")
        lines.append("tquant INT8 vs ORT best INT8: " + ", ".join(parts) +
                     "; x = ORT ms / tquant ms, above 1 means tquant is faster")
    return "\n".join(lines)


def profile_tquant(systems, server, args):
    """(title, markdown table) of a per-op profile of each tquant system at each batch."""
    if server is None or args.profile < 1:
        return []
    profiles = []
    for system in systems:
        if not system.name.startswith("tquant_"):
            continue
        for batch in BATCHES:
            path = os.path.join(args.work_dir, f"profile_{system.name}_{batch}.md")
            log(f"per-op profile of {system.name} at {batch}")
            ms = float(server.request(f"profile {system.name} {batch} {args.profile} {path}"))
            with open(path, encoding="utf-8") as f:
                table = f.read().rstrip()
            profiles.append((f"per-op profile: {system.label}, {batch}, {args.profile} forwards "
                             f"under the profiler ({ms:.1f} ms each)", table))
    return profiles


def main():
    args = parse_args()
    started = time.time()
    # Never a model hub: every model comes from the local safetensors.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    import peer_inputs
    import peer_machine

    watch = peer_machine.RunWatch()
    watch.start()
    os.makedirs(args.work_dir, exist_ok=True)
    model_dir, data_dir = peer_inputs.read_assets(ROOT)
    log(f"model {model_dir}; data {data_dir}; systems {', '.join(args.systems)}")
    test = peer_inputs.read_reviews(os.path.join(data_dir, "fine_foods_test.csv"))
    ids, mask = peer_inputs.tokenize(model_dir, test, args.seq)
    longest = peer_inputs.longest_first(mask, args.batch)  # as the demo's latency batch
    inputs = {"b32": (ids[longest], mask[longest]), "b1": (ids[longest[:1]], mask[longest[:1]]),
              "cosine": (ids[:args.cosine_reviews], mask[:args.cosine_reviews])}
    systems, server, fused = build_systems(args, model_dir, data_dir, log)
    try:
        for system in systems:
            for name, (i, m) in inputs.items():
                system.add_input(name, i, m)
        cos, agreement_ref, agreement = cosines(systems, "cosine", args.batch)
        times = run_rounds(systems, args)
        profiles = profile_tquant(systems, server, args)
    finally:
        if server is not None:
            server.close()
    watch.stop()
    table = report(args, systems, times, cos, agreement_ref, agreement, fused,
                   peer_machine.describe(watch), started)
    print(table, flush=True)
    with open(os.path.join(args.work_dir, "peers_table.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    for title, text in profiles:
        print(f"\n{title}\n\n{text}", flush=True)


if __name__ == "__main__":
    main()
