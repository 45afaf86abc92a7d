#pragma once
#include <cstdint>

// A convolution of se_resnet50 (stride 1, 'same' padding): batch, input channels, spatial size, kernel, output
// channels.
struct ConvShape {
  int64_t n, c, hw, k, k_out;
};

double direct_median_us(const ConvShape& c, bool bf16, bool fresh_output, int reps);
