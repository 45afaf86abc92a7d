// Autograd for sepp::se_scale, registered under the Autograd dispatch key (works for every device's kernel).
//   out = relu?(x * s + identity?);  g = grad * (out > 0 if relu)
//   dx = g * s,  ds = sum_hw(g * x),  didentity = g

#include <sepp/ops.h>

#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/threshold_backward.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace sepp::ops {
namespace {

class SEScaleFunction : public torch::autograd::Function<SEScaleFunction> {
 public:
  static at::Tensor forward(
      torch::autograd::AutogradContext* ctx,
      const at::Tensor& x,
      const at::Tensor& scale,
      const std::optional<at::Tensor>& identity,
      bool relu) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = se_scale(x, scale, identity, relu);
    }
    ctx->saved_data["relu"] = relu;
    ctx->saved_data["has_identity"] = identity.has_value() && identity->defined();
    ctx->save_for_backward({x, scale, relu ? out : at::Tensor()});
    return out;
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& scale = saved[1];
    at::Tensor g = grad_outputs[0];
    if (ctx->saved_data["relu"].toBool()) {
      g = at::threshold_backward(g, saved[2], 0);
    }
    // scale is [N, C] or [N, C, 1, 1]; no sizes are read, so this also traces with symbolic shapes.
    const bool scale_2d = scale.dim() == 2;
    at::Tensor dx, ds, did;
    if (ctx->needs_input_grad(0)) {
      dx = g * (scale_2d ? scale.unsqueeze(-1).unsqueeze(-1) : scale);
    }
    if (ctx->needs_input_grad(1)) {
      ds = (g * x).sum({2, 3}, /*keepdim=*/!scale_2d);
    }
    if (ctx->saved_data["has_identity"].toBool() && ctx->needs_input_grad(2)) {
      did = g;
    }
    return {dx, ds, did, at::Tensor()};
  }
};

at::Tensor se_scale_autograd(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  return SEScaleFunction::apply(x, scale, identity, relu);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, Autograd, m) {
  m.impl("se_scale", &se_scale_autograd);
}

}  // namespace sepp::ops
