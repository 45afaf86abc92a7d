#pragma once

#include <sepp/export.h>

#include <string>

namespace sepp {

struct BuildInfo {
  std::string version;        ///< sepp's version
  std::string torch_version;  ///< the LibTorch sepp was compiled against
  bool cuda = false;          ///< whether the CUDA kernels are compiled in
  std::string cuda_version;   ///< nvcc's version when they are, else empty
  bool openmp = false;        ///< whether the CPU kernels split their loops over torch's OpenMP threads
};

SEPP_API BuildInfo build_info();

}  // namespace sepp
