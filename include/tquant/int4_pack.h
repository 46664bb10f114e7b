#pragma once

// Packed int4 codes: two 4-bit two's complement codes per byte, the storage of the int4 weights
// of converted W4A8 modules ("weight_int4" in memory and in safetensors files; docs/formats.md).

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace tquant {

/// One byte holding the int4 codes of two neighbouring columns (input features) 2j and 2j + 1:
///   bits = (lo & 0xF) | ((hi & 0xF) << 4)
/// lo (low nibble) is the code of the even column 2j, hi (high nibble) that of the odd column
/// 2j + 1; each is a 4-bit two's complement number in [-8, 7] and decodes by sign extension,
///   lo = ((bits & 0xF) ^ 8) - 8,   hi = ((bits >> 4) ^ 8) - 8.
/// A row of K codes takes ceil(K / 2) bytes; for odd K the high nibble of the row's last byte is
/// padding, written as 0 and ignored when unpacking.
struct Int4Pair {
  uint8_t bits = 0;

  static constexpr Int4Pair pack(int8_t lo, int8_t hi) {
    return Int4Pair{static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4))};
  }
  constexpr int8_t lo() const { return static_cast<int8_t>(((bits & 0xF) ^ 8) - 8); }
  constexpr int8_t hi() const { return static_cast<int8_t>(((bits >> 4) ^ 8) - 8); }
};
static_assert(sizeof(Int4Pair) == 1, "Int4Pair is one byte of a packed uint8 tensor");
static_assert(Int4Pair::pack(-8, 7).lo() == -8 && Int4Pair::pack(-8, 7).hi() == 7,
              "int4 codes round-trip through Int4Pair");

/// Bytes of one packed row of `cols` int4 codes: ceil(cols / 2).
constexpr int64_t int4_packed_cols(int64_t cols) { return (cols + 1) / 2; }

/// Packs int8 codes [..., K] in [-8, 7] (any device; K >= 1, odd K allowed) into uint8
/// [..., ceil(K / 2)] in the Int4Pair layout, along the last dimension. Codes outside [-8, 7]
/// are an error naming the range found.
///
/// Example:
///   at::Tensor codes = at::tensor({-7, 3, 5}, at::kChar).reshape({1, 3});
///   at::Tensor packed = tquant::pack_int4(codes);            // uint8 [1, 2]: {0x39, 0x05}
///   at::Tensor back = tquant::unpack_int4(packed, 3);         // equals codes
at::Tensor pack_int4(const at::Tensor& codes);

/// Unpacks uint8 [..., ceil(cols / 2)] in the Int4Pair layout into int8 codes [..., cols] in
/// [-8, 7] on the same device (the padding nibble of an odd `cols` is dropped).
at::Tensor unpack_int4(const at::Tensor& packed, int64_t cols);

/// Reference twins: a scalar loop over Int4Pair on CPU (results on CPU). pack_int4 and
/// unpack_int4 (ATen element-wise ops, any device) equal them bit for bit.
at::Tensor pack_int4_ref(const at::Tensor& codes);
at::Tensor unpack_int4_ref(const at::Tensor& packed, int64_t cols);

}  // namespace tquant
