#include <gtest/gtest.h>

#include "tquant/formats.h"
#include "tquant/qparams.h"

#include <torch/torch.h>

using namespace tquant;

TEST(Formats, IntegerRangesFollowBitWidthAndNarrowRange) {
  EXPECT_EQ(quant_min(QuantSpec(QuantDtype::kInt8)), -128);
  EXPECT_EQ(quant_max(QuantSpec(QuantDtype::kInt8)), 127);
  EXPECT_EQ(quant_min(QuantSpec(QuantDtype::kInt8).narrow_range(true)), -127);
  EXPECT_EQ(quant_min(QuantSpec(QuantDtype::kUInt8)), 0);
  EXPECT_EQ(quant_max(QuantSpec(QuantDtype::kUInt8)), 255);
  EXPECT_EQ(quant_min(QuantSpec(QuantDtype::kInt4)), -8);
  EXPECT_EQ(quant_max(QuantSpec(QuantDtype::kInt4)), 7);
  EXPECT_EQ(quant_min(QuantSpec(QuantDtype::kInt4).narrow_range(true)), -7);
  EXPECT_EQ(quant_max(QuantSpec(QuantDtype::kUInt4)), 15);
  EXPECT_EQ(quant_max(QuantSpec(QuantDtype::kFp8E4M3)), 448);
}

TEST(Formats, StorageTypesHoldInt4InBytes) {
  EXPECT_EQ(storage_type(QuantDtype::kInt4), torch::kChar);
  EXPECT_EQ(storage_type(QuantDtype::kUInt4), torch::kByte);
  EXPECT_EQ(storage_type(QuantDtype::kFp8E4M3), torch::kFloat8_e4m3fn);
}

TEST(Formats, NamesRoundTrip) {
  for (auto dtype : {QuantDtype::kInt8, QuantDtype::kUInt8, QuantDtype::kInt4, QuantDtype::kUInt4,
                     QuantDtype::kFp8E4M3}) {
    EXPECT_EQ(quant_dtype_from_string(to_string(dtype)), dtype);
  }
  EXPECT_THROW(quant_dtype_from_string("int3"), c10::ValueError);
}

TEST(Formats, SpecDescribesGranularity) {
  auto spec = QuantSpec(QuantDtype::kInt4).granularity(Granularity::kPerBlock).axis(1).block_size(32);
  EXPECT_EQ(to_string(spec), "int4 symmetric per_block(axis=1, block=32)");
}

TEST(Formats, InvalidSpecsAreRejected) {
  EXPECT_THROW(check_spec(QuantSpec(QuantDtype::kFp8E4M3).symmetric(false)), c10::ValueError);
  EXPECT_THROW(check_spec(QuantSpec().granularity(Granularity::kPerBlock).block_size(0)),
               c10::ValueError);
}

TEST(Formats, AxisOutOfRangeNamesTheTensor) {
  EXPECT_EQ(canonical_axis(-1, 3, "w"), 2);
  try {
    canonical_axis(3, 3, "encoder.weight");
    FAIL() << "expected an error";
  } catch (const c10::IndexError& e) {
    EXPECT_NE(std::string(e.what()).find("encoder.weight"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("rank 3"), std::string::npos);
  }
}
