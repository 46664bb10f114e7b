#pragma once

// scikit-learn's handwritten digits (load_digits), as exported by export_digits.py.

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

namespace tquant_cnn {

/// Images as the network takes them and their labels.
struct DigitSplit {
  at::Tensor images;  ///< float32 [N, 1, 8, 8], standardized with the training split's statistics
  at::Tensor labels;  ///< int64 [N], 0..9
};

struct Digits {
  DigitSplit train;
  DigitSplit test;
};

/// Reads <path> (images F32 [1797, 8, 8], labels I64 [1797]), shuffles with a fixed seed and
/// holds out `test_count` samples; pixels (0..16) are standardized with the mean and standard
/// deviation of the training split. Errors name the file and say how to create it.
Digits load_digits(const std::string& path, int64_t test_count);

}  // namespace tquant_cnn
