#pragma once

// One CUDA graph per input shape for a function of one tensor (the optimized model's forward): captured the first
// time a shape is seen, replayed after.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace sepp::inference {

/// True when libsepp was built with CUDA (GraphCache then captures; otherwise run() just calls the function).
bool cuda_graphs_built();

class GraphCache {
 public:
  using Forward = std::function<at::Tensor(const at::Tensor&)>;
  GraphCache();
  ~GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  /// forward(x) for a CUDA tensor x, by replaying the graph captured for x's shape and dtype (capturing it now if
  /// there is none: two eager warm-up calls, then the capture, on a side stream). x is copied into the graph's own
  /// input; the result is a fresh tensor (a copy of the graph's output), ordered on the current stream. Calls from
  /// several threads are serialised per cache, and each replay waits for the previous one's copy-out.
  at::Tensor run(const at::Tensor& x, const Forward& forward);
  /// How many graphs have been captured.
  int64_t captured() const;

  struct Entry;

 private:
  mutable std::mutex mutex_;
  std::map<std::vector<int64_t>, std::unique_ptr<Entry>> entries_;
};

}  // namespace sepp::inference
