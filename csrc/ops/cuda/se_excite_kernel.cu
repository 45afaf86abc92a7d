// sepp::se_excite on CUDA: s = gate(relu(z W1^T + b1) W2^T + b2) for all N samples in one kernel launch, on the
// current stream, accumulating in float (double for double inputs).
//
// Grid (channel tiles, sample tiles), the sample tiles strided over at most 65535 blocks along y (any N). For each
// of its sample tiles a block loads the z rows of its (up to kSamples) samples into shared memory, computes their
// hidden vector h = relu(z W1^T + b1) (one warp per hidden unit, lanes along C: coalesced rows of W1; NaN kept, as
// torch's relu keeps it), then the gated outputs of its tile of channels (one warp per channel, lanes along R). Each
// channel tile recomputes h, trading W1 re-reads (from L2) for a single launch with no grid-wide barrier; tiles are
// capped at 16.

#include "ops/cuda/capturing.h"
#include "ops/cuda/se_reduce.cuh"
#include "ops/kernel_check.h"
#include "ops/se_excite_common.h"

#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

namespace sepp::ops {
namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxShared = 48 * 1024;  // without opting in to more
constexpr int64_t kMaxGridY = 65535;      // CUDA's limit on gridDim.y

template <typename scalar_t, int kSamples>
__global__ void se_excite_kernel(
    const scalar_t* __restrict__ z,
    const scalar_t* __restrict__ w1,
    const scalar_t* __restrict__ b1,
    const scalar_t* __restrict__ w2,
    const scalar_t* __restrict__ b2,
    scalar_t* __restrict__ out,
    int64_t n,
    int64_t c,
    int64_t r,
    int64_t channels_per_block,
    detail::Gate gate) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  extern __shared__ unsigned char shared_raw[];
  acc_t* zs = reinterpret_cast<acc_t*>(shared_raw);  // [kSamples][C]
  acc_t* hs = zs + kSamples * c;                     // [kSamples][R]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * channels_per_block;
  const int64_t c1 = c0 + channels_per_block < c ? c0 + channels_per_block : c;
  const int64_t sample_tiles = (n + kSamples - 1) / kSamples;
  // The loop bounds are the same for the whole block, so every thread reaches each barrier.
  for (int64_t tile = blockIdx.y; tile < sample_tiles; tile += gridDim.y) {
    const int64_t n0 = tile * kSamples;
    const int here = static_cast<int>(n - n0 < kSamples ? n - n0 : kSamples);
    for (int64_t i = threadIdx.x; i < here * c; i += blockDim.x) zs[i] = static_cast<acc_t>(z[n0 * c + i]);
    __syncthreads();

    for (int64_t j = warp; j < r; j += warps) {
      acc_t sum[kSamples];
#pragma unroll
      for (int s = 0; s < kSamples; ++s) sum[s] = 0;
      for (int64_t k = lane; k < c; k += 32) {
        const acc_t w = static_cast<acc_t>(w1[j * c + k]);
#pragma unroll
        for (int s = 0; s < kSamples; ++s) {
          if (s < here) sum[s] += w * zs[s * c + k];
        }
      }
      const acc_t bias = b1 != nullptr ? static_cast<acc_t>(b1[j]) : acc_t(0);
#pragma unroll
      for (int s = 0; s < kSamples; ++s) {
        const acc_t v = cuda::warp_sum(sum[s]) + bias;
        // ReLU that keeps NaN (v < 0 is false for NaN), like torch's relu and the CPU kernel.
        if (lane == 0 && s < here) hs[s * r + j] = v < acc_t(0) ? acc_t(0) : v;
      }
    }
    __syncthreads();

    for (int64_t i = c0 + warp; i < c1; i += warps) {
      acc_t sum[kSamples];
#pragma unroll
      for (int s = 0; s < kSamples; ++s) sum[s] = 0;
      for (int64_t k = lane; k < r; k += 32) {
        const acc_t w = static_cast<acc_t>(w2[i * r + k]);
#pragma unroll
        for (int s = 0; s < kSamples; ++s) {
          if (s < here) sum[s] += w * hs[s * r + k];
        }
      }
      const acc_t bias = b2 != nullptr ? static_cast<acc_t>(b2[i]) : acc_t(0);
#pragma unroll
      for (int s = 0; s < kSamples; ++s) {
        const acc_t v = cuda::warp_sum(sum[s]) + bias;
        if (lane == 0 && s < here) out[(n0 + s) * c + i] = static_cast<scalar_t>(detail::apply_gate<acc_t>(v, gate));
      }
    }
    __syncthreads();  // every warp is done with zs and hs before the next tile's samples overwrite them
  }
}

