#include <sepp/weights.h>

#include "safetensors_format.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <unistd.h>

namespace sepp {

static_assert(std::endian::native == std::endian::little, "sepp's safetensors I/O assumes a little-endian host");

namespace {

// safetensors dtype names and the torch dtypes they hold (their byte sizes: safetensors::element_size).
struct DType {
  const char* name;
  torch::ScalarType type;
};

constexpr DType kDTypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

const DType* dtype_by_name(const std::string& name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DType& dtype_of(torch::ScalarType t, const std::string& path, const std::string& tensor) {
  for (const auto& d : kDTypes) {
    if (d.type == t) return d;
  }
  TORCH_CHECK_TYPE(
      false, "sepp::save_weights('", path, "'): tensor '", tensor, "' has dtype ", t,
      ", which safetensors cannot hold here");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK_VALUE(in.good(), "sepp::load_weights('", path, "'): cannot open the file: ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  TORCH_CHECK_VALUE(!in.bad(), "sepp::load_weights('", path, "'): read error");
  return std::move(ss).str();
}

}  // namespace

NamedTensors read_safetensors(const std::string& path) {
  const std::string bytes = read_file(path);
  safetensors::Parsed parsed;
  try {
    parsed = safetensors::parse(bytes.data(), bytes.size());
  } catch (const safetensors::FormatError& e) {
    TORCH_CHECK_VALUE(false, "sepp::load_weights('", path, "'): ", e.what());
  }
  const char* data = bytes.data() + parsed.data_offset;
  NamedTensors out;
  out.reserve(parsed.entries.size());
  for (const auto& e : parsed.entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(dtype_by_name(e.dtype)->type));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.end - e.begin);
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

void write_safetensors(const NamedTensors& tensors, const std::string& path) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    TORCH_CHECK_VALUE(name != "__metadata__", "sepp::save_weights('", path, "'): '__metadata__' is not a tensor name");
    TORCH_CHECK_VALUE(!header.contains(name), "sepp::save_weights('", path, "'): tensor name '", name, "' twice");
    const DType& dt = dtype_of(tensor.scalar_type(), path, name);
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(t.nbytes());
    header[name] = {{"dtype", dt.name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(t));
  }
  header["__metadata__"] = {{"format", "pt"}, {"writer", "sepp"}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  const uint64_t header_len = text.size();

  // A temporary file beside the target, then rename: a failure leaves the previous file whole.
  std::random_device rd;
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  TORCH_CHECK_VALUE(f != nullptr, "sepp::save_weights('", path, "'): cannot create ", tmp, ": ", std::strerror(errno));
  bool ok = std::fwrite(&header_len, 8, 1, f) == 1 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (const auto& t : data) {
    const size_t n = static_cast<size_t>(t.nbytes());
    if (ok && n > 0) ok = std::fwrite(t.const_data_ptr(), 1, n, f) == n;
  }
  ok = ok && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  const int write_errno = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = ok ? errno : write_errno;
    std::remove(tmp.c_str());
    TORCH_CHECK_VALUE(
        false, "sepp::save_weights('", path, "'): writing failed: ", std::strerror(err),
        "; the previous file (if any) is unchanged");
  }
}

namespace {
// The module's parameters and buffers under their state_dict names, in registration order.
NamedTensors state_of(const torch::nn::Module& module) {
  NamedTensors state;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) state.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) state.emplace_back(b.key(), b.value());
  return state;
}
}  // namespace

void save_weights(const torch::nn::Module& module, const std::string& path) {
  write_safetensors(state_of(module), path);
}

void load_weights(torch::nn::Module& module, const std::string& path) {
  const NamedTensors file = read_safetensors(path);
  std::map<std::string, const torch::Tensor*> in_file;
  for (const auto& [name, t] : file) in_file.emplace(name, &t);
  const NamedTensors state = state_of(module);
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> in_state;
  for (const auto& [name, target] : state) {
    in_state.insert(name);
    const auto it = in_file.find(name);
    if (it == in_file.end()) {
      missing.push_back(name);
    } else if (it->second->sizes() != target.sizes()) {
      std::ostringstream s;
      s << name << " (file " << it->second->sizes() << ", model " << target.sizes() << ")";
      mismatched.push_back(s.str());
    }
  }
  for (const auto& [name, _] : file) {
    if (!in_state.count(name)) unexpected.push_back(name);
  }
  const auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  TORCH_CHECK_VALUE(
      unexpected.empty() && missing.empty() && mismatched.empty(), "sepp::load_weights('", path,
      "'): the file does not match the module", missing.empty() ? "" : "; missing: ", join(missing),
      unexpected.empty() ? "" : "; unexpected: ", join(unexpected),
      mismatched.empty() ? "" : "; shape mismatch: ", join(mismatched), "; the module is unchanged");
  torch::NoGradGuard no_grad;  // every check passed: now copy
  for (const auto& [name, target] : state) {
    target.copy_(*in_file.at(name));
  }
}

}  // namespace sepp
