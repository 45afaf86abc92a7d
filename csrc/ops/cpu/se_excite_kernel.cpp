// sepp::se_excite on the CPU: s = gate(relu(z W1^T + b1) W2^T + b2) with the two products as BLAS calls, computed
// in float32 for half-precision inputs.

#include "ops/se_excite_common.h"

#include <ATen/ops/hardsigmoid.h>
#include <ATen/ops/linear.h>
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
  detail::check_se_excite(z, w1, b1, w2, b2);
  const auto g = detail::parse_gate(gate, "sepp::se_excite");
  const auto dt = z.scalar_type();
  const auto acc = detail::excite_compute_dtype(dt);
  auto a = at::linear(
      at::linear(z.to(acc), w1.to(acc), detail::optional_to(b1, acc)).relu_(), w2.to(acc),
      detail::optional_to(b2, acc));
  switch (g) {
    case detail::Gate::Sigmoid:
      a.sigmoid_();
      break;
    case detail::Gate::HardSigmoid:
      a = at::hardsigmoid(a);
      break;
    case detail::Gate::Tanh:
      a.tanh_();
      break;
  }
  return a.to(dt);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CPU, m) {
  m.impl("se_excite", &se_excite_cpu);
}

}  // namespace sepp::ops
