// sepp._C: the pybind11 bindings of libsepp. Only bindings live here; the Python package (python/sepp) wraps each
// C++ module in a torch.nn.Module that mirrors its parameters, buffers and children.

#include <sepp/sepp.h>

#include "observe_binding.h"
#include "options_binding.h"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/python.h>

#include <pybind11/stl.h>
#include <torch/csrc/Exceptions.h>

#include <exception>
#include <optional>
#include <sstream>
#include <type_traits>

namespace py = pybind11;
using torch::nn::Module;

namespace {

// C++ warnings (TORCH_WARN) raised during a call become Python warnings when it returns (torch's handler; told when
// an exception is on its way out, so that it does not throw over it).
class WarningsToPython {
 public:
  ~WarningsToPython() noexcept(false) {
    if (std::uncaught_exceptions() > uncaught_) handler_->set_in_exception();
    handler_.reset();
  }

 private:
  std::optional<torch::PyWarningHandler> handler_{std::in_place};
  int uncaught_ = std::uncaught_exceptions();
};

// The GIL released during the call, which is made after the warning handler is installed and ends before it reports.
constexpr auto kNoGil = py::call_guard<WarningsToPython, py::gil_scoped_release>();

std::string pretty(const Module& m) {
  std::ostringstream s;
  m.pretty_print(s);
  return s.str();
}

// forward() of the C++ modules a sepp model is made of, for submodules that have no class of their own in Python.
torch::Tensor forward_any(Module& m, const torch::Tensor& x) {
  if (auto* s = m.as<torch::nn::Sequential>()) return sepp::sequential_forward(*s, x);  // children observed
  if (auto* c = m.as<torch::nn::Conv2d>()) return c->forward(x);
  if (auto* b = m.as<torch::nn::BatchNorm2d>()) return b->forward(x);
  if (auto* l = m.as<torch::nn::Linear>()) return l->forward(x);
  if (auto* p = m.as<torch::nn::MaxPool2d>()) return p->forward(x);
  if (auto* p = m.as<torch::nn::AvgPool2d>()) return p->forward(x);
  if (auto* p = m.as<torch::nn::AdaptiveAvgPool2d>()) return p->forward(x);
  if (auto* r = m.as<torch::nn::ReLU>()) return r->forward(x);
  if (auto* f = m.as<torch::nn::Flatten>()) return f->forward(x);
  if (auto* i = m.as<torch::nn::Identity>()) return i->forward(x);
  if (auto* g = m.as<torch::nn::Sigmoid>()) return g->forward(x);
  if (auto* g = m.as<torch::nn::Tanh>()) return g->forward(x);
  if (auto* g = m.as<sepp::HardSigmoid>()) return g->forward(x);
  if (auto* se = m.as<sepp::SEBlock>()) return se->forward(x);
  if (auto* bb = m.as<sepp::BasicBlock>()) return bb->forward(x);
  if (auto* bt = m.as<sepp::Bottleneck>()) return bt->forward(x);
  if (auto* r = m.as<sepp::ResNet>()) return r->forward(x);
  TORCH_CHECK_TYPE(false, "sepp: the C++ module ", m.name(), " has no forward(Tensor) that sepp can call");
}

template <typename Impl>
using Class = py::class_<Impl, Module, std::shared_ptr<Impl>>;

using sepp::python::options_dict;

// A module class whose constructor takes its options by position (in visit() order) or by name, from `defaults`,
// with `options` (the dict of its options) and `options_spec()` ([(name, default, doc)]) for the Python face.
template <typename Impl, typename Options>
Class<Impl> bind_module(py::module_& m, const char* name, Options defaults) {
  Class<Impl> cls(m, name);
  cls.def(py::init([defaults, name](const py::args& args, const py::kwargs& kwargs) {
    return std::make_shared<Impl>(sepp::python::options_from_python(defaults, args, kwargs, name));
  }));
  cls.def_property_readonly("options", [](const Impl& self) { return options_dict(self.options); });
  cls.def_static("options_spec", [defaults] { return sepp::python::options_spec(defaults); });
  return cls;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sepp's C++ core (libsepp) bound with pybind11; use the `sepp` package, not this module directly.";
  py::module_::import("torch");  // registers torch._C.cpp.nn.Module, the base class of the classes below

  // c10 errors become the Python exception they name, without the C++ backtrace.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::NotImplementedError& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  sepp::python::bind_observe(m);

  bind_module<sepp::SEBlockImpl>(m, "SEBlock", sepp::SEBlockOptions())
      .def("forward", &sepp::SEBlockImpl::forward, kNoGil)
      .def("gate", &sepp::SEBlockImpl::gate, kNoGil);
  bind_module<sepp::BasicBlockImpl>(m, "BasicBlock", sepp::BlockOptions(0, 0))
      .def("forward", &sepp::BasicBlockImpl::forward, kNoGil);
  bind_module<sepp::BottleneckImpl>(m, "Bottleneck", sepp::BlockOptions(0, 0))
      .def("forward", &sepp::BottleneckImpl::forward, kNoGil);
  bind_module<sepp::ResNetImpl>(m, "ResNet", sepp::ResNetOptions())
      .def("forward", &sepp::ResNetImpl::forward, kNoGil)
      .def("forward_stem", &sepp::ResNetImpl::forward_stem, kNoGil)
      .def("forward_features", &sepp::ResNetImpl::forward_features, kNoGil)
      .def("forward_head", &sepp::ResNetImpl::forward_head, py::arg("x"), py::arg("pre_logits") = false, kNoGil)
      .def("forward_stages", &sepp::ResNetImpl::forward_stages, kNoGil)
      .def("forward_intermediates", &sepp::ResNetImpl::forward_intermediates, py::arg("x"), py::arg("indices"), kNoGil)
      .def("reset_classifier", &sepp::ResNetImpl::reset_classifier, py::arg("num_classes"))
      .def("reset_parameters", &sepp::ResNetImpl::reset_parameters)
      .def_property_readonly("num_features", &sepp::ResNetImpl::num_features)
      .def_property_readonly("stage_channels", &sepp::ResNetImpl::stage_channels);

  py::class_<sepp::OptimizedResNet>(m, "OptimizedResNet")
      .def("forward", &sepp::OptimizedResNet::forward, py::arg("x"), kNoGil)
      .def_property_readonly("backend", &sepp::OptimizedResNet::backend)
      .def_property_readonly("num_features", &sepp::OptimizedResNet::num_features)
      .def_property_readonly("cuda_graphs_captured", &sepp::OptimizedResNet::cuda_graphs_captured)
      .def_property_readonly("activation_bytes", &sepp::OptimizedResNet::activation_bytes)
      .def_property_readonly(
          "options", [](const sepp::OptimizedResNet& self) { return options_dict(self.model_options()); });
  m.def(
      "optimize_for_inference",
      [](const std::shared_ptr<sepp::ResNetImpl>& model, const std::string& dtype, std::vector<int64_t> input_size,
         bool cuda_graphs) {
        static const std::pair<const char*, c10::ScalarType> kDtypes[] = {
            {"float32", at::kFloat}, {"bfloat16", at::kBFloat16}, {"float16", at::kHalf}, {"float64", at::kDouble}};
        sepp::InferenceOptions o;
        for (const auto& [name, t] : kDtypes)
          if (dtype == name) o.dtype(t);
        TORCH_CHECK_TYPE(
            dtype.empty() || o.dtype().has_value(),
            "optimize_for_inference: expected dtype float32, bfloat16, float16 or float64, got ", dtype);
        o.input_size(std::move(input_size));
        o.cuda_graphs(cuda_graphs);
        WarningsToPython warnings;
        py::gil_scoped_release no_gil;
        return sepp::optimize_for_inference(sepp::ResNet(model), o);
      },
      py::arg("model"), py::arg("dtype") = "", py::arg("input_size") = std::vector<int64_t>{},
      py::arg("cuda_graphs") = true);

  m.def("model_names", &sepp::model_names, "Names of the models in the factory table.");
  m.def("model_description", &sepp::model_description, py::arg("name"), "One line on a named model.");
  m.def(
      "model_config", [](const std::string& name) { return options_dict(sepp::model_config(name)); }, py::arg("name"),
      "The ResNet keyword arguments of a named model.");
  m.def("pretty_print", &pretty, py::arg("module"), "The one-line description a C++ module prints of itself.");
  m.def("forward", &forward_any, py::arg("module"), py::arg("x"), kNoGil);
  m.def(
      "save_weights", static_cast<void (*)(const Module&, const std::string&)>(&sepp::save_weights), py::arg("module"),
      py::arg("path"), kNoGil, "Writes the module's parameters and buffers as safetensors, atomically (C++ writer).");
  m.def(
      "load_weights", static_cast<void (*)(Module&, const std::string&)>(&sepp::load_weights), py::arg("module"),
      py::arg("path"), kNoGil, "Loads a safetensors file into the module after checking all of it (C++ reader).");
  m.def(
      "read_safetensors",
      [](const std::string& path) {
        py::dict d;
        for (auto& [name, t] : sepp::read_safetensors(path)) d[py::str(name)] = t;
        return d;
      },
      py::arg("path"), "The tensors of a safetensors file, through the C++ reader.");
  m.def(
      "kernel_checks",
      [] {
        py::list out;
        for (const auto& c : sepp::ops::kernel_checks()) {
          py::dict d;
          d["op"] = c.op;
          d["device"] = c.device;
          d["dtype"] = c.dtype;
          d["state"] = c.state;
          d["error"] = c.error;
          out.append(d);
        }
        return out;
      },
      "The self-checks of sepp's kernels this process has run (see sepp.ops.kernel_checks).");
  m.def(
      "check_kernels",
      [](const torch::Device& device, const torch::Dtype dtype) { sepp::ops::check_kernels(device, dtype); },
      py::arg("device"), py::arg("dtype"), kNoGil);
  m.def(
      "_configure_kernel_checks_for_testing", &sepp::ops::configure_kernel_checks_for_testing, py::arg("check_cpu"),
      py::arg("fault_op"));
  m.def("build_info", [] {
    const auto info = sepp::build_info();
    py::dict d;
    d["version"] = info.version;
    d["torch_version"] = info.torch_version;
    d["cuda"] = info.cuda;
    d["cuda_version"] = info.cuda ? py::object(py::str(info.cuda_version)) : py::object(py::none());
    d["openmp"] = info.openmp;
    return d;
  });
}
