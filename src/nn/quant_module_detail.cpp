#include "quant_module_detail.h"

#include <cmath>

#include <torch/nn/init.h>

#include "tquant/formats.h"

namespace tquant::detail {

void configure_quantizer(FakeQuantize& quantizer, QuantMode mode) {
  if (quantizer.is_empty()) return;
  switch (mode) {
    case QuantMode::kFloat:
      quantizer->enable_observer(false);
      quantizer->enable_fake_quant(false);
      break;
    case QuantMode::kObserve:
      quantizer->enable_observer(true);
      quantizer->enable_fake_quant(false);
      break;
    case QuantMode::kConverted:  // converted modules own no quantizers
      break;
    case QuantMode::kFakeQuant: {
      // Calibrated: freeze. Not calibrated: keep observing at every step (QAT from scratch).
      const bool calibrated = quantizer->observer_ref().has_data();
      if (calibrated) quantizer->update_qparams();
      quantizer->enable_observer(!calibrated);
      quantizer->enable_fake_quant(true);
      break;
    }
  }
}

FakeQuantize install_quantizer(torch::nn::Module& module, const std::string& name,
                               const QuantizerFactory& factory,
                               const std::optional<c10::Device>& device,
                               const std::string& what) {
  const bool registered = module.named_children().contains(name);
  if (!factory) {
    if (registered) module.unregister_module(name);
    return FakeQuantize(nullptr);
  }
  FakeQuantize quantizer = factory();
  TORCH_CHECK_VALUE(!quantizer.is_empty(), what, ": the QConfig factory of ", name,
                    " returned an empty FakeQuantize");
  if (device) quantizer->to(*device);
  if (registered) {
    module.replace_module(name, quantizer);
  } else {
    module.register_module(name, quantizer);
  }
  return quantizer;
}

void reset_weight_and_bias(at::Tensor& weight, at::Tensor& bias) {
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5));  // NOLINT(*-magic-numbers)
  if (bias.defined()) {
    auto [fan_in, fan_out] = torch::nn::init::_calculate_fan_in_and_fan_out(weight);
    (void)fan_out;
    const auto bound = 1 / std::sqrt(fan_in);
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

void check_mode_change(QuantMode from, QuantMode to, const std::string& what) {
  TORCH_CHECK_VALUE(from != QuantMode::kConverted || to == QuantMode::kConverted, what,
                    ": is converted (integer weights, float weight dropped) and cannot go to ",
                    to_string(to), " mode; rebuild the model and load its float weights");
  TORCH_CHECK_VALUE(to != QuantMode::kConverted || from == QuantMode::kConverted, what,
                    ": set_mode(converted) is not possible; call tquant::convert (or the "
                    "module's convert()), which builds the integer weights");
}

void unregister_quantizer(torch::nn::Module& module, const std::string& name,
                          FakeQuantize& holder) {
  if (module.named_children().contains(name)) module.unregister_module(name);
  holder = FakeQuantize(nullptr);
}

at::Tensor set_buffer(torch::nn::Module& module, const std::string& name, at::Tensor value) {
  auto buffers = module.named_buffers(/*recurse=*/false);
  if (buffers.contains(name)) {
    at::Tensor registered = buffers[name];
    registered.set_data(value);
    return registered;
  }
  return module.register_buffer(name, std::move(value));
}

std::optional<c10::Device> quantizer_device(const FakeQuantize& quantizer) {
  if (quantizer.is_empty() || !quantizer->observer_enabled_flag.defined()) return std::nullopt;
  return quantizer->observer_enabled_flag.device();
}

void check_weight_axis0(const FakeQuantize& quantizer, const std::string& what,
                        const std::string& axis_meaning) {
  if (quantizer.is_empty()) return;
  const QuantSpec& spec = quantizer->observer_ref().quant_spec();
  TORCH_CHECK_VALUE(spec.granularity() != Granularity::kPerChannel || spec.axis() == 0, what,
                    ": expected a per-channel weight spec along axis 0 (one scale per ",
                    axis_meaning, "), got axis ", spec.axis());
}

}  // namespace tquant::detail
