// sepp::se_scale on CUDA: out = [relu](x * scale[n, c] [+ identity]), one pass, on the current stream.
//
// Contiguous (NCHW) x is a sequence of planes (n, c) of H * W pixels, plane p scaled by s[p]. Block rows (threadIdx.y)
// take planes, strided over the grid along x; the threads of a row take the plane's pixels (and, when the planes are
// too few to fill the GPU, so do the blocks along y). A thread reads its plane's scale once and divides nothing.
// Channels_last (NHWC) x is a sequence of pixel rows (n, h, w) of C channels, the rows of sample n scaled by s[n, :].
// Threads along x take the channels (the grid along x covers C once), block rows take the pixel rows, strided over at
// most 65535 blocks along y (any N * H * W). A thread keeps its channels' scales in registers and divides by H * W
// only when its row has moved on to another sample.
// Both move 16 bytes per load and store when x, identity and out are 16-byte aligned: a plane as an unaligned head,
// aligned vectors and a tail; a row of channels when C is a multiple of the vector width. Otherwise one element at a
// time. Indices are 64-bit.

#include "ops/cuda/capturing.h"
#include "ops/kernel_check.h"
#include "ops/se_scale_common.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace sepp {
namespace ops {
namespace {

constexpr int kThreads = 256;         // per block
constexpr int kVecBytes = 16;         // one vector load or store
constexpr int kBlocksPerSM = 16;      // the blocks per SM a grid aims for; grid-stride loops do the rest
constexpr int64_t kMaxGridY = 65535;  // CUDA's limit on gridDim.y

// kVec consecutive elements, loaded and stored as one access.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// out[i + j] = [relu](x[i + j] * s[j] [+ id[i + j]]) for j < kVec; element i aligned to a Pack in x, id and out.
template <typename scalar_t, int kVec, bool kIdentity>
__device__ __forceinline__ void scale_pack(
    const scalar_t* __restrict__ x,
    const scalar_t* __restrict__ id,
    scalar_t* __restrict__ out,
    int64_t i,
    const at::opmath_type<scalar_t> (&s)[kVec],
    bool relu) {
  using opmath_t = at::opmath_type<scalar_t>;
  using pack_t = Pack<scalar_t, kVec>;
  const pack_t xv = *reinterpret_cast<const pack_t*>(x + i);
  pack_t iv{};
  if constexpr (kIdentity) {
    iv = *reinterpret_cast<const pack_t*>(id + i);
  }
  pack_t ov;
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    opmath_t v = static_cast<opmath_t>(xv.v[j]) * s[j];
    if constexpr (kIdentity) {
      v += static_cast<opmath_t>(iv.v[j]);
    }
    if (relu && !(v > opmath_t(0))) {
      v = (v != v) ? v : opmath_t(0);  // relu keeps NaN, as torch.relu and the CPU kernel do
    }
    ov.v[j] = static_cast<scalar_t>(v);
  }
  *reinterpret_cast<pack_t*>(out + i) = ov;
}

// Contiguous x: `planes` planes of hw elements, plane p scaled by s[p]. x, id and out aligned to a Pack.
template <typename scalar_t, int kVec, bool kIdentity>
__global__ void se_scale_planes_kernel(
    const scalar_t* __restrict__ x,
    const scalar_t* __restrict__ s,
    const scalar_t* __restrict__ id,
    scalar_t* __restrict__ out,
    int64_t planes,
    int64_t hw,
    bool relu) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t lane = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;  // this thread's place in a plane
  const int64_t lanes = static_cast<int64_t>(gridDim.y) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; p < planes;
       p += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const opmath_t s1[1] = {static_cast<opmath_t>(s[p])};
    opmath_t sv[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) sv[j] = s1[0];
    const int64_t base = p * hw;
    // Element 0 is aligned, so the plane's first aligned element is the first multiple of kVec from base: `head`
    // elements before it, then `packs` whole packs, then the elements from `tail` on.
    const int64_t lead = (kVec - base % kVec) % kVec;
    const int64_t head = lead < hw ? lead : hw;
    const int64_t packs = (hw - head) / kVec;
    const int64_t tail = head + packs * kVec;
    for (int64_t k = lane; k < packs; k += lanes) {
      scale_pack<scalar_t, kVec, kIdentity>(x, id, out, base + head + k * kVec, sv, relu);
    }
    for (int64_t k = lane; k < head; k += lanes) {
      scale_pack<scalar_t, 1, kIdentity>(x, id, out, base + k, s1, relu);
    }
    for (int64_t k = tail + lane; k < hw; k += lanes) {
      scale_pack<scalar_t, 1, kIdentity>(x, id, out, base + k, s1, relu);
    }
  }
}

// Channels_last x: `rows` rows of c channels, rows [n * hw, (n + 1) * hw) scaled by s[n, :]. kVec divides c; x, id
// and out aligned to a Pack. Grid thread (blockIdx.x * blockDim.x + threadIdx.x) takes channels [c0, c0 + kVec).
template <typename scalar_t, int kVec, bool kIdentity>
__global__ void se_scale_rows_kernel(
    const scalar_t* __restrict__ x,
    const scalar_t* __restrict__ s,
    const scalar_t* __restrict__ id,
    scalar_t* __restrict__ out,
    int64_t rows,
    int64_t c,
    int64_t hw,
    bool relu) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  if (c0 >= c) {
    return;
  }
  opmath_t sv[kVec];
  int64_t sample_end = 0;  // sv holds the scales of the rows before this one (of none yet)
  for (int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    if (r >= sample_end) {  // a row of a later sample (r only grows): its scales
      const int64_t n = r / hw;
      sample_end = (n + 1) * hw;
#pragma unroll
      for (int j = 0; j < kVec; ++j) sv[j] = static_cast<opmath_t>(s[n * c + c0 + j]);
    }
    scale_pack<scalar_t, kVec, kIdentity>(x, id, out, r * c + c0, sv, relu);
  }
}

