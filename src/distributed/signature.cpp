#include "tquant/distributed.h"

#include <sstream>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "tquant/fake_quantize.h"
#include "tquant/observer.h"

namespace tquant {

namespace {

/// Observer and quantizer modules: their tensors' shapes follow the data they saw.
bool holds_data_shaped_state(torch::nn::Module& module) {
  return dynamic_cast<ObserverBase*>(&module) != nullptr ||
         dynamic_cast<FakeQuantizeImpl*>(&module) != nullptr ||
         dynamic_cast<LearnableFakeQuantizeImpl*>(&module) != nullptr;
}

std::string join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string tensor_entry(const char* kind, const std::string& name, const at::Tensor& tensor,
                         bool with_shape) {
  std::ostringstream out;
  out << kind << " " << name;
  if (!tensor.defined()) return out.str() + " undefined";
  out << " " << tensor.scalar_type();
  if (with_shape) out << " " << tensor.sizes();
  return out.str();
}

std::string joined(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += line + '\n';
  return text;
}

std::vector<std::string> split_lines(const at::Tensor& bytes) {
  const auto* data = bytes.data_ptr<uint8_t>();
  std::vector<std::string> lines;
  std::string line;
  for (int64_t i = 0; i < bytes.numel(); ++i) {
    if (data[i] == '\n') {
      lines.push_back(line);
      line.clear();
    } else {
      line += static_cast<char>(data[i]);
    }
  }
  return lines;
}

}  // namespace

std::vector<std::string> model_signature(torch::nn::Module& model) {
  std::vector<std::string> lines;
  for (const auto& item : model.named_modules()) {
    torch::nn::Module& module = *item.value();
    const bool data_shaped = holds_data_shaped_state(module);
    if (data_shaped) {
      std::ostringstream out;
      out << "quantizer " << item.key() << " ";
      module.pretty_print(out);
      lines.push_back(out.str());
    }
    for (const auto& p : module.named_parameters(/*recurse=*/false)) {
      lines.push_back(tensor_entry("parameter", join(item.key(), p.key()), p.value(), !data_shaped));
    }
    for (const auto& b : module.named_buffers(/*recurse=*/false)) {
      lines.push_back(tensor_entry("buffer", join(item.key(), b.key()), b.value(), !data_shaped));
    }
  }
  return lines;
}

void check_same_model(torch::nn::Module& model, const DistributedGroup& group,
                      const std::string& what) {
  const auto mine = model_signature(model);
  const std::string text = joined(mine);
  auto bytes = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  std::copy(text.begin(), text.end(), bytes.data_ptr<uint8_t>());
  const auto all = group.allgather(bytes, what + " (model signature)");
  const auto reference = split_lines(all[0].contiguous());
  for (int r = 1; r < group.world_size(); ++r) {
    const auto other = split_lines(all[r].contiguous());
    const size_t common = std::min(reference.size(), other.size());
    for (size_t i = 0; i < common; ++i) {
      TORCH_CHECK_VALUE(reference[i] == other[i], what, ": the models differ between ranks ",
                        "(checked before any statistics moved): entry ", i, " is '",
                        reference[i], "' on rank 0 but '", other[i], "' on rank ", r);
    }
    TORCH_CHECK_VALUE(reference.size() == other.size(), what, ": the models differ between ",
                      "ranks: rank 0 has ", reference.size(), " entries (parameters, buffers, ",
                      "quantizers), rank ", r, " has ", other.size(), "; first extra entry: '",
                      reference.size() > other.size() ? reference[common] : other[common],
                      "' on rank ", reference.size() > other.size() ? 0 : r);
  }
}

}  // namespace tquant
