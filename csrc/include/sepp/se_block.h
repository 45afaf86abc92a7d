#pragma once

#include <sepp/export.h>
#include <sepp/options.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>

namespace sepp {

/// Options of the Squeeze-and-Excitation block (Hu et al., arXiv 1709.01507, section 3).
///
/// squeeze:    "avg" (global average pool, the paper), "max", or "avgmax" (mean of both).
/// excitation: FC(C -> rd) -> ReLU -> FC(rd -> C), the FCs stored as 1x1 convolution weights ([rd, C, 1, 1]).
/// gate:       "sigmoid" (the paper), "hard_sigmoid" (relu6(x + 3) / 6), or "tanh".
/// rd:         `rd_channels` when > 0, else C / `reduction`; with `rd_divisor` > 0 it is rounded to a multiple of
///             the divisor as timm does (nearest multiple, at least the divisor): 64 channels, r 16, divisor 8 -> 8.
struct SEPP_API SEBlockOptions {
  /* implicit */ SEBlockOptions(int64_t channels = 0);

  // Each option is described in visit() below.
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(int64_t, reduction) = 16;
  TORCH_ARG(int64_t, rd_channels) = 0;
  TORCH_ARG(int64_t, rd_divisor) = 0;
  TORCH_ARG(std::string, squeeze) = "avg";
  TORCH_ARG(std::string, gate) = "sigmoid";
  TORCH_ARG(bool, bias) = true;

 public:
  /// The bottleneck width these options give; throws c10::ValueError on invalid options.
  int64_t reduced_channels() const;
  /// Throws c10::ValueError naming the bad field, what was expected and what came.
  void validate() const;

  /// The options by name: f(name, field, kind, doc) for each, in the order of the Python constructor's arguments.
  /// Inside a block's or a ResNet's options (`embedded`) `channels` is left out (the block fills it in) and `bias`
  /// is called `se_bias`.
  template <typename Self, typename F>
  static void visit(Self& o, F&& f, bool embedded = false) {
    if (!embedded) f("channels", o.channels_, OptionKind::Required, "channels C of the input (and output)");
    f("reduction", o.reduction_, OptionKind::Plain,
      "reduction ratio r (1 <= r <= C); the bottleneck has C // r channels");
    f("rd_channels", o.rd_channels_, OptionKind::ZeroIsNone, "explicit bottleneck width (overrides reduction)");
    f("rd_divisor", o.rd_divisor_, OptionKind::ZeroIsNone,
      "round C / r to the nearest multiple of this, at least the divisor, as timm does (8 gives timm's widths)");
    f("squeeze", o.squeeze_, OptionKind::Plain,
      "'avg' (global average pool, the paper), 'max', or 'avgmax' (mean of both)");
    f("gate", o.gate_, OptionKind::Plain, "'sigmoid' (the paper), 'hard_sigmoid' (relu6(x + 3) / 6) or 'tanh'");
    f(embedded ? "se_bias" : "bias", o.bias_, OptionKind::Plain,
      "biases on the two FC layers (stored as 1x1 convolutions fc1, fc2, as in timm)");
  }
};

/// The squeeze of an SE block, chosen once when the block is built.
enum class SESqueeze { Avg, Max, AvgMax };
/// Parses "avg", "max", "avgmax"; throws c10::ValueError otherwise.
SEPP_API SESqueeze parse_se_squeeze(const std::string& name);

/// relu6(x + 3) / 6, the hard sigmoid gate (timm's, and torch.nn.Hardsigmoid's definition).
class SEPP_API HardSigmoidImpl : public torch::nn::Cloneable<HardSigmoidImpl> {
 public:
  void reset() override {}
  void pretty_print(std::ostream& stream) const override { stream << "sepp::HardSigmoid()"; }
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(HardSigmoid);

/// SE block: y = x * gate(FC2(relu(FC1(squeeze(x))))), per sample and channel.
///
/// Its children are timm's SEModule's: fc1, bn (an identity), act (the ReLU), fc2, gate. The excitation runs as one
/// fused operator, or through the children one by one while any of them is observed (sepp/observe.h).
class SEPP_API SEBlockImpl : public torch::nn::Cloneable<SEBlockImpl> {
 public:
  explicit SEBlockImpl(const SEBlockOptions& options);
  SEBlockImpl(int64_t channels) : SEBlockImpl(SEBlockOptions(channels)) {}

  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// x [N, C, H, W] -> x scaled by the gate, same shape.
  torch::Tensor forward(const torch::Tensor& x);
  /// The excitation s [N, C, 1, 1] computed from x [N, C, H, W] (squeeze + FCs + gate).
  torch::Tensor gate(const torch::Tensor& x);
  /// The excitation from an already squeezed input z [N, C] or [N, C, 1, 1].
  torch::Tensor excite(const torch::Tensor& z);
  /// Whether one of its children is observed (then its forward runs them one by one).
  bool observed() const;
  SESqueeze squeeze_kind() const { return squeeze_; }

  SEBlockOptions options;
  torch::nn::Conv2d fc1{nullptr};
  torch::nn::Identity bn{nullptr};
  torch::nn::ReLU act{nullptr};
  torch::nn::Conv2d fc2{nullptr};
  /// torch::nn::Sigmoid, sepp::HardSigmoid or torch::nn::Tanh, as the options' gate.
  torch::nn::AnyModule gate_layer;

 private:
  SESqueeze squeeze_ = SESqueeze::Avg;
};

TORCH_MODULE(SEBlock);

}  // namespace sepp
