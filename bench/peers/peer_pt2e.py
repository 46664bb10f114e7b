"""PyTorch 2 export quantization (PT2E) with torchao's X86InductorQuantizer, run by
torch.compile: PyTorch's own recipe for static INT8 on x86 CPUs.

  pt2e_fp32   torch.export (strict) of transformers' BertModel encoder (SDPA), torch.compile'd
              with inductor's freezing on;
  pt2e_int8   the same export through prepare_pt2e / calibration on the training reviews /
              convert_pt2e with X86InductorQuantizer's default config (static, per-channel
              int8 weights, per-tensor uint8 activations), then torch.compile with freezing,
              which lowers the quantize / dequantize pairs to oneDNN int8 kernels.
The export is strict: a non-strict export of this model quantizes nothing and would report a
perfect cosine, so building fails when the converted graph holds no quantize node.
Batch and sequence are dynamic dimensions of the export; torch.compile specializes per shape
the first time it sees one (the warm-up forwards pay for that, the timed ones do not).
"""



from peer_systems import TorchSystem


def _export(model_dir):
    import torch

    from peer_systems import encoder_module

    ids = torch.ones(2, 16, dtype=torch.int64)
    batch, seq = torch.export.Dim("batch", max=1024), torch.export.Dim("seq", max=512)
    dims = {name: {0: batch, 1: seq} for name in ("input_ids", "attention_mask", "token_type_ids")}
    return torch.export.export(encoder_module(model_dir, "sdpa"), (ids, torch.ones_like(ids),
                                                     torch.zeros_like(ids)),
                               dynamic_shapes=dims, strict=True)


def build(model_dir, calibration, log):
    """(fp32 module, int8 module), both torch.compile'd; calibration = (ids, mask) numpy."""
    import torch
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    inductor_config.freezing = True
    log("torch.export (strict) of the encoder")
    exported = _export(model_dir)
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported.module(), quantizer)
    ids, mask = calibration
    log(f"PT2E calibration on {ids.shape[0]} reviews")
    with torch.no_grad():
        for s in range(0, ids.shape[0], 8):
            i = torch.from_numpy(ids[s:s + 8])
            prepared(i, torch.from_numpy(mask[s:s + 8]), torch.zeros_like(i))
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    quantize_nodes = sum(1 for n in converted.graph.nodes if "quantize_per" in str(n.target))
    if quantize_nodes == 0:
        raise SystemExit("peer bench: PT2E quantized nothing (no quantize node in the graph)")
    log(f"PT2E graph: {quantize_nodes} quantize / dequantize nodes")
    fp32 = exported.module()
    move_exported_model_to_eval(fp32)
    return torch.compile(fp32), torch.compile(converted)


class Pt2eSystem(TorchSystem):
    """A torch.compile'd exported encoder (positional inputs), called under no_grad, as
    PyTorch's PT2E guide runs it with inductor's freezing."""

    pads = True

    def _forward(self, ids, mask):
        import torch

        with torch.no_grad():
            return self.model(ids, mask, torch.zeros_like(ids))
