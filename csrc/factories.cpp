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

struct Entry {
  std::string name;
  ResNetOptions options;
  std::string description;
};

const std::vector<Entry>& table() {
  static const std::vector<Entry> t = {
      {"resnet18", resnet("basic", {2, 2, 2, 2}), "ResNet-18 (torchvision's layout)"},
      {"resnet34", resnet("basic", {3, 4, 6, 3}), "ResNet-34 (torchvision's layout)"},
      {"resnet50", resnet("bottleneck", {3, 4, 6, 3}), "ResNet-50 (torchvision's layout, 25,557,032 parameters)"},
      {"resnet101", resnet("bottleneck", {3, 4, 23, 3}), "ResNet-101 (torchvision's layout)"},
      {"resnet152", resnet("bottleneck", {3, 8, 36, 3}), "ResNet-152 (torchvision's layout)"},
      {"se_resnet18", with_se(resnet("basic", {2, 2, 2, 2})), "SE-ResNet-18 (SE in every block, r = 16)"},
      {"se_resnet34", with_se(resnet("basic", {3, 4, 6, 3})), "SE-ResNet-34 (SE in every block, r = 16)"},
      {"se_resnet50", with_se(resnet("bottleneck", {3, 4, 6, 3})),
       "SE-ResNet-50 (r = 16; 28,088,024 parameters, timm's seresnet50)"},
      {"se_resnet101", with_se(resnet("bottleneck", {3, 4, 23, 3})), "SE-ResNet-101 (r = 16)"},
      {"se_resnet152", with_se(resnet("bottleneck", {3, 8, 36, 3})), "SE-ResNet-152 (r = 16)"},
      {"se_resnext50_32x4d", with_se(resnext({3, 4, 6, 3}, 32, 4)), "SE-ResNeXt-50 32x4d (r = 16)"},
      {"se_resnext101_32x4d", with_se(resnext({3, 4, 23, 3}, 32, 4)), "SE-ResNeXt-101 32x4d (r = 16)"},
  };
  return t;
}

const Entry& entry(const std::string& name) {
  for (const auto& e : table()) {
    if (e.name == name) {
      return e;
    }
  }
  TORCH_CHECK_VALUE(false, "unknown model '", name, "'; expected one of: ", c10::Join(", ", model_names()));
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& e : table()) {
    names.push_back(e.name);
  }
  return names;
}

ResNetOptions model_config(const std::string& name) {
  return entry(name).options;
}

std::string model_description(const std::string& name) {
  return entry(name).description;
}

ResNet create_model(const std::string& name) {
  return ResNet(model_config(name));
}

}  // namespace sepp
