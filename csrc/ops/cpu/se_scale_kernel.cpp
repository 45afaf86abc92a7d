// sepp::se_scale and sepp::se_scale_ on the CPU: out = [relu](x * scale[n, c] [+ identity]), one pass, parallel over
// rows. The SE-ResNet tail relu(U * s + identity) on channels_last float32 / bfloat16 runs in multiversioned leaves.

#include "ops/cpu/multiversion.h"
#include "ops/kernel_check.h"
#include "ops/se_scale_common.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/bit_cast.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace sepp::ops {
namespace {

// tail_rows(out, x, s, id, rows, c): rows of out <- relu(x * s + id), s one row of c scales; out may be x.
SEPP_MULTIVERSION void tail_rows(
    float* out, const float* x, const float* __restrict s, const float* __restrict id, int64_t rows, int64_t c) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < c; ++k) {
      const float v = x[r * c + k] * s[k] + id[r * c + k];
      out[r * c + k] = std::max(v, 0.0f);  // keeps NaN, as torch.relu does
    }
  }
}

// bfloat16 as its bits, converted without branches so that the loop vectorizes: widening is a shift, narrowing
// rounds to nearest even and makes NaN 0x7FC0, as c10::BFloat16 does.
inline float bf16_to_float(uint16_t b) {
  return c10::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}
inline uint16_t float_to_bf16(float v) {
  const uint32_t u = c10::bit_cast<uint32_t>(v);
  const auto rounded = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  return v != v ? uint16_t{0x7FC0} : rounded;
}

SEPP_MULTIVERSION void tail_rows(
    uint16_t* out,
    const uint16_t* x,
    const float* __restrict s,
    const uint16_t* __restrict id,
    int64_t rows,
    int64_t c) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < c; ++k) {
      const float v = bf16_to_float(x[r * c + k]) * s[k] + bf16_to_float(id[r * c + k]);
      out[r * c + k] = float_to_bf16(std::max(v, 0.0f));  // keeps NaN, as torch.relu does
    }
  }
}

// relu(x * s + identity), channels_last, float32 or bfloat16 x, float32 scales [N, C].
template <typename T>
void tail_channels_last(T* out, const T* x, const float* s, const T* id, int64_t n, int64_t hw, int64_t c) {
  const int64_t grain = std::max<int64_t>(1, 32768 / c);
  at::parallel_for(0, n * hw, grain, [&](int64_t r0, int64_t r1) {
    while (r0 < r1) {  // split at sample boundaries: one row of scales per sample
      const int64_t i = r0 / hw, stop = std::min(r1, (i + 1) * hw);
      tail_rows(out + r0 * c, x + r0 * c, s + i * c, id + r0 * c, stop - r0, c);
      r0 = stop;
    }
  });
}

template <typename scalar_t, typename scale_t, bool kChannelsLast>
void se_scale_cpu_impl(
    const scalar_t* x,
    const scale_t* s,
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
        const scale_t* srow = s + (row / hw) * c;
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

// out <- [relu](x * scale [+ identity]) for dense operands in `layout`; out may be x.
void se_scale_cpu_into(
    const at::Tensor& out,
    const at::Tensor& x,
    const at::Tensor& scale,
    const at::Tensor& identity,
    at::MemoryFormat layout,
    bool relu) {
  if (out.numel() == 0) {
    return;
  }
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  const bool cl = layout == at::MemoryFormat::ChannelsLast;
  const auto dt = x.scalar_type();
  if (cl && relu && identity.defined() && (dt == at::kFloat || dt == at::kBFloat16)) {
    const auto s = scale.to(at::kFloat).contiguous();
    AT_DISPATCH_SWITCH(dt, "sepp::se_scale (CPU, tail)", AT_DISPATCH_CASE(at::kFloat, [&] {
                         tail_channels_last(
                             out.mutable_data_ptr<float>(), x.const_data_ptr<float>(), s.const_data_ptr<float>(),
                             identity.const_data_ptr<float>(), n, hw, c);
                       }) AT_DISPATCH_CASE(at::kBFloat16, [&] {
                         using T = c10::BFloat16;
                         const auto bits = [](const T* p) { return reinterpret_cast<const uint16_t*>(p); };
                         tail_channels_last(
                             reinterpret_cast<uint16_t*>(out.mutable_data_ptr<T>()), bits(x.const_data_ptr<T>()),
                             s.const_data_ptr<float>(), bits(identity.const_data_ptr<T>()), n, hw, c);
                       }));
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dt, "sepp::se_scale (CPU)", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* ip = identity.defined() ? identity.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    auto run = [&](const auto* sp) {
      using scale_t = std::remove_const_t<std::remove_pointer_t<decltype(sp)>>;
      if (cl) {
        se_scale_cpu_impl<scalar_t, scale_t, true>(xp, sp, ip, op, n, c, hw, relu);
      } else {
        se_scale_cpu_impl<scalar_t, scale_t, false>(xp, sp, ip, op, n, c, hw, relu);
      }
    };
    if (scale.scalar_type() == dt) {
      run(scale.const_data_ptr<scalar_t>());
    } else {
      run(scale.const_data_ptr<float>());  // se_scale_'s float32 scale for a reduced-precision x
    }
  });
}

at::Tensor se_scale_cpu_kernel(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "sepp::se_scale (CPU kernel): expected a CPU tensor, got ", x.device());
  const auto o = detail::prepare_se_scale(x, scale, identity);
  se_scale_cpu_into(o.out, o.x, o.scale, o.identity, o.layout, relu);
  return o.out;
}

// The CPU kernels are trusted unless checking them is asked for (kernel_check.h).
at::Tensor se_scale_cpu(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  if (!detail::trusted(&se_scale_cpu_kernel, x.device(), x.scalar_type())) {
    return detail::se_scale_aten(x, scale, identity, relu);
  }
  return se_scale_cpu_kernel(x, scale, identity, relu);
}

at::Tensor& se_scale_inplace_cpu(
    at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "sepp::se_scale_ (CPU kernel): expected a CPU tensor, got ", x.device());
  if (!detail::trusted(&se_scale_cpu_kernel, x.device(), x.scalar_type())) {  // the same kernel as se_scale's
    return detail::se_scale_inplace_aten(x, scale, identity, relu);
  }
  detail::check_se_scale(x, scale, identity, /*opmath_scale_ok=*/true);
  const auto layout = detail::kernel_layout(x);
  TORCH_CHECK_VALUE(
      x.is_contiguous(layout), "sepp::se_scale_: expected a dense x (contiguous or channels_last), got strides ",
      x.strides());
  const auto s = scale.reshape({x.size(0), x.size(1)}).contiguous();
  const auto id = identity.has_value() && identity->defined() ? identity->contiguous(layout) : at::Tensor();
  se_scale_cpu_into(x, x, s, id, layout, relu);
  return x;
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CPU, m) {
  m.impl("se_scale", &se_scale_cpu);
  m.impl("se_scale_", &se_scale_inplace_cpu);
}

}  // namespace sepp::ops
