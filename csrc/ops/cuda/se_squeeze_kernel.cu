// sepp::se_squeeze on CUDA: z[n, c] = mean over H x W of x[n, c], accumulated in float (double for double inputs),
// on the current stream. Contiguous x: one block per (n, c) plane. Channels_last x: threads along channels (coalesced
// rows), the samples strided over at most 65535 blocks along y (any N), the pixels split over enough blocks to fill
// the GPU, partial sums combined by a second small kernel (no atomics: the result does not depend on scheduling).

#include "ops/cuda/capturing.h"
#include "ops/cuda/se_reduce.cuh"
#include "ops/kernel_check.h"
#include "ops/se_squeeze_common.h"

#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

namespace sepp::ops {
namespace {

template <typename acc_t>
__device__ __forceinline__ acc_t mean_of(acc_t sum, int64_t count) {
  return count > 0 ? sum / static_cast<acc_t>(count) : acc_t(NAN);
}

template <typename scalar_t, typename out_t>
__global__ void squeeze_planes_kernel(
    const scalar_t* __restrict__ x, out_t* __restrict__ z, int64_t planes, int64_t hw) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  __shared__ acc_t shared[32];
  for (int64_t plane = blockIdx.x; plane < planes; plane += gridDim.x) {
    const scalar_t* p = x + plane * hw;
    acc_t sum = 0;
    for (int64_t k = threadIdx.x; k < hw; k += blockDim.x) sum += static_cast<acc_t>(p[k]);
    sum = cuda::block_sum(sum, shared);
    if (threadIdx.x == 0) z[plane] = static_cast<out_t>(mean_of(sum, hw));
  }
}

constexpr int kChannels = 32;         // threads along C (one warp: a coalesced row segment)
constexpr int kRows = 8;              // threads along the pixels
constexpr int64_t kMaxGridY = 65535;  // CUDA's limit on gridDim.y

// x [N, P, C]; grid (ceil(C / 32), min(N, 65535), splits), samples n = blockIdx.y + k * gridDim.y; block (32, 8).
// splits == 1: writes z; else partial [splits, N, C].
template <typename scalar_t, typename out_t>
__global__ void squeeze_nhwc_kernel(
    const scalar_t* __restrict__ x,
    at::acc_type<scalar_t, true>* __restrict__ partial,
    out_t* __restrict__ z,
    int64_t samples,
    int64_t c,
    int64_t p,
    int64_t chunk) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  __shared__ acc_t shared[kRows][kChannels + 1];
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  const int64_t p0 = static_cast<int64_t>(blockIdx.z) * chunk;
  const int64_t p1 = p0 + chunk < p ? p0 + chunk : p;
  // The loop bounds are the same for the whole block, so every thread reaches each barrier.
  for (int64_t n = blockIdx.y; n < samples; n += gridDim.y) {
    acc_t sum = 0;
    if (ch < c) {
      for (int64_t k = p0 + threadIdx.y; k < p1; k += kRows) sum += static_cast<acc_t>(x[(n * p + k) * c + ch]);
    }
    shared[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
      acc_t total = 0;
      for (int j = 0; j < kRows; ++j) total += shared[j][threadIdx.x];
      if (gridDim.z == 1) {
        z[n * c + ch] = static_cast<out_t>(mean_of(total, p));
      } else {
        partial[(static_cast<int64_t>(blockIdx.z) * samples + n) * c + ch] = total;
      }
    }
    __syncthreads();  // shared is read before the next sample's sums overwrite it
  }
}

template <typename acc_t, typename out_t>
__global__ void squeeze_finish_kernel(
    const acc_t* __restrict__ partial, out_t* __restrict__ z, int64_t nc, int splits, int64_t p) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < nc;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    acc_t total = 0;
    for (int s = 0; s < splits; ++s) total += partial[s * nc + i];
    z[i] = static_cast<out_t>(mean_of(total, p));
  }
}

