"""Golden fixtures of NVIDIA ModelOpt's HistogramCalibrator for tquant's C++ tests.

Writes tests/golden/data/histogram.pt: a plain dict (str -> tensor, nested dicts and lists)
that tests/golden_histogram_test.cpp reads with torch::pickle_load.

    .venv/bin/python tests/golden/gen_histogram_golden.py
    .venv/bin/python tests/golden/gen_histogram_golden.py --only relu_spike,gelu_spike
        # only the cases whose names start so, merged into the existing fixture

The calibrator is modelopt.torch.quantization.calib.histogram.HistogramCalibrator(num_bits=8,
axis=None, unsigned=False, num_bins=2048, torch_hist=True), run on the CPU. ModelOpt 0.47
imports `requests` and `huggingface_hub` at import time without declaring them: install both.
ModelOpt's entropy search is pure Python and quadratic in the bins: this takes minutes.

Layout of histogram.pt:  {case name: {
    "batches":          [float32 tensors], observed in order
    "counts":           float32 [B]      the calibrator's final _calib_hist (torch.histc counts)
    "bin_edges":        float32 [B + 1]  its final _calib_bin_edges
    "bins_after_batch": int64 [batches]  histogram length after each batch
    "abs_max":          float32 []       largest |x| over all batches
    "amax_entropy":     float32 []       compute_amax("entropy")      (start_bin 128, stride 1)
    "amax_mse":         float32 []       ModelOpt's MSE search with the 8-bit narrow fake quant
                                         it means to use (see MSE_NOTE below)
    "amax_mse_modelopt": float32 []      compute_amax("mse") exactly as ModelOpt returns it
    "percentiles":      float64 [3]      99.9, 99.99, 99.999
    "amax_percentile":  float32 [3]      compute_amax("percentile", percentile=p) for each p
}}
"""

import os
import sys
import time
from pathlib import Path

# ModelOpt's MSE search moves to the GPU when one is visible (and its CUDA fake quant kernel
# takes over); the fixtures are ModelOpt's CPU results.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np
import torch

import modelopt
import modelopt.torch.quantization.calib.histogram as mo_hist
from modelopt.torch.quantization.calib.histogram import HistogramCalibrator
from modelopt.torch.quantization.tensor_quant import FakeTensorQuantFunction

DATA_DIR = Path(__file__).resolve().parent / "data"
SEED = 20240918
PERCENTILES = [99.9, 99.99, 99.999]
START_BIN = 128
STRIDE = 1

# MSE_NOTE: ModelOpt 0.47's _compute_amax_mse calls fake_tensor_quant(centers, amax, num_bits,
# unsigned), but fake_tensor_quant is FakeTensorQuantFunction.apply(inputs, amax, bias=None,
# num_bits=8, unsigned=False, narrow_range=True, ...): num_bits lands in `bias` and unsigned in
# `num_bits`. With bias 8 and num_bits False the "quantized" centers are the constant amax + 8,
# so the search returns (for data whose mean |x| is below 8) the first candidate,
# centers[start_bin]. The intended search passes num_bits and unsigned by name, with the default
# narrow_range=True: scale = 127 / amax, q = clamp(round(c * scale), -127, 127), fq = q / scale.
# amax_mse is that intended search, run through ModelOpt's own _compute_amax_mse loop.


def intended_fake_tensor_quant(inputs, amax, num_bits=8, unsigned=False):
    return FakeTensorQuantFunction.apply(inputs, amax, None, num_bits, unsigned, True)


def compute_amax_mse_intended(hist, edges):
    original = mo_hist.fake_tensor_quant
    mo_hist.fake_tensor_quant = intended_fake_tensor_quant
    try:
        return mo_hist._compute_amax_mse(hist, edges, 8, False, STRIDE, START_BIN)
    finally:
        mo_hist.fake_tensor_quant = original


def truncated(rng, x, limit):
    """Redraws values beyond `limit` uniformly in [-1, 1]: the tail stays continuous up to
    `limit`, and only the planted outliers set the range (so the test controls the growth)."""
    far = np.abs(x) > limit
    x[far] = rng.uniform(-1.0, 1.0, size=int(far.sum())).astype(np.float32)
    return x


