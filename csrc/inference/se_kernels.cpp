// CPU kernels of the SE block's squeeze and tail for optimize_for_inference. Plain loops with fixed-width inner
// blocks that GCC / Clang vectorise; target_clones builds them for x86-64-v4 (AVX-512), v3 (AVX2 + FMA) and the
// baseline, chosen once at load time.

#include "inference/se_kernels.h"

#include <sepp/ops.h>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>

#include <algorithm>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SEPP_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SEPP_MULTIVERSION
#endif

namespace sepp::inference {
namespace {

constexpr int64_t kBlock = 64;  // channels per accumulator block: 8 AVX2 / 4 AVX-512 registers of float

inline float to_float(float v) {
  return v;
}
inline float to_float(c10::BFloat16 v) {
  return static_cast<float>(v);
}

// The leaves are plain (non-template, non-lambda) functions, so that target_clones versions each of them; the
// templates below only call them.
//   sum_block: the sums over `rows` rows of a [rows, c] matrix of channels [0, kBlock) from `u` on;
//   tail_rows: rows of u <- relu(u * s + id), s one row of c scales.
#define SEPP_SE_LEAVES(T, SUFFIX)                                                                                  \
  SEPP_MULTIVERSION void sum_block_##SUFFIX(const T* __restrict u, int64_t c, int64_t rows, float* __restrict acc) { \
    float a[kBlock] = {};                                                                                          \
    for (int64_t r = 0; r < rows; ++r) {                                                                           \
      const T* __restrict row = u + r * c;                                                                         \
      for (int64_t k = 0; k < kBlock; ++k) a[k] += to_float(row[k]);                                               \
    }                                                                                                              \
    for (int64_t k = 0; k < kBlock; ++k) acc[k] = a[k];                                                            \
  }                                                                                                                \
  SEPP_MULTIVERSION void tail_rows_##SUFFIX(                                                                       \
      T* __restrict u, const float* __restrict s, const T* __restrict id, int64_t rows, int64_t c) {               \
    for (int64_t r = 0; r < rows; ++r) {                                                                           \
      T* __restrict row = u + r * c;                                                                               \
      const T* __restrict irow = id + r * c;                                                                       \
      for (int64_t k = 0; k < c; ++k) {                                                                            \
        const float v = to_float(row[k]) * s[k] + to_float(irow[k]);                                               \
        row[k] = static_cast<T>(std::max(v, 0.0f)); /* keeps NaN, as torch.relu does */                          \
      }                                                                                                            \
    }                                                                                                              \
  }                                                                                                                \
  inline void sum_block(const T* u, int64_t c, int64_t rows, float* acc) {                                         \
    sum_block_##SUFFIX(u, c, rows, acc);                                                                           \
  }                                                                                                                \
  inline void tail_rows(T* u, const float* s, const T* id, int64_t rows, int64_t c) {                              \
    tail_rows_##SUFFIX(u, s, id, rows, c);                                                                         \
  }

SEPP_SE_LEAVES(float, f32)
SEPP_SE_LEAVES(c10::BFloat16, bf16)
#undef SEPP_SE_LEAVES

template <typename T>
void channel_mean_kernel(const T* u, float* out, int64_t n, int64_t hw, int64_t c) {
  const int64_t blocks = c / kBlock;
  const float inv = 1.0f / static_cast<float>(hw);
  at::parallel_for(0, n * (blocks + 1), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i = b / (blocks + 1), blk = b % (blocks + 1);
      const T* ui = u + i * hw * c;
      float* oi = out + i * c;
      if (blk < blocks) {
        float acc[kBlock];
        sum_block(ui + blk * kBlock, c, hw, acc);
        for (int64_t k = 0; k < kBlock; ++k) oi[blk * kBlock + k] = acc[k] * inv;
      } else {
        for (int64_t k = blocks * kBlock; k < c; ++k) {  // the channels past the last full block
          float a = 0.f;
          for (int64_t r = 0; r < hw; ++r) a += to_float(ui[r * c + k]);
          oi[k] = a * inv;
        }
      }
    }
  });
}

template <typename T>
void scale_add_relu_kernel(T* u, const float* s, const T* id, int64_t n, int64_t hw, int64_t c) {
  const int64_t grain = std::max<int64_t>(1, 32768 / c);
  at::parallel_for(0, n * hw, grain, [&](int64_t r0, int64_t r1) {
    while (r0 < r1) {  // split at sample boundaries: one row of scales per sample
      const int64_t i = r0 / hw, stop = std::min(r1, (i + 1) * hw);
      tail_rows(u + r0 * c, s + i * c, id + r0 * c, stop - r0, c);
      r0 = stop;
    }
  });
}

bool fast_layout(const at::Tensor& t) {
  return t.device().is_cpu() && t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16);
}

}  // namespace

at::Tensor channel_mean(const at::Tensor& u, at::ScalarType acc) {
  if (!fast_layout(u) || acc != at::kFloat || u.numel() == 0) return ops::se_squeeze(u, acc);
  const int64_t n = u.size(0), c = u.size(1), hw = u.size(2) * u.size(3);
  auto out = at::empty({n, c}, u.options().dtype(at::kFloat));
  if (u.scalar_type() == at::kFloat) {
    channel_mean_kernel(u.const_data_ptr<float>(), out.mutable_data_ptr<float>(), n, hw, c);
  } else {
    channel_mean_kernel(u.const_data_ptr<c10::BFloat16>(), out.mutable_data_ptr<float>(), n, hw, c);
  }
  return out;
}

at::Tensor scale_add_relu_(at::Tensor u, const at::Tensor& s, const at::Tensor& identity) {
  const bool fast = fast_layout(u) && identity.scalar_type() == u.scalar_type() && identity.sizes() == u.sizes() &&
                    identity.is_contiguous(at::MemoryFormat::ChannelsLast) && s.scalar_type() == at::kFloat &&
                    s.is_contiguous() && s.numel() == u.size(0) * u.size(1) && u.numel() > 0;
  if (!fast) return ops::se_scale(u, s.to(u.scalar_type()).reshape({u.size(0), u.size(1)}), identity, true);
  const int64_t n = u.size(0), c = u.size(1), hw = u.size(2) * u.size(3);
  if (u.scalar_type() == at::kFloat) {
    scale_add_relu_kernel(u.mutable_data_ptr<float>(), s.const_data_ptr<float>(), identity.const_data_ptr<float>(),
                          n, hw, c);
  } else {
    scale_add_relu_kernel(u.mutable_data_ptr<c10::BFloat16>(), s.const_data_ptr<float>(),
                          identity.const_data_ptr<c10::BFloat16>(), n, hw, c);
  }
  return u;
}

}  // namespace sepp::inference
