// sepp::se_scale on CUDA: out = [relu](x * scale[n, c] [+ identity]), one pass, on the current stream.

#include "ops/se_scale_common.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace sepp {
namespace ops {
namespace {

template <typename scalar_t, bool kChannelsLast, bool kIdentity>
__global__ void se_scale_kernel(
    const scalar_t* __restrict__ x,
    const scalar_t* __restrict__ s,
    const scalar_t* __restrict__ id,
    scalar_t* __restrict__ out,
    int64_t total,
    int64_t c,
    int64_t hw,
    bool relu) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    // Index of s[n, c] for element i: NCHW i = (n * C + c) * HW + p; NHWC i = (n * HW + p) * C + c.
    const int64_t si = kChannelsLast ? (i / (hw * c)) * c + i % c : i / hw;
    opmath_t v = static_cast<opmath_t>(x[i]) * static_cast<opmath_t>(s[si]);
    if constexpr (kIdentity) {
      v += static_cast<opmath_t>(id[i]);
    }
    if (relu && !(v > opmath_t(0)) && !(v != v)) {
      v = opmath_t(0);
    }
    out[i] = static_cast<scalar_t>(v);
  }
}

at::Tensor se_scale_cuda(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  TORCH_CHECK_VALUE(x.is_cuda(), "sepp::se_scale (CUDA kernel): expected a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const auto o = detail::prepare_se_scale(x, scale, identity);
  const int64_t total = o.out.numel();
  if (total == 0) {
    return o.out;
  }
  const int64_t c = o.x.size(1), hw = o.x.size(2) * o.x.size(3);
  constexpr int threads = 256;
  const int64_t max_blocks = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
  const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, max_blocks));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.x.scalar_type(), "sepp::se_scale (CUDA)", [&] {
    const scalar_t* xp = o.x.const_data_ptr<scalar_t>();
    const scalar_t* sp = o.scale.const_data_ptr<scalar_t>();
    const scalar_t* ip = o.has_identity() ? o.identity.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = o.out.mutable_data_ptr<scalar_t>();
    const bool cl = o.layout == at::MemoryFormat::ChannelsLast;
    if (cl && ip != nullptr) {
      se_scale_kernel<scalar_t, true, true><<<blocks, threads, 0, stream>>>(xp, sp, ip, op, total, c, hw, relu);
    } else if (cl) {
      se_scale_kernel<scalar_t, true, false><<<blocks, threads, 0, stream>>>(xp, sp, ip, op, total, c, hw, relu);
    } else if (ip != nullptr) {
      se_scale_kernel<scalar_t, false, true><<<blocks, threads, 0, stream>>>(xp, sp, ip, op, total, c, hw, relu);
    } else {
      se_scale_kernel<scalar_t, false, false><<<blocks, threads, 0, stream>>>(xp, sp, ip, op, total, c, hw, relu);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return o.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CUDA, m) {
  m.impl("se_scale", &se_scale_cuda);
}

}  // namespace ops
}  // namespace sepp
