"""Export scikit-learn's handwritten digits (load_digits) to a safetensors file for the CNN example.

The data ship inside the scikit-learn package (UCI optical recognition of handwritten digits:
1,797 grey images of 8x8 pixels, values 0..16, labels 0..9); nothing is downloaded.

Writes, with numpy only (no safetensors package needed):
  images  F32 [1797, 8, 8]   pixel values 0..16, as load_digits gives them
  labels  I64 [1797]         digit 0..9
  metadata: source, scikit-learn version, sample count.

Usage: .venv/bin/python examples/cnn/export_digits.py OUT.safetensors
"""

import json
import os
import struct
import sys
import tempfile

import numpy as np
import sklearn
from sklearn.datasets import load_digits


def write_safetensors(path, tensors, metadata):
    """Header length (u64 little-endian), JSON header padded with spaces to 8 bytes, data."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        dtype = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64"}[array.dtype]
        blob = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, sort_keys=True).encode("utf-8")
    text += b" " * (-len(text) % 8)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Temporary name, then rename: an interrupted run never leaves a half-written file.
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".digits.")
    with os.fdopen(handle, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for blob in blobs:
            out.write(blob)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: export_digits.py OUT.safetensors")
    digits = load_digits()
    images = digits.images.astype("<f4")
    labels = digits.target.astype("<i8")
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,), (images.shape, labels.shape)
    write_safetensors(sys.argv[1], {"images": images, "labels": labels}, {
        "source": "sklearn.datasets.load_digits",
        "sklearn_version": sklearn.__version__,
        "samples": str(len(labels)),
    })
    print(f"wrote {len(labels)} digits to {sys.argv[1]}")


if __name__ == "__main__":
    main()
