#include <sepp/build_info.h>

#if defined(SEPP_WITH_CUDA)
#include "build_info_cuda.h"
#endif

#ifndef SEPP_VERSION
#define SEPP_VERSION "unknown"
#endif
#ifndef SEPP_TORCH_VERSION
#define SEPP_TORCH_VERSION "unknown"
#endif

namespace sepp {

BuildInfo build_info() {
  BuildInfo info;
  info.version = SEPP_VERSION;
  info.torch_version = SEPP_TORCH_VERSION;
#if defined(_OPENMP)
  info.openmp = true;  // at::parallel_for compiled with OpenMP: without it, its loops run on the calling thread
#endif
#if defined(SEPP_WITH_CUDA)
  info.cuda = true;
  info.cuda_version = detail::cuda_compiler_version();
#endif
  return info;
}

}  // namespace sepp
