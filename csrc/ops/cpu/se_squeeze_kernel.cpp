// sepp::se_squeeze on the CPU: z[n, c] = mean over H x W of x[n, c], accumulated in double (float, double inputs) or
// float (half, bfloat16: at::acc_type), for contiguous and channels_last x. Channels_last float32 and bfloat16 (the
// layouts of an SE-ResNet's activations) sum 64 channels at a time in multiversioned leaves.

#include "ops/cpu/multiversion.h"
#include "ops/kernel_check.h"
#include "ops/se_squeeze_common.h"

#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace sepp::ops {
namespace {

constexpr int64_t kBlock = 64;  // channels summed together: one task's accumulators stay in registers

// sum_block(p, c, rows, acc): acc[k] = sum over `rows` rows (stride c) of p[k], k < kBlock.
#define SEPP_SUM_BLOCK(T, ACC)                                                                            \
  SEPP_MULTIVERSION void sum_block(const T* __restrict p, int64_t c, int64_t rows, ACC* __restrict acc) { \
    ACC a[kBlock] = {};                                                                                   \
    for (int64_t r = 0; r < rows; ++r) {                                                                  \
      const T* __restrict row = p + r * c;                                                                \
      for (int64_t k = 0; k < kBlock; ++k) a[k] += static_cast<ACC>(row[k]);                              \
    }                                                                                                     \
    for (int64_t k = 0; k < kBlock; ++k) acc[k] = a[k];                                                   \
  }
SEPP_SUM_BLOCK(float, double)
SEPP_SUM_BLOCK(c10::BFloat16, float)
#undef SEPP_SUM_BLOCK

template <typename scalar_t>
constexpr bool kHasLeaf = std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, c10::BFloat16>;

template <typename scalar_t, typename out_t>
void se_squeeze_cpu_impl(const scalar_t* x, out_t* z, int64_t n, int64_t c, int64_t hw, bool channels_last) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
  const acc_t inv = hw > 0 ? acc_t(1) / static_cast<acc_t>(hw) : acc_t(0);
  auto mean = [&](acc_t sum) { return static_cast<out_t>(hw > 0 ? sum * inv : acc_t(NAN)); };
  if (!channels_last) {
    // Planes (n, c) of H * W contiguous pixels.
    at::parallel_for(0, n * c, 16, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const scalar_t* p = x + plane * hw;
        acc_t sum = 0;
        for (int64_t k = 0; k < hw; ++k) sum += static_cast<acc_t>(p[k]);
        z[plane] = mean(sum);
      }
    });
    return;
  }
  // Pixels of C contiguous channels: each task sums one block of channels of one sample over all its pixels.
  const int64_t blocks = (c + kBlock - 1) / kBlock;
  at::parallel_for(0, n * blocks, 1, [&](int64_t begin, int64_t end) {
    acc_t sum[kBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task / blocks, c0 = (task % blocks) * kBlock, len = std::min(kBlock, c - c0);
      const scalar_t* p = x + s * hw * c + c0;
      if constexpr (kHasLeaf<scalar_t>) {
        if (len == kBlock) {
          sum_block(p, c, hw, sum);
          for (int64_t j = 0; j < len; ++j) z[s * c + c0 + j] = mean(sum[j]);
          continue;
        }
      }
      std::fill(sum, sum + kBlock, acc_t(0));
      for (int64_t k = 0; k < hw; ++k, p += c) {
        for (int64_t j = 0; j < len; ++j) sum[j] += static_cast<acc_t>(p[j]);
      }
      for (int64_t j = 0; j < len; ++j) z[s * c + c0 + j] = mean(sum[j]);
    }
  });
}

at::Tensor se_squeeze_cpu_kernel(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "sepp::se_squeeze (CPU kernel): expected a CPU tensor, got ", x.device());
  detail::check_se_squeeze(x, dtype);
  const auto layout = detail::kernel_layout(x);
  const auto xc = x.contiguous(layout);
  auto z = detail::se_squeeze_output(x, dtype);
  if (z.numel() == 0) {
    return z;
  }
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  const bool cl = layout == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xc.scalar_type(), "sepp::se_squeeze (CPU)", [&] {
    using in_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "sepp::se_squeeze (CPU, out)", [&] {
      se_squeeze_cpu_impl<in_t, scalar_t>(xc.const_data_ptr<in_t>(), z.mutable_data_ptr<scalar_t>(), n, c, hw, cl);
    });
  });
  return z;
}

// The CPU kernels are trusted unless checking them is asked for (kernel_check.h).
at::Tensor se_squeeze_cpu(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  if (!detail::trusted(&se_squeeze_cpu_kernel, x.device(), x.scalar_type())) {
    return detail::se_squeeze_aten(x, dtype);
  }
  return se_squeeze_cpu_kernel(x, dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CPU, m) {
  m.impl("se_squeeze", &se_squeeze_cpu);
}

}  // namespace sepp::ops
