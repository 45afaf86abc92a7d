// sepp._C: the pybind11 bindings of libsepp. Only bindings live here; the Python package (python/sepp) wraps each
// C++ module in a torch.nn.Module that mirrors its parameters, buffers and children.

#include <sepp/sepp.h>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/python.h>

#include <pybind11/stl.h>

#include <optional>
#include <sstream>
#include <type_traits>

namespace py = pybind11;
using torch::nn::Module;

namespace {

constexpr auto kNoGil = py::call_guard<py::gil_scoped_release>();

int64_t zero_if_none(const std::optional<int64_t>& v) {
  return v.value_or(0);
}

py::object none_if_zero(int64_t v) {
  return v == 0 ? py::object(py::none()) : py::object(py::int_(v));
}

sepp::SEBlockOptions se_options(
    int64_t channels,
    int64_t reduction,
    std::optional<int64_t> rd_channels,
    std::optional<int64_t> rd_divisor,
    const std::string& squeeze,
    const std::string& gate,
    bool bias) {
  return sepp::SEBlockOptions(channels)
      .reduction(reduction)
      .rd_channels(zero_if_none(rd_channels))
      .rd_divisor(zero_if_none(rd_divisor))
      .squeeze(squeeze)
      .gate(gate)
      .bias(bias);
}

// The SE options under the keyword names the Python constructors take (`se_bias` for blocks and ResNet).
void put_se_options(py::dict& d, const sepp::SEBlockOptions& o, const char* bias_key) {
  d["reduction"] = o.reduction();
  d["rd_channels"] = none_if_zero(o.rd_channels());
  d["rd_divisor"] = none_if_zero(o.rd_divisor());
  d["squeeze"] = o.squeeze();
  d["gate"] = o.gate();
  d[bias_key] = o.bias();
}

py::dict options_dict(const sepp::SEBlockOptions& o) {
  py::dict d;
  d["channels"] = o.channels();
  put_se_options(d, o, "bias");
  return d;
}

py::dict options_dict(const sepp::BlockOptions& o) {
  py::dict d;
  d["inplanes"] = o.inplanes();
  d["planes"] = o.planes();
  d["stride"] = o.stride();
  d["groups"] = o.groups();
  d["base_width"] = o.base_width();
  d["stride_in_1x1"] = o.stride_in_1x1();
  d["se"] = o.se();
  put_se_options(d, o.se_options(), "se_bias");
  d["se_strategy"] = o.se_strategy();
  d["relu_before_se"] = o.relu_before_se();
  return d;
}

py::dict options_dict(const sepp::ResNetOptions& o) {
  py::dict d;
  d["block"] = o.block();
  d["layers"] = py::tuple(py::cast(o.layers()));
  d["num_classes"] = o.num_classes();
  d["in_chans"] = o.in_chans();
  d["groups"] = o.groups();
  d["width_per_group"] = o.width_per_group();
  d["stride_in_1x1"] = o.stride_in_1x1();
  d["se"] = py::tuple(py::cast(o.se_stages()));
  put_se_options(d, o.se_options(), "se_bias");
  d["se_strategy"] = o.se_strategy();
  d["relu_before_se"] = o.relu_before_se();
  d["zero_init_last"] = o.zero_init_last();
  d["stem_pool_ceil_mode"] = o.stem_pool_ceil_mode();
  d["drop_rate"] = o.drop_rate();
  return d;
}

std::string pretty(const Module& m) {
  std::ostringstream s;
  m.pretty_print(s);
  return s.str();
}

// forward() of the C++ modules a sepp model is made of, for submodules that have no class of their own in Python.
torch::Tensor forward_any(Module& m, const torch::Tensor& x) {
  if (auto* s = m.as<torch::nn::Sequential>()) return s->forward(x);
  if (auto* c = m.as<torch::nn::Conv2d>()) return c->forward(x);
  if (auto* b = m.as<torch::nn::BatchNorm2d>()) return b->forward(x);
  if (auto* l = m.as<torch::nn::Linear>()) return l->forward(x);
  if (auto* p = m.as<torch::nn::MaxPool2d>()) return p->forward(x);
  if (auto* i = m.as<torch::nn::Identity>()) return i->forward(x);
  if (auto* se = m.as<sepp::SEBlock>()) return se->forward(x);
  if (auto* bb = m.as<sepp::BasicBlock>()) return bb->forward(x);
  if (auto* bt = m.as<sepp::Bottleneck>()) return bt->forward(x);
  if (auto* r = m.as<sepp::ResNet>()) return r->forward(x);
  TORCH_CHECK_TYPE(false, "sepp: the C++ module ", m.name(), " has no forward(Tensor) that sepp can call");
}

template <typename Impl>
using Class = py::class_<Impl, Module, std::shared_ptr<Impl>>;

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

