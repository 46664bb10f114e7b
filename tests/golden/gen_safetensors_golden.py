"""Golden files for tquant's safetensors reader and writer, checked with Python's `safetensors`.

1. Writes data/python_written.safetensors with safetensors.torch.save_file: tensors of every
   dtype tquant reads, a 0-dim and an empty tensor, and string metadata. The C++ test reads it
   and checks names, dtypes, shapes, values and metadata.
2. If data/tquant_written.safetensors exists (the C++ test writes the same content there when
   run with TQUANT_WRITE_GOLDEN=1), opens it with safetensors.safe_open and checks that the
   tensor names, dtypes, shapes, values and metadata are the expected ones. The C++ test then
   compares its writer's output byte for byte with that committed, Python-checked file.

Run:  .venv/bin/python tests/golden/gen_safetensors_golden.py
"""
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def expected_tensors():
    return {
        "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,
        "f64": torch.tensor([1.5, -2.25], dtype=torch.float64),
        "f16": torch.tensor([0.5, 3.0], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -8.0], dtype=torch.bfloat16),
        "i64": torch.tensor([-3, 4000000000], dtype=torch.int64),
        "i32": torch.tensor([7, -7], dtype=torch.int32),
        "i8": torch.tensor([[-127, 0, 127]], dtype=torch.int8),
        "u8": torch.tensor([0, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "f8_e4m3": torch.tensor([1.0, -448.0, 0.5]).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
    }


METADATA = {"tquant.format": "golden", "note": "written by gen_safetensors_golden.py"}


def main():
    os.makedirs(HERE, exist_ok=True)
    save_file(expected_tensors(), os.path.join(HERE, "python_written.safetensors"), metadata=METADATA)
    print("wrote python_written.safetensors")
    ours = os.path.join(HERE, "tquant_written.safetensors")
    if not os.path.exists(ours):
        print("no tquant_written.safetensors yet: run the C++ test with TQUANT_WRITE_GOLDEN=1")
        return
    with safe_open(ours, framework="pt") as f:
        assert f.metadata() == METADATA, f.metadata()
        expected = expected_tensors()
        assert sorted(f.keys()) == sorted(expected), f.keys()
        for name, want in expected.items():
            got = f.get_tensor(name)
            assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
            assert got.shape == want.shape, (name, got.shape, want.shape)
            assert torch.equal(got.float(), want.float()), name
    print("tquant_written.safetensors opens with safetensors", __import__("safetensors").__version__,
          "with the expected names, dtypes, shapes, values and metadata")


if __name__ == "__main__":
    main()
