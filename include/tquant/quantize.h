#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <torch/nn/module.h>

#include "tquant/histogram_search.h"
#include "tquant/qconfig_mapping.h"
#include "tquant/report.h"

namespace tquant {

/// Prepares a model for post-training calibration, in place.
///
/// Walks the module tree once:
///   - every tquant module (anything implementing Quantizable: QuantLinear, ...) that the mapping
///     selects gets set_qconfig(config) and set_mode(QuantMode::kObserve); one that the mapping
///     does not select (or skips) is set to QuantMode::kFloat;
///   - inside torch::nn::Sequential, ModuleList and ModuleDict, a plain torch::nn::Linear,
///     Conv2d or Embedding that the mapping selects is replaced by its tquant twin
///     (QuantLinear, QuantConv2d, QuantEmbedding; from_float, weights copied) in both the
///     container's own list, which its forward iterates, and its module registry, which
///     named_modules() and state_dict use; type rules may name it by either type
///     ("QuantLinear" or "torch::nn::Linear"). An entry also referenced from outside the
///     container (a member field, a second container, a handle the caller keeps) is not
///     replaced and is reported (FloatReason::kContainerNotUpdated): swapping only one of the
///     references would leave the other running float;
///   - a plain torch Linear / Conv2d / Embedding in a custom module's member field cannot be
///     reached (the parent calls it through the field): it is reported by name as
///     FloatReason::kUnreachable. Declare the field as the tquant type instead.
/// Every other leaf module that stays float is reported with its reason (FloatReason).
///
/// Example:
///   struct NetImpl : torch::nn::Module {
///     NetImpl() {
///       fc1 = register_module("fc1", tquant::QuantLinear(16, 32));
///       head = register_module("head", torch::nn::Sequential(torch::nn::Linear(32, 4)));
///     }
///     at::Tensor forward(at::Tensor x) { return head->forward(torch::relu(fc1(x))); }
///     tquant::QuantLinear fc1{nullptr};
///     torch::nn::Sequential head{nullptr};
///   };
///   TORCH_MODULE(Net);
///   Net net;
///   tquant::PrepareReport report =
///       tquant::prepare(*net, tquant::QConfigMapping(tquant::int8_static_qconfig()));
///   std::cout << report;  // fc1 and head.0 (replaced) in observe mode
PrepareReport prepare(torch::nn::Module& model, const QConfigMapping& mapping);

/// As prepare, for quantization-aware training: selected modules go to QuantMode::kFakeQuant.
/// Quantizers that have not seen data keep their observers on, so the first training steps set
/// the ranges and every step refreshes them (torch.ao's FakeQuantize in QAT); train with any
/// torch::optim optimizer through the straight-through gradients. Use int8_qat_qconfig() (cheap
/// min-max observers) unless calibrating first.
///
/// Example:
///   tquant::prepare_qat(*net, tquant::QConfigMapping(tquant::int8_qat_qconfig()));
///   torch::optim::AdamW optimizer(net->parameters(), 1e-5);
///   for (auto& [x, y] : batches) { ... loss.backward(); optimizer.step(); }
PrepareReport prepare_qat(torch::nn::Module& model, const QConfigMapping& mapping);

/// Counts calibration batches for the report and passes them on to an optional callback.
/// The forward loop calls step() after each batch; calibrate prints nothing itself (warnings go
/// through TORCH_WARN, to stderr by default), so progress output is the callback's to write.
///
/// Example:
///   tquant::calibrate(*net, [&](tquant::CalibrationProgress& progress) {
///     for (auto& batch : batches) { net->forward(batch); progress.step(); }
///   }, [](int64_t done) { std::cerr << "calibrated " << done << " batches\n"; });
class CalibrationProgress {
 public:
  using Callback = std::function<void(int64_t batches_done)>;
  explicit CalibrationProgress(Callback on_step = {}) : on_step_(std::move(on_step)) {}

  /// Records `batches` more batches and calls the callback with the running total.
  void step(int64_t batches = 1);
  int64_t batches() const { return batches_; }

