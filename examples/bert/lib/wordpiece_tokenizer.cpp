#include "wordpiece_tokenizer.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <utility>

#include <nlohmann/json.hpp>
#include <utf8proc.h>

namespace bert {
namespace {

// ---- Unicode classes, as Hugging Face tokenizers defines them (normalizers/bert.rs and
// pre_tokenizers/bert.rs) -----------------------------------------------------------------------

// Rust's char::is_whitespace: the Unicode White_Space property (PropList.txt), stable since
// Unicode 4.1 and not exposed by utf8proc.
bool is_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// BertNormalizer's is_control: "other" categories Cc, Cf, Co, Cs, except tab, LF and CR (which
// count as whitespace). Unassigned code points (Cn) are kept, as in tokenizers.
bool is_control(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
      return true;
    default:
      return false;
  }
}

// The CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana), as in BERT.
bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// ASCII 33-47, 58-64, 91-96, 123-126 (Rust's is_ascii_punctuation) or Unicode P*.
bool is_punctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126)) {
    return true;
  }
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category >= UTF8PROC_CATEGORY_PC && category <= UTF8PROC_CATEGORY_PO;
}

// ---- UTF-8 -------------------------------------------------------------------------------------

std::u32string decode_utf8(const std::string& text) {
  std::u32string out;
  out.reserve(text.size());
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  size_t offset = 0;
  while (offset < text.size()) {
    utf8proc_int32_t c = 0;
    const utf8proc_ssize_t n =
        utf8proc_iterate(bytes + offset, static_cast<utf8proc_ssize_t>(text.size() - offset), &c);
    TORCH_CHECK_VALUE(n > 0,
                      "WordPieceTokenizer: expected UTF-8 text, got an invalid sequence at "
                      "byte ",
                      offset, " (byte value ", static_cast<int>(bytes[offset]), ")");
    out.push_back(static_cast<char32_t>(c));
    offset += static_cast<size_t>(n);
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  utf8proc_uint8_t buffer[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buffer);
  out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

std::string encode_utf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char32_t c : text) append_utf8(out, c);
  return out;
}

// Canonical decomposition with canonical ordering of combining marks (NFD).
std::u32string nfd(const std::u32string& text) {
  const std::string utf8 = encode_utf8(text);
  std::vector<utf8proc_int32_t> buffer(text.size() * 4 + 1);
  for (;;) {
    const utf8proc_ssize_t n =
        utf8proc_decompose(reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()),
                           static_cast<utf8proc_ssize_t>(utf8.size()), buffer.data(),
                           static_cast<utf8proc_ssize_t>(buffer.size()), UTF8PROC_DECOMPOSE);
    TORCH_CHECK(n >= 0, "WordPieceTokenizer: NFD failed: ", utf8proc_errmsg(n));
    if (static_cast<size_t>(n) <= buffer.size()) return {buffer.begin(), buffer.begin() + n};
    buffer.resize(static_cast<size_t>(n));
  }
}

// Rust's char::to_lowercase (full mapping) as tokenizers applies it, one character at a time.
// utf8proc has the simple mapping; the only unconditional SpecialCasing lowercase entry that
// differs is U+0130 (capital I with dot above -> "i" + U+0307).
void append_lowercase(std::u32string& out, char32_t c) {
  if (c == 0x130) {
    out += U"i\u0307";
    return;
  }
  out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
}

// ---- Files
// ---------------------------------------------------------------------------------------

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "WordPieceTokenizer: cannot open ", path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "WordPieceTokenizer: ", path, " is not valid JSON: ", e.what());
  }
}

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

