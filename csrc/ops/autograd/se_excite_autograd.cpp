// Autograd for sepp::se_excite: keeps z, the weights and the output s, and calls sepp::se_excite_backward (which
// recomputes the small hidden vector h rather than keeping it).

#include <sepp/ops.h>

#include "ops/common.h"

#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

namespace sepp::ops {
namespace {

class SEExciteFunction : public torch::autograd::Function<SEExciteFunction> {
 public:
  static at::Tensor forward(
      torch::autograd::AutogradContext* ctx,
      const at::Tensor& z,
      const at::Tensor& w1,
      const std::optional<at::Tensor>& b1,
      const at::Tensor& w2,
      const std::optional<at::Tensor>& b2,
      std::string_view gate) {
    at::Tensor s;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      s = se_excite(z, w1, b1, w2, b2, gate);
    }
    ctx->saved_data["gate"] = std::string(gate);
    ctx->save_for_backward({z, w1, b1.value_or(at::Tensor()), w2, b2.value_or(at::Tensor()), s});
    return s;
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grad_outputs) {
    const auto v = ctx->get_saved_variables();
    const auto gate = ctx->saved_data["gate"].toStringRef();
    auto [dz, dw1, db1, dw2, db2] = se_excite_backward(
        grad_outputs[0], v[0], v[1], detail::defined_or_nullopt(v[2]), v[3], detail::defined_or_nullopt(v[4]), v[5],
        gate);
    return {dz, dw1, v[2].defined() ? db1 : at::Tensor(), dw2, v[4].defined() ? db2 : at::Tensor(), at::Tensor()};
  }
};

at::Tensor se_excite_autograd(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  return SEExciteFunction::apply(z, w1, b1, w2, b2, gate);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, Autograd, m) {
  m.impl("se_excite", &se_excite_autograd);
}

}  // namespace sepp::ops
