"""Per-channel golden fixture: ModelOpt's HistogramCalibrator run channel by channel.

Writes tests/golden/data/histogram_per_channel.pt, read by tests/golden_histogram_test.cpp.

    .venv/bin/python tests/golden/gen_histogram_per_channel_golden.py

ModelOpt's HistogramCalibrator is per tensor only (an axis raises NotImplementedError), so
each channel gets its own calibrator, fed that channel's slice of every batch; everything
else (calibrator settings, searches, the intended MSE search) is gen_histogram_golden.py's
run_case. The ranges grow across batches by a different factor in each channel, which is
what a per-channel histogram must follow bin for bin. Takes a few minutes.

Layout of histogram_per_channel.pt:  {case name: {
    "axis":     int64 []                 channel axis of the batches
    "batches":  [float32 [rows, C]]      observed in order
    "channels": [C dicts]                run_case's dict for channel c, without "batches"
}}
"""

import time

import numpy as np
import torch

from gen_histogram_golden import SEED, laplace, plant, run_case, save_fixture, student_t

# One row per channel: bulk distribution, bulk scale, and the batch's largest |x| (a planted
# value) in each of the three batches. Growth factors differ per channel: every batch (0, 3,
# 7), once (1 at the third batch, 6 at the second), never (2: the first batch holds the
# largest value), a one-sided ReLU channel (4), a tiny scale (5).
CHANNELS = [
    ("t", 1.00, [6.1, 7.9, 10.3]),
    ("laplace", 0.37, [2.9, 2.7, 6.6]),
    ("t4", 2.30, [31.7, 12.0, 20.5]),
    ("t", 0.80, [4.3, 9.1, 12.7]),
    ("relu_t", 1.10, [5.3, 8.8, 9.7]),
    ("laplace", 0.011, [0.083, 0.121, 0.197]),
    ("t", 5.30, [41.0, 57.3, 49.9]),
    ("laplace", 1.70, [13.3, 17.9, 23.9]),
]
ROWS = [2731, 3073, 2389]  # ~8200 values per channel, odd batch sizes


def channel_batch(rng, kind, scale, peak, first_peak, rows):
    """One channel's values in one batch: the bulk (its scale grows with the range, as
    sqrt(peak / first_peak)) truncated to 0.85 * peak, plus the planted peak and two smaller
    planted values (so the peak alone sets the batch's range)."""
    s = scale * np.sqrt(peak / first_peak)
    limit = 0.85 * peak / s
    if kind == "laplace":
        x = laplace(rng, (rows,), limit)
    else:
        x = student_t(rng, (rows,), limit, df=4.0 if kind == "t4" else 3.0)
    x = x * np.float32(s)
    sign = 1.0 if kind == "relu_t" else -1.0
    x = plant(rng, x, [peak, sign * 0.7 * peak, 0.55 * peak])
    if kind == "relu_t":
        x = np.maximum(x, 0.0)
    return x.astype(np.float32)


def make_batches():
    rng = np.random.default_rng(SEED + 15)
    batches = []
    for b, rows in enumerate(ROWS):
        columns = [channel_batch(rng, kind, scale, peaks[b], peaks[0], rows)
                   for kind, scale, peaks in CHANNELS]
        batches.append(torch.from_numpy(np.stack(columns, axis=1)))
    return batches


def main():
    torch.manual_seed(SEED)
    batches = make_batches()
    channels = []
    for c in range(batches[0].shape[1]):
        print(f"per_channel_growing, channel {c}")
        t0 = time.time()
        out = run_case([x[:, c].contiguous() for x in batches])
        del out["batches"]
        channels.append(out)
        print(f"  bins after each batch {out['bins_after_batch'].tolist()} "
              f"[{time.time() - t0:.0f} s]")
    fixture = {"per_channel_growing": {"axis": torch.tensor(1, dtype=torch.int64),
                                       "batches": [x.clone() for x in batches],
                                       "channels": channels}}
    save_fixture(fixture, "histogram_per_channel.pt")


if __name__ == "__main__":
    main()
