#include <sepp/blocks.h>
#include <sepp/ops.h>

#include <c10/util/Exception.h>

namespace sepp {

namespace nn = torch::nn;

BlockOptions::BlockOptions(int64_t inplanes, int64_t planes) : inplanes_(inplanes), planes_(planes) {}

void BlockOptions::validate(int64_t expansion, const char* who) const {
  TORCH_CHECK_VALUE(inplanes_ >= 1, who, ": expected inplanes >= 1, got ", inplanes_);
  TORCH_CHECK_VALUE(planes_ >= 1, who, ": expected planes >= 1, got ", planes_);
  TORCH_CHECK_VALUE(stride_ >= 1, who, ": expected stride >= 1, got ", stride_);
  TORCH_CHECK_VALUE(groups_ >= 1, who, ": expected groups >= 1, got ", groups_);
  TORCH_CHECK_VALUE(base_width_ >= 1, who, ": expected base_width >= 1, got ", base_width_);
  if (expansion == 1) {
    TORCH_CHECK_VALUE(
        groups_ == 1 && base_width_ == 64, who, ": expected groups = 1 and base_width = 64 (ResNeXt needs the ",
        "bottleneck), got groups = ", groups_, ", base_width = ", base_width_);
  }
  detail::parse_se_strategy(se_strategy_);
}

namespace detail {

SEStrategy parse_se_strategy(const std::string& name) {
  if (name == "standard") return SEStrategy::Standard;
  if (name == "pre") return SEStrategy::Pre;
  if (name == "post") return SEStrategy::Post;
  if (name == "identity") return SEStrategy::Identity;
  TORCH_CHECK_VALUE(
      false, "expected se_strategy to be one of 'standard', 'pre', 'post', 'identity', got '", name, "'");
}

static const char* strategy_name(SEStrategy s) {
  switch (s) {
    case SEStrategy::Standard:
      return "standard";
    case SEStrategy::Pre:
      return "pre";
    case SEStrategy::Post:
      return "post";
    case SEStrategy::Identity:
      return "identity";
  }
  return "?";
}

void ResidualBlockBase::build_shortcut_and_se(nn::Module& self, const BlockOptions& o, int64_t outplanes) {
  strategy_ = parse_se_strategy(o.se_strategy());
  relu_before_se_ = o.relu_before_se();
  in_channels_ = o.inplanes();
  se = nullptr;
  if (o.se()) {
    auto se_opts = o.se_options();
    se_opts.channels(strategy_ == SEStrategy::Pre ? o.inplanes() : outplanes);
    se = self.register_module("se", SEBlock(se_opts));
  }
  downsample = nullptr;
  if (o.stride() != 1 || o.inplanes() != outplanes) {
    downsample = self.register_module(
        "downsample",
        nn::Sequential(
            nn::Conv2d(nn::Conv2dOptions(o.inplanes(), outplanes, 1).stride(o.stride()).bias(false)),
            nn::BatchNorm2d(outplanes)));
  }
}

torch::Tensor ResidualBlockBase::residual_forward(
    torch::Tensor x,
    const std::function<torch::Tensor(const torch::Tensor&)>& branch) {
  const bool has_se = static_cast<bool>(se);
  torch::Tensor shortcut = downsample ? downsample->forward(x) : x;
  if (has_se && strategy_ == SEStrategy::Pre) {
    x = se->forward(x);
  }
  torch::Tensor out = branch(x);
  if (has_se && relu_before_se_) {
    out = torch::relu(out);
  }
  if (!has_se) {
    return out.add_(shortcut).relu_();  // out is the last BN's output, which its backward does not need
  }
  switch (strategy_) {
    case SEStrategy::Standard:
      // relu(U * s + identity) in one pass: the SE scale fused with the residual sum and the ReLU.
      return ops::se_scale(out, se->gate(out), shortcut, /*relu=*/true);
    case SEStrategy::Pre:
      return out.add_(shortcut).relu_();
    case SEStrategy::Post:
      return se->forward(out.add_(shortcut).relu_());
    case SEStrategy::Identity:
      return out.add_(se->forward(shortcut)).relu_();
  }
  return out;
}

void ResidualBlockBase::pretty_print_block(std::ostream& stream, const char* name, const BlockOptions& o) const {
  stream << "sepp::" << name << "(inplanes=" << o.inplanes() << ", planes=" << o.planes() << ", stride=" << o.stride();
  if (o.groups() != 1 || o.base_width() != 64) {
    stream << ", groups=" << o.groups() << ", base_width=" << o.base_width();
  }
  if (o.stride_in_1x1()) {
    stream << ", stride_in_1x1=true";
  }
  if (o.se()) {
    stream << ", se_strategy=" << strategy_name(strategy_);
  }
  stream << ")";
}

}  // namespace detail

// ------------------------------------------------------------------------------------------------ BasicBlock

BasicBlockImpl::BasicBlockImpl(const BlockOptions& options_) : options(options_) {
  reset();
}

void BasicBlockImpl::reset() {
  options.validate(expansion, "BasicBlock");
  const int64_t p = options.planes();
  conv1 = register_module(
      "conv1", nn::Conv2d(nn::Conv2dOptions(options.inplanes(), p, 3).stride(options.stride()).padding(1).bias(false)));
  bn1 = register_module("bn1", nn::BatchNorm2d(p));
  conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(p, p, 3).padding(1).bias(false)));
  bn2 = register_module("bn2", nn::BatchNorm2d(p));
  build_shortcut_and_se(*this, options, p * expansion);
}

