// sepp::se_squeeze on the CPU: z[n, c] = mean over H x W of x[n, c], accumulated in double (float, double inputs) or
// float (half, bfloat16: at::acc_type), for contiguous and channels_last x. Channels_last x is read in memory order:
// each task adds a run of whole pixel rows (all C channels) into its own partial sums, float32 and bfloat16 in
// multiversioned leaves, and the partial sums of a sample are added in a fixed order. The runs depend on the shape
// only, so the result does not depend on the number of threads.

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
#include <memory>

namespace sepp::ops {
namespace {

// A task's run of pixels holds about this many elements: long enough to stream, short enough that batch 1 splits.
constexpr int64_t kRunElems = 1 << 16;

// add_rows(p, c, rows, acc): acc[k] += sum over `rows` rows (stride c) of p[k], k < c, read in memory order.
template <typename T, typename ACC>
void add_rows_generic(const T* __restrict p, int64_t c, int64_t rows, ACC* __restrict acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict row = p + r * c;
    for (int64_t k = 0; k < c; ++k) acc[k] += static_cast<ACC>(row[k]);
  }
}
#define SEPP_ADD_ROWS(T, ACC)                                                                            \
  SEPP_MULTIVERSION void add_rows(const T* __restrict p, int64_t c, int64_t rows, ACC* __restrict acc) { \
    add_rows_generic(p, c, rows, acc);                                                                   \
  }
SEPP_ADD_ROWS(float, double)
SEPP_ADD_ROWS(c10::BFloat16, float)
#undef SEPP_ADD_ROWS

template <typename T, typename ACC>
void add_rows(const T* p, int64_t c, int64_t rows, ACC* acc) {
  add_rows_generic(p, c, rows, acc);
}

template <typename scalar_t, typename out_t>
void se_squeeze_cpu_impl(const scalar_t* x, out_t* z, int64_t n, int64_t c, int64_t hw, bool channels_last) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
  if (hw == 0) {  // the mean of no pixels
    std::fill(z, z + n * c, static_cast<out_t>(acc_t(NAN)));
    return;
  }
  const acc_t inv = acc_t(1) / static_cast<acc_t>(hw);
  if (!channels_last) {
    // Planes (n, c) of H * W contiguous pixels.
    at::parallel_for(0, n * c, 16, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const scalar_t* p = x + plane * hw;
        acc_t sum = 0;
        for (int64_t k = 0; k < hw; ++k) sum += static_cast<acc_t>(p[k]);
        z[plane] = static_cast<out_t>(sum * inv);
      }
    });
    return;
  }
  // Pixels of C contiguous channels, cut into runs of whole pixels; partial[s][run][c] holds each run's sums.
  const int64_t run_rows = std::max<int64_t>(1, kRunElems / c), runs = (hw + run_rows - 1) / run_rows;
  const std::unique_ptr<acc_t[]> partial(new acc_t[n * runs * c]);  // uninitialized: each task zeroes its own sums
  at::parallel_for(0, n * runs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task / runs, r0 = (task % runs) * run_rows, rows = std::min(run_rows, hw - r0);
      acc_t* acc = partial.get() + task * c;
      std::fill(acc, acc + c, acc_t(0));
      add_rows(x + (s * hw + r0) * c, c, rows, acc);
    }
  });
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      acc_t* first = partial.get() + s * runs * c;
      for (int64_t r = 1; r < runs; ++r) {
        const acc_t* part = first + r * c;
        for (int64_t k = 0; k < c; ++k) first[k] += part[k];
      }
      for (int64_t k = 0; k < c; ++k) z[s * c + k] = static_cast<out_t>(first[k] * inv);
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
