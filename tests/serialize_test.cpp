#include <gtest/gtest.h>

#include "tquant/histogram_observer.h"
#include "tquant/nn/quant_conv2d.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quantizable.h"
#include "tquant/quantize.h"
#include "tquant/safetensors.h"
#include "tquant/serialize.h"

#include <fstream>

#include <nlohmann/json.hpp>
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
    EXPECT_NE(std::string(e.what()).find("'fc1.bias' (model Float [12], file Float [16])"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(same_state(before, snapshot(*other)));
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

namespace {

namespace nn = torch::nn;

/// The patterns docs/api.md recommends, mixed: member-field tquant modules, plain torch
/// modules inside Sequential / ModuleList / ModuleDict (prepare swaps them for twins), a
/// QuantConv2d (convert keeps it in fake-quant unless it has an integer kernel).
struct MixedImpl : nn::Module {
  explicit MixedImpl(int64_t hidden = 16) {
    conv = register_module("conv", QuantConv2d(nn::Conv2dOptions(2, 4, 3).padding(1)));
    convs = register_module("convs", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(4, 4, 1)),
                                                    nn::ReLU()));
    head = register_module("head", nn::Sequential(nn::Linear(4 * 5 * 5, hidden), nn::ReLU(),
                                                  nn::Linear(hidden, 8)));
    list = register_module("list", nn::ModuleList(nn::Linear(8, 8)));
    dict = register_module(
        "dict", nn::ModuleDict(torch::OrderedDict<std::string, std::shared_ptr<nn::Module>>{
                    {"out", nn::Linear(8, 5).ptr()}}));
    fc = register_module("fc", QuantLinear(5, 3));
  }
  /// A container entry: the torch Linear, or the QuantLinear that replaced it.
  static at::Tensor linear(const std::shared_ptr<nn::Module>& module, const at::Tensor& x) {
    if (auto twin = std::dynamic_pointer_cast<QuantLinearImpl>(module)) return twin->forward(x);
    return std::dynamic_pointer_cast<nn::LinearImpl>(module)->forward(x);
  }
  at::Tensor forward(at::Tensor x) {
    x = convs->forward(conv(x)).flatten(1);
    x = head->forward(x);
    x = torch::relu(linear(list->ptr(0), x));
    return fc(linear((*dict)["out"], x));
  }
  QuantConv2d conv{nullptr};
  QuantLinear fc{nullptr};
  nn::Sequential convs{nullptr}, head{nullptr};
  nn::ModuleList list{nullptr};
  nn::ModuleDict dict{nullptr};
};
TORCH_MODULE(Mixed);

/// name -> "type mode scheme" of every tquant module.
std::map<std::string, std::string> tquant_modules(nn::Module& model) {
  std::map<std::string, std::string> result;
  for (const auto& item : model.named_modules()) {
    if (auto* q = as_quantizable(*item.value())) {
      result[item.key()] =
          q->quant_type_name() + " " + to_string(q->mode()) + " " + q->converted_scheme();
    }
  }
  return result;
}

/// load_state must throw a c10::ValueError whose message holds every one of `parts`, and leave
/// the model unchanged.
void expect_load_error(nn::Module& model, const std::string& path,
                       const std::vector<std::string>& parts) {
  const auto before = snapshot(model);
  std::string message;
  try {
    load_state(model, path);
  } catch (const c10::ValueError& error) {
    message = error.what_without_backtrace();
  }
  EXPECT_FALSE(message.empty()) << "expected a c10::ValueError";
  for (const auto& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << part << "\n" << message;
  }
  EXPECT_TRUE(same_state(before, snapshot(model)));
}

/// A Mixed model prepared by prepare() with the static preset and calibrated; converted when
/// `converted`.
Mixed calibrated_mixed(int64_t seed, bool converted) {
  torch::manual_seed(seed);
  Mixed model;
  prepare(*model, QConfigMapping(int8_static_qconfig()));
  torch::NoGradGuard no_grad;
  calibrate(*model, [&] {
    for (int i = 0; i < 3; ++i) model(torch::randn({4, 2, 5, 5}));
  });
  if (converted) convert(*model);
  return model;
}

}  // namespace

