#include <sepp/blocks.h>
#include <sepp/observe.h>
#include <sepp/ops.h>

#include "check_input.h"
#include "residual.h"

#include <torch/nn/modules/pooling.h>

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
  TORCH_CHECK_VALUE(reduce_first_ >= 1, who, ": expected reduce_first >= 1, got ", reduce_first_);
  TORCH_CHECK_VALUE(
      aa_layer_.empty() || aa_layer_ == "avgpool", who, ": expected aa_layer to be '' or 'avgpool', got '", aa_layer_,
      "'");
  TORCH_CHECK_VALUE(
      !(use_aa() && stride_in_1x1_), who, ": aa_layer follows the strided 3x3, so it cannot be combined with ",
      "stride_in_1x1");
  TORCH_CHECK_VALUE(
      down_kernel_size_ == 1 || down_kernel_size_ == 3, who, ": expected down_kernel_size 1 or 3, got ",
      down_kernel_size_);
  TORCH_CHECK_VALUE(
      !avg_down_ || down_kernel_size_ == 1, who, ": avg_down's downsample convolution is 1x1, got down_kernel_size ",
      down_kernel_size_);
  if (expansion == 1) {
    TORCH_CHECK_VALUE(
        groups_ == 1 && base_width_ == 64, who, ": expected groups = 1 and base_width = 64 (ResNeXt needs the ",
        "bottleneck), got groups = ", groups_, ", base_width = ", base_width_);
  }
  parse_se_strategy(se_strategy_);
  if (preact_) {
    TORCH_CHECK_VALUE(
        se_strategy_ == "standard", who, ": preact supports only se_strategy 'standard', got '", se_strategy_, "'");
    TORCH_CHECK_VALUE(!relu_before_se_, who, ": preact cannot be combined with relu_before_se");
    TORCH_CHECK_VALUE(aa_layer_.empty(), who, ": preact cannot be combined with aa_layer '", aa_layer_, "'");
  }
}

SEStrategy parse_se_strategy(const std::string& name) {
  if (name == "standard") return SEStrategy::Standard;
  if (name == "pre") return SEStrategy::Pre;
  if (name == "post") return SEStrategy::Post;
  if (name == "identity") return SEStrategy::Identity;
  TORCH_CHECK_VALUE(false, "expected se_strategy to be one of 'standard', 'pre', 'post', 'identity', got '", name, "'");
}

