"""Golden fixtures of torch.ao.quantization's min-max observers for tquant's C++ tests.

Writes tests/golden/data/minmax.pt: a plain dict (str -> tensor, nested dicts and lists) that
tests/golden_minmax_test.cpp reads with torch::pickle_load, so no Python runs at test time.

    .venv/bin/python tests/golden/gen_minmax_golden.py

Layout of minmax.pt:
    "inputs":    {data name: [batch tensors]}            data: "t2d" ([17, 33] x 4),
                                                         "t3d" ([3, 17, 33] x 4)
    "cases":     {case key: {"min_val", "max_val", "scale", "zero_point":
                                tensors stacked over the batches: entry b is the state
                                after observing batches 0..b (shape [4] or [4, C])}}
Case keys: "<Observer>.<spec>.<data>" and, per channel, "<Observer>.<spec>.<data>.axis<a>",
with spec one of
    "qint8_symmetric"  qint8, per_tensor_symmetric / per_channel_symmetric, -128..127
    "quint8_affine"    quint8, per_tensor_affine / per_channel_affine, 0..255
    "qint8_narrow"     qint8, symmetric, quant_min=-127, quant_max=127
"""

import os
from pathlib import Path

import numpy as np
import torch
from torch.ao.quantization.observer import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

DATA_DIR = Path(__file__).resolve().parent / "data"
SEED = 20240917
BATCHES = 4


def heavy_tailed(rng, shape, outliers):
    """Student-t (3 degrees of freedom) with a few planted outliers of either sign."""
    x = rng.standard_t(3, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    where = rng.choice(flat.size, size=len(outliers), replace=False)
    flat[where] = np.asarray(outliers, dtype=np.float32)
    return x


def make_inputs():
    rng = np.random.default_rng(SEED)
    inputs = {"t2d": [], "t3d": []}
    for b in range(BATCHES):
        # Outliers grow and change sign from batch to batch so min and max both move.
        sign = -1.0 if b % 2 else 1.0
        x2 = heavy_tailed(rng, (17, 33), [sign * (12.0 + 7.0 * b), -sign * (5.0 + 3.0 * b)])
        x2[5] = np.abs(x2[5]) + 0.25  # a strictly positive row: min is widened to 0
        x2[9] = 0.0  # an all-zero row: scale falls back to eps
        x2[:, 4] = -np.abs(x2[:, 4]) - 0.5  # a strictly negative column (axis 1)
        inputs["t2d"].append(torch.from_numpy(x2.copy()))
        x3 = heavy_tailed(rng, (3, 17, 33), [sign * (9.0 + 11.0 * b), 3.0 * b + 1.5])
        x3[1] = 0.5 * x3[1]  # channels of different scales along axis 0
        x3[:, :, 7] = np.abs(x3[:, :, 7])  # a non-negative slice along axis 2
        inputs["t3d"].append(torch.from_numpy(x3.copy()))
    return inputs


SPECS = {
    # name: (dtype, symmetric, quant_min, quant_max); None keeps torch.ao's default range.
    "qint8_symmetric": (torch.qint8, True, None, None),
    "quint8_affine": (torch.quint8, False, None, None),
    "qint8_narrow": (torch.qint8, True, -127, 127),
}


def make_observer(cls, spec, axis):
    dtype, symmetric, qmin, qmax = SPECS[spec]
    per_channel = axis is not None
    if per_channel:
        qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    else:
        qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    kwargs = {"dtype": dtype, "qscheme": qscheme}
    if qmin is not None:
        kwargs["quant_min"] = qmin
        kwargs["quant_max"] = qmax
    if per_channel:
        kwargs["ch_axis"] = axis
    if cls in (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver):
        kwargs["averaging_constant"] = 0.01
    return cls(**kwargs)


def run_case(cls, spec, batches, axis):
    observer = make_observer(cls, spec, axis)
    steps = {"min_val": [], "max_val": [], "scale": [], "zero_point": []}
    for x in batches:
        observer(x)
        scale, zero_point = observer.calculate_qparams()
        steps["min_val"].append(observer.min_val.detach().clone())
        steps["max_val"].append(observer.max_val.detach().clone())
        steps["scale"].append(scale.detach().clone().reshape(observer.min_val.shape))
        steps["zero_point"].append(zero_point.detach().clone().reshape(observer.min_val.shape))
    out = {key: torch.stack(values).contiguous() for key, values in steps.items()}
    assert out["scale"].dtype == torch.float32, out["scale"].dtype
    out["zero_point"] = out["zero_point"].to(torch.int64)
    return out


def main():
    torch.manual_seed(SEED)
    inputs = make_inputs()
    cases = {}
    per_tensor = [MinMaxObserver, MovingAverageMinMaxObserver]
    per_channel = [PerChannelMinMaxObserver, MovingAveragePerChannelMinMaxObserver]
    axes = {"t2d": [0, 1], "t3d": [0, 2]}
    for spec in SPECS:
        for data, batches in inputs.items():
            for cls in per_tensor:
                cases[f"{cls.__name__}.{spec}.{data}"] = run_case(cls, spec, batches, None)
            for cls in per_channel:
                for axis in axes[data]:
                    key = f"{cls.__name__}.{spec}.{data}.axis{axis}"
                    cases[key] = run_case(cls, spec, batches, axis)

    fixture = {
        "inputs": inputs,
        "cases": cases,
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / "minmax.pt"
    torch.save(fixture, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(cases)} cases, torch "
          f"{torch.__version__})")


if __name__ == "__main__":
    main()