  Class<sepp::SEBlockImpl>(m, "SEBlock")
      .def(
          py::init([](int64_t channels, int64_t reduction, std::optional<int64_t> rd_channels,
                      std::optional<int64_t> rd_divisor, const std::string& squeeze, const std::string& gate,
                      bool bias) {
            return std::make_shared<sepp::SEBlockImpl>(
                se_options(channels, reduction, rd_channels, rd_divisor, squeeze, gate, bias));
          }),
          py::arg("channels"), py::arg("reduction") = 16, py::arg("rd_channels") = py::none(),
          py::arg("rd_divisor") = py::none(), py::arg("squeeze") = "avg", py::arg("gate") = "sigmoid",
          py::arg("bias") = true)
      .def("forward", &sepp::SEBlockImpl::forward, kNoGil)
      .def("gate", &sepp::SEBlockImpl::gate, kNoGil)
      .def_property_readonly("options", [](const sepp::SEBlockImpl& self) { return options_dict(self.options); });

  auto block_init = [](auto tag) {
    using Impl = typename decltype(tag)::type;
    return py::init([](int64_t inplanes, int64_t planes, int64_t stride, int64_t groups, int64_t base_width,
                       bool stride_in_1x1, bool se, int64_t reduction, std::optional<int64_t> rd_channels,
                       std::optional<int64_t> rd_divisor, const std::string& squeeze, const std::string& gate,
                       bool se_bias, const std::string& se_strategy, bool relu_before_se) {
      return std::make_shared<Impl>(
          sepp::BlockOptions(inplanes, planes)
              .stride(stride)
              .groups(groups)
              .base_width(base_width)
              .stride_in_1x1(stride_in_1x1)
              .se(se)
              .se_options(se_options(0, reduction, rd_channels, rd_divisor, squeeze, gate, se_bias))
              .se_strategy(se_strategy)
              .relu_before_se(relu_before_se));
    });
  };
#define SEPP_BLOCK_KWARGS                                                                                       \
  py::arg("inplanes"), py::arg("planes"), py::arg("stride") = 1, py::arg("groups") = 1,                        \
      py::arg("base_width") = 64, py::arg("stride_in_1x1") = false, py::arg("se") = false,                      \
      py::arg("reduction") = 16, py::arg("rd_channels") = py::none(), py::arg("rd_divisor") = py::none(),       \
      py::arg("squeeze") = "avg", py::arg("gate") = "sigmoid", py::arg("se_bias") = true,                      \
      py::arg("se_strategy") = "standard", py::arg("relu_before_se") = false

  Class<sepp::BasicBlockImpl>(m, "BasicBlock")
      .def(block_init(std::type_identity<sepp::BasicBlockImpl>{}), SEPP_BLOCK_KWARGS)
      .def("forward", &sepp::BasicBlockImpl::forward, kNoGil)
      .def_property_readonly("options", [](const sepp::BasicBlockImpl& self) { return options_dict(self.options); });
  Class<sepp::BottleneckImpl>(m, "Bottleneck")
      .def(block_init(std::type_identity<sepp::BottleneckImpl>{}), SEPP_BLOCK_KWARGS)
      .def("forward", &sepp::BottleneckImpl::forward, kNoGil)
      .def_property_readonly("options", [](const sepp::BottleneckImpl& self) { return options_dict(self.options); });
#undef SEPP_BLOCK_KWARGS

