// sepp's CPU kernels through the C++ operator entry points (sepp/ops.h) at odd sizes, against the same computation in
// float64 ATen: H x W of 1, 7 and 13 x 17; channel counts below, at and off the vector widths; batch 1 and 3;
// contiguous and channels_last; float64, float32, bfloat16 and float16. Under the sanitizer build (SEPP_SANITIZE) these
// are the cases that walk every loop's head, body and tail, so that a read or write one element out of bounds is
// reported.

#include <sepp/ops.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

namespace {

const std::vector<at::ScalarType> kDtypes = {torch::kDouble, torch::kFloat, torch::kBFloat16, torch::kHalf};
const std::vector<int64_t> kBatches = {1, 3};
const std::vector<int64_t> kChannels = {1, 5, 19, 32, 37};
const std::vector<std::pair<int64_t, int64_t>> kPlanes = {{1, 1}, {7, 7}, {13, 17}};
const std::vector<at::MemoryFormat> kLayouts = {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast};

// Tolerance of an operator's result in `dt`, as a fraction of the largest reference value: a few roundings.
double tolerance(at::ScalarType dt) {
  switch (dt) {
    case torch::kDouble:
      return 1e-10;
    case torch::kFloat:
      return 2e-5;
    case torch::kHalf:
      return 4e-3;
    default:
      return 2e-2;
  }
}

std::string describe(
    const std::string& op, at::ScalarType dt, at::IntArrayRef size, std::optional<at::MemoryFormat> layout = {}) {
  std::string s = op + " " + std::string(c10::toString(dt)) + " [";
  for (size_t i = 0; i < size.size(); ++i) s += (i ? "," : "") + std::to_string(size[i]);
  s += "]";
  if (layout) s += *layout == at::MemoryFormat::ChannelsLast ? " channels_last" : " contiguous";
  return s;
}

// got (any dtype) against want (float64): same shape, no NaN where want has none, max error within the tolerance.
void expect_close(
    const at::Tensor& got, const at::Tensor& want, at::ScalarType dt, const std::string& what, double roundings = 1) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const auto g = got.to(torch::kDouble);
  EXPECT_TRUE(torch::equal(g.isnan(), want.isnan())) << what << ": NaN in different places";
  const auto finite = want.isnan().logical_not();
  if (!finite.any().item<bool>()) return;
  const double scale = std::max(1.0, want.masked_select(finite).abs().max().item<double>());
  const double err = (g - want).masked_select(finite).abs().max().item<double>();
  EXPECT_LE(err, roundings * tolerance(dt) * scale)
      << what << ": max error " << err << " against a largest value of " << scale;
}

// A random tensor of `size` in `dt` and `layout`; values exactly representable in dt, so float64 sees the same inputs.
at::Tensor input(at::IntArrayRef size, at::ScalarType dt, at::MemoryFormat layout = at::MemoryFormat::Contiguous) {
  return torch::randn(size, torch::kDouble).to(dt).contiguous(layout);
}

template <typename Fn>
void for_each_case(Fn fn) {
  for (const auto dt : kDtypes)
    for (const auto n : kBatches)
      for (const auto c : kChannels)
        for (const auto& [h, w] : kPlanes)
          for (const auto layout : kLayouts) fn(dt, n, c, h, w, layout);
}

}  // namespace

