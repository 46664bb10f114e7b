"""Inputs of the peer benchmark: the BERT example's assets, real reviews, one tokenization.

Every system gets the same token ids: the reviews are tokenized once here with the model's own
tokenizer.json (Hugging Face `tokenizers`: BERT normalizer, lowercase, [CLS] ... [SEP],
truncated and padded to the sequence length), and tquant's C++ side reads the ids from a file.
"""

import csv
import os

import numpy as np


def read_assets(root):
    """(model_dir, data_dir) from bert_assets.env, which scripts/setup_bert_assets.sh writes
    (TQUANT_DATA_DIR or <root>/build/data)."""
    data_dir = os.environ.get("TQUANT_DATA_DIR", os.path.join(root, "build", "data"))
    if not os.path.isabs(data_dir):
        data_dir = os.path.join(root, data_dir)
    env_file = os.path.join(data_dir, "bert_assets.env")
    if not os.path.isfile(env_file):
        raise SystemExit(f"peer bench: {env_file} not found; run scripts/setup_bert_assets.sh")
    values = {}
    with open(env_file, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep:
                values[key] = value
    for key in ("MODEL_DIR", "DATA_DIR"):
        if key not in values:
            raise SystemExit(f"peer bench: {env_file} has no {key}=...")
    return values["MODEL_DIR"], values["DATA_DIR"]


def read_reviews(path):
    """The review texts of a fine_foods CSV (header "product","review","score"; R's write.csv)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["product", "review", "score"]:
        raise SystemExit(f"peer bench: {path}: expected the header product,review,score")
    return [row[1] for row in rows[1:]]


def tokenize(model_dir, texts, seq_len):
    """int64 ids and 0/1 mask, both [len(texts), seq_len]: truncated and padded to seq_len."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_truncation(max_length=seq_len)
    tokenizer.enable_padding(length=seq_len, pad_id=pad_id, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


def bench_inputs(ids, mask, batch):
    """The timed inputs {"b32_fixed", "b1_fixed", "b32_dynamic", "b1_dynamic"} -> (ids, mask)
    and a description of their real lengths. The large batch is the first `batch` reviews (file
    order: a random sample of lengths); batch 1 is the first review of median length. "fixed"
    keeps the rows padded to the full length; "dynamic" cuts each batch to its longest row, as a
    tokenizer called with padding=True pads it."""
    lengths = mask.sum(axis=1)
    median = int(np.sort(lengths)[len(lengths) // 2])
    one = int(np.flatnonzero(lengths == median)[0])
    chosen = {"b32": np.arange(min(batch, ids.shape[0])), "b1": np.array([one])}
    inputs = {}
    for name, rows in chosen.items():
        inputs[f"{name}_fixed"] = (ids[rows], mask[rows])
        width = int(lengths[rows].max())
        inputs[f"{name}_dynamic"] = (np.ascontiguousarray(ids[rows, :width]),
                                     np.ascontiguousarray(mask[rows, :width]))
    big = lengths[chosen["b32"]]
    described = {"b32": f"{big.mean():.1f} real tokens on average, longest {big.max()}",
                 "b1": str(median)}
    return inputs, described


def write_id_file(path, ids, mask):
    """The text format tquant_minilm_bench reads: "rows cols", the ids rows, the mask rows."""
    with open(path, "w", encoding="ascii") as f:
        f.write(f"{ids.shape[0]} {ids.shape[1]}\n")
        for matrix in (ids, mask):
            for row in matrix:
                f.write(" ".join(str(int(v)) for v in row) + "\n")