def student_t(rng, shape, limit, df=3.0):
    return truncated(rng, rng.standard_t(df, size=shape).astype(np.float32), limit)


def laplace(rng, shape, limit):
    return truncated(rng, rng.laplace(0.0, 1.0, size=shape).astype(np.float32), limit)


def plant(rng, x, values):
    """Puts a few outliers at random places of x (in place) and returns x."""
    flat = x.reshape(-1)
    where = rng.choice(flat.size, size=len(values), replace=False)
    flat[where] = np.asarray(values, dtype=np.float32)
    return x


def make_cases():
    # Ranges are deliberately not powers of two, so bin widths and edges are inexact floats.
    rng = np.random.default_rng(SEED)
    cases = {}
    # Range grows at every batch (t-distributed tail, larger outliers each time): the
    # histogram is extended by bins of the first batch's width three times.
    shapes = [(33, 129), (17, 257), (3, 17, 65), (65, 67)]
    peaks = [7.31, 8.77, 10.13, 11.62]
    cases["student_t_growing"] = [
        torch.from_numpy(plant(rng, student_t(rng, s, 0.85 * p), [p, -0.8 * p, 0.6 * p]))
        for s, p in zip(shapes, peaks)
    ]
    # Laplace bulk; the range grows once, at the second batch, by a large negative outlier.
    shapes = [(17, 255), (33, 127), (129, 33), (5, 17, 49)]
    outliers = [[7.93, -5.1], [-11.41, 7.2], [9.2], [-10.6, 4.3]]
    cases["laplace_grow_once"] = [
        torch.from_numpy(plant(rng, laplace(rng, s, 7.5), o)) for s, o in zip(shapes, outliers)
    ]
    # The first batch holds the largest |x|: the histogram keeps its 2048 bins.
    shapes = [(65, 65), (17, 129), (33, 65), (3, 33, 33)]
    outliers = [[-17.3, 11.1], [12.9], [-8.1, 3.3], [14.4]]
    cases["student_t_fixed_range"] = [
        torch.from_numpy(plant(rng, student_t(rng, s, 9.0, df=4.0), o))
        for s, o in zip(shapes, outliers)
    ]
    # One-sided activations (ReLU of a t-distribution): ~half the values are exact zeros, so
    # entropy's "bin 0 takes bin 1's count" rule matters; no abs is taken (min(x) == 0).
    shapes = [(31, 129), (63, 65), (17, 241)]
    outliers = [[6.83], [9.71, 7.1], [9.02]]
    cases["relu_zeros_growing"] = [
        torch.from_numpy(
            np.maximum(plant(rng, student_t(rng, s, 6.5), o), 0.0).astype(np.float32))
        for s, o in zip(shapes, outliers)
    ]
    return cases


# Entropy after a ReLU: one set of values with a spike of exact zeros, observed in several
# batch orders. ModelOpt's (and tquant's streaming) grid is fixed by the first batch, so each
# order bins the same values on another grid; "<kind>_one_batch" is all values in one batch,
# the grid that tquant's shared grid (HistogramGrid::kShared) builds. Kinds: "relu_spike"
# (ReLU: exact zeros, an eighth of the rows zero padding), "gelu_spike" (GELU of the same
# pre-activations: the padding's zeros plus a flat tail of small negatives) and
# "signed_spike" (the pre-activations themselves: only the padding's zeros), as a control.
SPIKE_ORDERS = {"a": [0, 1, 2, 3], "b": [2, 0, 3, 1], "c": [3, 1, 0, 2]}


