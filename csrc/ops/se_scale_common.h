#pragma once

// What every se_scale kernel checks before it touches memory, and the layout it works in.

#include "ops/common.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <optional>

namespace sepp::ops::detail {

/// opmath_scale_ok: se_scale_ also takes a float32 scale for a float16 / bfloat16 x (the excitation as computed).
inline void check_se_scale(
    const at::Tensor& x,
    const at::Tensor& scale,
    const std::optional<at::Tensor>& identity,
    bool opmath_scale_ok = false) {
  TORCH_CHECK_VALUE(
      x.dim() == 4, "sepp::se_scale: expected x of shape [N, C, H, W], got ", x.dim(), "-D ", x.sym_sizes());
  TORCH_CHECK_TYPE(
      at::isFloatingType(x.scalar_type()), "sepp::se_scale: expected a floating-point x, got ", x.scalar_type());
  const auto n = x.sym_size(0);
  const auto c = x.sym_size(1);
  const bool scale_ok = (scale.dim() == 2 && scale.sym_size(0) == n && scale.sym_size(1) == c) ||
                        (scale.dim() == 4 && scale.sym_size(0) == n && scale.sym_size(1) == c &&
                         scale.sym_size(2) == 1 && scale.sym_size(3) == 1);
  TORCH_CHECK_VALUE(
      scale_ok, "sepp::se_scale: expected scale of shape [", n, ", ", c, "] or [", n, ", ", c,
      ", 1, 1] for x of shape ", x.sym_sizes(), ", got ", scale.sym_sizes());
  const bool opmath_scale = opmath_scale_ok && scale.scalar_type() == at::kFloat &&
                            (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16);
  TORCH_CHECK_TYPE(
      scale.scalar_type() == x.scalar_type() || opmath_scale, "sepp::se_scale: expected scale of dtype ",
      x.scalar_type(), " (x's)", opmath_scale_ok ? " or Float" : "", ", got ", scale.scalar_type());
  TORCH_CHECK_VALUE(
      scale.device() == x.device(), "sepp::se_scale: expected scale on ", x.device(), " (x's device), got ",
      scale.device());
  if (identity.has_value() && identity->defined()) {
    TORCH_CHECK_VALUE(
        identity->sym_sizes() == x.sym_sizes(), "sepp::se_scale: expected identity of shape ", x.sym_sizes(),
        " (x's), got ", identity->sym_sizes());
    TORCH_CHECK_TYPE(
        identity->scalar_type() == x.scalar_type(), "sepp::se_scale: expected identity of dtype ", x.scalar_type(),
        " (x's), got ", identity->scalar_type());
    TORCH_CHECK_VALUE(
        identity->device() == x.device(), "sepp::se_scale: expected identity on ", x.device(), " (x's device), got ",
        identity->device());
  }
}

/// The operands as every kernel reads them: x and identity dense in one layout, scale dense [N, C], out allocated.
struct SEScaleOperands {
  at::MemoryFormat layout;
  at::Tensor x, scale, identity, out;  // identity undefined when absent
  bool has_identity() const { return identity.defined(); }
};

/// Checks the inputs (after the kernel's own device check) and makes the operands.
inline SEScaleOperands prepare_se_scale(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity) {
  check_se_scale(x, scale, identity);
  SEScaleOperands o;
  o.layout = kernel_layout(x);
  o.x = x.contiguous(o.layout);
  o.scale = scale.reshape({x.size(0), x.size(1)}).contiguous();
  if (identity.has_value() && identity->defined()) {
    o.identity = identity->contiguous(o.layout);
  }
  o.out = at::empty_like(o.x, o.layout);
  return o;
}

}  // namespace sepp::ops::detail
