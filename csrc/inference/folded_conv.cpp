#include "inference/folded_conv.h"

#include "inference/activation_pool.h"
#include "inference/onednn.h"

#include <ATen/Context.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/cudnn_convolution_add_relu.h>
#include <ATen/ops/cudnn_convolution_relu.h>
#include <ATen/ops/mkldnn_reorder_conv2d_weight.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>

#include <algorithm>
#include <exception>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace sepp::inference {

namespace {

// Gives the heap's free pages back to the system. glibc keeps the freed temporaries of folding (tens of MB for a
// large convolution) once its dynamic trim threshold has grown, so a model's folding would otherwise leave its
// peak ~30 % of the weights higher than what it keeps.
void release_freed_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace

const at::Tensor& FoldedConv::onednn_weight(const at::Tensor& x) const {
  return x.sizes() == c10::IntArrayRef(packed_for) ? packed : dense();
}

const at::Tensor& FoldedConv::dense() const {
  if (weight.defined() || !packed.defined()) return weight;
  std::call_once(unpacked_->once, [this] {
    const ActivationPool::Bypass kept;  // it lives as long as the model, not one call
    unpacked_->weight =
        packed.to_dense().reshape(c10::IntArrayRef(weight_shape)).contiguous(at::MemoryFormat::ChannelsLast);
  });
  return unpacked_->weight;
}

at::Tensor FoldedConv::run(const at::Tensor& x, bool relu) const {
  if (packed.defined()) {
    return onednn_ops().unary->call(
        x, onednn_weight(x), bias, padding, stride, dilation, groups, relu ? "relu" : "none", Scalars(), std::nullopt);
  }
  if (cudnn_fused && relu) {
    return at::cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups);
  }
  auto y = at::convolution(x, weight, bias, stride, padding, dilation, false, {0, 0}, groups);
  return relu ? y.relu_() : y;
}

at::Tensor FoldedConv::run_add(const at::Tensor& x, const at::Tensor& other) const {
  if (packed.defined()) {
    return onednn_ops().binary->call(
        x, other, onednn_weight(x), bias, padding, stride, dilation, groups, "add", std::nullopt, std::nullopt,
        Scalars(), std::nullopt);
  }
  return at::convolution(x, weight, bias, stride, padding, dilation, false, {0, 0}, groups).add_(other);
}

at::Tensor FoldedConv::run_add_relu(const at::Tensor& x, const at::Tensor& other) const {
  return run_add_relu(x, other, packed.defined() ? onednn_weight(x) : weight, bias);
}

at::Tensor FoldedConv::run_add_relu(
    const at::Tensor& x, const at::Tensor& other, const at::Tensor& w, const at::Tensor& b) const {
  if (packed.defined()) {
    return onednn_ops().binary->call(
        x, other, w, b, padding, stride, dilation, groups, "add", std::nullopt, "relu", Scalars(), std::nullopt);
  }
  if (cudnn_fused) {
    return at::cudnn_convolution_add_relu(x, w, other, 1, b, stride, padding, dilation, groups);
  }
  return at::convolution(x, w, b, stride, padding, dilation, false, {0, 0}, groups).add_(other).relu_();
}

std::array<int64_t, 2> FoldedConv::output_hw(std::array<int64_t, 2> hw) const {
  return {
      window_output_size(hw[0], weight_shape[2], stride[0], padding[0], dilation[0]),
      window_output_size(hw[1], weight_shape[3], stride[1], padding[1], dilation[1])};
}

bool FoldedConv::is_pointwise() const {
  return weight_shape[2] == 1 && weight_shape[3] == 1 && stride[0] == 1 && stride[1] == 1 && padding[0] == 0 &&
         padding[1] == 0 && groups == 1;
}

