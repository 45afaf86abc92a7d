#include <sepp/observe.h>
#include <sepp/ops.h>
#include <sepp/se_block.h>

#include "check_input.h"
#include "ops/common.h"

#include <ATen/autocast_mode.h>

#include <torch/nn/init.h>

#include <c10/util/Exception.h>

namespace sepp {

SEBlockOptions::SEBlockOptions(int64_t channels) : channels_(channels) {}

void SEBlockOptions::validate() const {
  TORCH_CHECK_VALUE(channels_ >= 1, "SEBlock: expected channels >= 1, got ", channels_);
  if (rd_channels_ == 0) {
    TORCH_CHECK_VALUE(
        reduction_ >= 1 && reduction_ <= channels_, "SEBlock: expected 1 <= reduction <= channels (", channels_,
        "), got reduction = ", reduction_);
  } else {
    TORCH_CHECK_VALUE(rd_channels_ >= 1, "SEBlock: expected rd_channels >= 1 (or 0 to derive it), got ", rd_channels_);
  }
  TORCH_CHECK_VALUE(rd_divisor_ >= 0, "SEBlock: expected rd_divisor >= 0 (0 = no rounding), got ", rd_divisor_);
  TORCH_CHECK_VALUE(
      squeeze_ == "avg" || squeeze_ == "max" || squeeze_ == "avgmax",
      "SEBlock: expected squeeze to be one of 'avg', 'max', 'avgmax', got '", squeeze_, "'");
  TORCH_CHECK_VALUE(
      gate_ == "sigmoid" || gate_ == "hard_sigmoid" || gate_ == "tanh",
      "SEBlock: expected gate to be one of 'sigmoid', 'hard_sigmoid', 'tanh', got '", gate_, "'");
}

int64_t SEBlockOptions::reduced_channels() const {
  validate();
  if (rd_channels_ > 0) {
    return rd_channels_;
  }
  if (rd_divisor_ == 0) {
    return channels_ / reduction_;  // the paper's C / r
  }
  // timm's make_divisible(C / r, divisor, round_limit=0): nearest multiple of the divisor, at least the divisor.
  const double v = static_cast<double>(channels_) / static_cast<double>(reduction_);
  const int64_t d = rd_divisor_;
  const int64_t rounded = static_cast<int64_t>(v + static_cast<double>(d) / 2.0) / d * d;
  return std::max(d, rounded);
}

SEBlockImpl::SEBlockImpl(const SEBlockOptions& options_) : options(options_) {
  reset();
}

void SEBlockImpl::reset() {
  const int64_t rd = options.reduced_channels();  // validates
  const int64_t c = options.channels();
  squeeze_ = parse_se_squeeze(options.squeeze());
  fc1 = register_module("fc1", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, rd, 1).bias(options.bias())));
  bn = register_module("bn", torch::nn::Identity());
  act = register_module("act", torch::nn::ReLU());
  fc2 = register_module("fc2", torch::nn::Conv2d(torch::nn::Conv2dOptions(rd, c, 1).bias(options.bias())));
  if (options.gate() == "sigmoid") {
    gate_layer = torch::nn::AnyModule(torch::nn::Sigmoid());
  } else if (options.gate() == "hard_sigmoid") {
    gate_layer = torch::nn::AnyModule(HardSigmoid());
  } else {
    gate_layer = torch::nn::AnyModule(torch::nn::Tanh());
  }
  register_module("gate", gate_layer.ptr());
}

torch::Tensor HardSigmoidImpl::forward(const torch::Tensor& x) {
  // The definition rather than at::hardsigmoid, whose backward scales by a float32 1/6 (3e-8 off in float64).
  return torch::clamp(x + 3.0, 0.0, 6.0) / 6.0;
}

bool SEBlockImpl::observed() const {
  if (!observing()) {
    return false;
  }
  return is_observed(*fc1) || is_observed(*bn) || is_observed(*act) || is_observed(*fc2) ||
         is_observed(*gate_layer.ptr());
}

