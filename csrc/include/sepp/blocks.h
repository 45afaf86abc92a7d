#pragma once

#include <sepp/export.h>
#include <sepp/se_block.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>

namespace sepp {

/// Options shared by BasicBlock and Bottleneck.
///
/// se_strategy places the SE block (the four integrations of the paper's ablation, figure 5):
///   "standard"  after the last BN of the residual branch, before the sum with the identity (default);
///   "pre"       on the block's input, before the residual branch;
///   "post"      after the sum with the identity (and its ReLU);
///   "identity"  on the identity (shortcut) branch, in parallel with the residual branch.
struct SEPP_API BlockOptions {
  BlockOptions(int64_t inplanes, int64_t planes);

  TORCH_ARG(int64_t, inplanes);
  /// Width of the block; its output has planes * expansion channels (1 for BasicBlock, 4 for Bottleneck).
  TORCH_ARG(int64_t, planes);
  TORCH_ARG(int64_t, stride) = 1;
  /// Cardinality (ResNeXt); BasicBlock supports only 1.
  TORCH_ARG(int64_t, groups) = 1;
  /// Width per group (ResNeXt); BasicBlock supports only 64.
  TORCH_ARG(int64_t, base_width) = 64;
  /// Bottleneck: stride on the first 1x1 convolution (original Caffe SENet) instead of on the 3x3 (torchvision/timm).
  TORCH_ARG(bool, stride_in_1x1) = false;
  /// Whether the block has an SE block at all.
  TORCH_ARG(bool, se) = false;
  /// The SE block's options; `channels` is filled in by the block.
  TORCH_ARG(SEBlockOptions, se_options) = SEBlockOptions();
  TORCH_ARG(std::string, se_strategy) = "standard";
  /// A ReLU on the residual branch's output before its SE block (timm's legacy SE-ResNet-18/34 basic block).
  TORCH_ARG(bool, relu_before_se) = false;

 public:
  void validate(int64_t expansion, const char* who) const;
};

namespace detail {
enum class SEStrategy { Standard, Pre, Post, Identity };
SEStrategy parse_se_strategy(const std::string& name);

/// What BasicBlock and Bottleneck share: the shortcut, the SE block and how the branches are merged.
class SEPP_API ResidualBlockBase {
 public:
  virtual ~ResidualBlockBase() = default;

 protected:
  torch::Tensor residual_forward(torch::Tensor x, const std::function<torch::Tensor(const torch::Tensor&)>& branch);
  void build_shortcut_and_se(torch::nn::Module& self, const BlockOptions& options, int64_t outplanes);
  void pretty_print_block(std::ostream& stream, const char* name, const BlockOptions& options) const;

 public:
  torch::nn::Sequential downsample{nullptr};
  SEBlock se{nullptr};

 protected:
  SEStrategy strategy_ = SEStrategy::Standard;
  bool relu_before_se_ = false;
  int64_t in_channels_ = 0;
};
}  // namespace detail

/// ResNet basic block: 3x3 -> BN -> ReLU -> 3x3 -> BN (+ SE), + identity, ReLU. Expansion 1.
class SEPP_API BasicBlockImpl : public torch::nn::Cloneable<BasicBlockImpl>, public detail::ResidualBlockBase {
 public:
  static constexpr int64_t expansion = 1;
  explicit BasicBlockImpl(const BlockOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x);
  /// The last BN of the residual branch (zero-initialised by ResNet's zero_init_last).
  torch::nn::BatchNorm2d& last_bn() { return bn2; }

  BlockOptions options;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
};
TORCH_MODULE(BasicBlock);

/// ResNet bottleneck: 1x1 -> BN -> ReLU -> 3x3 (grouped) -> BN -> ReLU -> 1x1 -> BN (+ SE), + identity, ReLU.
/// Expansion 4: the output (and so the standard SE block) has planes * 4 channels.
class SEPP_API BottleneckImpl : public torch::nn::Cloneable<BottleneckImpl>, public detail::ResidualBlockBase {
 public:
  static constexpr int64_t expansion = 4;
  explicit BottleneckImpl(const BlockOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::BatchNorm2d& last_bn() { return bn3; }

  BlockOptions options;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
};
TORCH_MODULE(Bottleneck);

}  // namespace sepp
