#pragma once

// The input check every module's forward starts with.

#include <torch/types.h>

namespace sepp {

/// Checks that x is a floating-point [N, C, H, W] tensor with C == channels on the device and in the dtype of `like`
/// (the autocast dtype too, under torch.autocast); throws c10::ValueError / c10::TypeError naming `who`.
void check_input(const torch::Tensor& x, int64_t channels, const torch::Tensor& like, const char* who);

}  // namespace sepp
