#pragma once

#include <sepp/export.h>

#include <ATen/core/Tensor.h>

#include <c10/core/Device.h>

#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace sepp::ops {

/// The fused SE scale step, operator `sepp::se_scale`:
///   out = x * scale[n, c]            (scale of shape [N, C] or [N, C, 1, 1])
///   out = out + identity             (when identity is given: same shape as x)
///   out = relu(out)                  (when relu)
/// One pass over x; CPU and CUDA kernels, differentiable in x, scale and identity; keeps x's memory format
/// (contiguous or channels_last).
SEPP_API at::Tensor se_scale(
    const at::Tensor& x,
    const at::Tensor& scale,
    const std::optional<at::Tensor>& identity = std::nullopt,
    bool relu = false);

/// se_scale in place, operator `sepp::se_scale_`: x <- [relu](x * scale[n, c] [+ identity]); returns x. scale may
/// also be float32 for a float16 / bfloat16 x. The inference path's tail; no autograd.
SEPP_API at::Tensor& se_scale_(
    at::Tensor& x,
    const at::Tensor& scale,
    const std::optional<at::Tensor>& identity = std::nullopt,
    bool relu = false);

/// The SE squeeze, operator `sepp::se_squeeze`: z[n, c] = mean of x[n, c] over H x W, for x [N, C, H, W]
/// (contiguous or channels_last), accumulated in float32 (float64 for float32/float64 inputs on the CPU, float64
/// inputs on CUDA). z has `dtype` when given (e.g. float32 for a bfloat16 x), else x's dtype. H x W == 0 gives NaN,
/// as torch.mean does. CPU and CUDA kernels, differentiable.
SEPP_API at::Tensor se_squeeze(const at::Tensor& x, std::optional<at::ScalarType> dtype = std::nullopt);

/// The gradient of se_squeeze: dx = grad[n, c] / (H * W) at every pixel, as a tensor of `input_size` and
/// `input_dtype`, channels_last when asked. Operator `sepp::se_squeeze_backward`.
SEPP_API at::Tensor se_squeeze_backward(
    const at::Tensor& grad, at::IntArrayRef input_size, at::ScalarType input_dtype, bool channels_last);

/// The SE excitation, operator `sepp::se_excite`: s = gate(relu(z W1^T + b1) W2^T + b2) for z [N, C], w1 [R, C],
/// b1 [R], w2 [C, R], b2 [C] (biases optional), all one dtype; gate "sigmoid", "hard_sigmoid" (relu6(a + 3) / 6) or
/// "tanh". Accumulates in float32 (or float64); s [N, C] in z's dtype. On CUDA, one kernel launch for all N.
/// Differentiable in z and the weights.
SEPP_API at::Tensor se_excite(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate = "sigmoid");

/// Gradients (dz, dw1, db1, dw2, db2) of se_excite given grad = dL/ds and its output s; db1/db2 are computed even
/// where the biases are absent. Operator `sepp::se_excite_backward`.
using SEExciteGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
SEPP_API SEExciteGrads se_excite_backward(
    const at::Tensor& grad,
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    const at::Tensor& s,
    std::string_view gate);

/// Self-checks. The first time one of these operators' own kernels runs on a CUDA device in a dtype, it runs on
/// small inputs (odd channel counts, both layouts, its vector and scalar paths, a NaN) against the same computation in
/// float64 on the CPU. When it fails (a wrong answer or an exception), that operator runs through ATen's operators on
/// that device and dtype for the rest of the process, and one warning names the operator and the error. The CPU
/// kernels are covered by the test suite instead.

/// One kernel's self-check: operator ("se_scale"), device ("cuda:0"), dtype ("Float"), state ("ok" or "failed"),
/// and for a failure the error.
struct KernelCheck {
  std::string op, device, dtype, state, error;
};

/// The self-checks this process has run, in the order they ran.
SEPP_API std::vector<KernelCheck> kernel_checks();

/// Runs the self-checks of the kernels on `device` in `dtype` (and float32, the excitation's dtype in half-precision
/// models) now, rather than at their first use; optimize_for_inference calls it, so that no check falls into a
/// model's first forward or a CUDA graph capture. Does nothing where kernels are not checked.
SEPP_API void check_kernels(c10::Device device, at::ScalarType dtype);

/// For tests of the mechanism: forgets every check, checks the CPU kernels too when `check_cpu`, and makes the checks
/// of `fault_op` ("se_scale", "se_squeeze", "se_excite" or "" for none) see a wrong answer.
SEPP_API void configure_kernel_checks_for_testing(bool check_cpu, const std::string& fault_op);

}  // namespace sepp::ops
