"""SmoothQuant golden fixture: NVIDIA ModelOpt's smoothing factors on one Linear.

Writes tests/golden/data/smoothquant.safetensors, read by tests/smooth_quant_test.cpp.

    .venv/bin/python tests/golden/gen_smoothquant_golden.py

A 32 -> 16 nn.Linear is quantized with modelopt.torch.quantization.quantize(model,
INT8_SMOOTHQUANT_CFG, forward_loop), once per alpha (the config's "algorithm" set to
{"method": "smoothquant", "alpha": a}). ModelOpt records per-input-channel max |x| over the
batches (max calibration with axis -1), takes the per-input-channel max |W| and stores
pre_quant_scale = max|W_j|^(1 - a) / max|X_j|^a on the input quantizer, i.e. 1 / s_j of the
SmoothQuant paper; the result is clamped to [1e-4, 1e4]. Input channel 7 is tiny (x 1e-7) and
weight column 11 is tiny (x 1e-8), so their factors hit the two ends of the clamp; channels 3,
17 and 29 carry outliers (x 40, x 25, x 60).

Exact zeros are left out on purpose: ModelOpt 0.47 means to set pre_quant_scale to 1 where
max |x| <= 2^-31, but its mask indexing raises IndexError ("too many indices for tensor of
dimension 1": act_amax keeps a leading dimension of 1, the factors do not) as soon as any
factor is <= 2^-31, which a zero input channel or a zero weight column causes.
tests/smooth_quant_test.cpp checks tquant's version of that guard on its own.

Layout (safetensors, all float32):
    "batch.0", "batch.1", "batch.2"   inputs [rows, 32] (rows 97, 131, 83), fed in order
    "weight" [16, 32], "bias" [16]     the Linear before smoothing
    "act_amax" [32]                    ModelOpt's per-channel max |x| (_amax_for_smoothing)
    "pre_quant_scale.<alpha>" [32]     ModelOpt's input_quantizer.pre_quant_scale (= 1 / s)
metadata "alphas": comma-separated alphas, "modelopt": version.
"""

import copy
import os
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # ModelOpt's CPU results

import numpy as np
import torch
from safetensors.torch import save_file

import modelopt
import modelopt.torch.quantization as mtq

SEED = 1207
IN_FEATURES, OUT_FEATURES = 32, 16
ROWS = [97, 131, 83]
OUTLIERS = {3: 40.0, 17: 25.0, 29: 60.0}
TINY_INPUT_CHANNEL = 7
TINY_WEIGHT_COLUMN = 11
ALPHAS = [0.5, 0.8]
PATH = Path(__file__).resolve().parent / "data" / "smoothquant.safetensors"


def make_data(rng):
    batches = []
    for rows in ROWS:
        x = rng.standard_normal((rows, IN_FEATURES)).astype(np.float32)
        for channel, gain in OUTLIERS.items():
            x[:, channel] *= gain
        x[:, TINY_INPUT_CHANNEL] *= 1e-7
        batches.append(torch.from_numpy(x))
    w = (rng.standard_normal((OUT_FEATURES, IN_FEATURES)) * 0.2).astype(np.float32)
    w[:, TINY_WEIGHT_COLUMN] *= 1e-8
    b = (rng.standard_normal(OUT_FEATURES) * 0.1).astype(np.float32)
    return batches, torch.from_numpy(w), torch.from_numpy(b)


def smooth(batches, weight, bias, alpha):
    model = torch.nn.Sequential(torch.nn.Linear(IN_FEATURES, OUT_FEATURES))
    with torch.no_grad():
        model[0].weight.copy_(weight)
        model[0].bias.copy_(bias)
    config = copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG)
    config["algorithm"] = {"method": "smoothquant", "alpha": alpha}

    def forward_loop(m):
        for x in batches:
            m(x)

    model = mtq.quantize(model, config, forward_loop)
    quantizer = model[0].input_quantizer
    return (quantizer.pre_quant_scale.detach().float().reshape(-1).clone(),
            quantizer._amax_for_smoothing.detach().float().reshape(-1).clone())


def main():
    torch.manual_seed(SEED)
    batches, weight, bias = make_data(np.random.default_rng(SEED))
    tensors = {f"batch.{i}": x.contiguous() for i, x in enumerate(batches)}
    tensors["weight"] = weight.contiguous()
    tensors["bias"] = bias.contiguous()
    for alpha in ALPHAS:
        pre_quant_scale, act_amax = smooth(batches, weight, bias, alpha)
        tensors[f"pre_quant_scale.{alpha}"] = pre_quant_scale
        tensors["act_amax"] = act_amax
        s = 1.0 / pre_quant_scale
        print(f"alpha {alpha}: s min {s.min().item():.6g} max {s.max().item():.6g}, "
              f"s[{TINY_INPUT_CHANNEL}] = {s[TINY_INPUT_CHANNEL].item():.6g}, "
              f"s[{TINY_WEIGHT_COLUMN}] = {s[TINY_WEIGHT_COLUMN].item():.6g}")
    PATH.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(PATH), metadata={"alphas": ",".join(str(a) for a in ALPHAS),
                                            "modelopt": modelopt.__version__})
    print(f"wrote {PATH} ({os.path.getsize(PATH)} bytes; torch {torch.__version__}, "
          f"modelopt {modelopt.__version__})")


if __name__ == "__main__":
    main()