  Class<sepp::ResNetImpl>(m, "ResNet")
      .def(
          py::init([](const std::string& block, std::vector<int64_t> layers, int64_t num_classes, int64_t in_chans,
                      int64_t groups, int64_t width_per_group, bool stride_in_1x1, std::vector<bool> se,
                      int64_t reduction, std::optional<int64_t> rd_channels, std::optional<int64_t> rd_divisor,
                      const std::string& squeeze, const std::string& gate, bool se_bias,
                      const std::string& se_strategy, bool relu_before_se, bool zero_init_last,
                      bool stem_pool_ceil_mode,
                      double drop_rate) {
            return std::make_shared<sepp::ResNetImpl>(
                sepp::ResNetOptions()
                    .block(block)
                    .layers(std::move(layers))
                    .num_classes(num_classes)
                    .in_chans(in_chans)
                    .groups(groups)
                    .width_per_group(width_per_group)
                    .stride_in_1x1(stride_in_1x1)
                    .se_stages(std::move(se))
                    .se_options(se_options(0, reduction, rd_channels, rd_divisor, squeeze, gate, se_bias))
                    .se_strategy(se_strategy)
                    .relu_before_se(relu_before_se)
                    .zero_init_last(zero_init_last)
                    .stem_pool_ceil_mode(stem_pool_ceil_mode)
                    .drop_rate(drop_rate));
          }),
          py::arg("block") = "bottleneck", py::arg("layers") = std::vector<int64_t>{3, 4, 6, 3},
          py::arg("num_classes") = 1000, py::arg("in_chans") = 3, py::arg("groups") = 1,
          py::arg("width_per_group") = 64, py::arg("stride_in_1x1") = false,
          py::arg("se") = std::vector<bool>{false, false, false, false}, py::arg("reduction") = 16,
          py::arg("rd_channels") = py::none(), py::arg("rd_divisor") = py::none(), py::arg("squeeze") = "avg",
          py::arg("gate") = "sigmoid", py::arg("se_bias") = true, py::arg("se_strategy") = "standard",
          py::arg("relu_before_se") = false, py::arg("zero_init_last") = true, py::arg("stem_pool_ceil_mode") = false, py::arg("drop_rate") = 0.0)
      .def("forward", &sepp::ResNetImpl::forward, kNoGil)
      .def("forward_features", &sepp::ResNetImpl::forward_features, kNoGil)
      .def("forward_head", &sepp::ResNetImpl::forward_head, py::arg("x"), py::arg("pre_logits") = false, kNoGil)
      .def("forward_stages", &sepp::ResNetImpl::forward_stages, kNoGil)
      .def("reset_classifier", &sepp::ResNetImpl::reset_classifier, py::arg("num_classes"))
      .def("reset_parameters", &sepp::ResNetImpl::reset_parameters)
      .def_property_readonly("num_features", &sepp::ResNetImpl::num_features)
      .def_property_readonly("stage_channels", &sepp::ResNetImpl::stage_channels)
      .def_property_readonly("options", [](const sepp::ResNetImpl& self) { return options_dict(self.options); });

  py::class_<sepp::OptimizedResNet>(m, "OptimizedResNet")
      .def("forward", &sepp::OptimizedResNet::forward, py::arg("x"), kNoGil)
      .def_property_readonly("backend", &sepp::OptimizedResNet::backend)
      .def_property_readonly("num_features", &sepp::OptimizedResNet::num_features)
      .def_property_readonly("cuda_graphs_captured", &sepp::OptimizedResNet::cuda_graphs_captured)
      .def_property_readonly("options", [](const sepp::OptimizedResNet& self) { return options_dict(self.model_options()); });
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
        py::gil_scoped_release no_gil;
        return sepp::optimize_for_inference(sepp::ResNet(model), o);
      },
      py::arg("model"), py::arg("dtype") = "", py::arg("input_size") = std::vector<int64_t>{},
      py::arg("cuda_graphs") = true);

  m.def("model_names", &sepp::model_names, "Names of the models in the factory table.");
  m.def(
      "model_config", [](const std::string& name) { return options_dict(sepp::model_config(name)); },
      py::arg("name"), "The ResNet keyword arguments of a named model.");
  m.def("pretty_print", &pretty, py::arg("module"), "The one-line description a C++ module prints of itself.");
  m.def("forward", &forward_any, py::arg("module"), py::arg("x"), kNoGil);
  m.def("save_weights", &sepp::save_weights, py::arg("module"), py::arg("path"), kNoGil,
        "Writes the module's parameters and buffers as safetensors, atomically (C++ writer).");
  m.def("load_weights", &sepp::load_weights, py::arg("module"), py::arg("path"), kNoGil,
        "Loads a safetensors file into the module after checking all of it (C++ reader).");
  m.def(
      "read_safetensors",
      [](const std::string& path) {
        py::dict d;
        for (auto& [name, t] : sepp::read_safetensors(path)) d[py::str(name)] = t;
        return d;
      },
      py::arg("path"), "The tensors of a safetensors file, through the C++ reader.");
  m.def("build_info", [] {
    const auto info = sepp::build_info();
    py::dict d;
    d["version"] = info.version;
    d["torch_version"] = info.torch_version;
    d["cuda"] = info.cuda;
    d["cuda_version"] = info.cuda ? py::object(py::str(info.cuda_version)) : py::object(py::none());
    return d;
  });
}
