#include <sepp/observe.h>
#include <sepp/resnet.h>

#include "check_input.h"

#include <torch/nn/functional/dropout.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <string>

namespace sepp {

namespace nn = torch::nn;

void ResNetOptions::validate() const {
  TORCH_CHECK_VALUE(
      block_ == "basic" || block_ == "bottleneck", "ResNet: expected block to be 'basic' or 'bottleneck', got '",
      block_, "'");
  TORCH_CHECK_VALUE(
      stage_planes_.size() >= 1 && stage_planes_.size() <= 4, "ResNet: expected 1 to 4 stages in stage_planes, got ",
      stage_planes_.size());
  TORCH_CHECK_VALUE(
      layers_.size() == stage_planes_.size(), "ResNet: expected as many stage depths in layers as stage_planes (",
      stage_planes_.size(), "), got ", layers_.size());
  for (auto n : layers_) {
    TORCH_CHECK_VALUE(n >= 1, "ResNet: expected every stage depth >= 1, got layers = ", c10::IntArrayRef(layers_));
  }
  for (auto p : stage_planes_) {
    TORCH_CHECK_VALUE(
        p >= 1, "ResNet: expected every stage's planes >= 1, got stage_planes = ", c10::IntArrayRef(stage_planes_));
  }
  TORCH_CHECK_VALUE(
      se_uniform() || se_stages_.size() == layers_.size(), "ResNet: se (se_stages): expected a bool or ",
      layers_.size(), " bools (one per stage), got ", se_stages_.size(), " entries");
  TORCH_CHECK_VALUE(num_classes_ >= 0, "ResNet: expected num_classes >= 0, got ", num_classes_);
  TORCH_CHECK_VALUE(groups_ >= 1, "ResNet: expected groups >= 1, got ", groups_);
  TORCH_CHECK_VALUE(width_per_group_ >= 1, "ResNet: expected width_per_group >= 1, got ", width_per_group_);
  TORCH_CHECK_VALUE(in_chans_ >= 1, "ResNet: expected in_chans >= 1, got ", in_chans_);
  TORCH_CHECK_VALUE(
      stem_type_.empty() || stem_type_ == "deep" || stem_type_ == "deep_tiered" || stem_type_ == "cifar",
      "ResNet: expected stem_type to be '', 'deep', 'deep_tiered' or 'cifar', got '", stem_type_, "'");
  TORCH_CHECK_VALUE(
      stem_width_ >= (stem_type_ == "deep_tiered" ? 4 : 1),
      "ResNet: expected stem_width >= ", stem_type_ == "deep_tiered" ? 4 : 1, " for stem_type '", stem_type_, "', got ",
      stem_width_);
  TORCH_CHECK_VALUE(
      aa_layer_.empty() || aa_layer_ == "avgpool", "ResNet: expected aa_layer to be '' or 'avgpool', got '", aa_layer_,
      "'");
  TORCH_CHECK_VALUE(
      !(stem_pool_ceil_mode_ && !aa_layer_.empty()),
      "ResNet: aa_layer replaces the stem's max pool, so stem_pool_ceil_mode cannot be set with it");
  TORCH_CHECK_VALUE(
      !(stride_in_1x1_ && !aa_layer_.empty()),
      "ResNet: aa_layer follows the strided 3x3, so it cannot be combined with stride_in_1x1");
  TORCH_CHECK_VALUE(
      down_kernel_size_ == 1 || down_kernel_size_ == 3, "ResNet: expected down_kernel_size 1 or 3, got ",
      down_kernel_size_);
  TORCH_CHECK_VALUE(
      !avg_down_ || down_kernel_size_ == 1, "ResNet: avg_down's downsample convolution is 1x1, got down_kernel_size ",
      down_kernel_size_);
  if (preact_) {
    TORCH_CHECK_VALUE(
        se_strategy_ == "standard", "ResNet: preact supports only se_strategy 'standard', got '", se_strategy_, "'");
    TORCH_CHECK_VALUE(!relu_before_se_, "ResNet: preact cannot be combined with relu_before_se");
    TORCH_CHECK_VALUE(aa_layer_.empty(), "ResNet: preact cannot be combined with aa_layer '", aa_layer_, "'");
    TORCH_CHECK_VALUE(!stem_pool_ceil_mode_, "ResNet: preact cannot be combined with stem_pool_ceil_mode");
  }
  TORCH_CHECK_VALUE(
      !(stem_type_ == "cifar" && (stem_pool_ceil_mode_ || !aa_layer_.empty())),
      "ResNet: the CIFAR stem has no pool, so stem_pool_ceil_mode and aa_layer's stem pool cannot be set with it");
  TORCH_CHECK_VALUE(block_reduce_first_ >= 1, "ResNet: expected block_reduce_first >= 1, got ", block_reduce_first_);
  TORCH_CHECK_VALUE(drop_rate_ >= 0.0 && drop_rate_ < 1.0, "ResNet: expected 0 <= drop_rate < 1, got ", drop_rate_);
}

ResNetImpl::ResNetImpl(const ResNetOptions& options_) : options(options_) {
  reset();
}

void ResNetImpl::reset() {
  options.validate();
  if (options.se_uniform()) {  // a bool (or equal bools) holds for every stage
    options.se_stages(
        std::vector<bool>(options.layers().size(), !options.se_stages().empty() && options.se_stages()[0]));
  }
  int64_t inplanes = options.stem_channels();
  conv1 = nullptr;
  deep_conv1 = nullptr;
  bn1 = nullptr;
  act1 = nullptr;
  norm = nullptr;
  act = nullptr;
  layer1 = layer2 = layer3 = layer4 = nullptr;
  if (options.stem_type() == "cifar") {
    conv1 = register_module(
        "conv1", nn::Conv2d(nn::Conv2dOptions(options.in_chans(), inplanes, 3).stride(1).padding(1).bias(false)));
  } else if (options.stem_type().empty()) {
    conv1 = register_module(
        "conv1", nn::Conv2d(nn::Conv2dOptions(options.in_chans(), inplanes, 7).stride(2).padding(3).bias(false)));
  } else {
    const int64_t w = options.stem_width();
    const int64_t c0 = options.stem_type() == "deep_tiered" ? 3 * (w / 4) : w;
    const auto conv3x3 = [](int64_t in, int64_t out, int64_t stride) {
      return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
    };
    deep_conv1 = register_module(
        "conv1",
        nn::Sequential(
            conv3x3(options.in_chans(), c0, 2), nn::BatchNorm2d(c0), nn::ReLU(nn::ReLUOptions().inplace(true)),
            conv3x3(c0, w, 1), nn::BatchNorm2d(w), nn::ReLU(nn::ReLUOptions().inplace(true)), conv3x3(w, inplanes, 1)));
  }
  if (!options.preact()) {
    bn1 = register_module("bn1", nn::BatchNorm2d(inplanes));
    act1 = register_module("act1", nn::ReLU());
  }
  if (options.stem_type() == "cifar") {
    maxpool = nn::AnyModule(nn::Identity());
  } else if (options.aa_layer().empty()) {
    maxpool = nn::AnyModule(
        nn::MaxPool2d(
            nn::MaxPool2dOptions(3)
                .stride(2)
                .padding(options.stem_pool_ceil_mode() ? 0 : 1)
                .ceil_mode(options.stem_pool_ceil_mode())));
  } else {
    maxpool = nn::AnyModule(nn::AvgPool2d(nn::AvgPool2dOptions(2)));
  }
  register_module("maxpool", maxpool.ptr());
  nn::Sequential* layers[] = {&layer1, &layer2, &layer3, &layer4};
  for (int64_t i = 0; i < options.num_stages(); ++i) {
    *layers[i] = register_module(
        "layer" + std::to_string(i + 1),
        make_layer(i, options.stage_planes()[i], options.layers()[i], i == 0 ? 1 : 2, inplanes));
  }
  num_features_ = inplanes;
  if (options.preact()) {
    norm = register_module("norm", nn::BatchNorm2d(inplanes));
    act = register_module("act", nn::ReLU());
  }
  nn::Sequential pool;
  pool->push_back("pool", nn::AdaptiveAvgPool2d(1));
  pool->push_back("flatten", nn::Flatten(nn::FlattenOptions().start_dim(1)));
  global_pool = register_module("global_pool", pool);
  make_classifier();
  reset_parameters();
}

nn::Sequential ResNetImpl::make_layer(
    int64_t stage, int64_t planes, int64_t blocks, int64_t stride, int64_t& inplanes) {
  nn::Sequential layer;
  const bool basic = options.block() == "basic";
  for (int64_t i = 0; i < blocks; ++i) {
    auto o = BlockOptions(inplanes, planes)
                 .stride(i == 0 ? stride : 1)
                 .groups(options.groups())
                 .base_width(options.width_per_group())
                 .stride_in_1x1(options.stride_in_1x1())
                 .se(options.se_stages()[stage])
                 .se_options(options.se_options())
                 .se_strategy(options.se_strategy())
                 .relu_before_se(options.relu_before_se())
                 .reduce_first(options.block_reduce_first())
                 .aa_layer(options.aa_layer())
                 .avg_down(options.avg_down())
                 .down_kernel_size(options.down_kernel_size())
                 .preact(options.preact());
    if (basic) {
      layer->push_back(BasicBlock(o));
      inplanes = planes * BasicBlockImpl::expansion;
    } else {
      layer->push_back(Bottleneck(o));
      inplanes = planes * BottleneckImpl::expansion;
    }
  }
  return layer;
}

void ResNetImpl::make_classifier() {
  if (options.num_classes() > 0) {
    fc = nn::AnyModule(nn::Linear(num_features_, options.num_classes()));
  } else {
    fc = nn::AnyModule(nn::Identity());
  }
  if (named_children().contains("fc")) {
    replace_module("fc", fc.ptr());
  } else {
    register_module("fc", fc.ptr());
  }
}

void ResNetImpl::reset_parameters() {
  // As timm / torchvision: Kaiming-normal (fan_out, ReLU) convolutions (the SE's 1x1 FCs included), BN = identity,
  // and optionally the last BN of every residual branch at zero.
  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) {
        conv->bias.zero_();
      }
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    }
  }
  if (options.zero_init_last()) {
    for (auto& m : modules(/*include_self=*/false)) {
      if (auto* b = m->as<Bottleneck>()) {
        b->zero_init_last();
      } else if (auto* b = m->as<BasicBlock>()) {
        b->zero_init_last();
      }
    }
  }
}

