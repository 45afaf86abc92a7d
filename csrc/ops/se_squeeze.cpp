// Operator sepp::se_squeeze (the SE squeeze: channel means over H x W) and its backward: the schemas, the C++ entry
// points, the Meta kernel, and the backward (one broadcast write, any device).
// Kernels: cpu/se_squeeze_kernel.cpp, cuda/se_squeeze_kernel.cu; autograd: autograd/se_squeeze_autograd.cpp.

#include <sepp/ops.h>

#include "ops/se_squeeze_common.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace sepp::ops {

TORCH_LIBRARY_FRAGMENT(sepp, m) {
  m.def("se_squeeze(Tensor x, ScalarType? dtype=None) -> Tensor");
  m.def("se_squeeze_backward(Tensor grad, int[] input_size, ScalarType input_dtype, bool channels_last) -> Tensor");
}

at::Tensor se_squeeze(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("sepp::se_squeeze", "").typed<decltype(se_squeeze)>();
  return op.call(x, dtype);
}

at::Tensor se_squeeze_backward(
    const at::Tensor& grad, at::IntArrayRef input_size, at::ScalarType input_dtype, bool channels_last) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sepp::se_squeeze_backward", "")
                       .typed<decltype(se_squeeze_backward)>();
  return op.call(grad, input_size, input_dtype, channels_last);
}

namespace {

at::Tensor se_squeeze_meta(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  detail::check_se_squeeze(x, dtype);
  return at::empty_symint({x.sym_size(0), x.sym_size(1)}, x.options().dtype(dtype.value_or(x.scalar_type())));
}

// dx[n, c, h, w] = grad[n, c] / (H * W), written once in the input's layout.
at::Tensor se_squeeze_backward_impl(
    const at::Tensor& grad, at::IntArrayRef input_size, at::ScalarType input_dtype, bool channels_last) {
  TORCH_CHECK_VALUE(
      input_size.size() == 4, "sepp::se_squeeze_backward: expected input_size [N, C, H, W], got ", input_size);
  TORCH_CHECK_VALUE(
      grad.dim() == 2 && grad.size(0) == input_size[0] && grad.size(1) == input_size[1],
      "sepp::se_squeeze_backward: expected grad of shape [", input_size[0], ", ", input_size[1], "], got ",
      grad.sizes());
  TORCH_CHECK_TYPE(
      at::isFloatingType(input_dtype), "sepp::se_squeeze_backward: expected a floating-point input_dtype, got ",
      input_dtype);
  const auto layout = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const int64_t hw = input_size[2] * input_size[3];
  auto out = at::empty(input_size, grad.options().dtype(input_dtype).memory_format(layout));
  if (out.numel() == 0) {
    return out;
  }
  out.copy_((grad / static_cast<double>(hw)).reshape({input_size[0], input_size[1], 1, 1}).expand(input_size));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, Meta, m) {
  m.impl("se_squeeze", &se_squeeze_meta);
}
TORCH_LIBRARY_IMPL(sepp, CompositeExplicitAutograd, m) {
  m.impl("se_squeeze_backward", &se_squeeze_backward_impl);
}

}  // namespace sepp::ops
