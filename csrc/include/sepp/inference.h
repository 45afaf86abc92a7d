#pragma once

#include <sepp/export.h>
#include <sepp/resnet.h>

#include <torch/arg.h>
#include <torch/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sepp {

/// Options of optimize_for_inference.
struct SEPP_API InferenceOptions {
  /// The dtype the optimized model computes in and takes its input in: float32 or bfloat16 on the CPU (bfloat16 runs
  /// oneDNN's kernels only where the CPU has them: AVX512-BF16 or AMX); float32, float16 or bfloat16 on CUDA;
  /// float64 anywhere (plain ATen kernels). Unset: the model's dtype.
  TORCH_ARG(std::optional<c10::ScalarType>, dtype) = std::nullopt;
  /// The input shape [N, C, H, W] oneDNN chooses its weight layouts for. Any other shape still runs, with the dense
  /// weights, about as fast as the eager model. Empty: [1, in_chans, 224, 224].
  TORCH_ARG(std::vector<int64_t>, input_size) = {};
  /// CUDA: capture the whole forward in a CUDA graph per input shape (and dtype) the first time the shape is seen,
  /// and replay it on later calls (a new shape is captured in turn). Each call copies its input into the graph's
  /// input and returns a copy of the graph's output. No effect on the CPU.
  TORCH_ARG(bool, cuda_graphs) = true;
};

/// An inference-only SE-ResNet made from a ResNet by optimize_for_inference: every BatchNorm folded into its
/// convolution's weights and bias; channels_last activations from stem to head; on the CPU, oneDNN convolutions with
/// weights prepacked once and ReLU / residual-sum + ReLU fused into them, and large activations from a pool kept
/// between calls; each standard SE block's scale, residual sum and ReLU in one pass (sepp::se_scale); on CUDA,
/// cuDNN's fused convolutions, the bottleneck SE's squeeze taken before conv3 (exact in eval mode), the excitation in
/// one kernel, and the whole forward replayed as a CUDA graph per input shape. It computes the same function as the
/// model in eval mode. It holds its own copy of the weights (later changes to the model do not reach it), is
/// immutable, and forward may be called from several threads at once. No autograd.
class SEPP_API OptimizedResNet {
 public:
  /// [N, in_chans, H, W] (H, W >= 32 for the standard stem) -> logits [N, num_classes], or the pooled features
  /// [N, num_features] when num_classes == 0. The input must be on device() with dtype(), as for the eager model;
  /// it may be contiguous or channels_last.
  torch::Tensor forward(const torch::Tensor& x) const;

  /// The options of the model this was made from.
  const ResNetOptions& model_options() const;
  c10::ScalarType dtype() const;
  torch::Device device() const;
  /// "onednn" (CPU: prepacked oneDNN convolutions with fused post-ops), "cudnn" (CUDA: cuDNN convolutions with fused
  /// bias + ReLU and bias + residual sum + ReLU) or "aten" (folded weights, ATen convolutions).
  std::string backend() const;
  /// How many CUDA graphs (input shapes) the model holds now: at most 8, the least recently used shape dropped first
  /// (and captured again when it comes back); 0 on the CPU or with cuda_graphs off.
  int64_t cuda_graphs_captured() const;
  /// CPU: the bytes of activation memory the model keeps between calls, so that its large activations are not
  /// mapped afresh (and page-faulted) on every call; those of a shape not used in the last 4 calls are released.
  /// 0 on CUDA.
  int64_t activation_bytes() const;
  int64_t num_features() const;

  struct Impl;

 private:
  explicit OptimizedResNet(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
  friend SEPP_API OptimizedResNet optimize_for_inference(const ResNet& model, const InferenceOptions& options);
};

/// Builds the inference-only twin of `model` (which keeps working unchanged) on the model's device. Throws
/// c10::ValueError / c10::TypeError for a dtype the device cannot run, or a bad input_size.
SEPP_API OptimizedResNet optimize_for_inference(const ResNet& model, const InferenceOptions& options = {});

}  // namespace sepp
