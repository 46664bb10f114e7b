#pragma once

#include <chrono>
#include <string>

#include <torch/nn/module.h>

namespace bert {

// What the BERT demo prints: its log lines, numbers formatted for the log and the results
// tables, and short descriptions of the model and the machine.

/// Writes "== <text>" to stderr (the demo's log; the results table goes to stdout).
void say(const std::string& text);

/// `value` with `digits` decimals ("%.*f").
std::string fixed(double value, int digits);

/// A learning rate and the like in short scientific notation ("%g"): 3e-05 -> "3e-05".
std::string scientific(double value);

/// An accuracy difference (a fraction) in signed points: 0.003 -> "+0.30 pt".
std::string points(double fraction_delta);

/// The last line of `text` (trailing newlines ignored): the summary line of a tquant report.
std::string last_line(const std::string& text);

/// The 1-minute load average (Linux /proc/loadavg), to tell a reader how busy the machine was;
/// "unknown" where it cannot be read.
std::string load_average();

/// The quantizable modules of `model` counted by type and mode:
/// "24 QuantLinear fake_quant, 6 QuantAttention fake_quant, ...".
std::string mode_summary(torch::nn::Module& model);

/// Seconds since `start` on the steady clock.
double seconds_since(std::chrono::steady_clock::time_point start);

}  // namespace bert
