#pragma once

// Shared by the CUDA test programs (cuda_int8_test, cuda_converted_test).

#include <gtest/gtest.h>

#include "tquant/cuda_int8.h"

/// First statement of a test that needs a GPU (its name ends in _CUDA): skips it, saying why,
/// when the CUDA INT8 kernels cannot run here. scripts/gpu_run.sh fails on any such skip.
#define SKIP_WITHOUT_CUDA_INT8()                                                        \
  do {                                                                                  \
    if (!tquant::cuda_int8_available()) {                                               \
      GTEST_SKIP() << (tquant::cuda_int8_built()                                        \
                           ? "no CUDA device visible: the CUDA INT8 kernels cannot run" \
                           : "tquant was built without CUDA kernels");                  \
    }                                                                                   \
  } while (0)
