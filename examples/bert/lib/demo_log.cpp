#include "demo_log.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "tquant/nn/quantizable.h"

namespace bert {

void say(const std::string& text) { std::cerr << "== " << text << std::endl; }

std::string fixed(double value, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", digits, value);
  return buffer;
}

std::string scientific(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}

std::string points(double fraction_delta) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%+.2f pt", fraction_delta * 100.0);
  return buffer;
}

std::string last_line(const std::string& text) {
  std::string trimmed = text;
  while (!trimmed.empty() && trimmed.back() == '\n') trimmed.pop_back();
  const auto pos = trimmed.rfind('\n');
  return pos == std::string::npos ? trimmed : trimmed.substr(pos + 1);
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  if (!(in >> one)) return "unknown";
  return one;
}

std::string mode_summary(torch::nn::Module& model) {
  std::map<std::string, int> counts;
  for (const auto& item : model.named_modules()) {
    if (auto* q = tquant::as_quantizable(*item.value())) {
      counts[q->quant_type_name() + " " + tquant::to_string(q->mode())]++;
    }
  }
  std::ostringstream out;
  bool first = true;
  for (const auto& [what, n] : counts) {
    out << (first ? "" : ", ") << n << " " << what;
    first = false;
  }
  return out.str();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace bert
