#include <sepp/factories.h>

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <utility>

namespace sepp {

namespace {

ResNetOptions resnet(const char* block, std::vector<int64_t> layers) {
  return ResNetOptions().block(block).layers(std::move(layers));
}

// SE in every stage, the paper's r = 16 and no rounding of C / r.
ResNetOptions with_se(ResNetOptions o) {
  return o.se(true);
}

ResNetOptions resnext(std::vector<int64_t> layers, int64_t groups, int64_t width_per_group) {
  return resnet("bottleneck", std::move(layers)).groups(groups).width_per_group(width_per_group);
}

const std::vector<std::pair<std::string, ResNetOptions>>& table() {
  static const std::vector<std::pair<std::string, ResNetOptions>> t = {
      {"resnet18", resnet("basic", {2, 2, 2, 2})},
      {"resnet34", resnet("basic", {3, 4, 6, 3})},
      {"resnet50", resnet("bottleneck", {3, 4, 6, 3})},
      {"resnet101", resnet("bottleneck", {3, 4, 23, 3})},
      {"resnet152", resnet("bottleneck", {3, 8, 36, 3})},
      {"se_resnet18", with_se(resnet("basic", {2, 2, 2, 2}))},
      {"se_resnet34", with_se(resnet("basic", {3, 4, 6, 3}))},
      {"se_resnet50", with_se(resnet("bottleneck", {3, 4, 6, 3}))},
      {"se_resnet101", with_se(resnet("bottleneck", {3, 4, 23, 3}))},
      {"se_resnet152", with_se(resnet("bottleneck", {3, 8, 36, 3}))},
      {"se_resnext50_32x4d", with_se(resnext({3, 4, 6, 3}, 32, 4))},
      {"se_resnext101_32x4d", with_se(resnext({3, 4, 23, 3}, 32, 4))},
  };
  return t;
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& [name, _] : table()) {
    names.push_back(name);
  }
  return names;
}

ResNetOptions model_config(const std::string& name) {
  for (const auto& [n, o] : table()) {
    if (n == name) {
      return o;
    }
  }
  TORCH_CHECK_VALUE(false, "unknown model '", name, "'; expected one of: ", c10::Join(", ", model_names()));
}

ResNet create_model(const std::string& name) {
  return ResNet(model_config(name));
}

}  // namespace sepp
