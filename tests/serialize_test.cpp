#include <gtest/gtest.h>

#include "tquant/nn/quant_linear.h"
#include "tquant/safetensors.h"
#include "tquant/serialize.h"

#include <fstream>

#include <torch/torch.h>

using namespace tquant;

namespace {

/// A small model that calls its layers through member fields, as user models do.
struct TwoLayerImpl : torch::nn::Module {
  TwoLayerImpl(int64_t in, int64_t hidden, int64_t out)
      : fc1(register_module("fc1", QuantLinear(in, hidden))),
        fc2(register_module("fc2", QuantLinear(hidden, out))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  void for_each_layer(const std::function<void(QuantLinearImpl&)>& fn) {
    fn(*fc1);
    fn(*fc2);
  }
  QuantLinear fc1, fc2;
};
TORCH_MODULE(TwoLayer);

TwoLayer calibrated_model(int64_t seed) {
  torch::manual_seed(seed);
  TwoLayer model(8, 16, 3);
  model->for_each_layer([](QuantLinearImpl& layer) {
    layer.set_qconfig(int8_static_qconfig());
    layer.set_mode(QuantMode::kObserve);
  });
  for (int i = 0; i < 4; ++i) model(torch::randn({32, 8}));
  model->for_each_layer([](QuantLinearImpl& layer) { layer.set_mode(QuantMode::kFakeQuant); });
  return model;
}

TwoLayer fresh_prepared_model(int64_t seed, int64_t hidden = 16) {
  torch::manual_seed(seed);
  TwoLayer model(8, hidden, 3);
  model->for_each_layer([](QuantLinearImpl& layer) { layer.set_qconfig(int8_static_qconfig()); });
  return model;
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "/" + name; }

std::map<std::string, torch::Tensor> snapshot(const torch::nn::Module& model) {
  std::map<std::string, torch::Tensor> state;
  for (const auto& item : model.named_parameters()) state[item.key()] = item.value().clone();
  for (const auto& item : model.named_buffers()) state[item.key()] = item.value().clone();
  return state;
}

bool same_state(const std::map<std::string, torch::Tensor>& a,
                const std::map<std::string, torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    if (b.count(name) == 0 || t.sizes() != b.at(name).sizes() || !torch::equal(t, b.at(name))) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST(Serialize, CalibratedModelReloadsBitExactly) {
  auto saved = calibrated_model(1);
  const auto path = temp_path("calibrated.safetensors");
  save_state(*saved, path);

  auto loaded = fresh_prepared_model(2);  // different random weights before loading
  load_state(*loaded, path);
  EXPECT_EQ(loaded->fc1->mode(), QuantMode::kFakeQuant);
  auto x = torch::randn({5, 8});
  EXPECT_TRUE(torch::equal(saved(x), loaded(x)));
  EXPECT_TRUE(torch::equal(saved->fc1->input_quantizer->scale, loaded->fc1->input_quantizer->scale));
}

TEST(Serialize, HistogramsCanBeLeftOutAndRangesStillReload) {
  auto saved = calibrated_model(3);
  const auto with = temp_path("with_hist.safetensors");
  const auto without = temp_path("without_hist.safetensors");
  save_state(*saved, with);
  save_state(*saved, without, SaveOptions().include_histograms(false));
  EXPECT_EQ(read_safetensors(with).tensors.count("fc1.input_quantizer.observer.counts"), 1u);
  EXPECT_EQ(read_safetensors(without).tensors.count("fc1.input_quantizer.observer.counts"), 0u);
  auto loaded = fresh_prepared_model(4);
  load_state(*loaded, without);
  auto x = torch::randn({5, 8});
  EXPECT_TRUE(torch::equal(saved(x), loaded(x)));
}

TEST(Serialize, MetadataDescribesModulesAndVersion) {
  auto saved = calibrated_model(5);
  const auto path = temp_path("meta.safetensors");
  save_state(*saved, path);
  auto file = read_safetensors(path);
  EXPECT_EQ(file.metadata.at("tquant.format_version"), kStateFormatVersion);
  const auto& modules = file.metadata.at("tquant.modules");
  EXPECT_NE(modules.find("\"fc1\""), std::string::npos) << modules;
  EXPECT_NE(modules.find("int8 symmetric narrow per_channel(axis=0)"), std::string::npos) << modules;
  EXPECT_NE(modules.find("fake_quant"), std::string::npos) << modules;
}

TEST(Serialize, OtherStructureIsRejectedAndModelUnchanged) {
  auto saved = calibrated_model(6);
  const auto path = temp_path("structure.safetensors");
  save_state(*saved, path);
  auto other = fresh_prepared_model(7, /*hidden=*/12);
  const auto before = snapshot(*other);
  try {
    load_state(*other, path);
    FAIL() << "expected an error";
  } catch (const c10::ValueError& e) {
    // Names are checked in sorted order: fc1.bias is the first mismatch.
    EXPECT_NE(std::string(e.what()).find("'fc1.bias' expected shape [12]"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(same_state(before, snapshot(*other)));
}

TEST(Serialize, UnpreparedModelIsToldWhatIsMissing) {
  auto saved = calibrated_model(8);
  const auto path = temp_path("unprepared.safetensors");
  save_state(*saved, path);
  torch::manual_seed(9);
  TwoLayer plain(8, 16, 3);  // no quantizers
  const auto before = snapshot(*plain);
  try {
    load_state(*plain, path);
    FAIL() << "expected an error";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("quantizer"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("prepared"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(same_state(before, snapshot(*plain)));
}

TEST(Serialize, TruncatedAndForeignFilesAreRejected) {
  auto saved = calibrated_model(10);
  const auto path = temp_path("truncate.safetensors");
  save_state(*saved, path);
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto cut = temp_path("cut.safetensors");
  {
    std::ofstream out(cut, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  auto target = fresh_prepared_model(11);
  const auto before = snapshot(*target);
  EXPECT_THROW(load_state(*target, cut), c10::ValueError);

  auto file = read_safetensors(path);
  file.metadata["tquant.format_version"] = "999";
  const auto future = temp_path("future.safetensors");
  write_safetensors(future, file.tensors, file.metadata);
  try {
    load_state(*target, future);
    FAIL() << "expected an error";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("999"), std::string::npos) << e.what();
  }
  const auto foreign = temp_path("foreign.safetensors");
  write_safetensors(foreign, {{"x", torch::ones({2})}});
  EXPECT_THROW(load_state(*target, foreign), c10::ValueError);
  EXPECT_TRUE(same_state(before, snapshot(*target)));
}

namespace {

/// A calibrated TwoLayer converted to INT8 (fc1 static int8, fc2 weight-only int4).
TwoLayer converted_model(int64_t seed) {
  TwoLayer model = calibrated_model(seed);
  model->fc2->set_qconfig(weight_only_int4_qconfig(8));
  model->fc2->set_mode(QuantMode::kFakeQuant);
  EXPECT_TRUE(model->fc1->convert().converted);
  EXPECT_TRUE(model->fc2->convert().converted);
  return model;
}

}  // namespace

TEST(Serialize, ConvertedModelLoadsIntoFreshFloatModelWithBitExactOutputs) {
  TwoLayer saved = converted_model(21);
  const std::string path = temp_path("converted.safetensors");
  save_state(*saved, path);

  torch::manual_seed(99);  // other float weights: everything must come from the file
  TwoLayer fresh(8, 16, 3);
  load_state(*fresh, path);
  EXPECT_EQ(fresh->fc1->mode(), QuantMode::kConverted);
  EXPECT_EQ(fresh->fc1->converted_scheme(), "int8_static");
  EXPECT_EQ(fresh->fc2->converted_scheme(), "weight_only:block=8");
  EXPECT_TRUE(same_state(snapshot(*fresh), snapshot(*saved)));
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({5, 8});
  EXPECT_TRUE(torch::equal(fresh(x), saved(x)));

  // The file holds integer codes, not float weights.
  const auto file = read_safetensors(path);
  EXPECT_EQ(file.tensors.at("fc1.weight_int8").scalar_type(), at::kChar);
  EXPECT_EQ(file.tensors.count("fc1.weight"), 0u);
  EXPECT_EQ(file.tensors.at("fc2.weight_scale").sizes(), at::IntArrayRef({3, 2}));
}

TEST(Serialize, ConvertedFileIntoOtherStructureFailsAndLeavesModelUnchanged) {
  TwoLayer saved = converted_model(22);
  const std::string path = temp_path("converted_other.safetensors");
  save_state(*saved, path);
  TwoLayer other(8, 12, 3);  // hidden 12 instead of 16
  const auto before = snapshot(*other);
  try {
    load_state(*other, path);
    FAIL() << "expected an error";
  } catch (const c10::Error& error) {
    // fc2's int4 blocks of 8 do not fit 12 input columns: the first mismatch found.
    EXPECT_NE(std::string(error.what()).find("module 'fc2'"), std::string::npos)
        << error.what();
  }
  EXPECT_TRUE(same_state(snapshot(*other), before));
  EXPECT_EQ(other->fc1->mode(), QuantMode::kFloat);
  EXPECT_TRUE(other->fc1->weight.defined());
}
