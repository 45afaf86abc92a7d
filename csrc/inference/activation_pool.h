#pragma once

// The optimized CPU model's activations, kept between calls. Each large tensor a forward allocates (its activations,
// oneDNN's scratchpads) is returned to the model's pool when freed and handed out again to the next allocation of the
// same size, instead of going back to malloc: glibc maps and unmaps every block above its mmap threshold (32 MiB at
// most), so at batch 16 each forward would otherwise touch ~340 MiB of fresh pages (86,000 page faults, 10% of the
// forward's time, on a 2-core Zen 4).
//
// The pool serves only the thread that runs the forward, and only inside ActivationPool::Scope: CPU allocations
// anywhere else go to the CPU allocator that was installed before (sepp installs a pass-through allocator in front of
// it the first time a pool is made). Blocks not used by the last few forwards are freed, so that a model called at
// several input shapes does not keep them all.

#include <cstddef>
#include <cstdint>
#include <memory>

namespace sepp::inference {

class ActivationPool {
 public:
  /// Allocations at least this large are pooled; smaller ones go to the CPU allocator.
  static constexpr size_t kMinBytes = size_t{256} << 10;
  /// A free block is released once this many forwards (scopes) have passed without using it.
  static constexpr uint64_t kKeepForwards = 4;

  /// A new, empty pool. Installs the pooling CPU allocator on first use.
  static std::shared_ptr<ActivationPool> make();
  ~ActivationPool();
  ActivationPool(const ActivationPool&) = delete;
  ActivationPool& operator=(const ActivationPool&) = delete;

  /// While alive, large CPU allocations on this thread come from (and return to) the pool. Scopes nest; several
  /// threads may hold scopes of one pool at once.
  struct State;  // shared with the allocator (activation_pool.cpp)

  class Scope {
   public:
    explicit Scope(const std::shared_ptr<ActivationPool>& pool);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    std::shared_ptr<ActivationPool> pool_;
    State* previous_;  // the pool this thread used before, kept alive by its own Scope
  };

  /// While alive, this thread's allocations bypass any pool: for what outlives the call (a cache the model keeps).
  class Bypass {
   public:
    Bypass();
    ~Bypass();
    Bypass(const Bypass&) = delete;
    Bypass& operator=(const Bypass&) = delete;

   private:
    State* previous_;
  };

  /// Blocks held, free or in use, and their bytes (for tests).
  struct Stats {
    int64_t blocks = 0, free_blocks = 0;
    int64_t bytes = 0, free_bytes = 0;
  };
  Stats stats() const;

 private:
  ActivationPool();
  std::shared_ptr<State> state_;
};

}  // namespace sepp::inference
