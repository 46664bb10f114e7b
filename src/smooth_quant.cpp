#include "tquant/smooth_quant.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <memory>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/functional/linear.h>

#include "tquant/nn/quant_linear.h"
#include "error_context.h"
#include "module_walk.h"

namespace tquant {

namespace {

/// One prepared QuantLinear being smoothed: what its tap records during the forward loop.
struct LayerRecord {
  std::string name;
  std::shared_ptr<torch::nn::Module> module;
  QuantLinearImpl* layer = nullptr;
  /// Running per-channel max |x|, float32 [K] on the CPU; undefined until the first input.
  at::Tensor act_amax;
  /// The first rows of input (for the alpha search), float32 [r, K] each.
  std::vector<at::Tensor> rows;
  int64_t kept_rows = 0;
};

/// Records one input of a layer (its tap).
void record_input(LayerRecord& record, const at::Tensor& input, const SmoothQuantOptions& options,
                  bool keep_rows) {
  at::NoGradGuard no_grad;
  const int64_t k = record.layer->options.in_features();
  at::Tensor x = input.detach().reshape({-1, k}).to(at::kFloat);
  if (x.size(0) == 0) return;
  at::Tensor amax = x.abs().amax(0);
  if (!at::isfinite(amax).all().item<bool>()) {
    // NaN or Inf in the input: an error, or (kIgnore) left out with a warning.
    detail::report_non_finite(x, options.non_finite(),
                              record.name + ": SmoothQuant statistics of its input");
    x = at::where(at::isfinite(x), x, at::zeros({}, x.options()));
    amax = x.abs().amax(0);
  }
  amax = amax.cpu();
  record.act_amax = record.act_amax.defined() ? at::maximum(record.act_amax, amax) : amax;
  if (keep_rows && record.kept_rows < options.search_rows()) {
    const int64_t take = std::min(x.size(0), options.search_rows() - record.kept_rows);
    record.rows.push_back(x.narrow(0, 0, take).clone());
    record.kept_rows += take;
  }
}

/// Puts the modules back as they were when smooth_quant returns or throws: taps removed, modes
/// restored (except for the layers smoothed, which `release` takes out).
class RestoreGuard {
 public:
  ~RestoreGuard() {
    for (QuantLinearImpl* layer : tapped_) layer->set_input_tap({});
    for (auto& [module, mode] : modes_) {
      Quantizable& quantizable = *as_quantizable(*module);
      try {
        if (quantizable.mode() != mode) quantizable.set_mode(mode);
      } catch (const c10::Error&) {  // NOLINT(bugprone-empty-catch): never throw from here;
      }                               // the module stays in float mode
    }
  }
  void tap(QuantLinearImpl* layer) { tapped_.push_back(layer); }
  void keep_mode(std::shared_ptr<torch::nn::Module> module, QuantMode mode) {
    modes_.emplace_back(std::move(module), mode);
  }
  /// `module` keeps the mode smooth_quant gives it.
  void release(const torch::nn::Module* module) {
    modes_.erase(std::remove_if(modes_.begin(), modes_.end(),
                                [&](const auto& entry) { return entry.first.get() == module; }),
                 modes_.end());
  }

