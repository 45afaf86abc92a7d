// sepp::se_scale on the CPU: out = [relu](x * scale[n, c] [+ identity]), one pass, parallel over rows.

#include "ops/se_scale_common.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

namespace sepp::ops {
namespace {

template <typename scalar_t, bool kChannelsLast>
void se_scale_cpu_impl(
    const scalar_t* x,
    const scalar_t* s,
    const scalar_t* id,
    scalar_t* out,
    int64_t n,
    int64_t c,
    int64_t hw,
    bool relu) {
  using opmath_t = at::opmath_type<scalar_t>;
  auto finish = [&](opmath_t v, int64_t i) {
    if (id != nullptr) {
      v += static_cast<opmath_t>(id[i]);
    }
    if (relu && !(v > opmath_t(0))) {
      v = (v != v) ? v : opmath_t(0);  // relu keeps NaN, as torch.relu does
    }
    return static_cast<scalar_t>(v);
  };
  if constexpr (kChannelsLast) {
    // Rows are pixels (n, h, w), each holding C channels: scale by s[n, :].
    at::parallel_for(0, n * hw, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* srow = s + (row / hw) * c;
        const int64_t base = row * c;
        for (int64_t k = 0; k < c; ++k) {
          out[base + k] = finish(static_cast<opmath_t>(x[base + k]) * static_cast<opmath_t>(srow[k]), base + k);
        }
      }
    });
  } else {
    // Rows are planes (n, c), each holding H * W pixels: one scale per row.
    at::parallel_for(0, n * c, 16, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const opmath_t sv = static_cast<opmath_t>(s[plane]);
        const int64_t base = plane * hw;
        for (int64_t k = 0; k < hw; ++k) {
          out[base + k] = finish(static_cast<opmath_t>(x[base + k]) * sv, base + k);
        }
      }
    });
  }
}

at::Tensor se_scale_cpu(
    const at::Tensor& x_,
    const at::Tensor& scale_,
    const std::optional<at::Tensor>& identity_,
    bool relu) {
  detail::check_se_scale(x_, scale_, identity_);
  TORCH_CHECK_VALUE(x_.device().is_cpu(), "sepp::se_scale (CPU kernel): expected a CPU tensor, got ", x_.device());
  const auto layout = detail::se_scale_layout(x_);
  const bool has_id = identity_.has_value() && identity_->defined();
  const at::Tensor x = x_.contiguous(layout);
  const at::Tensor scale = scale_.reshape({x.size(0), x.size(1)}).contiguous();
  const at::Tensor identity = has_id ? identity_->contiguous(layout) : at::Tensor();
  at::Tensor out = at::empty_like(x, layout);
  if (out.numel() == 0) {
    return out;
  }
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sepp::se_scale (CPU)", [&] {
    const scalar_t* id = has_id ? identity.const_data_ptr<scalar_t>() : nullptr;
    if (layout == at::MemoryFormat::ChannelsLast) {
      se_scale_cpu_impl<scalar_t, true>(
          x.const_data_ptr<scalar_t>(), scale.const_data_ptr<scalar_t>(), id, out.mutable_data_ptr<scalar_t>(), n, c,
          hw, relu);
    } else {
      se_scale_cpu_impl<scalar_t, false>(
          x.const_data_ptr<scalar_t>(), scale.const_data_ptr<scalar_t>(), id, out.mutable_data_ptr<scalar_t>(), n, c,
          hw, relu);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CPU, m) {
  m.impl("se_scale", &se_scale_cpu);
}

}  // namespace sepp::ops
