// optimize_for_inference: BN folded into the convolutions, oneDNN convolutions with prepacked weights and fused
// post-ops on the CPU, channels_last throughout, the SE tail in one pass.

#include <sepp/inference.h>

#include <sepp/blocks.h>
#include <sepp/ops.h>
#include <sepp/se_block.h>

#include "inference/cuda_graphs.h"
#include "inference/se_kernels.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/cudnn_convolution_add_relu.h>
#include <ATen/ops/cudnn_convolution_relu.h>
#include <ATen/ops/mkldnn_reorder_conv2d_weight.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/utils.h>

#include <string_view>

namespace sepp {

namespace {

using at::Tensor;
using Scalars = c10::List<std::optional<at::Scalar>>;

// ---------------------------------------------------------------------------------------- oneDNN ops through ATen
// The ops inductor's CPU freezing uses (aten/src/ATen/native/mkldnn/Conv.cpp), called through the dispatcher.

using UnaryFn = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::IntArrayRef, c10::IntArrayRef,
                       c10::IntArrayRef, int64_t, std::string_view, Scalars, std::optional<std::string_view>);
using BinaryFn = Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::IntArrayRef,
                        c10::IntArrayRef, c10::IntArrayRef, int64_t, std::string_view, std::optional<at::Scalar>,
                        std::optional<std::string_view>, Scalars, std::optional<std::string_view>);

struct OneDnnOps {
  std::optional<c10::TypedOperatorHandle<UnaryFn>> unary;
  std::optional<c10::TypedOperatorHandle<BinaryFn>> binary;
  bool bf16 = false;
};

const OneDnnOps& onednn_ops() {
  static const OneDnnOps ops = [] {
    OneDnnOps o;
    if (!at::hasMKLDNN()) return o;
    auto& d = c10::Dispatcher::singleton();
    auto u = d.findSchema({"mkldnn::_convolution_pointwise", ""});
    auto b = d.findSchema({"mkldnn::_convolution_pointwise", "binary"});
    auto bf = d.findSchema({"mkldnn::_is_mkldnn_bf16_supported", ""});
    if (!u || !b) return o;
    o.unary = u->typed<UnaryFn>();
    o.binary = b->typed<BinaryFn>();
    o.bf16 = bf && bf->typed<bool()>().call();
    return o;
  }();
  return ops;
}

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil = false) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1;
  int64_t out = (ceil ? (span + s - 1) / s : span / s) + 1;
  if (ceil && (out - 1) * s >= in + p) --out;
  return std::max<int64_t>(out, 1);
}

// ------------------------------------------------------------------------------------------------- folded conv

struct FoldedConv {
  Tensor weight;  // BN folded in, channels_last (the "aten" backend's weight; the SE-free reference for tests)
  Tensor bias;
  Tensor packed;  // oneDNN's layout (the "onednn" backend), or undefined
  std::vector<int64_t> padding, stride, dilation;
  int64_t groups = 1;
  bool cudnn_fused = false;  // CUDA: cuDNN's fused conv + bias + ReLU and conv + bias + add + ReLU ("cudnn" backend)

  // y = conv(x) + bias, then ReLU when relu.
  Tensor run(const Tensor& x, bool relu) const {
    if (packed.defined()) {
      return onednn_ops().unary->call(x, packed, bias, padding, stride, dilation, groups, relu ? "relu" : "none",
                                      Scalars(), std::nullopt);
    }
    if (cudnn_fused && relu) {
      return at::cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups);
    }
    auto y = at::convolution(x, weight, bias, stride, padding, dilation, false, {0, 0}, groups);
    return relu ? y.relu_() : y;
  }

  // relu(conv(x) + bias + other): the residual sum and ReLU as post-ops of the convolution.
  Tensor run_add_relu(const Tensor& x, const Tensor& other) const {
    return run_add_relu(x, other, packed.defined() ? packed : weight, bias);
  }
  // The same with other weights of this convolution's shape (dense, or prepacked).
  Tensor run_add_relu(const Tensor& x, const Tensor& other, const Tensor& w, const Tensor& b) const {
    if (packed.defined()) {
      return onednn_ops().binary->call(x, other, w, b, padding, stride, dilation, groups, "add", std::nullopt, "relu",
                                       Scalars(), std::nullopt);
    }
    if (cudnn_fused) {
      return at::cudnn_convolution_add_relu(x, w, other, 1, b, stride, padding, dilation, groups);
    }
    return at::convolution(x, w, b, stride, padding, dilation, false, {0, 0}, groups).add_(other).relu_();
  }
};

