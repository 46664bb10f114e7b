#include <gtest/gtest.h>

#include "tquant/capabilities.h"

#include <sstream>
#include <string>

#include "tquant/cuda_int8.h"
#include "tquant/int8_attention.h"
#include "tquant/tquant.h"

using namespace tquant;

TEST(Capabilities, AgreesWithTheSingleQueries) {
  const Capabilities caps = capabilities();
  const CpuFeatures& cpu = cpu_features();
  EXPECT_EQ(caps.cpu.cpu, cpu.cpu);
  EXPECT_EQ(caps.cpu.detected, cpu.detected);
  EXPECT_EQ(caps.cpu.kernels, cpu.kernels);
  EXPECT_EQ(caps.cpu.kernels, cpu_isa());
  EXPECT_EQ(caps.cpu.cap, cpu.cap);
  EXPECT_EQ(caps.cpu.onednn_int8_exact, cpu.onednn_int8_exact);
  EXPECT_EQ(caps.int8_cpu_kernels, int8_cpu_kernels_available());
  EXPECT_EQ(caps.int8_gemm_path, int8_gemm_path());
  EXPECT_EQ(caps.int8_gemm_path_reason, int8_gemm_path_reason());
  EXPECT_EQ(caps.int8_gemm_paths, int8_gemm_exact_paths());
  EXPECT_FALSE(caps.int8_gemm_paths.empty());
  EXPECT_EQ(caps.cuda_int8_built, cuda_int8_built());
  EXPECT_EQ(caps.cuda_int8_available, cuda_int8_available());
  // Available implies built.
  EXPECT_TRUE(!caps.cuda_int8_available || caps.cuda_int8_built);
}

TEST(Capabilities, ToStringNamesEveryFact) {
  const Capabilities caps = capabilities();
  const std::string text = caps.to_string();
  EXPECT_NE(text.find(caps.cpu.to_string()), std::string::npos) << text;
  EXPECT_NE(text.find("int8 gemm path: " + to_string(caps.int8_gemm_path)), std::string::npos)
      << text;
  EXPECT_NE(text.find(caps.cuda_int8_built ? "cuda int8: built" : "cuda int8: not built"),
            std::string::npos)
      << text;
  std::ostringstream stream;
  stream << caps;
  EXPECT_EQ(stream.str(), text + "\n");
}
