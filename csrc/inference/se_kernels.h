#pragma once
// The SE block's two passes for optimize_for_inference: the squeeze (channel means of U) and the tail
// relu(U * s + identity), written into U. CPU kernels for channels_last float32 / bfloat16, compiled for AVX-512,
// AVX2 and baseline x86-64 and picked at load time; other devices and layouts use sepp::se_squeeze / sepp::se_scale.

#include <ATen/core/Tensor.h>

namespace sepp::inference {

/// [N, C, H, W] -> the means over H, W as [N, C] in `acc` (float32 for half-precision inputs).
at::Tensor channel_mean(const at::Tensor& u, at::ScalarType acc);

/// relu(u * s[n, c] + identity), written into u when u is a channels_last CPU tensor it owns, else a new tensor.
/// s: [N, C] in float32 (or u's dtype).
at::Tensor scale_add_relu_(at::Tensor u, const at::Tensor& s, const at::Tensor& identity);

}  // namespace sepp::inference
