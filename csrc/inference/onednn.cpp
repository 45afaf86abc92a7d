#include "inference/onednn.h"

#include <ATen/Context.h>

namespace sepp::inference {

const OneDnnOps& onednn_ops() {
  static const OneDnnOps ops = [] {
    OneDnnOps o;
    if (!at::hasMKLDNN()) return o;
    auto& d = c10::Dispatcher::singleton();
    auto u = d.findSchema({"mkldnn::_convolution_pointwise", ""});
    auto b = d.findSchema({"mkldnn::_convolution_pointwise", "binary"});
    auto bf = d.findSchema({"mkldnn::_is_mkldnn_bf16_supported", ""});
    if (!u || !b) return o;
    o.unary = u->typed<UnaryConvFn>();
    o.binary = b->typed<BinaryConvFn>();
    o.bf16 = bf && bf->typed<bool()>().call();
    return o;
  }();
  return ops;
}

}  // namespace sepp::inference
