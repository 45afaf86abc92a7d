// Operators sepp::se_scale and its in-place twin sepp::se_scale_: the schemas, the C++ entry points, the shape-only
// (Meta) kernels, and se_scale_ on devices without a kernel of their own (through se_scale).
// Kernels: cpu/se_scale_kernel.cpp, cuda/se_scale_kernel.cu; autograd (se_scale): autograd/se_scale_autograd.cpp.

#include <sepp/ops.h>

#include "ops/se_scale_common.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

namespace sepp::ops {

TORCH_LIBRARY(sepp, m) {
  m.def("se_scale(Tensor x, Tensor scale, Tensor? identity=None, bool relu=False) -> Tensor");
  m.def("se_scale_(Tensor(a!) x, Tensor scale, Tensor? identity=None, bool relu=False) -> Tensor(a!)");
}

at::Tensor se_scale(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("sepp::se_scale", "").typed<decltype(se_scale)>();
  return op.call(x, scale, identity, relu);
}

at::Tensor& se_scale_(at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("sepp::se_scale_", "").typed<decltype(se_scale_)>();
  return op.call(x, scale, identity, relu);
}

namespace {
at::Tensor& se_scale_inplace_meta(
    at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool /*relu*/) {
  detail::check_se_scale(x, scale, identity, /*opmath_scale_ok=*/true);
  return x;
}

at::Tensor& se_scale_inplace_composite(
    at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  detail::check_se_scale(x, scale, identity, /*opmath_scale_ok=*/true);
  return x.copy_(se_scale(x, scale.to(x.scalar_type()), identity, relu));
}

at::Tensor se_scale_meta(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool /*relu*/) {
  detail::check_se_scale(x, scale, identity);
  return at::empty_like(x, detail::kernel_layout(x));
}
}  // namespace

TORCH_LIBRARY_IMPL(sepp, Meta, m) {
  m.impl("se_scale", &se_scale_meta);
  m.impl("se_scale_", &se_scale_inplace_meta);
}

TORCH_LIBRARY_IMPL(sepp, CompositeExplicitAutograd, m) {
  m.impl("se_scale_", &se_scale_inplace_composite);
}

}  // namespace sepp::ops