// Reads the settings of tokenizer.json into `options` and checks that it describes the pipeline
// implemented here, with the same vocabulary as vocab.txt.
void read_tokenizer_json(const std::string& path,
                         const std::unordered_map<std::string, int64_t>& vocab,
                         WordPieceTokenizerOptions& options) {
  const nlohmann::json json = read_json(path);
  const auto type_of = [&](const char* key) {
    return json.contains(key) && json[key].is_object() ? json[key].value("type", "") : "";
  };
  TORCH_CHECK(type_of("normalizer") == "BertNormalizer", "WordPieceTokenizer: expected ", path,
              " to have a BertNormalizer, got '", type_of("normalizer"), "'");
  TORCH_CHECK(type_of("pre_tokenizer") == "BertPreTokenizer", "WordPieceTokenizer: expected ", path,
              " to have a BertPreTokenizer, got '", type_of("pre_tokenizer"), "'");
  TORCH_CHECK(type_of("model") == "WordPiece", "WordPieceTokenizer: expected ", path,
              " to have a WordPiece model, got '", type_of("model"), "'");

  const nlohmann::json& normalizer = json["normalizer"];
  options.clean_text = normalizer.value("clean_text", true);
  options.handle_chinese_chars = normalizer.value("handle_chinese_chars", true);
  options.lowercase = normalizer.value("lowercase", true);
  // strip_accents: null means "same as lowercase" (BertNormalizer and BertTokenizer alike).
  const auto strip = normalizer.find("strip_accents");
  options.strip_accents =
      strip == normalizer.end() || strip->is_null() ? options.lowercase : strip->get<bool>();

  const nlohmann::json& model = json["model"];
  options.unk_token = model.value("unk_token", options.unk_token);
  options.continuing_subword_prefix =
      model.value("continuing_subword_prefix", options.continuing_subword_prefix);
  options.max_input_chars_per_word =
      model.value("max_input_chars_per_word", options.max_input_chars_per_word);

  const auto& json_vocab = model.at("vocab");
  TORCH_CHECK(json_vocab.size() == vocab.size(), "WordPieceTokenizer: expected the vocabulary of ",
              path, " to equal vocab.txt, got ", json_vocab.size(), " tokens against ",
              vocab.size());
  for (const auto& [token, id] : json_vocab.items()) {
    const auto it = vocab.find(token);
    TORCH_CHECK(it != vocab.end() && it->second == id.get<int64_t>(),
                "WordPieceTokenizer: expected the vocabulary of ", path,
                " to equal vocab.txt, but token '", token, "' has id ", id.get<int64_t>(),
                (it == vocab.end() ? std::string(" and is not in vocab.txt")
                                   : " and id " + std::to_string(it->second) + " in vocab.txt"));
  }
}

// sentence-transformers' max_seq_length, else the tokenizer's model_max_length, else 512.
int64_t read_model_max_length(const std::string& model_dir) {
  const std::string sentence_bert = model_dir + "/sentence_bert_config.json";
  if (file_exists(sentence_bert)) {
    const nlohmann::json json = read_json(sentence_bert);
    if (json.contains("max_seq_length")) return json["max_seq_length"].get<int64_t>();
  }
  const std::string tokenizer_config = model_dir + "/tokenizer_config.json";
  if (file_exists(tokenizer_config)) {
    const nlohmann::json json = read_json(tokenizer_config);
    if (json.contains("model_max_length")) return json["model_max_length"].get<int64_t>();
  }
  return 512;
}

}  // namespace

std::unordered_map<std::string, int64_t> load_vocab(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "load_vocab: cannot open vocabulary file ", path);
  std::unordered_map<std::string, int64_t> vocab;
  std::string line;
  for (int64_t id = 0; std::getline(in, line); ++id) {
    // str::trim_end as in tokenizers' WordPiece::read_file (ASCII whitespace, '\r' included;
    // no vocabulary token ends in a non-ASCII space).
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    const auto [it, inserted] = vocab.emplace(line, id);
    TORCH_CHECK(inserted, "load_vocab: ", path, ":", id + 1, ": token '", line,
                "' is already on line ", it->second + 1);
  }
  TORCH_CHECK(!vocab.empty(), "load_vocab: expected tokens in ", path, ", got an empty file");
  return vocab;
}

