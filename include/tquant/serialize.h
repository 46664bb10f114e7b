#pragma once

#include <string>

#include <torch/nn/module.h>

namespace tquant {

/// Version of the tquant state format written into the metadata ("tquant.format_version").
constexpr const char* kStateFormatVersion = "1";

struct SaveOptions {
  /// Keep histogram observer counts (needed to switch calibration method after loading;
  /// they are the bulk of a calibrated file).
  TORCH_ARG(bool, include_histograms) = true;
};

/// Saves a model's whole state (parameters and buffers of every submodule, quantizer and
/// observer state included) to a safetensors file. The metadata holds the format version,
/// and for each tquant module its type, mode, converted scheme, quantizer specs and the recipe
/// of each quantizer (FakeQuantize options, observer type and options; "tquant.modules", JSON),
/// so load_state can rebuild the quantizers and restore the modes.
///
/// Example:
///   tquant::prepare(*model, mapping);
///   tquant::calibrate(*model, run_batches);
///   tquant::save_state(*model, "calibrated.safetensors");
///   tquant::convert(*model);
///   tquant::save_state(*model, "int8.safetensors");   // int8 codes, scales, schemes
///   Net fresh;                                          // float, same structure
///   tquant::load_state(*fresh, "int8.safetensors");    // converted, same outputs
void save_state(const torch::nn::Module& model, const std::string& path,
                const SaveOptions& options = {});

/// Loads a file written by save_state into `model`, which must have the same structure. The
/// model may be freshly constructed in float (no prepare), for a calibrated file as for a
/// converted one:
///   - a plain torch Linear / Conv2d / Embedding entry of a Sequential, ModuleList or ModuleDict
///     that the file records as a tquant twin is replaced by the twin (as prepare does); one in
///     a member field cannot be, and the error says to declare the field as the tquant type;
///   - a tquant module without quantizers gets them built from the file's recipes; a prepared
///     one keeps its own;
///   - a module saved as converted gets the integer layout of its saved scheme
///     (Quantizable::make_converted); the others get their saved mode;
/// then every tensor is copied, and the model runs exactly as the saved one did (bit-identical
/// outputs).
/// Everything is checked first (on clones): the format version, the modules, and the names,
/// dtypes and shapes of the tensors (observer statistics, whose shape depends on the data, take
/// the saved shape). On a mismatch the model is left unchanged and the error lists what differs,
/// up to five of each kind: modules missing on either side, model tensors not in the file, file
/// tensors not in the model, tensors of another dtype or shape.
void load_state(torch::nn::Module& model, const std::string& path);

}  // namespace tquant
