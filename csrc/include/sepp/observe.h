#pragma once

// Observation points: sepp's modules run each child through sepp::call(), so that a child can be observed (forward
// hooks, summaries, FLOP counters) while the computation stays in C++.
//
// Observation happens where a parent calls a child, never inside a module's own forward: a module called directly
// (from Python, say) is not handed to the observer, whose caller has already seen the call.
//
// An observer is one process-wide function, installed by whoever observes (the Python package installs one that runs
// torch.nn's hooks). A module marked with observe(m, true) is then handed to the observer at each call, together
// with the computation the caller would have run (a Continuation); the observer runs that computation, possibly on
// another input, and returns the output the caller continues with (possibly another tensor). While no module is
// marked, call() is one relaxed atomic load and a direct call.

#include <sepp/export.h>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/types.h>

#include <c10/util/FunctionRef.h>

#include <atomic>
#include <functional>

namespace sepp {

/// The computation an observation point runs on its input.
using Continuation = c10::function_ref<torch::Tensor(const torch::Tensor&)>;

/// Called for a marked module with its input and its computation; returns what the caller continues with. The
/// continuation is valid only during the call.
using Observer = std::function<torch::Tensor(const torch::nn::Module&, const torch::Tensor&, Continuation)>;

/// Installs the process-wide observer (an empty function removes it). Not to be called while a forward runs.
SEPP_API void set_observer(Observer observer);

/// Marks (or unmarks) a module: its calls through sepp::call() go to the observer. Thread-safe.
SEPP_API void observe(const torch::nn::Module& module, bool on);

/// Whether the module is marked.
SEPP_API bool is_observed(const torch::nn::Module& module);

namespace detail {
/// How many modules are marked; zero keeps every call() on its direct path.
SEPP_API extern std::atomic<int64_t> observed_modules;
SEPP_API torch::Tensor call_observed(const torch::nn::Module& module, const torch::Tensor& x, Continuation compute);
}  // namespace detail

/// Whether any module is marked (a cheap test before work that only observers need).
inline bool observing() {
  return detail::observed_modules.load(std::memory_order_relaxed) != 0;
}

/// compute(x), through the observer when `module` is marked.
template <typename F>
torch::Tensor call(const torch::nn::Module& module, const torch::Tensor& x, F&& compute) {
  if (!observing()) {
    return compute(x);
  }
  return detail::call_observed(module, x, Continuation(compute));
}

/// holder->forward(x) of a module holder (torch::nn::Conv2d, sepp::SEBlock, ...), as an observation point.
template <typename Holder>
torch::Tensor call(Holder& holder, const torch::Tensor& x) {
  return call(*holder, x, [&](const torch::Tensor& t) { return holder->forward(t); });
}

/// A Sequential's forward with each child an observation point.
SEPP_API torch::Tensor sequential_forward(torch::nn::SequentialImpl& seq, const torch::Tensor& x);

/// The Sequential as an observation point, its children too.
inline torch::Tensor call_sequential(torch::nn::Sequential& seq, const torch::Tensor& x) {
  return call(*seq, x, [&](const torch::Tensor& t) { return sequential_forward(*seq, t); });
}

/// An AnyModule's forward as an observation point.
inline torch::Tensor call_any(torch::nn::AnyModule& m, const torch::Tensor& x) {
  return call(*m.ptr(), x, [&](const torch::Tensor& t) { return m.forward(t); });
}

}  // namespace sepp
