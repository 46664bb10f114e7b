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
    ("pt2e_fp32", "PyTorch FP32, torch.export + torch.compile (freezing)", None),
    ("pt2e_int8", "PyTorch PT2E X86InductorQuantizer + torch.compile", "pt2e_fp32"),
    ("openvino_fp32", "OpenVINO FP32 (f32 precision hint)", None),
    ("openvino_int8", "OpenVINO INT8 (NNCF PTQ, transformer preset)", "openvino_fp32"),
    ("ct2_fp32", "CTranslate2 FP32", None),
    ("ct2_int8", "CTranslate2 INT8 (int8_float32)", "ct2_fp32"),
]
LABELS = {name: label for name, label, _ in SYSTEMS}
REFERENCES = {name: ref for name, _, ref in SYSTEMS}
ORT_INT8 = ("ort_int8", "ort_opt_int8")
BATCHES = ("b32", "b1")
# Input settings: every row padded to --seq tokens, or each batch padded to its longest row
# (Hugging Face tokenizers' padding=True).
SETTINGS = ("fixed", "dynamic")
INPUTS = tuple(f"{b}_{s}" for s in SETTINGS for b in BATCHES)


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


def build_systems(args, model_dir, data_dir, calibration, log_fn):
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
    if names & {"pt2e_fp32", "pt2e_int8"}:
        import peer_pt2e

        modules = dict(zip(("pt2e_fp32", "pt2e_int8"),
                           peer_pt2e.build(model_dir, calibration, log_fn)))
        for name in ("pt2e_fp32", "pt2e_int8"):
            if name in names:
                systems[name] = peer_pt2e.Pt2eSystem(name, LABELS[name], modules[name],
                                                     REFERENCES[name])
    if names & {"openvino_fp32", "openvino_int8"}:
        import peer_openvino

        paths = peer_openvino.build(model_dir, args.work_dir, calibration, log_fn)
        fake_quantize_ops = peer_openvino.count_int8_ops(paths["int8"])
        if "openvino_int8" in names and fake_quantize_ops == 0:
            raise SystemExit("peer bench: NNCF quantized nothing (no FakeQuantize in the IR)")
        log_fn(f"OpenVINO INT8 IR: {fake_quantize_ops} FakeQuantize ops")
        for name, file in (("openvino_fp32", "fp32"), ("openvino_int8", "int8")):
            if name in names:
                systems[name] = peer_openvino.OpenVinoSystem(name, LABELS[name], paths[file],
                                                             args.threads, REFERENCES[name])
    if names & {"ct2_fp32", "ct2_int8"}:
        import peer_ct2

        folders = peer_ct2.build(model_dir, args.work_dir, log_fn)
        for name, key, compute in (("ct2_fp32", "fp32", "float32"),
                                   ("ct2_int8", "int8", "int8_float32")):
            if name in names:
                systems[name] = peer_ct2.Ct2System(name, LABELS[name], folders[key], compute,
                                                   args.threads, REFERENCES[name])
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
    """times[name][input] = the per-round times (mean ms of that round's forwards), for every
    input of INPUTS (batch x padding setting)."""
    reps = {f"{b}_{st}": (args.reps_b32 if b == "b32" else args.reps_b1)
            for b in BATCHES for st in SETTINGS}
    if args.warmup:
        log(f"warm-up: {args.warmup} forwards per system and input")
        for system in systems:
            for name in INPUTS:
                system.time(name, args.warmup)
            time.sleep(args.pause)
    times = {s.name: {i: [] for i in INPUTS} for s in systems}
    for r in range(args.rounds):
        shift = r % len(systems)
        for system in systems[shift:] + systems[:shift]:
            for name in INPUTS:
                times[system.name][name].append(statistics.mean(system.time(name, reps[name])))
            time.sleep(args.pause)
        log(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{s.name} {times[s.name]['b32_fixed'][-1]:.0f}/{times[s.name]['b1_fixed'][-1]:.1f}"
            for s in systems) + " ms (batch 32 / batch 1, fixed length)")
    return times


