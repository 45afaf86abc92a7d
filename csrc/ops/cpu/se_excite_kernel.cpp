// sepp::se_excite on the CPU: s = gate(relu(z W1^T + b1) W2^T + b2) with the two products as BLAS calls, computed
// in float32 for half-precision inputs. These are ATen's operators, the same that replace a kernel that fails its
// self-check on another device (kernel_check.cpp), so there is nothing of its own to check here.

#include "ops/kernel_check.h"

#include <torch/library.h>

namespace sepp::ops {
namespace {

at::Tensor se_excite_cpu(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  TORCH_CHECK_VALUE(z.device().is_cpu(), "sepp::se_excite (CPU kernel): expected CPU tensors, got ", z.device());
  return detail::se_excite_aten(z, w1, b1, w2, b2, gate);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CPU, m) {
  m.impl("se_excite", &se_excite_cpu);
}

}  // namespace sepp::ops
