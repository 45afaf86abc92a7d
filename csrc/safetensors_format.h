#pragma once

// The safetensors container, parsed and checked without LibTorch (so the fuzz target can build it alone with
// sanitizers). libsepp's weights.cpp turns the entries into tensors.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sepp::safetensors {

/// What is wrong with a file; the message names the problem (the caller adds the file's name).
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Entry {
  std::string name;
  std::string dtype;  ///< one of kDTypeNames
  int64_t element_size = 0;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  ///< byte range within the data section
};

struct Parsed {
  std::vector<Entry> entries;  ///< in header order
  uint64_t data_offset = 0;    ///< where the data section starts in the file
};

/// Byte size of one element of a safetensors dtype ("F32" -> 4), 0 when unknown.
int64_t element_size(const std::string& dtype);

/// Checks every size and offset of a whole file's bytes: header length within the file and under 100 MiB, a JSON
/// object header, known dtypes, shapes whose byte count equals their data_offsets range, ranges inside the data
/// section covering it exactly once (no overlap, no gap, nothing left over). Throws FormatError otherwise.
Parsed parse(const char* bytes, uint64_t size);

}  // namespace sepp::safetensors
