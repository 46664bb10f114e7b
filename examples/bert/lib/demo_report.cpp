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

// Legend text: approximate width of one character at font-size 10, and the height of one row.
constexpr double kCharWidth = 6.2, kLegendRow = 13;

// Places legend entries of the given widths left to right from `left`, starting a new row when
// the next one would pass `right_edge`: (x, row) per entry.
std::vector<std::pair<double, int>> legend_layout(const std::vector<double>& widths, double left,
                                                  double right_edge) {
  std::vector<std::pair<double, int>> at;
  double x = left;
  int row = 0;
  for (const double w : widths) {
    if (x > left && x + w > right_edge) {
      x = left;
      ++row;
    }
    at.emplace_back(x, row);
    x += w + 10;
  }
  return at;
}

int legend_rows(const std::vector<std::pair<double, int>>& at) {
  return at.empty() ? 1 : at.back().second + 1;
}

std::string svg_open(double width, double height) {
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' viewBox='0 0 " << width << " " << height << "'>";
  return svg.str();
}

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
  std::vector<std::string> legend_texts;
  std::vector<double> legend_widths;
  for (const auto& [label, amax] : h.amax) {
    legend_texts.push_back(label + " " + fmt(amax, 3) + (label == chosen_label ? " (chosen)" : ""));
    legend_widths.push_back(kCharWidth * static_cast<double>(legend_texts.back().size()));
  }
  const auto legend_at = legend_layout(legend_widths, left, width - right);
  const double total_height = height + kLegendRow * (legend_rows(legend_at) - 1);

  std::ostringstream svg;
  svg << svg_open(width, total_height);
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

// ---- SmoothQuant factors ----------------------------------------------------------------------

// The log axis starts no lower than this: values that are not finite or not positive (log10
// gives NaN or -Inf, which would write "nan" / "inf" coordinates into the SVG) and values below
// it are drawn at the floor, and the caption says so.
constexpr double kLogFloor = 1e-6;

double log10_floored(double value) {
  return std::log10(std::isfinite(value) && value > kLogFloor ? value : kLogFloor);
}

// A value for tooltips and captions; never "nan" or "inf".
std::string value_text(double value) { return std::isfinite(value) ? fmt(value, 4) : "not finite"; }

// One line of the chart: a per-channel quantity of the layer.
struct ChannelSeries {
  std::string label;
  const char* colour;
  bool after_smoothing;  ///< drawn thin, over the three measured series
  std::vector<double> values;
};

// Largest finite value and its channel; (NaN, -1) when no value is finite.
std::pair<double, int64_t> finite_peak(const std::vector<double>& values) {
  std::pair<double, int64_t> peak(std::numeric_limits<double>::quiet_NaN(), -1);
  for (size_t j = 0; j < values.size(); ++j) {
    if (std::isfinite(values[j]) && (peak.second < 0 || values[j] > peak.first)) {
      peak = {values[j], static_cast<int64_t>(j)};
    }
  }
  return peak;
}

