#include "tquant/report.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

namespace tquant {

namespace {

/// Left-aligned text table with a header row and a rule under it.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.size() == 1; }

  void print(std::ostream& out) const {
    std::vector<size_t> widths;
    for (const auto& row : rows_) {
      widths.resize(std::max(widths.size(), row.size()), 0);
      for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
    }
    for (size_t r = 0; r < rows_.size(); ++r) {
      print_row(out, rows_[r], widths);
      if (r == 0) {
        std::vector<std::string> rule;
        for (size_t width : widths) rule.emplace_back(width, '-');
        print_row(out, rule, widths);
      }
    }
    out << '\n';  // a blank line between tables
  }

 private:
  static void print_row(std::ostream& out, const std::vector<std::string>& row,
                        const std::vector<size_t>& widths) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(widths[c] - row[c].size() + 2, ' ');
    }
    out << line << '\n';
  }

  std::vector<std::vector<std::string>> rows_;
};

std::string display_name(const std::string& name) { return name.empty() ? "<root>" : name; }

std::string number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", value);
  return buffer;
}

std::string range(double low, double high) {
  if (low == high) return number(low);
  return "[" + number(low) + ", " + number(high) + "]";
}

void print_float_table(std::ostream& out, const std::vector<FloatModule>& modules) {
  if (modules.empty()) return;
  Table table({"left float", "type", "reason", "detail"});
  for (const auto& module : modules) {
    table.add({display_name(module.name), module.type, to_string(module.reason), module.detail});
  }
  table.print(out);
}

/// "4 float (1 unreachable, 3 no twin)".
std::string float_summary(const std::vector<FloatModule>& modules) {
  std::map<std::string, int64_t> counts;
  for (const auto& module : modules) ++counts[to_string(module.reason)];
  std::string text = std::to_string(modules.size()) + " float";
  if (!counts.empty()) {
    text += " (";
    bool first = true;
    for (const auto& [reason, count] : counts) {
      if (!first) text += ", ";
      text += std::to_string(count) + " " + reason;
      first = false;
    }
    text += ")";
  }
  return text;
}

}  // namespace

std::string to_string(FloatReason reason) {
  switch (reason) {
    case FloatReason::kNotSelected:
      return "not selected";
    case FloatReason::kSkipped:
      return "skipped";
    case FloatReason::kUnreachable:
      return "unreachable";
    case FloatReason::kNoTwin:
      return "no twin";
    case FloatReason::kContainerNotUpdated:
      return "container not updated";
    case FloatReason::kDisabled:
      return "disabled";
    case FloatReason::kNotCalibrated:
      return "not calibrated";
  }
  return "unknown";
}

const QuantizedModule* PrepareReport::find_quantized(const std::string& name) const {
  for (const auto& module : quantized) {
    if (module.name == name) return &module;
  }
  return nullptr;
}

const FloatModule* PrepareReport::find_float(const std::string& name) const {
  for (const auto& module : left_float) {
    if (module.name == name) return &module;
  }
  return nullptr;
}

std::vector<FloatModule> PrepareReport::left_float_with(FloatReason reason) const {
  std::vector<FloatModule> result;
  for (const auto& module : left_float) {
    if (module.reason == reason) result.push_back(module);
  }
  return result;
}

std::string PrepareReport::to_string() const {
  std::ostringstream out;
  if (!quantized.empty()) {
    Table table({"module", "type", "mode", "scheme", "rule"});
    for (const auto& module : quantized) {
      table.add({display_name(module.name), module.type, tquant::to_string(module.mode),
                 module.scheme, module.rule});
    }
    table.print(out);
  }
  int64_t will_not_convert = 0;
  for (const auto& module : quantized) will_not_convert += module.convert_note.empty() ? 0 : 1;
  if (will_not_convert > 0) {
    Table table({"convert will keep simulating", "why"});
    for (const auto& module : quantized) {
      if (!module.convert_note.empty()) table.add({display_name(module.name), module.convert_note});
    }
    table.print(out);
  }
  if (!replaced.empty()) {
    Table table({"replaced in container", "from", "to"});
    for (const auto& module : replaced) table.add({module.name, module.from, module.to});
    table.print(out);
  }
  print_float_table(out, left_float);
  out << "prepare: " << quantized.size() << " quantized (" << replaced.size()
      << " replaced in containers";
  if (will_not_convert > 0) out << ", " << will_not_convert << " that convert will not lower";
  out << "), " << float_summary(left_float) << '\n';
  return out.str();
}

