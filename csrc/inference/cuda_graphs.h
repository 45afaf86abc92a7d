#pragma once

// One CUDA graph per input shape for a function of one tensor (the optimized model's forward): captured the first
// time a shape is seen, replayed after; at most kMaxCudaGraphs shapes kept, the least recently used dropped first.
// A shape whose capture fails runs without a graph.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace sepp::inference {

/// True when libsepp was built with CUDA (GraphCache then captures; otherwise run() just calls the function).
bool cuda_graphs_built();

/// The most graphs one GraphCache keeps. Each graph holds a private memory pool with every activation of its
/// forward, so a model fed ever new batch or image sizes would otherwise run out of memory: capturing a new shape
/// when this many are held first drops the least recently replayed one (a shape seen again is captured again).
inline constexpr int64_t kMaxCudaGraphs = 8;

class GraphCache {
 public:
  using Forward = std::function<at::Tensor(const at::Tensor&)>;
  GraphCache();
  /// Waits for the last replay and copy-out of every graph (they may still run on any stream) before freeing the
  /// graphs and their memory, and gives the capture streams back.
  ~GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  /// forward(x) for a CUDA tensor x, by replaying the graph captured for x's shape, dtype and device (capturing it
  /// now if there is none: two eager warm-up calls, then the capture, on a stream the cache holds for itself, in
  /// thread-local capture mode, so that other threads' CUDA calls neither fail nor land in the graph). The graph's
  /// input and output are inference tensors, filled and captured under c10::InferenceMode whatever the caller's mode;
  /// x is copied into the graph's input, and the result is a fresh tensor (a copy of the graph's output) made in the
  /// caller's mode (a normal tensor outside inference mode), ordered on the current stream. Calls from several
  /// threads are serialised per cache, and each replay waits for the previous one's copy-out.
  /// When the warm-up or the capture throws, the capture is ended and its graph dropped, and x runs through forward
  /// without a graph on the current stream, as it does on every later call with that shape, dtype and device (not
  /// captured again, and not serialised); the cache's first such failure is reported in a warning naming its cause.
  /// When the current stream is itself capturing (the caller records a graph of its own), forward(x) runs into the
  /// caller's graph.
  at::Tensor run(const at::Tensor& x, const Forward& forward);
  /// How many graphs the cache holds now (at most kMaxCudaGraphs).
  int64_t captured() const;

  struct Entry;
  struct Stream;

 private:
  mutable std::mutex mutex_;
  // Keyed by x's sizes, dtype and device; the most recently replayed first.
  std::list<std::pair<std::vector<int64_t>, std::unique_ptr<Entry>>> entries_;
  std::vector<std::unique_ptr<Stream>> streams_;  // the capture stream of each device captured on
  // Keys whose capture failed, run without a graph; the most recently seen first, a bounded number kept.
  std::list<std::vector<int64_t>> failed_;
  bool warned_ = false;  // a failed capture has been reported
};

}  // namespace sepp::inference
