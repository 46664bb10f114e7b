#include "demo_report.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tquant/smooth_quant.h"

namespace {

// Eight input channels; channel 3 is the activation outlier (50 against at most 0.8).
const std::vector<float> kActAmax = {0.5f, 0.8f, 0.3f, 50.0f, 0.6f, 0.4f, 0.7f, 0.2f};
const std::vector<float> kWeightAmax = {0.2f, 0.1f, 0.3f, 0.25f, 0.15f, 0.2f, 0.4f, 0.1f};
constexpr int64_t kOutlier = 3;
// Not 0.5: there max|x_j| / s_j = max|W_j| * s_j = sqrt(max|x_j| max|W_j|) and two lines coincide.
constexpr double kAlpha = 0.75;

bert::SmoothQuantChart outlier_chart() {
  bert::SmoothQuantChart chart;
  chart.scenario = "W4A8";
  chart.used = true;
  chart.layer.name = "encoder.layer.0.attention.self.query";
  chart.layer.alpha = kAlpha;
  chart.layer.act_amax = torch::tensor(kActAmax);
  chart.layer.weight_amax = torch::tensor(kWeightAmax);
  chart.layer.factor =
      tquant::smooth_quant_factors(chart.layer.act_amax, chart.layer.weight_amax, kAlpha);
  return chart;
}

// Writes a report with `charts` under a unique /tmp path and returns its text. With
// TQUANT_REPORT_TEST_OUT set, the report goes there and is kept (for looking at it rendered).
std::string report_html(const std::vector<bert::SmoothQuantChart>& charts, const std::string& tag) {
  const char* keep = std::getenv("TQUANT_REPORT_TEST_OUT");
  const std::string path = keep ? std::string(keep) + "/" + tag + ".html"
                                : "/tmp/bert_demo_report_test_" + std::to_string(getpid()) +
                                      "_" + tag + ".html";
  bert::write_calibration_report(path, "report test", {"one line"}, {}, "", {}, {}, "points",
                                 charts);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!keep) std::remove(path.c_str());
  return text.str();
}

