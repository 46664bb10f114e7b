"""The systems of the peer benchmark, behind one interface.

A system has a `name`, a `label` for the table, `reference` (the name of its own FP32 system,
None for an FP32 system), and
  add_input(name, ids, mask)   prepares an input once (tensors, feeds, or a file for tquant);
  time(name, reps)             -> wall ms of each of `reps` forwards of the encoder on it;
  embed(name, batch)           -> mean-pooled, L2-normalized sentence embeddings [rows, hidden].
Timing covers the forward call only (inputs already in the system's own format). The encoder
runs without pooler or head everywhere.
"""

import os
import subprocess
import sys
import time

import numpy as np

from peer_inputs import write_id_file


def mean_pool_normalize(hidden, mask):
    """Masked mean over the sequence, then L2-normalized rows (sentence-transformers' Pooling
    + Normalize; bert::mean_pool_normalize on tquant's side)."""
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class System:
    def __init__(self, name, label, reference=None):
        self.name, self.label, self.reference = name, label, reference
        self.inputs = {}

    def time(self, name, reps):
        """Wall ms of each of `reps` calls of _call(name) (the forward on a prepared input)."""
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            self._call(name)
            times.append((time.perf_counter() - start) * 1e3)
        return times

    def _embed_with(self, name, batch, forward):
        ids, mask = self.inputs[name]["ids"], self.inputs[name]["mask"]
        parts = [mean_pool_normalize(forward(ids[s:s + batch], mask[s:s + batch]),
                                     mask[s:s + batch])
                 for s in range(0, ids.shape[0], batch)]
        return np.concatenate(parts)


class TorchSystem(System):
    """transformers' BertModel (SDPA attention) in eager PyTorch, optionally dynamic-quantized."""

    def __init__(self, name, label, model, reference=None):
        super().__init__(name, label, reference)
        self.model = model

    def _forward(self, ids, mask):
        import torch

        with torch.inference_mode():
            return self.model(input_ids=ids, attention_mask=mask,
                              token_type_ids=torch.zeros_like(ids)).last_hidden_state

    def add_input(self, name, ids, mask):
        import torch

        self.inputs[name] = {"ids": ids, "mask": mask, "t_ids": torch.from_numpy(ids),
                             "t_mask": torch.from_numpy(mask)}

    def _call(self, name):
        self._forward(self.inputs[name]["t_ids"], self.inputs[name]["t_mask"])

    def embed(self, name, batch):
        import torch

        return self._embed_with(name, batch, lambda i, m: self._forward(
            torch.from_numpy(i), torch.from_numpy(m)).numpy())


def load_bert(model_dir, attention):
    """transformers' BertModel from the local safetensors, no pooler, in eval mode;
    attention: "sdpa" or "eager"."""
    import transformers
    from transformers import BertModel

    transformers.logging.set_verbosity_error()  # the unused pooler weights are expected
    transformers.logging.disable_progress_bar()
    return BertModel.from_pretrained(model_dir, add_pooling_layer=False,
                                     attn_implementation=attention).eval()


def encoder_module(model_dir, attention):
    """The encoder as a module with positional inputs (input_ids, attention_mask,
    token_type_ids) -> last_hidden_state, as exporters take it (transformers 5 refuses the
    positional call: "multiple values for argument 'use_cache'")."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    return Encoder(load_bert(model_dir, attention))


def torch_models(model_dir):
    """(FP32 BertModel with SDPA, its torch.ao quantize_dynamic copy: int8 Linear weights per
    tensor, qint8, torch's default dynamic qconfig)."""
    import copy
    import warnings

    import torch

    fp32 = load_bert(model_dir, "sdpa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated since torch 2.10, still shipped in 2.11
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear},
                                                      dtype=torch.qint8)
    return fp32, int8


class FeedSystem(System):
    """A system fed numpy arrays by input name (ONNX Runtime, OpenVINO): subclasses define
    _run(feed) -> last_hidden_state."""

    def add_input(self, name, ids, mask):
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        self.inputs[name] = {"ids": ids, "mask": mask, "feed": feed}

    def _call(self, name):
        self._run(self.inputs[name]["feed"])

    def embed(self, name, batch):
        return self._embed_with(name, batch, lambda ids, mask: self._run(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}))


class OrtSystem(FeedSystem):
    """One ONNX Runtime CPU session: intra-op 2, inter-op 1, sequential, all graph optimizations."""

    def __init__(self, name, label, path, threads, reference=None):
        import onnxruntime as ort

        super().__init__(name, label, reference)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def _run(self, feed):
        return self.session.run(["last_hidden_state"], feed)[0]


class TquantServer:
    """bench/peers/tquant_minilm_bench, started once: it loads, calibrates and converts its
    models (wait_ready), then answers one line per command (see the program's header)."""

    def __init__(self, program, args, work_dir):
        if not os.access(program, os.X_OK):
            raise SystemExit(f"peer bench: {program} not found or not executable; build the "
                             "target tquant_minilm_bench (bench/peers/run.sh does)")
        self.work_dir = work_dir
        self.inputs_sent = set()
        self.process = subprocess.Popen([program] + args, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
                                        bufsize=1)

    def wait_ready(self):
        """Blocks until the server has its models (it prints "ready")."""
        first = self.process.stdout.readline().strip()
        if first != "ready":
            self.process.wait()
            raise SystemExit(f"peer bench: tquant_minilm_bench did not start (exit "
                             f"{self.process.returncode}; its messages are above)")

    def request(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline().strip()
        status, _, rest = reply.partition(" ")
        if status != "ok":
            raise RuntimeError(f"tquant_minilm_bench: '{line}' -> {reply or 'no reply (exited?)'}")
        return rest

    def send_input(self, name, ids, mask):
        """Writes the ids once per input name and has the server read them."""
        if name in self.inputs_sent:
            return
        path = os.path.join(self.work_dir, f"ids_{name}.txt")
        write_id_file(path, ids, mask)
        self.request(f"input {name} {path}")
        self.inputs_sent.add(name)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)


class TquantSystem(System):
    """A model held by the tquant server; inputs travel as id files in the work folder."""

    def __init__(self, name, label, server, reference=None):
        super().__init__(name, label, reference)
        self.server = server

    def add_input(self, name, ids, mask):
        self.server.send_input(name, ids, mask)
        self.inputs[name] = {"ids": ids, "mask": mask}

    def time(self, name, reps):
        return [float(v) for v in self.server.request(f"time {self.name} {name} {reps}").split()]

    def embed(self, name, batch):
        path = os.path.join(self.server.work_dir, f"embeddings_{self.name}_{name}.f32")
        rows, dim = (int(v) for v in
                     self.server.request(f"embed {self.name} {name} {batch} {path}").split())
        return np.fromfile(path, dtype=np.float32).reshape(rows, dim)
