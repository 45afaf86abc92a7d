#include "inference/model.h"

#include "inference/max_pool.h"

#include <sepp/ops.h>

#include "ops/common.h"
#include "ops/cpu/dense.h"
#include "residual.h"

#include <ATen/ops/avg_pool2d.h>
#include <ATen/ops/empty.h>
#include <ATen/record_function.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

namespace sepp::inference {

using at::Tensor;

std::optional<Pool> Pool::of(const torch::nn::Module& m) {
  const auto pair = [](const auto& a) { return std::array<int64_t, 2>{(*a)[0], (*a)[1]}; };
  if (const auto* p = m.as<torch::nn::MaxPool2d>()) {
    const auto& o = p->options;
    TORCH_CHECK_VALUE(
        (*o.dilation())[0] == 1 && (*o.dilation())[1] == 1, "optimize_for_inference: expected an undilated max pool");
    return Pool{false, pair(o.kernel_size()), pair(o.stride()), pair(o.padding()), o.ceil_mode(), true};
  }
  if (const auto* p = m.as<torch::nn::AvgPool2d>()) {
    const auto& o = p->options;
    TORCH_CHECK_VALUE(
        !o.divisor_override().has_value(), "optimize_for_inference: expected an average pool without divisor_override");
    return Pool{true, pair(o.kernel_size()), pair(o.stride()), pair(o.padding()), o.ceil_mode(), o.count_include_pad()};
  }
  TORCH_CHECK_VALUE(
      m.as<torch::nn::Identity>() != nullptr,
      "optimize_for_inference: expected a MaxPool2d, AvgPool2d or Identity, got ", m.name());
  return std::nullopt;
}

Tensor Pool::run(const Tensor& x) const {
  if (avg) return at::avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad);
  return max_pool2d(x, kernel, stride, padding, ceil_mode);
}

std::array<int64_t, 2> Pool::output_hw(std::array<int64_t, 2> hw) const {
  for (int i = 0; i < 2; ++i) hw[i] = window_output_size(hw[i], kernel[i], stride[i], padding[i], 1, ceil_mode);
  return hw;
}

Affine Affine::of(const torch::nn::BatchNorm2d& bn, c10::ScalarType dtype) {
  TORCH_CHECK_VALUE(
      bn->options.affine() && bn->options.track_running_stats(),
      "optimize_for_inference: expected BatchNorm layers with affine parameters and running statistics");
  const auto scale =
      bn->weight.detach().to(at::kDouble) / (bn->running_var.detach().to(at::kDouble) + bn->options.eps()).sqrt();
  const auto shift = bn->bias.detach().to(at::kDouble) - bn->running_mean.detach().to(at::kDouble) * scale;
  return Affine{scale.to(dtype).reshape({1, -1, 1, 1}), shift.to(dtype).reshape({1, -1, 1, 1})};
}

Tensor Affine::relu(const Tensor& x) const {
  return (x * scale).add_(shift).relu_();  // x first: the result keeps its memory format (channels_last)
}

Tensor SEWeights::of(const Tensor& t) const {
  switch (squeeze) {
    case SESqueeze::Avg:
      return excite(ops::se_squeeze(t, acc));
    case SESqueeze::Max:
      return excite(t.amax({2, 3}).to(acc));
    case SESqueeze::AvgMax:
      return excite((t.mean({2, 3}, false, acc) + t.amax({2, 3}).to(acc)).mul_(0.5));
  }
  TORCH_INTERNAL_ASSERT(false, "unknown squeeze");
}

Tensor SEWeights::excite(const Tensor& z) const {
  using ops::detail::defined_or_nullopt;
  if (w1.scalar_type() != z.scalar_type()) {  // bfloat16 weights, float32 z: not an operator's dtypes
    RECORD_FUNCTION("sepp::se_excite", std::vector<c10::IValue>({z}));
    return ops::cpu::excite(z, w1, b1, w2, b2, gate);
  }
  return ops::se_excite(z, w1, defined_or_nullopt(b1), w2, defined_or_nullopt(b2), gate);  // one launch on CUDA
}

Tensor SEWeights::apply(const Tensor& t) const {
  return ops::se_scale(t, of(t).to(t.scalar_type()));
}

Tensor Block::forward(const Tensor& x) const {
  if (preact) return detail::preact_forward(*this, se.has_value(), x);
  return detail::residual_forward(*this, se.has_value(), strategy, x);
}

