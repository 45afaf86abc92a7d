#include "ops/cpu/dense.h"

#include "ops/cpu/multiversion.h"
#include "ops/kernel_check.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/record_function.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace sepp::ops::cpu {
namespace {

// The work, in multiply-adds, that makes one task worth a thread.
constexpr int64_t kDenseTaskWork = 16384;

// act as an int for the cloned leaf: -2 identity, -1 ReLU, else a detail::Gate.
constexpr int kIdentityCode = -2;
constexpr int kReluCode = -1;

using V16 = float __attribute__((vector_size(64)));
using V8 = float __attribute__((vector_size(32)));
using V4 = float __attribute__((vector_size(16)));

// 16 weights as float32 lanes: float32 as they are, bfloat16 widened exactly (its bits are a float32's upper half).
[[gnu::always_inline]] inline V16 load16(const float* p) {
  V16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline V16 load16(const c10::BFloat16* p) {
  using U16x16 = uint16_t __attribute__((vector_size(32)));
  using U32x16 = uint32_t __attribute__((vector_size(64)));
  U16x16 bits;
  std::memcpy(&bits, p, sizeof bits);
  const U32x16 wide = __builtin_convertvector(bits, U32x16) << 16;
  V16 v;
  std::memcpy(&v, &wide, sizeof v);
  return v;
}
[[gnu::always_inline]] inline float widen(float v) {
  return v;
}
[[gnu::always_inline]] inline float widen(c10::BFloat16 v) {
  return static_cast<float>(v);
}

// Row j of w [m, k], wj: out[i, j] = act(wj . x[i, :] + b[j]) for each of the n samples. A dot product adds in a fixed
// order (two 16-lane accumulators over blocks of 32, one more block of 16, a tree over the lanes, then the tail), so a
// result does not depend on how the rows were split between threads, and bfloat16 weights give what their float32
// widening gives. The lanes are GCC/Clang vector types, kept in registers: inlined into each clone of the leaves
// below, they are lowered to its ISA.
template <typename W>
[[gnu::always_inline]] inline void dense_row(
    float* __restrict out,
    const W* __restrict wj,
    const float* __restrict b,
    const float* __restrict x,
    int64_t n,
    int64_t k,
    int64_t m,
    int64_t j,
    int act) {
  constexpr int64_t kVec = 16;
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * k;
    V16 acc0 = {}, acc1 = {}, xv;
    int64_t p = 0;
    for (; p + 2 * kVec <= k; p += 2 * kVec) {
      std::memcpy(&xv, xi + p, sizeof xv);
      acc0 += load16(wj + p) * xv;
      std::memcpy(&xv, xi + p + kVec, sizeof xv);
      acc1 += load16(wj + p + kVec) * xv;
    }
    if (p + kVec <= k) {
      std::memcpy(&xv, xi + p, sizeof xv);
      acc0 += load16(wj + p) * xv;
      p += kVec;
    }
    acc0 += acc1;
    const V8 s8 = __builtin_shufflevector(acc0, acc0, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(acc0, acc0, 8, 9, 10, 11, 12, 13, 14, 15);
    const V4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
    float v = (b != nullptr ? b[j] : 0.0f) + ((s4[0] + s4[2]) + (s4[1] + s4[3]));
    for (; p < k; ++p) v += widen(wj[p]) * xi[p];
    if (act == kReluCode) {
      v = std::max(v, 0.0f);  // keeps NaN, as torch.relu does
    } else if (act != kIdentityCode) {
      v = detail::apply_gate(v, static_cast<detail::Gate>(act));
    }
    out[i * m + j] = v;
  }
}

// Rows [j0, j1) of w [m, k] (see dense_row).
SEPP_MULTIVERSION void dense_rows_f32(
    float* out,
    const float* w,
    const float* b,
    const float* x,
    int64_t n,
    int64_t k,
    int64_t m,
    int64_t j0,
    int64_t j1,
    int act) {
  for (int64_t j = j0; j < j1; ++j) dense_row(out, w + j * k, b, x, n, k, m, j, act);
}

// The same for bfloat16 weights. One sample widens each weight as it reads it; several share a row widened once into
// `row` (k floats).
SEPP_MULTIVERSION void dense_rows_bf16(
    float* out,
    const c10::BFloat16* w,
    const float* b,
    const float* x,
    int64_t n,
    int64_t k,
    int64_t m,
    int64_t j0,
    int64_t j1,
    int act,
    float* row) {
  constexpr int64_t kVec = 16;
  for (int64_t j = j0; j < j1; ++j) {
    const c10::BFloat16* wj = w + j * k;
    if (n == 1) {
      dense_row(out, wj, b, x, n, k, m, j, act);
      continue;
    }
    int64_t p = 0;
    for (; p + kVec <= k; p += kVec) {
      const V16 v = load16(wj + p);
      std::memcpy(row + p, &v, sizeof v);
    }
    for (; p < k; ++p) row[p] = widen(wj[p]);
    dense_row(out, static_cast<const float*>(row), b, x, n, k, m, j, act);
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

// A dense layer's weights: float32, or bfloat16 (widened as they are read).
bool is_cpu_weight(const at::Tensor& t) {
  return t.device().is_cpu() && !t.is_sparse() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16);
}

}  // namespace

void dense(
    float* out, const at::Tensor& w, const float* b, const float* x, int64_t n, int64_t k, int64_t m, Activation act) {
  const int64_t grain = std::max<int64_t>(1, kDenseTaskWork / std::max<int64_t>(1, n * k));
  const int code = act_code(act);
  if (w.scalar_type() == at::kBFloat16) {
    const c10::BFloat16* wp = w.const_data_ptr<c10::BFloat16>();
    at::parallel_for(0, m, grain, [&](int64_t j0, int64_t j1) {
      std::unique_ptr<float[]> row;  // the widened row that several samples share
      if (n > 1) row = std::make_unique<float[]>(static_cast<size_t>(k));
      dense_rows_bf16(out, wp, b, x, n, k, m, j0, j1, code, row.get());
    });
    return;
  }
  const float* wp = w.const_data_ptr<float>();
  at::parallel_for(0, m, grain, [&](int64_t j0, int64_t j1) { dense_rows_f32(out, wp, b, x, n, k, m, j0, j1, code); });
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const bool fits = x.dim() == 2 && w.dim() == 2 && x.size(0) >= 1 && x.size(0) <= kMaxDotBatch &&
                    x.size(1) == w.size(1) && is_cpu_float(x) && is_cpu_weight(w) &&
                    (!b.defined() || (is_cpu_float(b) && b.dim() == 1 && b.size(0) == w.size(0)));
  if (!fits) {
    const bool widen = is_cpu_float(x) && is_cpu_weight(w) && w.scalar_type() != at::kFloat;
    return at::linear(x, widen ? w.to(at::kFloat) : w, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
  }
  RECORD_FUNCTION("sepp::linear", std::vector<c10::IValue>({x}));
  const auto xc = x.contiguous(), wc = w.contiguous();
  const auto bc = b.defined() ? b.contiguous() : at::Tensor();
  const int64_t n = x.size(0), k = x.size(1), m = w.size(0);
  auto out = at::empty({n, m}, x.options());
  if (m == 0) return out;
  dense(
      out.mutable_data_ptr<float>(), wc, bc.defined() ? bc.const_data_ptr<float>() : nullptr,
      xc.const_data_ptr<float>(), n, k, m, Activation{});
  return out;
}

at::Tensor excite(
    const at::Tensor& z,
    const at::Tensor& w1,
    const at::Tensor& b1,
    const at::Tensor& w2,
    const at::Tensor& b2,
    std::string_view gate) {
  const auto opt = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
  const auto g = detail::parse_gate(gate, "sepp::se_excite");
  const bool fits = z.dim() == 2 && is_cpu_float(z) && is_cpu_weight(w1) && w2.scalar_type() == w1.scalar_type() &&
                    z.size(0) >= 1 && z.size(0) <= kMaxDotBatch;
  if (!fits) {
    const auto f32 = [](const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; };
    return detail::se_excite_aten(z, f32(w1), opt(f32(b1)), f32(w2), opt(f32(b2)), gate);
  }
  const int64_t n = z.size(0), c = z.size(1), r = w1.size(0);
  const auto zc = z.contiguous(), w1c = w1.contiguous(), w2c = w2.contiguous();
  const auto b1c = b1.defined() ? b1.contiguous() : b1, b2c = b2.defined() ? b2.contiguous() : b2;
  auto ptr = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; };
  auto s = at::empty({n, c}, z.options());
  if (c == 0) return s;
  const auto h = std::make_unique<float[]>(static_cast<size_t>(n * r));  // written in full by the first pass
  dense(h.get(), w1c, ptr(b1c), zc.const_data_ptr<float>(), n, c, r, Activation{Activation::Kind::Relu});
  dense(s.mutable_data_ptr<float>(), w2c, ptr(b2c), h.get(), n, r, c, Activation{Activation::Kind::Gate, g});
  return s;
}

}  // namespace sepp::ops::cpu
