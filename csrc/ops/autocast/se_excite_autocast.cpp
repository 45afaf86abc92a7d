// sepp::se_excite under torch.autocast: like the linear layers it replaces, it runs in the autocast dtype (the
// float32 weights cast once per autocast region through autocast's weight cache); the kernels accumulate in float32.

#include <sepp/ops.h>

#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace sepp::ops {
namespace {

template <c10::DeviceType kDevice>
at::Tensor se_excite_autocast(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto dt = at::autocast::get_autocast_dtype(kDevice);
  auto cast = [&](const std::optional<at::Tensor>& t) {
    return t && t->defined() ? std::optional<at::Tensor>(at::autocast::cached_cast(dt, *t, kDevice)) : std::nullopt;
  };
  return se_excite(
      at::autocast::cached_cast(dt, z, kDevice), at::autocast::cached_cast(dt, w1, kDevice), cast(b1),
      at::autocast::cached_cast(dt, w2, kDevice), cast(b2), gate);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, AutocastCPU, m) {
  m.impl("se_excite", &se_excite_autocast<c10::DeviceType::CPU>);
}
TORCH_LIBRARY_IMPL(sepp, AutocastCUDA, m) {
  m.impl("se_excite", &se_excite_autocast<c10::DeviceType::CUDA>);
}

}  // namespace sepp::ops