TEST(Serialize, FileLoadsIntoFreshFloatModelWithTorchModulesInContainers) {
  for (const bool converted : {false, true}) {
    SCOPED_TRACE(converted ? "converted" : "calibrated (fake-quant)");
    Mixed saved = calibrated_mixed(31, converted);
    const std::string path = temp_path(converted ? "mixed_int8.safetensors"
                                                 : "mixed_calibrated.safetensors");
    save_state(*saved, path);

    torch::manual_seed(32);  // other float weights: everything must come from the file
    Mixed fresh;             // float, no prepare: torch Linear / Conv2d in its containers
    load_state(*fresh, path);
    EXPECT_EQ(tquant_modules(*fresh), tquant_modules(*saved));
    EXPECT_NE(std::dynamic_pointer_cast<QuantConv2dImpl>(fresh->convs->ptr(0)), nullptr);
    EXPECT_NE(std::dynamic_pointer_cast<QuantLinearImpl>((*fresh->dict)["out"]), nullptr);
    EXPECT_NE(fresh->conv->mode(), QuantMode::kFloat);
    EXPECT_TRUE(same_state(snapshot(*fresh), snapshot(*saved)));
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({3, 2, 5, 5});
    EXPECT_TRUE(torch::equal(fresh(x), saved(x)));
  }
}

TEST(Serialize, CalibratedFileLoadsIntoUnpreparedModel) {
  auto saved = calibrated_model(8);
  const auto path = temp_path("unprepared.safetensors");
  save_state(*saved, path);
  torch::manual_seed(9);
  TwoLayer plain(8, 16, 3);  // no quantizers: they are rebuilt from the file's recipes
  load_state(*plain, path);
  EXPECT_EQ(plain->fc1->mode(), QuantMode::kFakeQuant);
  EXPECT_TRUE(same_state(snapshot(*plain), snapshot(*saved)));
  const auto x = torch::randn({5, 8});
  EXPECT_TRUE(torch::equal(saved(x), plain(x)));
}

TEST(Serialize, FileWithoutQuantizerRecipesAsksForPrepare) {
  auto saved = calibrated_model(12);
  const auto path = temp_path("with_recipes.safetensors");
  save_state(*saved, path);
  auto file = read_safetensors(path);
  auto modules = nlohmann::json::parse(file.metadata.at("tquant.modules"));
  for (auto& [name, entry] : modules.items()) entry.erase("quantizers");
  file.metadata["tquant.modules"] = modules.dump();
  const auto old_style = temp_path("without_recipes.safetensors");
  write_safetensors(old_style, file.tensors, file.metadata);

  TwoLayer plain(8, 16, 3);
  expect_load_error(*plain, old_style,
                    {"module 'fc1' is in fake_quant mode in the file but has no quantizers in "
                     "the model",
                     "prepare the model like the saved one"});
  auto prepared = fresh_prepared_model(13);  // prepared: loads as before
  load_state(*prepared, old_style);
  const auto x = torch::randn({5, 8});
  EXPECT_TRUE(torch::equal(saved(x), prepared(x)));
}

namespace {

struct PlainTwoLayerImpl : nn::Module {
  PlainTwoLayerImpl()
      : fc1(register_module("fc1", nn::Linear(8, 16))),
        fc2(register_module("fc2", nn::Linear(16, 3))) {}
  nn::Linear fc1, fc2;
};
TORCH_MODULE(PlainTwoLayer);

/// fc1 narrower than TwoLayer's, fc3 where TwoLayer has fc2.
struct OtherLayersImpl : nn::Module {
  OtherLayersImpl()
      : fc1(register_module("fc1", QuantLinear(8, 12))),
        fc3(register_module("fc3", QuantLinear(12, 3))) {}
  QuantLinear fc1, fc3;
};
TORCH_MODULE(OtherLayers);

}  // namespace

