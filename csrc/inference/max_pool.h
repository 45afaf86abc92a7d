#pragma once

// The max pool of the optimized model (the stem's 3x3 / 2 of every ResNet). On the CPU, a dense channels_last float32
// or bfloat16 input is pooled by sepp: each output pixel takes the channelwise maximum of its window's pixels, which
// are rows of C contiguous values. ATen's kernel also computes the argmax indices, unused at inference, and takes
// several times longer. Other inputs go to at::max_pool2d.

#include <ATen/core/Tensor.h>

#include <array>

namespace sepp::inference {

/// at::max_pool2d(x, kernel, stride, padding, dilation 1, ceil_mode): the same values, NaN included (a NaN in a window
/// is its maximum, as in torch), in x's memory format.
at::Tensor max_pool2d(
    const at::Tensor& x,
    std::array<int64_t, 2> kernel,
    std::array<int64_t, 2> stride,
    std::array<int64_t, 2> padding,
    bool ceil_mode);

}  // namespace sepp::inference
