#include "tquant/distributed.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

extern char** environ;

namespace tquant {

namespace {

constexpr const char* kWhat = "tquant::launch_local";

/// The environment of one rank: ours, minus the variables we set, plus them.
std::vector<std::string> rank_environment(const std::vector<std::pair<std::string, std::string>>& set) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    bool overridden = false;
    for (const auto& [name, value] : set) {
      if (entry.rfind(name + "=", 0) == 0) overridden = true;
    }
    if (!overridden) env.push_back(entry);
  }
  for (const auto& [name, value] : set) env.push_back(name + "=" + value);
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

}  // namespace

std::vector<RankExit> launch_local(const std::vector<std::string>& argv,
                                   const LaunchOptions& options) {
  TORCH_CHECK_VALUE(!argv.empty(), kWhat, ": expected a program to start, got an empty argv");
  TORCH_CHECK_VALUE(options.nproc_per_node() >= 1, kWhat, ": expected nproc_per_node >= 1, got ",
                    options.nproc_per_node());
  TORCH_CHECK_VALUE(options.timeout().count() > 0, kWhat, ": expected a positive timeout, got ",
                    options.timeout().count(), " ms");
  // The store binds a free port now, before any rank starts: no find-a-free-port race.
  c10d::TCPStoreOptions store_options;
  store_options.port = 0;
  store_options.isServer = true;
  store_options.numWorkers = options.nproc_per_node();
  store_options.waitWorkers = false;
  store_options.timeout = options.timeout();
  auto store = c10::make_intrusive<c10d::TCPStore>(options.master_addr(), store_options);
  const std::string port = std::to_string(store->getPort());

  // Everything the children need is built before fork: after fork, only exec.
  std::vector<std::string> args = argv;
  auto arg_pointers = pointers(args);
  std::vector<std::vector<std::string>> envs;
  std::vector<std::vector<char*>> env_pointers;
  for (int rank = 0; rank < options.nproc_per_node(); ++rank) {
    std::vector<std::pair<std::string, std::string>> set = {
        {"RANK", std::to_string(rank)},
        {"LOCAL_RANK", std::to_string(rank)},
        {"GROUP_RANK", "0"},
        {"WORLD_SIZE", std::to_string(options.nproc_per_node())},
        {"LOCAL_WORLD_SIZE", std::to_string(options.nproc_per_node())},
        {"MASTER_ADDR", options.master_addr()},
        {"MASTER_PORT", port},
        {"TORCHELASTIC_USE_AGENT_STORE", "True"},
        {"TORCHELASTIC_RESTART_COUNT", "0"}};
    if (options.threads_per_rank() > 0) {
      set.emplace_back("OMP_NUM_THREADS", std::to_string(options.threads_per_rank()));
    }
    for (const auto& extra : options.env()) set.push_back(extra);
    envs.push_back(rank_environment(set));
  }
  for (auto& env : envs) env_pointers.push_back(pointers(env));

  const auto start = std::chrono::steady_clock::now();
  std::vector<pid_t> pids;
  for (int rank = 0; rank < options.nproc_per_node(); ++rank) {
    const pid_t pid = fork();
    if (pid == 0) {
      execve(arg_pointers[0], arg_pointers.data(), env_pointers[rank].data());
      _exit(127);
    }
    if (pid < 0) {
      const int error = errno;
      for (pid_t started : pids) kill(started, SIGKILL);
      for (pid_t started : pids) waitpid(started, nullptr, 0);
      TORCH_CHECK(false, kWhat, ": fork of rank ", rank, " failed: ", std::strerror(error));
    }
    pids.push_back(pid);
  }

  std::vector<RankExit> exits(options.nproc_per_node());
  int running = options.nproc_per_node();
  for (int rank = 0; rank < options.nproc_per_node(); ++rank) exits[rank].rank = rank;
  std::vector<bool> done(options.nproc_per_node(), false);
  while (running > 0) {
    const auto elapsed = std::chrono::steady_clock::now() - start;
    const bool late = elapsed > options.timeout();
    for (int rank = 0; rank < options.nproc_per_node(); ++rank) {
      if (done[rank]) continue;
      if (late) kill(pids[rank], SIGKILL);
      int status = 0;
      const pid_t finished = waitpid(pids[rank], &status, late ? 0 : WNOHANG);
      if (finished != pids[rank]) continue;
      done[rank] = true;
      --running;
      exits[rank].timed_out = late;
      exits[rank].seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      exits[rank].exit_code = WIFEXITED(status) ? WEXITSTATUS(status)
                                                : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    if (running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exits;
}

}  // namespace tquant
