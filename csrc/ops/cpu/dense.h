#pragma once

// A dense layer for the small batches of CPU inference: the SE excitation's two layers, the squeeze taken through a
// bottleneck's conv3 (mean(conv3(h)) = W3 mean(h) + b3) and the classifier at batch 1. At this size a BLAS matrix
// product has more overhead than work, and the weights, which the convolutions have pushed out of the caches, are read
// at the speed of memory either way.

#include "ops/se_excite_common.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace sepp::ops::cpu {

/// What follows a dense layer's sum.
struct Activation {
  enum class Kind : int { Identity, Relu, Gate };
  Kind kind = Kind::Identity;
  detail::Gate gate = detail::Gate::Sigmoid;  // with Kind::Gate
};

/// Up to this many samples, dense() reads each weight row once for all of them; beyond it a matrix product reuses the
/// weights better.
constexpr int64_t kMaxDotBatch = 32;

/// out [n, m] <- act(x [n, k] W^T + b), with W [m, k] and b [m] (or null), float32, contiguous; parallel over the m
/// output features. Each output adds in a fixed order, so the result does not depend on the number of threads.
void dense(float* out, const float* w, const float* b, const float* x, int64_t n, int64_t k, int64_t m, Activation act);

/// torch.nn.functional.linear(x, w, b) for x [n, k]: dense() where x, w and b are float32 CPU tensors and
/// 1 <= n <= kMaxDotBatch, at::linear otherwise (which also reports shapes that do not fit). b may be undefined.
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

}  // namespace sepp::ops::cpu