 private:
  Callback on_step_;
  int64_t batches_ = 0;
};

/// Calibrates a prepared model in place and leaves it simulating the quantized model.
///
///   1. every prepared module (a tquant module with a QConfig whose mode is not kFloat) has its
///      observers' statistics reset and goes to QuantMode::kObserve; modules in kFloat
///      (disabled with enable_quantizers, or not selected) are left alone;
///   2. forward_loop runs (the caller's batches, typically under torch::NoGradGuard and
///      model->eval());
///   3. if a quantizer holds a shared-grid HistogramObserver (HistogramGrid::kShared, e.g.
///      int8_static_qconfig(PresetOptions().histogram_grid(HistogramGrid::kShared))), step 2
///      was its range pass: its grid is fixed (fix_grid) and forward_loop runs a second time,
///      with only those observers recording. The loop must then feed the same data each
///      time; report.batches counts the first pass;
///   4. each module whose quantizers all saw data goes to QuantMode::kFakeQuant with frozen
///      scale and zero point (QDQ simulation); one whose quantizers saw nothing goes to kFloat
///      and is reported as FloatReason::kNotCalibrated.
/// Throws if the model has no prepared module. If forward_loop throws, the model stays in
/// observe mode and the exception propagates.
///
/// Example:
///   tquant::prepare(*net, tquant::QConfigMapping(tquant::int8_static_qconfig()));
///   torch::NoGradGuard no_grad;
///   tquant::CalibrationReport report = tquant::calibrate(*net, [&] {
///     for (auto& batch : calibration_batches) net->forward(batch);
///   });
///   std::cout << report;    // every quantizer with its scale / amax range
///   at::Tensor y = net->forward(x);   // fake-quantized (simulated int8)
CalibrationReport calibrate(torch::nn::Module& model, const std::function<void()>& forward_loop);

/// As calibrate; the loop gets a CalibrationProgress to count its batches, which calls
/// `on_step` (if given) after each step() with the running total.
CalibrationReport calibrate(torch::nn::Module& model,
                            const std::function<void(CalibrationProgress&)>& forward_loop,
                            CalibrationProgress::Callback on_step = {});

/// Switches the quantizers of prepared modules whose qualified name (or an ancestor's) matches
/// `pattern` ('*' wildcards, see module_name_matches) off or on:
///   enabled = false: the module goes to QuantMode::kFloat and computes exactly the float
///                    result; its quantizers and their statistics are kept;
///   enabled = true:  the module goes to kFakeQuant if its quantizers have seen data
///                    (calibrated: the ranges are frozen again from the kept statistics), and to
///                    kObserve otherwise (so a later calibrate collects for it).
/// Returns the number of modules switched; throws if the pattern matches no prepared module
/// (a typo would otherwise silently change nothing).
///
/// Example (sensitivity check: run layer 3 in float):
///   tquant::enable_quantizers(*net, "encoder.layer.3.*", false);
int64_t enable_quantizers(torch::nn::Module& model, const std::string& pattern, bool enabled);

[[deprecated("use enable_quantizers(model, pattern, enabled)")]] inline int64_t
set_quantizers_enabled(torch::nn::Module& model, const std::string& pattern, bool enabled) {
  return enable_quantizers(model, pattern, enabled);
}

/// Switches every HistogramObserver of the model's quantizers to `method` (and `percentile`
/// for kPercentile, when given) and, for each quantizer that has data and parameters, recomputes
/// its frozen scale and zero point from the histogram it already holds: no data is collected
/// again. Returns the number of observers switched; throws if the model has none.
///
/// Example (compare calibrators on one pass of data):
///   tquant::calibrate(*net, loop);
///   for (auto method : {tquant::CalibrationMethod::kEntropy, tquant::CalibrationMethod::kMse}) {
///     tquant::set_calibration_method(*net, method);
///     evaluate(*net);
///   }
int64_t set_calibration_method(torch::nn::Module& model, CalibrationMethod method,
                               std::optional<double> percentile = std::nullopt);

/// Switches the observers of the model's quantizers off or on (torch.ao's `disable_observer` /
/// `enable_observer`, as FakeQuantizeImpl::enable_observer(bool) does for one quantizer).
///
/// enabled = false: stops the observers of every quantizer in the model: scale and zero point
/// stay where they are and fake quantization goes on, so evaluation and the last QAT epochs run
/// with fixed ranges. Quantizers that compute their parameters per call (dynamic per-token) are
/// counted too. Throws if a quantizer in fake-quant use has no parameters yet (it saw no data:
/// run a training step or calibrate first; the error names it).
///
/// enabled = true: turns the observers of every quantizer of a prepared module in fake-quant
/// mode back on: each forward records the data again and refreshes scale and zero point.
/// Modules in observe mode observe anyway, float and converted ones are left alone.
///
/// Returns the number of quantizers switched; throws if there is none.
///
/// The rule in QAT: `eval()` / `train()` change nothing in the quantizers (as in torch.ao);
/// observers of modules in QuantMode::kFakeQuant that started without data update the ranges
/// at every forward, in training and in evaluation alike, until enable_observers(model, false).
///
/// Example:
///   tquant::prepare_qat(*net, tquant::QConfigMapping(tquant::int8_qat_qconfig()));
///   train_one_epoch(*net);
///   tquant::enable_observers(*net, false);   // ranges fixed from here on
///   net->eval();
///   evaluate(*net);
///   tquant::enable_observers(*net);          // let the ranges follow the data again
int64_t enable_observers(torch::nn::Module& model, bool enabled = true);

[[deprecated("use enable_observers(model, false)")]] inline int64_t freeze_observers(
    torch::nn::Module& model) {
  return enable_observers(model, false);
}

/// Lowers a calibrated (or QAT-trained) model to integer execution, in place.
///
/// Every prepared tquant module in fake-quant (or observe) mode is asked to convert
/// (Quantizable::convert): its weight becomes integer codes with the quantizers' frozen scales
/// (the float weight is dropped, the quantizers are unregistered) and forward runs:
///   QuantLinear    int8_static / int8_dynamic: an INT8 GEMM (gemm.h: oneDNN qlinear or
///                  _int_mm) with input quantization and output dequantization fused around it;
///                  weight_only: codes dequantized per call, then a float GEMM;
///                  w4a8 (per output channel): int4 weight codes on the INT8 GEMM;
///                  w4a8:block=B: one INT8 GEMM per block of B input features;
///   QuantConv2d    int8_static (int8_static+relu with a fused ReLU): oneDNN's INT8
///                  convolution on CPU;
///   QuantMatMul    int8_static: both operands rounded to int8 codes, exact integer product;
///   QuantAttention int8_static: fused INT8 attention (QK^T, softmax, PV on int8 codes);
///   QuantEmbedding weight_only: codes gathered and dequantized per lookup.
/// The converted output equals the fake-quant simulation up to float32 rounding (tests check
/// within one output quantization step). A module whose scheme has no integer kernel
/// (stubs, affine or per-channel activations, ...) keeps its fake-quant mode and
/// is reported with the reason, never silently dropped to float; disabled (float) modules stay
/// float and are reported too.
///
/// Checked before anything changes: the model has a prepared module, and every static
/// activation quantizer of a module to convert has seen data (otherwise: run calibrate first;
/// the error names the quantizer). Converted modules cannot change mode again; a second convert
/// lists them as already converted (ConvertReport::already_converted) and changes nothing.
///
/// Example:
///   tquant::prepare(*net, tquant::QConfigMapping(tquant::int8_static_qconfig()));
///   tquant::calibrate(*net, [&] { for (auto& batch : batches) net->forward(batch); });
///   tquant::ConvertReport report = tquant::convert(*net);
///   std::cout << report;
///   at::Tensor y = net->forward(x);   // INT8 GEMMs
ConvertReport convert(torch::nn::Module& model);

/// One call to a dynamic INT8 model: prepare with `mapping` (default: every QuantLinear, and
/// every plain torch::nn::Linear inside containers, gets int8_dynamic_qconfig()), then
/// convert. Nothing to calibrate: activations get per-token scales at run time, weights
/// per-channel scales from their own min/max. The report lists converted modules and, from the
/// prepare step, the modules left float.
///
/// Example:
///   tquant::ConvertReport report = tquant::quantize_dynamic(*net);
///   at::Tensor y = net->forward(x);   // int8_linear_dynamic in every Linear
ConvertReport quantize_dynamic(torch::nn::Module& model);
ConvertReport quantize_dynamic(torch::nn::Module& model, const QConfigMapping& mapping);

}  // namespace tquant
