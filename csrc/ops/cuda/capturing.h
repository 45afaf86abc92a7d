#pragma once

// Whether the current CUDA stream is recording a graph (where a kernel's self-check, which copies to the CPU, cannot
// run).

#include <c10/cuda/CUDAGraphsC10Utils.h>

namespace sepp::ops::detail {

inline bool capturing() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
}

}  // namespace sepp::ops::detail
