#!/usr/bin/env python3
"""Times NVIDIA ModelOpt's histogram range searches on a histogram written by
tquant_observer_bench, so the bench can print tquant's speed-up over them in the same run.

    python bench/modelopt_search_time.py --histogram /tmp/tquant_bench_histogram.txt

Times modelopt.torch.quantization.calib.histogram._compute_amax_entropy and _compute_amax_mse
with num_bits=8, unsigned=False, stride=1, start_bin=128 (HistogramCalibrator.compute_amax's
defaults), called as compute_amax calls them: counts as an int32 numpy array, bin edges as the
float32 linspace the torch collector builds. Each timed call gets a fresh copy of the counts
(_compute_amax_entropy writes bins[0] into the array it is given).

The MSE search as shipped in ModelOpt 0.47 calls fake_tensor_quant(centers, amax, num_bits,
unsigned), but that function's third parameter is now `bias`: num_bits lands in bias and
unsigned in num_bits, so every candidate is scored against garbage. The script therefore times
two MSE variants: "mse", ModelOpt's source with fake_tensor_quant bound to the quantizer it was
written for (pytorch-quantization's, narrow range), whose amax is the one to compare; and
"mse_shipped", the installed function as is (only timed, its amax is meaningless).

Prints "key value" lines for the bench to parse:
    modelopt_version, import, numpy_version, scipy_version, torch_version,
    entropy_ms <median> <min> <max>, entropy_amax, mse_ms ..., mse_amax,
    mse_shipped_ms ..., mse_shipped_amax (the last two only with the package import).

If importing the modelopt package fails (its __init__ pulls in optional dependencies such as
requests and huggingface_hub), the functions come from the installed histogram.py source
(compiled with ast, without running the package's __init__); "import" then says "source".
"""

import argparse
import ast
import importlib.metadata
import importlib.util
import os
import statistics
import sys
import time
from collections import Counter

import numpy as np
import scipy
import torch
from scipy.stats import entropy


def read_histogram(path):
    num_bins = None
    bin_width = None
    counts = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("num_bins"):
                num_bins = int(line.split()[1])
            elif line.startswith("bin_width"):
                bin_width = float(line.split()[1])
            else:
                counts.append(float(line))
    if num_bins is None or bin_width is None or len(counts) != num_bins:
        raise SystemExit(f"{path}: expected num_bins, bin_width and num_bins counts")
    return np.array(counts), bin_width


def compile_from_source():
    """ModelOpt's two searches compiled from the installed source, with fake_tensor_quant bound
    to what it computes on CPU when called as (inputs, amax, num_bits, unsigned): _tensor_quant
    with narrow_range=True. That is pytorch-quantization's signature, which _compute_amax_mse
    was written for; ModelOpt's FakeTensorQuantFunction later gained a `bias` third argument, so
    the shipped call passes num_bits as bias and unsigned as num_bits (see docs/benchmarks.md).
    """
    spec = importlib.util.find_spec("modelopt")
    if spec is None or spec.origin is None:
        raise SystemExit("nvidia-modelopt is not installed in this Python")
    quant_dir = os.path.join(os.path.dirname(spec.origin), "torch", "quantization")

    def functions_from(path, names):
        with open(path) as f:
            tree = ast.parse(f.read(), filename=path)
        body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
        missing = set(names) - {n.name for n in body}
        if missing:
            raise SystemExit(f"{path}: functions {sorted(missing)} not found")
        return compile(ast.Module(body=body, type_ignores=[]), path, "exec")

    namespace = {"np": np, "torch": torch, "entropy": entropy, "Counter": Counter}
    exec(functions_from(os.path.join(quant_dir, "tensor_quant.py"), ["_tensor_quant"]), namespace)
    namespace["fake_tensor_quant"] = lambda inputs, amax, num_bits=8, unsigned=False: (
        namespace["_tensor_quant"](inputs, amax, num_bits, unsigned, True))
    namespace["scaled_e4m3"] = None  # only for num_bits == (4, 3)
    exec(functions_from(os.path.join(quant_dir, "calib", "histogram.py"),
                        ["_compute_amax_entropy", "_compute_amax_mse"]), namespace)
    return namespace["_compute_amax_entropy"], namespace["_compute_amax_mse"]


def load_functions(from_source):
    """Returns (entropy_fn, mse_fn, shipped_mse_fn or None, how)."""
    source_entropy, source_mse = compile_from_source()
    if not from_source:
        try:
            from modelopt.torch.quantization.calib.histogram import (
                _compute_amax_entropy,
                _compute_amax_mse,
            )

            return _compute_amax_entropy, source_mse, _compute_amax_mse, "package import"
        except ImportError as error:
            print(f"modelopt import failed ({error}); using the functions compiled from source",
                  file=sys.stderr)
    return source_entropy, source_mse, None, "source"


def time_calls(fn, make_args, reps, warmup=1):
    result = None
    for _ in range(warmup):
        result = fn(*make_args())
    samples = []
    for _ in range(reps):
        args = make_args()
        start = time.perf_counter()
        result = fn(*args)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples), min(samples), max(samples), float(result)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--histogram", required=True, help="file written by tquant_observer_bench")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per search")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--from-source", action="store_true",
                        help="skip the package import; compile the functions from source")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    counts, bin_width = read_histogram(args.histogram)
    num_bins = len(counts)
    # As HistogramCalibrator.compute_amax passes them: int counts, float32 edges.
    hist = np.rint(counts).astype(np.int32)
    edges = torch.linspace(0, num_bins * bin_width, num_bins + 1).numpy()

    entropy_fn, mse_fn, shipped_mse_fn, how = load_functions(args.from_source)
    print("modelopt_version", importlib.metadata.version("nvidia-modelopt"))
    print("import", how)
    print("numpy_version", np.__version__)
    print("scipy_version", scipy.__version__)
    print("torch_version", torch.__version__)

    searches = [("entropy", entropy_fn), ("mse", mse_fn)]
    if shipped_mse_fn is not None:
        searches.append(("mse_shipped", shipped_mse_fn))
    for name, fn in searches:
        median, lo, hi, amax = time_calls(
            fn, lambda: (hist.copy(), edges, 8, False, 1, 128), args.reps)
        print(f"{name}_ms {median:.3f} {lo:.3f} {hi:.3f}")
        print(f"{name}_amax {amax:.9g}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
