#include <gtest/gtest.h>

#include "tquant/safetensors.h"

#include <cstdlib>
#include <fstream>
#include <random>

#include <torch/torch.h>

using namespace tquant;

namespace {

const std::string kGolden = TQUANT_GOLDEN_DIR;

/// The tensors of tests/golden/gen_safetensors_golden.py's expected_tensors().
std::map<std::string, torch::Tensor> expected_tensors() {
  return {
      {"f32", torch::arange(6, torch::kFloat).reshape({2, 3}) / 4},
      {"f64", torch::tensor({1.5, -2.25}, torch::kDouble)},
      {"f16", torch::tensor({0.5, 3.0}).to(torch::kHalf)},
      {"bf16", torch::tensor({1.0, -8.0}).to(torch::kBFloat16)},
      {"i64", torch::tensor({int64_t{-3}, int64_t{4000000000}}, torch::kLong)},
      {"i32", torch::tensor({7, -7}, torch::kInt)},
      {"i8", torch::tensor({-127, 0, 127}).reshape({1, 3}).to(torch::kChar)},
      {"u8", torch::tensor({0, 128, 255}).to(torch::kByte)},
      {"bool", torch::tensor({true, false})},
      {"f8_e4m3", torch::tensor({1.0f, -448.0f, 0.5f}).to(torch::kFloat8_e4m3fn)},
      {"scalar", torch::tensor(3.25f)},
      {"empty", torch::zeros({0, 4})},
  };
}

const std::map<std::string, std::string> kMetadata = {
    {"tquant.format", "golden"}, {"note", "written by gen_safetensors_golden.py"}};

void expect_same_tensors(const std::map<std::string, torch::Tensor>& got,
                         const std::map<std::string, torch::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, tensor] : want) {
    ASSERT_EQ(got.count(name), 1u) << name;
    const auto& other = got.at(name);
    EXPECT_EQ(other.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_EQ(other.sizes(), tensor.sizes()) << name;
    EXPECT_TRUE(torch::equal(other.to(torch::kFloat), tensor.to(torch::kFloat))) << name;
  }
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST(Safetensors, ReadsFileWrittenByPythonSafetensors) {
  auto file = read_safetensors(kGolden + "/python_written.safetensors");
  expect_same_tensors(file.tensors, expected_tensors());
  EXPECT_EQ(file.metadata, kMetadata);
}

TEST(Safetensors, WriterOutputEqualsPythonCheckedGoldenFile) {
  const std::string golden = kGolden + "/tquant_written.safetensors";
  if (std::getenv("TQUANT_WRITE_GOLDEN") != nullptr) {
    write_safetensors(golden, expected_tensors(), kMetadata);
  }
  // gen_safetensors_golden.py opened this committed file with Python's safetensors.
  EXPECT_EQ(serialize_safetensors(expected_tensors(), kMetadata), read_bytes(golden));
}

TEST(Safetensors, RoundTripKeepsEverything) {
  const std::string path = ::testing::TempDir() + "/round_trip.safetensors";
  write_safetensors(path, expected_tensors(), kMetadata);
  auto file = read_safetensors(path);
  expect_same_tensors(file.tensors, expected_tensors());
  EXPECT_EQ(file.metadata, kMetadata);
}

TEST(Safetensors, EveryTruncationIsAClearError) {
  const auto bytes = serialize_safetensors(expected_tensors(), kMetadata);
  for (size_t length = 0; length < bytes.size(); ++length) {
    std::vector<char> cut(bytes.begin(), bytes.begin() + static_cast<int64_t>(length));
    EXPECT_THROW(parse_safetensors(cut, "cut"), c10::Error) << "length " << length;
  }
}

TEST(Safetensors, CorruptedBytesNeverCrash) {
  const auto bytes = serialize_safetensors(expected_tensors(), kMetadata);
  std::mt19937 random(7);
  int rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    auto corrupt = bytes;
    const int flips = 1 + static_cast<int>(random() % 4);
    for (int i = 0; i < flips; ++i) {
      // Mostly inside the header, where a flip changes structure rather than values.
      const size_t limit = (random() % 4 == 0) ? corrupt.size() : std::min<size_t>(corrupt.size(), 400);
      corrupt[random() % limit] ^= static_cast<char>(1 << (random() % 8));
    }
    try {
      auto file = parse_safetensors(corrupt, "corrupt");
      // Accepted: then it must be self-consistent.
      for (const auto& item : file.tensors) EXPECT_TRUE(item.second.defined());
    } catch (const c10::Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 100);
}

TEST(Safetensors, StructuralErrorsNameTheProblem) {
  auto make = [](const std::string& header, size_t data_bytes) {
    std::vector<char> bytes(8 + header.size() + data_bytes, 0);
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    std::copy(header.begin(), header.end(), bytes.begin() + 8);
    return bytes;
  };
  auto message = [&](const std::string& header, size_t data_bytes) -> std::string {
    try {
      parse_safetensors(make(header, data_bytes), "test");
    } catch (const c10::Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4)
                .find("needs 8 bytes"), std::string::npos);
  EXPECT_NE(message(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", 4)
                .find("unsupported dtype 'Q7'"), std::string::npos);
  EXPECT_NE(message(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})", 8)
                .find("overlapping"), std::string::npos);
  EXPECT_NE(message(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8)
                .find("cover 4"), std::string::npos);
  EXPECT_NE(message(R"({"a": [1, 2]})", 0).find("not an object"), std::string::npos);
  EXPECT_NE(message(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)
                .find("not a size"), std::string::npos);
  EXPECT_NE(message("{not json", 0).find("not valid JSON"), std::string::npos);
  EXPECT_THROW(read_safetensors("/nonexistent/x.safetensors"), c10::ValueError);
}
