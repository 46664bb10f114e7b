// tquant_launch: starts a program on N local ranks the way torchrun does (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT; the store hosted here), for machines and tests without
// Python. Usage:
//   tquant_launch [--nproc-per-node N] [--threads-per-rank T] [--timeout-s S] program [args...]
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "tquant/distributed.h"

namespace {

int parse_positive(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0' || value < 1) {
    throw std::invalid_argument(flag + ": expected a positive integer, got '" + text + "'");
  }
  return static_cast<int>(value);
}

}  // namespace

int main(int argc, char** argv) {
  tquant::LaunchOptions options;
  std::vector<std::string> program;
  try {
    int i = 1;
    for (; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg.rfind("--", 0) != 0) break;
      if (i + 1 >= argc) throw std::invalid_argument(arg + ": expected a value");
      const std::string value = argv[++i];
      if (arg == "--nproc-per-node") {
        options.nproc_per_node(parse_positive(arg, value));
      } else if (arg == "--threads-per-rank") {
        options.threads_per_rank(parse_positive(arg, value));
      } else if (arg == "--timeout-s") {
        options.timeout(std::chrono::seconds(parse_positive(arg, value)));
      } else {
        throw std::invalid_argument("unknown option " + arg);
      }
    }
    for (; i < argc; ++i) program.emplace_back(argv[i]);
    if (program.empty()) throw std::invalid_argument("expected a program to start");
  } catch (const std::exception& e) {
    std::cerr << "tquant_launch: " << e.what() << "\nusage: tquant_launch [--nproc-per-node N] "
              << "[--threads-per-rank T] [--timeout-s S] program [args...]\n";
    return 2;
  }
  const auto exits = tquant::launch_local(program, options);
  int status = 0;
  for (const auto& exit : exits) {
    if (exit.exit_code != 0 || exit.timed_out) {
      std::cerr << "tquant_launch: rank " << exit.rank << " exited with " << exit.exit_code
                << (exit.timed_out ? " (killed: timeout)" : "") << " after " << exit.seconds
                << " s\n";
      status = 1;
    }
  }
  return status;
}
