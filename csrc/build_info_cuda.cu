#include "build_info_cuda.h"

namespace sepp::detail {

std::string cuda_compiler_version() {
  return std::to_string(__CUDACC_VER_MAJOR__) + "." + std::to_string(__CUDACC_VER_MINOR__);
}

}  // namespace sepp::detail
