// sepp::se_scale under torch.autocast: the branch output, the gate and the identity can arrive in different dtypes
// (e.g. a bf16 convolution output next to a float32 identity); all three are brought to their promoted dtype, then
// the op runs below the autocast layer. The result keeps autograd through the casts.

#include <sepp/ops.h>

#include <c10/core/DispatchKeySet.h>
#include <c10/core/ScalarType.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace sepp::ops {
namespace {

at::Tensor se_scale_autocast(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  auto dtype = c10::promoteTypes(x.scalar_type(), scale.scalar_type());
  if (identity && identity->defined()) dtype = c10::promoteTypes(dtype, identity->scalar_type());
  std::optional<at::Tensor> id;
  if (identity && identity->defined()) id = identity->to(dtype);
  return se_scale(x.to(dtype), scale.to(dtype), id, relu);
}

}  // namespace

TORCH_LIBRARY_IMPL(sepp, AutocastCPU, m) {
  m.impl("se_scale", &se_scale_autocast);
}
TORCH_LIBRARY_IMPL(sepp, AutocastCUDA, m) {
  m.impl("se_scale", &se_scale_autocast);
}

}  // namespace sepp::ops
