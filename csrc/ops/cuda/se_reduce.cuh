#pragma once

// Warp and block sums shared by sepp's CUDA kernels.

#include <cuda_runtime.h>

namespace sepp::ops::cuda {

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

/// The sum of v over a 1-D block whose size is a multiple of 32 (at most 1024), valid in thread 0. `shared` holds 32
/// values; the block must reach this call together. Ends with a barrier, so `shared` may be reused right after.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < warps ? shared[lane] : T(0);
  if (warp == 0) v = warp_sum(v);
  __syncthreads();
  return v;
}

}  // namespace sepp::ops::cuda