namespace {

// The SE block of a residual block whose output has `outplanes` channels.
template <typename Impl>
void build_se(Impl& self, const BlockOptions& o, int64_t outplanes) {
  self.se = nullptr;
  if (o.se()) {
    auto se_opts = o.se_options();
    se_opts.channels(detail::se_channels(self.se_strategy(), o.inplanes(), outplanes));
    self.se = self.register_module("se", SEBlock(se_opts));
  }
}

// The downsample, when the stride or the width changes: convolution + BN, or with avg_down average pool (an
// Identity at stride 1) + 1x1 convolution + BN; pre-activated, the convolution without its BN.
template <typename Impl>
void build_downsample(Impl& self, const BlockOptions& o, int64_t outplanes) {
  self.downsample = nullptr;
  if (o.stride() == 1 && o.inplanes() == outplanes) return;
  nn::Sequential down;
  if (o.avg_down()) {
    if (o.stride() == 1) {
      down->push_back(nn::Identity());
    } else {
      down->push_back(
          nn::AvgPool2d(nn::AvgPool2dOptions(2).stride(o.stride()).ceil_mode(true).count_include_pad(false)));
    }
    down->push_back(nn::Conv2d(nn::Conv2dOptions(o.inplanes(), outplanes, 1).bias(false)));
  } else {
    const int64_t k = o.stride() == 1 ? 1 : o.down_kernel_size();  // a stride-1 downsample is 1x1, as in timm
    down->push_back(
        nn::Conv2d(
            nn::Conv2dOptions(o.inplanes(), outplanes, k)
                .stride(o.stride())
                .padding((o.stride() - 1 + k - 1) / 2)
                .bias(false)));
  }
  if (!o.preact()) {
    down->push_back(nn::BatchNorm2d(outplanes));
  }
  self.downsample = self.register_module("downsample", down);
}

// The SE block, the ReLU after the sum (registered as `act_name`) and the downsample of a post-activation block.
template <typename Impl>
void build_tail(Impl& self, const BlockOptions& o, int64_t outplanes, const char* act_name) {
  build_se(self, o, outplanes);
  self.act_out() = self.register_module(act_name, nn::ReLU(nn::ReLUOptions().inplace(true)));
  build_downsample(self, o, outplanes);
}

// The block's `aa`: a 2x2/2 average pool after its strided 3x3 (which then runs at stride 1), else an identity.
nn::AnyModule make_aa(const BlockOptions& o) {
  if (o.use_aa()) return nn::AnyModule(nn::AvgPool2d(nn::AvgPool2dOptions(2)));
  return nn::AnyModule(nn::Identity());
}

void pretty_print_block(std::ostream& stream, const char* name, const BlockOptions& o) {
  stream << "sepp::" << name << "(inplanes=" << o.inplanes() << ", planes=" << o.planes() << ", stride=" << o.stride();
  if (o.groups() != 1 || o.base_width() != 64) {
    stream << ", groups=" << o.groups() << ", base_width=" << o.base_width();
  }
  if (o.stride_in_1x1()) {
    stream << ", stride_in_1x1=true";
  }
  if (o.reduce_first() != 1) {
    stream << ", reduce_first=" << o.reduce_first();
  }
  if (o.use_aa()) {
    stream << ", aa_layer=" << o.aa_layer();
  }
  if (o.avg_down()) {
    stream << ", avg_down=true";
  }
  if (o.preact()) {
    stream << ", preact=true";
  }
  if (o.se()) {
    stream << ", se_strategy=" << o.se_strategy();
  }
  stream << ")";
}

// The eager pieces of detail::residual_forward: the block's modules, its branch given as a function.
template <typename Impl, typename Branch>
struct EagerBlock {
  Impl& m;
  Branch run_branch;

  torch::Tensor shortcut(const torch::Tensor& x) const { return m.downsample ? call_sequential(m.downsample, x) : x; }
  torch::Tensor branch(const torch::Tensor& x) const { return run_branch(x); }
  torch::Tensor merge(torch::Tensor u, const torch::Tensor& other) const {
    if (m.se && m.options.relu_before_se()) {
      return call(m.act_out(), torch::relu(u) + other);  // relu's backward needs its output: no in-place add on it
    }
    return call(m.act_out(), u.add_(other));  // u is the last BN's output, which its backward does not need
  }
  torch::Tensor merge_se(torch::Tensor u, c10::function_ref<torch::Tensor()> shortcut) const {
    if (m.options.relu_before_se()) {
      u = torch::relu(u);
    }
    if (observing() && (is_observed(*m.se) || is_observed(*m.act_out()) || m.se->observed())) {
      // The SE block and the ReLU as modules of their own, for their observers.
      torch::Tensor y = call(m.se, u);
      return call(m.act_out(), y.add_(shortcut()));  // y = U * s, which the product's backward does not need
    }
    // relu(U * s + identity) in one pass: the SE scale fused with the residual sum and the ReLU.
    const torch::Tensor s = m.se->gate(u);
    return ops::se_scale(u, s, shortcut(), /*relu=*/true);
  }
  torch::Tensor scale_by_se(const torch::Tensor& t) const { return call(m.se, t); }
};

template <typename Impl, typename Branch>
torch::Tensor eager_forward(Impl& m, const torch::Tensor& x, Branch branch) {
  check_input(x, m.options.inplanes(), m.conv1->weight, Impl::kName);
  return detail::residual_forward(EagerBlock<Impl, Branch>{m, branch}, static_cast<bool>(m.se), m.se_strategy(), x);
}

// The eager pieces of detail::preact_forward.
template <typename Impl, typename Branch>
struct EagerPreactBlock {
  Impl& m;
  Branch run_branch;