template <typename scalar_t, int kSamples>
void launch(
    const at::Tensor& z,
    const at::Tensor& w1,
    const at::Tensor& b1,
    const at::Tensor& w2,
    const at::Tensor& b2,
    at::Tensor& out,
    detail::Gate gate,
    size_t shared) {
  const int64_t n = z.size(0), c = z.size(1), r = w1.size(0);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t sample_tiles = (n + kSamples - 1) / kSamples;
  const int64_t max_tiles = std::max<int64_t>(1, std::min<int64_t>(16, (c + 63) / 64));
  const int64_t tiles = std::clamp<int64_t>((2 * sms + sample_tiles - 1) / sample_tiles, 1, max_tiles);
  const int64_t per_block = (c + tiles - 1) / tiles;
  const dim3 grid(
      static_cast<unsigned>((c + per_block - 1) / per_block),
      static_cast<unsigned>(std::min<int64_t>(sample_tiles, kMaxGridY)));
  se_excite_kernel<scalar_t, kSamples><<<grid, kThreads, shared, at::cuda::getCurrentCUDAStream()>>>(
      z.const_data_ptr<scalar_t>(), w1.const_data_ptr<scalar_t>(),
      b1.defined() ? b1.const_data_ptr<scalar_t>() : nullptr, w2.const_data_ptr<scalar_t>(),
      b2.defined() ? b2.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(), n, c, r, per_block,
      gate);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor se_excite_cuda_kernel(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  TORCH_CHECK_VALUE(z.is_cuda(), "sepp::se_excite (CUDA kernel): expected CUDA tensors, got ", z.device());
  detail::check_se_excite(z, w1, b1, w2, b2);
  const auto g = detail::parse_gate(gate, "sepp::se_excite");
  const c10::cuda::CUDAGuard guard(z.device());
  const auto zc = z.contiguous(), w1c = w1.contiguous(), w2c = w2.contiguous();
  const auto b1c = b1 && b1->defined() ? b1->contiguous() : at::Tensor();
  const auto b2c = b2 && b2->defined() ? b2->contiguous() : at::Tensor();
  auto out = at::empty({z.size(0), z.size(1)}, z.options());
  if (out.numel() == 0) {
    return out;
  }
  const int64_t n = z.size(0), c = z.size(1), r = w1.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "sepp::se_excite (CUDA)", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    const size_t row = static_cast<size_t>(c + r) * sizeof(acc_t);  // one sample's z and h in shared memory
    TORCH_CHECK_VALUE(
        row <= kMaxShared, "sepp::se_excite (CUDA kernel): expected C + R <= ", kMaxShared / sizeof(acc_t), " for ",
        z.scalar_type(), ", got C = ", c, ", R = ", r);
    if (n > 1 && 4 * row <= kMaxShared) {
      launch<scalar_t, 4>(zc, w1c, b1c, w2c, b2c, out, g, 4 * row);
    } else {
      launch<scalar_t, 1>(zc, w1c, b1c, w2c, b2c, out, g, row);
    }
  });
  return out;
}

// The kernel once it has passed its self-check on this device in this dtype; ATen's operators otherwise.
at::Tensor se_excite_cuda(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  TORCH_CHECK_VALUE(z.is_cuda(), "sepp::se_excite (CUDA kernel): expected CUDA tensors, got ", z.device());
  const c10::cuda::CUDAGuard guard(z.device());
  if (!detail::trusted(&se_excite_cuda_kernel, z.device(), z.scalar_type(), &detail::capturing)) {
    return detail::se_excite_aten(z, w1, b1, w2, b2, gate);
  }
  return se_excite_cuda_kernel(z, w1, b1, w2, b2, gate);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CUDA, m) {
  m.impl("se_excite", &se_excite_cuda);
}

}  // namespace sepp::ops