void SEBlockImpl::reset_parameters() {
  fc1->reset_parameters();
  fc2->reset_parameters();
}

void SEBlockImpl::pretty_print(std::ostream& stream) const {
  stream << "sepp::SEBlock(channels=" << options.channels() << ", rd_channels=" << fc1->options.out_channels()
         << ", squeeze=" << options.squeeze() << ", gate=" << options.gate()
         << ", bias=" << (options.bias() ? "true" : "false") << ")";
}

SESqueeze parse_se_squeeze(const std::string& name) {
  if (name == "avg") return SESqueeze::Avg;
  if (name == "max") return SESqueeze::Max;
  if (name == "avgmax") return SESqueeze::AvgMax;
  TORCH_CHECK_VALUE(false, "SEBlock: expected squeeze to be one of 'avg', 'max', 'avgmax', got '", name, "'");
}

void check_input(const torch::Tensor& x, int64_t channels, const torch::Tensor& like, const char* who) {
  TORCH_CHECK_VALUE(x.defined(), who, ": expected a tensor, got an undefined one");
  TORCH_CHECK_VALUE(
      x.dim() == 4, who, ": expected a 4-D input [N, C, H, W], got a ", x.dim(), "-D tensor of shape ", x.sizes());
  TORCH_CHECK_VALUE(
      x.size(1) == channels, who, ": expected ", channels, " input channels, got ", x.size(1), " (input shape ",
      x.sizes(), ")");
  TORCH_CHECK_TYPE(
      at::isFloatingType(x.scalar_type()), who, ": expected a floating-point input, got ", x.scalar_type());
  TORCH_CHECK_VALUE(
      x.device() == like.device(), who, ": expected the input on ", like.device(), " (where the weights are), got ",
      x.device());
  // Under torch.autocast the activations are in the autocast dtype while the weights stay in float32.
  const auto dev = x.device().type();
  const bool autocast =
      at::autocast::is_autocast_enabled(dev) && x.scalar_type() == at::autocast::get_autocast_dtype(dev);
  TORCH_CHECK_TYPE(
      x.scalar_type() == like.scalar_type() || autocast, who, ": expected a ", like.scalar_type(),
      " input (the weights' dtype), got ", x.scalar_type());
}

torch::Tensor SEBlockImpl::excite(const torch::Tensor& z) {
  const int64_t n = z.size(0);
  if (observed()) {
    // The children in turn, each an observation point, as timm's SEModule runs them.
    torch::Tensor h = call(fc1, z.reshape({n, options.channels(), 1, 1}));
    h = call(act, call(bn, h));
    h = call(fc2, h);
    return call(*gate_layer.ptr(), h, [&](const torch::Tensor& t) { return gate_layer.forward(t); });
  }
  // The FCs act on a [N, C] vector: the 1x1 kernels viewed as [out, in] matrices, FC-ReLU-FC-gate in one operator.
  using ops::detail::defined_or_nullopt;
  const auto s = ops::se_excite(
      z.reshape({n, options.channels()}), fc1->weight.flatten(1), defined_or_nullopt(fc1->bias), fc2->weight.flatten(1),
      defined_or_nullopt(fc2->bias), options.gate());
  return s.reshape({n, options.channels(), 1, 1});
}

torch::Tensor SEBlockImpl::gate(const torch::Tensor& x) {
  check_input(x, options.channels(), fc1->weight, "SEBlock");
  torch::Tensor z;
  switch (squeeze_) {
    case SESqueeze::Avg:
      z = ops::se_squeeze(x);
      break;
    case SESqueeze::Max:
      z = x.amax({2, 3});
      break;
    case SESqueeze::AvgMax:
      z = 0.5 * (ops::se_squeeze(x) + x.amax({2, 3}));
      break;
  }
  return excite(z);
}

torch::Tensor SEBlockImpl::forward(const torch::Tensor& x) {
  return ops::se_scale(x, gate(x));
}

}  // namespace sepp
