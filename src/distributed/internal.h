#pragma once

// Internal to src/distributed: building c10d backends. Each builder lives in its own
// translation unit, so the headers with third-party includes (ProcessGroupGloo.hpp needs
// <gloo/...>, ProcessGroupNCCL.hpp needs <nccl.h>) are included in exactly one file each.

#include <chrono>
#include <string>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace tquant::detail {

/// Where a Gloo backend binds: an interface name or a host name / address.
struct GlooAddress {
  std::string interface;  ///< used when not empty
  std::string hostname;   ///< otherwise; empty: this host's name, falling back to loopback
};

/// A c10d::ProcessGroupGloo over `store` (gloo_backend.cpp, the only file that includes
/// ProcessGroupGloo.hpp). Throws naming the reason when tquant was built without gloo headers.
c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int size,
                                                    std::chrono::milliseconds timeout,
                                                    const GlooAddress& address);

/// A c10d::ProcessGroupNCCL over `store` for the current CUDA device (nccl_backend.cpp, compiled
/// only in CUDA builds; elsewhere a stub that throws).
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int size,
                                                    std::chrono::milliseconds timeout);

}  // namespace tquant::detail