template <typename scalar_t, typename out_t>
void launch(const at::Tensor& x, at::Tensor& z, bool channels_last) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  const int64_t n = x.size(0), c = x.size(1), p = x.size(2) * x.size(3);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  auto stream = at::cuda::getCurrentCUDAStream();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  out_t* zp = z.mutable_data_ptr<out_t>();
  if (!channels_last) {
    const int threads = p >= 256 ? 256 : static_cast<int>(std::max<int64_t>(32, (p + 31) / 32 * 32));
    const int64_t blocks = std::min<int64_t>(n * c, static_cast<int64_t>(sms) * 32);
    squeeze_planes_kernel<scalar_t, out_t><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(xp, zp, n * c, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t cblocks = (c + kChannels - 1) / kChannels;
  // Enough blocks for ~4 per SM, each still summing at least 32 pixels per thread row.
  int64_t splits = std::max<int64_t>(1, (4 * sms + cblocks * n - 1) / (cblocks * n));
  splits = std::min<int64_t>({splits, (p + kRows * 32 - 1) / (kRows * 32), 64});
  splits = std::max<int64_t>(splits, 1);
  const int64_t chunk = (p + splits - 1) / splits;
  splits = std::max<int64_t>(1, (p + chunk - 1) / chunk);
  at::Tensor partial;
  acc_t* pp = nullptr;
  if (splits > 1) {
    partial = at::empty({splits, n, c}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    pp = partial.mutable_data_ptr<acc_t>();
  }
  const dim3 grid(
      static_cast<unsigned>(cblocks), static_cast<unsigned>(std::min<int64_t>(n, kMaxGridY)),
      static_cast<unsigned>(splits));
  squeeze_nhwc_kernel<scalar_t, out_t><<<grid, dim3(kChannels, kRows), 0, stream>>>(xp, pp, zp, n, c, p, chunk);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (splits > 1) {
    const int64_t nc = n * c;
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((nc + threads - 1) / threads, static_cast<int64_t>(sms) * 8);
    squeeze_finish_kernel<acc_t, out_t>
        <<<static_cast<unsigned>(blocks), threads, 0, stream>>>(pp, zp, nc, static_cast<int>(splits), p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor se_squeeze_cuda_kernel(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  TORCH_CHECK_VALUE(x.is_cuda(), "sepp::se_squeeze (CUDA kernel): expected a CUDA tensor, got ", x.device());
  detail::check_se_squeeze(x, dtype);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto layout = detail::kernel_layout(x);
  const auto xc = x.contiguous(layout);
  const bool cl = layout == at::MemoryFormat::ChannelsLast;
  const auto out_dtype = dtype.value_or(x.scalar_type());
  at::Tensor result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xc.scalar_type(), "sepp::se_squeeze (CUDA)", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    constexpr auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
    // Written directly in x's dtype or the accumulation dtype; any other dtype is a cast of the latter.
    const bool same = out_dtype == xc.scalar_type();
    auto z = at::empty({x.size(0), x.size(1)}, x.options().dtype(same ? out_dtype : acc_dtype));
    if (z.numel() > 0) {
      if (same) {
        launch<scalar_t, scalar_t>(xc, z, cl);
      } else {
        launch<scalar_t, acc_t>(xc, z, cl);
      }
    }
    result = z.scalar_type() == out_dtype ? z : z.to(out_dtype);
  });
  return result;
}

// The kernel once it has passed its self-check on this device in this dtype; ATen's operators otherwise.
at::Tensor se_squeeze_cuda(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  TORCH_CHECK_VALUE(x.is_cuda(), "sepp::se_squeeze (CUDA kernel): expected a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  if (!detail::trusted(&se_squeeze_cuda_kernel, x.device(), x.scalar_type(), &detail::capturing)) {
    return detail::se_squeeze_aten(x, dtype);
  }
  return se_squeeze_cuda_kernel(x, dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CUDA, m) {
  m.impl("se_squeeze", &se_squeeze_cuda);
}

}  // namespace sepp::ops