// Whether cuDNN's fused convolutions run here for this dtype (they need cuDNN enabled and a cuDNN build that has
// them): tried once on a tiny input.
bool cudnn_fused_available(const torch::Device& device, c10::ScalarType dtype) {
  if (!device.is_cuda() || !at::globalContext().userEnabledCuDNN() || dtype == at::kDouble) return false;
  try {
    const auto o = at::TensorOptions().device(device).dtype(dtype);
    const auto x = at::ones({1, 8, 4, 4}, o).contiguous(at::MemoryFormat::ChannelsLast);
    const auto w = at::ones({8, 8, 1, 1}, o).contiguous(at::MemoryFormat::ChannelsLast);
    const auto b = at::zeros({8}, o);
    const auto y = at::cudnn_convolution_relu(x, w, b, {1, 1}, {0, 0}, {1, 1}, 1);
    const auto y2 = at::cudnn_convolution_add_relu(x, w, y, 1, b, {1, 1}, {0, 0}, {1, 1}, 1);
    // conv of ones with ones over 8 channels: 8; then 8 + 8 = 16.
    return y.min().item<double>() == 8.0 && y2.max().item<double>() == 16.0;
  } catch (const c10::Error&) {
    return false;
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------------- the model

struct OptimizedResNet::Impl {
  struct SE {
    Tensor w1, b1, w2, b2;  // [rd, C], [C, rd]; computed in float32 for half-precision models
    std::string squeeze, gate;

    // The excitation s [N, C] of t [N, C, H, W], in the MLP's dtype (float32 for half-precision models).
    Tensor of(const Tensor& t) const {
      const auto acc = w1.scalar_type();
      Tensor z;
      if (squeeze == "avg") {
        z = inference::channel_mean(t, acc);
      } else if (squeeze == "max") {
        z = t.amax({2, 3}).to(acc);
      } else {
        z = (t.mean({2, 3}, false, acc) + t.amax({2, 3}).to(acc)).mul_(0.5);
      }
      return excite(z);
    }
    // The excitation from the squeezed z [N, C] (in the MLP's dtype).
    Tensor excite(const Tensor& z) const {
      auto opt = [](const Tensor& t) { return t.defined() ? std::optional<Tensor>(t) : std::nullopt; };
      return ops::se_excite(z, w1, opt(b1), w2, opt(b2), gate);  // FC-ReLU-FC-gate: one launch on CUDA
    }
    // t * s, with s from of().
    static Tensor scale(const Tensor& t, const Tensor& s) {
      return ops::se_scale(t, s.to(t.scalar_type()));
    }
  };

  struct Block {
    std::vector<FoldedConv> convs;  // conv1, conv2 (, conv3): ReLU after each but the last
    std::optional<FoldedConv> downsample;
    std::optional<SE> se;
    detail::SEStrategy strategy = detail::SEStrategy::Standard;
    bool relu_before_se = false;
    // The standard SE of a bottleneck with an average squeeze, in eval mode, is exact with the squeeze taken before
    // the (1x1, stride 1) conv3: mean(U) = W3 mean(h) + b3. Then s is known before conv3 runs, and relu(U * s + id)
    // is conv3 with its weights scaled by s and the residual sum + ReLU fused: no pass over U at all. The weights
    // must be scaled per sample, so this serves batch 1 where conv3's weights are small next to U.
    bool squeeze_before_conv3 = false;
    Tensor w3;  // conv3's folded weight as [C, C/4] in the MLP's dtype (for W3 mean(h) + b3)
    Tensor b3;

    Tensor forward(const Tensor& x) const {
      const Tensor idn = downsample ? downsample->run(x, false) : x;
      const bool pre = se && strategy == detail::SEStrategy::Pre;
      Tensor h = pre ? SE::scale(x, se->of(x)) : x;
      for (size_t i = 0; i + 1 < convs.size(); ++i) h = convs[i].run(h, true);
      const FoldedConv& last = convs.back();
      // relu(U + other), with U the last conv's output (after a ReLU for timm's legacy basic block).
      auto merge = [&](const Tensor& other) {
        return relu_before_se ? last.run(h, true).add_(other).relu_() : last.run_add_relu(h, other);
      };
      if (!se || pre) return merge(idn);
      switch (strategy) {
        case detail::SEStrategy::Standard: {
          if (squeeze_before_conv3 && h.is_cuda()) {
            // CUDA, any batch: the squeeze reads h (a quarter of U's channels) and s is ready before conv3 runs;
            // the tail is one pass relu(U * s + identity).
            const Tensor s = se->excite(at::linear(ops::se_squeeze(h, w3.scalar_type()), w3, b3));
            const Tensor u = last.run(h, false);
            return ops::se_scale(u, s.to(u.scalar_type()), idn, true);
          }
          // Worth it where scaling and re-laying conv3's weights (~5 |W3| moved) costs less than the passes over U
          // it saves (~4 |U|): stages 1 and 2 of an SE-ResNet-50 at batch 1 (measured: SE overhead 9.7% -> 5.2%).
          const int64_t u_numel = last.weight.size(0) * h.size(2) * h.size(3);
          if (squeeze_before_conv3 && h.size(0) == 1 && 5 * w3.numel() < 4 * u_numel) {
            const Tensor s = se->excite(at::linear(inference::channel_mean(h, w3.scalar_type()), w3, b3));
            const Tensor sd = s.to(last.weight.scalar_type()).reshape({-1});
            return last.run_add_relu(h, idn, last.weight * sd.reshape({-1, 1, 1, 1}), last.bias * sd);
          }
          Tensor u = last.run(h, relu_before_se);
          const Tensor s = se->of(u);
          return inference::scale_add_relu_(std::move(u), s, idn);  // relu(U * s + identity), one pass
        }
        case detail::SEStrategy::Post: {
          const Tensor v = merge(idn);
          return SE::scale(v, se->of(v));
        }
        case detail::SEStrategy::Identity:
          return merge(SE::scale(idn, se->of(idn)));
        case detail::SEStrategy::Pre:
          break;
      }
      return merge(idn);
    }
  };

  ResNetOptions options;
  c10::ScalarType dtype = at::kFloat;
  torch::Device device = torch::kCPU;
  bool onednn = false;
  int64_t num_features = 0;
  FoldedConv stem;
  torch::nn::MaxPool2dOptions pool{3};
  std::vector<Block> blocks;
  Tensor fc_weight, fc_bias;
  Tensor like;  // the stem's dense weight: the device and dtype inputs are checked against
  bool cudnn_fused = false;
  std::unique_ptr<inference::GraphCache> graphs;  // CUDA: one graph per input shape (InferenceOptions::cuda_graphs)

  // The forward pass, op by op, on a channels_last input.
  Tensor eager(const Tensor& x) const {
    auto h = stem.run(x, true);
    h = at::max_pool2d(h, *pool.kernel_size(), *pool.stride(), *pool.padding(), *pool.dilation(), pool.ceil_mode());
    for (const auto& b : blocks) h = b.forward(h);
    auto f = h.mean({2, 3});
    return fc_weight.defined() ? at::linear(f, fc_weight, fc_bias) : f;
  }
};

// ---------------------------------------------------------------------------------------------------------- build

OptimizedResNet optimize_for_inference(const ResNet& model, const InferenceOptions& options) {
  TORCH_CHECK_VALUE(!model.is_empty(), "optimize_for_inference: expected a model, got an empty ResNet holder");
  auto& m = *model;
  const auto like = m.conv1->weight;
  const auto dtype = options.dtype().value_or(like.scalar_type());
  const auto device = like.device();
  TORCH_CHECK_TYPE(
      at::isFloatingType(dtype), "optimize_for_inference: expected a floating-point dtype, got ", dtype);
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
  const auto& ops = onednn_ops();
  impl->onednn = device.is_cpu() && ops.unary.has_value() &&
                 (dtype == at::kFloat || (dtype == at::kBFloat16 && ops.bf16));
  impl->cudnn_fused = cudnn_fused_available(device, dtype);
  if (device.is_cuda() && options.cuda_graphs() && inference::cuda_graphs_built()) {
    impl->graphs = std::make_unique<inference::GraphCache>();
  }

  torch::NoGradGuard no_grad;
  int64_t h = size[2], w = size[3];
  const int64_t n = size[0];
  const c10::ScalarType mlp_dtype = (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;

  auto fold = [&](const torch::nn::Conv2d& conv, const torch::nn::BatchNorm2d& bn) {
    const auto& o = conv->options;
    FoldedConv f;
    const auto pad = std::get<torch::ExpandingArray<2>>(o.padding());
    f.padding = {(*pad)[0], (*pad)[1]};
    f.stride = {(*o.stride())[0], (*o.stride())[1]};
    f.dilation = {(*o.dilation())[0], (*o.dilation())[1]};
    f.groups = o.groups();
    TORCH_CHECK_VALUE(
        bn->options.affine() && bn->options.track_running_stats(),
        "optimize_for_inference: expected BatchNorm layers with affine parameters and running statistics");
    const auto wd = conv->weight.detach().to(at::kDouble);
    const auto scale = bn->weight.detach().to(at::kDouble) /
                       (bn->running_var.detach().to(at::kDouble) + bn->options.eps()).sqrt();
    auto bias = bn->bias.detach().to(at::kDouble) - bn->running_mean.detach().to(at::kDouble) * scale;
    if (o.bias()) bias = bias + conv->bias.detach().to(at::kDouble) * scale;
    f.weight = (wd * scale.reshape({-1, 1, 1, 1})).to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
    f.bias = bias.to(dtype);
    f.cudnn_fused = impl->cudnn_fused;
    if (impl->onednn) {
      f.packed = at::mkldnn_reorder_conv2d_weight(
          f.weight.contiguous().to_mkldnn(), f.padding, f.stride, f.dilation, f.groups,
          std::vector<int64_t>{n, wd.size(1) * f.groups, h, w});
    }
    const auto k = o.kernel_size();
    h = out_size(h, (*k)[0], f.stride[0], f.padding[0], f.dilation[0]);
    w = out_size(w, (*k)[1], f.stride[1], f.padding[1], f.dilation[1]);
    return f;
  };

  impl->stem = fold(m.conv1, m.bn1);
  impl->like = impl->stem.weight;
  impl->pool = m.maxpool->options;
  {
    const auto& p = impl->pool;
    h = out_size(h, (*p.kernel_size())[0], (*p.stride())[0], (*p.padding())[0], (*p.dilation())[0], p.ceil_mode());
    w = out_size(w, (*p.kernel_size())[1], (*p.stride())[1], (*p.padding())[1], (*p.dilation())[1], p.ceil_mode());
  }

  auto make_se = [&](const SEBlock& se) {
    OptimizedResNet::Impl::SE s;
    // Copies (copy=true): the optimized model must not see later changes to the model's weights.
    s.w1 = se->fc1->weight.detach().flatten(1).to(mlp_dtype, false, true).contiguous();
    s.w2 = se->fc2->weight.detach().flatten(1).to(mlp_dtype, false, true).contiguous();
    if (se->options.bias()) {
      s.b1 = se->fc1->bias.detach().to(mlp_dtype, false, true);
      s.b2 = se->fc2->bias.detach().to(mlp_dtype, false, true);
    }
    s.squeeze = se->options.squeeze();
    s.gate = se->options.gate();
    return s;
  };

  for (auto* layer : {&m.layer1, &m.layer2, &m.layer3, &m.layer4}) {
    for (const auto& child : (*layer)->children()) {
      OptimizedResNet::Impl::Block b;
      const int64_t h_in = h, w_in = w;
      const BlockOptions* bo = nullptr;
      const detail::ResidualBlockBase* base = nullptr;
      if (auto* bt = child->as<BottleneckImpl>()) {
        b.convs = {fold(bt->conv1, bt->bn1), fold(bt->conv2, bt->bn2), fold(bt->conv3, bt->bn3)};
        bo = &bt->options;
        base = bt;
      } else if (auto* bb = child->as<BasicBlockImpl>()) {
        b.convs = {fold(bb->conv1, bb->bn1), fold(bb->conv2, bb->bn2)};
        bo = &bb->options;
        base = bb;
      } else {
        TORCH_CHECK_VALUE(false, "optimize_for_inference: unexpected block type ", child->name());
      }
      const int64_t h_out = h, w_out = w;
      if (base->downsample) {
        h = h_in;
        w = w_in;
        auto ds = base->downsample;
        auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(ds->ptr(0));
        auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(ds->ptr(1));
        TORCH_CHECK_VALUE(conv && bn, "optimize_for_inference: expected a downsample of Conv2d and BatchNorm2d");
        b.downsample = fold(torch::nn::Conv2d(conv), torch::nn::BatchNorm2d(bn));
        h = h_out;
        w = w_out;
      }
      if (base->se) {
        b.se = make_se(base->se);
        b.strategy = detail::parse_se_strategy(bo->se_strategy());
        b.relu_before_se = bo->relu_before_se();
        const auto& c3 = b.convs.back();
        if (b.convs.size() == 3 && b.strategy == detail::SEStrategy::Standard && !b.relu_before_se &&
            b.se->squeeze == "avg" && c3.weight.size(2) == 1 && c3.weight.size(3) == 1 && c3.stride[0] == 1 &&
            c3.stride[1] == 1 && c3.padding[0] == 0 && c3.padding[1] == 0 && c3.groups == 1) {
          b.squeeze_before_conv3 = true;
          b.w3 = c3.weight.flatten(1).to(mlp_dtype).contiguous();
          b.b3 = c3.bias.to(mlp_dtype);
        }
      }
      impl->blocks.push_back(std::move(b));
    }
  }
  if (m.options.num_classes() > 0) {
    auto* fc = m.fc.ptr()->as<torch::nn::LinearImpl>();
    TORCH_CHECK_VALUE(fc != nullptr, "optimize_for_inference: expected a Linear classifier");
    impl->fc_weight = fc->weight.detach().to(dtype, false, true).contiguous();
    impl->fc_bias = fc->bias.defined() ? fc->bias.detach().to(dtype, false, true) : Tensor();
  }
  return OptimizedResNet(std::move(impl));
}

// -------------------------------------------------------------------------------------------------------- forward

Tensor OptimizedResNet::forward(const Tensor& x) const {
  const auto& m = *impl_;
  detail::check_input(x, m.options.in_chans(), m.like, "ResNet");
  torch::NoGradGuard no_grad;
  const auto xin = x.contiguous(at::MemoryFormat::ChannelsLast);
  if (m.graphs) {
    return m.graphs->run(xin, [&m](const Tensor& t) { return m.eager(t); });
  }
  return m.eager(xin);
}

int64_t OptimizedResNet::cuda_graphs_captured() const {
  return impl_->graphs ? impl_->graphs->captured() : 0;
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
  return impl_->onednn ? "onednn" : impl_->cudnn_fused ? "cudnn" : "aten";
}
int64_t OptimizedResNet::num_features() const {
  return impl_->num_features;
}

}  // namespace sepp
