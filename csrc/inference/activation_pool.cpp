#include "inference/activation_pool.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <iterator>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace sepp::inference {

struct PooledBlock {
  c10::DataPtr memory;  // from the CPU allocator installed before sepp's
  size_t size = 0;
  std::weak_ptr<ActivationPool::State> owner;
  uint64_t last_used = 0;  // the owner's forward count when last handed out
};

struct ActivationPool::State {
  std::multimap<size_t, PooledBlock*> free;  // by size
  uint64_t forwards = 0;                     // scopes opened
  int64_t active = 0;                        // scopes open now
  bool dead = false;                         // its ActivationPool is gone: blocks coming back are freed
  std::weak_ptr<State> self;                 // what its blocks hold
  Stats stats;
};

namespace {

// Never destroyed: tensors may be freed during or after static destruction.
std::mutex& pool_mutex() {
  static auto* m = new std::mutex;
  return *m;
}
// Every pooled block, free or in use, by its address. Guarded by pool_mutex().
std::unordered_map<void*, std::unique_ptr<PooledBlock>>& pool_registry() {
  static auto* r = new std::unordered_map<void*, std::unique_ptr<PooledBlock>>;
  return *r;
}

thread_local ActivationPool::State* current_pool = nullptr;  // the pool serving this thread, if any
c10::DeleterFnPtr pool_next_raw_deleter = nullptr;           // the previous allocator's, for what it allocated

// The deleter of pooled blocks, and the allocator's raw deleter (ideep frees through it): a pooled block goes back to
// its pool, or is freed when the pool is gone; anything else was the previous allocator's.
void release_pooled(void* p) {
  if (p == nullptr) return;
  std::unique_ptr<PooledBlock> dead;  // freed once the lock is released
  {
    std::lock_guard<std::mutex> lock(pool_mutex());
    auto it = pool_registry().find(p);
    if (it != pool_registry().end()) {
      PooledBlock* b = it->second.get();
      const auto owner = b->owner.lock();
      if (owner && !owner->dead) {
        owner->free.emplace(b->size, b);
        owner->stats.free_blocks += 1;
        owner->stats.free_bytes += static_cast<int64_t>(b->size);
      } else {
        dead = std::move(it->second);
        pool_registry().erase(it);
      }
      return;
    }
  }
  TORCH_INTERNAL_ASSERT(pool_next_raw_deleter != nullptr, "sepp: the CPU allocator before sepp's has no raw deleter");
  pool_next_raw_deleter(p);
}

class PoolingAllocator final : public c10::Allocator {
 public:
  explicit PoolingAllocator(c10::Allocator* next) : next_(next) {}

  c10::DataPtr allocate(size_t n) override {
    ActivationPool::State* pool = current_pool;
    if (pool == nullptr || n < ActivationPool::kMinBytes) return next_->allocate(n);
    std::lock_guard<std::mutex> lock(pool_mutex());
    PooledBlock* b = nullptr;
    // The block of this size freed last: its memory is the likeliest in cache, and blocks a call no longer needs
    // stay unused until they are released.
    if (auto [first, last] = pool->free.equal_range(n); first != last) {
      const auto it = std::prev(last);
      b = it->second;
      pool->free.erase(it);
      pool->stats.free_blocks -= 1;
      pool->stats.free_bytes -= static_cast<int64_t>(n);
    } else {
      auto block = std::make_unique<PooledBlock>();
      block->memory = next_->allocate(n);
      block->size = n;
      block->owner = pool->self;
      b = block.get();
      pool_registry().emplace(b->memory.get(), std::move(block));
      pool->stats.blocks += 1;
      pool->stats.bytes += static_cast<int64_t>(n);
    }
    b->last_used = pool->forwards;
    void* p = b->memory.get();
    return {p, p, &release_pooled, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release_pooled; }

  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

 private:
  c10::Allocator* next_;
};

void install_pooling_allocator() {
  static const bool installed = [] {
    c10::Allocator* next = c10::GetCPUAllocator();
    pool_next_raw_deleter = next->raw_deleter();
    // Never freed: tensors it allocated may outlive every sepp object.
    c10::SetCPUAllocator(new PoolingAllocator(next), /*priority=*/1);
    return true;
  }();
  (void)installed;
}

}  // namespace

std::shared_ptr<ActivationPool> ActivationPool::make() {
  install_pooling_allocator();
  return std::shared_ptr<ActivationPool>(new ActivationPool());
}

ActivationPool::ActivationPool() : state_(std::make_shared<State>()) {
  state_->self = state_;
}

ActivationPool::~ActivationPool() {
  std::vector<std::unique_ptr<PooledBlock>> dead;
  {
    std::lock_guard<std::mutex> lock(pool_mutex());
    state_->dead = true;
    for (auto& [size, b] : state_->free) {
      auto it = pool_registry().find(b->memory.get());
      dead.push_back(std::move(it->second));
      pool_registry().erase(it);
    }
    state_->free.clear();
  }
}

ActivationPool::Scope::Scope(const std::shared_ptr<ActivationPool>& pool) : pool_(pool), previous_(current_pool) {
  TORCH_INTERNAL_ASSERT(pool_ != nullptr);
  {
    std::lock_guard<std::mutex> lock(pool_mutex());
    pool_->state_->forwards += 1;
    pool_->state_->active += 1;
  }
  current_pool = pool_->state_.get();
}

ActivationPool::Scope::~Scope() {
  current_pool = previous_;
  std::vector<std::unique_ptr<PooledBlock>> dead;
  std::lock_guard<std::mutex> lock(pool_mutex());
  State& s = *pool_->state_;
  if (--s.active > 0) return;
  for (auto it = s.free.begin(); it != s.free.end();) {
    PooledBlock* b = it->second;
    if (s.forwards - b->last_used < kKeepForwards) {
      ++it;
      continue;
    }
    s.stats.blocks -= 1;
    s.stats.free_blocks -= 1;
    s.stats.bytes -= static_cast<int64_t>(b->size);
    s.stats.free_bytes -= static_cast<int64_t>(b->size);
    auto r = pool_registry().find(b->memory.get());
    dead.push_back(std::move(r->second));
    pool_registry().erase(r);
    it = s.free.erase(it);
  }
  // `dead` is destroyed after `lock` (declared before it), so the blocks are freed outside the lock.
}

ActivationPool::Bypass::Bypass() : previous_(current_pool) {
  current_pool = nullptr;
}

ActivationPool::Bypass::~Bypass() {
  current_pool = previous_;
}

ActivationPool::Stats ActivationPool::stats() const {
  std::lock_guard<std::mutex> lock(pool_mutex());
  return state_->stats;
}

}  // namespace sepp::inference
