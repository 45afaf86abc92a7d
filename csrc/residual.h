#pragma once

// How a residual block merges its branch, its shortcut and its SE block: the one statement of the paper's four SE
// integrations (figure 5), and of the pre-activation block, shared by the eager blocks (blocks.cpp) and the optimized
// model (inference/).

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

/// The forward of a pre-activation block (He et al. 2016, "Identity Mappings"), for any implementation `b` of its
/// pieces:
///   b.preactivate(x)         relu(bn1(x));
///   b.branch(a)              the residual branch from the pre-activated input, up to its merge;
///   b.shortcut(x, a)         x, or the projection of the pre-activated a;
///   b.add(h, shortcut)       last(h) + shortcut();
///   b.add_se(h, shortcut)    SE(last(h)) + shortcut(): the SE block on the branch, before the sum.
/// No ReLU follows the sum. The pieces run in the order branch, SE, shortcut, sum, as in residual_forward.
template <typename Block>
at::Tensor preact_forward(const Block& b, bool has_se, const at::Tensor& x) {
  const at::Tensor a = b.preactivate(x);
  const at::Tensor h = b.branch(a);
  const auto shortcut = [&] { return b.shortcut(x, a); };
  const c10::function_ref<at::Tensor()> later(shortcut);
  return has_se ? b.add_se(h, later) : b.add(h, later);
}

/// The channels an SE block of this strategy sees: the block's input for "pre", else its output.
inline int64_t se_channels(SEStrategy strategy, int64_t inplanes, int64_t outplanes) {
  return strategy == SEStrategy::Pre ? inplanes : outplanes;
}

}  // namespace sepp::detail
