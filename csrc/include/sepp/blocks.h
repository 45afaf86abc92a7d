#pragma once

#include <sepp/export.h>
#include <sepp/se_block.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>

namespace sepp {

/// Options shared by BasicBlock and Bottleneck.
struct SEPP_API BlockOptions {
  BlockOptions(int64_t inplanes, int64_t planes);

  // Each option is described in visit() below.
  TORCH_ARG(int64_t, inplanes);
  TORCH_ARG(int64_t, planes);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(int64_t, base_width) = 64;
  TORCH_ARG(bool, stride_in_1x1) = false;
  TORCH_ARG(bool, se) = false;
  TORCH_ARG(SEBlockOptions, se_options) = SEBlockOptions();
  TORCH_ARG(std::string, se_strategy) = "standard";
  TORCH_ARG(bool, relu_before_se) = false;
  TORCH_ARG(int64_t, reduce_first) = 1;
  TORCH_ARG(std::string, aa_layer) = "";
  TORCH_ARG(bool, avg_down) = false;
  TORCH_ARG(int64_t, down_kernel_size) = 1;
  TORCH_ARG(bool, preact) = false;

 public:
  /// Whether the block downsamples through its aa layer (aa_layer set and stride 2).
  bool use_aa() const { return !aa_layer_.empty() && stride_ == 2; }
  void validate(int64_t expansion, const char* who) const;

  /// The options by name: f(name, field, kind, doc) for each, in the order of the Python constructor's arguments,
  /// the SE block's options flattened in (see SEBlockOptions::visit).
  template <typename Self, typename F>
  static void visit(Self& o, F&& f) {
    f("inplanes", o.inplanes_, OptionKind::Required, "input channels");
    f("planes", o.planes_, OptionKind::Required,
      "width of the block; its output has planes * expansion channels (1 for BasicBlock, 4 for Bottleneck)");
    f("stride", o.stride_, OptionKind::Plain, "stride of the block (and of its downsample)");
    f("groups", o.groups_, OptionKind::Plain, "cardinality (ResNeXt); BasicBlock supports only 1");
    f("base_width", o.base_width_, OptionKind::Plain, "width per group (ResNeXt); BasicBlock supports only 64");
    f("stride_in_1x1", o.stride_in_1x1_, OptionKind::Plain,
      "Bottleneck: the stride on the first 1x1 convolution (original Caffe SENet) instead of on the 3x3");
    f("se", o.se_, OptionKind::Plain, "whether the block has an SE block");
    SEBlockOptions::visit(o.se_options_, f, /*embedded=*/true);
    f("se_strategy", o.se_strategy_, OptionKind::Plain,
      "where the SE block sits: 'standard' (after the last BN of the residual branch, before the sum), 'pre' (on "
      "the block's input), 'post' (after the sum and its ReLU) or 'identity' (on the shortcut)");
    f("relu_before_se", o.relu_before_se_, OptionKind::Plain,
      "a ReLU on the residual branch's output before its SE block (timm's legacy SE-ResNet-18/34 basic block)");
    f("reduce_first", o.reduce_first_, OptionKind::Plain,
      "the first convolution outputs the block's width divided by this (SENet-154: 2)");
    f("aa_layer", o.aa_layer_, OptionKind::Plain,
      "'' or 'avgpool': with stride 2, the strided 3x3 runs at stride 1 and a 2x2/2 average pool (`aa`) follows "
      "its ReLU");
    f("avg_down", o.avg_down_, OptionKind::Plain,
      "the downsample as a 2x2 average pool (ceil mode, padding not counted), a 1x1 convolution and BN");
    f("down_kernel_size", o.down_kernel_size_, OptionKind::Plain,
      "1 or 3: the kernel of a strided downsample convolution (a stride-1 downsample is 1x1)");
    f("preact", o.preact_, OptionKind::Plain,
      "pre-activation (He et al. 2016): a = relu(bn1(x)) starts the block; each convolution but the last is "
      "followed by BN and ReLU; out = SE(branch(a)) + (downsample(a) or x), without a ReLU; the downsample is the "
      "projection convolution alone (no BN). Only se_strategy 'standard', no aa_layer, no relu_before_se");
  }
};

/// Where a residual block's SE block sits (the paper's ablation, figure 5); see BlockOptions::visit.
enum class SEStrategy { Standard, Pre, Post, Identity };
/// Parses "standard", "pre", "post", "identity"; throws c10::ValueError otherwise.
SEPP_API SEStrategy parse_se_strategy(const std::string& name);

/// ResNet basic block: 3x3 -> BN -> ReLU -> 3x3 -> BN (+ SE), + identity, ReLU. Expansion 1.
/// Pre-activated (options.preact()): BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3 (+ SE), + identity.
class SEPP_API BasicBlockImpl : public torch::nn::Cloneable<BasicBlockImpl> {
 public:
  static constexpr int64_t expansion = 1;
  static constexpr const char* kName = "BasicBlock";
  explicit BasicBlockImpl(const BlockOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x);
  /// Zeroes the last BN's weight of the residual branch (the last convolution's weight when pre-activated), so the
  /// block starts as the identity (ResNet's zero_init_last).
  void zero_init_last();

