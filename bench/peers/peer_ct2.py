"""CTranslate2 systems of the peer benchmark: FP32 and INT8 (int8_float32).

The model is converted once from the local safetensors with ctranslate2's TransformersConverter
(BertModel -> an encoder; quantization float32 or int8_float32: int8 weights per output row,
int8 activations quantized per row at run time, float32 elsewhere) and cached in the work folder.
ctranslate2.Encoder takes each sequence at its own length: it removes the padding for the
Linear and feed-forward layers, so it never computes padded positions.
"""

import os

import numpy as np

from peer_systems import System


def build(model_dir, work_dir, log):
    """Folders {"fp32", "int8"} of the converted models (reused when present and current)."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    folders = {}
    for name, quantization in (("fp32", "float32"), ("int8", "int8_float32")):
        folder = os.path.join(work_dir, "ctranslate2", f"{name}-{ctranslate2.__version__}")
        if not os.path.isfile(os.path.join(folder, "model.bin")):
            log(f"converting to CTranslate2 ({quantization})")
            TransformersConverter(model_dir).convert(folder, quantization=quantization, force=True)
        folders[name] = folder
    return folders


class Ct2System(System):
    """A ctranslate2.Encoder on the CPU: intra-op threads as the bench's, one inter-op worker."""

    pads = False  # the padding is removed before the Linear layers

    def __init__(self, name, label, folder, compute_type, threads, reference=None):
        import ctranslate2

        super().__init__(name, label, reference)
        self.encoder = ctranslate2.Encoder(folder, device="cpu", compute_type=compute_type,
                                           intra_threads=threads, inter_threads=1)

    @staticmethod
    def _rows(ids, mask):
        return [[int(v) for v in row[:int(m.sum())]] for row, m in zip(ids, mask)]

    def _forward(self, ids, mask):
        hidden = np.array(self.encoder.forward_batch(self._rows(ids, mask)).last_hidden_state)
        out = np.zeros(ids.shape + (hidden.shape[-1],), dtype=np.float32)
        out[:, :hidden.shape[1]] = hidden  # positions past the longest row stay 0 (masked)
        return out

    def add_input(self, name, ids, mask):
        self.inputs[name] = {"ids": ids, "mask": mask, "rows": self._rows(ids, mask)}

    def _call(self, name):
        self.encoder.forward_batch(self.inputs[name]["rows"])

    def embed(self, name, batch):
        return self._embed_with(name, batch, self._forward)