  torch::Tensor preactivate(const torch::Tensor& x) const { return call(m.act1, call(m.bn1, x)); }
  torch::Tensor branch(const torch::Tensor& a) const { return run_branch(a); }
  torch::Tensor shortcut(const torch::Tensor& x, const torch::Tensor& a) const {
    return m.downsample ? call_sequential(m.downsample, a) : x;
  }
  torch::Tensor add(const torch::Tensor& u, c10::function_ref<torch::Tensor()> shortcut) const {
    return u + shortcut();  // out of place: u is the last convolution's output, which its observers may hold
  }
  torch::Tensor add_se(const torch::Tensor& u, c10::function_ref<torch::Tensor()> shortcut) const {
    if (observing() && (is_observed(*m.se) || m.se->observed())) {
      return call(m.se, u) + shortcut();
    }
    // U * s + identity in one pass: the SE scale fused with the residual sum.
    const torch::Tensor s = m.se->gate(u);
    return ops::se_scale(u, s, shortcut(), /*relu=*/false);
  }
};

template <typename Impl, typename Branch>
torch::Tensor preact_forward(Impl& m, const torch::Tensor& x, Branch branch) {
  check_input(x, m.options.inplanes(), m.conv1->weight, Impl::kName);
  return detail::preact_forward(EagerPreactBlock<Impl, Branch>{m, branch}, static_cast<bool>(m.se), x);
}

}  // namespace

// ------------------------------------------------------------------------------------------------ BasicBlock

BasicBlockImpl::BasicBlockImpl(const BlockOptions& options_) : options(options_) {
  reset();
}

void BasicBlockImpl::reset() {
  options.validate(expansion, "BasicBlock");
  const int64_t p = options.planes();
  const int64_t first = p / options.reduce_first();
  TORCH_CHECK_VALUE(
      first >= 1, "BasicBlock: planes / reduce_first leaves no channels (planes = ", p,
      ", reduce_first = ", options.reduce_first(), ")");
  if (options.preact()) {
    se_strategy_ = SEStrategy::Standard;
    drop_block = nullptr;
    bn1 = register_module("bn1", nn::BatchNorm2d(options.inplanes()));
    act1 = register_module("act1", nn::ReLU());
    conv1 = register_module(
        "conv1",
        nn::Conv2d(nn::Conv2dOptions(options.inplanes(), first, 3).stride(options.stride()).padding(1).bias(false)));
    bn2 = register_module("bn2", nn::BatchNorm2d(first));
    act2 = register_module("act2", nn::ReLU());
    conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(first, p, 3).padding(1).bias(false)));
    build_se(*this, options, p * expansion);
    build_downsample(*this, options, p * expansion);
    return;
  }
  const int64_t s1 = options.use_aa() ? 1 : options.stride();
  conv1 = register_module(
      "conv1", nn::Conv2d(nn::Conv2dOptions(options.inplanes(), first, 3).stride(s1).padding(1).bias(false)));
  bn1 = register_module("bn1", nn::BatchNorm2d(first));
  drop_block = register_module("drop_block", nn::Identity());
  act1 = register_module("act1", nn::ReLU());
  aa = make_aa(options);
  register_module("aa", aa.ptr());
  conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(first, p, 3).padding(1).bias(false)));
  bn2 = register_module("bn2", nn::BatchNorm2d(p));
  se_strategy_ = parse_se_strategy(options.se_strategy());
  build_tail(*this, options, p * expansion, "act2");
}

void BasicBlockImpl::pretty_print(std::ostream& stream) const {
  pretty_print_block(stream, "BasicBlock", options);
}

void BasicBlockImpl::zero_init_last() {
  torch::NoGradGuard no_grad;
  (options.preact() ? conv2->weight : bn2->weight).zero_();
}

torch::Tensor BasicBlockImpl::forward(const torch::Tensor& x) {
  if (options.preact()) {
    return preact_forward(
        *this, x, [this](const torch::Tensor& a) { return call(conv2, call(act2, call(bn2, call(conv1, a)))); });
  }
  return eager_forward(*this, x, [this](const torch::Tensor& h) {
    auto out = call_any(aa, call(act1, call(drop_block, call(bn1, call(conv1, h)))));
    return call(bn2, call(conv2, out));
  });
}

