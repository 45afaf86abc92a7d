// sepp::se_excite on the CPU: s = gate(relu(z W1^T + b1) W2^T + b2).
//
// A small float32 batch (what an SE block sees at inference: a few samples of up to a few thousand channels) runs as
// cpu::excite: two passes of cpu::dense (dense.h), each weight row read once for all the samples. Larger batches and
// the other dtypes go through ATen's matrix products, in float32 for half-precision inputs (kernel_check.cpp), the same
// operators that replace a kernel that fails its self-check.

#include "ops/cpu/dense.h"
#include "ops/kernel_check.h"
#include "ops/se_excite_common.h"

#include <torch/library.h>

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
  detail::check_se_excite(z, w1, b1, w2, b2);
  detail::parse_gate(gate, "sepp::se_excite");
  const int64_t n = z.size(0);
  if (z.scalar_type() != at::kFloat || n == 0 || n > cpu::kMaxDotBatch) {
    return detail::se_excite_aten(z, w1, b1, w2, b2, gate);
  }
  const auto undefined_if_absent = [](const std::optional<at::Tensor>& t) { return t.value_or(at::Tensor()); };
  return cpu::excite(z, w1, undefined_if_absent(b1), w2, undefined_if_absent(b2), gate);
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
