#pragma once

// How a residual block merges its branch, its shortcut and its SE block: the one statement of the paper's four SE
// integrations (figure 5), shared by the eager blocks (blocks.cpp) and the optimized model (inference/).

#include <sepp/blocks.h>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace sepp::detail {

/// The forward of a residual block, for any implementation `b` of its pieces:
///   b.shortcut(x)          the identity, or the downsample branch;
///   b.branch(x)            the residual branch up to its merge (the eager block's whole branch; the optimized
///                          block's convolutions but the last, which runs fused with the merge);
///   b.merge(h, other)      relu(last(h) + other);
///   b.merge_se(h, shortcut)  relu(SE(last(h)) + shortcut): the standard integration's tail;
///   b.scale_by_se(t)       t scaled by the SE block's excitation of t.
/// `has_se` false: relu(branch + shortcut), whatever the strategy.
template <typename Block>
at::Tensor residual_forward(const Block& b, bool has_se, SEStrategy strategy, const at::Tensor& x) {
  const at::Tensor shortcut = b.shortcut(x);
  if (!has_se) {
    return b.merge(b.branch(x), shortcut);
  }
  switch (strategy) {
    case SEStrategy::Standard:
      return b.merge_se(b.branch(x), shortcut);
    case SEStrategy::Pre:
      return b.merge(b.branch(b.scale_by_se(x)), shortcut);
    case SEStrategy::Post:
      return b.scale_by_se(b.merge(b.branch(x), shortcut));
    case SEStrategy::Identity:
      return b.merge(b.branch(x), b.scale_by_se(shortcut));
  }
  TORCH_INTERNAL_ASSERT(false, "residual_forward: unknown SE strategy");
}

/// The channels an SE block of this strategy sees: the block's input for "pre", else its output.
inline int64_t se_channels(SEStrategy strategy, int64_t inplanes, int64_t outplanes) {
  return strategy == SEStrategy::Pre ? inplanes : outplanes;
}

}  // namespace sepp::detail