std::vector<double> channel_values(const tquant::SmoothedLayer& layer, const at::Tensor& t,
                                   const char* what, int64_t in_features) {
  TORCH_CHECK(t.defined(), "SmoothQuant chart of ", layer.name, ": ", what, " is undefined");
  TORCH_CHECK(t.numel() == in_features, "SmoothQuant chart of ", layer.name, ": expected ", what,
              " of ", in_features, " values (the factor's in_features), got ", t.numel());
  const at::Tensor d = t.detach().to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// The five series of a chart, in legend order: max |x_j|, max |W_j|, s_j, and the ranges the
// quantizers see after smoothing, max |x_j| / s_j and max |W_j| * s_j.
std::vector<ChannelSeries> smooth_quant_series(const tquant::SmoothedLayer& layer) {
  TORCH_CHECK(layer.factor.defined() && layer.factor.numel() > 0, "SmoothQuant chart of ",
              layer.name, ": expected a factor of in_features > 0 values, got ",
              layer.factor.defined() ? std::to_string(layer.factor.numel()) + " values"
                                     : std::string("an undefined tensor"));
  const int64_t k = layer.factor.numel();
  std::vector<double> s = channel_values(layer, layer.factor, "factor", k);
  std::vector<double> a = channel_values(layer, layer.act_amax, "act_amax", k);
  std::vector<double> w = channel_values(layer, layer.weight_amax, "weight_amax", k);
  std::vector<double> a_after(k), w_after(k);
  for (int64_t j = 0; j < k; ++j) {
    a_after[j] = a[j] / s[j];
    w_after[j] = w[j] * s[j];
  }
  return {{"max|x_j| (activation)", "#d62728", false, std::move(a)},
          {"max|W_j| (weight column)", "#1f77b4", false, std::move(w)},
          {"s_j (factor)", "#2ca02c", false, std::move(s)},
          {"max|x_j| / s_j (activation after)", "#ff7f0e", true, std::move(a_after)},
          {"max|W_j| * s_j (weight after)", "#9467bd", true, std::move(w_after)}};
}

// Stroke of a series, the same in the chart and its legend.
const char* line_style(bool after_smoothing) {
  return after_smoothing ? " stroke-width='1'" : " stroke-width='1.5' stroke-opacity='0.8'";
}

// Tick spacing for the channel axis: 1, 2 or 5 times a power of ten, at least `raw`.
double nice_step(double raw) {
  const double power = std::pow(10.0, std::floor(std::log10(std::max(raw, 1.0))));
  for (const double m : {1.0, 2.0, 5.0}) {
    if (m * power >= raw) return m * power;
  }
  return 10.0 * power;
}

// One layer's factors as an inline SVG: x = input channel, y = log10 axis with a grid line per
// power of ten, one polyline per series (1536 channels stay one element per series), a circle
// with a tooltip on the channel with the largest activation range.
std::string smooth_quant_svg(const std::vector<ChannelSeries>& series) {
  const double width = 900, height = 250, left = 62, right = 12, top = 10, bottom = 38;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  const size_t k = series.front().values.size();

  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& line : series) {
    for (const double v : line.values) {
      lo = std::min(lo, log10_floored(v));
      hi = std::max(hi, log10_floored(v));
    }
  }
  // Whole decades; the 1e-9 keeps an exact power of ten (log10 rounding) on its own decade.
  lo = std::floor(lo + 1e-9);
  hi = std::max(std::ceil(hi - 1e-9), lo + 1);
  auto x_of = [&](size_t j) { return left + (static_cast<double>(j) + 0.5) * plot_w / k; };
  auto y_of = [&](double v) { return top + (hi - log10_floored(v)) / (hi - lo) * plot_h; };

  std::vector<double> legend_widths;
  for (const auto& line : series) {
    legend_widths.push_back(22 + kCharWidth * static_cast<double>(line.label.size()));
  }
  const auto legend_at = legend_layout(legend_widths, left, width - right);
  const double total_height = height + 12 + kLegendRow * legend_rows(legend_at);

  std::ostringstream svg;
  svg << svg_open(width, total_height);
  svg << "<rect x='" << left << "' y='" << top << "' width='" << plot_w << "' height='" << plot_h
      << "' fill='#fafafa' stroke='#ccc'/>";
  // Grid and labels, one per power of ten (every other one beyond 10 decades).
  const int decades = static_cast<int>(hi - lo);
  const int label_every = decades > 10 ? 2 : 1;
  for (int d = 0; d <= decades; ++d) {
    const double y = top + plot_h * (1.0 - static_cast<double>(d) / decades);
    if (d > 0 && d < decades) {
      svg << "<line x1='" << left << "' x2='" << left + plot_w << "' y1='" << fmt(y, 6)
          << "' y2='" << fmt(y, 6) << "' stroke='#e4e4e4'/>";
    }
    if (d % label_every != 0) continue;
    svg << "<text x='" << left - 4 << "' y='" << fmt(y + 4, 6)
        << "' font-size='10' text-anchor='end'>10<tspan dy='-4' font-size='8'>"
        << static_cast<int>(lo) + d << "</tspan></text>";
  }
  svg << "<text transform='translate(14 " << top + plot_h / 2
      << ") rotate(-90)' font-size='10' text-anchor='middle'>range, log scale</text>";
  // Channel ticks.
  const double step = nice_step(static_cast<double>(k) / 8.0);
  for (double j = 0; j < static_cast<double>(k); j += step) {
    const double x = x_of(static_cast<size_t>(j));
    svg << "<line x1='" << fmt(x, 6) << "' x2='" << fmt(x, 6) << "' y1='" << top + plot_h
        << "' y2='" << top + plot_h + 4 << "' stroke='#999'/><text x='" << fmt(x, 6) << "' y='"
        << top + plot_h + 14 << "' font-size='10' text-anchor='middle'>" << j << "</text>";
  }
  svg << "<text x='" << left + plot_w / 2 << "' y='" << top + plot_h + 28
      << "' font-size='10' text-anchor='middle'>input channel j (" << k << " channels)</text>";
  // Series: the two after-smoothing ranges last, thin, so that they stay visible where the
  // measured ones crowd (hundreds of channels).
  for (const bool after : {false, true}) {
    for (const auto& line : series) {
      if (line.after_smoothing != after) continue;
      const auto [peak, peak_at] = finite_peak(line.values);
      svg << "<polyline fill='none' stroke='" << line.colour << "'" << line_style(after)
          << " points='";
      for (size_t j = 0; j < k; ++j) {
        svg << (j ? " " : "") << fmt(x_of(j), 6) << "," << fmt(y_of(line.values[j]), 6);
      }
      svg << "'><title>" << html_escape(line.label) << ": largest "
          << (peak_at < 0 ? "none finite"
                          : value_text(peak) + " at channel " + std::to_string(peak_at))
          << "</title></polyline>";
    }
  }
  // The channel with the largest activation range, with all five values in its tooltip.
  const int64_t outlier = finite_peak(series.front().values).second;
  if (outlier >= 0) {
    const size_t j = static_cast<size_t>(outlier);
    const double x = x_of(j), y = y_of(series.front().values[j]);
    svg << "<circle cx='" << fmt(x, 6) << "' cy='" << fmt(y, 6) << "' r='4' fill='none' stroke='"
        << series.front().colour << "'><title>channel " << j;
    for (const auto& line : series) {
      svg << "; " << html_escape(line.label) << " " << value_text(line.values[j]);
    }
    svg << "</title></circle><text x='" << fmt(x + (x > left + plot_w * 0.8 ? -7 : 7), 6)
        << "' y='" << fmt(y + 4, 6) << "' font-size='10' fill='" << series.front().colour
        << "' text-anchor='" << (x > left + plot_w * 0.8 ? "end" : "start") << "'>channel " << j
        << "</text>";
  }
  // Legend: a short line in the series' colour, then its label.
  for (size_t i = 0; i < series.size(); ++i) {
    const double x = legend_at[i].first;
    const double y = height + 10 + kLegendRow * legend_at[i].second;
    svg << "<line x1='" << fmt(x, 6) << "' x2='" << fmt(x + 16, 6) << "' y1='" << y - 4
        << "' y2='" << y - 4 << "' stroke='" << series[i].colour << "'"
        << line_style(series[i].after_smoothing) << "/><text x='" << fmt(x + 22, 6) << "' y='"
        << y << "' font-size='10'>" << html_escape(series[i].label) << "</text>";
  }
  svg << "</svg>";
  return svg.str();
}

