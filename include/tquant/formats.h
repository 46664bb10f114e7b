#pragma once

#include <cstdint>
#include <string>

#include <torch/arg.h>
#include <c10/core/ScalarType.h>

namespace tquant {

/// The integer or float format a tensor is quantized to.
///
/// Integer formats map a real value r to q = clamp(round(r / scale) + zero_point, qmin, qmax).
/// int4 and uint4 are held in int8 / uint8 storage, one value per byte.
/// kFp8E4M3 is simulated with LibTorch's float8_e4m3fn: q = cast_e4m3(r / scale), largest
/// finite value 448.
enum class QuantDtype { kInt8, kUInt8, kInt4, kUInt4, kFp8E4M3 };

/// How one scale (and zero point) is shared across a tensor.
///   kPerTensor:  one scale for the whole tensor.
///   kPerChannel: one scale per index along `axis` (e.g. per output channel of a weight).
///   kPerBlock:   one scale per `block_size` consecutive elements along `axis`
///                (e.g. INT4 weight-only blocks of 128 along the input dimension).
enum class Granularity { kPerTensor, kPerChannel, kPerBlock };

/// Everything needed to turn a range into quantization parameters.
///
/// Example:
///   auto weights = QuantSpec(QuantDtype::kInt8).symmetric(true).narrow_range(true)
///                      .granularity(Granularity::kPerChannel).axis(0);
struct QuantSpec {
  QuantSpec() = default;
  explicit QuantSpec(QuantDtype dtype) : dtype_(dtype) {}

  TORCH_ARG(QuantDtype, dtype) = QuantDtype::kInt8;
  /// symmetric: zero point at the middle of the range, scale = amax / ((qmax - qmin) / 2).
  /// affine: scale = (max - min) / (qmax - qmin), zero point maps min (or 0) to qmin.
  TORCH_ARG(bool, symmetric) = true;
  /// Narrow range drops the most negative code: int8 uses -127..127, int4 -7..7.
  TORCH_ARG(bool, narrow_range) = false;
  TORCH_ARG(Granularity, granularity) = Granularity::kPerTensor;
  /// Channel or block axis; negative values count from the end. Unused for kPerTensor.
  TORCH_ARG(int64_t, axis) = 0;
  /// Elements per block along `axis` for kPerBlock.
  TORCH_ARG(int64_t, block_size) = 128;
};

/// Smallest and largest integer code of a spec (for fp8: -448 and 448).
int64_t quant_min(const QuantSpec& spec);
int64_t quant_max(const QuantSpec& spec);

/// True for the integer formats, false for fp8.
bool is_integer(QuantDtype dtype);
/// True for signed formats (int8, int4, fp8).
bool is_signed(QuantDtype dtype);
/// Bits of one code (8 or 4).
int64_t bit_width(QuantDtype dtype);

/// LibTorch storage type of quantized values: kChar, kByte or kFloat8_e4m3fn.
c10::ScalarType storage_type(QuantDtype dtype);

/// Readable names, used in errors, reports and serialized metadata.
std::string to_string(QuantDtype dtype);
std::string to_string(Granularity granularity);
std::string to_string(const QuantSpec& spec);

/// Inverse of to_string(QuantDtype); throws on an unknown name.
QuantDtype quant_dtype_from_string(const std::string& name);

/// Checks the spec is internally consistent (block size > 0, fp8 symmetric, ...).
void check_spec(const QuantSpec& spec);

/// Resolves a possibly negative axis against a tensor rank and checks it is in range.
/// `what` names the tensor or module in the error message.
int64_t canonical_axis(int64_t axis, int64_t rank, const std::string& what);

}  // namespace tquant
