// GraphCache: at::cuda::CUDAGraph per input shape, least recently used dropped beyond kMaxCudaGraphs (see
// cuda_graphs.h). Without CUDA it only forwards.

#include "inference/cuda_graphs.h"

#include <ATen/ops/empty_like.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <exception>
#include <iterator>
#include <string>

#ifdef SEPP_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace sepp::inference {

#ifdef SEPP_WITH_CUDA
struct GraphCache::Entry {
  at::cuda::CUDAGraph graph;
  at::Tensor input, output;  // inference tensors, the graph's own
  at::cuda::CUDAEvent done;  // recorded after the last copy-out of `output`
};

// A capture stream, lent to one cache for its lifetime by the process-wide pool below.
struct GraphCache::Stream {
  c10::DeviceIndex device = -1;
  cudaStream_t stream = nullptr;
};

namespace {

// Capture streams are created when no idle one is left, lent to one cache at a time (so no other code's work can
// run on them during a capture, as it could on a stream from torch's shared pool), taken back when the cache is
// destroyed and never destroyed: torch keeps stream handles after their last use (cached memory blocks and
// expandable segments remember their stream, cuBLAS workspaces are keyed by it), which a destroyed stream would
// leave dangling. Leaked at exit like torch's own streams.
std::mutex& idle_streams_mutex() {
  static auto* m = new std::mutex;
  return *m;
}
std::vector<GraphCache::Stream>& idle_streams() {
  static auto* v = new std::vector<GraphCache::Stream>;
  return *v;
}

GraphCache::Stream borrow_stream(c10::DeviceIndex device) {
  {
    std::lock_guard<std::mutex> lock(idle_streams_mutex());
    auto& idle = idle_streams();
    for (auto it = idle.begin(); it != idle.end(); ++it) {
      if (it->device == device) {
        const GraphCache::Stream s = *it;
        idle.erase(it);
        return s;
      }
    }
  }
  const c10::cuda::CUDAGuard guard(device);
  GraphCache::Stream s{device, nullptr};
  // Non-blocking: no implicit synchronisation with the legacy default stream, on which a capture must not run.
  C10_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  return s;
}

// Waits for what was queued on s, then makes it available to the next cache. Does not throw (run by destructors).
void return_stream(const GraphCache::Stream& s) noexcept {
  C10_CUDA_CHECK_WARN(cudaStreamSynchronize(s.stream));
  try {
    std::lock_guard<std::mutex> lock(idle_streams_mutex());
    idle_streams().push_back(s);
  } catch (...) {  // out of memory for the list: the stream stays unused
  }
}

// Blocks the calling thread until e's last recorded work is done (at once if it was never recorded). Does not
// throw (run by destructors); a CUDA error is reported as a warning.
void wait_for(const at::cuda::CUDAEvent& e) noexcept {
  if (e.isCreated()) C10_CUDA_CHECK_WARN(cudaEventSynchronize(e.event()));
}

// The most input keys whose capture failed that a cache remembers (the least recently seen forgotten first, and
// tried again if it comes back).
constexpr size_t kMaxFailedKeys = 64;

bool is_capturing(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(s, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone;
}

// After a failed warm-up or capture on s: ends the capture if one is still open there (through the graph, which
// also stops routing allocations into its pool; directly if that fails), clears the error the failure left for the
// next launch check to find, and waits for s to finish the warm-up's work.
void abandon_capture(at::cuda::CUDAGraph& graph, cudaStream_t s) {
  if (is_capturing(s)) {
    try {
      graph.capture_end();
    } catch (...) {  // an invalidated capture ends with an error
    }
  }
  if (is_capturing(s)) {
    cudaGraph_t g = nullptr;
    if (cudaStreamEndCapture(s, &g) == cudaSuccess && g != nullptr) C10_CUDA_CHECK_WARN(cudaGraphDestroy(g));
  }
  (void)cudaGetLastError();
  C10_CUDA_CHECK_WARN(cudaStreamSynchronize(s));
}

// A new entry for x: forward warmed up (twice, eagerly) and captured on `side`, in thread-local capture mode, with x
// copied into the entry's input; `current` then waits for the capture. Throws what the warm-up or the capture threw,
// with `side` no longer capturing and idle.
std::unique_ptr<GraphCache::Entry> capture(
    const at::Tensor& x,
    const GraphCache::Forward& forward,
    const c10::cuda::CUDAStream& current,
    const c10::cuda::CUDAStream& side) {
  auto e = std::make_unique<GraphCache::Entry>();
  // The graph's tensors are inference tensors, made and captured under InferenceMode whatever the caller's mode:
  // later calls copy into the input and replay in either mode (an inference tensor outside InferenceMode could
  // not be updated in place; a normal one would be, but the mode of the first call must not matter).
  const c10::InferenceMode inference;
  e->input = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  e->input.copy_(x);
  // Capture must not run on the legacy default stream; warm up first (cuDNN plans, cuBLAS handles, lazy init) so
  // nothing in the captured region needs a synchronisation.
  at::cuda::CUDAEvent ready;
  ready.record(current);
  ready.block(side);
  {
    const c10::cuda::CUDAStreamGuard stream_guard(side);
    try {
      for (int i = 0; i < 2; ++i) forward(e->input);
      // A synchronising call: torch.cuda.set_sync_debug_mode("error") makes it throw (tests use that to make a
      // capture fail).
      c10::cuda::stream_synchronize(side.stream());
      // Thread-local mode: calls unsafe during a capture (cudaFree, synchronisations) are refused in this thread
      // only, so other threads' calls neither fail nor invalidate this capture (in global mode they would).
      e->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
      e->output = forward(e->input);
      e->graph.capture_end();
    } catch (...) {
      abandon_capture(e->graph, side.stream());
      throw;
    }
  }
  at::cuda::CUDAEvent captured;
  captured.record(side);
  captured.block(current);
  return e;
}

// An exception's message, without the C++ backtrace a c10::Error may carry.
std::string cause(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) {
    return c10_error->what_without_backtrace();
  }
  return error.what();
}

}  // namespace