def versions():
    import importlib.metadata as md

    out = []
    for package in ("torch", "onnxruntime", "onnx", "transformers", "openvino", "nncf",
                    "ctranslate2", "torchao"):
        try:
            out.append(f"{package} {md.version(package)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


def setting_table(args, systems, median, cos, setting):
    """The markdown table of one input setting."""
    lines = [f"| system | pads | batch {args.batch} ms | batch 1 ms | x FP32 b{args.batch} "
             "| x FP32 b1 | cosine vs own FP32 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for s in systems:
        m = {b: median[s.name][f"{b}_{setting}"] for b in BATCHES}
        if s.reference:
            ref = {b: median[s.reference][f"{b}_{setting}"] for b in BATCHES}
            ratios = [f"{ref[b] / m[b]:.2f}x" for b in BATCHES]
            cosine = f"{cos[s.name]:.4f}"
        else:
            ratios, cosine = ["-", "-"], "-"
        pads = "yes" if getattr(s, "pads", True) else "no"
        lines.append(f"| {s.label} | {pads} | {m['b32']:.1f} | {m['b1']:.2f} | {ratios[0]} "
                     f"| {ratios[1]} | {cosine} |")
    return lines


def tquant_lead(args, systems, median, setting):
    """One line: the fastest tquant INT8 against every other system's INT8 (x = peer ms /
    tquant ms, above 1 means tquant is faster)."""
    ours = [s.name for s in systems if s.name.startswith("tquant_") and s.reference]
    peers = [s.name for s in systems if not s.name.startswith("tquant_") and s.reference]
    if not ours or not peers:
        return None
    parts = []
    for b, label in (("b32", f"batch {args.batch}"), ("b1", "batch 1")):
        key = f"{b}_{setting}"
        best = min(ours, key=lambda n: median[n][key])
        ratios = ", ".join(f"{n} {median[n][key] / median[best][key]:.2f}x" for n in peers)
        parts.append(f"{label}: {best} against {ratios}")
    return "fastest tquant INT8 vs each peer INT8 (" + setting + "): " + "; ".join(parts)


def report(args, systems, times, cos, agreement_ref, agreement, fused, machine, started, lengths):
    median = {s.name: {i: statistics.median(times[s.name][i]) for i in INPUTS} for s in systems}
    lines = [
        f"peer benchmark, {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} UTC, "
        f"{time.time() - started:.0f} s in all",
        f"MiniLM-L6 encoder (all-MiniLM-L6-v2, no pooler, no head), "
        f"{args.threads} intra-op threads everywhere (tquant and PyTorch set_num_threads, ONNX "
        f"Runtime intra {args.threads} / inter 1 / sequential, OpenVINO INFERENCE_NUM_THREADS, "
        f"CTranslate2 intra_threads); median of {args.rounds} "
        f"interleaved rounds (batch {args.batch}: mean of {args.reps_b32} forward(s) per round, "
        f"batch 1: mean of {args.reps_b1}), {args.warmup} warm-up forwards; cosine: mean over "
        f"{args.cosine_reviews} test reviews of the mean-pooled sentence embedding against the "
        f"system's own FP32; x FP32 = own FP32 ms / ms; pads = computes the padded positions",
        f"inputs: batch {args.batch} = the first {args.batch} test reviews "
        f"({lengths['b32']}), batch 1 = the first test review of median length "
        f"({lengths['b1']} tokens)",
        machine,
        "glibc malloc thresholds (all processes): mmap "
        f"{os.environ.get('MALLOC_MMAP_THRESHOLD_', 'default')}, trim "
        f"{os.environ.get('MALLOC_TRIM_THRESHOLD_', 'default')}",
        f"versions: {versions()}" + (
            "; ORT optimized graph fuses " + ", ".join(f"{v} {k}" for k, v in fused.items())
            if fused else ""),
    ]
    for setting, title in (("fixed", f"every row padded to {args.seq} tokens"),
                           ("dynamic", "each batch padded to its longest row")):
        lines += ["", f"### {title}", ""] + setting_table(args, systems, median, cos, setting)
        lead = tquant_lead(args, systems, median, setting)
        if lead:
            lines += ["", lead]
    lines.append("")
    spread = {b: max(max(times[s.name][f"{b}_fixed"]) / min(times[s.name][f"{b}_fixed"]) - 1
                     for s in systems) for b in BATCHES}
    lines.append(f"round-to-round spread (max / min - 1, worst system, fixed length): batch "
                 f"{args.batch} {spread['b32'] * 100:.0f} %, batch 1 {spread['b1'] * 100:.0f} %")
    if agreement:
        lines.append(f"FP32 agreement (min cosine against {LABELS[agreement_ref]}): " + ", ".join(
            f"{LABELS[n]} {v:.5f}" for n, v in agreement.items()))
    return "\n".join(lines)


def profile_tquant(systems, server, args):
    """(title, markdown table) of a per-op profile of each tquant system at each batch."""
    if server is None or args.profile < 1:
        return []
    profiles = []
    for system in systems:
        if not system.name.startswith("tquant_"):
            continue
        for batch in ("b32_fixed", "b1_fixed"):
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
    inputs, lengths = peer_inputs.bench_inputs(ids, mask, args.batch)
    inputs["cosine"] = (ids[:args.cosine_reviews], mask[:args.cosine_reviews])
    train = peer_inputs.read_reviews(os.path.join(data_dir, "fine_foods_train.csv"))
    calibration = peer_inputs.tokenize(model_dir, train[:args.calibration_reviews], args.seq)
    systems, server, fused = build_systems(args, model_dir, data_dir, calibration, log)
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
                   peer_machine.describe(watch), started, lengths)
    print(table, flush=True)
    with open(os.path.join(args.work_dir, "peers_table.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    for title, text in profiles:
        print(f"\n{title}\n\n{text}", flush=True)


if __name__ == "__main__":
    main()