void BasicBlockImpl::pretty_print(std::ostream& stream) const {
  pretty_print_block(stream, "BasicBlock", options);
}

torch::Tensor BasicBlockImpl::forward(const torch::Tensor& x) {
  detail::check_input(x, options.inplanes(), conv1->weight, "BasicBlock");
  return residual_forward(x, [this](const torch::Tensor& h) {
    auto out = torch::relu(bn1->forward(conv1->forward(h)));
    return bn2->forward(conv2->forward(out));
  });
}

// ------------------------------------------------------------------------------------------------ Bottleneck

BottleneckImpl::BottleneckImpl(const BlockOptions& options_) : options(options_) {
  reset();
}

void BottleneckImpl::reset() {
  options.validate(expansion, "Bottleneck");
  const int64_t width = options.planes() * options.base_width() / 64 * options.groups();
  const int64_t outplanes = options.planes() * expansion;
  const int64_t s1 = options.stride_in_1x1() ? options.stride() : 1;
  const int64_t s3 = options.stride_in_1x1() ? 1 : options.stride();
  conv1 = register_module(
      "conv1", nn::Conv2d(nn::Conv2dOptions(options.inplanes(), width, 1).stride(s1).bias(false)));
  bn1 = register_module("bn1", nn::BatchNorm2d(width));
  conv2 = register_module(
      "conv2",
      nn::Conv2d(nn::Conv2dOptions(width, width, 3).stride(s3).padding(1).groups(options.groups()).bias(false)));
  bn2 = register_module("bn2", nn::BatchNorm2d(width));
  conv3 = register_module("conv3", nn::Conv2d(nn::Conv2dOptions(width, outplanes, 1).bias(false)));
  bn3 = register_module("bn3", nn::BatchNorm2d(outplanes));
  build_shortcut_and_se(*this, options, outplanes);
}

void BottleneckImpl::pretty_print(std::ostream& stream) const {
  pretty_print_block(stream, "Bottleneck", options);
}

torch::Tensor BottleneckImpl::forward(const torch::Tensor& x) {
  detail::check_input(x, options.inplanes(), conv1->weight, "Bottleneck");
  return residual_forward(x, [this](const torch::Tensor& h) {
    auto out = torch::relu(bn1->forward(conv1->forward(h)));
    out = torch::relu(bn2->forward(conv2->forward(out)));
    return bn3->forward(conv3->forward(out));
  });
}

}  // namespace sepp
