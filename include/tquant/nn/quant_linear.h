#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/options/linear.h>
#include <torch/nn/pimpl.h>

#include "tquant/fake_quantize.h"
#include "tquant/gemm.h"
#include "tquant/nn/derived_cache.h"
#include "tquant/nn/host_scalar.h"
#include "tquant/nn/quant_mode.h"
#include "tquant/nn/quantizable.h"
#include "tquant/qconfig.h"

namespace tquant {

namespace detail {
struct LinearGemmWeights;  // src/nn/linear_int8_gemm.h
/// The scheme of a converted QuantLinear, decided once at convert / make_converted so forward
/// tests no string (converted_scheme() keeps the text, e.g. "w4a8:block=128").
enum class LinearScheme { kNone, kInt8Static, kInt8Dynamic, kWeightOnly, kW4A8 };
}  // namespace detail

class QuantLinear;

/// Quantizable twin of torch::nn::Linear:  y = x W^T + b.
///
/// Same options (torch::nn::LinearOptions), same parameters ("weight" [out, in] and "bias"
/// [out], bias registered undefined when options.bias() is false), same initialization
/// (kaiming_uniform_(weight, a = sqrt(5)); bias ~ U(-1/sqrt(in), 1/sqrt(in))), so a
/// torch::nn::Linear's parameters or serialized state load into it unchanged.
///
/// The mode (see QuantMode) decides what forward computes:
///   kFloat:     F::linear(x, weight, bias), bit for bit what torch::nn::Linear returns;
///   kObserve:   the same output, while input_quantizer records x and weight_quantizer the
///               weight (their fake quantization is off);
///   kFakeQuant: F::linear(fq_in(x), fq_w(weight), bias) where fq is FakeQuantize's QDQ,
///               differentiable with straight-through gradients, so any torch::optim optimizer
///               trains weight and bias through it;
///   kConverted: after convert(): the weight is stored as int8 codes "weight_int8" [out, in]
///               with float32 scales "weight_scale" (the float "weight" parameter is removed
///               and the quantizers are unregistered), and forward runs
///                 "int8_static":  int8_linear_static with the calibrated "input_scale" (read
///                                 into a host copy at convert / load, never per forward);
///                 "int8_dynamic": int8_linear_dynamic (per-token scales at run time);
///                 "weight_only":  F::linear(x, codes * scale, bias) (memory saving only; int4
///                                 per-block weights give "weight_only:block=B");
///                 "w4a8":         int4 weights (w4a8_qconfig): the codes are stored packed two
///                                 per byte as "weight_int4" uint8 [out, ceil(in / 2)]
///                                 (tquant/int4_pack.h; no "weight_int8"), unpacked once at
///                                 convert / load, and run int8_linear_static like "int8_static";
///                 "w4a8:block=B": int4 weights with one scale per B input features
///                                 ("weight_scale" [out, in / B]): one static INT8 GEMM per block
///                                 of B columns, the float32 results summed.
///               The result equals the kFakeQuant result up to float32 rounding of the GEMM
///               epilogue (the integer codes are the very ones fake quantization rounds to).
///               On a CUDA tensor the INT8 schemes run int8_linear_cuda (tquant/cuda_int8.h)
///               when the CUDA kernels were built and out_features % 4 == 0, otherwise its
///               exact ATen twin int8_linear_cuda_ref on the GPU (slow; warned once).
///
/// set_qconfig registers the quantizers as children "input_quantizer" (absent for weight-only
/// configs) and "weight_quantizer", so named_modules(), to(device), serialization and clone()
/// carry them. Until a QConfig is set the module has exactly torch::nn::Linear's state.
///
/// Switching to kFakeQuant freezes every quantizer whose observer has already seen data
/// (scale and zero point computed once by update_qparams, observer turned off): NVIDIA's QAT
/// recipe, which calibrates and then fine-tunes with the ranges fixed. A quantizer that has
/// seen nothing keeps its observer on and refreshes its parameters at every step, as torch.ao's
/// FakeQuantize does in QAT. To keep tracking a changing weight after calibration, call
/// weight_quantizer->enable_observer() after set_mode.
///
/// The mode is a plain member, not state: it is copied by clone() but not serialized.
///
/// Example:
///   auto fc = tquant::QuantLinear(torch::nn::LinearOptions(16, 8));
///   fc->set_qconfig(tquant::int8_static_qconfig());
///   fc->set_mode(tquant::QuantMode::kObserve);
///   for (const auto& batch : calibration_batches) fc(batch);
///   fc->set_mode(tquant::QuantMode::kFakeQuant);   // frozen qparams, QDQ from now on
///   at::Tensor y = fc(x);
class QuantLinearImpl : public torch::nn::Cloneable<QuantLinearImpl>, public QuantizableBase {
 public:
  QuantLinearImpl(int64_t in_features, int64_t out_features)
      : QuantLinearImpl(torch::nn::LinearOptions(in_features, out_features)) {}
  explicit QuantLinearImpl(const torch::nn::LinearOptions& options_);

