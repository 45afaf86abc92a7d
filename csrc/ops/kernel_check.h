#pragma once

// sepp's own kernels check themselves before they are trusted with real data.
//
// The first time a kernel runs on a device in a dtype, it first runs on small inputs (odd channel counts, both
// layouts, the vector and scalar paths) against the same computation in float64 on the CPU. When it passes, it is used
// from then on; when it fails (a wrong answer or an exception), the operator runs through ATen's operators on that
// device and dtype for the rest of the process, and one warning names the operator and the error. Checked by default:
// CUDA, whose kernels are built in CI but have not run there. The CPU kernels are tested by the test suite; checking
// them too (and injecting a fault into a check) is for tests of this mechanism.

#include <sepp/ops.h>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sepp::ops::detail {

enum class Kernel : int { SEScale = 0, SESqueeze = 1, SEExcite = 2 };

using SEScaleFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, bool);
using SESqueezeFn = at::Tensor (*)(const at::Tensor&, std::optional<at::ScalarType>);
using SEExciteFn = at::Tensor (*)(
    const at::Tensor&,
    const at::Tensor&,
    const std::optional<at::Tensor>&,
    const at::Tensor&,
    const std::optional<at::Tensor>&,
    std::string_view);

/// Whether `kernel` (the unchecked kernel of se_scale on `device`) may compute in `dtype`: checks it the first time.
/// False means: use the ATen fallback. `capturing` (asked only while the kernel is unchecked): whether the current
/// stream records a CUDA graph, where a check cannot run (it copies to the CPU); the kernel is then not used, and
/// checked at a later call.
bool trusted(SEScaleFn kernel, c10::Device device, at::ScalarType dtype, bool (*capturing)() = nullptr);
bool trusted(SESqueezeFn kernel, c10::Device device, at::ScalarType dtype, bool (*capturing)() = nullptr);
bool trusted(SEExciteFn kernel, c10::Device device, at::ScalarType dtype, bool (*capturing)() = nullptr);

/// The operators through ATen: what a kernel that failed its check is replaced by. Same checks, values, dtypes and
/// output layout as the kernels.
at::Tensor se_scale_aten(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu);
at::Tensor& se_scale_inplace_aten(
    at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu);
at::Tensor se_squeeze_aten(const at::Tensor& x, std::optional<at::ScalarType> dtype);
at::Tensor se_excite_aten(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate);

}  // namespace sepp::ops::detail
