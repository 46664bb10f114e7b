// The CPU INT8 products of two activations: the VNNI GEMM against its reference twin, the
// batched product and the fused attention kernel against theirs, and QuantAttention's modes.

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <thread>
#include <vector>

#include "tquant/tquant.h"

#include "../src/int8_vnni_gemm.h"
#include "test_util.h"

namespace tquant {
namespace {

#define SKIP_WITHOUT_VNNI()                                                               \
  if (!int8_cpu_kernels_available()) {                                                    \
    GTEST_SKIP() << "this CPU has no AVX-512 VNNI: the kernels run their reference twins"; \
  }

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Random u8 A [m, lda] and packed s8 B for K x N, then the VNNI kernel against the reference.
void expect_gemm_matches_ref(int64_t m, int64_t n, int64_t k, bool with_comp) {
  const auto layout = detail::VnniLayout::for_shape(k, n);
  const int64_t lda = layout.k4 * 4 + 3;  // a row stride that is not a multiple of 4
  const at::Tensor a = at::randint(0, 256, {m * lda}, at::kByte);
  at::Tensor packed = at::zeros({layout.bytes()}, at::kChar);
  const at::Tensor b = at::randint(-127, 128, {k, n}, at::kChar);
  for (int64_t kk = 0; kk < k; ++kk) {
    for (int64_t nn = 0; nn < n; ++nn) {
      packed.data_ptr<int8_t>()[layout.offset(kk, nn)] = b[kk][nn].item<int8_t>();
    }
  }
  const at::Tensor comp = at::randint(-1000, 1000, {layout.n16 * 16}, at::kInt);
  const int64_t ldc = n + 5;
  at::Tensor c = at::full({m, ldc}, 7, at::kInt), c_ref = at::full({m, ldc}, 7, at::kInt);
  const int32_t* comp_ptr = with_comp ? comp.data_ptr<int32_t>() : nullptr;
  detail::gemm_u8s8s32_vnni(a.data_ptr<uint8_t>(), lda, packed.data_ptr<int8_t>(), layout,
                            comp_ptr, c.data_ptr<int32_t>(), ldc, m, n);
  detail::gemm_u8s8s32_ref(a.data_ptr<uint8_t>(), lda, packed.data_ptr<int8_t>(), layout,
                           comp_ptr, c_ref.data_ptr<int32_t>(), ldc, m, n);
  ASSERT_TRUE(at::equal(c, c_ref)) << "m " << m << " n " << n << " k " << k;
  // The columns past n are never written.
  EXPECT_TRUE(at::equal(c.narrow(1, n, 5), at::full({m, 5}, 7, at::kInt)));
  // And the reference is the plain integer product.
  const at::Tensor a_used = a.view({m, lda}).narrow(1, 0, k).to(at::kLong);
  at::Tensor expected = at::matmul(a_used, b.to(at::kLong));
  if (with_comp) expected -= comp.narrow(0, 0, n).to(at::kLong);
  EXPECT_TRUE(at::equal(c_ref.narrow(1, 0, n).to(at::kLong), expected));
}

TEST(Int8VnniGemm, EqualsReferenceOnOddShapes) {
  SKIP_WITHOUT_VNNI();
  torch::manual_seed(0);
  for (int64_t m : {1, 3, 6, 7, 17, 65}) {
    for (int64_t n : {1, 15, 16, 17, 64, 65, 130}) {
      for (int64_t k : {1, 3, 4, 5, 32, 33}) expect_gemm_matches_ref(m, n, k, (m + n) % 2 == 0);
    }
  }
  expect_gemm_matches_ref(128, 128, 32, true);
  expect_gemm_matches_ref(128, 32, 128, false);
}

TEST(Int8Bmm, EqualsReferenceBitForBit) {
  torch::manual_seed(1);
  const at::Tensor a = at::randn({2, 3, 17, 33});
  const at::Tensor b = at::randn({2, 3, 33, 19});
  EXPECT_TRUE(at::equal(int8_bmm_cpu(a, b, 0.02, 0.03), int8_bmm_ref(a, b, 0.02, 0.03)));
  // b as a transposed view (the k^T of attention scores), broadcast batch dims, batch 1.
  const at::Tensor k = at::randn({2, 3, 19, 33});
  EXPECT_TRUE(at::equal(int8_bmm_cpu(a, k.transpose(-2, -1), 0.02, 0.03),
                        int8_bmm_ref(a, k.transpose(-2, -1), 0.02, 0.03)));
  const at::Tensor shared = at::randn({33, 5});
  EXPECT_TRUE(
      at::equal(int8_bmm_cpu(a, shared, 0.05, 0.01), int8_bmm_ref(a, shared, 0.05, 0.01)));
  const at::Tensor one = at::randn({1, 1, 7});
  const at::Tensor col = at::randn({1, 7, 1});
  EXPECT_TRUE(at::equal(int8_bmm_cpu(one, col, 0.1, 0.1), int8_bmm_ref(one, col, 0.1, 0.1)));
}

TEST(Int8Bmm, EqualsTheExactIntegerProductOfTheCodes) {
  torch::manual_seed(2);
  const at::Tensor a = at::randn({4, 9, 65});
  const at::Tensor b = at::randn({4, 65, 31});
  const float sa = 0.03f, sb = 0.02f;
  auto codes = [](const at::Tensor& x, float s) {
    return (x * (1.0f / s)).round().clamp(-127, 127).to(at::kLong);
  };
  const at::Tensor acc = at::matmul(codes(a, sa), codes(b, sb));
  const at::Tensor expected = acc.to(at::kFloat) * static_cast<float>(double(sa) * double(sb));
  EXPECT_TRUE(at::equal(int8_bmm_cpu(a, b, sa, sb), expected));
}

TEST(Int8Bmm, NonFiniteInputsGiveNaNInTheRowsAndColumnsTheyTouch) {
  torch::manual_seed(3);
  at::Tensor a = at::randn({2, 5, 8});
  at::Tensor b = at::randn({2, 8, 6});
  a[0][2][3] = kNaN;
  b[1][4][5] = std::numeric_limits<float>::infinity();
  const at::Tensor out = int8_bmm_cpu(a, b, 0.03, 0.03);
  EXPECT_TRUE(out[0][2].isnan().all().item<bool>());
  EXPECT_TRUE(out[1].select(1, 5).isnan().all().item<bool>());
  EXPECT_EQ(out.isnan().sum().item<int64_t>(), 6 + 5);
  EXPECT_TRUE(at::equal(out.isnan(), int8_bmm_ref(a, b, 0.03, 0.03).isnan()));
}

TEST(Int8Bmm, BadInputIsAClearError) {
  const std::string message = test::error_message(
      [] { int8_bmm_cpu(at::randn({2, 3, 4}), at::randn({2, 5, 6}), 0.1, 0.1); });
  EXPECT_NE(message.find("inner dimensions"), std::string::npos) << message;
  const std::string scale = test::error_message(
      [] { int8_bmm_cpu(at::randn({3, 4}), at::randn({4, 6}), 0.0, 0.1); });
  EXPECT_NE(scale.find("scale > 0"), std::string::npos) << scale;
}

// ------------------------------------------------------------------------------- attention

struct AttentionCase {
  at::Tensor q, k, v;
  AttentionScales scales;
};

AttentionCase attention_case(int64_t b, int64_t h, int64_t lq, int64_t lk, int64_t d,
                             int64_t dv) {
  AttentionCase c{at::randn({b, h, lq, d}), at::randn({b, h, lk, d}), at::randn({b, h, lk, dv}),
                  {}};
  c.scales.query = c.q.abs().max().item<double>() / 127;
  c.scales.key = c.k.abs().max().item<double>() / 127;
  c.scales.probs = 1.0 / 127;
  c.scales.value = c.v.abs().max().item<double>() / 127;
  return c;
}

// The kernel's exp differs from at::softmax's by an ulp or two, so a probability code on a
// rounding boundary may differ by one: each such flip moves an output by s_p * s_v * |code(v)|.
void expect_close_to_ref(const at::Tensor& out, const at::Tensor& ref, const AttentionCase& c) {
  ASSERT_EQ(out.sizes(), ref.sizes());
  EXPECT_TRUE(at::equal(out.isnan(), ref.isnan()));
  const at::Tensor finite = ref.isfinite();
  const double one_flip = c.scales.probs * c.scales.value * 127;
  const at::Tensor diff = (out - ref).abs().masked_select(finite);
  if (diff.numel() == 0) return;
  EXPECT_LE(diff.max().item<double>(), 2 * one_flip);
  // Flips are rare: almost every output equals the reference to float rounding.
  const double close = (diff <= 1e-5 + 1e-5 * ref.abs().max().item<double>())
                           .to(at::kDouble)
                           .mean()
                           .item<double>();
  EXPECT_GE(close, 0.98);
}

TEST(Int8Attention, MatchesReferenceOnOddShapes) {
  SKIP_WITHOUT_VNNI();
  torch::manual_seed(4);
  for (auto [b, h, lq, lk, d, dv] : std::vector<std::array<int64_t, 6>>{
           {2, 3, 17, 33, 32, 16}, {1, 1, 1, 1, 8, 8}, {1, 2, 65, 7, 5, 33}, {2, 12, 128, 128, 32, 32}}) {
    const AttentionCase c = attention_case(b, h, lq, lk, d, dv);
    const at::Tensor out = int8_attention_cpu(c.q, c.k, c.v, {}, c.scales);
    expect_close_to_ref(out, int8_attention_ref(c.q, c.k, c.v, {}, c.scales), c);
  }
}

TEST(Int8Attention, AppliesAdditiveAndBoolMasks) {
  SKIP_WITHOUT_VNNI();
  torch::manual_seed(5);
  const AttentionCase c = attention_case(2, 3, 9, 11, 16, 16);
  at::Tensor keep = at::ones({2, 11}, at::kBool);
  keep[1].narrow(0, 6, 5).fill_(false);
  const at::Tensor bool_mask = keep.view({2, 1, 1, 11});
  const at::Tensor additive =
      at::zeros({2, 1, 1, 11}).masked_fill_(bool_mask.logical_not(), -1e30);
  const at::Tensor with_bool = int8_attention_cpu(c.q, c.k, c.v, bool_mask, c.scales);
  const at::Tensor with_add = int8_attention_cpu(c.q, c.k, c.v, additive, c.scales);
  expect_close_to_ref(with_bool, int8_attention_ref(c.q, c.k, c.v, bool_mask, c.scales), c);
  EXPECT_TRUE(at::equal(with_bool, with_add));
  // Masked keys change nothing: batch 1 equals attention over its first 6 keys alone.
  using torch::indexing::Slice;
  const at::Tensor alone = int8_attention_cpu(
      c.q.narrow(0, 1, 1), c.k.narrow(0, 1, 1).narrow(2, 0, 6), c.v.narrow(0, 1, 1).narrow(2, 0, 6),
      {}, c.scales);
  EXPECT_TRUE(at::equal(with_bool.narrow(0, 1, 1), alone));
  // A full [B, H, Lq, Lk] float mask works too.
  const at::Tensor full = at::randn({2, 3, 9, 11});
  expect_close_to_ref(int8_attention_cpu(c.q, c.k, c.v, full, c.scales),
                      int8_attention_ref(c.q, c.k, c.v, full, c.scales), c);
}

TEST(Int8Attention, ReturnsHeadsAsAViewOfMergedRows) {
  torch::manual_seed(6);
  const AttentionCase c = attention_case(2, 4, 5, 5, 8, 8);
  const at::Tensor out = int8_attention_cpu(c.q, c.k, c.v, {}, c.scales);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 4, 5, 8}));
  EXPECT_TRUE(out.transpose(1, 2).is_contiguous());
}

