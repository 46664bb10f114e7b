// The only translation unit that includes ProcessGroupGloo.hpp (docs/distributed.md, "Gloo
// headers"). The wheel compiles Gloo into libtorch_cpu but ships no <gloo/...> headers; the
// header's declarations are completed by Debian's libgloo-dev (a 2022 snapshot). That is sound
// here because this file only
//   - builds ProcessGroupGloo::Options (inline create(); members: a vector of shared_ptr to
//     gloo devices and an int, whose layout does not depend on gloo's classes),
//   - calls createDeviceForHostname / createDeviceForInterface and the ProcessGroupGloo
//     constructor, all defined in libtorch_cpu, and
//   - never instantiates anything gloo defines inline (GlooStore, gloo::Context methods), whose
//     layout or vtable could differ between the snapshot and the gloo inside the wheel.
// The static_asserts below pin the two sizes this file allocates with to the sizes libtorch_cpu
// itself allocates (torch 2.11.0, x86-64: `new` of 0x1e8 bytes in ProcessGroupGloo::merge and
// of 0xb0 bytes in Options::create_default, read with objdump).
#include "internal.h"

#include <c10/util/Exception.h>
#include <torch/version.h>

#ifdef TQUANT_HAVE_GLOO_HEADERS
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

namespace tquant::detail {

#ifdef TQUANT_HAVE_GLOO_HEADERS

#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 11 && defined(__x86_64__)
static_assert(sizeof(c10d::ProcessGroupGloo) == 0x1e8,
              "ProcessGroupGloo's size differs from libtorch_cpu's: gloo headers do not match");
static_assert(sizeof(c10d::ProcessGroupGloo::Options) == 0xb0,
              "ProcessGroupGloo::Options' size differs from libtorch_cpu's");
#endif

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int size,
                                                    std::chrono::milliseconds timeout,
                                                    const GlooAddress& address) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // Options::create() has no device and the constructor would throw "No device(s) specified".
  if (!address.interface.empty()) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(address.interface));
  } else if (!address.hostname.empty()) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(address.hostname));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  // One worker thread: tquant waits for each collective before issuing the next.
  options->threads = 1;
  auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  // Read back through this file's view of the layout: a mismatch would show here.
  TORCH_INTERNAL_ASSERT(backend->getNumThreads() == 1 && backend->getOptions()->timeout == timeout,
                        "ProcessGroupGloo layout mismatch between libgloo-dev and libtorch_cpu");
  return backend;
}

#else

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>&, int,
                                                    int, std::chrono::milliseconds,
                                                    const GlooAddress&) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "tquant was built without gloo headers (Debian package "
                              "libgloo-dev), so it cannot build a Gloo group itself; install "
                              "libgloo-dev and rebuild, or pass your own c10d group");
}

#endif

}  // namespace tquant::detail
