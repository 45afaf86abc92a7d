#include "ops/cpu/dense.h"

#include "ops/cpu/multiversion.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstring>

namespace sepp::ops::cpu {
namespace {

// The work, in multiply-adds, that makes one task worth a thread.
constexpr int64_t kDenseTaskWork = 16384;

// act as an int for the cloned leaf: -2 identity, -1 ReLU, else a detail::Gate.
constexpr int kIdentityCode = -2;
constexpr int kReluCode = -1;

// Rows [j0, j1) of w [m, k]: out[i, j] = act(w[j, :] . x[i, :] + b[j]) for each of the n samples. A dot product adds
// in a fixed order (two 16-lane accumulators over blocks of 32, one more block of 16, a tree over the lanes, then the
// tail), so a result does not depend on how the rows were split between threads. The lanes are GCC/Clang vector
// types, kept in registers: each clone lowers them to its own ISA.
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
    int act) {
  using V16 = float __attribute__((vector_size(64)));
  using V8 = float __attribute__((vector_size(32)));
  using V4 = float __attribute__((vector_size(16)));
  constexpr int64_t kVec = 16;
  for (int64_t j = j0; j < j1; ++j) {
    const float* wj = w + j * k;
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * k;
      V16 acc0 = {}, acc1 = {}, wv, xv;
      int64_t p = 0;
      for (; p + 2 * kVec <= k; p += 2 * kVec) {
        std::memcpy(&wv, wj + p, sizeof wv);
        std::memcpy(&xv, xi + p, sizeof xv);
        acc0 += wv * xv;
        std::memcpy(&wv, wj + p + kVec, sizeof wv);
        std::memcpy(&xv, xi + p + kVec, sizeof xv);
        acc1 += wv * xv;
      }
      if (p + kVec <= k) {
        std::memcpy(&wv, wj + p, sizeof wv);
        std::memcpy(&xv, xi + p, sizeof xv);
        acc0 += wv * xv;
        p += kVec;
      }
      acc0 += acc1;
      const V8 s8 = __builtin_shufflevector(acc0, acc0, 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(acc0, acc0, 8, 9, 10, 11, 12, 13, 14, 15);
      const V4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
      float v = (b != nullptr ? b[j] : 0.0f) + ((s4[0] + s4[2]) + (s4[1] + s4[3]));
      for (; p < k; ++p) v += wj[p] * xi[p];
      if (act == kReluCode) {
        v = std::max(v, 0.0f);  // keeps NaN, as torch.relu does
      } else if (act != kIdentityCode) {
        v = detail::apply_gate(v, static_cast<detail::Gate>(act));
      }
      out[i * m + j] = v;
    }
  }
}

int act_code(Activation act) {
  switch (act.kind) {
    case Activation::Kind::Identity:
      return kIdentityCode;
    case Activation::Kind::Relu:
      return kReluCode;
    case Activation::Kind::Gate:
      return static_cast<int>(act.gate);
  }
  TORCH_INTERNAL_ASSERT(false, "unknown activation");
}

bool is_cpu_float(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && !t.is_sparse();
}

}  // namespace

void dense(
    float* out, const float* w, const float* b, const float* x, int64_t n, int64_t k, int64_t m, Activation act) {
  const int64_t grain = std::max<int64_t>(1, kDenseTaskWork / std::max<int64_t>(1, n * k));
  const int code = act_code(act);
  at::parallel_for(0, m, grain, [&](int64_t j0, int64_t j1) { dense_rows(out, w, b, x, n, k, m, j0, j1, code); });
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const bool fits = x.dim() == 2 && w.dim() == 2 && x.size(0) >= 1 && x.size(0) <= kMaxDotBatch &&
                    x.size(1) == w.size(1) && is_cpu_float(x) && is_cpu_float(w) &&
                    (!b.defined() || (is_cpu_float(b) && b.dim() == 1 && b.size(0) == w.size(0)));
  if (!fits) return at::linear(x, w, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
  RECORD_FUNCTION("sepp::linear", std::vector<c10::IValue>({x}));
  const auto xc = x.contiguous(), wc = w.contiguous();
  const auto bc = b.defined() ? b.contiguous() : at::Tensor();
  const int64_t n = x.size(0), k = x.size(1), m = w.size(0);
  auto out = at::empty({n, m}, x.options());
  if (m == 0) return out;
  dense(
      out.mutable_data_ptr<float>(), wc.const_data_ptr<float>(), bc.defined() ? bc.const_data_ptr<float>() : nullptr,
      xc.const_data_ptr<float>(), n, k, m, Activation{});
  return out;
}

}  // namespace sepp::ops::cpu
