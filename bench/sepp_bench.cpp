// sepp-bench: latency of a sepp model's forward pass (inference mode), per batch size.
//
//   sepp-bench --model se_resnet50 --batch-size 1,8 --device cpu --iters 20
//
// Prints a table per configuration (p50 / p90 / p99 ms, images/s, peak memory) and optionally writes JSON.
// Bad arguments: a one-line error and exit code 2. Runtime failures (e.g. a bad weight file): exit code 1.
//
// For side-by-side comparisons (python -m sepp.bench) the model can take given weights (--weights, safetensors), time
// a given input (--input: a safetensors file holding a tensor named "input"; it replaces --batch-size and
// --image-size) and write its logits (--output: safetensors, tensor "output", float32) so that they can be checked.

#include <sepp/sepp.h>

#include <nlohmann/json.hpp>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/resource.h>

#if defined(SEPP_WITH_CUDA)
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace {

struct Args {
  std::string model = "se_resnet50";
  std::vector<int64_t> batch_sizes = {1};
  int64_t image_size = 224;
  std::string device = "cpu";
  std::string dtype = "float32";
  bool channels_last = false;
  bool optimize = false;
  int threads = 0;
  int warmup = 3;
  int iters = 20;
  double min_time = 0.0;
  std::string json;
  std::string weights;
  std::string input;
  std::string output;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kUsage =
    "usage: sepp-bench [--model NAME] [--batch-size 1,8,32] [--image-size 224] [--device cpu|cuda]\n"
    "                  [--dtype float32|float16|bfloat16] [--channels-last] [--optimize] [--threads N] [--warmup N]\n"
    "                  [--iters N | --min-time SECONDS] [--json FILE]\n"
    "                  [--weights FILE.safetensors] [--input FILE.safetensors] [--output FILE.safetensors]\n";

int64_t parse_int(const std::string& flag, const std::string& v, int64_t lo) {
  size_t pos = 0;
  int64_t x = 0;
  try {
    x = std::stoll(v, &pos);
  } catch (const std::exception&) {
    throw UsageError(flag + ": expected an integer, got '" + v + "'");
  }
  if (pos != v.size()) throw UsageError(flag + ": expected an integer, got '" + v + "'");
  if (x < lo) throw UsageError(flag + ": expected an integer >= " + std::to_string(lo) + ", got " + v);
  return x;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(f + ": expected a value");
      return argv[++i];
    };
    if (f == "--help" || f == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (f == "--model") {
      a.model = value();
    } else if (f == "--batch-size") {
      a.batch_sizes.clear();
      std::stringstream ss(value());
      std::string item;
      while (std::getline(ss, item, ',')) a.batch_sizes.push_back(parse_int(f, item, 1));
      if (a.batch_sizes.empty()) throw UsageError(f + ": expected a list such as 1,8,32");
    } else if (f == "--image-size") {
      a.image_size = parse_int(f, value(), 32);
    } else if (f == "--device") {
      a.device = value();
      if (a.device != "cpu" && a.device != "cuda")
        throw UsageError("--device: expected cpu or cuda, got '" + a.device + "'");
    } else if (f == "--dtype") {
      a.dtype = value();
      if (a.dtype != "float32" && a.dtype != "float16" && a.dtype != "bfloat16")
        throw UsageError("--dtype: expected float32, float16 or bfloat16, got '" + a.dtype + "'");
    } else if (f == "--channels-last") {
      a.channels_last = true;
    } else if (f == "--optimize") {
      a.optimize = true;
    } else if (f == "--threads") {
      a.threads = static_cast<int>(parse_int(f, value(), 1));
    } else if (f == "--warmup") {
      a.warmup = static_cast<int>(parse_int(f, value(), 0));
    } else if (f == "--iters") {
      a.iters = static_cast<int>(parse_int(f, value(), 1));
    } else if (f == "--min-time") {
      const std::string v = value();
      size_t pos = 0;
      try {
        a.min_time = std::stod(v, &pos);
      } catch (const std::exception&) {
        pos = 0;
      }
      if (pos == 0 || pos != v.size() || !(a.min_time > 0.0) || a.min_time > 3600.0)
        throw UsageError("--min-time: expected seconds in (0, 3600], got '" + v + "'");
    } else if (f == "--json") {
      a.json = value();
    } else if (f == "--weights") {
      a.weights = value();
    } else if (f == "--input") {
      a.input = value();
    } else if (f == "--output") {
      a.output = value();
    } else {
      throw UsageError("unknown argument '" + f + "'");
    }
  }
  const auto names = sepp::model_names();
  if (std::find(names.begin(), names.end(), a.model) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    throw UsageError("--model: unknown model '" + a.model + "'; expected one of: " + known);
  }
  if (a.device == "cuda" && !torch::cuda::is_available()) {
    throw UsageError("--device cuda: no CUDA device is available");
  }
  return a;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

// The peak resident set of this program's own address space: VmHWM from /proc/self/status. getrusage's ru_maxrss
// is not used where VmHWM exists, because Linux carries it over from the parent through fork and exec, so a child
// of a large process (the comparison's Python) would report the parent's peak.
double peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // in kB
  }
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // KiB on Linux
}