  BlockOptions options;
  // Children in timm's order: conv1, bn1, drop_block, act1, aa, conv2, bn2, se, act2, downsample; pre-activated
  // bn1 (of the input's channels), act1, conv1, bn2, act2, conv2, se, downsample.
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  /// An identity, where timm has DropBlock (off in the SE-ResNets).
  torch::nn::Identity drop_block{nullptr};
  /// torch::nn::AvgPool2d (2x2/2) when use_aa(), else torch::nn::Identity.
  torch::nn::AnyModule aa;
  /// act2 (in place) follows the sum (pre-activated: bn2).
  torch::nn::ReLU act1{nullptr}, act2{nullptr};
  /// When the stride or the width changes: convolution + BN, or with avg_down average pool (an Identity at stride
  /// 1) + 1x1 convolution + BN; else empty (the identity).
  torch::nn::Sequential downsample{nullptr};
  SEBlock se{nullptr};
  /// The ReLU after the sum.
  torch::nn::ReLU& act_out() { return act2; }
  /// The options' se_strategy, parsed when the block is built.
  SEStrategy se_strategy() const { return se_strategy_; }

 private:
  SEStrategy se_strategy_ = SEStrategy::Standard;
};
TORCH_MODULE(BasicBlock);

/// ResNet bottleneck: 1x1 -> BN -> ReLU -> 3x3 (grouped) -> BN -> ReLU -> 1x1 -> BN (+ SE), + identity, ReLU.
/// Expansion 4: the output (and so the standard SE block) has planes * 4 channels.
/// Pre-activated (options.preact()): BN -> ReLU -> 1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1 (+ SE), + identity.
class SEPP_API BottleneckImpl : public torch::nn::Cloneable<BottleneckImpl> {
 public:
  static constexpr int64_t expansion = 4;
  static constexpr const char* kName = "Bottleneck";
  explicit BottleneckImpl(const BlockOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x);
  void zero_init_last();

  BlockOptions options;
  // Children in timm's order: conv1, bn1, act1, conv2, bn2, drop_block, act2, aa, conv3, bn3, se, act3, downsample;
  // pre-activated bn1 (of the input's channels), act1, conv1, bn2, act2, conv2, bn3, act3, conv3, se, downsample.
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Identity drop_block{nullptr};
  torch::nn::AnyModule aa;
  /// act3 (in place) follows the sum (pre-activated: bn3).
  torch::nn::ReLU act1{nullptr}, act2{nullptr}, act3{nullptr};
  torch::nn::Sequential downsample{nullptr};
  SEBlock se{nullptr};
  torch::nn::ReLU& act_out() { return act3; }
  /// The options' se_strategy, parsed when the block is built.
  SEStrategy se_strategy() const { return se_strategy_; }

 private:
  SEStrategy se_strategy_ = SEStrategy::Standard;
};
TORCH_MODULE(Bottleneck);

}  // namespace sepp
