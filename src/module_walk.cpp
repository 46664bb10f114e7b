#include "module_walk.h"

#include "tquant/nn/quantizable.h"

namespace tquant::detail {

std::string join_name(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> quantizable_modules(
    torch::nn::Module& model) {
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> result;
  for (const auto& item : model.named_modules()) {
    if (as_quantizable(*item.value()) != nullptr) result.emplace_back(item.key(), item.value());
  }
  return result;
}

std::vector<std::pair<std::string, FakeQuantizeImpl*>> quantizers_of(torch::nn::Module& module) {
  std::vector<std::pair<std::string, FakeQuantizeImpl*>> result;
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    if (auto* quantizer = dynamic_cast<FakeQuantizeImpl*>(item.value().get())) {
      result.emplace_back(item.key(), quantizer);
    }
  }
  return result;
}

}  // namespace tquant::detail
