// GraphCache: at::cuda::CUDAGraph per input shape (see cuda_graphs.h). Without CUDA it only forwards.

#include "inference/cuda_graphs.h"

#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#ifdef SEPP_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace sepp::inference {

#ifdef SEPP_WITH_CUDA
struct GraphCache::Entry {
  at::cuda::CUDAGraph graph;
  at::Tensor input, output;
  at::cuda::CUDAEvent done;  // recorded after the last copy-out of `output`
};

bool cuda_graphs_built() {
  return true;
}
#else
struct GraphCache::Entry {};

bool cuda_graphs_built() {
  return false;
}
#endif

GraphCache::GraphCache() = default;
GraphCache::~GraphCache() = default;

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
  std::vector<int64_t> key = x.sizes().vec();
  key.push_back(static_cast<int64_t>(x.scalar_type()));
  key.push_back(x.device().index());
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  auto current = c10::cuda::getCurrentCUDAStream();
  if (it == entries_.end()) {
    auto e = std::make_unique<Entry>();
    e->input = at::empty_like(x, at::MemoryFormat::ChannelsLast);
    e->input.copy_(x);
    // Capture must not run on the legacy default stream; warm up first (cuDNN plans, cuBLAS handles, lazy init) so
    // nothing in the captured region needs a synchronisation.
    auto side = c10::cuda::getStreamFromPool();
    at::cuda::CUDAEvent ready;
    ready.record(current);
    ready.block(side);
    {
      const c10::cuda::CUDAStreamGuard stream_guard(side);
      for (int i = 0; i < 2; ++i) forward(e->input);
      side.synchronize();
      e->graph.capture_begin();
      try {
        e->output = forward(e->input);
      } catch (...) {
        try {
          e->graph.capture_end();
        } catch (...) {
        }
        throw;
      }
      e->graph.capture_end();
    }
    at::cuda::CUDAEvent captured;
    captured.record(side);
    captured.block(current);
    it = entries_.emplace(std::move(key), std::move(e)).first;
  }
  Entry& e = *it->second;
  e.done.block(current);  // the previous replay's copy-out (possibly on another stream) is finished
  e.input.copy_(x);
  e.graph.replay();
  auto out = e.output.clone();
  e.done.record(current);
  return out;
#endif
}

}  // namespace sepp::inference
