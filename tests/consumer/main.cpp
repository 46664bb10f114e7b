// Package test: calibrate a MinMaxObserver, then check that quantize / dequantize reproduces
// every value within half a quantization step. Exits non-zero on failure.

#include <cstdio>

#include <torch/torch.h>

#include "tquant/tquant.h"

int main() {
  torch::manual_seed(0);
  auto x = torch::randn({17, 33}) * 3;

  tquant::MinMaxObserver observer;
  observer->observe(x);
  const tquant::QParams qp = observer->calculate_qparams();

  const auto q = tquant::quantize(x, qp);
  const auto y = tquant::dequantize(q, qp);
  const double scale = qp.scale.item<double>();
  const double max_error = (y - x).abs().max().item<double>();
  // Half a step, plus float32 rounding of x / scale.
  const double bound = scale / 2 * (1 + 1e-5);

  std::printf("%s: scale %.6g, codes %s, max round-trip error %.6g (bound %.6g)\n",
              observer->describe().c_str(), scale, c10::toString(q.scalar_type()), max_error,
              bound);
  if (q.scalar_type() != torch::kChar || !(max_error <= bound)) {
    std::printf("FAIL: round trip error above scale / 2 or codes not int8\n");
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