const QuantizerReport* CalibrationReport::find_quantizer(const std::string& quantizer_name) const {
  for (const auto& quantizer : quantizers) {
    if (quantizer.name == quantizer_name) return &quantizer;
  }
  return nullptr;
}

std::string CalibrationReport::to_string() const {
  std::ostringstream out;
  int64_t calibrated = 0;
  if (!quantizers.empty()) {
    Table table({"quantizer", "spec", "scale", "amax", "observer"});
    for (const auto& quantizer : quantizers) {
      if (quantizer.calibrated) ++calibrated;
      table.add({quantizer.name, quantizer.spec,
                 quantizer.calibrated ? range(quantizer.scale_min, quantizer.scale_max) : "-",
                 quantizer.calibrated ? range(quantizer.amax_min, quantizer.amax_max) : "-",
                 quantizer.observer});
    }
    table.print(out);
  }
  print_float_table(out, left_float);
  out << "calibrate: " << calibrated << " of " << quantizers.size() << " quantizers calibrated";
  if (batches > 0) out << " over " << batches << " batches";
  out << ", " << float_summary(left_float) << '\n';
  return out.str();
}

const ConvertedModule* ConvertReport::find_converted(const std::string& name) const {
  for (const auto& module : converted) {
    if (module.name == name) return &module;
  }
  return nullptr;
}

const UnconvertedModule* ConvertReport::find_unconverted(const std::string& name) const {
  for (const auto& module : unconverted) {
    if (module.name == name) return &module;
  }
  return nullptr;
}

const FloatModule* ConvertReport::find_float(const std::string& name) const {
  for (const auto& module : left_float) {
    if (module.name == name) return &module;
  }
  return nullptr;
}

std::string ConvertReport::to_string() const {
  std::ostringstream out;
  if (!converted.empty()) {
    Table table({"converted", "type", "scheme", "backend"});
    for (const auto& module : converted) {
      table.add({display_name(module.name), module.type, module.scheme, module.backend});
    }
    table.print(out);
  }
  if (!already_converted.empty()) {
    Table table({"already converted", "type", "scheme", "backend"});
    for (const auto& module : already_converted) {
      table.add({display_name(module.name), module.type, module.scheme, module.backend});
    }
    table.print(out);
  }
  int64_t simulated = 0;
  if (!unconverted.empty()) {
    Table table({"not converted", "type", "keeps mode", "reason"});
    for (const auto& module : unconverted) {
      if (module.mode != QuantMode::kFloat) ++simulated;
      table.add({display_name(module.name), module.type, tquant::to_string(module.mode),
                 module.reason});
    }
    table.print(out);
  }
  print_float_table(out, left_float);
  out << "convert: " << converted.size() << " converted, ";
  if (!already_converted.empty()) out << already_converted.size() << " already converted, ";
  out << simulated
      << " kept fake-quant (simulated), "
      << static_cast<int64_t>(unconverted.size()) - simulated << " disabled float, "
      << float_summary(left_float) << '\n';
  return out.str();
}

std::ostream& operator<<(std::ostream& stream, const ConvertReport& report) {
  return stream << report.to_string();
}

std::ostream& operator<<(std::ostream& stream, const PrepareReport& report) {
  return stream << report.to_string();
}

std::ostream& operator<<(std::ostream& stream, const CalibrationReport& report) {
  return stream << report.to_string();
}

}  // namespace tquant
