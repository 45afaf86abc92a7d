// sepp::se_excite on the CPU: s = gate(relu(z W1^T + b1) W2^T + b2).
//
// A small float32 batch (what an SE block sees at inference: a few samples of up to a few thousand channels) runs as
// two passes of cpu::dense (dense.h), each weight row read once for all the samples. Larger batches and the other
// dtypes go through ATen's matrix products, in float32 for half-precision inputs (kernel_check.cpp), the same
// operators that replace a kernel that fails its self-check.

#include "ops/cpu/dense.h"
#include "ops/kernel_check.h"
#include "ops/se_excite_common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <memory>

namespace sepp::ops {
namespace {

at::Tensor se_excite_cpu_kernel(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  TORCH_CHECK_VALUE(z.device().is_cpu(), "sepp::se_excite (CPU kernel): expected CPU tensors, got ", z.device());
  const int64_t r = detail::check_se_excite(z, w1, b1, w2, b2);
  const auto g = detail::parse_gate(gate, "sepp::se_excite");
  const int64_t n = z.size(0), c = z.size(1);
  if (z.scalar_type() != at::kFloat || n == 0 || n > cpu::kMaxDotBatch) {
    return detail::se_excite_aten(z, w1, b1, w2, b2, gate);
  }
  const auto zc = z.contiguous(), w1c = w1.contiguous(), w2c = w2.contiguous();
  auto bias = [](const std::optional<at::Tensor>& t) {
    return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
  };
  const auto b1c = bias(b1), b2c = bias(b2);
  auto ptr = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; };
  auto s = at::empty({n, c}, z.options());
  if (c == 0) return s;
  const auto h = std::make_unique<float[]>(static_cast<size_t>(n * r));  // written in full by the first pass
  using cpu::Activation;
  cpu::dense(
      h.get(), w1c.const_data_ptr<float>(), ptr(b1c), zc.const_data_ptr<float>(), n, c, r,
      Activation{Activation::Kind::Relu});
  cpu::dense(
      s.mutable_data_ptr<float>(), w2c.const_data_ptr<float>(), ptr(b2c), h.get(), n, r, c,
      Activation{Activation::Kind::Gate, g});
  return s;
}

// The CPU kernel is trusted unless checking it is asked for (kernel_check.h).
at::Tensor se_excite_cpu(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  if (!detail::trusted(&se_excite_cpu_kernel, z.device(), z.scalar_type())) {
    return detail::se_excite_aten(z, w1, b1, w2, b2, gate);
  }
  return se_excite_cpu_kernel(z, w1, b1, w2, b2, gate);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, CPU, m) {
  m.impl("se_excite", &se_excite_cpu);
}

}  // namespace sepp::ops
