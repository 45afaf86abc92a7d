// The same convolutions as direct.cpp, the way sepp's optimized model runs them: ATen's fused oneDNN convolution
// (mkldnn::_convolution_pointwise, ReLU), its weights packed once for the input shape, a new output each call. Prints
// both, median microseconds a call, in one process and on the same OpenMP threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

#include "inference/onednn.h"  // sepp's signature of the fused convolution
#include "shapes.h"

namespace {

using sepp::inference::Scalars;
using sepp::inference::UnaryConvFn;

double aten_median_us(const ConvShape& c, bool bf16, int reps) {
  static const auto conv =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_convolution_pointwise", "").typed<UnaryConvFn>();
  const auto dt = bf16 ? at::kBFloat16 : at::kFloat;
  const int64_t pad = c.k / 2;
  const std::vector<int64_t> p{pad, pad}, one{1, 1};
  const auto x = at::randn({c.n, c.c, c.hw, c.hw}).to(dt).contiguous(at::MemoryFormat::ChannelsLast);
  const auto w = at::mkldnn_reorder_conv2d_weight(
      (at::randn({c.k_out, c.c, c.k, c.k}) * 0.05).to(dt).to_mkldnn(), p, one, one, 1, x.sizes());
  const auto b = at::randn({c.k_out}).to(dt);
  std::vector<double> t;
  for (int i = 0; i < reps + reps / 10; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto y = conv.call(x, w, b, p, one, one, 1, "relu", Scalars(), std::nullopt);
    const auto t1 = std::chrono::steady_clock::now();
    if (i >= reps / 10) t.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 300;
  at::set_num_threads(threads);
  at::InferenceMode guard;
  const ConvShape shapes[] = {{1, 16, 4, 3, 16},     {1, 64, 56, 3, 64},    {1, 128, 28, 3, 128},
                              {1, 256, 14, 3, 256},  {1, 512, 7, 3, 512},   {1, 256, 56, 1, 64},
                              {1, 1024, 14, 1, 256}, {16, 256, 14, 3, 256}, {16, 1024, 14, 1, 256}};
  std::printf(
      "| batch | in | size | kernel | out | dtype | ATen us | direct, new output us | direct, one output us |"
      " ATen / direct |\n|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n");
  for (const auto& c : shapes)
    for (const bool bf16 : {false, true}) {
      const double a = aten_median_us(c, bf16, reps);
      const double fresh = direct_median_us(c, bf16, true, reps);
      const double reused = direct_median_us(c, bf16, false, reps);
      std::printf(
          "| %lld | %lld | %lld | %lld | %lld | %s | %.0f | %.0f | %.0f | %.2f |\n", (long long)c.n, (long long)c.c,
          (long long)c.hw, (long long)c.k, (long long)c.k_out, bf16 ? "bfloat16" : "float32", a, fresh, reused,
          a / reused);
    }
}
