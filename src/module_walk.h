#pragma once

// Internal: walking a model's tquant modules and their quantizers, and swapping plain torch
// modules for their tquant twins inside containers; shared by the passes (quantize.cpp,
// convert.cpp) and load_state (serialize.cpp).

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>

#include "tquant/fake_quantize.h"

namespace tquant::detail {

/// "prefix.key", or "key" for an empty prefix.
std::string join_name(const std::string& prefix, const std::string& key);

/// Every tquant module (Quantizable) of the model with its qualified name, in named_modules()
/// order.
std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> quantizable_modules(
    torch::nn::Module& model);

/// The FakeQuantize modules under `module`, with their names relative to it.
std::vector<std::pair<std::string, FakeQuantizeImpl*>> quantizers_of(torch::nn::Module& module);

/// Gives every FakeQuantize of the model its qualified name ("fc1.input_quantizer"), which its
/// errors carry from then on (FakeQuantizeImpl::set_qualified_name).
void name_quantizers(torch::nn::Module& model);

/// A plain torch module type with a tquant twin. `make` builds the twin (weights copied, float
/// mode) as an AnyModule, which Sequential needs.
struct TwinRule {
  const char* torch_type;  ///< "torch::nn::Linear"
  const char* twin_type;   ///< "QuantLinear" (Quantizable::quant_type_name)
  bool (*matches)(const torch::nn::Module&);
  torch::nn::AnyModule (*make)(const std::shared_ptr<torch::nn::Module>&);
};

/// The twin rule of a plain torch module, or nullptr (tquant modules and modules without twin).
const TwinRule* twin_rule_for(const torch::nn::Module& module);

/// True for Sequential, ModuleList and ModuleDict: containers whose forward (or whose user)
/// reaches the entries through the container's own list, so an entry can be swapped.
bool is_container(const torch::nn::Module& module);

/// Puts `twin` in place of the entry `old` registered as `key` in a Sequential, ModuleList or
/// ModuleDict: in the container's own list (what its forward iterates) and in its module
/// registry (what named_modules() and state_dict see).
void replace_container_entry(torch::nn::Module& container, const std::string& key,
                             const torch::nn::Module* old, torch::nn::AnyModule twin);

/// The submodule at qualified name `name` under `root`, or nullptr (also for "", the root).
/// Keeps no other reference than the one it returns, so use_count() is the model's own owners
/// plus one.
std::shared_ptr<torch::nn::Module> find_module(torch::nn::Module& root, const std::string& name);

}  // namespace tquant::detail
