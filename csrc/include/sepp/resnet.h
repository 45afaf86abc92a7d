#pragma once

#include <sepp/blocks.h>
#include <sepp/export.h>
#include <sepp/se_block.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <vector>

namespace sepp {

/// Options of ResNet / ResNeXt / SE-ResNet / SE-ResNeXt (one class, the variants are data; see factories.h).
/// Parameter names and shapes follow timm (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.se.fc1`,
/// `layer1.0.downsample.0`, `fc`), which are torchvision's for the plain ResNets.
struct SEPP_API ResNetOptions {
  ResNetOptions() = default;

  // Each option is described in visit() below.
  TORCH_ARG(std::string, block) = "bottleneck";
  TORCH_ARG(std::vector<int64_t>, layers) = std::vector<int64_t>({3, 4, 6, 3});
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_chans) = 3;
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(int64_t, width_per_group) = 64;
  TORCH_ARG(bool, stride_in_1x1) = false;
  TORCH_ARG(std::vector<bool>, se_stages) = std::vector<bool>({false, false, false, false});
  TORCH_ARG(SEBlockOptions, se_options) = SEBlockOptions();
  TORCH_ARG(std::string, se_strategy) = "standard";
  TORCH_ARG(bool, relu_before_se) = false;
  TORCH_ARG(bool, zero_init_last) = true;
  TORCH_ARG(bool, stem_pool_ceil_mode) = false;
  TORCH_ARG(std::string, stem_type) = "";
  TORCH_ARG(int64_t, stem_width) = 64;
  TORCH_ARG(bool, avg_down) = false;
  TORCH_ARG(int64_t, down_kernel_size) = 1;
  TORCH_ARG(int64_t, block_reduce_first) = 1;
  TORCH_ARG(std::string, aa_layer) = "";
  TORCH_ARG(std::vector<int64_t>, stage_planes) = std::vector<int64_t>({64, 128, 256, 512});
  TORCH_ARG(bool, preact) = false;
  TORCH_ARG(double, drop_rate) = 0.0;

 public:
  /// Convenience: SE in every stage.
  ResNetOptions& se(bool on) {
    se_stages_ = std::vector<bool>(layers_.size(), on);
    return *this;
  }
  void validate() const;
  /// Channels of the stem's output (layer1's input): 64 for the 7x7 stem, stem_width for the CIFAR stem,
  /// 2 * stem_width for the deep stems.
  int64_t stem_channels() const {
    if (stem_type_.empty()) return 64;
    return stem_type_ == "cifar" ? stem_width_ : 2 * stem_width_;
  }
  /// Whether every entry of se_stages is the same (a bool given for every stage, whatever their number).
  bool se_uniform() const {
    for (bool on : se_stages_) {
      if (on != se_stages_.front()) return false;
    }
    return true;
  }
  /// The number of stages (layers.size(), 1 to 4).
  int64_t num_stages() const { return static_cast<int64_t>(layers_.size()); }

