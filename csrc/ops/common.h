#pragma once

// Helpers shared by the SE operators' kernels, autograd and autocast code.

#include <ATen/core/Tensor.h>

#include <optional>

namespace sepp::ops::detail {

/// The layout the kernels work in (and their outputs have): channels_last when x is channels_last and not also
/// plainly contiguous (ambiguous shapes such as C == 1 or H == W == 1 count as contiguous), else contiguous.
inline at::MemoryFormat kernel_layout(const at::Tensor& x) {
  if (!x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

/// t as an optional operand: nullopt when t is undefined (an absent bias).
inline std::optional<at::Tensor> defined_or_nullopt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

}  // namespace sepp::ops::detail