TEST(Int8Attention, NonFiniteInputsNeverComeOutAsNumbers) {
  torch::manual_seed(7);
  AttentionCase c = attention_case(1, 2, 4, 6, 8, 8);
  const at::Tensor clean = int8_attention_cpu(c.q, c.k, c.v, {}, c.scales);
  c.q[0][0][2][1] = kNaN;  // one query row of head 0
  c.k[0][1][3][0] = std::numeric_limits<float>::infinity();  // one key of head 1
  const at::Tensor out = int8_attention_cpu(c.q, c.k, c.v, {}, c.scales);
  EXPECT_TRUE(out[0][0][2].isnan().all().item<bool>());
  EXPECT_TRUE(out[0][1].isnan().all().item<bool>());
  EXPECT_EQ(out.isnan().sum().item<int64_t>(), 8 + 4 * 8);
  const at::Tensor untouched = at::ones({4}, at::kBool).index_put_({2}, false);
  EXPECT_TRUE(at::equal(out[0][0].index({untouched}), clean[0][0].index({untouched})));
}

// ------------------------------------------------------------------ edge cases, every mode

// q, k, v and a bool mask [1, 1, Lq, Lk] whose query row 1 masks every key.
struct MaskedCase {
  AttentionCase c;
  at::Tensor mask;
};

