#pragma once

#include <string>

namespace sepp::detail {

/// nvcc's version ("major.minor"), defined in build_info_cuda.cu, which only a CUDA build compiles.
std::string cuda_compiler_version();

}  // namespace sepp::detail
