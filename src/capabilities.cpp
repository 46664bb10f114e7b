#include "tquant/capabilities.h"

#include <sstream>

#include "tquant/cuda_int8.h"
#include "tquant/int8_attention.h"

namespace tquant {

Capabilities capabilities() {
  Capabilities result;
  result.cpu = cpu_features();
  result.int8_cpu_kernels = int8_cpu_kernels_available();
  result.int8_gemm_path = int8_gemm_path();
  result.int8_gemm_path_reason = int8_gemm_path_reason();
  result.int8_gemm_paths = int8_gemm_exact_paths();
  result.cuda_int8_built = cuda_int8_built();
  result.cuda_int8_available = cuda_int8_available();
  return result;
}

std::string Capabilities::to_string() const {
  std::ostringstream out;
  out << cpu.to_string() << "\n"
      << "int8 cpu kernels (VNNI): " << (int8_cpu_kernels ? "yes" : "no (exact _ref twins)")
      << "\n"
      << "int8 gemm path: " << tquant::to_string(int8_gemm_path) << " (" << int8_gemm_path_reason
      << ")\n"
      << "int8 gemm exact paths:";
  for (Int8GemmPath path : int8_gemm_paths) out << " " << tquant::to_string(path);
  out << "\n"
      << "cuda int8: " << (cuda_int8_built ? "built" : "not built") << ", "
      << (cuda_int8_available ? "available" : "no device");
  return out.str();
}

std::ostream& operator<<(std::ostream& stream, const Capabilities& capabilities) {
  return stream << capabilities.to_string() << '\n';
}

}  // namespace tquant