  /// The options by name: f(name, field, kind, doc) for each, in the order of the Python constructor's arguments,
  /// the SE blocks' options flattened in (see SEBlockOptions::visit). `se_stages` is `se` in Python.
  template <typename Self, typename F>
  static void visit(Self& o, F&& f) {
    f("block", o.block_, OptionKind::Plain, "'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50 and deeper)");
    f("layers", o.layers_, OptionKind::Plain, "blocks in each stage (1 to 4 stages, as many as stage_planes)");
    f("num_classes", o.num_classes_, OptionKind::Plain,
      "classifier outputs; 0 = no classifier (forward returns the pooled features)");
    f("in_chans", o.in_chans_, OptionKind::Plain, "input channels");
    f("groups", o.groups_, OptionKind::Plain, "ResNeXt cardinality");
    f("width_per_group", o.width_per_group_, OptionKind::Plain, "ResNeXt width per group");
    f("stride_in_1x1", o.stride_in_1x1_, OptionKind::Plain,
      "the downsampling stride on a bottleneck's first 1x1 (the original Caffe SENet weights) instead of its 3x3");
    f("se", o.se_stages_, OptionKind::Plain,
      "SE blocks in every stage (a bool, or bools all equal) or per stage (one bool per stage)");
    SEBlockOptions::visit(o.se_options_, f, /*embedded=*/true);
    f("se_strategy", o.se_strategy_, OptionKind::Plain,
      "where the SE block sits in a residual block: 'standard', 'pre', 'post' or 'identity' (see BlockOptions)");
    f("relu_before_se", o.relu_before_se_, OptionKind::Plain,
      "a ReLU on each residual branch before its SE block (timm's legacy SE-ResNet-18/34)");
    f("zero_init_last", o.zero_init_last_, OptionKind::Plain,
      "initialise the last BN of each residual branch to zero (as timm), so every block starts as the identity");
    f("stem_pool_ceil_mode", o.stem_pool_ceil_mode_, OptionKind::Plain,
      "the stem's 3x3/2 max pool without padding, rounding its output size up (original Caffe SENet, Cadene's port)");
    f("stem_type", o.stem_type_, OptionKind::Plain,
      "'' (one 7x7/2 convolution), 'deep' (three 3x3 convolutions of stem_width, stem_width and 2 * stem_width "
      "channels; timm's c/d/e/s variants and SENet-154) or 'deep_tiered' (3 * (stem_width // 4), stem_width, "
      "2 * stem_width; timm's t variants); a deep stem's conv1 is a Sequential (conv1.0, conv1.1, ..., conv1.6); "
      "'cifar' (one 3x3 convolution of stride 1 to stem_width channels and no pool: 32x32 images)");
    f("stem_width", o.stem_width_, OptionKind::Plain, "the deep stems' width (see stem_type); unused by the 7x7 stem");
    f("avg_down", o.avg_down_, OptionKind::Plain,
      "downsample shortcuts as a 2x2 average pool (ceil mode, padding not counted) and a 1x1 convolution of stride 1, "
      "instead of a 1x1 convolution of stride 2 (timm's d variants)");
    f("down_kernel_size", o.down_kernel_size_, OptionKind::Plain,
      "1 or 3: the kernel of a strided downsample convolution (3 in SENet-154; stride-1 downsamples stay 1x1)");
    f("block_reduce_first", o.block_reduce_first_, OptionKind::Plain,
      "a block's first convolution outputs its width divided by this (2 in SENet-154)");
    f("aa_layer", o.aa_layer_, OptionKind::Plain,
      "'' or 'avgpool': anti-aliased downsampling as timm's aa models: a strided block's 3x3 runs at stride 1 and a "
      "2x2/2 average pool (the block's `aa`) follows its ReLU; the stem's max pool becomes a 2x2/2 average pool");
    f("stage_planes", o.stage_planes_, OptionKind::Plain,
      "the width of each stage's blocks (its output has planes * expansion channels); the first stage has stride 1, "
      "the others 2");
    f("preact", o.preact_, OptionKind::Plain,
      "pre-activation blocks (He et al. 2016, 'Identity Mappings'): each block starts with BN and ReLU, a "
      "projection shortcut takes the pre-activated input, the sum has no ReLU; the stem has no BN or ReLU, and a "
      "final BN (`norm`) and ReLU (`act`) follow the last stage. Only the standard SE placement");
    f("drop_rate", o.drop_rate_, OptionKind::Plain, "dropout probability before the classifier (training only)");
  }
};

