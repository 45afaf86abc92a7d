#pragma once

#include <sepp/export.h>

#include <ATen/core/Tensor.h>

#include <optional>

namespace sepp::ops {

/// The fused SE scale step, operator `sepp::se_scale`:
///   out = x * scale[n, c]            (scale of shape [N, C] or [N, C, 1, 1])
///   out = out + identity             (when identity is given: same shape as x)
///   out = relu(out)                  (when relu)
/// One pass over x; CPU and CUDA kernels, differentiable in x, scale and identity; keeps x's memory format
/// (contiguous or channels_last).
SEPP_API at::Tensor se_scale(
    const at::Tensor& x,
    const at::Tensor& scale,
    const std::optional<at::Tensor>& identity = std::nullopt,
    bool relu = false);

}  // namespace sepp::ops
