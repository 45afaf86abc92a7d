#include "inference/max_pool.h"

#include "inference/folded_conv.h"
#include "ops/cpu/multiversion.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/max_pool2d.h>
#include <ATen/record_function.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace sepp::inference {
namespace {

// The largest window pooled here; a larger one goes to ATen.
constexpr int64_t kMaxWindow = 16;

// out[k] = the maximum of src[0][k] ... src[count - 1][k] for k < c, a multiple of 16; a NaN in a window makes its
// maximum NaN, as in torch. Blocks of 16 channels keep their running maximum in a vector register (GCC/Clang vector
// types, lowered by each clone to its own ISA): compared as floats, selected and tested for NaN on the bits (exact for
// bfloat16, whose bits are a float32's upper half).
using F16 = float __attribute__((vector_size(64)));
using U16 = uint32_t __attribute__((vector_size(64)));
using H16 = uint16_t __attribute__((vector_size(32)));
constexpr int64_t kLanes = 16;
constexpr uint32_t kAbs = 0x7fffffffu, kInf = 0x7f800000u, kNaN = 0x7fc00000u;

inline U16 bits_of(const float* p) {
  U16 u;
  std::memcpy(&u, p, sizeof u);
  return u;
}
inline U16 bits_of(const c10::BFloat16* p) {
  H16 h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, U16) << 16;
}
inline void store(float* p, U16 u) {
  std::memcpy(p, &u, sizeof u);
}
inline void store(c10::BFloat16* p, U16 u) {
  const H16 h = __builtin_convertvector(u >> 16, H16);
  std::memcpy(p, &h, sizeof h);
}

#define SEPP_MAX_OF(T)                                                                              \
  SEPP_MULTIVERSION void max_of(T* __restrict out, const T* const* src, int64_t count, int64_t c) { \
    int64_t k = 0;                                                                                  \
    for (; k + kLanes <= c; k += kLanes) {                                                          \
      U16 m = bits_of(src[0] + k);                                                                  \
      U16 nan = (m & kAbs) > kInf;                                                                  \
      for (int64_t i = 1; i < count; ++i) {                                                         \
        const U16 v = bits_of(src[i] + k);                                                          \
        F16 vf, mf;                                                                                 \
        std::memcpy(&vf, &v, sizeof vf);                                                            \
        std::memcpy(&mf, &m, sizeof mf);                                                            \
        const U16 take = reinterpret_cast<U16>(vf > mf);                                            \
        m = (v & take) | (m & ~take);                                                               \
        nan |= (v & kAbs) > kInf;                                                                   \
      }                                                                                             \
      store(out + k, (m & ~nan) | (nan & kNaN));                                                    \
    }                                                                                               \
  }
SEPP_MAX_OF(float)
SEPP_MAX_OF(c10::BFloat16)
#undef SEPP_MAX_OF

template <typename T>
void pool_channels_last(
    T* out,
    const T* in,
    int64_t n,
    int64_t c,
    std::array<int64_t, 2> in_hw,
    std::array<int64_t, 2> out_hw,
    std::array<int64_t, 2> kernel,
    std::array<int64_t, 2> stride,
    std::array<int64_t, 2> padding) {
  const int64_t pixels = n * out_hw[0] * out_hw[1];
  const int64_t grain = std::max<int64_t>(1, 16384 / (c * kernel[0] * kernel[1]));
  at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
    const T* src[kMaxWindow];
    for (int64_t p = begin; p < end; ++p) {
      const int64_t ow = p % out_hw[1], oh = (p / out_hw[1]) % out_hw[0], i = p / (out_hw[0] * out_hw[1]);
      // The window, clipped to the image: the output size guarantees it keeps at least one pixel.
      const int64_t h0 = oh * stride[0] - padding[0], w0 = ow * stride[1] - padding[1];
      const int64_t h1 = std::min(h0 + kernel[0], in_hw[0]), w1 = std::min(w0 + kernel[1], in_hw[1]);
      int64_t count = 0;
      for (int64_t h = std::max<int64_t>(h0, 0); h < h1; ++h) {
        for (int64_t w = std::max<int64_t>(w0, 0); w < w1; ++w)
          src[count++] = in + ((i * in_hw[0] + h) * in_hw[1] + w) * c;
      }
      max_of(out + p * c, src, count, c);
    }
  });
}

}  // namespace

at::Tensor max_pool2d(
    const at::Tensor& x,
    std::array<int64_t, 2> kernel,
    std::array<int64_t, 2> stride,
    std::array<int64_t, 2> padding,
    bool ceil_mode) {
  const auto dt = x.scalar_type();
  const bool ours = x.device().is_cpu() && x.dim() == 4 && (dt == at::kFloat || dt == at::kBFloat16) &&
                    x.is_contiguous(at::MemoryFormat::ChannelsLast) && x.size(1) % kLanes == 0 &&
                    kernel[0] * kernel[1] <= kMaxWindow && padding[0] * 2 <= kernel[0] && padding[1] * 2 <= kernel[1] &&
                    x.numel() > 0;
  if (!ours) return at::max_pool2d(x, kernel, stride, padding, {1, 1}, ceil_mode);
  const std::array<int64_t, 2> in_hw{x.size(2), x.size(3)};
  std::array<int64_t, 2> out_hw{};
  for (int d = 0; d < 2; ++d) {
    // An image smaller than a window is ATen's to refuse.
    if (in_hw[d] + 2 * padding[d] < kernel[d]) return at::max_pool2d(x, kernel, stride, padding, {1, 1}, ceil_mode);
    out_hw[d] = window_output_size(in_hw[d], kernel[d], stride[d], padding[d], 1, ceil_mode);
  }
  RECORD_FUNCTION("sepp::max_pool2d", std::vector<c10::IValue>({x}));  // named in torch.profiler's tables
  const int64_t n = x.size(0), c = x.size(1);
  auto out = at::empty({n, c, out_hw[0], out_hw[1]}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (dt == at::kFloat) {
    pool_channels_last(
        out.mutable_data_ptr<float>(), x.const_data_ptr<float>(), n, c, in_hw, out_hw, kernel, stride, padding);
  } else {
    using T = c10::BFloat16;
    pool_channels_last(out.mutable_data_ptr<T>(), x.const_data_ptr<T>(), n, c, in_hw, out_hw, kernel, stride, padding);
  }
  return out;
}

}  // namespace sepp::inference
