#include "tquant/int4_pack.h"

#include <vector>

#include <ATen/ATen.h>

namespace tquant {

namespace {

void check_codes(const at::Tensor& codes, const char* op) {
  TORCH_CHECK_VALUE(codes.defined(), op, ": expected int8 codes, got an undefined tensor");
  TORCH_CHECK_VALUE(codes.scalar_type() == at::kChar, op, ": expected int8 codes, got ",
                    codes.scalar_type());
  TORCH_CHECK_VALUE(codes.dim() >= 1 && codes.size(-1) >= 1, op,
                    ": expected codes of shape [..., K] with K >= 1, got shape ", codes.sizes());
  if (codes.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(codes);
  const int64_t min = lo.item<int64_t>();
  const int64_t max = hi.item<int64_t>();
  TORCH_CHECK_VALUE(min >= -8 && max <= 7, op, ": expected int4 codes in [-8, 7], got codes in [",
                    min, ", ", max, "]");
}

void check_packed(const at::Tensor& packed, int64_t cols, const char* op) {
  TORCH_CHECK_VALUE(packed.defined() && packed.scalar_type() == at::kByte, op,
                    ": expected packed int4 codes as uint8, got ",
                    packed.defined() ? c10::toString(packed.scalar_type()) : "an undefined tensor");
  TORCH_CHECK_VALUE(cols >= 1, op, ": expected cols >= 1, got ", cols);
  TORCH_CHECK_VALUE(packed.dim() >= 1 && packed.size(-1) == int4_packed_cols(cols), op,
                    ": expected packed codes of shape [..., ", int4_packed_cols(cols),
                    "] (ceil(", cols, " / 2) bytes per row), got shape ", packed.sizes());
}

std::vector<int64_t> with_last(at::IntArrayRef sizes, int64_t last) {
  std::vector<int64_t> shape = sizes.vec();
  shape.back() = last;
  return shape;
}

}  // namespace

at::Tensor pack_int4(const at::Tensor& codes) {
  check_codes(codes, "pack_int4");
  const int64_t cols = codes.size(-1);
  // An odd row gets one zero column: the padding nibble.
  const at::Tensor even = cols % 2 == 0 ? codes : at::constant_pad_nd(codes, {0, 1}, 0);
  const at::Tensor pairs = even.reshape({codes.numel() / cols, int4_packed_cols(cols), 2});
  const at::Tensor lo = at::bitwise_and(pairs.select(-1, 0), 0xF).to(at::kByte);
  const at::Tensor hi = at::bitwise_and(pairs.select(-1, 1), 0xF).to(at::kByte);
  return at::bitwise_or(lo, at::bitwise_left_shift(hi, 4))
      .reshape(with_last(codes.sizes(), int4_packed_cols(cols)));
}

at::Tensor unpack_int4(const at::Tensor& packed, int64_t cols) {
  check_packed(packed, cols, "unpack_int4");
  // Sign extension of a nibble v in [0, 15]: (v ^ 8) - 8.
  auto decode = [](const at::Tensor& nibble) {
    return at::bitwise_xor(nibble, 8).to(at::kChar).sub_(8);
  };
  const at::Tensor lo = decode(at::bitwise_and(packed, 0xF));
  const at::Tensor hi = decode(at::bitwise_right_shift(packed, 4));
  const at::Tensor both = at::stack({lo, hi}, -1).reshape(with_last(packed.sizes(), 2 * packed.size(-1)));
  return cols % 2 == 0 ? both : both.narrow(-1, 0, cols).contiguous();
}

at::Tensor pack_int4_ref(const at::Tensor& codes) {
  check_codes(codes, "pack_int4_ref");
  const at::Tensor c = codes.cpu().contiguous();
  const int64_t cols = c.size(-1);
  const int64_t bytes = int4_packed_cols(cols);
  const int64_t rows = c.numel() / cols;
  at::Tensor out = at::empty(with_last(c.sizes(), bytes), at::kByte);
  const int8_t* src = c.const_data_ptr<int8_t>();
  uint8_t* dst = out.mutable_data_ptr<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < bytes; ++j) {
      const int64_t k = 2 * j;
      const int8_t hi = k + 1 < cols ? src[r * cols + k + 1] : 0;
      dst[r * bytes + j] = Int4Pair::pack(src[r * cols + k], hi).bits;
    }
  }
  return out;
}

at::Tensor unpack_int4_ref(const at::Tensor& packed, int64_t cols) {
  check_packed(packed, cols, "unpack_int4_ref");
  const at::Tensor p = packed.cpu().contiguous();
  const int64_t bytes = p.size(-1);
  const int64_t rows = p.numel() / bytes;
  at::Tensor out = at::empty(with_last(p.sizes(), cols), at::kChar);
  const uint8_t* src = p.const_data_ptr<uint8_t>();
  int8_t* dst = out.mutable_data_ptr<int8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) {
      const Int4Pair pair{src[r * bytes + k / 2]};
      dst[r * cols + k] = k % 2 == 0 ? pair.lo() : pair.hi();
    }
  }
  return out;
}

}  // namespace tquant
