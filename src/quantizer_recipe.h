#pragma once

// Internal: a quantizer's construction recipe as JSON, so load_state can rebuild the quantizers
// of a module that a fresh float model does not have yet (a file saved after prepare, calibrate
// or convert, loaded with no prepare).

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "tquant/fake_quantize.h"
#include "tquant/qconfig.h"

namespace tquant::detail {

/// What builds `quantizer` again: its FakeQuantize options (gradient, dynamic, and for a learned
/// scale "learnable": {"use_grad_scaling", "learn_zero_point", "eps"}) and its observer's type
/// and options, e.g.
///   {"gradient": "ste_clipped", "dynamic": false, "observer": "HistogramObserver",
///    "spec": {...}, "bins": 2048, ...}.
/// nullopt when the observer is of a type tquant cannot rebuild (a user-defined observer).
std::optional<nlohmann::json> quantizer_recipe(const FakeQuantizeImpl& quantizer);

/// A factory that builds the quantizer a recipe describes. `what` names the quantizer in
/// errors (unknown observer type, malformed recipe).
QuantizerFactory quantizer_factory(const nlohmann::json& recipe, const std::string& what);

}  // namespace tquant::detail