  /// A float-mode QuantLinear with the options, training flag and a copy of the parameters
  /// (same dtype, device and requires_grad) of `linear`.
  static QuantLinear from_float(const torch::nn::Linear& linear);

  /// Registers weight, bias and, when a QConfig is set, the quantizers.
  void reset() override;
  /// torch::nn::Linear's initialization of weight and bias.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// y = x W^T + b as the mode says (see the class comment). x: [..., in_features].
  /// With fused_gelu(), every mode returns GELU(y) (exact, at::gelu).
  at::Tensor forward(const at::Tensor& input);

  /// Applies GELU (exact, erf) to the output in every mode, so the module stands for
  /// Linear + GELU (a transformer's FFN up-projection; ONNX Runtime's BiasGelu). Converted, the
  /// GELU runs inside the INT8 GEMM's epilogue ("int8_static" and "w4a8" on CPU: a oneDNN
  /// post-op; on CUDA: the fused dequantize kernel), with no extra pass over the output; other
  /// schemes apply at::gelu after. Part of the model's structure, like its layers: set it where
  /// the model is built (the parent then does not apply GELU itself); it is copied by clone().
  /// save_state records it, and load_state refuses a model whose flag differs from the file's
  /// (a twin that load_state puts into a container takes the file's flag).
  ///
  /// Example:
  ///   tquant::QuantLinear up(torch::nn::LinearOptions(384, 1536));
  ///   up->set_fused_gelu(true);
  ///   at::Tensor h = up(x);  // == at::gelu(F::linear(x, up->weight, up->bias)) in float mode
  void set_fused_gelu(bool fused) { fused_gelu_ = fused; }
  bool fused_gelu() const { return fused_gelu_; }

  // set_qconfig (quantizers built on the weight's device), qconfig(), set_mode (kObserve and
  // kFakeQuant need a QConfig) and mode() come from QuantizableBase.
  std::string quant_type_name() const override { return "QuantLinear"; }

  /// Lowers to integer execution (see kConverted above): int8 static when the input quantizer
  /// is static per-tensor int8 narrow symmetric and the weight's is int8 narrow symmetric per
  /// tensor or per output channel; int8 dynamic when the input quantizer is dynamic
  /// (int8_dynamic_qconfig); w4a8 (or w4a8:block=B) when the input quantizer is static as for
  /// int8 static and the weight's is int4 narrow symmetric per tensor, per output channel or
  /// per block along the input dimension; weight-only without an input quantizer. Anything else is not
  /// converted (reason given) and stays in its mode. Converting an uncalibrated static input
  /// quantizer is refused; an unobserved weight quantizer observes the weight first.
  ConvertResult convert() override;
  std::string converted_scheme() const override { return converted_scheme_; }
  std::string convert_note() const override;
  void make_converted(const std::string& scheme) override;
  /// Builds the int8 weights the GEMM runs on (unpacks int4 codes; prepacks on CPU), reads
  /// the static input scale and derives SmoothQuant's 1 / s.
  void prepare_converted() override;

