#include <sepp/observe.h>

#include <c10/util/Exception.h>

#include <mutex>
#include <shared_mutex>
#include <unordered_set>

namespace sepp {

namespace {

struct Registry {
  std::shared_mutex mutex;
  std::unordered_set<const torch::nn::Module*> marked;
  Observer observer;
};

Registry& registry() {
  static auto* r = new Registry();  // never destroyed: calls may come from threads still running at exit
  return *r;
}

}  // namespace

namespace detail {
std::atomic<int64_t> observed_modules{0};

torch::Tensor call_observed(const torch::nn::Module& module, const torch::Tensor& x, Continuation compute) {
  auto& r = registry();
  Observer observer;
  {
    std::shared_lock lock(r.mutex);
    if (!r.observer || r.marked.count(&module) == 0) {
      lock.unlock();
      return compute(x);
    }
    observer = r.observer;  // a copy: the observer may mark or unmark modules while it runs
  }
  torch::Tensor out = observer(module, x, compute);
  TORCH_CHECK_TYPE(
      out.defined(), "sepp: the observer of ", module.name(),
      " returned no tensor (a hook must return a tensor or None)");
  return out;
}
}  // namespace detail

void set_observer(Observer observer) {
  auto& r = registry();
  std::unique_lock lock(r.mutex);
  r.observer = std::move(observer);
}

void observe(const torch::nn::Module& module, bool on) {
  auto& r = registry();
  std::unique_lock lock(r.mutex);
  if (on) {
    if (r.marked.insert(&module).second) detail::observed_modules.fetch_add(1, std::memory_order_relaxed);
  } else if (r.marked.erase(&module) != 0) {
    detail::observed_modules.fetch_sub(1, std::memory_order_relaxed);
  }
}

bool is_observed(const torch::nn::Module& module) {
  auto& r = registry();
  std::shared_lock lock(r.mutex);
  return r.marked.count(&module) != 0;
}

torch::Tensor sequential_forward(torch::nn::SequentialImpl& seq, const torch::Tensor& x) {
  torch::Tensor h = x;
  for (auto& child : seq) {
    h = call(*child.ptr(), h, [&](const torch::Tensor& t) { return child.forward(t); });
  }
  return h;
}

}  // namespace sepp
