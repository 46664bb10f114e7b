#include "module_walk.h"

#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "tquant/nn/quant_conv2d.h"
#include "tquant/nn/quant_embedding.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quantizable.h"

namespace tquant::detail {

namespace nn = torch::nn;

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

void name_quantizers(torch::nn::Module& model) {
  for (const auto& [name, quantizer] : quantizers_of(model)) quantizer->set_qualified_name(name);
}

namespace {

const std::vector<TwinRule>& twin_rules() {
  static const std::vector<TwinRule> rules = {
      {"torch::nn::Linear", "QuantLinear",
       [](const nn::Module& m) { return dynamic_cast<const nn::LinearImpl*>(&m) != nullptr; },
       [](const std::shared_ptr<nn::Module>& m) {
         auto linear = std::dynamic_pointer_cast<nn::LinearImpl>(m);
         return nn::AnyModule(QuantLinearImpl::from_float(nn::Linear(linear)).ptr());
       }},
      {"torch::nn::Conv2d", "QuantConv2d",
       [](const nn::Module& m) { return dynamic_cast<const nn::Conv2dImpl*>(&m) != nullptr; },
       [](const std::shared_ptr<nn::Module>& m) {
         auto conv = std::dynamic_pointer_cast<nn::Conv2dImpl>(m);
         return nn::AnyModule(QuantConv2dImpl::from_float(nn::Conv2d(conv)).ptr());
       }},
      {"torch::nn::Embedding", "QuantEmbedding",
       [](const nn::Module& m) { return dynamic_cast<const nn::EmbeddingImpl*>(&m) != nullptr; },
       [](const std::shared_ptr<nn::Module>& m) {
         auto embedding = std::dynamic_pointer_cast<nn::EmbeddingImpl>(m);
         return nn::AnyModule(QuantEmbeddingImpl::from_float(nn::Embedding(embedding)).ptr());
       }},
  };
  return rules;
}

}  // namespace

const TwinRule* twin_rule_for(const nn::Module& module) {
  if (dynamic_cast<const Quantizable*>(&module) != nullptr) return nullptr;
  for (const auto& rule : twin_rules()) {
    if (rule.matches(module)) return &rule;
  }
  return nullptr;
}

bool is_container(const nn::Module& module) {
  return dynamic_cast<const nn::SequentialImpl*>(&module) != nullptr ||
         dynamic_cast<const nn::ModuleListImpl*>(&module) != nullptr ||
         dynamic_cast<const nn::ModuleDictImpl*>(&module) != nullptr;
}

void replace_container_entry(nn::Module& container, const std::string& key,
                             const nn::Module* old, nn::AnyModule twin) {
  std::shared_ptr<nn::Module> twin_ptr = twin.ptr();
  if (auto* sequential = dynamic_cast<nn::SequentialImpl*>(&container)) {
    for (size_t i = 0; i < sequential->size(); ++i) {
      if (sequential->ptr(i).get() == old) {
        *(sequential->begin() + static_cast<std::ptrdiff_t>(i)) = std::move(twin);
      }
    }
  } else if (auto* list = dynamic_cast<nn::ModuleListImpl*>(&container)) {
    for (size_t i = 0; i < list->size(); ++i) {
      if (list->ptr(i).get() == old) *(list->begin() + static_cast<std::ptrdiff_t>(i)) = twin_ptr;
    }
  } else if (auto* dict = dynamic_cast<nn::ModuleDictImpl*>(&container)) {
    // update() overwrites the key in the dict and in the registry.
    dict->update(std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>>{
        {key, twin_ptr}});
  } else {
    TORCH_INTERNAL_ASSERT(false, "replace_container_entry: '", key, "' is not in a container");
  }
  if (container.named_children().contains(key) &&
      container.named_children()[key].get() != twin_ptr.get()) {
    container.replace_module(key, twin_ptr);
  }
}

std::shared_ptr<nn::Module> find_module(nn::Module& root, const std::string& name) {
  std::shared_ptr<nn::Module> current;
  size_t start = 0;
  while (start < name.size()) {
    const size_t dot = name.find('.', start);
    const std::string key = name.substr(start, dot == std::string::npos ? dot : dot - start);
    auto children = (current ? *current : root).named_children();
    const auto* child = children.find(key);
    if (child == nullptr) return nullptr;
    current = *child;
    start = dot == std::string::npos ? name.size() : dot + 1;
  }
  return current;
}

}  // namespace tquant::detail
