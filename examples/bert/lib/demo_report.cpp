#include "demo_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "tquant/fake_quantize.h"
#include "tquant/histogram_observer.h"

namespace bert {
namespace {

std::string percent(double fraction) {
  if (std::isnan(fraction)) return "-";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.2f", fraction * 100.0);
  return buffer;
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string fmt(double value, int precision = 4) {
  std::ostringstream out;
  out << std::setprecision(precision) << value;
  return out.str();
}

// Colours of the calibrators' lines, in choice order.
const char* kLineColours[] = {"#d62728", "#ff7f0e", "#bcbd22", "#2ca02c", "#17becf",
                              "#1f77b4", "#9467bd", "#e377c2", "#8c564b", "#7f7f7f"};

const char* line_colour(size_t i) { return kLineColours[i % (sizeof(kLineColours) / sizeof(*kLineColours))]; }

}  // namespace

// ---------------------------------------------------------------------------------------------
std::string format_results(const DemoResults& results) {
  std::ostringstream out;
  size_t w_stage = 6, w_setting = 7;
  for (const auto& row : results.rows) {
    w_stage = std::max(w_stage, row.stage.size());
    w_setting = std::max(w_setting, row.setting.size());
  }
  out << "Results (" << results.mode << " run; accuracy in %, choices made on validation)\n";
  out << std::left << std::setw(w_stage + 2) << "stage" << std::setw(w_setting + 2) << "setting"
      << std::right << std::setw(10) << "val acc" << std::setw(10) << "test acc" << "  note\n";
  out << std::string(w_stage + w_setting + 26, '-') << "\n";
  for (const auto& row : results.rows) {
    out << std::left << std::setw(w_stage + 2) << row.stage << std::setw(w_setting + 2)
        << row.setting << std::right << std::setw(10) << percent(row.validation) << std::setw(10)
        << percent(row.test) << "  " << row.note << "\n";
  }
  out << "\nMeasurements\n";
  for (const auto& [name, value] : results.measurements) out << "  " << name << ": " << value << "\n";
  out << "\nGoals\n";
  for (const auto& goal : results.goals) {
    out << "  [" << (goal.met ? "met   " : "missed") << "] " << goal.goal << " (target "
        << goal.target << "): " << goal.measured << "\n";
  }
  if (!results.notes.empty()) {
    out << "\nNotes\n";
    for (const auto& note : results.notes) out << "  " << note << "\n";
  }
  out << "\nDurations\n";
  for (const auto& [step, seconds] : results.durations) {
    out << "  " << step << ": " << fmt(seconds, 4) << " s\n";
  }
  return out.str();
}

std::string results_markdown(const DemoResults& results) {
  std::ostringstream out;
  out << "## Results (" << results.mode << " run)\n\n";
  out << "```\n" << results.settings << "\n" << results.machine << "\n```\n\n";
  out << "Accuracy in %; every choice is made on the validation split, test is only reported.\n\n";
  out << "| stage | setting | validation | test | note |\n|---|---|---:|---:|---|\n";
  for (const auto& row : results.rows) {
    out << "| " << row.stage << " | " << row.setting << " | " << percent(row.validation) << " | "
        << percent(row.test) << " | " << row.note << " |\n";
  }
  out << "\n| measurement | value |\n|---|---|\n";
  for (const auto& [name, value] : results.measurements) out << "| " << name << " | " << value << " |\n";
  out << "\n| goal | target | measured | |\n|---|---|---|---|\n";
  for (const auto& goal : results.goals) {
    out << "| " << goal.goal << " | " << goal.target << " | " << goal.measured << " | "
        << (goal.met ? "met" : "**missed**") << " |\n";
  }
  if (!results.notes.empty()) {
    out << "\n";
    for (const auto& note : results.notes) out << "- " << note << "\n";
  }
  out << "\n| step | seconds |\n|---|---:|\n";
  for (const auto& [step, seconds] : results.durations) out << "| " << step << " | " << fmt(seconds, 4) << " |\n";
  return out.str();
}

std::string results_json(const DemoResults& results) {
  auto number = [](double v) -> nlohmann::json {
    return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v);
  };
  nlohmann::json j;
  j["mode"] = results.mode;
  j["settings"] = results.settings;
  j["machine"] = results.machine;
  j["rows"] = nlohmann::json::array();
  for (const auto& row : results.rows) {
    j["rows"].push_back({{"stage", row.stage}, {"setting", row.setting},
                         {"validation_accuracy", number(row.validation)},
                         {"test_accuracy", number(row.test)}, {"note", row.note}});
  }
  j["goals"] = nlohmann::json::array();
  for (const auto& goal : results.goals) {
    j["goals"].push_back({{"goal", goal.goal}, {"target", goal.target},
                          {"measured", goal.measured}, {"met", goal.met}});
  }
  j["measurements"] = nlohmann::json::object();
  for (const auto& [name, value] : results.measurements) j["measurements"][name] = value;
  j["durations_s"] = nlohmann::json::object();
  for (const auto& [step, seconds] : results.durations) j["durations_s"][step] = seconds;
  j["notes"] = results.notes;
  return j.dump(2) + "\n";
}

// ---------------------------------------------------------------------------------------------
std::vector<QuantizerHistogram> collect_histograms(torch::nn::Module& model,
                                                   const std::vector<RangeChoice>& choices) {
  std::vector<QuantizerHistogram> out;
  for (const auto& item : model.named_modules()) {
    auto* quantizer = dynamic_cast<tquant::FakeQuantizeImpl*>(item.value().get());
    if (quantizer == nullptr || !quantizer->observer) continue;
    auto* observer = dynamic_cast<tquant::HistogramObserverImpl*>(quantizer->observer.get());
    if (observer == nullptr || !observer->has_data() || observer->counts.size(0) != 1) continue;
    QuantizerHistogram h;
    h.name = item.key();
    const at::Tensor counts = observer->counts.reshape({-1}).to(torch::kFloat64).contiguous();
    h.counts.assign(counts.data_ptr<double>(), counts.data_ptr<double>() + counts.numel());
    h.bin_width = observer->bin_width.reshape({-1})[0].item<double>();
    h.abs_max = observer->abs_max().item<double>();
    for (const auto& choice : choices) {
      const double amax =
          observer
              ->compute_amax(choice.method,
                             tquant::RangeSearchOptions(observer->options.search())
                                 .percentile(choice.percentile))
              .item<double>();
      h.amax.emplace_back(choice.label, amax);
    }
    out.push_back(std::move(h));
  }
  return out;
}

namespace {

// One histogram as an inline SVG: bars of log10(1 + count) over at most 240 merged bins, the
// x axis from 0 to the histogram's end, one vertical line per calibrator.
std::string histogram_svg(const QuantizerHistogram& h, const std::vector<RangeChoice>& choices,
                          const std::string& chosen_label) {
  const double width = 720, height = 170, left = 46, right = 10, top = 8, bottom = 34;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  const size_t bins = h.counts.size();
  const size_t bars = std::min<size_t>(240, std::max<size_t>(1, bins));
  const size_t per_bar = (bins + bars - 1) / bars;
  const double x_end = static_cast<double>(bins) * h.bin_width;
  std::vector<double> merged((bins + per_bar - 1) / per_bar, 0.0);
  for (size_t i = 0; i < bins; ++i) merged[i / per_bar] += h.counts[i];
  double peak = 0.0;
  for (double c : merged) peak = std::max(peak, std::log10(1.0 + c));
  if (peak <= 0.0) peak = 1.0;

  // Legend entries (one per calibrator) laid out first, wrapped onto as many rows as needed.
  constexpr double kCharWidth = 6.2, kLegendRow = 13;
  std::vector<std::string> legend_texts;
  std::vector<std::pair<double, int>> legend_at;  // x, row
  {
    double x = left;
    int row = 0;
    for (const auto& [label, amax] : h.amax) {
      legend_texts.push_back(label + " " + fmt(amax, 3) + (label == chosen_label ? " (chosen)" : ""));
      const double text_w = kCharWidth * static_cast<double>(legend_texts.back().size());
      if (x > left && x + text_w > width - right) {
        x = left;
        ++row;
      }
      legend_at.emplace_back(x, row);
      x += text_w + 10;
    }
  }
  const int legend_rows = legend_at.empty() ? 1 : legend_at.back().second + 1;
  const double total_height = height + kLegendRow * (legend_rows - 1);

  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='"
      << total_height << "' viewBox='0 0 " << width << " " << total_height << "'>";
  svg << "<rect x='" << left << "' y='" << top << "' width='" << plot_w << "' height='" << plot_h
      << "' fill='#fafafa' stroke='#ccc'/>";
  const double bar_w = plot_w / static_cast<double>(merged.size());
  for (size_t i = 0; i < merged.size(); ++i) {
    if (merged[i] <= 0.0) continue;
    const double bar_h = std::log10(1.0 + merged[i]) / peak * plot_h;
    svg << "<rect x='" << fmt(left + bar_w * i, 6) << "' y='" << fmt(top + plot_h - bar_h, 6)
        << "' width='" << fmt(std::max(bar_w - 0.3, 0.5), 4) << "' height='" << fmt(bar_h, 6)
        << "' fill='#6b8fb3'/>";
  }
  // Axes labels: 0, the end of the histogram, log-count peak.
  svg << "<text x='" << left << "' y='" << height - bottom + 13
      << "' font-size='10' text-anchor='middle'>0</text>";
  svg << "<text x='" << left + plot_w << "' y='" << height - bottom + 13
      << "' font-size='10' text-anchor='end'>" << fmt(x_end, 4) << "</text>";
  svg << "<text x='" << left + plot_w / 2 << "' y='" << height - bottom + 13
      << "' font-size='10' text-anchor='middle'>|x|</text>";
  svg << "<text x='" << left - 4 << "' y='" << top + 9
      << "' font-size='10' text-anchor='end'>1e" << fmt(peak, 2) << "</text>";
  svg << "<text x='" << left - 4 << "' y='" << top + plot_h
      << "' font-size='10' text-anchor='end'>1</text>";
  // Calibrators' ranges, with the legend below the axis.
  for (size_t i = 0; i < h.amax.size(); ++i) {
    const auto& [label, amax] = h.amax[i];
    const double x = left + std::min(amax / std::max(x_end, 1e-30), 1.0) * plot_w;
    const bool chosen = label == chosen_label;
    svg << "<line x1='" << fmt(x, 6) << "' x2='" << fmt(x, 6) << "' y1='" << top << "' y2='"
        << top + plot_h << "' stroke='" << line_colour(i) << "' stroke-width='"
        << (chosen ? 2.5 : 1.2) << "'" << (chosen ? "" : " stroke-dasharray='4 2'") << ">"
        << "<title>" << html_escape(label) << ": amax " << fmt(amax, 5) << "</title></line>";
    svg << "<text x='" << fmt(legend_at[i].first, 6) << "' y='"
        << height - 6 + kLegendRow * legend_at[i].second << "' font-size='10' fill='"
        << line_colour(i) << "'" << (chosen ? " font-weight='bold'" : "") << ">"
        << html_escape(legend_texts[i]) << "</text>";
  }
  (void)choices;
  svg << "</svg>";
  return svg.str();
}

std::string sensitivity_svg(const std::vector<SensitivityBar>& bars, const std::string& unit) {
  const double row_h = 18, label_w = 300, plot_w = 380, top = 40;
  const double height = top + row_h * static_cast<double>(bars.size()) + 30;
  double extent = 0.1;
  for (const auto& b : bars) {
    extent = std::max({extent, std::abs(b.recovery_when_float), std::abs(b.drop_when_quantized)});
  }
  // Bars start at zero in the middle of the plot: negative values (noise) go left.
  const double zero_x = label_w + plot_w / 2;
  const double scale = (plot_w / 2 - 10) / extent;
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << label_w + plot_w + 20
      << "' height='" << height << "'>";
  svg << "<text x='10' y='14' font-size='11'>"
      << "<tspan fill='#1f77b4'>&#9632; recovery when only this group is float</tspan>"
      << "<tspan dx='12' fill='#ff7f0e'>&#9632; drop when only this group is quantized</tspan>"
      << "</text><text x='10' y='28' font-size='11'>(" << html_escape(unit) << ")</text>";
  svg << "<line x1='" << zero_x << "' x2='" << zero_x << "' y1='" << top - 4 << "' y2='"
      << height - 26 << "' stroke='#999'/>";
  for (size_t i = 0; i < bars.size(); ++i) {
    const auto& b = bars[i];
    const double y = top + row_h * static_cast<double>(i);
    svg << "<text x='" << label_w - 6 << "' y='" << y + 12 << "' font-size='11' text-anchor='end'"
        << (b.kept_float ? " font-weight='bold'" : "") << ">" << html_escape(b.group)
        << (b.kept_float ? " (float)" : "") << "</text>";
    auto bar = [&](double value, double dy, const char* colour) {
      const double x0 = value >= 0 ? zero_x : zero_x + value * scale;
      svg << "<rect x='" << fmt(x0, 6) << "' y='" << y + dy << "' width='"
          << fmt(std::max(std::abs(value) * scale, 0.5), 6) << "' height='7' fill='" << colour
          << "'><title>" << fmt(value, 3) << "</title></rect>";
    };
    bar(b.recovery_when_float, 2, "#1f77b4");
    bar(b.drop_when_quantized, 9, "#ff7f0e");
  }
  svg << "<text x='" << zero_x << "' y='" << height - 10
      << "' font-size='10' text-anchor='middle'>0</text>";
  svg << "<text x='" << zero_x + extent * scale << "' y='" << height - 10
      << "' font-size='10' text-anchor='middle'>" << fmt(extent, 3) << "</text>";
  svg << "<text x='" << zero_x - extent * scale << "' y='" << height - 10
      << "' font-size='10' text-anchor='middle'>" << fmt(-extent, 3) << "</text>";
  svg << "</svg>";
  return svg.str();
}

}  // namespace

void write_calibration_report(const std::string& path, const std::string& title,
                              const std::vector<std::string>& summary,
                              const std::vector<RangeChoice>& choices,
                              const std::string& chosen_label,
                              const std::vector<QuantizerHistogram>& histograms,
                              const std::vector<SensitivityBar>& sensitivity,
                              const std::string& sensitivity_unit) {
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>" << html_escape(title)
       << "</title>\n<style>body{font-family:sans-serif;max-width:1000px;margin:20px auto;}"
          "h3{font-size:13px;margin:14px 0 2px;font-family:monospace;}"
          "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
          "padding:2px 6px;text-align:right}td:first-child{text-align:left}</style></head><body>\n";
  html << "<h1>" << html_escape(title) << "</h1>\n<ul>\n";
  for (const auto& line : summary) html << "<li>" << html_escape(line) << "</li>\n";
  html << "</ul>\n";
  html << "<h2>Sensitivity</h2>\n";
  if (sensitivity.empty()) {
    html << "<p>No sensitivity analysis was run.</p>\n";
  } else {
    html << sensitivity_svg(sensitivity, sensitivity_unit) << "\n";
  }
  html << "<h2>Activation histograms</h2>\n<p>One histogram of |x| per quantizer, collected once "
          "during calibration; bars are log10(1 + count); each line is the clipping range amax "
          "a calibrator picks from the same histogram (solid: the one chosen on validation).</p>\n";
  // Table of ranges first, then one chart per quantizer.
  html << "<table><tr><th>quantizer</th><th>max |x|</th>";
  for (const auto& c : choices) html << "<th>" << html_escape(c.label) << "</th>";
  html << "</tr>\n";
  for (const auto& h : histograms) {
    html << "<tr><td>" << html_escape(h.name) << "</td><td>" << fmt(h.abs_max, 4) << "</td>";
    for (const auto& a : h.amax) html << "<td>" << fmt(a.second, 4) << "</td>";
    html << "</tr>\n";
  }
  html << "</table>\n";
  for (const auto& h : histograms) {
    html << "<h3>" << html_escape(h.name) << "</h3>\n" << histogram_svg(h, choices, h.chosen.empty() ? chosen_label : h.chosen)
         << "\n";
  }
  html << "</body></html>\n";
  write_text_file(path, html.str());
}

void write_text_file(const std::string& path, const std::string& text) {
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write " + path);
  out << text;
  if (!out) throw std::runtime_error("failed writing " + path);
}

}  // namespace bert
