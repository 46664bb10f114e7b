#include "bert_checkpoint.h"

#include <filesystem>
#include <sstream>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "tquant/fake_quantize.h"

namespace bert {
namespace {

constexpr const char* kFormatKey = "tquant_bert.format";
constexpr const char* kClassifierFormat = "BertClassifier";
constexpr size_t kMaxListedProblems = 8;

bool is_quantizer(const torch::nn::Module& module) {
  return module.as<tquant::FakeQuantizeImpl>() != nullptr ||
         module.as<tquant::LearnableFakeQuantizeImpl>() != nullptr;
}

void collect_float_state(const torch::nn::Module& module, const std::string& prefix,
                         std::map<std::string, at::Tensor>& out) {
  if (is_quantizer(module)) return;
  for (const auto& item : module.named_parameters(/*recurse=*/false)) {
    if (item.value().defined()) out.emplace(prefix + item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/false)) {
    if (item.value().defined()) out.emplace(prefix + item.key(), item.value());
  }
  for (const auto& child : module.named_children()) {
    collect_float_state(*child.value(), prefix + child.key() + ".", out);
  }
}

bool is_convertible_float(c10::ScalarType type) {
  return type == at::kFloat || type == at::kHalf || type == at::kBFloat16 || type == at::kDouble;
}

std::string describe(const at::Tensor& tensor) {
  std::ostringstream out;
  out << tensor.sizes() << " " << tquant::safetensors_dtype_name(tensor.scalar_type());
  return out.str();
}

std::string checkpoint_file(const std::string& path) {
  std::filesystem::path file(path);
  if (std::filesystem::is_directory(file)) file /= "model.safetensors";
  return file.string();
}

}  // namespace

const std::set<std::string> kUnusedCheckpointKeys = {"embeddings.position_ids"};

std::map<std::string, at::Tensor> float_state(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> state;
  collect_float_state(module, "", state);
  return state;
}

void load_float_state(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                      const std::set<std::string>& unused, const std::string& what) {
  const std::map<std::string, at::Tensor> targets = float_state(module);
  std::vector<std::string> problems;
  for (const auto& [name, target] : targets) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      problems.push_back("missing tensor \"" + name + "\" (expected " + describe(target) + ")");
      continue;
    }
    const at::Tensor& source = it->second;
    if (source.sizes() != target.sizes()) {
      std::ostringstream out;
      out << "tensor \"" << name << "\": expected shape " << target.sizes() << ", got "
          << source.sizes();
      problems.push_back(out.str());
    }
    const bool dtype_ok = at::isFloatingType(target.scalar_type())
                              ? is_convertible_float(source.scalar_type())
                              : source.scalar_type() == target.scalar_type();
    if (!dtype_ok) {
      problems.push_back("tensor \"" + name + "\": expected dtype " +
                         (at::isFloatingType(target.scalar_type())
                              ? std::string("F32, F16, BF16 or F64")
                              : tquant::safetensors_dtype_name(target.scalar_type())) +
                         ", got " + tquant::safetensors_dtype_name(source.scalar_type()));
    }
  }
  for (const auto& [name, source] : tensors) {
    if (targets.count(name) == 0 && unused.count(name) == 0) {
      problems.push_back("unexpected tensor \"" + name + "\" (" + describe(source) +
                         "), the model has no such parameter or buffer");
    }
  }
  if (!problems.empty()) {
    std::ostringstream message;
    message << what << ": the tensors do not match the model (" << problems.size()
            << (problems.size() == 1 ? " problem" : " problems") << "):";
    for (size_t i = 0; i < problems.size() && i < kMaxListedProblems; ++i) {
      message << "\n  " << problems[i];
    }
    if (problems.size() > kMaxListedProblems) {
      message << "\n  ... and " << problems.size() - kMaxListedProblems << " more";
    }
    TORCH_CHECK_VALUE(false, message.str());
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, target] : targets) {
    target.copy_(tensors.at(name));
  }
}

void load_bert_checkpoint(BertModelImpl& model, const tquant::SafetensorsFile& file,
                          const std::string& what) {
  std::set<std::string> unused = kUnusedCheckpointKeys;
  if (model.pooler.is_empty()) {
    unused.insert({"pooler.dense.weight", "pooler.dense.bias"});
  }
  load_float_state(model, file.tensors, unused, what);
}

void load_bert_checkpoint(BertModelImpl& model, const std::string& path) {
  const std::string file = checkpoint_file(path);
  load_bert_checkpoint(model, tquant::read_safetensors(file), file);
}

void load_bert_checkpoint(BertClassifierImpl& classifier, const std::string& path) {
  load_bert_checkpoint(*classifier.bert, path);
}

void save_classifier(const BertClassifierImpl& classifier, const std::string& path) {
  const std::map<std::string, std::string> metadata = {
      {kFormatKey, kClassifierFormat},
      {"num_labels", std::to_string(classifier.num_labels)},
      {"hidden_size", std::to_string(classifier.config.hidden_size)}};
  tquant::write_safetensors(path, float_state(classifier), metadata);
}

void load_classifier(BertClassifierImpl& classifier, const std::string& path) {
  const tquant::SafetensorsFile file = tquant::read_safetensors(path);
  auto format = file.metadata.find(kFormatKey);
  TORCH_CHECK_VALUE(format != file.metadata.end() && format->second == kClassifierFormat, path,
                    ": expected a file written by save_classifier (metadata ", kFormatKey, " = \"",
                    kClassifierFormat, "\"), got ",
                    format == file.metadata.end() ? std::string("no format")
                                                  : "\"" + format->second + "\"");
  load_float_state(classifier, file.tensors, /*unused=*/{}, path);
}

}  // namespace bert