// The part of the page between the SmoothQuant heading and the next section.
std::string smooth_quant_section(const std::string& html) {
  const size_t begin = html.find("<h2>SmoothQuant factors</h2>");
  const size_t end = html.find("<h2>Activation histograms</h2>");
  if (begin == std::string::npos || end == std::string::npos || end < begin) return "";
  return html.substr(begin, end - begin);
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

struct Polyline {
  std::string title;
  std::vector<double> x, y;
};

std::vector<Polyline> polylines(const std::string& svg) {
  std::vector<Polyline> out;
  for (size_t at = svg.find("<polyline"); at != std::string::npos;
       at = svg.find("<polyline", at + 1)) {
    Polyline line;
    const size_t points = svg.find("points='", at) + 8;
    std::istringstream pairs(svg.substr(points, svg.find('\'', points) - points));
    std::string pair;
    while (pairs >> pair) {
      const size_t comma = pair.find(',');
      line.x.push_back(std::stod(pair.substr(0, comma)));
      line.y.push_back(std::stod(pair.substr(comma + 1)));
    }
    const size_t title = svg.find("<title>", at) + 7;
    line.title = svg.substr(title, svg.find("</title>", title) - title);
    out.push_back(line);
  }
  return out;
}

const Polyline* series(const std::vector<Polyline>& lines, const std::string& label) {
  for (const auto& line : lines) {
    if (line.title.rfind(label + ":", 0) == 0) return &line;
  }
  return nullptr;
}

std::string fmt4(double value) {
  std::ostringstream out;
  out << std::setprecision(4) << value;
  return out.str();
}

double spread(const std::vector<double>& v) {
  return *std::max_element(v.begin(), v.end()) - *std::min_element(v.begin(), v.end());
}

TEST(CalibrationReport, SmoothQuantChartDrawsFiveSeriesPerChannel) {
  const std::string section = smooth_quant_section(report_html({outlier_chart()}, "five"));
  ASSERT_FALSE(section.empty());
  EXPECT_NE(section.find("encoder.layer.0.attention.self.query, alpha 0.75, in_features 8 (kept)"),
            std::string::npos);
  EXPECT_EQ(section.find("No SmoothQuant step was run."), std::string::npos);
  const auto lines = polylines(section);
  ASSERT_EQ(lines.size(), 5u);
  for (const auto& line : lines) {
    ASSERT_EQ(line.x.size(), 8u) << line.title;
    ASSERT_EQ(line.y.size(), 8u) << line.title;
    for (size_t j = 1; j < line.x.size(); ++j) EXPECT_GT(line.x[j], line.x[j - 1]) << line.title;
  }
  // Log axis from 10^-2 (max|W_7| s_7 = (0.2 * 0.1)^0.75 = 0.053) to 10^2 (max|x_3| = 50).
  EXPECT_NE(section.find("10<tspan dy='-4' font-size='8'>-2</tspan>"), std::string::npos);
  EXPECT_NE(section.find("10<tspan dy='-4' font-size='8'>2</tspan>"), std::string::npos);
  EXPECT_EQ(section.find("10<tspan dy='-4' font-size='8'>3</tspan>"), std::string::npos);
  EXPECT_EQ(section.find("10<tspan dy='-4' font-size='8'>-3</tspan>"), std::string::npos);
}

TEST(CalibrationReport, SmoothQuantChartShowsTheOutlierFlattened) {
  const bert::SmoothQuantChart chart = outlier_chart();
  const std::string section = smooth_quant_section(report_html({chart}, "outlier"));
  const auto lines = polylines(section);
  const Polyline* act = series(lines, "max|x_j| (activation)");
  const Polyline* act_after = series(lines, "max|x_j| / s_j (activation after)");
  ASSERT_NE(act, nullptr);
  ASSERT_NE(act_after, nullptr);
  // SVG y grows downwards: the outlier is the top point of the activation line.
  EXPECT_EQ(std::min_element(act->y.begin(), act->y.end()) - act->y.begin(), kOutlier);
  EXPECT_LT(spread(act_after->y), spread(act->y) / 2);
  EXPECT_NE(act->title.find("largest 50 at channel 3"), std::string::npos) << act->title;

  // The outlier's tooltip and the caption carry its values before and after smoothing.
  const double s = chart.layer.factor[kOutlier].item<double>();
  const double after = kActAmax[kOutlier] / s;
  EXPECT_NE(section.find("<title>channel 3; max|x_j| (activation) 50; max|W_j| (weight column) "
                         "0.25; s_j (factor) " + fmt4(s)),
            std::string::npos);
  EXPECT_NE(section.find("from 50 (channel 3) to " + fmt4(after) + " (channel 3)"),
            std::string::npos);
}

TEST(CalibrationReport, SmoothQuantNonFiniteValuesStayOutOfTheSvg) {
  bert::SmoothQuantChart chart = outlier_chart();
  chart.used = false;
  chart.layer.act_amax[2] = std::numeric_limits<float>::quiet_NaN();
  chart.layer.weight_amax[5] = std::numeric_limits<float>::infinity();
  std::string section = smooth_quant_section(report_html({chart}, "nan"));
  ASSERT_FALSE(section.empty());
  EXPECT_NE(section.find("(not kept: plain PTQ won; best alpha tried)"), std::string::npos);
  std::transform(section.begin(), section.end(), section.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  EXPECT_EQ(section.find("nan"), std::string::npos);
  EXPECT_EQ(section.find("inf"), std::string::npos);
  // The NaN channel is drawn at the floor (10^-6), the lowest point of its line.
  const auto lines = polylines(section);
  const Polyline* act = series(lines, "max|x_j| (activation)");
  ASSERT_NE(act, nullptr);
  EXPECT_EQ(std::max_element(act->y.begin(), act->y.end()) - act->y.begin(), 2);
  EXPECT_NE(section.find("10<tspan dy='-4' font-size='8'>-6</tspan>"), std::string::npos);
}

TEST(CalibrationReport, SmoothQuantEmptySaysNoStepRan) {
  const std::string section = smooth_quant_section(report_html({}, "empty"));
  ASSERT_FALSE(section.empty());
  EXPECT_NE(section.find("No SmoothQuant step was run."), std::string::npos);
  EXPECT_EQ(count_of(section, "<svg"), 0u);
}

TEST(CalibrationReport, SmoothQuantChartStaysOneElementPerSeriesAt1536Channels) {
  torch::manual_seed(17);
  bert::SmoothQuantChart chart;
  chart.scenario = "W4A8";
  chart.layer.name = "encoder.layer.5.intermediate.dense";
  chart.layer.alpha = 0.5;
  chart.layer.act_amax = torch::rand({1536}) + 0.05;
  chart.layer.act_amax.index_put_({torch::tensor({7, 700, 1400})},
                                  torch::tensor({40.0f, 25.0f, 60.0f}));
  chart.layer.weight_amax = torch::rand({1536}) * 0.2 + 0.01;
  chart.layer.factor =
      tquant::smooth_quant_factors(chart.layer.act_amax, chart.layer.weight_amax, 0.5);
  const std::string section = smooth_quant_section(report_html({outlier_chart(), chart}, "wide"));
  EXPECT_EQ(count_of(section, "<svg"), 2u);
  EXPECT_EQ(count_of(section, "<polyline"), 10u);
  EXPECT_EQ(count_of(section, "<circle"), 2u);
  const auto lines = polylines(section);
  ASSERT_EQ(lines.size(), 10u);
  EXPECT_EQ(lines.back().x.size(), 1536u);
  EXPECT_NE(section.find("largest 60 at channel 1400"), std::string::npos);
  EXPECT_NE(section.find(">1400</text>"), std::string::npos);  // channel ticks every 200
}

TEST(CalibrationReport, SmoothQuantChartOfMismatchedTensorsNamesTheLayer) {
  bert::SmoothQuantChart chart = outlier_chart();
  chart.layer.act_amax = chart.layer.act_amax.slice(0, 0, 7);
  try {
    report_html({chart}, "mismatch");
    FAIL() << "expected c10::Error";
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    EXPECT_NE(message.find("encoder.layer.0.attention.self.query"), std::string::npos) << message;
    EXPECT_NE(message.find("expected act_amax of 8 values"), std::string::npos) << message;
    EXPECT_NE(message.find("got 7"), std::string::npos) << message;
  }
}

}  // namespace
