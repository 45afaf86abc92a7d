// Operator sepp::se_scale: the schema, the C++ entry point, and the shape-only (Meta) kernel.
// Kernels: cpu/se_scale_kernel.cpp, cuda/se_scale_kernel.cu; autograd: autograd/se_scale_autograd.cpp.

#include <sepp/ops.h>

#include "ops/se_scale_common.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

namespace sepp::ops {

TORCH_LIBRARY(sepp, m) {
  m.def("se_scale(Tensor x, Tensor scale, Tensor? identity=None, bool relu=False) -> Tensor");
}

at::Tensor se_scale(
    const at::Tensor& x,
    const at::Tensor& scale,
    const std::optional<at::Tensor>& identity,
    bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sepp::se_scale", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, bool)>();
  return op.call(x, scale, identity, relu);
}

namespace {
at::Tensor se_scale_meta(
    const at::Tensor& x,
    const at::Tensor& scale,
    const std::optional<at::Tensor>& identity,
    bool /*relu*/) {
  detail::check_se_scale(x, scale, identity);
  return at::empty_like(x, detail::se_scale_layout(x));
}
}  // namespace

TORCH_LIBRARY_IMPL(sepp, Meta, m) {
  m.impl("se_scale", &se_scale_meta);
}

}  // namespace sepp::ops