WordPieceTokenizer::WordPieceTokenizer(std::unordered_map<std::string, int64_t> vocab,
                                       WordPieceTokenizerOptions options)
    : options_(std::move(options)), vocab_(std::move(vocab)) {
  TORCH_CHECK_VALUE(options_.max_input_chars_per_word > 0,
                    "WordPieceTokenizer: expected max_input_chars_per_word > 0, got ",
                    options_.max_input_chars_per_word);
  TORCH_CHECK_VALUE(options_.model_max_length >= 2,
                    "WordPieceTokenizer: expected model_max_length >= 2 ([CLS] and [SEP]), got ",
                    options_.model_max_length);
  tokens_.resize(vocab_.size());
  std::vector<bool> seen(vocab_.size(), false);
  for (const auto& [token, id] : vocab_) {
    TORCH_CHECK_VALUE(id >= 0 && id < static_cast<int64_t>(vocab_.size()) && !seen[id],
                      "WordPieceTokenizer: expected the ids of a vocabulary of ", vocab_.size(),
                      " tokens to be 0..", vocab_.size() - 1, " once each, got id ", id,
                      " for token '", token, "'");
    seen[id] = true;
    tokens_[id] = token;
    longest_token_bytes_ = std::max(longest_token_bytes_, token.size());
  }
  const auto special_id = [&](const std::string& token, const char* role) {
    const auto it = vocab_.find(token);
    TORCH_CHECK_VALUE(it != vocab_.end(), "WordPieceTokenizer: expected the ", role, " token '",
                      token, "' in the vocabulary, not found");
    return it->second;
  };
  unk_id_ = special_id(options_.unk_token, "unknown");
  cls_id_ = special_id(options_.cls_token, "CLS");
  sep_id_ = special_id(options_.sep_token, "SEP");
  pad_id_ = special_id(options_.pad_token, "padding");
}

WordPieceTokenizer WordPieceTokenizer::from_pretrained(const std::string& model_dir) {
  auto vocab = load_vocab(model_dir + "/vocab.txt");
  WordPieceTokenizerOptions options;
  const std::string tokenizer_json = model_dir + "/tokenizer.json";
  if (file_exists(tokenizer_json)) read_tokenizer_json(tokenizer_json, vocab, options);
  options.model_max_length = read_model_max_length(model_dir);
  return WordPieceTokenizer(std::move(vocab), std::move(options));
}

// BertNormalizer, in tokenizers' order: clean text, CJK spacing, strip accents, lowercase.
std::u32string WordPieceTokenizer::normalize(const std::string& text) const {
  std::u32string out;
  for (const char32_t c : decode_utf8(text)) {
    if (options_.clean_text) {
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_whitespace(c)) {
        out.push_back(U' ');
        continue;
      }
    }
    if (options_.handle_chinese_chars && is_chinese_char(c)) {
      out += {U' ', c, U' '};
    } else {
      out.push_back(c);
    }
  }
  if (options_.strip_accents) {
    std::u32string decomposed = nfd(out);
    out.clear();
    for (const char32_t c : decomposed) {
      if (utf8proc_category(static_cast<utf8proc_int32_t>(c)) != UTF8PROC_CATEGORY_MN) {
        out.push_back(c);
      }
    }
  }
  if (options_.lowercase) {
    std::u32string lowered;
    lowered.reserve(out.size());
    for (const char32_t c : out) append_lowercase(lowered, c);
    out = std::move(lowered);
  }
  return out;
}

// BertPreTokenizer: split on White_Space (dropped), then isolate each punctuation character.
std::vector<std::string> WordPieceTokenizer::basic_tokenize(const std::string& text) const {
  std::vector<std::string> words;
  std::string word;
  const auto flush = [&] {
    if (!word.empty()) words.push_back(std::move(word));
    word.clear();
  };
  for (const char32_t c : normalize(text)) {
    if (is_whitespace(c)) {
      flush();
    } else if (is_punctuation(c)) {
      flush();
      append_utf8(word, c);
      flush();
    } else {
      append_utf8(word, c);
    }
  }
  flush();
  return words;
}