// ------------------------------------------------------------------------------------------------ Bottleneck

BottleneckImpl::BottleneckImpl(const BlockOptions& options_) : options(options_) {
  reset();
}

void BottleneckImpl::reset() {
  options.validate(expansion, "Bottleneck");
  const int64_t width = options.planes() * options.base_width() / 64 * options.groups();
  const int64_t first = width / options.reduce_first();
  TORCH_CHECK_VALUE(
      width >= 1 && first >= 1 && first % options.groups() == 0,
      "Bottleneck: expected widths divisible by groups = ", options.groups(), ", got width ", width,
      " and first width ", first, " (planes = ", options.planes(), ", base_width = ", options.base_width(),
      ", reduce_first = ", options.reduce_first(), ")");
  const int64_t outplanes = options.planes() * expansion;
  const int64_t s1 = options.stride_in_1x1() ? options.stride() : 1;
  const int64_t s3 = options.stride_in_1x1() || options.use_aa() ? 1 : options.stride();
  if (options.preact()) {
    se_strategy_ = SEStrategy::Standard;
    drop_block = nullptr;
    bn1 = register_module("bn1", nn::BatchNorm2d(options.inplanes()));
    act1 = register_module("act1", nn::ReLU());
    conv1 =
        register_module("conv1", nn::Conv2d(nn::Conv2dOptions(options.inplanes(), first, 1).stride(s1).bias(false)));
    bn2 = register_module("bn2", nn::BatchNorm2d(first));
    act2 = register_module("act2", nn::ReLU());
    conv2 = register_module(
        "conv2",
        nn::Conv2d(nn::Conv2dOptions(first, width, 3).stride(s3).padding(1).groups(options.groups()).bias(false)));
    bn3 = register_module("bn3", nn::BatchNorm2d(width));
    act3 = register_module("act3", nn::ReLU());
    conv3 = register_module("conv3", nn::Conv2d(nn::Conv2dOptions(width, outplanes, 1).bias(false)));
    build_se(*this, options, outplanes);
    build_downsample(*this, options, outplanes);
    return;
  }
  conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(options.inplanes(), first, 1).stride(s1).bias(false)));
  bn1 = register_module("bn1", nn::BatchNorm2d(first));
  act1 = register_module("act1", nn::ReLU());
  conv2 = register_module(
      "conv2",
      nn::Conv2d(nn::Conv2dOptions(first, width, 3).stride(s3).padding(1).groups(options.groups()).bias(false)));
  bn2 = register_module("bn2", nn::BatchNorm2d(width));
  drop_block = register_module("drop_block", nn::Identity());
  act2 = register_module("act2", nn::ReLU());
  aa = make_aa(options);
  register_module("aa", aa.ptr());
  conv3 = register_module("conv3", nn::Conv2d(nn::Conv2dOptions(width, outplanes, 1).bias(false)));
  bn3 = register_module("bn3", nn::BatchNorm2d(outplanes));
  se_strategy_ = parse_se_strategy(options.se_strategy());
  build_tail(*this, options, outplanes, "act3");
}

void BottleneckImpl::pretty_print(std::ostream& stream) const {
  pretty_print_block(stream, "Bottleneck", options);
}

void BottleneckImpl::zero_init_last() {
  torch::NoGradGuard no_grad;
  (options.preact() ? conv3->weight : bn3->weight).zero_();
}

torch::Tensor BottleneckImpl::forward(const torch::Tensor& x) {
  if (options.preact()) {
    return preact_forward(*this, x, [this](const torch::Tensor& a) {
      auto out = call(act2, call(bn2, call(conv1, a)));
      return call(conv3, call(act3, call(bn3, call(conv2, out))));
    });
  }
  return eager_forward(*this, x, [this](const torch::Tensor& h) {
    auto out = call(act1, call(bn1, call(conv1, h)));
    out = call_any(aa, call(act2, call(drop_block, call(bn2, call(conv2, out)))));
    return call(bn3, call(conv3, out));
  });
}

}  // namespace sepp