MaskedCase fully_masked_row_case() {
  torch::manual_seed(40);
  MaskedCase m{attention_case(1, 2, 3, 6, 8, 8), at::ones({1, 1, 3, 6}, at::kBool)};
  m.mask[0][0][1].fill_(false);
  return m;
}

TEST(AttentionEdgeCases, FullyMaskedRowIsZeroInEveryMode) {
  const MaskedCase m = fully_masked_row_case();
  const AttentionCase& c = m.c;
  QuantAttention attention;
  attention->eval();
  const at::Tensor float_out = attention(c.q, c.k, c.v, m.mask);
  attention->set_qconfig(int8_static_qconfig());
  attention->set_mode(QuantMode::kObserve);
  attention(c.q, c.k, c.v, m.mask);
  attention->set_mode(QuantMode::kFakeQuant);
  const at::Tensor fake = attention(c.q, c.k, c.v, m.mask);
  ASSERT_TRUE(attention->convert().converted);
  const at::Tensor converted = attention(c.q, c.k, c.v, m.mask);
  const std::vector<std::pair<const char*, at::Tensor>> outputs = {
      {"float", float_out},
      {"fake-quant", fake},
      {"converted", converted},
      {"kernel", int8_attention_cpu(c.q, c.k, c.v, m.mask, c.scales)},
      {"reference", int8_attention_ref(c.q, c.k, c.v, m.mask, c.scales)}};
  for (const auto& [mode, out] : outputs) {
    EXPECT_TRUE(out.isfinite().all().item<bool>()) << mode;
    EXPECT_TRUE(at::equal(out.select(2, 1), at::zeros({1, 2, 8}))) << mode;
    EXPECT_GT(out.select(2, 0).abs().sum().item<double>(), 0.0) << mode;
  }
  // The gradient of a fake-quant forward is finite too (training on padded batches).
  QuantAttention trained;
  trained->set_qconfig(int8_static_qconfig());
  trained->set_mode(QuantMode::kObserve);
  trained(c.q, c.k, c.v, m.mask);
  trained->set_mode(QuantMode::kFakeQuant);
  trained->train();
  const at::Tensor q = c.q.clone().requires_grad_(true);
  trained(q, c.k, c.v, m.mask).sum().backward();
  EXPECT_TRUE(q.grad().isfinite().all().item<bool>());
}