/// ResNet with optional SE blocks.
class SEPP_API ResNetImpl : public torch::nn::Cloneable<ResNetImpl> {
 public:
  explicit ResNetImpl(const ResNetOptions& options = {});

  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// [N, in_chans, H, W] -> logits [N, num_classes] (or pooled features [N, num_features] when num_classes == 0).
  torch::Tensor forward(const torch::Tensor& x);
  /// The stem (conv1, bn1, ReLU, pool): [N, in_chans, H, W] -> [N, stem_channels, H/4, W/4].
  torch::Tensor forward_stem(const torch::Tensor& x);
  /// Stem and the four stages: [N, in_chans, H, W] -> [N, num_features, H/32, W/32].
  torch::Tensor forward_features(const torch::Tensor& x);
  /// Global average pool, dropout and classifier; with pre_logits the pooled features [N, num_features].
  torch::Tensor forward_head(const torch::Tensor& features, bool pre_logits = false);
  /// The outputs of the stages (strides 4, 8, 16, 32), for detection / segmentation backbones.
  std::vector<torch::Tensor> forward_stages(const torch::Tensor& x);
  /// timm's feature maps by index: 0 = the stem's ReLU (act1, stride 2; with preact the stem's conv1), 1..4 =
  /// layer1..layer4 (strides 4 to 32; 1 to 8 with the CIFAR stem), the last stage with preact after norm and act,
  /// in the order of `indices` (each in 0..num_stages(), no repeats); stops after the deepest one asked for.
  std::vector<torch::Tensor> forward_intermediates(const torch::Tensor& x, const std::vector<int64_t>& indices);
  /// Replaces the classifier with a freshly initialised one of `num_classes` outputs (0 = none).
  void reset_classifier(int64_t num_classes);

  /// Channels of the features before the classifier (the last stage's planes * expansion).
  int64_t num_features() const { return num_features_; }
  /// Channels of each stage's output.
  std::vector<int64_t> stage_channels() const;
  /// The stem's first convolution (conv1, or conv1.0 of a deep stem): its weight has the model's device and dtype.
  torch::nn::Conv2dImpl& stem_conv() const;

  ResNetOptions options;
  // Children in timm's order: conv1, bn1, act1, maxpool, layer1..layer4, global_pool, fc; with preact conv1,
  // maxpool, layer1..layerN, norm, act, global_pool, fc.
  /// The 7x7/2 stem convolution, registered as conv1; null with a deep stem.
  torch::nn::Conv2d conv1{nullptr};
  /// A deep stem (Conv2d, BatchNorm2d, ReLU, Conv2d, BatchNorm2d, ReLU, Conv2d), registered as conv1 in conv1's place.
  torch::nn::Sequential deep_conv1{nullptr};
  /// The stem's BN and ReLU; null with preact.
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::ReLU act1{nullptr};
  /// torch::nn::MaxPool2d (3x3/2), torch::nn::AvgPool2d (2x2/2) with aa_layer, torch::nn::Identity with the CIFAR stem.
  torch::nn::AnyModule maxpool;
  /// The stages; those past num_stages() are null.
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  /// The stages that exist, in order.
  std::vector<torch::nn::Sequential> stages() const;
  /// With preact: the BN and ReLU after the last stage; else null.
  torch::nn::BatchNorm2d norm{nullptr};
  torch::nn::ReLU act{nullptr};
  /// pool (global average, to 1x1) and flatten, as timm's SelectAdaptivePool2d.
  torch::nn::Sequential global_pool{nullptr};
  /// torch::nn::Linear, or torch::nn::Identity when num_classes == 0.
  torch::nn::AnyModule fc;

 private:
  torch::nn::Sequential make_layer(int64_t stage, int64_t planes, int64_t blocks, int64_t stride, int64_t& inplanes);
  void make_classifier();
  /// check_input, and an image size the network can take through feature `depth` (0 = the stem, 4 = layer4; -1 = the
  /// last stage): in training mode, more than one value per channel at every batch norm.
  void check_image(const torch::Tensor& x, int64_t depth = -1) const;
  /// conv1, bn1, act1, maxpool, unchecked.
  torch::Tensor stem(const torch::Tensor& x);
  /// conv1 (or deep_conv1), bn1, act1 (conv1 alone with preact), unchecked.
  torch::Tensor stem_act(const torch::Tensor& x);
  /// With preact, norm and act after the last stage; else x.
  torch::Tensor final_act(const torch::Tensor& x);
  int64_t num_features_ = 0;
};

TORCH_MODULE(ResNet);

}  // namespace sepp