// Greedy longest match first: the longest vocabulary entry that starts the rest of the word
// (with the continuation prefix after the first piece); no match at some point -> [UNK].
std::vector<int64_t> WordPieceTokenizer::wordpiece(const std::string& word) const {
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(word.data());
  int64_t chars = 0;
  for (const char byte : word) chars += (static_cast<unsigned char>(byte) & 0xC0) != 0x80;
  if (chars > options_.max_input_chars_per_word) return {unk_id_};

  std::vector<int64_t> ids;
  std::string piece;
  size_t start = 0;
  while (start < word.size()) {
    const std::string& prefix = start > 0 ? options_.continuing_subword_prefix : std::string();
    size_t end = std::min(word.size(), start + longest_token_bytes_);
    int64_t found = -1;
    while (end > start) {
      // Only try ends on character boundaries.
      if (end < word.size() && (bytes[end] & 0xC0) == 0x80) {
        --end;
        continue;
      }
      piece.assign(prefix).append(word, start, end - start);
      const auto it = vocab_.find(piece);
      if (it != vocab_.end()) {
        found = it->second;
        break;
      }
      --end;
    }
    if (found < 0) return {unk_id_};
    ids.push_back(found);
    start = end;
  }
  return ids;
}

std::vector<int64_t> WordPieceTokenizer::tokenize(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::string& word : basic_tokenize(text)) {
    const std::vector<int64_t> pieces = wordpiece(word);
    ids.insert(ids.end(), pieces.begin(), pieces.end());
  }
  return ids;
}

std::vector<int64_t> WordPieceTokenizer::encode(const std::string& text, int64_t max_length) const {
  TORCH_CHECK_VALUE(max_length >= 2, "WordPieceTokenizer::encode: expected max_length >= 2 ",
                    "(room for [CLS] and [SEP]), got ", max_length);
  const std::vector<int64_t> tokens = tokenize(text);
  const auto kept = std::min<size_t>(tokens.size(), static_cast<size_t>(max_length - 2));
  std::vector<int64_t> ids;
  ids.reserve(kept + 2);
  ids.push_back(cls_id_);
  ids.insert(ids.end(), tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(kept));
  ids.push_back(sep_id_);
  return ids;
}

std::vector<int64_t> WordPieceTokenizer::encode(const std::string& text) const {
  return encode(text, options_.model_max_length);
}

BatchEncoding WordPieceTokenizer::encode_batch(const std::vector<std::string>& texts,
                                               int64_t max_length, Padding padding) const {
  TORCH_CHECK_VALUE(!texts.empty(), "WordPieceTokenizer::encode_batch: expected at least one ",
                    "text, got none");
  std::vector<std::vector<int64_t>> encoded;
  encoded.reserve(texts.size());
  int64_t length = padding == Padding::kMaxLength ? max_length : 0;
  for (const std::string& text : texts) {
    encoded.push_back(encode(text, max_length));
    length = std::max(length, static_cast<int64_t>(encoded.back().size()));
  }
  const auto batch = static_cast<int64_t>(texts.size());
  BatchEncoding out;
  out.input_ids = torch::full({batch, length}, pad_id_, torch::kInt64);
  out.token_type_ids = torch::zeros({batch, length}, torch::kInt64);
  out.attention_mask = torch::zeros({batch, length}, torch::kInt64);
  auto ids = out.input_ids.accessor<int64_t, 2>();
  auto mask = out.attention_mask.accessor<int64_t, 2>();
  for (int64_t row = 0; row < batch; ++row) {
    const std::vector<int64_t>& sequence = encoded[row];
    for (size_t col = 0; col < sequence.size(); ++col) {
      ids[row][col] = sequence[col];
      mask[row][col] = 1;
    }
  }
  return out;
}

int64_t WordPieceTokenizer::token_to_id(const std::string& token) const {
  const auto it = vocab_.find(token);
  TORCH_CHECK_VALUE(it != vocab_.end(), "WordPieceTokenizer: token '", token,
                    "' is not in the vocabulary");
  return it->second;
}

const std::string& WordPieceTokenizer::id_to_token(int64_t id) const {
  TORCH_CHECK_INDEX(id >= 0 && id < vocab_size(), "WordPieceTokenizer: expected a token id in [0, ",
                    vocab_size(), "), got ", id);
  return tokens_[id];
}

}  // namespace bert
