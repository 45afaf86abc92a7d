// sepp::se_excite on the CPU: s = gate(relu(z W1^T + b1) W2^T + b2).
//
// A small float32 batch (what an SE block sees at inference: a few samples of up to a few thousand channels) runs as
// two passes of dot products, parallel over output features, each weight row read once for all the samples. Here a
// BLAS matrix product has more overhead than work, and the weights, which other layers have pushed out of the caches,
// are read at the speed of memory either way. Larger batches and the other dtypes go through ATen's matrix products,
// in float32 for half-precision inputs (kernel_check.cpp), the same operators that replace a kernel that fails its
// self-check.

#include "ops/cpu/multiversion.h"
#include "ops/kernel_check.h"
#include "ops/se_excite_common.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace sepp::ops {
namespace {

// Up to this many samples the weights are read once per call by the dot products; beyond it a matrix product reuses
// them better.
constexpr int64_t kMaxDotBatch = 32;

// The work, in multiply-adds, that makes one task of a pass worth a thread.
constexpr int64_t kTaskWork = 16384;

// One pass, rows [j0, j1) of w [m, k]: out[i, j] = act(w[j, :] . x[i, :] + b[j]) for each of the n samples, with
// act = the hidden ReLU or the gate. A dot product adds in a fixed order (two 16-lane accumulators over blocks of 32,
// one more block of 16, a tree over the lanes, then the tail), so a result does not depend on how the rows were split
// between threads. The lanes are GCC/Clang vector types, kept in registers: each clone lowers them to its own ISA.
SEPP_MULTIVERSION void dense_rows(
    float* __restrict out,
    const float* __restrict w,
    const float* __restrict b,
    const float* __restrict x,
    int64_t n,
    int64_t k,
    int64_t m,
    int64_t j0,
    int64_t j1,
    int act) {  // -1: relu, else a detail::Gate
  using V16 = float __attribute__((vector_size(64)));
  using V8 = float __attribute__((vector_size(32)));
  using V4 = float __attribute__((vector_size(16)));
  constexpr int64_t kLanes = 16;
  for (int64_t j = j0; j < j1; ++j) {
    const float* wj = w + j * k;
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * k;
      V16 acc0 = {}, acc1 = {}, wv, xv;
      int64_t p = 0;
      for (; p + 2 * kLanes <= k; p += 2 * kLanes) {
        std::memcpy(&wv, wj + p, sizeof wv);
        std::memcpy(&xv, xi + p, sizeof xv);
        acc0 += wv * xv;
        std::memcpy(&wv, wj + p + kLanes, sizeof wv);
        std::memcpy(&xv, xi + p + kLanes, sizeof xv);
        acc1 += wv * xv;
      }
      if (p + kLanes <= k) {
        std::memcpy(&wv, wj + p, sizeof wv);
        std::memcpy(&xv, xi + p, sizeof xv);
        acc0 += wv * xv;
        p += kLanes;
      }
      acc0 += acc1;
      const V8 s8 = __builtin_shufflevector(acc0, acc0, 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(acc0, acc0, 8, 9, 10, 11, 12, 13, 14, 15);
      const V4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
      float v = (b != nullptr ? b[j] : 0.0f) + ((s4[0] + s4[2]) + (s4[1] + s4[3]));
      for (; p < k; ++p) v += wj[p] * xi[p];
      out[i * m + j] = act < 0 ? std::max(v, 0.0f)  // keeps NaN, as torch.relu does
                               : detail::apply_gate(v, static_cast<detail::Gate>(act));
    }
  }
}

// out [n, m] <- act(x [n, k] W^T + b), parallel over the m output features.
void dense(float* out, const float* w, const float* b, const float* x, int64_t n, int64_t k, int64_t m, int act) {
  const int64_t grain = std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, n * k));
  at::parallel_for(0, m, grain, [&](int64_t j0, int64_t j1) { dense_rows(out, w, b, x, n, k, m, j0, j1, act); });
}

at::Tensor se_excite_cpu_kernel(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  TORCH_CHECK_VALUE(z.device().is_cpu(), "sepp::se_excite (CPU kernel): expected CPU tensors, got ", z.device());
  const int64_t r = detail::check_se_excite(z, w1, b1, w2, b2);
  const auto g = detail::parse_gate(gate, "sepp::se_excite");
  const int64_t n = z.size(0), c = z.size(1);
  if (z.scalar_type() != at::kFloat || n == 0 || n > kMaxDotBatch) {
    return detail::se_excite_aten(z, w1, b1, w2, b2, gate);
  }
  const auto zc = z.contiguous(), w1c = w1.contiguous(), w2c = w2.contiguous();
  auto bias = [](const std::optional<at::Tensor>& t) {
    return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
  };
  const auto b1c = bias(b1), b2c = bias(b2);
  auto ptr = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; };
  auto s = at::empty({n, c}, z.options());
  if (c == 0) return s;
  const auto h = std::make_unique<float[]>(static_cast<size_t>(n * r));  // written in full by the first pass
  dense(h.get(), w1c.const_data_ptr<float>(), ptr(b1c), zc.const_data_ptr<float>(), n, c, r, -1);
  dense(s.mutable_data_ptr<float>(), w2c.const_data_ptr<float>(), ptr(b2c), h.get(), n, r, c, static_cast<int>(g));
  return s;
}

// The CPU kernel is trusted unless checking it is asked for (kernel_check.h).
at::Tensor se_excite_cpu(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  if (!detail::trusted(&se_excite_cpu_kernel, z.device(), z.scalar_type())) {
    return detail::se_excite_aten(z, w1, b1, w2, b2, gate);
  }
  return se_excite_cpu_kernel(z, w1, b1, w2, b2, gate);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CPU, m) {
  m.impl("se_excite", &se_excite_cpu);
}

}  // namespace sepp::ops