void ResNetImpl::pretty_print(std::ostream& stream) const {
  stream << "sepp::ResNet(block=" << options.block() << ", layers=" << c10::IntArrayRef(options.layers())
         << ", num_classes=" << options.num_classes();
  if (options.groups() != 1) {
    stream << ", groups=" << options.groups() << ", width_per_group=" << options.width_per_group();
  }
  if (!options.stem_type().empty()) {
    stream << ", stem_type=" << options.stem_type() << ", stem_width=" << options.stem_width();
  }
  if (options.avg_down()) {
    stream << ", avg_down=true";
  }
  if (!options.aa_layer().empty()) {
    stream << ", aa_layer=" << options.aa_layer();
  }
  if (options.preact()) {
    stream << ", preact=true";
  }
  stream << ")";
}

void ResNetImpl::check_image(const torch::Tensor& x, int64_t depth) const {
  check_input(x, options.in_chans(), stem_conv().weight, "ResNet");
  if (depth < 0) depth = options.num_stages();
  const bool cifar = options.stem_type() == "cifar";
  // Output sizes: conv1 (7x7/2 padding 3, or a 3x3/2 padding 1 first), every stage's strided 3x3 (padding 1) and
  // the shortcut's strided pool or convolution give ceil(n / 2); the stem pool gives ceil(n / 2) too (3x3/2
  // padding 1), floor(n / 2) (the aa stem's 2x2/2 average pool) or ceil((n - 3) / 2) + 1 (3x3/2 unpadded, ceil mode).
  const auto halve = [](int64_t n) { return (n - 1) / 2 + 1; };
  int64_t values = x.size(0);  // per channel, at the deepest batch norm that runs
  for (const int64_t d : {2, 3}) {
    const int64_t n = x.size(d);
    TORCH_CHECK_VALUE(n >= 1, "ResNet: expected an image of at least 1x1 pixels, got input shape ", x.sizes());
    int64_t s = cifar ? n : halve(n);  // the CIFAR stem: one 3x3 convolution of stride 1 and no pool
    if (options.stem_pool_ceil_mode()) {
      TORCH_CHECK_VALUE(
          s >= 3, "ResNet: the stem's unpadded 3x3 pool (stem_pool_ceil_mode) needs images of at least 5x5 pixels, ",
          "got input shape ", x.sizes());
    } else if (!options.aa_layer().empty()) {
      TORCH_CHECK_VALUE(
          s >= 2, "ResNet: the stem's 2x2 average pool (aa_layer) needs images of at least 3x3 pixels, ",
          "got input shape ", x.sizes());
    }
    if (depth >= 1 && !cifar) {
      if (options.stem_pool_ceil_mode()) {
        s = (s - 3 + 1) / 2 + 1;
      } else if (!options.aa_layer().empty()) {
        s = s / 2;
      } else {
        s = halve(s);
      }
    }
    for (int64_t stage = 2; stage <= depth; ++stage) {
      // A strided aa block pools its branch to floor(s / 2) and its shortcut (ceil mode) to ceil(s / 2).
      TORCH_CHECK_VALUE(
          options.aa_layer().empty() || s % 2 == 0, "ResNet: with aa_layer, layer", stage,
          " halves its input through a 2x2 pool and needs an even size, but input shape ", x.sizes(), " gives ", s,
          " pixels there; use a multiple of 32 pixels such as 224");
      s = options.aa_layer().empty() ? halve(s) : s / 2;
    }
    values *= s;
  }
  TORCH_CHECK_VALUE(
      !is_training() || values != 1,
      "ResNet: training-mode batch norm needs more than one value per channel, but a batch of ", x.size(0), " at ",
      x.size(2), "x", x.size(3), " leaves ", depth == 0 ? std::string("the stem") : "layer" + std::to_string(depth),
      " with one (input shape ", x.sizes(), "); use a larger batch or image, or eval()");
}