 private:
  std::vector<QuantLinearImpl*> tapped_;
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, QuantMode>> modes_;
};

void check_alpha(double alpha, const char* what) {
  TORCH_CHECK_VALUE(std::isfinite(alpha) && alpha >= 0.0 && alpha <= 1.0, what,
                    ": expected alpha in [0, 1], got ", alpha);
}

/// A statistic must be finite and >= 0; the error names the first channel that is not.
void check_statistic(const at::Tensor& values, const char* what) {
  const at::Tensor bad = (~at::isfinite(values)) | values.lt(0);
  if (!bad.any().item<bool>()) return;
  const int64_t channel = bad.nonzero().select(1, 0)[0].item<int64_t>();
  TORCH_CHECK_VALUE(false, "smooth_quant_factors: expected finite ", what, " >= 0 in every "
                    "channel, got ", values[channel].item<double>(), " in channel ", channel);
}

/// A copy of `layer` (same options, parameters shared, not trained) for the alpha search,
/// built without drawing from the default CPU generator (construction initializes weights).
QuantLinear trial_layer(const QuantLinearImpl& layer) {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  const auto state = generator.get_state();
  QuantLinear trial(layer.options);
  generator.set_state(state);
  trial->weight.set_data(layer.weight.detach());
  if (layer.bias.defined()) trial->bias.set_data(layer.bias.detach());
  return trial;
}

/// The loss of `alpha` for one layer: its smoothed, freshly calibrated, fake-quantized output on
/// the recorded rows against the float output.
double trial_loss(QuantLinear& trial, const QuantLinearImpl& layer, const std::string& name,
                  const at::Tensor& input, const at::Tensor& reference,
                  const at::Tensor& weight_amax, const at::Tensor& act_amax, double alpha,
                  const SmoothQuantMetric& metric) {
  trial->set_qconfig(*layer.qconfig());
  trial->set_smooth_factor(smooth_quant_factors(act_amax, weight_amax, alpha));
  trial->set_mode(QuantMode::kObserve);
  trial->forward(input);
  trial->set_mode(QuantMode::kFakeQuant);
  SmoothQuantTrial candidate{name, alpha, input, reference, trial->forward(input)};
  const double loss = metric ? metric(candidate) : smooth_quant_mse(candidate);
  TORCH_CHECK_VALUE(std::isfinite(loss), "the SmoothQuant metric returned ", loss,
                    " for alpha ", alpha, "; expected a finite loss");
  return loss;
}

/// Chooses the factors of one recorded layer and installs them.
SmoothedLayer smooth_layer(LayerRecord& record, const SmoothQuantOptions& options) {
  QuantLinearImpl& layer = *record.layer;
  at::NoGradGuard no_grad;
  SmoothedLayer result;
  result.name = record.name;
  result.act_amax = record.act_amax;
  result.weight_amax = layer.weight.detach().abs().amax(0).to(at::kCPU, at::kFloat);
  result.alpha = options.alpha();
  if (!options.alphas().empty()) {
    const at::Tensor input = at::cat(record.rows).to(layer.weight.device());
    record.rows.clear();
    const at::Tensor reference = torch::nn::functional::linear(input, layer.weight, layer.bias);
    QuantLinear trial = trial_layer(layer);
    double best = 0.0;
    for (double alpha : options.alphas()) {
      const double loss = trial_loss(trial, layer, record.name, input, reference,
                                     result.weight_amax, result.act_amax, alpha, options.metric());
      if (result.losses.empty() || loss < best) {
        best = loss;
        result.alpha = alpha;
      }
      result.losses.emplace_back(alpha, loss);
    }
  }
  result.factor = smooth_quant_factors(result.act_amax, result.weight_amax, result.alpha);
  layer.set_smooth_factor(result.factor);
  // The quantizers saw the unsmoothed tensors: their ranges must be observed again.
  for (auto& [quantizer_name, quantizer] : detail::quantizers_of(layer)) {
    quantizer->observer_ref().reset_stats();
  }
  layer.set_mode(QuantMode::kObserve);
  return result;
}

}  // namespace

at::Tensor smooth_quant_factors(const at::Tensor& act_amax, const at::Tensor& weight_amax,
                                double alpha) {
  check_alpha(alpha, "smooth_quant_factors");
  TORCH_CHECK_VALUE(act_amax.defined() && weight_amax.defined() && act_amax.dim() == 1 &&
                        weight_amax.dim() == 1 && act_amax.numel() == weight_amax.numel() &&
                        act_amax.numel() > 0,
                    "smooth_quant_factors: expected max |x| and max |W| of shape [K] each (K > "
                    "0), got ", act_amax.defined() ? act_amax.sizes() : at::IntArrayRef{},
                    " and ", weight_amax.defined() ? weight_amax.sizes() : at::IntArrayRef{});
  const at::Tensor a = act_amax.detach().to(at::kCPU, at::kDouble);
  const at::Tensor w = weight_amax.detach().to(at::kCPU, at::kDouble);
  check_statistic(a, "max |x|");
  check_statistic(w, "max |W|");
  // w = 0 gives a^alpha / 0 = inf (alpha < 1), clamped to kSmoothFactorMax; channels with no
  // activation (where 0 / 0 could arise) get 1.
  const at::Tensor s = a.pow(alpha) / w.pow(1.0 - alpha);
  return at::where(a.le(kSmoothActivationFloor), at::ones_like(s), s)
      .clamp(kSmoothFactorMin, kSmoothFactorMax)
      .to(at::kFloat);
}

double smooth_quant_mse(const SmoothQuantTrial& trial) {
  return (trial.output.to(at::kDouble) - trial.reference.to(at::kDouble))
      .square()
      .mean()
      .item<double>();
}

SmoothQuantReport smooth_quant(torch::nn::Module& model, const std::function<void()>& forward_loop,
                               const SmoothQuantOptions& options) {
  TORCH_CHECK_VALUE(static_cast<bool>(forward_loop), "smooth_quant: expected a forward loop, got "
                    "an empty function");
  check_alpha(options.alpha(), "smooth_quant");
  for (double alpha : options.alphas()) check_alpha(alpha, "smooth_quant (options.alphas)");
  TORCH_CHECK_VALUE(options.search_rows() > 0, "smooth_quant: expected search_rows > 0, got ",
                    options.search_rows());

  SmoothQuantReport report;
  std::vector<LayerRecord> records;
  RestoreGuard restore;
  for (auto& [name, module] : detail::quantizable_modules(model)) {
    Quantizable& quantizable = *as_quantizable(*module);
    auto* linear = dynamic_cast<QuantLinearImpl*>(module.get());
    if (quantizable.mode() == QuantMode::kConverted) {
      report.skipped.emplace_back(name, "converted");
      continue;
    }
    if (!quantizable.qconfig() || quantizable.mode() == QuantMode::kFloat) {
      report.skipped.emplace_back(name, "in float mode (not prepared, or disabled)");
      continue;
    }
    restore.keep_mode(module, quantizable.mode());
    if (linear == nullptr) {
      report.skipped.emplace_back(name, quantizable.quant_type_name() + ": SmoothQuant applies "
                                  "to QuantLinear only");
    } else if (linear->input_quantizer.is_empty()) {
      report.skipped.emplace_back(name, "no input quantizer (weight-only)");
    } else {
      records.push_back({name, module, linear, {}, {}, 0});
    }
  }
  TORCH_CHECK_VALUE(!records.empty(), "smooth_quant: expected a prepared QuantLinear with an "
                    "input quantizer, found none (", report.skipped.size(), " tquant module(s) "
                    "skipped); call tquant::prepare first");

  // 1. The float model runs the loop; each layer records max |x| per input channel.
  const bool keep_rows = !options.alphas().empty();
  for (LayerRecord& record : records) {
    restore.tap(record.layer);
    record.layer->set_input_tap([&record, &options, keep_rows](const at::Tensor& x) {
      detail::named_errors(record.name, [&] { record_input(record, x, options, keep_rows); });
    });
  }
  detail::name_quantizers(model);
  for (auto& [name, module] : detail::quantizable_modules(model)) {
    Quantizable& quantizable = *as_quantizable(*module);
    if (quantizable.qconfig() && quantizable.mode() != QuantMode::kConverted &&
        quantizable.mode() != QuantMode::kFloat) {
      quantizable.set_mode(QuantMode::kFloat);
    }
  }
  forward_loop();

  // 2. Factors (alpha given or searched), installed in each layer.
  const auto total = static_cast<int64_t>(records.size());
  int64_t done = 0;
  for (LayerRecord& record : records) {
    record.layer->set_input_tap({});
    if (!record.act_amax.defined()) {
      report.skipped.emplace_back(record.name, "saw no data: the forward loop never ran it");
    } else {
      report.layers.push_back(
          detail::named_errors(record.name, [&] { return smooth_layer(record, options); }));
      restore.release(record.module.get());
    }
    if (options.on_progress()) options.on_progress()(++done, total);
  }
  return report;
}

std::string SmoothQuantReport::to_string() const {
  std::ostringstream out;
  out << "SmoothQuant: " << layers.size() << " layer(s) smoothed, " << skipped.size()
      << " module(s) skipped\n";
  out << std::setprecision(4);
  for (const SmoothedLayer& layer : layers) {
    out << "  " << layer.name << "  alpha " << layer.alpha << "  s in ["
        << layer.factor.min().item<double>() << ", " << layer.factor.max().item<double>() << "]";
    if (!layer.losses.empty()) {
      out << "  losses";
      for (const auto& [alpha, loss] : layer.losses) out << ' ' << alpha << ':' << loss;
    }
    out << '\n';
  }
  for (const auto& [name, reason] : skipped) out << "  skipped " << name << ": " << reason << '\n';
  return out.str();
}

std::ostream& operator<<(std::ostream& stream, const SmoothQuantReport& report) {
  return stream << report.to_string();
}

}  // namespace tquant
