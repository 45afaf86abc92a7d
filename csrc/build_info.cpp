#include <sepp/build_info.h>

#ifndef SEPP_VERSION
#define SEPP_VERSION "unknown"
#endif
#ifndef SEPP_TORCH_VERSION
#define SEPP_TORCH_VERSION "unknown"
#endif

namespace sepp {

#if defined(SEPP_WITH_CUDA)
namespace detail {
std::string cuda_compiler_version();  // in ops/cuda/se_scale_kernel.cu
}
#endif

BuildInfo build_info() {
  BuildInfo info;
  info.version = SEPP_VERSION;
  info.torch_version = SEPP_TORCH_VERSION;
#if defined(SEPP_WITH_CUDA)
  info.cuda = true;
  info.cuda_version = detail::cuda_compiler_version();
#endif
  return info;
}

}  // namespace sepp
