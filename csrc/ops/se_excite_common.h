#pragma once

// What every se_excite kernel checks, and the gate functions they share.

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>
#include <string_view>
#include <type_traits>

namespace sepp::ops::detail {

enum class Gate : int { Sigmoid = 0, HardSigmoid = 1, Tanh = 2 };

inline Gate parse_gate(std::string_view gate, const char* who) {
  if (gate == "sigmoid") return Gate::Sigmoid;
  if (gate == "hard_sigmoid") return Gate::HardSigmoid;
  if (gate == "tanh") return Gate::Tanh;
  TORCH_CHECK_VALUE(false, who, ": expected gate 'sigmoid', 'hard_sigmoid' or 'tanh', got '", gate, "'");
}

/// gate(v) in float or double, as torch computes it: sigmoid, hardsigmoid (relu6(v + 3) / 6), tanh.
template <typename T>
C10_HOST_DEVICE inline T apply_gate(T v, Gate g) {
  switch (g) {
    case Gate::Sigmoid:
      if constexpr (std::is_same_v<T, float>) {
        return 1.0f / (1.0f + ::expf(-v));
      } else {
        return T(1) / (T(1) + ::exp(-v));
      }
    case Gate::HardSigmoid:
      return v <= T(-3) ? T(0) : v >= T(3) ? T(1) : v / T(6) + T(0.5);
    case Gate::Tanh:
      if constexpr (std::is_same_v<T, float>) {
        return ::tanhf(v);
      } else {
        return ::tanh(v);
      }
  }
  return v;
}

/// The dtype the CPU kernel and the backward compute in: float32 for half-precision inputs, else the input's.
inline at::ScalarType excite_compute_dtype(at::ScalarType dt) {
  return (dt == at::kHalf || dt == at::kBFloat16) ? at::kFloat : dt;
}

/// An optional bias in `dt` (absent stays absent).
inline std::optional<at::Tensor> optional_to(const std::optional<at::Tensor>& t, at::ScalarType dt) {
  return t && t->defined() ? std::optional<at::Tensor>(t->to(dt)) : std::nullopt;
}

/// Shapes, dtypes and devices of se_excite(z, w1, b1, w2, b2): z [N, C], w1 [R, C], b1 [R], w2 [C, R], b2 [C], all of
/// z's floating dtype and on z's device. Returns R.
inline int64_t check_se_excite(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    const char* who = "sepp::se_excite") {
  TORCH_CHECK_VALUE(z.dim() == 2, who, ": expected z of shape [N, C], got ", z.dim(), "-D ", z.sym_sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(z.scalar_type()), who, ": expected a floating-point z, got ", z.scalar_type());
  const auto c = z.sym_size(1);
  TORCH_CHECK_VALUE(
      w1.dim() == 2 && w1.sym_size(1) == c, who, ": expected w1 of shape [R, ", c, "] (C from z), got ",
      w1.sym_sizes());
  const auto r = w1.sym_size(0);
  TORCH_CHECK_VALUE(
      w2.dim() == 2 && w2.sym_size(0) == c && w2.sym_size(1) == r, who, ": expected w2 of shape [", c, ", ", r,
      "] (C from z, R from w1), got ", w2.sym_sizes());
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK_TYPE(
        t.scalar_type() == z.scalar_type(), who, ": expected ", name, " of dtype ", z.scalar_type(), " (z's), got ",
        t.scalar_type());
    TORCH_CHECK_VALUE(
        t.device() == z.device(), who, ": expected ", name, " on ", z.device(), " (z's device), got ", t.device());
  };
  same(w1, "w1");
  same(w2, "w2");
  if (b1.has_value() && b1->defined()) {
    TORCH_CHECK_VALUE(
        b1->dim() == 1 && b1->sym_size(0) == r, who, ": expected b1 of shape [", r, "], got ", b1->sym_sizes());
    same(*b1, "b1");
  }
  if (b2.has_value() && b2->defined()) {
    TORCH_CHECK_VALUE(
        b2->dim() == 1 && b2->sym_size(0) == c, who, ": expected b2 of shape [", c, "], got ", b2->sym_sizes());
    same(*b2, "b2");
  }
  return r.guard_int(__FILE__, __LINE__);
}

}  // namespace sepp::ops::detail
