#include "safetensors_format.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstring>
#include <sstream>

namespace sepp::safetensors {

namespace {

constexpr uint64_t kMaxHeader = 100u * 1024u * 1024u;  // as the safetensors reference implementation

template <typename... Args>
[[noreturn]] void fail(const Args&... what) {
  std::ostringstream s;
  (s << ... << what);
  throw FormatError(s.str());
}

}  // namespace

int64_t element_size(const std::string& dtype) {
  static const std::pair<const char*, int64_t> sizes[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1},
  };
  for (const auto& [name, size] : sizes) {
    if (dtype == name) return size;
  }
  return 0;
}

Parsed parse(const char* bytes, uint64_t size) {
  if (size < 8) fail("truncated file: ", size, " bytes, expected at least 8 (the header length)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian host (checked where tensors are made)
  if (header_len > kMaxHeader) fail("header length ", header_len, " exceeds the limit of ", kMaxHeader, " bytes");
  if (header_len > size - 8) {
    fail("header length ", header_len, " runs past the end of the file (", size - 8, " bytes after it)");
  }
  const auto header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_len, nullptr, false);
  if (header.is_discarded()) fail("the header is not valid JSON");
  if (!header.is_object()) fail("the header is not a JSON object");
  Parsed parsed;
  parsed.data_offset = 8 + header_len;
  const uint64_t data_len = size - parsed.data_offset;

  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    if (!info.is_object()) fail("entry '", name, "' is not a JSON object");
    const auto dt = info.find("dtype");
    const auto sh = info.find("shape");
    const auto off = info.find("data_offsets");
    if (dt == info.end() || sh == info.end() || off == info.end()) {
      fail("entry '", name, "' lacks one of dtype, shape, data_offsets");
    }
    if (!dt->is_string()) fail("entry '", name, "': dtype is not a string");
    Entry e;
    e.name = name;
    e.dtype = dt->get<std::string>();
    e.element_size = element_size(e.dtype);
    if (e.element_size == 0) fail("entry '", name, "': unknown dtype '", e.dtype, "'");
    if (!sh->is_array()) fail("entry '", name, "': shape is not an array");
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) fail("entry '", name, "': shape holds a value that is not a non-negative integer");
      const uint64_t v = d.get<uint64_t>();
      if (v > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, v, &numel)) {
        fail("entry '", name, "': shape ", sh->dump(), " overflows");
      }
      e.shape.push_back(static_cast<int64_t>(v));
    }
    if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
      fail("entry '", name, "': data_offsets must be [begin, end] with non-negative integers");
    }
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.begin > e.end || e.end > data_len) {
      fail(
          "entry '", name, "': data_offsets [", e.begin, ", ", e.end, "] out of range (data section has ", data_len,
          " bytes)");
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(e.element_size), &nbytes) || nbytes != e.end - e.begin) {
      fail(
          "entry '", name, "': ", e.dtype, " of shape ", sh->dump(), " needs ", nbytes, " bytes but data_offsets give ",
          e.end - e.begin);
    }
    parsed.entries.push_back(std::move(e));
  }
  // The data section must be covered exactly once: no overlaps, no gaps, nothing after the last tensor.
  std::vector<const Entry*> by_offset;
  for (const auto& e : parsed.entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expected = 0;
  for (const Entry* e : by_offset) {
    if (e->begin < expected) fail("entry '", e->name, "' overlaps the tensor before it");
    if (e->begin > expected) fail("entry '", e->name, "' leaves a gap of ", e->begin - expected, " bytes before it");
    expected = e->end;
  }
  if (expected != data_len) fail("the data section has ", data_len - expected, " bytes that no tensor uses");
  return parsed;
}

}  // namespace sepp::safetensors
