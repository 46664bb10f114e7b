#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace tquant {

/// Contents of a safetensors file: named tensors (CPU, contiguous) and string metadata.
///
/// File layout (https://github.com/huggingface/safetensors, format as of safetensors 0.4):
///   bytes [0, 8):      N, the header length, unsigned 64-bit little-endian;
///   bytes [8, 8 + N):  UTF-8 JSON object: {"__metadata__": {str: str}, "<name>":
///                      {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...};
///   bytes [8 + N, ..): the tensor data, little-endian, row-major; offsets are relative to it.
struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

/// Reads and validates a whole file: header length within the file, valid JSON, known dtypes,
/// offsets inside the data section, byte counts equal to shape x element size, no overlapping
/// tensors, and data that ends exactly where the last tensor ends. Errors name the file and
/// the first problem found.
///
/// Example:
///   auto file = tquant::read_safetensors("model.safetensors");
///   at::Tensor w = file.tensors.at("encoder.layer.0.attention.self.query.weight");
SafetensorsFile read_safetensors(const std::string& path);

/// Parses a safetensors image held in memory (`what` names it in errors).
SafetensorsFile parse_safetensors(const std::vector<char>& bytes, const std::string& what);

/// Writes tensors (any device; copied to CPU) and metadata. Header keys are sorted and tensors
/// laid out in name order, so equal inputs give byte-identical files. The file is written to
/// a temporary name and renamed, so a failed write never leaves a half-written file at `path`.
void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// The safetensors image as bytes (what write_safetensors writes).
std::vector<char> serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                        const std::map<std::string, std::string>& metadata = {});

/// safetensors dtype names ("F32", "BF16", "I8", "U8", "F8_E4M3", ...) for LibTorch types.
std::string safetensors_dtype_name(c10::ScalarType type);
c10::ScalarType scalar_type_from_safetensors(const std::string& name);

}  // namespace tquant
