// The kernels' self-checks (see kernel_check.h): the small cases each kernel must get right, the record of what was
// checked, and the ATen operators a failed kernel is replaced by.

#include "ops/kernel_check.h"

#include "ops/se_excite_common.h"
#include "ops/se_scale_common.h"
#include "ops/se_squeeze_common.h"

#include <sepp/ops.h>

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>
#include <sstream>

namespace sepp::ops {
namespace detail {
namespace {

enum State : uint8_t { Unchecked = 0, Ok = 1, Failed = 2 };

constexpr int kKernels = 3, kDeviceTypes = 2, kDevices = 128, kDtypes = 4;
constexpr const char* kKernelNames[kKernels] = {"se_scale", "se_squeeze", "se_excite"};

// A state per (kernel, CPU or CUDA, device index, dtype), read without a lock once settled.
std::array<std::atomic<uint8_t>, kKernels * kDeviceTypes * kDevices * kDtypes> g_states{};
std::recursive_mutex g_mutex;       // held while a check runs and while the record changes
std::vector<KernelCheck> g_record;  // guarded by g_mutex
std::string g_fault;                // guarded by g_mutex
std::atomic<bool> g_check_cpu{false};
thread_local bool t_in_check = false;  // a kernel called by a check is the one under test

int dtype_slot(at::ScalarType dt) {
  switch (dt) {
    case at::kDouble:
      return 0;
    case at::kFloat:
      return 1;
    case at::kHalf:
      return 2;
    case at::kBFloat16:
      return 3;
    default:
      return -1;
  }
}

// The state of `kernel` on `device` in `dt`; null where kernels are not checked.
std::atomic<uint8_t>* state_of(Kernel kernel, c10::Device device, at::ScalarType dt) {
  int type = -1;
  if (device.is_cuda()) {
    type = 1;
  } else if (device.is_cpu() && g_check_cpu.load(std::memory_order_relaxed)) {
    type = 0;
  }
  const int slot = dtype_slot(dt);
  const int index = device.is_cpu() ? 0 : device.index();
  if (type < 0 || slot < 0 || index < 0 || index >= kDevices) return nullptr;
  return &g_states[((static_cast<int>(kernel) * kDeviceTypes + type) * kDevices + index) * kDtypes + slot];
}

double tolerance(at::ScalarType dt) {
  switch (dt) {
    case at::kDouble:
      return 1e-10;
    case at::kFloat:
      return 2e-5;
    case at::kHalf:
      return 4e-3;
    default:
      return 2e-2;
  }
}

// Deterministic values in [-1.5, 1.5] (a check must not draw from the user's random generator).
at::Tensor values(at::IntArrayRef shape, double phase) {
  const int64_t n = c10::multiply_integers(shape);
  return (at::sin(at::arange(n, at::kDouble) * 0.7548776662466927 + phase) * 1.5).reshape(shape);
}

at::Tensor on(const at::Tensor& t64, c10::Device device, at::ScalarType dt, bool channels_last = false) {
  auto t = t64.to(device, dt);
  return channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
}

// Why `got` (the kernel's output) is not `want` (float64 on the CPU) within `tol` of want's largest value, or "".
std::string compare(at::Tensor got, const at::Tensor& want, at::ScalarType out_dtype, double tol, bool fault) {
  std::ostringstream why;
  if (got.scalar_type() != out_dtype) {
    why << "output of dtype " << got.scalar_type() << ", expected " << out_dtype;
    return why.str();
  }
  if (got.sizes() != want.sizes()) {
    why << "output of shape " << got.sizes() << ", expected " << want.sizes();
    return why.str();
  }
  got = got.to(at::kCPU, at::kDouble);
  if (fault && got.numel() > 0) got.view(-1)[0] += 1.0;
  if (!at::equal(at::isnan(got), at::isnan(want))) return "NaN where the reference has none, or the reverse";
  const auto finite = at::logical_not(at::isnan(want));
  const double scale = want.numel() ? want.masked_select(finite).abs().max().item<double>() : 0.0;
  const double err = want.numel() ? (got - want).masked_select(finite).abs().max().item<double>() : 0.0;
  if (err <= tol * std::max(scale, 1e-30)) return "";
  why << "max error " << err << " against a largest reference value of " << scale << " (tolerance " << tol << " of it)";
  return why.str();
}

std::string case_name(at::IntArrayRef shape, bool channels_last) {
  std::ostringstream s;
  s << shape << (channels_last ? " channels_last" : " contiguous");
  return s.str();
}

// Each check returns "" or what went wrong, naming the case.
constexpr std::array<std::array<int64_t, 4>, 3> kShapes = {{{2, 19, 7, 5}, {3, 32, 5, 3}, {1, 24, 1, 1}}};

std::string check(SEScaleFn kernel, c10::Device device, at::ScalarType dt, bool fault) {
  for (const auto& shape : kShapes) {
    const auto x64 = values(shape, 0.0), s64 = values({shape[0], shape[1]}, 1.0), i64 = values(shape, 2.0);
    for (bool cl : {false, true}) {
      const auto x = on(x64, device, dt, cl), s = on(s64, device, dt), idn = on(i64, device, dt, cl);
      const auto xr = x.to(at::kCPU, at::kDouble), sr = s.to(at::kCPU, at::kDouble).reshape({shape[0], shape[1], 1, 1});
      const auto ir = idn.to(at::kCPU, at::kDouble);
      for (bool with_identity : {false, true}) {
        for (bool relu : {false, true}) {
          const auto got = kernel(x, s, with_identity ? std::optional<at::Tensor>(idn) : std::nullopt, relu);
          auto want = xr * sr;
          if (with_identity) want = want + ir;
          if (relu) want = at::relu(want);
          auto why = compare(got, want, dt, tolerance(dt), fault);
          if (why.empty() && !got.is_contiguous(kernel_layout(x))) why = "output not in the input's layout";
          if (!why.empty()) {
            return case_name(shape, cl) + (with_identity ? " + identity" : "") + (relu ? ", relu" : "") + ": " + why;
          }
        }
      }
    }
  }
  return "";
}

std::string check(SESqueezeFn kernel, c10::Device device, at::ScalarType dt, bool fault) {
  for (const auto& shape : kShapes) {
    const auto x64 = values(shape, 0.5);
    for (bool cl : {false, true}) {
      const auto x = on(x64, device, dt, cl);
      const auto want = x.to(at::kCPU, at::kDouble).mean({2, 3});
      for (auto out : {std::optional<at::ScalarType>(), std::optional<at::ScalarType>(at::kFloat)}) {
        const auto why = compare(kernel(x, out), want, out.value_or(dt), tolerance(dt), fault);
        if (!why.empty()) return case_name(shape, cl) + (out ? " into Float" : "") + ": " + why;
      }
    }
  }
  return "";
}

std::string check(SEExciteFn kernel, c10::Device device, at::ScalarType dt, bool fault) {
  struct Case {
    int64_t n, c, r;
    const char* gate;
    bool bias, nan;
  };
  constexpr Case cases[] = {
      {3, 19, 5, "sigmoid", true, true},    {5, 19, 5, "hard_sigmoid", true, false},  {5, 64, 16, "tanh", false, false},
      {1, 64, 16, "sigmoid", false, false}, {2, 24, 6, "hard_sigmoid", false, false},
  };
  for (const auto& k : cases) {
    auto z64 = values({k.n, k.c}, 0.25) * 2.0;
    if (k.nan) z64[0][0].fill_(std::numeric_limits<double>::quiet_NaN());  // the hidden ReLU must keep it, as torch's
    const auto z = on(z64, device, dt), w1 = on(values({k.r, k.c}, 1.0) * 0.3, device, dt);
    const auto w2 = on(values({k.c, k.r}, 2.0) * 0.3, device, dt);
    const auto b1 = on(values({k.r}, 3.0) * 0.1, device, dt), b2 = on(values({k.c}, 4.0) * 0.1, device, dt);
    auto cpu = [](const at::Tensor& t) { return t.to(at::kCPU, at::kDouble); };
    auto a = at::linear(
        at::relu(at::linear(cpu(z), cpu(w1), k.bias ? cpu(b1) : at::Tensor())), cpu(w2),
        k.bias ? cpu(b2) : at::Tensor());
    const std::string_view gate = k.gate;
    const auto want = gate == "sigmoid" ? at::sigmoid(a)
                      : gate == "tanh"  ? at::tanh(a)
                                        : at::clamp(a + 3.0, 0, 6) / 6.0;
    const auto opt = [&](const at::Tensor& t) { return k.bias ? std::optional<at::Tensor>(t) : std::nullopt; };
    const auto why = compare(kernel(z, w1, opt(b1), w2, opt(b2), gate), want, dt, tolerance(dt), fault);
    if (!why.empty()) {
      std::ostringstream s;
      s << "N=" << k.n << " C=" << k.c << " R=" << k.r << " " << k.gate << (k.bias ? "" : " without biases")
        << (k.nan ? " with a NaN" : "") << ": " << why;
      return s.str();
    }
  }
  return "";
}

template <typename Fn>
bool trusted_impl(Kernel kind, Fn kernel, c10::Device device, at::ScalarType dt, bool (*capturing)()) {
  auto* state = state_of(kind, device, dt);
  if (state == nullptr || t_in_check) return true;
  const auto settled = state->load(std::memory_order_acquire);
  if (settled != Unchecked) return settled == Ok;
  if (capturing != nullptr && capturing()) return false;
  const char* name = kKernelNames[static_cast<int>(kind)];
  std::string why;
  {
    const std::lock_guard<std::recursive_mutex> lock(g_mutex);
    const auto s = state->load(std::memory_order_relaxed);
    if (s != Unchecked) return s == Ok;
    t_in_check = true;
    try {
      why = check(kernel, device, dt, g_fault == name);
    } catch (const c10::Error& e) {
      why = std::string("it threw: ") + e.what_without_backtrace();
    } catch (const std::exception& e) {
      why = std::string("it threw: ") + e.what();
    }
    t_in_check = false;
    std::ostringstream dev, dtype;
    dev << device;
    dtype << dt;
    g_record.push_back({name, dev.str(), dtype.str(), why.empty() ? "ok" : "failed", why});
    state->store(why.empty() ? Ok : Failed, std::memory_order_release);
  }
  if (!why.empty()) {  // outside the lock: a warning handler may take Python's lock
    TORCH_WARN(
        "sepp: the ", device.type(), " kernel of sepp::", name, " for ", dt, " failed its self-check (", why,
        "); sepp::", name, " runs through ATen's operators on ", device, " in ", dt,
        " from now on. `python -m sepp.selftest --device ", device.type(), "` shows every check.");
  }
  return why.empty();
}

// se_scale's arithmetic in opmath, written in x's dtype and layout; no checks.
at::Tensor scale_tail(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  const auto op = at::toOpMathType(x.scalar_type());
  auto y = x.to(op) * scale.reshape({x.size(0), x.size(1), 1, 1}).to(op);
  if (identity.has_value() && identity->defined()) y.add_(identity->to(op));
  if (relu) y = at::relu(y);
  auto out = at::empty_like(x, kernel_layout(x));
  return out.copy_(y);
}

}  // namespace

bool trusted(SEScaleFn kernel, c10::Device device, at::ScalarType dtype, bool (*capturing)()) {
  return trusted_impl(Kernel::SEScale, kernel, device, dtype, capturing);
}
bool trusted(SESqueezeFn kernel, c10::Device device, at::ScalarType dtype, bool (*capturing)()) {
  return trusted_impl(Kernel::SESqueeze, kernel, device, dtype, capturing);
}
bool trusted(SEExciteFn kernel, c10::Device device, at::ScalarType dtype, bool (*capturing)()) {
  return trusted_impl(Kernel::SEExcite, kernel, device, dtype, capturing);
}

at::Tensor se_scale_aten(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  check_se_scale(x, scale, identity);
  return scale_tail(x, scale, identity, relu);
}

at::Tensor& se_scale_inplace_aten(
    at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& identity, bool relu) {
  check_se_scale(x, scale, identity, /*opmath_scale_ok=*/true);
  return x.copy_(scale_tail(x, scale, identity, relu));
}

at::Tensor se_squeeze_aten(const at::Tensor& x, std::optional<at::ScalarType> dtype) {
  check_se_squeeze(x, dtype);
  return at::mean(x, {2, 3}, /*keepdim=*/false, dtype.value_or(x.scalar_type())).contiguous();
}

at::Tensor se_excite_aten(
    const at::Tensor& z,
    const at::Tensor& w1,
    const std::optional<at::Tensor>& b1,
    const at::Tensor& w2,
    const std::optional<at::Tensor>& b2,
    std::string_view gate) {
  check_se_excite(z, w1, b1, w2, b2);
  const auto g = parse_gate(gate, "sepp::se_excite");
  const auto dt = z.scalar_type();
  const auto acc = excite_compute_dtype(dt);
  auto a =
      at::linear(at::linear(z.to(acc), w1.to(acc), optional_to(b1, acc)).relu_(), w2.to(acc), optional_to(b2, acc));
  switch (g) {
    case Gate::Sigmoid:
      a.sigmoid_();
      break;
    case Gate::HardSigmoid:
      a = at::hardsigmoid(a);
      break;
    case Gate::Tanh:
      a.tanh_();
      break;
  }
  return a.to(dt);
}

}  // namespace detail

std::vector<KernelCheck> kernel_checks() {
  const std::lock_guard<std::recursive_mutex> lock(detail::g_mutex);
  return detail::g_record;
}

void check_kernels(c10::Device device, at::ScalarType dtype) {
  for (const auto dt : {dtype, at::kFloat}) {
    if (detail::state_of(detail::Kernel::SEScale, device, dt) == nullptr) continue;  // not checked here
    const auto opts = at::TensorOptions().device(device).dtype(dt);
    const auto x = at::zeros({1, 8, 2, 2}, opts);
    const auto z = at::zeros({1, 8}, opts), w1 = at::zeros({2, 8}, opts), w2 = at::zeros({8, 2}, opts);
    // Each call checks its kernel the first time (and is cheap after).
    se_scale(x, z, std::nullopt, false);
    se_squeeze(x, std::nullopt);
    se_excite(z, w1, std::nullopt, w2, std::nullopt, "sigmoid");
  }
}

void configure_kernel_checks_for_testing(bool check_cpu, const std::string& fault_op) {
  const std::lock_guard<std::recursive_mutex> lock(detail::g_mutex);
  TORCH_CHECK_VALUE(
      fault_op.empty() || fault_op == "se_scale" || fault_op == "se_squeeze" || fault_op == "se_excite",
      "sepp: expected a fault in 'se_scale', 'se_squeeze', 'se_excite' or none (''), got '", fault_op, "'");
  for (auto& s : detail::g_states) s.store(detail::Unchecked, std::memory_order_relaxed);
  detail::g_record.clear();
  detail::g_fault = fault_op;
  detail::g_check_cpu.store(check_cpu, std::memory_order_release);
}

}  // namespace sepp::ops
