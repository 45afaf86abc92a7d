#pragma once

// A dense layer for the small batches of CPU inference: the SE excitation's two layers, the squeeze taken through a
// bottleneck's conv3 (mean(conv3(h)) = W3 mean(h) + b3) and the classifier at batch 1. At this size a BLAS matrix
// product has more overhead than work, and the weights, which the convolutions have pushed out of the caches, are read
// at the speed of memory either way.

#include "ops/se_excite_common.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string_view>

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

/// out [n, m] <- act(x [n, k] W^T + b), with W [m, k] a contiguous float32 or bfloat16 CPU tensor and b [m] (or null)
/// and x float32, contiguous; parallel over the m output features. Each output adds in a fixed order, so the result
/// does not depend on the number of threads. Bfloat16 weights are widened exactly to float32 as they are read: the
/// sums their widening gives, from half the bytes.
void dense(
    float* out, const at::Tensor& w, const float* b, const float* x, int64_t n, int64_t k, int64_t m, Activation act);

/// torch.nn.functional.linear(x, w, b) for x [n, k]: dense() where x and b are float32 CPU tensors, w a float32 or
/// bfloat16 one and 1 <= n <= kMaxDotBatch, at::linear otherwise (bfloat16 weights widened for a float32 x; at::linear
/// also reports shapes that do not fit). b may be undefined.
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

/// The SE excitation gate(relu(z W1^T + b1) W2^T + b2) for a float32 z [n, C] and biases (each may be undefined),
/// with W1 [R, C] and W2 [C, R] both float32 or both bfloat16 (an optimized bfloat16 model keeps its SE weights in
/// bfloat16, half the bytes to read): two dense() passes up to kMaxDotBatch samples, ATen's products in float32 beyond.
/// Shapes are the caller's to check (sepp::se_excite checks them).
at::Tensor excite(
    const at::Tensor& z,
    const at::Tensor& w1,
    const at::Tensor& b1,
    const at::Tensor& w2,
    const at::Tensor& b2,
    std::string_view gate);

}  // namespace sepp::ops::cpu
