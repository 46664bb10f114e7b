#include "tquant/distributed.h"

#include <atomic>
#include <cstdlib>
#include <limits>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "internal.h"

namespace tquant {

namespace {

constexpr const char* kWhat = "tquant::process_group_from_env";

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

int64_t env_int(const char* name, int64_t lo, int64_t hi, std::optional<int64_t> fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    TORCH_CHECK_VALUE(fallback.has_value(), kWhat, ": expected the environment variable ", name,
                      " (set by torchrun or tquant::launch_local), got none");
    return *fallback;
  }
  char* end = nullptr;
  const long long parsed = std::strtoll(value, &end, 10);
  TORCH_CHECK_VALUE(end != value && *end == '\0' && parsed >= lo && parsed <= hi, kWhat,
                    ": expected ", name, " to be an integer in [", lo, ", ", hi, "], got '",
                    value, "'");
  return parsed;
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

std::atomic<int> groups_built{0};

}  // namespace

EnvProcessGroup process_group_from_env(const ProcessGroupOptions& options) {
  const int world = static_cast<int>(env_int("WORLD_SIZE", 1, 1 << 20, std::nullopt));
  const int rank = static_cast<int>(env_int("RANK", 0, world - 1, std::nullopt));
  const int local_rank = static_cast<int>(env_int("LOCAL_RANK", 0, 1 << 20, rank));
  const std::string master_addr = env_or("MASTER_ADDR", "");
  TORCH_CHECK_VALUE(!master_addr.empty(), kWhat, ": expected MASTER_ADDR (set by torchrun or "
                    "tquant::launch_local), got none");
  const auto port = static_cast<uint16_t>(
      env_int("MASTER_PORT", 1, std::numeric_limits<uint16_t>::max(), std::nullopt));
  TORCH_CHECK_VALUE(options.timeout().count() > 0, kWhat, ": expected a positive timeout, got ",
                    options.timeout().count(), " ms");

  // torchrun's agent (and launch_local) host the store and say so; otherwise rank 0 hosts it,
  // as torch.distributed's env:// rendezvous does.
  const bool agent_store = env_or("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
  c10d::TCPStoreOptions store_options;
  store_options.port = port;
  store_options.isServer = !agent_store && rank == 0;
  store_options.numWorkers = world;
  store_options.waitWorkers = false;
  store_options.multiTenant = !agent_store;
  store_options.timeout = options.timeout();
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(master_addr, store_options);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, kWhat, ": rank ", rank, " could not reach the store at ", master_addr, ":",
                port, " within ", options.timeout().count(), " ms: ", e.what_without_backtrace());
  }

  const int serial = groups_built.fetch_add(1);
  const std::string name = options.name().empty() ? "pg" + std::to_string(serial) : options.name();
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("tquant/" + name, store);

  detail::GlooAddress address;
  address.hostname = options.gloo_hostname();
  if (address.hostname.empty()) {
    address.interface = env_or("GLOO_SOCKET_IFNAME", "");
    if (address.interface.empty() && is_loopback(master_addr)) address.hostname = "127.0.0.1";
  }
  auto group = c10::make_intrusive<c10d::ProcessGroup>(prefixed, rank, world);
  c10::Device device = c10::kCPU;
  try {
    auto gloo = detail::make_gloo_backend(
        c10::make_intrusive<c10d::PrefixStore>("gloo", prefixed), rank, world, options.timeout(),
        address);
    group->setBackend(c10::kCPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    if (options.device_type() == c10::kCUDA) {
      device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
      auto nccl = detail::make_nccl_backend(
          c10::make_intrusive<c10d::PrefixStore>("nccl", prefixed), rank, world,
          options.timeout());
      group->setBackend(c10::kCUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
      group->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
    } else {
      TORCH_CHECK_VALUE(options.device_type() == c10::kCPU, kWhat,
                        ": expected device_type CPU (Gloo) or CUDA (NCCL), got ",
                        options.device_type());
    }
  } catch (const c10::NotImplementedError&) {
    throw;  // built without gloo headers / NCCL: that error says what to do
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, kWhat, ": rank ", rank, " of ", world, " could not build group '", name,
                "' within ", options.timeout().count(), " ms (a rank never arrived?): ",
                e.what_without_backtrace());
  }

  EnvProcessGroup result{store, group, DistributedGroup(group, options.timeout(), device), rank,
                         world, local_rank};
  return result;
}

}  // namespace tquant
