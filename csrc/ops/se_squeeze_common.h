#pragma once

// What every se_squeeze kernel checks, the dtypes it computes in, and the layout it reads.

#include "ops/common.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <optional>

namespace sepp::ops::detail {

inline void check_se_squeeze(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  TORCH_CHECK_VALUE(
      x.dim() == 4, "sepp::se_squeeze: expected x of shape [N, C, H, W], got ", x.dim(), "-D ", x.sym_sizes());
  TORCH_CHECK_TYPE(
      at::isFloatingType(x.scalar_type()), "sepp::se_squeeze: expected a floating-point x, got ", x.scalar_type());
  if (dtype.has_value()) {
    TORCH_CHECK_TYPE(at::isFloatingType(*dtype), "sepp::se_squeeze: expected a floating-point dtype, got ", *dtype);
  }
}

/// The output [N, C] of se_squeeze(x, dtype): x's dtype unless another is asked for.
inline at::Tensor se_squeeze_output(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  return at::empty({x.size(0), x.size(1)}, x.options().dtype(dtype.value_or(x.scalar_type())));
}

}  // namespace sepp::ops::detail
