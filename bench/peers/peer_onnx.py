"""ONNX files of the MiniLM encoder for ONNX Runtime, made once and cached in the work folder.

ONNX Runtime's own recipe for BERT on the CPU (docs/benchmarks.md, "Peers on CPU"):
  plain.onnx           TorchScript export (torch.onnx.export, dynamo=False) of transformers'
                       BertModel with eager attention, through a wrapper taking keywords (the
                       positional export fails in transformers 5: "multiple values for argument
                       'use_cache'"); eager attention, because the optimizer's Attention fusion
                       matches its MatMul / Softmax pattern, not SDPA's;
  optimized.onnx       onnxruntime.transformers.optimizer.optimize_model(model_type="bert"):
                       fuses EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu;
  *_int8.onnx          onnxruntime.quantization.quantize_dynamic, per-channel int8 weights
                       (QInt8); DefaultTensorType FLOAT lets shape inference pass the fused ops.
The cache is keyed by the model file and the package versions (stamp.json).
"""

import json
import os


def _stamp(model_dir):
    import onnx
    import onnxruntime
    import torch
    import transformers

    weights = os.path.join(model_dir, "model.safetensors")
    return {
        "model": os.path.realpath(weights),
        "model_bytes": os.path.getsize(weights),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "recipe": 1,
    }


def _export(model_dir, path, seq_len):
    import warnings

    import torch

    from peer_systems import encoder_module

    encoder = encoder_module(model_dir, "eager")
    ids = torch.ones(2, seq_len, dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[1, seq_len // 2:] = 0  # a padded row, so the mask path is traced as used
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names + ["last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        torch.onnx.export(encoder, (ids, mask, torch.zeros_like(ids)), path,
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def _optimize(plain, path, num_heads, hidden_size):
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(plain, model_type="bert", num_heads=num_heads,
                                     hidden_size=hidden_size)
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    model.save_model_to_file(path)
    return fused


def _quantize(source, path):
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing": not for dynamic
    quantize_dynamic(source, path, per_channel=True, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def build(model_dir, work_dir, seq_len, num_heads, hidden_size, log):
    """Paths {"plain", "plain_int8", "optimized", "optimized_int8"} and the fused-op counts of
    the optimized graph; reuses the files when the stamp matches."""
    folder = os.path.join(work_dir, "onnx")
    os.makedirs(folder, exist_ok=True)
    paths = {name: os.path.join(folder, name + ".onnx")
             for name in ("plain", "plain_int8", "optimized", "optimized_int8")}
    stamp_path = os.path.join(folder, "stamp.json")
    stamp = _stamp(model_dir)
    if os.path.isfile(stamp_path) and all(os.path.isfile(p) for p in paths.values()):
        with open(stamp_path, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("stamp") == stamp:
            log(f"ONNX files reused from {folder}")
            return paths, cached["fused"]
    log("exporting MiniLM to ONNX (TorchScript exporter, eager attention)")
    _export(model_dir, paths["plain"], seq_len)
    log("optimizing (onnxruntime.transformers.optimizer, model_type bert)")
    fused = _optimize(paths["plain"], paths["optimized"], num_heads, hidden_size)
    log("quantize_dynamic (per-channel int8) of both graphs")
    _quantize(paths["plain"], paths["plain_int8"])
    _quantize(paths["optimized"], paths["optimized_int8"])
    with open(stamp_path, "w", encoding="utf-8") as f:
        json.dump({"stamp": stamp, "fused": fused}, f, indent=1)
    return paths, fused
