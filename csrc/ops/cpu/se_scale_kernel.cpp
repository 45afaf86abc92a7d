// sepp::se_scale on the CPU: out = [relu](x * scale[n, c] [+ identity]), one pass, parallel over rows.

#include "ops/se_scale_common.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
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
    const at::Tensor& x,
    const at::Tensor& scale,
    const std::optional<at::Tensor>& identity,
    bool relu) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "sepp::se_scale (CPU kernel): expected a CPU tensor, got ", x.device());
  const auto o = detail::prepare_se_scale(x, scale, identity);
  if (o.out.numel() == 0) {
    return o.out;
  }
  const int64_t n = o.x.size(0), c = o.x.size(1), hw = o.x.size(2) * o.x.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.x.scalar_type(), "sepp::se_scale (CPU)", [&] {
    const scalar_t* xp = o.x.const_data_ptr<scalar_t>();
    const scalar_t* sp = o.scale.const_data_ptr<scalar_t>();
    const scalar_t* ip = o.has_identity() ? o.identity.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = o.out.mutable_data_ptr<scalar_t>();
    if (o.layout == at::MemoryFormat::ChannelsLast) {
      se_scale_cpu_impl<scalar_t, true>(xp, sp, ip, op, n, c, hw, relu);
    } else {
      se_scale_cpu_impl<scalar_t, false>(xp, sp, ip, op, n, c, hw, relu);
    }
  });
  return o.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CPU, m) {
  m.impl("se_scale", &se_scale_cpu);
}

}  // namespace sepp::ops