TEST(Serialize, PlainTorchLinearInMemberFieldIsNamedWithTheFix) {
  auto saved = calibrated_model(14);
  const auto path = temp_path("member_field.safetensors");
  save_state(*saved, path);
  PlainTwoLayer plain;
  expect_load_error(*plain, path,
                    {"module 'fc1' is a plain torch::nn::Linear held in a member field",
                     "declare the field as tquant::QuantLinear"});
}

TEST(Serialize, StructureMismatchListsWhatDiffers) {
  auto saved = calibrated_model(15);
  const auto path = temp_path("mismatch.safetensors");
  save_state(*saved, path);
  OtherLayers other;
  expect_load_error(*other, path,
                    {"the file does not fit the model", "'fc3' (QuantLinear) is not in the file",
                     "'fc2' (QuantLinear in the file) is not in the model",
                     "model tensor(s) not in the file: 'fc3.bias'",
                     "file tensor(s) not in the model: ", "'fc2.bias'",
                     "'fc1.bias' (model Float [12], file Float [16])"});
  EXPECT_EQ(other->fc1->mode(), QuantMode::kFloat);
}

TEST(Serialize, SharedGridHistogramsKeepTheirGridThroughTheRecipe) {
  torch::manual_seed(13);
  TwoLayer saved(8, 16, 3);
  prepare(*saved, QConfigMapping(int8_static_qconfig(
                      PresetOptions().histogram_grid(HistogramGrid::kShared))));
  {
    torch::NoGradGuard no_grad;
    const auto data = torch::randn({32, 8});
    calibrate(*saved, [&] { saved(data); });
  }
  const auto path = temp_path("shared_grid.safetensors");
  save_state(*saved, path);
  torch::manual_seed(14);
  TwoLayer plain(8, 16, 3);  // quantizers rebuilt from the recipes
  load_state(*plain, path);
  auto& histogram =
      dynamic_cast<HistogramObserverImpl&>(*plain->fc1->input_quantizer->observer);
  EXPECT_EQ(histogram.options.grid(), HistogramGrid::kShared);
  EXPECT_TRUE(same_state(snapshot(*plain), snapshot(*saved)));
}

TEST(Serialize, FusedGeluIsRecordedAndAMissingOneIsNamed) {
  TwoLayer saved = converted_model(23);
  saved->fc1->set_fused_gelu(true);
  const std::string path = temp_path("fused_gelu.safetensors");
  save_state(*saved, path);

  // A fresh model without the flag would skip the GELU: refused, naming the module and the fix.
  torch::manual_seed(99);
  TwoLayer plain(8, 16, 3);
  const auto before = snapshot(*plain);
  try {
    load_state(*plain, path);
    FAIL() << "expected load_state to refuse a model without the fused GELU";
  } catch (const c10::ValueError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'fc1' was saved with a fused GELU"), std::string::npos) << message;
    EXPECT_NE(message.find("set_fused_gelu(true)"), std::string::npos) << message;
  }
  EXPECT_TRUE(same_state(snapshot(*plain), before));

  // Built as the saved one was, it loads and computes the same outputs.
  TwoLayer fresh(8, 16, 3);
  fresh->fc1->set_fused_gelu(true);
  load_state(*fresh, path);
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({5, 8});
  EXPECT_TRUE(torch::equal(fresh(x), saved(x)));
}

TEST(QuantLinearInput, IntegerInputIsRefusedWithTheModuleName) {
  QuantLinear layer(4, 2);
  try {
    layer(torch::ones({3, 4}, torch::kInt64));
    FAIL() << "expected an integer input to be refused";
  } catch (const c10::ValueError& error) {
    EXPECT_NE(std::string(error.what()).find("expected a floating-point input, got Long"),
              std::string::npos)
        << error.what();
  }
}
