# sepp's own build: asks the Python torch where LibTorch is (unless Torch_DIR is given), then SeppFindTorch.cmake.

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

include(${CMAKE_CURRENT_LIST_DIR}/SeppFindTorch.cmake)
