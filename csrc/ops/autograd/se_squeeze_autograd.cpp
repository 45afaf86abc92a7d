// Autograd for sepp::se_squeeze: dx = dz[n, c] / (H * W) everywhere (sepp::se_squeeze_backward), in x's dtype and
// layout. Only x's shape, dtype and layout are kept for the backward, not x.

#include <sepp/ops.h>

#include "ops/common.h"

#include <torch/autograd.h>
#include <torch/library.h>

namespace sepp::ops {
namespace {

class SESqueezeFunction : public torch::autograd::Function<SESqueezeFunction> {
 public:
  static at::Tensor forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& x, std::optional<at::ScalarType> dtype) {
    at::Tensor z;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      z = se_squeeze(x, dtype);
    }
    ctx->saved_data["input_size"] = x.sizes().vec();
    ctx->saved_data["input_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["channels_last"] = detail::kernel_layout(x) == at::MemoryFormat::ChannelsLast;
    return z;
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grad_outputs) {
    const auto size = ctx->saved_data["input_size"].toIntVector();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["input_dtype"].toInt());
    const bool cl = ctx->saved_data["channels_last"].toBool();
    return {se_squeeze_backward(grad_outputs[0], size, dtype, cl), at::Tensor()};
  }
};

at::Tensor se_squeeze_autograd(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  return SESqueezeFunction::apply(x, dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, Autograd, m) {
  m.impl("se_squeeze", &se_squeeze_autograd);
}

}  // namespace sepp::ops
