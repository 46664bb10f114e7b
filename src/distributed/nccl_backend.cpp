// The only translation unit that includes ProcessGroupNCCL.hpp; compiled with the venv's
// nvidia/nccl headers in CUDA builds only (TQUANT_HAVE_NCCL). Its NCCL path runs only on a
// machine with a GPU; the CPU test machines never reach it.
#include "internal.h"

#include <c10/util/Exception.h>

#ifdef TQUANT_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace tquant::detail {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int size,
                                                    std::chrono::milliseconds timeout) {
#ifdef TQUANT_HAVE_NCCL
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
#else
  (void)store;
  (void)rank;
  (void)size;
  (void)timeout;
  TORCH_CHECK_NOT_IMPLEMENTED(false, "tquant was built without CUDA / NCCL; an NCCL group needs "
                              "a CUDA build of tquant (use device_type kCPU for Gloo)");
#endif
}

}  // namespace tquant::detail