def make_spike_cases():
    rng = np.random.default_rng(SEED + 1)  # its own stream: the cases above stay as they were
    shapes = [(37, 65), (33, 97), (33, 129), (65, 67)]
    peaks = [5.13, 6.29, 7.91, 4.42]
    signed = []
    for shape, peak in zip(shapes, peaks):
        x = plant(rng, student_t(rng, shape, 0.8 * peak, df=5.0) + 0.35, [peak, -0.7 * peak])
        x[: shape[0] // 8] = 0.0  # padding rows: exact zeros before and after the ReLU
        signed.append(x.astype(np.float32))
    relu = [np.maximum(x, 0.0).astype(np.float32) for x in signed]
    gelu = [torch.nn.functional.gelu(torch.from_numpy(x)).numpy() for x in signed]
    cases = {}
    for prefix, batches in (("relu_spike", relu), ("gelu_spike", gelu), ("signed_spike", signed)):
        for tag, order in SPIKE_ORDERS.items():
            cases[f"{prefix}_order_{tag}"] = [torch.from_numpy(batches[i].copy()) for i in order]
        cases[f"{prefix}_one_batch"] = [
            torch.from_numpy(np.concatenate([b.reshape(-1) for b in batches]))]
    return cases


def run_case(batches):
    calibrator = HistogramCalibrator(num_bits=8, axis=None, unsigned=False, num_bins=2048,
                                     torch_hist=True)
    lengths = []
    for x in batches:
        calibrator.collect(x)
        lengths.append(calibrator._calib_hist.numel())
        # ModelOpt's histc keeps num_bins bins on [0, edges[-1]]; record when arange produced
        # a different number of edges (its bins would then not be edges[1] - edges[0] wide).
        if calibrator._calib_bin_edges.numel() != calibrator._calib_hist.numel() + 1:
            print(f"  note: {calibrator._calib_bin_edges.numel()} edges for "
                  f"{calibrator._calib_hist.numel()} bins", file=sys.stderr)
    hist = calibrator._calib_hist.clone()
    edges = calibrator._calib_bin_edges.clone()
    out = {
        "batches": [x.clone() for x in batches],
        "counts": hist,
        "bin_edges": edges,
        "bins_after_batch": torch.tensor(lengths, dtype=torch.int64),
        "abs_max": torch.stack([x.abs().max() for x in batches]).max(),
    }
    t0 = time.time()
    out["amax_entropy"] = calibrator.compute_amax("entropy", stride=STRIDE, start_bin=START_BIN)
    out["amax_mse_modelopt"] = calibrator.compute_amax("mse", stride=STRIDE, start_bin=START_BIN)
    out["amax_mse"] = compute_amax_mse_intended(hist.int().numpy(), edges.numpy())
    out["percentiles"] = torch.tensor(PERCENTILES, dtype=torch.float64)
    out["amax_percentile"] = torch.stack([
        calibrator.compute_amax("percentile", percentile=p) for p in PERCENTILES
    ])
    for key in ("amax_entropy", "amax_mse", "amax_mse_modelopt"):
        # clone: the MSE results are views of ModelOpt's centres, whose whole storage
        # torch.save would otherwise write.
        out[key] = out[key].detach().to(torch.float32).reshape(()).clone()
    # The argument shift described in MSE_NOTE: the returned amax is the first candidate.
    first_center = (edges[START_BIN] + edges[START_BIN + 1]) / 2
    assert out["amax_mse_modelopt"].item() == first_center.item(), (
        "ModelOpt's compute_amax('mse') no longer returns centers[start_bin]; re-read "
        "_compute_amax_mse and update MSE_NOTE and README.md")
    width = (edges[1] - edges[0]).item()
    print(f"  {hist.numel()} bins of {width:.6g}, abs_max {out['abs_max'].item():.6g}; amax: "
          f"entropy {out['amax_entropy'].item():.6g}, mse {out['amax_mse'].item():.6g} "
          f"(ModelOpt as is: {out['amax_mse_modelopt'].item():.6g}), percentile "
          f"{[round(v, 6) for v in out['amax_percentile'].tolist()]} "
          f"[{time.time() - t0:.0f} s]")
    return out


def save_fixture(fixture, file_name):
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / file_name
    torch.save(fixture, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes; torch {torch.__version__}, "
          f"modelopt {modelopt.__version__})")


def main():
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    torch.manual_seed(SEED)
    fixture = {}
    if only is not None:  # keep the other cases of the committed fixture
        fixture = torch.load(DATA_DIR / "histogram.pt")
    cases = {**make_cases(), **make_spike_cases()}
    for name, batches in cases.items():
        if only is not None and not name.startswith(tuple(only.split(","))):
            continue
        print(name)
        fixture[name] = run_case(batches)
    save_fixture(fixture, "histogram.pt")


if __name__ == "__main__":
    main()