torch::Tensor ResNetImpl::forward_stem(const torch::Tensor& x) {
  check_image(x, /*depth=*/0);
  return stem(x);
}

torch::Tensor ResNetImpl::stem(const torch::Tensor& x) {
  return call_any(maxpool, stem_act(x));
}

torch::Tensor ResNetImpl::stem_act(const torch::Tensor& x) {
  auto h = conv1 ? call(conv1, x) : call_sequential(deep_conv1, x);
  return options.preact() ? h : call(act1, call(bn1, h));
}

torch::Tensor ResNetImpl::final_act(const torch::Tensor& x) {
  return options.preact() ? call(act, call(norm, x)) : x;
}

torch::Tensor ResNetImpl::forward_features(const torch::Tensor& x) {
  check_image(x);
  auto h = stem(x);
  for (auto& layer : stages()) {
    h = call_sequential(layer, h);
  }
  return final_act(h);
}

std::vector<nn::Sequential> ResNetImpl::stages() const {
  std::vector<nn::Sequential> out;
  for (const auto* layer : {&layer1, &layer2, &layer3, &layer4}) {
    if (*layer) out.push_back(*layer);
  }
  return out;
}

std::vector<torch::Tensor> ResNetImpl::forward_stages(const torch::Tensor& x) {
  std::vector<int64_t> indices(options.num_stages());
  std::iota(indices.begin(), indices.end(), 1);
  return forward_intermediates(x, indices);
}

