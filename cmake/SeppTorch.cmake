# Locate LibTorch (from the Python torch when no Torch_DIR is given), and decide whether the CUDA kernels are built.
#
# Sets: Torch_VERSION, TORCH_LIBRARIES, SEPP_TORCH_LIB_DIR, SEPP_WITH_CUDA, SEPP_CUDA_EXTRA_INCLUDES.

if(SEPP_BUILD_PYTHON OR NOT Torch_DIR)
  find_package(Python 3.9 REQUIRED COMPONENTS Interpreter Development.Module)
endif()

set(_sepp_torch_cuda "")
set(_sepp_site "")
if(Python_EXECUTABLE)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import os, torch; print(torch.utils.cmake_prefix_path); print(os.path.dirname(os.path.dirname(torch.__file__))); print(torch.version.cuda or 'none')"
    OUTPUT_VARIABLE _sepp_out RESULT_VARIABLE _sepp_rc ERROR_VARIABLE _sepp_err
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _sepp_rc EQUAL 0)
    message(FATAL_ERROR "sepp: `import torch` failed with ${Python_EXECUTABLE}:\n${_sepp_err}\n"
                        "Install torch first, and build with `pip install --no-build-isolation .`")
  endif()
  string(REPLACE "\n" ";" _sepp_out "${_sepp_out}")
  list(GET _sepp_out 0 _sepp_prefix)
  list(GET _sepp_out 1 _sepp_site)
  list(GET _sepp_out 2 _sepp_torch_cuda)
  if(NOT Torch_DIR)
    list(PREPEND CMAKE_PREFIX_PATH "${_sepp_prefix}")
  endif()
endif()

# CUDA: torch's own CMake config (Caffe2/public/cuda.cmake) enables the CUDA language when torch is a CUDA build,
# so the toolkit must be findable before find_package(Torch).
set(SEPP_WITH_CUDA OFF)
set(SEPP_CUDA_EXTRA_INCLUDES "")
if(NOT _sepp_torch_cuda STREQUAL "none" AND NOT SEPP_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER)
    # A toolkit's own bin/ first: an nvcc on PATH may be a wrapper script outside the toolkit.
    find_program(_sepp_nvcc nvcc PATHS "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin NO_DEFAULT_PATH)
    find_program(_sepp_nvcc nvcc)
    if(_sepp_nvcc)
      set(CMAKE_CUDA_COMPILER "${_sepp_nvcc}" CACHE FILEPATH "")
    endif()
  endif()
  if(CMAKE_CUDA_COMPILER)
    get_filename_component(_sepp_cuda_root "${CMAKE_CUDA_COMPILER}" REALPATH)  # /usr/local/bin/nvcc may be a link
    get_filename_component(_sepp_cuda_root "${_sepp_cuda_root}" DIRECTORY)
    get_filename_component(_sepp_cuda_root "${_sepp_cuda_root}" DIRECTORY)
    if(NOT CUDA_TOOLKIT_ROOT_DIR)
      set(CUDA_TOOLKIT_ROOT_DIR "${_sepp_cuda_root}" CACHE PATH "")
    endif()
    # pip's CUDA wheels (nvidia-*-cu13 / nvidia-*) hold headers and libraries a thin toolkit lacks.
    foreach(_dir "${_sepp_site}/nvidia/cu13" "${_sepp_site}/nvidia/cuda_nvrtc" "${_sepp_site}/nvidia/cuda_runtime")
      if(EXISTS "${_dir}/include")
        list(APPEND SEPP_CUDA_EXTRA_INCLUDES "${_dir}/include")
      endif()
      if(NOT CUDA_nvrtc_LIBRARY)
        file(GLOB _sepp_nvrtc "${_dir}/lib/libnvrtc.so.*")
        list(FILTER _sepp_nvrtc EXCLUDE REGEX "builtins|alt")
        if(_sepp_nvrtc)
          list(GET _sepp_nvrtc 0 _sepp_nvrtc)
          set(CUDA_nvrtc_LIBRARY "${_sepp_nvrtc}" CACHE FILEPATH "")
        endif()
      endif()
    endforeach()
    if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
      # torch ignores CMAKE_CUDA_ARCHITECTURES; Ampere and Hopper, plus PTX for newer GPUs.
      set(TORCH_CUDA_ARCH_LIST "8.0;9.0+PTX")
    endif()
    set(CMAKE_CUDA_ARCHITECTURES OFF)  # the -gencode flags come from TORCH_CUDA_ARCH_LIST
    set(SEPP_WITH_CUDA ON)
  elseif(SEPP_CUDA STREQUAL "ON")
    message(FATAL_ERROR "sepp: SEPP_CUDA=ON but nvcc was not found (set CUDA_HOME or CMAKE_CUDA_COMPILER)")
  else()
    message(WARNING "sepp: torch is a CUDA build (CUDA ${_sepp_torch_cuda}) but nvcc was not found")
  endif()
endif()

find_package(Torch REQUIRED)
if(SEPP_WITH_CUDA)
  if(NOT CAFFE2_USE_CUDA)
    message(FATAL_ERROR "sepp: torch's CMake config did not find CUDA")
  endif()
  include_directories(BEFORE SYSTEM ${SEPP_CUDA_EXTRA_INCLUDES})
endif()
get_filename_component(SEPP_TORCH_LIB_DIR "${TORCH_LIBRARY}" DIRECTORY)
message(STATUS "sepp: torch ${Torch_VERSION} at ${SEPP_TORCH_LIB_DIR}; CUDA kernels: ${SEPP_WITH_CUDA}")