Tensor Block::add(const Tensor& h, c10::function_ref<Tensor()> shortcut) const {
  return convs.back().run_add(h, shortcut());
}

Tensor Block::add_se(const Tensor& h, c10::function_ref<Tensor()> shortcut) const {
  const Tensor idn = shortcut();
  Tensor u = convs.back().run(h, false);
  const Tensor s = se->of(u);
  if (tail == SETail::OutOfPlace) return ops::se_scale(u, s.to(u.scalar_type()), idn, false);
  return ops::se_scale_(u, s, idn, false);  // U * s + identity, one pass, in place
}

Tensor Block::shortcut(const Tensor& x) const {
  if (!downsample) return x;
  return downsample->run(down_pool ? down_pool->run(x) : x, false);
}

Tensor Block::branch(const Tensor& x) const {
  Tensor h = x;
  for (size_t i = 0; i + 1 < convs.size(); ++i) {
    h = convs[i].run(h, true);
    if (aa && i == aa_after) h = aa->run(h);
  }
  return h;
}

Tensor Block::merge(const Tensor& h, const Tensor& other) const {
  const FoldedConv& last = convs.back();
  // timm's legacy basic block: a ReLU on the branch's output before the sum.
  return relu_before_se ? last.run(h, true).add_(other).relu_() : last.run_add_relu(h, other);
}

Tensor Block::merge_se(const Tensor& h, c10::function_ref<Tensor()> shortcut) const {
  const Tensor idn = shortcut();
  const FoldedConv& last = convs.back();
  switch (tail) {
    case SETail::SqueezeFirst: {
      const Tensor s = se->excite(ops::cpu::linear(ops::se_squeeze(h, se->acc), w3, b3));
      const Tensor u = last.run(h, false);
      return ops::se_scale(u, s.to(u.scalar_type()), idn, true);
    }
    case SETail::SqueezeFirstScaledConv3: {
      // The squeeze before conv3 reads h and W3 (mean(U) = W3 mean(h) + b3); after conv3 it reads U, 4 |h|, once
      // more, from memory when U outgrows the cache.
      const int64_t u_numel = last.weight_shape[0] * h.size(2) * h.size(3);
      const bool scaled_conv3 = h.size(0) == 1 && 5 * w3.numel() < 4 * u_numel;
      if (scaled_conv3 || w3.numel() < 3 * h.numel()) {
        const Tensor s = se->excite(ops::cpu::linear(ops::se_squeeze(h, se->acc), w3, b3));
        if (scaled_conv3) {
          const Tensor& w = last.dense();
          const Tensor sd = s.to(w.scalar_type()).reshape({-1});
          return last.run_add_relu(h, idn, w * sd.reshape({-1, 1, 1, 1}), last.bias * sd);
        }
        Tensor u = last.run(h, false);
        return ops::se_scale_(u, s, idn, true);  // relu(U * s + identity), one pass, in place
      }
      [[fallthrough]];
    }
    case SETail::InPlace: {
      Tensor u = last.run(h, relu_before_se);
      const Tensor s = se->of(u);
      return ops::se_scale_(u, s, idn, true);  // relu(U * s + identity), one pass, in place
    }
    case SETail::OutOfPlace: {
      const Tensor u = last.run(h, relu_before_se);
      return ops::se_scale(u, se->of(u).to(u.scalar_type()), idn, true);
    }
  }
  TORCH_INTERNAL_ASSERT(false, "unknown SE tail");
}

}  // namespace sepp::inference

namespace sepp {

at::Tensor OptimizedResNet::Impl::eager(const at::Tensor& x) const {
  if (x.size(0) == 0) {  // no images: an empty batch of outputs, as torch.nn modules give (oneDNN refuses N = 0)
    const int64_t width = fc_weight.defined() ? fc_weight.size(0) : num_features;
    return at::empty({0, width}, x.options());
  }
  at::Tensor h = x;
  for (size_t i = 0; i < stem.size(); ++i) h = stem[i].run(h, !(preact && i + 1 == stem.size()));
  if (pool) h = pool->run(h);
  for (const auto& b : blocks) h = b.forward(h);
  if (norm) h = norm->relu(h);
  auto f = h.mean({2, 3});
  return fc_weight.defined() ? ops::cpu::linear(f, fc_weight, fc_bias) : f;
}

}  // namespace sepp