std::vector<torch::Tensor> ResNetImpl::forward_intermediates(
    const torch::Tensor& x, const std::vector<int64_t>& indices) {
  const int64_t stages_n = options.num_stages();
  TORCH_CHECK_VALUE(
      !indices.empty(), "ResNet.forward_intermediates: expected at least one index (0..", stages_n, "), got none");
  std::array<bool, 5> wanted{};
  for (const int64_t i : indices) {
    TORCH_CHECK_VALUE(
        i >= 0 && i <= stages_n, "ResNet.forward_intermediates: expected indices in 0..", stages_n, " (",
        options.preact() ? "conv1" : "act1", ", layer1..layer", stages_n, "), got ", i);
    TORCH_CHECK_VALUE(
        !wanted[i], "ResNet.forward_intermediates: index ", i, " given twice in ", c10::IntArrayRef(indices));
    wanted[i] = true;
  }
  const int64_t last = *std::max_element(indices.begin(), indices.end());
  check_image(x, last);
  std::array<torch::Tensor, 5> features;
  auto h = stem_act(x);
  features[0] = h;
  h = call_any(maxpool, h);
  nn::Sequential* layers[] = {&layer1, &layer2, &layer3, &layer4};
  for (int64_t i = 1; i <= last; ++i) {
    h = call_sequential(*layers[i - 1], h);
    features[i] = i == stages_n ? final_act(h) : h;
  }
  std::vector<torch::Tensor> out;
  out.reserve(indices.size());
  for (const int64_t i : indices) {
    out.push_back(features[i]);
  }
  return out;
}