template <typename scalar_t, int kVec, bool kIdentity>
void launch_planes(
    const scalar_t* x,
    const scalar_t* s,
    const scalar_t* id,
    scalar_t* out,
    int64_t planes,
    int64_t hw,
    bool relu,
    int64_t max_blocks,
    cudaStream_t stream) {
  // One thread per pack of a plane, up to a block; the block's other rows take further planes.
  const int64_t packs = (hw + kVec - 1) / kVec;
  const int tx = static_cast<int>(std::min<int64_t>(packs, kThreads));
  const int ty = kThreads / tx;
  const int64_t plane_blocks = (planes + ty - 1) / ty;
  const int64_t gx = std::min(plane_blocks, max_blocks);
  // Planes too few to fill the GPU: each plane's packs split over blocks along y as well.
  const int64_t gy =
      plane_blocks >= max_blocks
          ? 1
          : std::min<int64_t>({(max_blocks + plane_blocks - 1) / plane_blocks, (packs + tx - 1) / tx, kMaxGridY});
  se_scale_planes_kernel<scalar_t, kVec, kIdentity>
      <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
         dim3(static_cast<unsigned>(tx), static_cast<unsigned>(ty)), 0, stream>>>(x, s, id, out, planes, hw, relu);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int kVec, bool kIdentity>
void launch_rows(
    const scalar_t* x,
    const scalar_t* s,
    const scalar_t* id,
    scalar_t* out,
    int64_t rows,
    int64_t c,
    int64_t hw,
    bool relu,
    int64_t max_blocks,
    cudaStream_t stream) {
  // One thread per pack of a row: a row in one block when it fits, else split evenly over blocks of warps.
  const int64_t packs = c / kVec;
  int64_t tx = packs;
  if (packs > kThreads) {
    const int64_t split = (packs + kThreads - 1) / kThreads;
    tx = ((packs + split - 1) / split + 31) / 32 * 32;  // at most kThreads
  }
  const int ty = kThreads / static_cast<int>(tx);
  const int64_t gx = (packs + tx - 1) / tx;
  TORCH_CHECK_VALUE(gx <= std::numeric_limits<int32_t>::max(), "sepp::se_scale (CUDA kernel): too many channels: ", c);
  const int64_t gy = std::min<int64_t>({(rows + ty - 1) / ty, std::max<int64_t>(1, max_blocks / gx), kMaxGridY});
  se_scale_rows_kernel<scalar_t, kVec, kIdentity>
      <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
         dim3(static_cast<unsigned>(tx), static_cast<unsigned>(ty)), 0, stream>>>(x, s, id, out, rows, c, hw, relu);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool vector_aligned(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % kVecBytes == 0;
}

template <typename scalar_t, bool kIdentity>
void launch(const detail::SEScaleOperands& o, bool relu) {
  constexpr int kVec = static_cast<int>(kVecBytes / sizeof(scalar_t));
  static_assert(kVec >= 1 && kVec * static_cast<int>(sizeof(scalar_t)) == kVecBytes, "whole elements per vector");
  const scalar_t* x = o.x.const_data_ptr<scalar_t>();
  const scalar_t* s = o.scale.const_data_ptr<scalar_t>();
  const scalar_t* id = kIdentity ? o.identity.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* out = o.out.mutable_data_ptr<scalar_t>();
  const int64_t n = o.x.size(0), c = o.x.size(1), hw = o.x.size(2) * o.x.size(3);
  const int64_t max_blocks =
      static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * kBlocksPerSM;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const bool aligned = vector_aligned(x) && vector_aligned(out) && (!kIdentity || vector_aligned(id));
  if (o.layout == at::MemoryFormat::ChannelsLast) {
    if (aligned && c % kVec == 0) {
      launch_rows<scalar_t, kVec, kIdentity>(x, s, id, out, n * hw, c, hw, relu, max_blocks, stream);
    } else {
      launch_rows<scalar_t, 1, kIdentity>(x, s, id, out, n * hw, c, hw, relu, max_blocks, stream);
    }
  } else if (aligned) {
    launch_planes<scalar_t, kVec, kIdentity>(x, s, id, out, n * c, hw, relu, max_blocks, stream);
  } else {
    launch_planes<scalar_t, 1, kIdentity>(x, s, id, out, n * c, hw, relu, max_blocks, stream);
  }
}

at::Tensor se_scale_cuda_kernel(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  TORCH_CHECK_VALUE(x.is_cuda(), "sepp::se_scale (CUDA kernel): expected a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const auto o = detail::prepare_se_scale(x, scale, identity);
  if (o.out.numel() == 0) {
    return o.out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.x.scalar_type(), "sepp::se_scale (CUDA)", [&] {
    if (o.has_identity()) {
      launch<scalar_t, true>(o, relu);
    } else {
      launch<scalar_t, false>(o, relu);
    }
  });
  return o.out;
}

// The kernel once it has passed its self-check on this device in this dtype; ATen's operators otherwise.
at::Tensor se_scale_cuda(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  TORCH_CHECK_VALUE(x.is_cuda(), "sepp::se_scale (CUDA kernel): expected a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  if (!detail::trusted(&se_scale_cuda_kernel, x.device(), x.scalar_type(), &detail::capturing)) {
    return detail::se_scale_aten(x, scale, identity, relu);
  }
  return se_scale_cuda_kernel(x, scale, identity, relu);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CUDA, m) {
  m.impl("se_scale", &se_scale_cuda);
}

}  // namespace ops
}  // namespace sepp
