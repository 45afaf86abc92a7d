#pragma once

#include <sepp/export.h>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

namespace sepp {

/// Named tensors in file order.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// Reads a safetensors file (8-byte little-endian header length, JSON header of
/// name -> {dtype, shape, data_offsets}, raw little-endian data). Every size and offset is checked before any byte is
/// read: a truncated file, a header past the end, malformed JSON, an unknown dtype, a shape that disagrees with its
/// byte count, or offsets out of range, overlapping or leaving gaps throw c10::ValueError naming the file and the
/// problem. Returns CPU tensors.
SEPP_API NamedTensors read_safetensors(const std::string& path);

/// Writes tensors as a safetensors file, atomically: into a temporary file in the same folder, flushed to disk, then
/// renamed over `path`. A failure at any point leaves the previous file as it was.
SEPP_API void write_safetensors(const NamedTensors& tensors, const std::string& path);

/// Saves a module's parameters and buffers (the names of its state_dict) with write_safetensors.
SEPP_API void save_weights(const torch::nn::Module& module, const std::string& path);

/// Loads a file written by save_weights (or by Python's sepp.save_weights / safetensors) into a module: every
/// parameter and buffer must be in the file with the module's shape, and the file must hold nothing else. Values are
/// converted to each tensor's dtype and device. All checks happen before any value is copied: after a failed load
/// the module is unchanged.
SEPP_API void load_weights(torch::nn::Module& module, const std::string& path);

/// The same through a module holder (`sepp::ResNet`, `torch::nn::Linear`, ...), as torch::save / torch::load take it.
template <typename M>
void save_weights(const torch::nn::ModuleHolder<M>& module, const std::string& path) {
  save_weights(*module.ptr(), path);
}
template <typename M>
void load_weights(const torch::nn::ModuleHolder<M>& module, const std::string& path) {
  load_weights(*module.ptr(), path);
}

}  // namespace sepp