torch::Tensor ResNetImpl::forward_head(const torch::Tensor& features, bool pre_logits) {
  TORCH_CHECK_VALUE(
      features.dim() == 4 && features.size(1) == num_features_, "ResNet.forward_head: expected features [N, ",
      num_features_, ", H, W], got shape ", features.sizes());
  auto h = call_sequential(global_pool, features);
  if (options.drop_rate() > 0.0) {
    h = torch::dropout(h, options.drop_rate(), is_training());
  }
  if (pre_logits) {
    return h;
  }
  return call(*fc.ptr(), h, [&](const torch::Tensor& t) { return fc.forward(t); });
}

torch::Tensor ResNetImpl::forward(const torch::Tensor& x) {
  return forward_head(forward_features(x));
}

void ResNetImpl::reset_classifier(int64_t num_classes) {
  TORCH_CHECK_VALUE(num_classes >= 0, "ResNet.reset_classifier: expected num_classes >= 0, got ", num_classes);
  const auto w = stem_conv().weight;
  options.num_classes(num_classes);
  make_classifier();
  fc.ptr()->to(w.device(), w.scalar_type());
}

nn::Conv2dImpl& ResNetImpl::stem_conv() const {
  if (conv1) return *conv1.ptr();
  auto* conv = deep_conv1->ptr(0)->as<nn::Conv2dImpl>();
  TORCH_INTERNAL_ASSERT(conv != nullptr, "ResNet: the deep stem has no first convolution");
  return *conv;
}

std::vector<int64_t> ResNetImpl::stage_channels() const {
  const int64_t e = options.block() == "basic" ? BasicBlockImpl::expansion : BottleneckImpl::expansion;
  std::vector<int64_t> out;
  for (const int64_t p : options.stage_planes()) out.push_back(p * e);
  return out;
}

}  // namespace sepp