TEST(AttentionEdgeCases, PlusInfinityInTheMaskMakesItsRowNaN) {
  torch::manual_seed(41);
  const AttentionCase c = attention_case(1, 1, 3, 5, 8, 8);
  at::Tensor mask = at::zeros({1, 1, 3, 5});
  mask[0][0][2][3] = std::numeric_limits<float>::infinity();
  for (const at::Tensor& out : {int8_attention_cpu(c.q, c.k, c.v, mask, c.scales),
                                int8_attention_ref(c.q, c.k, c.v, mask, c.scales)}) {
    EXPECT_TRUE(out[0][0][2].isnan().all().item<bool>());
    EXPECT_TRUE(out[0][0].narrow(0, 0, 2).isfinite().all().item<bool>());
  }
}

TEST(AttentionEdgeCases, EmptyShapesGiveEmptyOrZeroOutputs) {
  torch::manual_seed(42);
  const AttentionScales unit{};
  // No key: nothing to attend to, output 0 (an empty sum).
  const at::Tensor out =
      int8_attention_cpu(at::randn({1, 2, 3, 8}), at::randn({1, 2, 0, 8}), at::randn({1, 2, 0, 4}), {}, unit);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_TRUE(at::equal(out, at::zeros({1, 2, 3, 4})));
  // No query: an empty output.
  EXPECT_EQ(int8_attention_cpu(at::randn({1, 2, 0, 8}), at::randn({1, 2, 5, 8}),
                               at::randn({1, 2, 5, 4}), {}, unit)
                .sizes(),
            (std::vector<int64_t>{1, 2, 0, 4}));
  // D = 0 has no softmax scale (1 / sqrt(0)): a clear error.
  const std::string no_depth = test::error_message([&] {
    int8_attention_cpu(at::randn({1, 1, 2, 0}), at::randn({1, 1, 3, 0}), at::randn({1, 1, 3, 4}),
                       {}, unit);
  });
  EXPECT_NE(no_depth.find("D > 0"), std::string::npos) << no_depth;
  EXPECT_TRUE(at::equal(int8_bmm_cpu(at::randn({2, 3, 0}), at::randn({2, 0, 4}), 0.1, 0.1),
                        at::zeros({2, 3, 4})));
  EXPECT_EQ(int8_bmm_cpu(at::randn({2, 0, 5}), at::randn({2, 5, 4}), 0.1, 0.1).sizes(),
            (std::vector<int64_t>{2, 0, 4}));
}

