#pragma once

// How a residual block merges its branch, its shortcut and its SE block: the one statement of the paper's four SE
// integrations (figure 5), shared by the eager blocks (blocks.cpp) and the optimized model (inference/).

#include <sepp/blocks.h>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/FunctionRef.h>

namespace sepp::detail {

/// The forward of a residual block, for any implementation `b` of its pieces:
///   b.shortcut(x)          the identity, or the downsample branch;
///   b.branch(x)            the residual branch up to its merge (the eager block's whole branch; the optimized
///                          block's convolutions but the last, which runs fused with the merge);
///   b.merge(h, other)      relu(last(h) + other);
///   b.merge_se(h, shortcut)  relu(SE(last(h)) + shortcut()): the standard integration's tail, which calls
///                          `shortcut` (a function) after its SE block;
///   b.scale_by_se(t)       t scaled by the SE block's excitation of t.
/// `has_se` false: relu(branch + shortcut), whatever the strategy. The pieces run in timm's order (branch, SE,
/// shortcut, sum), which is the order observers (sepp/observe.h) see.
template <typename Block>
at::Tensor residual_forward(const Block& b, bool has_se, SEStrategy strategy, const at::Tensor& x) {
  const auto shortcut = [&] { return b.shortcut(x); };
  if (!has_se) {
    const at::Tensor h = b.branch(x);
    return b.merge(h, shortcut());
  }
  switch (strategy) {
    case SEStrategy::Standard: {
      const at::Tensor h = b.branch(x);
      return b.merge_se(h, c10::function_ref<at::Tensor()>(shortcut));
    }
    case SEStrategy::Pre: {
      const at::Tensor h = b.branch(b.scale_by_se(x));
      return b.merge(h, shortcut());
    }
    case SEStrategy::Post: {
      const at::Tensor h = b.branch(x);
      return b.scale_by_se(b.merge(h, shortcut()));
    }
    case SEStrategy::Identity: {
      const at::Tensor h = b.branch(x);
      return b.merge(h, b.scale_by_se(shortcut()));
    }
  }
  TORCH_INTERNAL_ASSERT(false, "residual_forward: unknown SE strategy");
}

/// The channels an SE block of this strategy sees: the block's input for "pre", else its output.
inline int64_t se_channels(SEStrategy strategy, int64_t inplanes, int64_t outplanes) {
  return strategy == SEStrategy::Pre ? inplanes : outplanes;
}

}  // namespace sepp::detail
