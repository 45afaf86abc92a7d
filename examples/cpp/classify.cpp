// classify: build a sepp model, load weights saved from Python (sepp.save_weights), classify an input, print top-5.
//
//   classify --model se_resnet50 --weights w.safetensors [--input x.safetensors] [--logits out.safetensors]
//
// The input is a safetensors file holding one tensor "input" [N, 3, H, W] (float32); without it, a seeded random
// 1x3x224x224 image. --logits writes the logits (for comparing with Python).

#include <sepp/sepp.h>

#include <torch/torch.h>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  std::string model = "se_resnet50", weights, input, logits_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model")
      model = value;
    else if (flag == "--weights")
      weights = value;
    else if (flag == "--input")
      input = value;
    else if (flag == "--logits")
      logits_path = value;
    else {
      std::cerr << "classify: unknown argument " << flag << "\n";
      return 2;
    }
  }
  try {
    auto net = sepp::create_model(model);
    if (!weights.empty()) sepp::load_weights(net, weights);
    net->eval();
    torch::Tensor x;
    if (!input.empty()) {
      for (auto& [name, t] : sepp::read_safetensors(input)) {
        if (name == "input") x = t;
      }
      TORCH_CHECK_VALUE(x.defined(), "classify: ", input, " holds no tensor named 'input'");
    } else {
      torch::manual_seed(0);
      x = torch::randn({1, 3, 224, 224});
    }
    torch::InferenceMode guard;
    const auto logits = net->forward(x);
    const auto [prob, idx] = torch::softmax(logits, 1).topk(5, 1);
    for (int64_t n = 0; n < logits.size(0); ++n) {
      std::cout << "image " << n << ":";
      for (int64_t k = 0; k < 5; ++k) {
        std::cout << " " << idx[n][k].item<int64_t>() << " (" << prob[n][k].item<float>() << ")";
      }
      std::cout << "\n";
    }
    if (!logits_path.empty()) sepp::write_safetensors({{"logits", logits}}, logits_path);
  } catch (const c10::Error& e) {
    std::cerr << "classify: " << e.what_without_backtrace() << "\n";
    return 1;
  }
  return 0;
}
