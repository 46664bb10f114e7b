#include "tquant/formats.h"

#include <c10/util/Exception.h>

namespace tquant {

namespace {
constexpr int64_t kFp8E4M3Max = 448;
}  // namespace

bool is_integer(QuantDtype dtype) { return dtype != QuantDtype::kFp8E4M3; }

bool is_signed(QuantDtype dtype) {
  return dtype == QuantDtype::kInt8 || dtype == QuantDtype::kInt4 ||
         dtype == QuantDtype::kFp8E4M3;
}

int64_t bit_width(QuantDtype dtype) {
  return (dtype == QuantDtype::kInt4 || dtype == QuantDtype::kUInt4) ? 4 : 8;
}

int64_t quant_min(const QuantSpec& spec) {
  if (spec.dtype() == QuantDtype::kFp8E4M3) return -kFp8E4M3Max;
  if (!is_signed(spec.dtype())) return 0;
  const int64_t lowest = -(int64_t{1} << (bit_width(spec.dtype()) - 1));
  return spec.narrow_range() ? lowest + 1 : lowest;
}

int64_t quant_max(const QuantSpec& spec) {
  if (spec.dtype() == QuantDtype::kFp8E4M3) return kFp8E4M3Max;
  const int64_t bits = bit_width(spec.dtype());
  return is_signed(spec.dtype()) ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
}

c10::ScalarType storage_type(QuantDtype dtype) {
  switch (dtype) {
    case QuantDtype::kInt8:
    case QuantDtype::kInt4:
      return c10::kChar;
    case QuantDtype::kUInt8:
    case QuantDtype::kUInt4:
      return c10::kByte;
    case QuantDtype::kFp8E4M3:
      return c10::kFloat8_e4m3fn;
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled QuantDtype");
}

std::string to_string(QuantDtype dtype) {
  switch (dtype) {
    case QuantDtype::kInt8: return "int8";
    case QuantDtype::kUInt8: return "uint8";
    case QuantDtype::kInt4: return "int4";
    case QuantDtype::kUInt4: return "uint4";
    case QuantDtype::kFp8E4M3: return "fp8_e4m3";
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled QuantDtype");
}

QuantDtype quant_dtype_from_string(const std::string& name) {
  for (auto dtype : {QuantDtype::kInt8, QuantDtype::kUInt8, QuantDtype::kInt4,
                     QuantDtype::kUInt4, QuantDtype::kFp8E4M3}) {
    if (to_string(dtype) == name) return dtype;
  }
  TORCH_CHECK_VALUE(false, "unknown quantized dtype name: expected one of int8, uint8, int4, ",
                    "uint4, fp8_e4m3, got '", name, "'");
}

std::string to_string(Granularity granularity) {
  switch (granularity) {
    case Granularity::kPerTensor: return "per_tensor";
    case Granularity::kPerChannel: return "per_channel";
    case Granularity::kPerBlock: return "per_block";
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled Granularity");
}

std::string to_string(const QuantSpec& spec) {
  std::string text = to_string(spec.dtype());
  text += spec.symmetric() ? " symmetric" : " affine";
  if (spec.narrow_range()) text += " narrow";
  text += " " + to_string(spec.granularity());
  if (spec.granularity() != Granularity::kPerTensor) {
    text += "(axis=" + std::to_string(spec.axis());
    if (spec.granularity() == Granularity::kPerBlock) {
      text += ", block=" + std::to_string(spec.block_size());
    }
    text += ")";
  }
  return text;
}

void check_spec(const QuantSpec& spec) {
  TORCH_CHECK_VALUE(spec.dtype() != QuantDtype::kFp8E4M3 || spec.symmetric(),
                    "fp8_e4m3 quantization is symmetric only: expected symmetric=true, got "
                    "symmetric=false");
  TORCH_CHECK_VALUE(spec.dtype() != QuantDtype::kFp8E4M3 || !spec.narrow_range(),
                    "narrow_range applies to integer formats only, got it for fp8_e4m3");
  TORCH_CHECK_VALUE(spec.granularity() != Granularity::kPerBlock || spec.block_size() > 0,
                    "per-block quantization expects block_size > 0, got ", spec.block_size());
}

int64_t canonical_axis(int64_t axis, int64_t rank, const std::string& what) {
  TORCH_CHECK_INDEX(axis >= -rank && axis < rank, what, ": axis ", axis,
                    " is out of range for a tensor of rank ", rank, " (expected -", rank,
                    " <= axis < ", rank, ")");
  return axis < 0 ? axis + rank : axis;
}

}  // namespace tquant
