#pragma once

#include <sepp/export.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
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

  /// Channels of the input (and output). 0 in a template that a block fills in.
  TORCH_ARG(int64_t, channels);
  /// Reduction ratio r; rd = channels / r. Must lie in [1, channels].
  TORCH_ARG(int64_t, reduction) = 16;
  /// Explicit bottleneck width; 0 = derived from `reduction`.
  TORCH_ARG(int64_t, rd_channels) = 0;
  /// Round the derived width to a multiple of this (timm uses 8); 0 = no rounding.
  TORCH_ARG(int64_t, rd_divisor) = 0;
  TORCH_ARG(std::string, squeeze) = "avg";
  TORCH_ARG(std::string, gate) = "sigmoid";
  /// Biases on the two FC layers.
  TORCH_ARG(bool, bias) = true;

 public:
  /// The bottleneck width these options give; throws c10::ValueError on invalid options.
  int64_t reduced_channels() const;
  /// Throws c10::ValueError naming the bad field, what was expected and what came.
  void validate() const;
};

/// SE block: y = x * gate(FC2(relu(FC1(squeeze(x))))), per sample and channel.
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

  SEBlockOptions options;
  torch::nn::Conv2d fc1{nullptr};
  torch::nn::Conv2d fc2{nullptr};

 private:
  enum class Squeeze { Avg, Max, AvgMax } squeeze_ = Squeeze::Avg;
};

TORCH_MODULE(SEBlock);

namespace detail {
/// Checks that x is a floating-point [N, C, H, W] tensor with C == channels on the device and dtype of `like`.
void check_input(const torch::Tensor& x, int64_t channels, const torch::Tensor& like, const char* who);
}  // namespace detail

}  // namespace sepp