TEST(CpuKernelsAtOddSizes, SeScaleMatchesFloat64WithAndWithoutIdentityAndRelu) {
  torch::manual_seed(0);
  for_each_case([](at::ScalarType dt, int64_t n, int64_t c, int64_t h, int64_t w, at::MemoryFormat layout) {
    const auto x = input({n, c, h, w}, dt, layout);
    const auto idn = input({n, c, h, w}, dt, layout);
    const auto s = torch::rand({n, c}, torch::kDouble).to(dt);
    const auto s4 = s.to(torch::kDouble).view({n, c, 1, 1});
    for (const bool with_identity : {false, true}) {
      for (const bool relu : {false, true}) {
        const auto what =
            describe("se_scale", dt, x.sizes(), layout) + (with_identity ? " +identity" : "") + (relu ? " relu" : "");
        auto want = x.to(torch::kDouble) * s4;
        if (with_identity) want = want + idn.to(torch::kDouble);
        if (relu) want = torch::relu(want);
        const auto id = with_identity ? std::optional<at::Tensor>(idn) : std::nullopt;
        const auto y = sepp::ops::se_scale(x, s, id, relu);
        EXPECT_EQ(y.scalar_type(), dt) << what;
        EXPECT_TRUE(y.is_contiguous(layout)) << what << ": the output left the input's layout";
        expect_close(y, want, dt, what);
        // In place, with the scale in x's dtype and (for half precision) in float32, as the inference tail runs it.
        for (const auto sdt : {dt, torch::kFloat}) {
          if (sdt == torch::kFloat && dt != torch::kBFloat16 && dt != torch::kHalf) continue;
          auto xi = x.clone(layout);
          const auto ptr = xi.data_ptr();
          sepp::ops::se_scale_(xi, s.to(sdt), id, relu);
          EXPECT_EQ(xi.data_ptr(), ptr) << what << " in place";
          expect_close(xi, want, dt, what + " in place, scale " + c10::toString(sdt));
        }
      }
    }
  });
}

TEST(CpuKernelsAtOddSizes, SeScaleGradientsMatchFloat64) {
  torch::manual_seed(1);
  for_each_case([](at::ScalarType dt, int64_t n, int64_t c, int64_t h, int64_t w, at::MemoryFormat layout) {
    const auto what = describe("se_scale backward", dt, {n, c, h, w}, layout);
    const auto x = input({n, c, h, w}, dt, layout).requires_grad_();
    const auto idn = input({n, c, h, w}, dt, layout).requires_grad_();
    const auto s = torch::rand({n, c}, torch::kDouble).to(dt).requires_grad_();
    const auto g = input({n, c, h, w}, dt, layout);
    const auto grads = torch::autograd::grad({sepp::ops::se_scale(x, s, idn, true)}, {x, s, idn}, {g});
    const auto x64 = x.detach().to(torch::kDouble).requires_grad_();
    const auto s64 = s.detach().to(torch::kDouble).requires_grad_();
    const auto i64 = idn.detach().to(torch::kDouble).requires_grad_();
    const auto want = torch::autograd::grad(
        {torch::relu(x64 * s64.view({n, c, 1, 1}) + i64)}, {x64, s64, i64}, {g.to(torch::kDouble)});
    // ds sums H x W products: its rounding grows with the plane, so it is held to a tolerance of the sum's magnitude.
    expect_close(grads[0], want[0], dt, what + " dx");
    expect_close(grads[1], want[1], dt, what + " dscale");
    expect_close(grads[2], want[2], dt, what + " didentity");
  });
}

TEST(CpuKernelsAtOddSizes, SeSqueezeAndItsBackwardMatchFloat64) {
  torch::manual_seed(2);
  for_each_case([](at::ScalarType dt, int64_t n, int64_t c, int64_t h, int64_t w, at::MemoryFormat layout) {
    const auto x = input({n, c, h, w}, dt, layout);
    const auto what = describe("se_squeeze", dt, x.sizes(), layout);
    const auto want = x.to(torch::kDouble).mean({2, 3});
    const auto z = sepp::ops::se_squeeze(x);
    EXPECT_EQ(z.scalar_type(), dt) << what;
    expect_close(z, want, dt, what);
    const auto z32 = sepp::ops::se_squeeze(x, torch::kFloat);
    EXPECT_EQ(z32.scalar_type(), torch::kFloat) << what;
    expect_close(z32, want, dt == torch::kDouble ? torch::kFloat : dt, what + " into float32");

    const auto grad = input({n, c}, dt);
    const bool cl = layout == at::MemoryFormat::ChannelsLast;
    const auto dx = sepp::ops::se_squeeze_backward(grad, x.sizes(), dt, cl);
    EXPECT_EQ(dx.scalar_type(), dt) << what;
    EXPECT_TRUE(dx.is_contiguous(layout)) << what << " backward: not in the asked layout";
    const auto want_dx = (grad.to(torch::kDouble) / double(h * w)).view({n, c, 1, 1}).expand({n, c, h, w});
    expect_close(dx, want_dx, dt, what + " backward");
  });
}

