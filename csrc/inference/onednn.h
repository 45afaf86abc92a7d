#pragma once

// oneDNN convolutions with fused post-ops, as inductor's CPU freezing calls them
// (aten/src/ATen/native/mkldnn/Conv.cpp), through the dispatcher: found once, absent where torch is built without
// MKLDNN.

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <string_view>

namespace sepp::inference {

using Scalars = c10::List<std::optional<at::Scalar>>;
using UnaryConvFn = at::Tensor(
    const at::Tensor&,
    const at::Tensor&,
    const std::optional<at::Tensor>&,
    c10::IntArrayRef,
    c10::IntArrayRef,
    c10::IntArrayRef,
    int64_t,
    std::string_view,
    Scalars,
    std::optional<std::string_view>);
using BinaryConvFn = at::Tensor(
    const at::Tensor&,
    const at::Tensor&,
    const at::Tensor&,
    const std::optional<at::Tensor>&,
    c10::IntArrayRef,
    c10::IntArrayRef,
    c10::IntArrayRef,
    int64_t,
    std::string_view,
    std::optional<at::Scalar>,
    std::optional<std::string_view>,
    Scalars,
    std::optional<std::string_view>);

struct OneDnnOps {
  /// mkldnn::_convolution_pointwise: conv + bias, then a unary post-op ("relu" or "none").
  std::optional<c10::TypedOperatorHandle<UnaryConvFn>> unary;
  /// mkldnn::_convolution_pointwise.binary: conv + bias, "add" of another tensor, then a unary post-op.
  std::optional<c10::TypedOperatorHandle<BinaryConvFn>> binary;
  /// Whether oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX).
  bool bf16 = false;
};

/// The handles, looked up on first use.
const OneDnnOps& onednn_ops();

}  // namespace sepp::inference
