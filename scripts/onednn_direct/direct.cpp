// One convolution (ReLU post-op, channels_last activations, weights in oneDNN's chosen layout) straight through a
// system oneDNN: the primitive is built once, so a call is only its execution. Compiled without torch's headers,
// which carry a different oneDNN's dnnl.hpp.
#include <dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <vector>

#include "shapes.h"

namespace {

using tag = dnnl::memory::format_tag;

dnnl::memory filled(const dnnl::memory::desc& md, const dnnl::engine& eng) {
  dnnl::memory m(md, eng);
  std::fill_n(static_cast<char*>(m.get_data_handle()), md.get_size(), 0);
  return m;
}

}  // namespace

double direct_median_us(const ConvShape& c, bool bf16, bool fresh_output, int reps) {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  static dnnl::stream s(eng);
  const auto dt = bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  const dnnl::memory::dim pad = c.k / 2;
  const dnnl::memory::desc src({c.n, c.c, c.hw, c.hw}, dt, tag::nhwc), dst({c.n, c.k_out, c.hw, c.hw}, dt, tag::nhwc);
  const dnnl::memory::desc wei({c.k_out, c.c, c.k, c.k}, dt, tag::any), bias({c.k_out}, dt, tag::a);
  dnnl::post_ops po;
  po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  const dnnl::convolution_forward::desc d(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, wei, bias, dst, {1, 1}, {pad, pad},
      {pad, pad});
  const dnnl::convolution_forward::primitive_desc pd(d, attr, eng);
  auto sm = filled(src, eng), wm = filled(pd.weights_desc(), eng), bm = filled(bias, eng), dm = filled(dst, eng);
  const dnnl::convolution_forward conv(pd);
  std::vector<double> t;
  for (int i = 0; i < reps + reps / 10; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    if (fresh_output) dm = dnnl::memory(dst, eng);  // a new output buffer each call, as ATen allocates one
    conv.execute(s, {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_BIAS, bm}, {DNNL_ARG_DST, dm}});
    s.wait();
    const auto t1 = std::chrono::steady_clock::now();
    if (i >= reps / 10) t.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}
