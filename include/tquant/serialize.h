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
/// and for each tquant module its type, mode and quantizer specs ("tquant.modules", JSON), so
/// load_state can restore the modes.
///
/// Example:
///   tquant::prepare(model, mapping);
///   tquant::calibrate(model, run_batches);
///   tquant::save_state(*model, "calibrated.safetensors");
///   tquant::convert(*model);
///   tquant::save_state(*model, "int8.safetensors");   // int8 codes, scales, schemes
///   Net fresh;                                          // float, same structure
///   tquant::load_state(*fresh, "int8.safetensors");    // converted, same outputs
void save_state(const torch::nn::Module& model, const std::string& path,
                const SaveOptions& options = {});

/// Loads a file written by save_state into `model`, which must have the same structure
/// (for a calibrated file: the same tquant modules, prepared with the same QConfigMapping).
/// A converted file loads into a freshly constructed float model (no prepare needed): each
/// module saved as converted is given the integer layout of its saved scheme
/// (Quantizable::make_converted), then filled, and runs exactly as the saved model did
/// (bit-identical outputs).
/// Everything is checked before anything is changed: the format version, that the file and the
/// model hold the same tensor names, and the dtype and shape of each (observer statistics,
/// whose shape depends on the data, take the saved shape). On any mismatch the error names the
/// first one and the model is left unchanged. The saved mode of each tquant module is restored.
void load_state(torch::nn::Module& model, const std::string& path);

}  // namespace tquant
