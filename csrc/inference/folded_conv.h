#pragma once

// A convolution with its BatchNorm folded in, and the backend that runs it: prepacked oneDNN on the CPU, cuDNN's
// fused convolutions on CUDA, plain ATen elsewhere.

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>

#include <array>
#include <memory>
#include <mutex>
#include <vector>

namespace sepp::inference {

/// Where and how the folded convolutions run.
struct FoldTarget {
  c10::ScalarType dtype = at::kFloat;
  bool onednn = false;       // CPU: prepack the weights for oneDNN's fused convolutions
  bool cudnn_fused = false;  // CUDA: cuDNN's fused conv + bias (+ add) + ReLU, for the convolutions they work for
};

struct FoldedConv {
  // BN folded in, channels_last: the "aten" and "cudnn" backends' weight. Undefined with `packed`, which is then the
  // only copy of the weights kept (see dense()).
  at::Tensor weight;
  at::Tensor bias;
  at::Tensor packed;                      // oneDNN's layout (the "onednn" backend), or undefined
  std::array<int64_t, 4> packed_for{};    // the input shape [N, C, H, W] that `packed`'s layout was chosen for
  std::array<int64_t, 4> weight_shape{};  // [C_out, C_in / groups, kH, kW]
  std::vector<int64_t> padding, stride, dilation;
  int64_t groups = 1;
  bool cudnn_fused = false;  // run() with ReLU and run_add_relu() call cuDNN's fused kernels (see cudnn_fused_works)

  /// y = conv(x) + bias, then ReLU when relu.
  at::Tensor run(const at::Tensor& x, bool relu) const;
  /// conv(x) + bias + other: the residual sum as a post-op of the convolution (a pre-activation block's).
  at::Tensor run_add(const at::Tensor& x, const at::Tensor& other) const;
  /// relu(conv(x) + bias + other): the residual sum and ReLU as post-ops of the convolution.
  at::Tensor run_add_relu(const at::Tensor& x, const at::Tensor& other) const;
  /// The same with other weights of this convolution's shape (dense, or prepacked).
  at::Tensor run_add_relu(const at::Tensor& x, const at::Tensor& other, const at::Tensor& w, const at::Tensor& b) const;
  /// The output's spatial size for an input of spatial size {h, w}.
  std::array<int64_t, 2> output_hw(std::array<int64_t, 2> hw) const;
  /// A 1x1, stride 1, unpadded, ungrouped convolution.
  bool is_pointwise() const;
  /// The oneDNN weights for input x: `packed` for the shape it was packed for; for other shapes dense(), which
  /// oneDNN reorders for the layout it picks there (as an eager convolution does), since reordering `packed` into
  /// another blocked layout on each call ran 3-10x slower than the eager model.
  const at::Tensor& onednn_weight(const at::Tensor& x) const;
  /// The dense channels_last weight: `weight`, or, with `packed` alone, `packed` reordered back, made on the first
  /// call (from any thread) and kept from then on.
  const at::Tensor& dense() const;

 private:
  struct Unpacked {
    std::once_flag once;
    at::Tensor weight;
  };
  std::shared_ptr<Unpacked> unpacked_ = std::make_shared<Unpacked>();
};

/// conv followed by bn (in eval mode), folded into one convolution for `target`: w' = w * g / sqrt(v + eps),
/// b' = beta - mean * g / sqrt(v + eps) (+ the conv's bias, scaled), computed in float64; an empty bn holder is
/// the identity (the convolution alone, a zero bias where it has none). `input` is the input shape
/// [N, C, H, W] oneDNN chooses the weight layout for, and whose H x W cuDNN's fused kernels are probed at (the
/// result's cudnn_fused is cudnn_fused_works(it, {H, W}) with target.cudnn_fused). Does not change the modules.
FoldedConv fold_conv_bn(
    const torch::nn::Conv2d& conv,
    const torch::nn::BatchNorm2d& bn,
    const FoldTarget& target,
    std::array<int64_t, 4> input);

/// The output size of a pooling or convolution window along one axis (ceil_mode as torch's max_pool2d).
int64_t window_output_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil = false);

/// Whether cuDNN's fused convolutions may run on `device` for `dtype`: a CUDA device, cuDNN enabled, not float64.
/// Whether they do run is up to cuDNN's engines for each convolution's shape: see cudnn_fused_works.
bool cudnn_fused_candidate(const c10::Device& device, c10::ScalarType dtype);

/// Whether cuDNN's fused conv + bias + ReLU and conv + bias + add + ReLU both run f (with its weights, dtype, kernel,
/// stride, padding, dilation and groups: a grouped, 3-channel or 7x7 / 2 convolution may have no fused engine) and
/// give its values: tried once on a batch-1 channels_last input of f's channels and spatial size `hw` (at least a
/// 3 x 3 output), checked against at::convolution in float32. False off candidates (cudnn_fused_candidate) and when
/// either throws (cudnn_frontend's errors are std::exceptions, not only c10::Errors).
bool cudnn_fused_works(const FoldedConv& f, std::array<int64_t, 2> hw);

}  // namespace sepp::inference
