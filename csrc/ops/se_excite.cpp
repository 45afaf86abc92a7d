// Operator sepp::se_excite (the SE excitation: gate(FC2(relu(FC1(z))))) and its backward: the schemas, the C++ entry
// points, the Meta kernel, and the backward (explicit formulas on matrix products, any device).
// Kernels: cpu/se_excite_kernel.cpp, cuda/se_excite_kernel.cu; autograd: autograd/se_excite_autograd.cpp;
// autocast: autocast/se_excite_autocast.cpp.
//
// Backward, with h = relu(z W1^T + b1), a = h W2^T + b2, s = gate(a) and g = dL/ds:
//   ga = g * gate'(a)    (sigmoid: s (1 - s); tanh: 1 - s^2; hard_sigmoid: 1/6 where -3 < a < 3, else 0)
//   dW2 = ga^T h,  db2 = sum_n ga,  gh = (ga W2) * (h > 0),  dW1 = gh^T z,  db1 = sum_n gh,  dz = gh W1

#include <sepp/ops.h>

#include "ops/se_excite_common.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

namespace sepp::ops {

TORCH_LIBRARY_FRAGMENT(sepp, m) {
  m.def("se_excite(Tensor z, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, str gate=\"sigmoid\") -> Tensor");
  m.def(
      "se_excite_backward(Tensor grad, Tensor z, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, Tensor s, str gate) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor)");
}

at::Tensor se_excite(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("sepp::se_excite", "").typed<decltype(se_excite)>();
  return op.call(z, w1, b1, w2, b2, gate);
}

SEExciteGrads se_excite_backward(
    const at::Tensor& grad,
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    const at::Tensor& s,
    std::string_view gate) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sepp::se_excite_backward", "")
                       .typed<decltype(se_excite_backward)>();
  return op.call(grad, z, w1, b1, w2, b2, s, gate);
}

namespace {

at::Tensor se_excite_meta(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  detail::check_se_excite(z, w1, b1, w2, b2);
  detail::parse_gate(gate, "sepp::se_excite");
  return at::empty_symint({z.sym_size(0), z.sym_size(1)}, z.options());
}

SEExciteGrads se_excite_backward_impl(
    const at::Tensor& grad,
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    const at::Tensor& s,
    std::string_view gate) {
  constexpr const char* who = "sepp::se_excite_backward";
  detail::check_se_excite(z, w1, b1, w2, b2, who);
  const auto g_kind = detail::parse_gate(gate, who);
  TORCH_CHECK_VALUE(
      grad.sym_sizes() == z.sym_sizes() && s.sym_sizes() == z.sym_sizes(), who, ": expected grad and s of shape ",
      z.sym_sizes(), " (z's), got ", grad.sym_sizes(), " and ", s.sym_sizes());
  // Half-precision inputs are differentiated in float32; the gradients come back in the inputs' dtype.
  const auto dt = z.scalar_type();
  const auto acc = detail::excite_compute_dtype(dt);
  const auto zf = z.to(acc), w1f = w1.to(acc), w2f = w2.to(acc);
  const auto b1f = detail::optional_to(b1, acc), b2f = detail::optional_to(b2, acc);
  const auto h = at::linear(zf, w1f, b1f).relu_();
  const auto g = grad.to(acc), sf = s.to(acc);
  at::Tensor ga;
  switch (g_kind) {
    case detail::Gate::Sigmoid:
      ga = g * sf * (1 - sf);
      break;
    case detail::Gate::Tanh:
      ga = g * (1 - sf * sf);
      break;
    case detail::Gate::HardSigmoid: {
      const auto a = at::linear(h, w2f, b2f);
      ga = at::where((a > -3) & (a < 3), g / 6, at::zeros_like(g));
      break;
    }
  }
  const auto dw2 = at::mm(ga.t(), h);
  const auto db2 = ga.sum(0);
  const auto gh = at::mm(ga, w2f).mul_(h > 0);
  const auto dw1 = at::mm(gh.t(), zf);
  const auto db1 = gh.sum(0);
  const auto dz = at::mm(gh, w1f);
  return {dz.to(dt), dw1.to(dt), db1.to(dt), dw2.to(dt), db2.to(dt)};
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, Meta, m) {
  m.impl("se_excite", &se_excite_meta);
}
TORCH_LIBRARY_IMPL(sepp, CompositeExplicitAutograd, m) {
  m.impl("se_excite_backward", &se_excite_backward_impl);
}

}  // namespace sepp::ops
