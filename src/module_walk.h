#pragma once

// Internal: walking a model's tquant modules and their quantizers, shared by the passes
// (quantize.cpp, convert.cpp).

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

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

}  // namespace tquant::detail