bool cuda_graphs_built() {
  return true;
}
#else
struct GraphCache::Entry {};
struct GraphCache::Stream {};

bool cuda_graphs_built() {
  return false;
}
#endif

GraphCache::GraphCache() = default;

GraphCache::~GraphCache() {
#ifdef SEPP_WITH_CUDA
  // The last replay and copy-out of a graph may still run (on any caller's stream): its graph and memory pool, and
  // the input and output tensors, must outlive them.
  for (const auto& [key, e] : entries_) wait_for(e->done);
  entries_.clear();
  for (const auto& s : streams_) return_stream(*s);
#endif
}

int64_t GraphCache::captured() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(entries_.size());
}

at::Tensor GraphCache::run(const at::Tensor& x, const Forward& forward) {
#ifndef SEPP_WITH_CUDA
  return forward(x);
#else
  TORCH_CHECK_VALUE(x.is_cuda(), "GraphCache: expected a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard device_guard(x.device());
  const auto current = c10::cuda::getCurrentCUDAStream();
  if (current.is_capturing()) {
    return forward(x);  // into the graph the caller is capturing
  }
  std::vector<int64_t> key = x.sizes().vec();
  key.push_back(static_cast<int64_t>(x.scalar_type()));
  key.push_back(x.device().index());
  std::unique_lock<std::mutex> lock(mutex_);
  auto it = entries_.begin();
  while (it != entries_.end() && it->first != key) ++it;
  if (it != entries_.end()) {
    entries_.splice(entries_.begin(), entries_, it);  // now the most recently used
  } else {
    const auto failed = std::find(failed_.begin(), failed_.end(), key);
    if (failed != failed_.end()) {  // its capture failed: not tried again
      failed_.splice(failed_.begin(), failed_, failed);
      lock.unlock();
      return forward(x);
    }
    if (static_cast<int64_t>(entries_.size()) >= kMaxCudaGraphs) {
      // Dropped before the capture, so that the new graph can reuse its memory; its last replay may still run.
      wait_for(entries_.back().second->done);
      entries_.pop_back();
    }
    const auto device = x.device().index();
    auto sit = streams_.begin();
    while (sit != streams_.end() && (*sit)->device != device) ++sit;
    if (sit == streams_.end()) {
      streams_.reserve(streams_.size() + 1);  // so that a borrowed stream is never lost to a failed push_back
      auto s = std::make_unique<Stream>();
      *s = borrow_stream(device);
      streams_.push_back(std::move(s));
      sit = std::prev(streams_.end());
    }
    const auto side = c10::cuda::getStreamFromExternal((*sit)->stream, device);
    std::unique_ptr<Entry> e;
    try {
      e = capture(x, forward, current, side);
    } catch (const std::exception& error) {
      // x runs without a graph, now and whenever this key comes back.
      failed_.push_front(std::move(key));
      if (failed_.size() > kMaxFailedKeys) failed_.pop_back();
      const bool first = !warned_;
      warned_ = true;
      lock.unlock();
      if (first) {
        TORCH_WARN(
            "sepp: capturing a CUDA graph of the forward failed for input of shape ", x.sizes(), " (", x.scalar_type(),
            "), which runs without a CUDA graph from now on (this warning is shown once per model): ", cause(error));
      }
      return forward(x);
    }
    entries_.emplace_front(std::move(key), std::move(e));
    it = entries_.begin();
  }
  Entry& e = *it->second;
  {
    const c10::InferenceMode inference;
    e.done.block(current);  // the previous replay's copy-out (possibly on another stream) is finished
    e.input.copy_(x);
    e.graph.replay();
  }
  auto out = e.output.clone();  // in the caller's mode
  e.done.record(current);
  return out;
#endif
}

}  // namespace sepp::inference
