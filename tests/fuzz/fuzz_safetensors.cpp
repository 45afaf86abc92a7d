// libFuzzer target for the safetensors reader (csrc/safetensors_format.cpp), built with AddressSanitizer and UBSan.
// Any input must either parse into ranges that lie inside the buffer, or raise FormatError: a crash, a sanitizer
// report, or any other exception is a finding.

#include "safetensors_format.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto parsed = sepp::safetensors::parse(reinterpret_cast<const char*>(data), size);
    // Read every byte the parser promised is there: out-of-bounds ranges show up as ASan reports.
    volatile uint8_t sink = 0;
    const uint8_t* section = data + parsed.data_offset;
    for (const auto& e : parsed.entries) {
      for (uint64_t i = e.begin; i < e.end; ++i) sink = sink ^ section[i];
    }
  } catch (const sepp::safetensors::FormatError&) {
  }
  return 0;
}
