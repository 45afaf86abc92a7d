#pragma once

// The optimized model's parts: folded convolutions, SE blocks as plain tensors, and each residual block's tail
// chosen when the model is built.

#include <sepp/blocks.h>
#include <sepp/inference.h>
#include <sepp/se_block.h>

#include "inference/activation_pool.h"
#include "inference/cuda_graphs.h"
#include "inference/folded_conv.h"

#include <torch/nn/module.h>

#include <c10/util/FunctionRef.h>

#include <array>
#include <memory>
#include <optional>
#include <vector>

namespace sepp::inference {

/// An SE block's excitation as tensors: w1 [rd, C], w2 [C, rd], b1, b2 in the MLP's dtype (float32 for half-precision
/// models), but w1 and w2 in bfloat16 for a CPU bfloat16 model (see ops/cpu/dense.h).
struct SEWeights {
  at::Tensor w1, b1, w2, b2;
  c10::ScalarType acc = at::kFloat;  // the MLP's dtype: the squeeze's z and the excitation s
  SESqueeze squeeze = SESqueeze::Avg;
  std::string gate;

  /// The excitation s [N, C] of t [N, C, H, W], in the MLP's dtype.
  at::Tensor of(const at::Tensor& t) const;
  /// The excitation from the squeezed z [N, C] (in the MLP's dtype).
  at::Tensor excite(const at::Tensor& z) const;
  /// t * s, with s the excitation of t.
  at::Tensor apply(const at::Tensor& t) const;
};

/// How a block with a standard SE ends: relu(SE(conv3(h)) + identity).
enum class SETail {
  /// conv3, then the squeeze of U, the excitation and relu(U * s + identity) written into U (CPU).
  InPlace,
  /// The same, with relu(U * s + identity) into a new tensor (CUDA).
  OutOfPlace,
  /// A bottleneck's average squeeze taken before conv3 (mean(U) = W3 mean(h) + b3, exact in eval mode), so s is
  /// known before conv3: at batch 1 on the CPU conv3 runs with its weights scaled by s and the sum + ReLU fused,
  /// where scaling conv3's weights (~5 |W3| moved) costs less than the passes over U it saves (~4 |U|); otherwise,
  /// where reading h and W3 costs less than reading U (|W3| < 3 |h|), conv3 then relu(U * s + identity) in place;
  /// otherwise as InPlace.
  SqueezeFirstScaledConv3,
  /// The squeeze before conv3 (reading h, a quarter of U's channels), then relu(U * s + identity) in one pass
  /// (CUDA, any batch).
  SqueezeFirst,
};

/// A max or average pool (the stem's pool, an aa layer, an avg_down shortcut's pool), as its module's options.
struct Pool {
  bool avg = false;
  std::array<int64_t, 2> kernel{1, 1}, stride{1, 1}, padding{0, 0};
  bool ceil_mode = false;
  bool count_include_pad = true;

  /// The pool of a torch::nn::MaxPool2d or AvgPool2d; nullopt for an Identity; c10::ValueError otherwise.
  static std::optional<Pool> of(const torch::nn::Module& m);
  at::Tensor run(const at::Tensor& x) const;
  std::array<int64_t, 2> output_hw(std::array<int64_t, 2> hw) const;
};

/// A batch norm in eval mode as a per-channel affine map [1, C, 1, 1] (a pre-activation block's bn1, the final norm).
struct Affine {
  at::Tensor scale, shift;

  /// The batch norm's y = x * scale + shift, computed in float64 and stored in `dtype`.
  static Affine of(const torch::nn::BatchNorm2d& bn, c10::ScalarType dtype);
  /// relu(x * scale + shift).
  at::Tensor relu(const at::Tensor& x) const;
};

/// A residual block: the pieces of detail::residual_forward (or, pre-activated, of detail::preact_forward).
struct Block {
  std::vector<FoldedConv> convs;  // conv1, conv2 (, conv3): ReLU after each but the last
  std::optional<Pool> aa;         // anti-aliasing pool after convs[aa_after] and its ReLU
  size_t aa_after = 0;
  std::optional<Pool> down_pool;  // avg_down: the shortcut's pool before its convolution
  std::optional<FoldedConv> downsample;
  std::optional<SEWeights> se;
  SEStrategy strategy = SEStrategy::Standard;
  bool relu_before_se = false;
  SETail tail = SETail::InPlace;
  // conv3's folded weight as [C, C/4] (in the SE weights' dtype) and bias (the MLP's), for the SqueezeFirst tails.
  at::Tensor w3, b3;
  // Pre-activated: bn1 before the convolutions, each of which but the last has the next BN folded in; the last
  // convolution and the downsample have no BN.
  std::optional<Affine> preact;

  at::Tensor forward(const at::Tensor& x) const;

  // detail::preact_forward's pieces.
  at::Tensor preactivate(const at::Tensor& x) const { return preact->relu(x); }
  at::Tensor shortcut(const at::Tensor& x, const at::Tensor& a) const { return downsample ? shortcut(a) : x; }
  at::Tensor add(const at::Tensor& h, c10::function_ref<at::Tensor()> shortcut) const;
  at::Tensor add_se(const at::Tensor& h, c10::function_ref<at::Tensor()> shortcut) const;

  at::Tensor shortcut(const at::Tensor& x) const;
  at::Tensor branch(const at::Tensor& x) const;
  at::Tensor merge(const at::Tensor& h, const at::Tensor& other) const;
  at::Tensor merge_se(const at::Tensor& h, c10::function_ref<at::Tensor()> shortcut) const;
  at::Tensor scale_by_se(const at::Tensor& t) const { return se->apply(t); }
};

}  // namespace sepp::inference

namespace sepp {

struct OptimizedResNet::Impl {
  ResNetOptions options;
  c10::ScalarType dtype = at::kFloat;
  torch::Device device = torch::kCPU;
  std::string backend = "aten";
  int64_t num_features = 0;
  bool preact = false;                      // ResNetOptions::preact
  std::vector<inference::FoldedConv> stem;  // each followed by a ReLU (but the last, pre-activated)
  std::optional<inference::Pool> pool;      // none with the CIFAR stem
  std::optional<inference::Affine> norm;    // pre-activated: the BN (and ReLU) after the last stage
  std::vector<inference::Block> blocks;
  at::Tensor fc_weight, fc_bias;
  at::Tensor like;  // an empty tensor of the stem's device and dtype, which inputs are checked against
  std::unique_ptr<inference::GraphCache> graphs;  // CUDA: one graph per input shape (InferenceOptions::cuda_graphs)
  std::shared_ptr<inference::ActivationPool> activations;  // CPU: large activations, kept between calls

  /// The forward pass, op by op, on a channels_last input.
  at::Tensor eager(const at::Tensor& x) const;
};

}  // namespace sepp
