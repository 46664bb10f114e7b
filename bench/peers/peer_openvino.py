"""OpenVINO systems of the peer benchmark: FP32 and NNCF post-training INT8.

  openvino_fp32   openvino.convert_model of transformers' BertModel (SDPA attention), the
                  encoder only, dynamic batch and sequence;
  openvino_int8   nncf.quantize of that model with ModelType.TRANSFORMER (NNCF's transformer
                  preset: it keeps the attention softmax inputs and some adds in float and uses
                  symmetric activations), calibrated on the same training reviews as tquant.
Both compile for the CPU with INFERENCE_PRECISION_HINT f32 (AMX / AVX-512 BF16 CPUs default to
bf16, which is not the FP32 being compared), INFERENCE_NUM_THREADS = the bench's threads, one
stream, PERFORMANCE_HINT LATENCY. The IR files are cached in the work folder, keyed by the
model file and the package versions.
"""

import contextlib
import json
import os
import sys
import time

import numpy as np

from peer_systems import FeedSystem, encoder_module


def _stamp(model_dir, calibration_rows):
    import nncf
    import openvino
    import torch
    import transformers

    weights = os.path.join(model_dir, "model.safetensors")
    return {"model": os.path.realpath(weights), "model_bytes": os.path.getsize(weights),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "openvino": openvino.__version__, "nncf": nncf.__version__,
            "calibration_rows": calibration_rows, "recipe": 1}


def build(model_dir, work_dir, calibration, log):
    """Paths {"fp32", "int8"} of the IR files; `calibration` = (ids, mask) numpy int64 arrays
    (rows of the calibration reviews), fed to NNCF in batches of 8."""
    import openvino as ov
    import torch

    folder = os.path.join(work_dir, "openvino")
    os.makedirs(folder, exist_ok=True)
    paths = {"fp32": os.path.join(folder, "fp32.xml"), "int8": os.path.join(folder, "int8.xml")}
    stamp_path = os.path.join(folder, "stamp.json")
    stamp = _stamp(model_dir, int(calibration[0].shape[0]))
    if os.path.isfile(stamp_path) and all(os.path.isfile(p) for p in paths.values()):
        with open(stamp_path, encoding="utf-8") as f:
            if json.load(f) == stamp:
                log(f"OpenVINO IR reused from {folder}")
                return paths
    log("openvino.convert_model of the encoder (SDPA attention)")
    ids = torch.ones(2, 16, dtype=torch.int64)
    example = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    with torch.no_grad():
        model = ov.convert_model(encoder_module(model_dir, "sdpa"), example_input=example,
                                 input=[("input_ids", [-1, -1], ov.Type.i64),
                                        ("attention_mask", [-1, -1], ov.Type.i64),
                                        ("token_type_ids", [-1, -1], ov.Type.i64)])
    ov.save_model(model, paths["fp32"], compress_to_fp16=False)
    paths_int8 = _quantize(model, calibration, log)
    ov.save_model(paths_int8, paths["int8"], compress_to_fp16=False)
    with open(stamp_path, "w", encoding="utf-8") as f:
        json.dump(stamp, f, indent=1)
    return paths


def _quantize(model, calibration, log):
    import nncf

    ids, mask = calibration
    batches = [{"input_ids": ids[s:s + 8], "attention_mask": mask[s:s + 8],
                "token_type_ids": np.zeros_like(ids[s:s + 8])}
               for s in range(0, ids.shape[0], 8)]
    log(f"nncf.quantize (ModelType.TRANSFORMER, {ids.shape[0]} calibration reviews)")
    started = time.time()
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars; stdout holds the table
        quantized = nncf.quantize(model, nncf.Dataset(batches),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches))
    log(f"nncf.quantize took {time.time() - started:.0f} s")
    return quantized


def count_int8_ops(path):
    """FakeQuantize nodes in an IR: 0 means NNCF quantized nothing."""
    import openvino as ov

    return sum(1 for op in ov.Core().read_model(path).get_ops()
               if op.get_type_name() == "FakeQuantize")


class OpenVinoSystem(FeedSystem):
    """One compiled OpenVINO CPU model: f32 precision hint, N threads, one stream, latency."""

    pads = True  # computes every position of the padded batch

    def __init__(self, name, label, path, threads, reference=None):
        import openvino as ov

        super().__init__(name, label, reference)
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
                  "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _run(self, feed):
        return self.request.infer(feed)[0].copy()
