#pragma once

// Options structs bound by name: a constructor from Python arguments and a dict of the options, both read off the
// struct's visit() table (sepp/options.h), so that an option added in C++ reaches Python with no binding code.

#include <sepp/options.h>

#include <torch/python.h>

#include <pybind11/stl.h>

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <set>
#include <string>
#include <type_traits>
#include <vector>

namespace sepp::python {

namespace py = pybind11;

template <typename T>
struct is_vector : std::false_type {};
template <typename T>
struct is_vector<std::vector<T>> : std::true_type {};

template <typename T>
const char* python_type_name() {
  if constexpr (std::is_same_v<T, bool>)
    return "a bool";
  else if constexpr (std::is_integral_v<T>)
    return "an int";
  else if constexpr (std::is_floating_point_v<T>)
    return "a float";
  else if constexpr (std::is_same_v<T, std::string>)
    return "a str";
  else if constexpr (std::is_same_v<T, std::vector<bool>>)
    return "a bool or a sequence of bools";
  else if constexpr (is_vector<T>::value)
    return "a sequence of ints";
  else
    return "a value of the option's type";
}

/// An option's value as Python sees it (a tuple for a vector, None for an unset ZeroIsNone int).
template <typename T>
py::object to_python(const T& v, OptionKind kind) {
  if constexpr (std::is_same_v<T, int64_t>) {
    if (kind == OptionKind::ZeroIsNone && v == 0) return py::none();
  }
  if constexpr (is_vector<T>::value) {
    return py::tuple(py::cast(v));
  } else {
    return py::cast(v);
  }
}

/// A Python value for an option of type T. A bool for a vector of bools sets every entry; None for a ZeroIsNone int
/// is 0. Throws c10::TypeError naming the option, the expected type and the type that came.
template <typename T>
T from_python(py::handle h, const T& current, OptionKind kind, const char* who, const char* name) {
  auto fail = [&]() -> T {
    TORCH_CHECK_TYPE(
        false, who, ": expected ", python_type_name<T>(), " for option '", name, "', got ",
        py::str(py::type::handle_of(h).attr("__name__")).cast<std::string>(), " ", py::repr(h).cast<std::string>());
  };
  if constexpr (std::is_same_v<T, int64_t>) {
    if (kind == OptionKind::ZeroIsNone && h.is_none()) return 0;
  }
  if constexpr (std::is_same_v<T, bool>) {
    if (!py::isinstance<py::bool_>(h)) return fail();  // not 0/1: a typo'd int should not pass as a flag
  } else if constexpr (std::is_arithmetic_v<T>) {
    if (py::isinstance<py::bool_>(h)) return fail();  // a bool is an int to Python, not a count or a rate
  }
  if constexpr (std::is_same_v<T, std::vector<bool>>) {
    if (py::isinstance<py::bool_>(h)) return std::vector<bool>(current.size(), h.cast<bool>());
    if (py::isinstance<py::str>(h) || !py::isinstance<py::sequence>(h)) return fail();
    std::vector<bool> out;
    for (auto item : h.cast<py::sequence>()) {
      if (!py::isinstance<py::bool_>(item)) return fail();
      out.push_back(item.cast<bool>());
    }
    return out;
  }
  if constexpr (is_vector<T>::value) {
    // Ints only: a str or bytes is not a sequence of ints, and a bool is not a count.
    if (py::isinstance<py::str>(h) || py::isinstance<py::bytes>(h) || !py::isinstance<py::sequence>(h)) return fail();
    for (auto item : h.cast<py::sequence>()) {
      if (py::isinstance<py::bool_>(item)) return fail();
    }
  }
  if constexpr (std::is_same_v<T, std::string>) {
    if (!py::isinstance<py::str>(h)) return fail();  // bytes are not text
    auto text = h.cast<std::string>();
    // A NUL would cut every error message that quotes the value.
    TORCH_CHECK_VALUE(text.find('\0') == std::string::npos, who, ": option '", name, "' contains a NUL character");
    return text;
  }
  try {
    return h.cast<T>();
  } catch (const py::cast_error&) {
    return fail();
  }
}

/// The options as a dict {name: value}, in visit() order.
template <typename Options>
py::dict options_dict(const Options& o) {
  py::dict d;
  Options::visit(
      o, [&](const char* name, const auto& field, OptionKind kind, const char*) { d[name] = to_python(field, kind); });
  return d;
}

/// [(name, default, doc)] of the options: the Python face builds its signatures and docstrings from it.
template <typename Options>
py::list options_spec(const Options& defaults) {
  py::list out;
  Options::visit(defaults, [&](const char* name, const auto& field, OptionKind kind, const char* doc) {
    py::object dflt = kind == OptionKind::Required ? py::object(py::ellipsis()) : to_python(field, kind);
    out.append(py::make_tuple(name, dflt, doc));
  });
  return out;
}

/// Options from Python positional arguments (in visit() order) and keywords, starting from `o`. Unknown or repeated
/// names, too many positional arguments and a missing required option raise TypeError; bad values raise TypeError
/// here or ValueError in the module's own validation.
template <typename Options>
Options options_from_python(Options o, const py::args& args, const py::kwargs& kwargs, const char* who) {
  std::vector<std::string> names;
  Options::visit(o, [&](const char* name, auto&, OptionKind, const char*) { names.emplace_back(name); });
  TORCH_CHECK_TYPE(
      args.size() <= names.size(), who, ": expected at most ", names.size(), " positional arguments, got ",
      args.size());
  py::dict given;
  for (size_t i = 0; i < args.size(); ++i) given[py::str(names[i])] = args[i];
  const std::set<std::string> known(names.begin(), names.end());
  for (auto [key, value] : kwargs) {
    const auto name = py::cast<std::string>(key);
    TORCH_CHECK_TYPE(
        known.count(name), who, ": unknown option '", name, "'; expected some of: ", c10::Join(", ", names));
    TORCH_CHECK_TYPE(!given.contains(key), who, ": got option '", name, "' twice (by position and by name)");
    given[key] = value;
  }
  Options::visit(o, [&](const char* name, auto& field, OptionKind kind, const char*) {
    if (given.contains(name)) {
      field = from_python(given[name], field, kind, who, name);
    } else {
      TORCH_CHECK_TYPE(kind != OptionKind::Required, who, ": missing the required option '", name, "'");
    }
  });
  return o;
}

}  // namespace sepp::python