TEST(CpuKernelsAtOddSizes, SeExciteAndItsBackwardMatchFloat64) {
  torch::manual_seed(3);
  for (const auto dt : kDtypes) {
    for (const int64_t n : {1, 2, 3, 5}) {
      for (const int64_t c : kChannels) {
        for (const std::string gate : {"sigmoid", "hard_sigmoid", "tanh"}) {
          for (const bool bias : {false, true}) {
            const int64_t r = std::max<int64_t>(1, c / 4);
            const auto what = describe("se_excite " + gate + (bias ? " with biases" : ""), dt, {n, c});
            const auto z = input({n, c}, dt).requires_grad_();
            const auto w1 = input({r, c}, dt).requires_grad_(), w2 = input({c, r}, dt).requires_grad_();
            const auto b1 = bias ? std::optional<at::Tensor>(input({r}, dt)) : std::nullopt;
            const auto b2 = bias ? std::optional<at::Tensor>(input({c}, dt)) : std::nullopt;
            const auto s = sepp::ops::se_excite(z, w1, b1, w2, b2, gate);
            EXPECT_EQ(s.scalar_type(), dt) << what;

            auto d = [](const at::Tensor& t) { return t.detach().to(torch::kDouble).requires_grad_(); };
            const auto z64 = d(z), w164 = d(w1), w264 = d(w2);
            auto a = torch::relu(torch::matmul(z64, w164.t()) + (bias ? b1->to(torch::kDouble) : torch::zeros({r})));
            a = torch::matmul(a, w264.t()) + (bias ? b2->to(torch::kDouble) : torch::zeros({c}));
            const auto want = gate == "sigmoid"        ? torch::sigmoid(a)
                              : gate == "hard_sigmoid" ? torch::clamp(a + 3.0, 0.0, 6.0) / 6.0
                                                       : torch::tanh(a);
            expect_close(s, want, dt, what);

            const auto g = torch::rand({n, c}, torch::kDouble).to(dt);
            const auto grads = torch::autograd::grad({s}, {z, w1, w2}, {g});
            const auto want_grads = torch::autograd::grad({want}, {z64, w164, w264}, {g.to(torch::kDouble)});
            // The backward rounds s, the gate's derivative and the hidden activation to dt before each product:
            // in half precision that is a few roundings more than the forward, hence three times its tolerance.
            const double roundings = dt == torch::kBFloat16 || dt == torch::kHalf ? 3 : 1;
            for (size_t i = 0; i < grads.size(); ++i) {
              expect_close(grads[i], want_grads[i], dt, what + " gradient " + std::to_string(i), roundings);
            }
          }
        }
      }
    }
  }
}

// An NaN in the input stays NaN through every kernel, as it does through ATen's operators (relu keeps NaN).
TEST(CpuKernelsAtOddSizes, NaNPropagatesThroughTheKernels) {
  for (const auto dt : kDtypes) {
    for (const auto layout : kLayouts) {
      auto x = torch::ones({3, 19, 7, 5}, torch::kDouble);
      x.index_put_({1, 4, 3, 2}, std::nan(""));
      x = x.to(dt).contiguous(layout);
      const auto what = describe("NaN", dt, x.sizes(), layout);
      const auto y = sepp::ops::se_scale(x, torch::full({3, 19}, 0.5, x.options()), x, true);
      EXPECT_TRUE(y.index({1, 4, 3, 2}).isnan().item<bool>()) << what << ": se_scale lost the NaN";
      EXPECT_EQ(y.isnan().sum().item<int64_t>(), 1) << what;
      const auto z = sepp::ops::se_squeeze(x);
      EXPECT_TRUE(z.index({1, 4}).isnan().item<bool>()) << what << ": se_squeeze lost the NaN";
      EXPECT_EQ(z.isnan().sum().item<int64_t>(), 1) << what;
    }
  }
}
