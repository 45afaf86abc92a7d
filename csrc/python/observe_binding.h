#pragma once

// The Python side of sepp/observe.h: an observer that hands each marked module to a Python function (which runs
// torch.nn's hooks around the C++ computation), and what the Python face needs to mirror the leaf modules as
// genuine torch.nn modules (their options).

#include <sepp/observe.h>
#include <sepp/se_block.h>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/python.h>

#include <pybind11/stl.h>

#include <memory>
#include <variant>

namespace sepp::python {

namespace py = pybind11;

/// The C++ computation of an observation point, callable once from Python while its observer runs.
class PyContinuation {
 public:
  PyContinuation(Continuation compute, std::shared_ptr<bool> alive) : compute_(compute), alive_(std::move(alive)) {}

  torch::Tensor operator()(const torch::Tensor& x) const {
    TORCH_CHECK(
        *alive_, "sepp: an observation point's computation was called after its observer returned (a hook kept it)");
    py::gil_scoped_release no_gil;
    return compute_(x);
  }

 private:
  Continuation compute_;
  std::shared_ptr<bool> alive_;
};

inline uintptr_t module_address(const torch::nn::Module& m) {
  return reinterpret_cast<uintptr_t>(&m);
}

/// observer(address, x, continuation) -> Tensor, called with the GIL for each marked module; None removes it.
inline void set_python_observer(const py::object& observer) {
  if (observer.is_none()) {
    set_observer({});
    return;
  }
  // Owned for the life of the process: an observer may still run in a thread during interpreter exit.
  auto* fn = new py::object(observer);
  set_observer([fn](const torch::nn::Module& m, const torch::Tensor& x, Continuation compute) -> torch::Tensor {
    py::gil_scoped_acquire gil;
    auto alive = std::make_shared<bool>(true);
    struct Expire {
      std::shared_ptr<bool> alive;
      ~Expire() { *alive = false; }
    } expire{alive};
    py::object out = (*fn)(module_address(m), x, PyContinuation(compute, alive));
    return out.cast<torch::Tensor>();
  });
}

template <size_t N>
py::tuple to_tuple(const torch::ExpandingArray<N>& a) {
  py::tuple t(N);
  for (size_t i = 0; i < N; ++i) t[i] = (*a)[i];
  return t;
}

/// (torch.nn class name, its constructor's keywords) of a leaf module, or None for modules sepp mirrors itself.
inline py::object leaf_spec(const torch::nn::Module& m) {
  using namespace pybind11::literals;
  namespace nn = torch::nn;
  if (const auto* c = m.as<nn::Conv2d>()) {
    const auto& o = c->options;
    const auto* padding = std::get_if<torch::ExpandingArray<2>>(&o.padding());
    TORCH_CHECK(
        padding && std::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()),
        "sepp: a Conv2d with string padding or non-zero padding mode has no mirror");
    return py::make_tuple(
        "Conv2d", py::dict(
                      "in_channels"_a = o.in_channels(), "out_channels"_a = o.out_channels(),
                      "kernel_size"_a = to_tuple(o.kernel_size()), "stride"_a = to_tuple(o.stride()),
                      "padding"_a = to_tuple(*padding), "dilation"_a = to_tuple(o.dilation()), "groups"_a = o.groups(),
                      "bias"_a = o.bias()));
  }
  if (const auto* b = m.as<nn::BatchNorm2d>()) {
    const auto& o = b->options;
    return py::make_tuple(
        "BatchNorm2d", py::dict(
                           "num_features"_a = o.num_features(), "eps"_a = o.eps(),
                           "momentum"_a = o.momentum() ? py::object(py::float_(*o.momentum())) : py::none(),
                           "affine"_a = o.affine(), "track_running_stats"_a = o.track_running_stats()));
  }
  if (const auto* l = m.as<nn::Linear>()) {
    const auto& o = l->options;
    return py::make_tuple(
        "Linear",
        py::dict("in_features"_a = o.in_features(), "out_features"_a = o.out_features(), "bias"_a = o.bias()));
  }
  if (const auto* r = m.as<nn::ReLU>()) {
    return py::make_tuple("ReLU", py::dict("inplace"_a = r->options.inplace()));
  }
  if (const auto* p = m.as<nn::MaxPool2d>()) {
    const auto& o = p->options;
    return py::make_tuple(
        "MaxPool2d",
        py::dict(
            "kernel_size"_a = to_tuple(o.kernel_size()), "stride"_a = to_tuple(o.stride()),
            "padding"_a = to_tuple(o.padding()), "dilation"_a = to_tuple(o.dilation()), "ceil_mode"_a = o.ceil_mode()));
  }
  if (const auto* p = m.as<nn::AvgPool2d>()) {
    const auto& o = p->options;
    return py::make_tuple(
        "AvgPool2d",
        py::dict(
            "kernel_size"_a = to_tuple(o.kernel_size()), "stride"_a = to_tuple(o.stride()),
            "padding"_a = to_tuple(o.padding()), "ceil_mode"_a = o.ceil_mode(),
            "count_include_pad"_a = o.count_include_pad(),
            "divisor_override"_a = o.divisor_override() ? py::object(py::int_(*o.divisor_override())) : py::none()));
  }
  if (const auto* p = m.as<nn::AdaptiveAvgPool2d>()) {
    const auto& size = *p->options.output_size();
    TORCH_CHECK(size[0].has_value() && size[1].has_value(), "sepp: an AdaptiveAvgPool2d of open size has no mirror");
    const int64_t h = *size[0], w = *size[1];
    return py::make_tuple(
        "AdaptiveAvgPool2d", py::dict("output_size"_a = h == w ? py::object(py::int_(h)) : py::make_tuple(h, w)));
  }
  if (const auto* f = m.as<nn::Flatten>()) {
    return py::make_tuple(
        "Flatten", py::dict("start_dim"_a = f->options.start_dim(), "end_dim"_a = f->options.end_dim()));
  }
  if (m.as<nn::Identity>()) return py::make_tuple("Identity", py::dict());
  if (m.as<nn::Sigmoid>()) return py::make_tuple("Sigmoid", py::dict());
  if (m.as<nn::Tanh>()) return py::make_tuple("Tanh", py::dict());
  if (m.as<sepp::HardSigmoid>()) return py::make_tuple("Hardsigmoid", py::dict());
  return py::none();
}

inline void bind_observe(py::module_& m) {
  py::class_<PyContinuation>(m, "Continuation", "The C++ computation at an observation point (valid during its call).")
      .def("__call__", &PyContinuation::operator(), py::arg("x"));
  m.def(
      "set_observer", &set_python_observer, py::arg("observer"),
      "observer(address, x, continuation) -> Tensor for each marked module; None removes it.");
  m.def(
      "observe", [](const torch::nn::Module& module, bool on) { sepp::observe(module, on); }, py::arg("module"),
      py::arg("on"), "Marks (or unmarks) a C++ module as an observation point.");
  m.def("is_observed", [](const torch::nn::Module& module) { return sepp::is_observed(module); }, py::arg("module"));
  m.def(
      "module_address", [](const torch::nn::Module& module) { return module_address(module); }, py::arg("module"),
      "The identity the observer receives for the module.");
  m.def(
      "leaf_spec", &leaf_spec, py::arg("module"),
      "(torch.nn class name, constructor keywords) of a leaf C++ module, or None.");
}

}  // namespace sepp::python
