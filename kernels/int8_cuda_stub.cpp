// Entry points of tquant/cuda_int8.h for a build without the CUDA kernels: they exist, so code
// that calls them links, and fail with one clear error. The reference twins (int8_ref.cpp) and
// the plain helpers (int8_common.cpp) are compiled in every build.

#include "tquant/cuda_int8.h"

#include <c10/util/Exception.h>

namespace tquant {

namespace {

[[noreturn]] void no_cuda(const char* op) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, op,
                              ": tquant was built without CUDA kernels (configure with nvcc on "
                              "PATH, a CUDA LibTorch and -DTQUANT_WITH_CUDA=ON); the CPU path is "
                              "tquant/gemm.h, and the *_cuda_ref twins run on any device");
  throw;  // unreachable: TORCH_CHECK_NOT_IMPLEMENTED(false, ...) always throws
}

}  // namespace

bool cuda_int8_built() { return false; }
bool cuda_int8_available() { return false; }
size_t detail::int8_gemm_heuristic_queries() { return 0; }
CudaLibraryVersions cuda_library_versions() { return {}; }
void check_cublaslt_version() {}  // no cuBLASLt in this build: nothing to check

at::Tensor int8_gemm_cuda(const at::Tensor&, const at::Tensor&) { no_cuda("int8_gemm_cuda"); }
at::Tensor int8_bmm_cuda(const at::Tensor&, const at::Tensor&) { no_cuda("int8_bmm_cuda"); }
at::Tensor quantize_per_tensor_int8_cuda(const at::Tensor&, double) {
  no_cuda("quantize_per_tensor_int8_cuda");
}
std::pair<at::Tensor, at::Tensor> quantize_per_token_int8_cuda(const at::Tensor&) {
  no_cuda("quantize_per_token_int8_cuda");
}
at::Tensor dequantize_int32_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const std::optional<at::Tensor>&, bool, at::ScalarType) {
  no_cuda("dequantize_int32_cuda");
}
at::Tensor requantize_int32_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const std::optional<at::Tensor>&, double, bool) {
  no_cuda("requantize_int32_cuda");
}
at::Tensor int8_linear_cuda(const at::Tensor&, std::optional<double>, const at::Tensor&,
                            const at::Tensor&, const std::optional<at::Tensor>&, bool) {
  no_cuda("int8_linear_cuda");
}

}  // namespace tquant