TEST(AttentionEdgeCases, BadDevicesScalesAndSizesAreClearErrors) {
  const AttentionCase c = attention_case(1, 1, 2, 3, 8, 4);
  const std::string device = test::error_message([&] {
    int8_attention_cpu(c.q, c.k, c.v, at::zeros({1, 1, 2, 3}, at::device(at::kMeta)), c.scales);
  });
  EXPECT_NE(device.find("attn_mask on the CPU"), std::string::npos) << device;
  AttentionScales tiny = c.scales;
  tiny.key = 1e-40;  // 1 / float(1e-40) is +inf
  const std::string scale = test::error_message([&] { int8_attention_cpu(c.q, c.k, c.v, {}, tiny); });
  EXPECT_NE(scale.find("key scale"), std::string::npos) << scale;
  EXPECT_NE(scale.find("reciprocal"), std::string::npos) << scale;
  const std::string bmm_scale =
      test::error_message([] { int8_bmm_cpu(at::randn({2, 3}), at::randn({3, 2}), 1e-40, 1.0); });
  EXPECT_NE(bmm_scale.find("reciprocal"), std::string::npos) << bmm_scale;
  // K beyond what int32 sums of 127 * 127 products hold.
  const int64_t k = kMaxInt8GemmK + 1;
  const std::string too_long = test::error_message(
      [&] { int8_attention_cpu(at::zeros({1, 1, 1, k}), at::zeros({1, 1, 1, k}), at::zeros({1, 1, 1, 1}), {}, AttentionScales{}); });
  EXPECT_NE(too_long.find(std::to_string(k)), std::string::npos) << too_long;
  const std::string bmm_long = test::error_message(
      [&] { int8_bmm_cpu(at::zeros({1, k}), at::zeros({k, 1}), 1.0, 1.0); });
  EXPECT_NE(bmm_long.find(std::to_string(k)), std::string::npos) << bmm_long;
}

TEST(Int8Attention, BadInputIsAClearError) {
  const AttentionCase c = attention_case(1, 2, 4, 6, 8, 8);
  const std::string shape = test::error_message(
      [&] { int8_attention_cpu(c.q, c.k.narrow(3, 0, 4), c.v, {}, c.scales); });
  EXPECT_NE(shape.find("expected q [B, H, Lq, D]"), std::string::npos) << shape;
  AttentionScales zero = c.scales;
  zero.probs = 0;
  const std::string scale =
      test::error_message([&] { int8_attention_cpu(c.q, c.k, c.v, {}, zero); });
  EXPECT_NE(scale.find("probs scale"), std::string::npos) << scale;
}

// ---------------------------------------------------------------------------- QuantAttention

QConfig static_int8() { return int8_static_qconfig(); }

// A calibrated attention module on random q, k, v.
QuantAttention calibrated_attention(const AttentionCase& c, const at::Tensor& mask) {
  QuantAttention attention;
  attention->set_qconfig(static_int8());
  attention->set_mode(QuantMode::kObserve);
  attention->eval();
  attention(c.q, c.k, c.v, mask);
  attention->set_mode(QuantMode::kFakeQuant);
  return attention;
}

TEST(QuantAttention, FloatModeIsScaledDotProductAttention) {
  torch::manual_seed(8);
  const AttentionCase c = attention_case(2, 3, 7, 9, 8, 4);
  QuantAttention attention;
  attention->eval();
  const at::Tensor mask = at::randn({2, 1, 1, 9});
  EXPECT_TRUE(at::equal(attention(c.q, c.k, c.v, mask),
                        at::scaled_dot_product_attention(c.q, c.k, c.v, mask)));
  EXPECT_TRUE(at::equal(attention(c.q, c.k, c.v), at::scaled_dot_product_attention(c.q, c.k, c.v)));
  // Observe mode writes the product out: the same values up to float rounding.
  attention->set_qconfig(static_int8());
  attention->set_mode(QuantMode::kObserve);
  EXPECT_TRUE(at::allclose(attention(c.q, c.k, c.v, mask),
                           at::scaled_dot_product_attention(c.q, c.k, c.v, mask), 1e-5, 1e-6));
  EXPECT_TRUE(attention->probs_quantizer->observer_ref().has_data());
}