struct Result {
  int64_t batch;
  double p50, p90, p99, throughput, peak_mb;
  int iters;
  std::vector<double> samples_ms;
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "sepp-bench: " << e.what() << "\n";
    return 2;
  }
  try {
    if (a.threads > 0) at::set_num_threads(a.threads);
    const auto device = a.device == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    const auto dtype = a.dtype == "float16" ? torch::kHalf : a.dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat;
    auto model = sepp::create_model(a.model);
    if (!a.weights.empty()) sepp::load_weights(*model, a.weights);
    model->eval();
    torch::Tensor given;
    if (!a.input.empty()) {
      for (auto& [name, t] : sepp::read_safetensors(a.input))
        if (name == "input") given = t;
      if (!given.defined()) throw std::runtime_error("--input " + a.input + ": no tensor named 'input' in the file");
      if (given.dim() != 4 || given.size(1) != 3)
        throw std::runtime_error(
            "--input " + a.input + ": expected a tensor of shape [N, 3, H, W], got " + c10::str(given.sizes()));
      a.batch_sizes = {given.size(0)};
      a.image_size = given.size(2);
    }
    model->to(device, dtype);
    if (a.channels_last) {
      torch::NoGradGuard ng;
      for (auto& p : model->parameters())
        if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
    }
    const bool cuda = device.is_cuda();
    std::vector<Result> results;
    for (size_t bi = 0; bi < a.batch_sizes.size(); ++bi) {
      const int64_t batch = a.batch_sizes[bi];
      torch::InferenceMode guard;
      const auto opts = torch::TensorOptions().device(device).dtype(dtype);
      auto x = given.defined() ? given.to(opts) : torch::randn({batch, 3, a.image_size, a.image_size}, opts);
      if (a.channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      // --optimize: the inference-only model, its oneDNN weight layouts chosen for this input shape.
      std::optional<sepp::OptimizedResNet> optimized;
      if (a.optimize) {
        optimized = sepp::optimize_for_inference(
            model, sepp::InferenceOptions().dtype(dtype).input_size({batch, 3, a.image_size, a.image_size}));
        // A deployment keeps only the optimized model (it holds copies of the weights): the eager one goes once no
        // later batch size needs it, so that the peak memory measured is the deployment's.
        if (bi + 1 == a.batch_sizes.size()) model = nullptr;
      }
      auto forward = [&](const torch::Tensor& in) { return optimized ? optimized->forward(in) : model->forward(in); };
      if (!a.output.empty() && results.empty()) {
        auto y = forward(x).to(torch::kCPU, torch::kFloat).contiguous();
        sepp::write_safetensors({{"output", y}}, a.output);
      }
      for (int i = 0; i < a.warmup; ++i) forward(x);
#if defined(SEPP_WITH_CUDA)
      if (cuda) {
        torch::cuda::synchronize();
        c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
      }
#endif
      std::vector<double> ms;
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0;; ++i) {
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (a.min_time > 0 ? (elapsed >= a.min_time && i >= 1) : i >= a.iters) break;
#if defined(SEPP_WITH_CUDA)
        if (cuda) {
          auto stream = c10::cuda::getCurrentCUDAStream();
          at::cuda::CUDAEvent t0(cudaEventDefault), t1(cudaEventDefault);
          t0.record(stream);
          forward(x);
          t1.record(stream);
          t1.synchronize();
          ms.push_back(t0.elapsed_time(t1));
          continue;
        }
#endif
        {
          const auto t0 = std::chrono::steady_clock::now();
          forward(x);
          ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
      }
      double peak = peak_rss_mb();
#if defined(SEPP_WITH_CUDA)
      if (cuda) {
        const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
        peak = static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);
      }
#endif
      const double p50 = percentile(ms, 0.5);
      results.push_back(
          {batch, p50, percentile(ms, 0.9), percentile(ms, 0.99), 1000.0 * batch / p50, peak,
           static_cast<int>(ms.size()), ms});
    }

    std::cout << "sepp-bench  model=" << a.model << "  device=" << a.device << "  dtype=" << a.dtype
              << "  image=" << a.image_size << "  channels_last=" << (a.channels_last ? "yes" : "no")
              << "  optimized=" << (a.optimize ? "yes" : "no") << "  threads=" << at::get_num_threads()
              << "  warmup=" << a.warmup << "\n\n";
    std::cout << "| batch | iters | p50 ms | p90 ms | p99 ms | img/s | peak " << (cuda ? "CUDA alloc" : "RSS")
              << " MiB |\n|---:|---:|---:|---:|---:|---:|---:|\n";
    std::cout << std::fixed;
    for (const auto& r : results) {
      std::cout << "| " << r.batch << " | " << r.iters << " | " << std::setprecision(2) << r.p50 << " | " << r.p90
                << " | " << r.p99 << " | " << std::setprecision(1) << r.throughput << " | " << std::setprecision(0)
                << r.peak_mb << " |\n";
    }
    if (!a.json.empty()) {
      const std::string tmp = a.json + ".tmp";
      {
        const auto info = sepp::build_info();
        nlohmann::json report = {
            {"schema", "sepp-bench/1"},
            {"sepp_version", info.version},
            {"torch_version", info.torch_version},
            {"model", a.model},
            {"device", a.device},
            {"dtype", a.dtype},
            {"image_size", a.image_size},
            {"channels_last", a.channels_last},
            {"optimized", a.optimize},
            {"threads", at::get_num_threads()},
            {"warmup", a.warmup},
            {"timer", cuda ? "cuda_event" : "steady_clock"},
            {"results", nlohmann::json::array()}};
        for (const auto& r : results) {
          report["results"].push_back(
              {{"batch", r.batch},
               {"iters", r.iters},
               {"p50_ms", r.p50},
               {"p90_ms", r.p90},
               {"p99_ms", r.p99},
               {"images_per_s", r.throughput},
               {"peak_mib", r.peak_mb},
               {"samples_ms", r.samples_ms}});
        }
        std::ofstream out(tmp);
        out << report.dump() << "\n";
        if (!out) throw std::runtime_error("could not write " + tmp);
      }
      if (std::rename(tmp.c_str(), a.json.c_str()) != 0) throw std::runtime_error("could not write " + a.json);
    }
  } catch (const c10::Error& e) {
    std::cerr << "sepp-bench: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "sepp-bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