  torch::nn::LinearOptions options;
  /// [out_features, in_features].
  at::Tensor weight;
  /// [out_features], undefined when options.bias() is false.
  at::Tensor bias;
  /// Quantizer of the input; empty without a QConfig and for weight-only configs.
  FakeQuantize input_quantizer{nullptr};
  /// Quantizer of the weight; empty without a QConfig (or if the config has no weight factory).
  FakeQuantize weight_quantizer{nullptr};
  /// Converted state (kConverted only, undefined otherwise): int8 codes [out, in], float32
  /// scales [out] (or [out, in / B] for per-block weight-only and w4a8:block=B), static input
  /// scale [].
  at::Tensor weight_int8;
  at::Tensor weight_scale;
  at::Tensor input_scale;
  /// Converted "w4a8" state instead of weight_int8: int4 codes packed two per byte, uint8
  /// [out, ceil(in / 2)] in the Int4Pair layout (low nibble = even input feature).
  at::Tensor weight_int4;

  // ---- SmoothQuant (tquant/smooth_quant.h, docs/smoothquant.md) ----
  /// Per-input-channel factors s, float32 [in_features], registered as buffer "smooth_factor"
  /// while the module is smoothed (undefined otherwise). kObserve / kFakeQuant: the input
  /// quantizer gets x * (1 / s) and the weight quantizer W * s (column j times s_j), so the
  /// float product is unchanged; convert stores the codes of W * s, and the converted forward
  /// multiplies x by 1 / s inside its activation quantize pass on CPU (one elementwise op before
  /// the fused kernels on CUDA). kFloat ignores the factors (exactly torch::nn::Linear).
  at::Tensor smooth_factor;
  at::Tensor get_smooth_factor() const override { return smooth_factor; }
  /// Sets s (finite, > 0, [in_features]; stored as float32 on the module's device). Refused on a
  /// converted module (its codes were computed with its factors). An undefined tensor is a no-op
  /// on an unsmoothed module and an error on a smoothed one: LibTorch cannot unregister a
  /// buffer, so undo smoothing with factors of ones.
  void set_smooth_factor(const at::Tensor& factor) override;
  /// `tap` is called with every input forward receives, in every mode, until reset with {}
  /// (smooth_quant's statistics pass). Not state: not saved; clone() copies it.
  void set_input_tap(std::function<void(const at::Tensor&)> tap) { input_tap_ = std::move(tap); }

 private:
  /// Why the quantizers' specs have no integer kernel, or "" (convert and convert_note).
  std::string spec_blocker() const;
  /// 1 / smooth_factor in float32 on its device, derived once per change of the factors.
  std::shared_ptr<const at::Tensor> smooth_multiplier();
  /// W * s (weight columns times the factors), or weight when not smoothed.
  at::Tensor smoothed_weight() const;
  detail::DerivedCache<at::Tensor> smooth_multiplier_;
  std::function<void(const at::Tensor&)> input_tap_;

  void install_converted(detail::LinearScheme kind, int64_t block, at::Tensor codes,
                         at::Tensor scale, at::Tensor static_input_scale);
  at::Tensor converted_forward(const at::Tensor& input);
  /// The int8 weights of the GEMM schemes (unpacked int4 codes, prepacked on CPU): built at
  /// convert, rebuilt (once, under a lock) when the codes or scales change (load_state,
  /// to(device)).
  std::shared_ptr<const detail::LinearGemmWeights> gemm_weights();
  // ---- QuantizableBase hooks ----
  std::string error_name() const override;
  std::vector<FakeQuantize*> quantizers() override { return {&input_quantizer, &weight_quantizer}; }
  void install_quantizers() override;

  void check_input(const at::Tensor& input) const;

  at::Tensor forward_linear(const at::Tensor& input);

  bool fused_gelu_ = false;
  std::string converted_scheme_;
  detail::LinearScheme converted_kind_ = detail::LinearScheme::kNone;
  detail::DerivedCache<detail::LinearGemmWeights> gemm_weights_;
  /// Host copy of input_scale (int8_static), so forward never syncs with the GPU to read it.
  detail::HostScalar input_scale_host_;
};
TORCH_MODULE(QuantLinear);

}  // namespace tquant
