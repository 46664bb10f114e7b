#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "tquant/nn/quant_mode.h"

namespace tquant {

/// How a pass reports progress: called with (steps done, steps in all) after each step. Passes
/// take it as the option `on_progress` (SensitivityOptions, SmoothQuantOptions). calibrate,
/// whose total is the caller's loop, counts batches with CalibrationProgress instead.
using ProgressCallback = std::function<void(int64_t done, int64_t total)>;

/// Why a module runs in floating point after a pass.
///   kNotSelected:         the QConfigMapping gives it no config (no rule, no global);
///   kSkipped:             an explicit skip entry of the mapping matched it or an ancestor;
///   kUnreachable:         a plain torch module with a tquant twin (Linear, Conv2d, Embedding)
///                         held in a custom module's member field: the parent calls it through
///                         that field, so prepare cannot swap it (declare the field as the tquant
///                         type instead);
///   kNoTwin:              a torch module with no tquant twin that prepare can build (ReLU,
///                         LayerNorm, ...);
///   kContainerNotUpdated: a plain module inside Sequential / ModuleList / ModuleDict that prepare
///                         did not replace because it is also referenced elsewhere (a member
///                         field, another container, a handle the caller keeps): replacing only
///                         the container's entry would leave that reference running float;
///   kDisabled:            a prepared module switched to float (enable_quantizers(..., false)
///                         or set_mode(kFloat));
///   kNotCalibrated:       a prepared module whose quantizers saw no data during calibrate (the
///                         forward loop never reached it).
enum class FloatReason {
  kNotSelected,
  kSkipped,
  kUnreachable,
  kNoTwin,
  kContainerNotUpdated,
  kDisabled,
  kNotCalibrated,
};

/// "not selected", "skipped", "unreachable", ...
std::string to_string(FloatReason reason);

/// A module that runs in floating point, and why.
struct FloatModule {
  std::string name;  ///< qualified name ("" is the root)
  std::string type;  ///< torch_type_name(), e.g. "torch::nn::Linear"
  FloatReason reason = FloatReason::kNotSelected;
  std::string detail;  ///< one sentence for the reader, e.g. which rule skipped it
};

/// A quantizable module the pass configured.
struct QuantizedModule {
  std::string name;
  std::string type;  ///< quant_type_name(), e.g. "QuantLinear"
  QuantMode mode = QuantMode::kFloat;
  /// "input_quantizer=int8 symmetric per_tensor, weight_quantizer=..." (to_string of each
  /// quantizer's spec).
  std::string scheme;
  /// Which mapping rule chose the config: "global", "pattern 'encoder.*'", ...
  std::string rule;
  /// Empty when convert can lower the module; otherwise why it will keep simulating
  /// (Quantizable::convert_note), e.g. a weight spec without narrow_range(true).
  std::string convert_note;
};

/// A plain torch module inside a container replaced by its tquant twin.
struct ReplacedModule {
  std::string name;
  std::string from;  ///< "torch::nn::Linear"
  std::string to;    ///< "QuantLinear"
};

/// What prepare / prepare_qat did. Passes return reports and print nothing themselves (warnings
/// go through TORCH_WARN, to stderr by default); print it with operator<<.
///
/// Example:
///   tquant::PrepareReport report = tquant::prepare(*model, mapping);
///   std::cout << report;   // table of quantized modules, replacements, modules left float
///   if (!report.left_float_with(tquant::FloatReason::kUnreachable).empty()) { ... }
struct PrepareReport {
  std::vector<QuantizedModule> quantized;
  std::vector<ReplacedModule> replaced;
  std::vector<FloatModule> left_float;

  /// The entry named `name`, or nullptr. Every report's lookups are find_<entry kind> and
  /// return a pointer into the report, or nullptr.
  const QuantizedModule* find_quantized(const std::string& name) const;
  const FloatModule* find_float(const std::string& name) const;
  std::vector<FloatModule> left_float_with(FloatReason reason) const;

  /// Tables plus a summary line: "prepare: 3 quantized (2 replaced in containers), 4 float
  /// (1 unreachable, 3 no twin)".
  std::string to_string() const;
};

/// One quantizer after calibration.
struct QuantizerReport {
  std::string name;    ///< "encoder.fc1.input_quantizer"
  std::string module;  ///< "encoder.fc1"
  std::string spec;    ///< to_string(QuantSpec)
  std::string observer;  ///< ObserverBase::describe()
  bool calibrated = false;  ///< the observer saw data and qparams were computed
  /// Smallest and largest scale (equal for per-tensor), and the clipping range they give,
  /// amax = scale * (qmax - qmin) / 2 for symmetric specs, the width scale * (qmax - qmin)
  /// for affine ones; all 0 when not calibrated.
  double scale_min = 0.0;
  double scale_max = 0.0;
  double amax_min = 0.0;
  double amax_max = 0.0;
};

/// What calibrate did: every quantizer with its chosen range, and the modules that stayed float.
struct CalibrationReport {
  std::vector<QuantizerReport> quantizers;
  std::vector<FloatModule> left_float;
  /// Batches the forward loop reported through CalibrationProgress::step (0 if it never did).
  int64_t batches = 0;

  /// The quantizer named `quantizer_name` ("encoder.fc1.input_quantizer"), or nullptr.
  const QuantizerReport* find_quantizer(const std::string& quantizer_name) const;
  [[deprecated("use find_quantizer()")]] const QuantizerReport* find(
      const std::string& quantizer_name) const {
    return find_quantizer(quantizer_name);
  }

  /// Table (quantizer, spec, scale range, amax range, observer) plus a summary line.
  std::string to_string() const;
};

/// A module that convert lowered to integer execution.
struct ConvertedModule {
  std::string name;
  std::string type;    ///< "QuantLinear"
  std::string scheme;  ///< Quantizable::converted_scheme(), e.g. "int8_static"
  /// How forward computes on CPU, e.g. "int8 GEMM (oneDNN qlinear)" or "dequantize + float".
  std::string backend;
};

/// A prepared module that convert left as it was (it keeps simulating in fake-quant mode, or
/// stays float), and why.
struct UnconvertedModule {
  std::string name;
  std::string type;
  QuantMode mode = QuantMode::kFloat;  ///< the mode it keeps
  std::string reason;
};

/// What convert (or quantize_dynamic) did.
///
/// Example:
///   tquant::ConvertReport report = tquant::convert(*model);
///   std::cout << report;   // converted modules with scheme and backend, the others and why
struct ConvertReport {
  std::vector<ConvertedModule> converted;
  /// Modules that were converted before this call (a second convert changes nothing).
  std::vector<ConvertedModule> already_converted;
  /// Prepared modules not converted: simulated (fake-quant) or disabled (float).
  std::vector<UnconvertedModule> unconverted;
  /// Modules that were never quantized (from the prepare step of quantize_dynamic).
  std::vector<FloatModule> left_float;

  const ConvertedModule* find_converted(const std::string& name) const;
  const UnconvertedModule* find_unconverted(const std::string& name) const;
  /// An entry of left_float, or nullptr.
  const FloatModule* find_float(const std::string& name) const;

  /// Tables plus a summary line: "convert: 12 converted, 2 kept fake-quant (simulated),
  /// 1 disabled float, ..." ("convert: 0 converted, 12 already converted, ..." the second time).
  std::string to_string() const;
};

std::ostream& operator<<(std::ostream& stream, const PrepareReport& report);
std::ostream& operator<<(std::ostream& stream, const ConvertReport& report);
std::ostream& operator<<(std::ostream& stream, const CalibrationReport& report);

}  // namespace tquant