TEST(QuantAttention, ConvertedMatchesFakeQuantAndItsKernel) {
  torch::manual_seed(9);
  const AttentionCase c = attention_case(2, 4, 16, 16, 32, 32);
  const at::Tensor mask = at::zeros({2, 1, 1, 16}).index_put_({1, 0, 0, at::indexing::Slice(10)}, -1e4);
  QuantAttention attention = calibrated_attention(c, mask);
  const at::Tensor fake = attention(c.q, c.k, c.v, mask);
  const ConvertResult result = attention->convert();
  ASSERT_TRUE(result.converted) << result.reason;
  EXPECT_EQ(result.scheme, "int8_static");
  const at::Tensor converted = attention(c.q, c.k, c.v, mask);
  AttentionCase scaled = c;
  scaled.scales = {attention->query_scale.item<double>(), attention->key_scale.item<double>(),
                   attention->probs_scale.item<double>(), attention->value_scale.item<double>()};
  expect_close_to_ref(converted, fake, scaled);
  EXPECT_TRUE(at::equal(converted, int8_attention_cpu(c.q, c.k, c.v, mask, scaled.scales)));
}

TEST(QuantAttention, PerChannelOperandsStayInFakeQuantWithAReason) {
  QuantAttention attention;
  QConfig config = static_int8();
  config.activation = static_int8().weight;  // per-channel weight quantizer as activations
  attention->set_qconfig(config);
  attention->set_mode(QuantMode::kFakeQuant);
  const ConvertResult result = attention->convert();
  EXPECT_FALSE(result.converted);
  EXPECT_NE(result.reason.find("query_quantizer"), std::string::npos) << result.reason;
  EXPECT_EQ(attention->mode(), QuantMode::kFakeQuant);
}

TEST(QuantAttention, ConvertedStateLoadsIntoAFreshModule) {
  torch::manual_seed(10);
  const AttentionCase c = attention_case(1, 2, 8, 8, 16, 16);
  QuantAttention attention = calibrated_attention(c, {});
  ASSERT_TRUE(attention->convert().converted);
  auto parent = std::make_shared<torch::nn::Module>();
  parent->register_module("attention", attention);
  const auto path =
      (std::filesystem::temp_directory_path() / "tquant_attention_test.safetensors").string();
  save_state(*parent, path);
  auto fresh_parent = std::make_shared<torch::nn::Module>();
  QuantAttention fresh;
  fresh_parent->register_module("attention", fresh);
  load_state(*fresh_parent, path);
  std::filesystem::remove(path);
  EXPECT_EQ(fresh->mode(), QuantMode::kConverted);
  EXPECT_TRUE(at::equal(fresh(c.q, c.k, c.v), attention(c.q, c.k, c.v)));
}

TEST(QuantAttention, ConvertedForwardFromManyThreadsIsBitEqual) {
  torch::manual_seed(11);
  const AttentionCase c = attention_case(2, 3, 16, 16, 16, 16);
  QuantAttention attention = calibrated_attention(c, {});
  ASSERT_TRUE(attention->convert().converted);
  std::vector<at::Tensor> inputs;
  std::vector<at::Tensor> expected;
  for (int t = 0; t < 8; ++t) {
    inputs.push_back(c.q * (1.0 + 0.1 * t));
    expected.push_back(attention(inputs.back(), c.k, c.v));
  }
  std::vector<int> mismatches(8, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int call = 0; call < 100; ++call) {
        mismatches[t] += !at::equal(attention(inputs[t], c.k, c.v), expected[t]);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(std::accumulate(mismatches.begin(), mismatches.end(), 0), 0);
}

TEST(QuantAttention, WrongInputsNameTheModule) {
  QuantAttention attention;
  const std::string message = test::error_message(
      [&] { attention(at::randn({2, 3, 4}), at::randn({2, 3, 4}), at::randn({2, 3, 4})); });
  EXPECT_NE(message.find("QuantAttention"), std::string::npos) << message;
  const std::string empty = test::error_message([&] {
    attention(at::randn({0, 1, 4, 8}), at::randn({0, 1, 4, 8}), at::randn({0, 1, 4, 8}));
  });
  EXPECT_NE(empty.find("non-empty"), std::string::npos) << empty;
}

}  // namespace
}  // namespace tquant
