// optimize_for_inference: the builder of the optimized model (BN folded into the convolutions, each block's tail
// chosen for its device), and OptimizedResNet's public methods.

#include <sepp/inference.h>

#include "check_input.h"
#include "inference/model.h"
#include "inference/onednn.h"

#include <sepp/ops.h>

#include <c10/util/Exception.h>
#include <torch/nn/modules/linear.h>
#include <torch/utils.h>

namespace sepp {

namespace {

using inference::Block;
using inference::FoldTarget;
using inference::SETail;
using inference::SEWeights;
using Shape = std::array<int64_t, 4>;  // [N, C, H, W] of a convolution's input

// Copies (copy=true): the optimized model must not see later changes to the model's weights.
SEWeights se_weights(const SEBlock& se, c10::ScalarType mlp_dtype, c10::ScalarType weight_dtype) {
  SEWeights s;
  s.acc = mlp_dtype;
  s.w1 = se->fc1->weight.detach().flatten(1).to(weight_dtype, false, true).contiguous();
  s.w2 = se->fc2->weight.detach().flatten(1).to(weight_dtype, false, true).contiguous();
  if (se->options.bias()) {
    s.b1 = se->fc1->bias.detach().to(mlp_dtype, false, true);
    s.b2 = se->fc2->bias.detach().to(mlp_dtype, false, true);
  }
  s.squeeze = se->squeeze_kind();
  s.gate = se->options.gate();
  return s;
}

// The tail of a block with a standard SE block (see SETail).
SETail choose_tail(const Block& b, const torch::Device& device) {
  const bool squeeze_first =
      b.convs.size() == 3 && !b.relu_before_se && b.se->squeeze == SESqueeze::Avg && b.convs.back().is_pointwise();
  if (device.is_cuda()) return squeeze_first ? SETail::SqueezeFirst : SETail::OutOfPlace;
  return squeeze_first ? SETail::SqueezeFirstScaledConv3 : SETail::InPlace;
}

// The optimized twin of one residual block whose input has spatial size `hw` (advanced to its output's).
template <typename Impl>
Block fold_block(
    Impl& m,
    const FoldTarget& target,
    c10::ScalarType mlp_dtype,
    const torch::Device& device,
    int64_t n,
    std::array<int64_t, 2>& hw) {
  Block b;
  const auto in_hw = hw;
  auto fold = [&](const torch::nn::Conv2d& conv, const torch::nn::BatchNorm2d& bn) {
    auto f = inference::fold_conv_bn(conv, bn, target, Shape{n, conv->options.in_channels(), hw[0], hw[1]});
    hw = f.output_hw(hw);
    return f;
  };
  // The aa pool follows the strided 3x3: a bottleneck's conv2, a basic block's conv1.
  constexpr bool bottleneck = std::is_same_v<Impl, BottleneckImpl>;
  if (!m.aa.is_empty()) b.aa = inference::Pool::of(*m.aa.ptr());  // pre-activated blocks have no aa
  b.aa_after = bottleneck ? 1 : 0;
  auto fold_then_aa = [&](const torch::nn::Conv2d& conv, const torch::nn::BatchNorm2d& bn, size_t index) {
    auto f = fold(conv, bn);
    if (b.aa && index == b.aa_after) hw = b.aa->output_hw(hw);
    return f;
  };
  FoldTarget plain = target;  // convolutions without a ReLU never run fused, so they are not probed
  plain.cudnn_fused = false;
  const bool preact = m.options.preact();
  const torch::nn::BatchNorm2d no_bn{nullptr};
  if (preact) {
    // bn1 runs on the block's input; each convolution but the last is folded with the BN after it.
    b.preact = inference::Affine::of(m.bn1, target.dtype);
    b.convs.push_back(fold(m.conv1, m.bn2));
    if constexpr (bottleneck) {
      b.convs.push_back(fold(m.conv2, m.bn3));
      b.convs.push_back(
          inference::fold_conv_bn(m.conv3, no_bn, plain, Shape{n, m.conv3->options.in_channels(), hw[0], hw[1]}));
    } else {
      b.convs.push_back(
          inference::fold_conv_bn(m.conv2, no_bn, plain, Shape{n, m.conv2->options.in_channels(), hw[0], hw[1]}));
    }
    hw = b.convs.back().output_hw(hw);
  } else {
    b.convs.push_back(fold_then_aa(m.conv1, m.bn1, 0));
    b.convs.push_back(fold_then_aa(m.conv2, m.bn2, 1));
    if constexpr (bottleneck) {
      b.convs.push_back(fold(m.conv3, m.bn3));
    }
  }
  if (m.downsample) {
    // [conv, bn], with avg_down [pool or identity, conv, bn]; pre-activated without the bn.
    const auto& parts = m.downsample->children();
    const size_t first = m.options.avg_down() ? 1 : 0;
    TORCH_CHECK_VALUE(
        parts.size() == first + (preact ? 1 : 2),
        "optimize_for_inference: expected a downsample of Conv2d and BatchNorm2d (after a pool with avg_down; without ",
        "the BatchNorm2d when pre-activated), got ", parts.size(), " modules");
    auto down_hw = in_hw;
    if (first == 1) {
      b.down_pool = inference::Pool::of(*parts[0]);
      if (b.down_pool) down_hw = b.down_pool->output_hw(down_hw);
    }
    auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(parts[first]);
    auto bn = preact ? nullptr : std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(parts[first + 1]);
    TORCH_CHECK_VALUE(
        conv && (preact || bn), "optimize_for_inference: expected a downsample of Conv2d and BatchNorm2d");
    b.downsample = inference::fold_conv_bn(
        torch::nn::Conv2d(conv), preact ? no_bn : torch::nn::BatchNorm2d(bn), plain,
        Shape{n, conv->options.in_channels(), down_hw[0], down_hw[1]});
  }
  if (m.se) {
    // A bfloat16 model on the CPU keeps its SE weights (and conv3's, for the squeeze before it) in bfloat16, as its
    // convolutions do: cpu::dense widens them as it reads them, from half the bytes.
    const auto weight_dtype = target.onednn && target.dtype == at::kBFloat16 ? at::kBFloat16 : mlp_dtype;
    b.se = se_weights(m.se, mlp_dtype, weight_dtype);
    b.strategy = m.se_strategy();
    b.relu_before_se = m.options.relu_before_se();
    if (preact) {
      b.tail = device.is_cuda() ? SETail::OutOfPlace : SETail::InPlace;
    } else if (b.strategy == SEStrategy::Standard) {
      b.tail = choose_tail(b, device);
      if (b.tail == SETail::SqueezeFirst || b.tail == SETail::SqueezeFirstScaledConv3) {
        const auto& c3 = b.convs.back();
        b.w3 = c3.dense().flatten(1).to(weight_dtype).contiguous();
        b.b3 = c3.bias.to(mlp_dtype);
      }
    }
  }
  return b;
}

}  // namespace

OptimizedResNet optimize_for_inference(const ResNet& model, const InferenceOptions& options) {
  TORCH_CHECK_VALUE(!model.is_empty(), "optimize_for_inference: expected a model, got an empty ResNet holder");
  auto& m = *model;
  const auto like = m.stem_conv().weight;
  const auto dtype = options.dtype().value_or(like.scalar_type());
  const auto device = like.device();
  TORCH_CHECK_TYPE(at::isFloatingType(dtype), "optimize_for_inference: expected a floating-point dtype, got ", dtype);
  if (device.is_cpu()) {
    TORCH_CHECK_TYPE(
        dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kDouble,
        "optimize_for_inference: expected float32, bfloat16 or float64 on the CPU, got ", dtype);
  }
  auto size = options.input_size();
  if (size.empty()) size = {1, m.options.in_chans(), 224, 224};
  TORCH_CHECK_VALUE(
      size.size() == 4 && size[0] >= 1 && size[1] == m.options.in_chans() && size[2] >= 1 && size[3] >= 1,
      "optimize_for_inference: expected input_size [N, ", m.options.in_chans(), ", H, W] with N, H, W >= 1, got ",
      c10::IntArrayRef(size));

  auto impl = std::make_shared<OptimizedResNet::Impl>();
  impl->options = m.options;
  impl->dtype = dtype;
  impl->device = device;
  impl->num_features = m.num_features();
  const auto& onednn = inference::onednn_ops();
  FoldTarget target;
  target.dtype = dtype;
  target.onednn =
      device.is_cpu() && onednn.unary.has_value() && (dtype == at::kFloat || (dtype == at::kBFloat16 && onednn.bf16));
  // Each convolution is then probed on its own shape when folded (inference::cudnn_fused_works).
  target.cudnn_fused = inference::cudnn_fused_candidate(device, dtype);
  if (device.is_cuda() && options.cuda_graphs() && inference::cuda_graphs_built()) {
    impl->graphs = std::make_unique<inference::GraphCache>();
  }

  torch::NoGradGuard no_grad;
  // The SE kernels check themselves now (CUDA), not in the first forward or inside a graph capture.
  ops::check_kernels(device, dtype);
  const int64_t n = size[0];
  const c10::ScalarType mlp_dtype = (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;

  // The stem: conv1 (+ bn1), or a deep stem's three convolutions, each folded with the BN after it (the last with
  // bn1), each followed by its ReLU.
  std::array<int64_t, 2> hw = {size[2], size[3]};
  const auto fold_stem = [&](const torch::nn::Conv2d& conv, const torch::nn::BatchNorm2d& bn) {
    impl->stem.push_back(
        inference::fold_conv_bn(conv, bn, target, Shape{n, conv->options.in_channels(), hw[0], hw[1]}));
    hw = impl->stem.back().output_hw(hw);
  };
  // Pre-activated, the stem's last convolution has no BN (m.bn1 is empty) and no ReLU.
  impl->preact = m.options.preact();
  if (m.deep_conv1) {
    const auto& parts = m.deep_conv1->children();
    for (size_t i = 0; i < parts.size(); i += 3) {
      auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(parts[i]);
      auto bn = i + 1 < parts.size()
                    ? torch::nn::BatchNorm2d(std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(parts[i + 1]))
                    : m.bn1;
      TORCH_CHECK_VALUE(
          conv && (!bn.is_empty() || (impl->preact && i + 1 >= parts.size())),
          "optimize_for_inference: expected a deep stem of Conv2d, BatchNorm2d and ReLU");
      fold_stem(torch::nn::Conv2d(conv), bn);
    }
  } else {
    fold_stem(m.conv1, m.bn1);
  }
  impl->like = at::empty({0}, impl->stem.front().bias.options());
  impl->pool = inference::Pool::of(*m.maxpool.ptr());  // none: the CIFAR stem's Identity
  if (impl->pool) hw = impl->pool->output_hw(hw);
  for (const auto& layer : m.stages()) {
    for (const auto& child : layer->children()) {
      if (auto* bt = child->as<BottleneckImpl>()) {
        impl->blocks.push_back(fold_block(*bt, target, mlp_dtype, device, n, hw));
      } else if (auto* bb = child->as<BasicBlockImpl>()) {
        impl->blocks.push_back(fold_block(*bb, target, mlp_dtype, device, n, hw));
      } else {
        TORCH_CHECK_VALUE(false, "optimize_for_inference: unexpected block type ", child->name());
      }
    }
  }
  // "cudnn" when any convolution runs cuDNN's fused kernels.
  bool cudnn = false;
  for (const auto& c : impl->stem) cudnn = cudnn || c.cudnn_fused;
  for (const auto& b : impl->blocks) {
    for (const auto& c : b.convs) cudnn = cudnn || c.cudnn_fused;
  }
  impl->backend = target.onednn ? "onednn" : cudnn ? "cudnn" : "aten";
  if (m.norm) impl->norm = inference::Affine::of(m.norm, dtype);
  if (m.options.num_classes() > 0) {
    auto* fc = m.fc.ptr()->as<torch::nn::LinearImpl>();
    TORCH_CHECK_VALUE(fc != nullptr, "optimize_for_inference: expected a Linear classifier");
    impl->fc_weight = fc->weight.detach().to(dtype, false, true).contiguous();
    impl->fc_bias = fc->bias.defined() ? fc->bias.detach().to(dtype, false, true) : at::Tensor();
  }
  if (impl->device.is_cpu()) impl->activations = inference::ActivationPool::make();
  return OptimizedResNet(std::move(impl));
}

at::Tensor OptimizedResNet::forward(const at::Tensor& x) const {
  const auto& m = *impl_;
  check_input(x, m.options.in_chans(), m.like, "ResNet");
  torch::NoGradGuard no_grad;
  std::optional<inference::ActivationPool::Scope> pooled;
  if (m.activations) pooled.emplace(m.activations);
  const auto xin = x.contiguous(at::MemoryFormat::ChannelsLast);
  if (m.graphs) {
    return m.graphs->run(xin, [&m](const at::Tensor& t) { return m.eager(t); });
  }
  return m.eager(xin);
}

int64_t OptimizedResNet::cuda_graphs_captured() const {
  return impl_->graphs ? impl_->graphs->captured() : 0;
}
int64_t OptimizedResNet::activation_bytes() const {
  return impl_->activations ? impl_->activations->stats().bytes : 0;
}
const ResNetOptions& OptimizedResNet::model_options() const {
  return impl_->options;
}
c10::ScalarType OptimizedResNet::dtype() const {
  return impl_->dtype;
}
torch::Device OptimizedResNet::device() const {
  return impl_->device;
}
std::string OptimizedResNet::backend() const {
  return impl_->backend;
}
int64_t OptimizedResNet::num_features() const {
  return impl_->num_features;
}

}  // namespace sepp
