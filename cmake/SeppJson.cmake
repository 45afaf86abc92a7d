# nlohmann-json (header-only, used privately): the PyPI package `nlohmann-json` (a build requirement of the wheel) in
# the Python environment that builds sepp, else an installed CMake package (e.g. Debian's nlohmann-json3-dev).
if(NOT TARGET nlohmann_json::nlohmann_json)
  if(NOT Python_EXECUTABLE)
    find_package(Python 3.9 COMPONENTS Interpreter QUIET)
  endif()
  set(_sepp_json_include "")
  if(Python_EXECUTABLE)
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c
        "import importlib.util, os; s = importlib.util.find_spec('nlohmann_json'); print(os.path.join(list(s.submodule_search_locations)[0], 'include') if s else '')"
      OUTPUT_VARIABLE _sepp_json_include OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  if(_sepp_json_include AND EXISTS "${_sepp_json_include}/nlohmann/json.hpp")
    message(STATUS "sepp: nlohmann-json from ${_sepp_json_include}")
    add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
    target_include_directories(nlohmann_json::nlohmann_json INTERFACE "${_sepp_json_include}")
  else()
    find_package(nlohmann_json 3.2 REQUIRED)
  endif()
endif()