// Heading, one sentence and the chart of one layer.
std::string smooth_quant_html(const SmoothQuantChart& chart) {
  const auto series = smooth_quant_series(chart.layer);
  const auto [before, before_at] = finite_peak(series[0].values);
  const auto [after, after_at] = finite_peak(series[3].values);
  auto at = [](double value, int64_t channel) {
    return channel < 0 ? std::string("not finite anywhere")
                       : value_text(value) + " (channel " + std::to_string(channel) + ")";
  };
  std::ostringstream html;
  html << "<h3>" << html_escape(chart.scenario) << ": " << html_escape(chart.layer.name)
       << ", alpha " << fmt(chart.layer.alpha, 3) << ", in_features "
       << series.front().values.size()
       << (chart.used ? " (kept)" : " (not kept: plain PTQ won; best alpha tried)") << "</h3>\n";
  html << "<p>Per input channel j, on a log scale: max |x<sub>j</sub>| over the calibration "
          "inputs, max<sub>i</sub> |W[i, j]| and the factor s<sub>j</sub> = max|x<sub>j</sub>|"
          "<sup>alpha</sup> / max|W<sub>j</sub>|<sup>1-alpha</sup>; the thin lines are the ranges "
          "the quantizers see after smoothing, max|x<sub>j</sub>| / s<sub>j</sub> and "
          "max|W<sub>j</sub>| &middot; s<sub>j</sub>"
       << (chart.layer.alpha == 0.5 ? " (at alpha 0.5 both are sqrt(max|x<sub>j</sub>| "
                                      "max|W<sub>j</sub>|) unless s<sub>j</sub> was clamped, so "
                                      "the two lines overlap)"
                                    : "")
       << ", so the largest activation range goes from "
       << at(before, before_at) << " to " << at(after, after_at)
       << " (values not finite or below 10<sup>" << std::lround(std::log10(kLogFloor))
       << "</sup> are drawn at 10<sup>" << std::lround(std::log10(kLogFloor)) << "</sup>).</p>\n";
  html << smooth_quant_svg(series) << "\n";
  return html.str();
}

}  // namespace

void write_calibration_report(const std::string& path, const std::string& title,
                              const std::vector<std::string>& summary,
                              const std::vector<RangeChoice>& choices,
                              const std::string& chosen_label,
                              const std::vector<QuantizerHistogram>& histograms,
                              const std::vector<SensitivityBar>& sensitivity,
                              const std::string& sensitivity_unit,
                              const std::vector<SmoothQuantChart>& smooth_quant) {
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
  html << "<h2>SmoothQuant factors</h2>\n";
  if (smooth_quant.empty()) html << "<p>No SmoothQuant step was run.</p>\n";
  for (const auto& chart : smooth_quant) html << smooth_quant_html(chart);
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