FoldedConv fold_conv_bn(
    const torch::nn::Conv2d& conv,
    const torch::nn::BatchNorm2d& bn,
    const FoldTarget& target,
    std::array<int64_t, 4> input) {
  const bool has_bn = !bn.is_empty();
  TORCH_CHECK_VALUE(
      !has_bn || (bn->options.affine() && bn->options.track_running_stats()),
      "optimize_for_inference: expected BatchNorm layers with affine parameters and running statistics");
  const auto& o = conv->options;
  FoldedConv f;
  const auto pad = std::get<torch::ExpandingArray<2>>(o.padding());
  f.padding = {(*pad)[0], (*pad)[1]};
  f.stride = {(*o.stride())[0], (*o.stride())[1]};
  f.dilation = {(*o.dilation())[0], (*o.dilation())[1]};
  f.groups = o.groups();
  const auto& w = conv->weight;
  const auto dopt = w.options().dtype(at::kDouble);
  at::Tensor scale, bias;
  if (has_bn) {
    scale = bn->weight.detach().to(at::kDouble) / (bn->running_var.detach().to(at::kDouble) + bn->options.eps()).sqrt();
    bias = bn->bias.detach().to(at::kDouble) - bn->running_mean.detach().to(at::kDouble) * scale;
  } else {
    scale = at::ones({w.size(0)}, dopt);
    bias = at::zeros({w.size(0)}, dopt);
  }
  if (o.bias()) bias = bias + conv->bias.detach().to(at::kDouble) * scale;
  std::copy(w.sizes().begin(), w.sizes().end(), f.weight_shape.begin());
  f.bias = bias.to(target.dtype);
  // Each step's input is freed as soon as its output exists, so that folding a large model needs little more memory
  // than its result.
  at::Tensor folded = w.detach()
                          .to(at::kDouble, /*non_blocking=*/false, /*copy=*/true, at::MemoryFormat::Contiguous)
                          .mul_(scale.reshape({-1, 1, 1, 1}));
  folded = folded.to(target.dtype);
  if (target.onednn) {
    // Only the packed copy is kept: a dense one as well would double the weights' memory.
    f.packed_for = input;
    folded = folded.to_mkldnn();
    f.packed = at::mkldnn_reorder_conv2d_weight(
        folded, f.padding, f.stride, f.dilation, f.groups, std::vector<int64_t>(input.begin(), input.end()));
    folded.reset();
    release_freed_memory();
    return f;
  }
  f.weight = folded.contiguous(at::MemoryFormat::ChannelsLast);
  f.cudnn_fused = target.cudnn_fused && cudnn_fused_works(f, {input[2], input[3]});
  return f;
}

int64_t window_output_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1;
  int64_t out = (ceil ? (span + s - 1) / s : span / s) + 1;
  if (ceil && (out - 1) * s >= in + p) --out;
  return std::max<int64_t>(out, 1);
}

bool cudnn_fused_candidate(const c10::Device& device, c10::ScalarType dtype) {
  return device.is_cuda() && at::globalContext().userEnabledCuDNN() && dtype != at::kDouble;
}

namespace {

// Deterministic values in [-1, 1] of `shape` (the global random generators are left alone), channels_last.
at::Tensor probe_values(at::IntArrayRef shape, const at::TensorOptions& o) {
  const auto v = at::arange(c10::multiply_integers(shape), o.dtype(at::kFloat)).mul_(0.7548776662).sin_();
  return v.reshape(shape).to(o.dtype()).contiguous(at::MemoryFormat::ChannelsLast);
}

// max |got - want| / (max |want| + 1e-6), computed in float32 (want is float32).
double relative_max_error(const at::Tensor& got, const at::Tensor& want) {
  return ((got.to(at::kFloat) - want).abs().max() / (want.abs().max() + 1e-6)).item<double>();
}

}  // namespace

bool cudnn_fused_works(const FoldedConv& f, std::array<int64_t, 2> hw) {
  const auto& w = f.weight;
  if (!cudnn_fused_candidate(w.device(), w.scalar_type())) return false;
  try {
    // At least a 3 x 3 output, so that every kernel tap meets real values.
    const int64_t h = std::max(hw[0], (w.size(2) - 1) * f.dilation[0] + 1 + 2 * f.stride[0]);
    const int64_t wd = std::max(hw[1], (w.size(3) - 1) * f.dilation[1] + 1 + 2 * f.stride[1]);
    const auto x = probe_values({1, w.size(1) * f.groups, h, wd}, w.options());
    const auto y = at::cudnn_convolution_relu(x, w, f.bias, f.stride, f.padding, f.dilation, f.groups);
    const auto z = probe_values(y.sizes(), w.options());
    const auto y2 = at::cudnn_convolution_add_relu(x, w, z, 1, f.bias, f.stride, f.padding, f.dilation, f.groups);
    // The reference in float32 from the same (rounded) values: conv + bias, before the ReLU.
    const auto want = at::convolution(
        x.to(at::kFloat), w.to(at::kFloat), f.bias.to(at::kFloat), f.stride, f.padding, f.dilation, false, {0, 0},
        f.groups);
    // Loose bounds: they tell wrong results (an engine that computes something else, NaN) from rounding, including
    // TF32 (on by default for cuDNN's float32 convolutions) and half-precision outputs.
    const double tol = w.scalar_type() == at::kFloat ? 1e-2 : 5e-2;
    return relative_max_error(y, want.relu()) <= tol && relative_max_error(y2, (want + z.to(at::kFloat)).relu()) <= tol;
  } catch (const std::exception&) {  // c10::Error, and cudnn_frontend's own exceptions
    return false;
  }
}

}  // namespace sepp::inference
