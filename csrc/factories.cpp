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

// timm's resnet.py SE models: SE in every block, C / 16 rounded to a multiple of 8 (at least 8).
ResNetOptions timm_se(ResNetOptions o) {
  auto se = o.se_options();
  return o.se(true).se_options(se.rd_divisor(8));
}

// timm's "d" variants: the deep 3x3 stem (32, 32, 64 channels) and average-pool downsampling; "t": the tiered stem
// (24, 32, 64).
ResNetOptions timm_d(ResNetOptions o, int64_t stem_width = 32) {
  return o.stem_type("deep").stem_width(stem_width).avg_down(true);
}
ResNetOptions timm_t(ResNetOptions o) {
  return o.stem_type("deep_tiered").stem_width(32).avg_down(true);
}
// timm's "aa" variants: anti-aliased downsampling by 2x2 average pools.
ResNetOptions timm_aa(ResNetOptions o) {
  return o.aa_layer("avgpool");
}

// SENet-154 (the paper's ILSVRC 2017 entry): 64x4d bottlenecks whose first 1x1 halves the width, the deep stem of
// 64, 64, 128 channels and 3x3 downsample convolutions.
ResNetOptions senet154() {
  return resnext({3, 8, 36, 3}, 64, 4).stem_type("deep").stem_width(64).down_kernel_size(3).block_reduce_first(2);
}

// timm's legacy_* models (senet.py: the original Caffe SENet weights, Cadene's layout, renamed by sepp.convert):
// C // 16 unrounded, the stem's 3x3/2 max pool unpadded in ceil mode, dropout 0.2 before the classifier; SE-ResNet
// bottlenecks stride on their first 1x1, SE-ResNeXt's and SENet-154's on the 3x3; the basic block has a ReLU before
// its SE block.
ResNetOptions legacy(ResNetOptions o) {
  o = o.se(true).stem_pool_ceil_mode(true).drop_rate(0.2);
  if (o.block() == "basic") return o.relu_before_se(true);
  if (o.groups() == 1) return o.stride_in_1x1(true);
  return o;
}

// The paper's CIFAR-10 networks (its table 4 baselines: 6.37 % error for ResNet-110, 5.46 % for ResNet-164): He et
// al. 2016's pre-activation ResNets ("Identity Mappings"), 6n + 2 layers of basic blocks or 9n + 2 of bottlenecks in
// three stages of 16, 32 and 64 planes on 32x32 images, a 3x3 stem of 16 channels, the identity shortcut or, where
// the width or the stride changes, a 1x1 projection of the pre-activated input, and He's initialisation (no
// zero-initialised last layers). With SE (r = 16): on each residual branch after its last convolution, before the sum.
ResNetOptions cifar(const char* block, int64_t n, bool se) {
  return ResNetOptions()
      .block(block)
      .layers({n, n, n})
      .stage_planes({16, 32, 64})
      .stem_type("cifar")
      .stem_width(16)
      .preact(true)
      .num_classes(10)
      .zero_init_last(false)
      .se(se);
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
      // timm's names and models: SE widths rounded to multiples of 8.
      {"seresnet18", timm_se(resnet("basic", {2, 2, 2, 2})), "timm seresnet18"},
      {"seresnet34", timm_se(resnet("basic", {3, 4, 6, 3})), "timm seresnet34"},
      {"seresnet50", timm_se(resnet("bottleneck", {3, 4, 6, 3})), "timm seresnet50"},
      {"seresnet50t", timm_t(timm_se(resnet("bottleneck", {3, 4, 6, 3}))), "timm seresnet50t (tiered deep stem)"},
      {"seresnet101", timm_se(resnet("bottleneck", {3, 4, 23, 3})), "timm seresnet101"},
      {"seresnet152", timm_se(resnet("bottleneck", {3, 8, 36, 3})), "timm seresnet152"},
      {"seresnet152d", timm_d(timm_se(resnet("bottleneck", {3, 8, 36, 3}))), "timm seresnet152d (deep stem, avg down)"},
      {"seresnet200d", timm_d(timm_se(resnet("bottleneck", {3, 24, 36, 3}))),
       "timm seresnet200d (deep stem, avg down)"},
      {"seresnet269d", timm_d(timm_se(resnet("bottleneck", {3, 30, 48, 8}))),
       "timm seresnet269d (deep stem, avg down)"},
      {"seresnetaa50d", timm_aa(timm_d(timm_se(resnet("bottleneck", {3, 4, 6, 3})))),
       "timm seresnetaa50d (deep stem, avg down, anti-aliased)"},
      {"seresnext26d_32x4d", timm_d(timm_se(resnext({2, 2, 2, 2}, 32, 4))), "timm seresnext26d_32x4d"},
      {"seresnext26t_32x4d", timm_t(timm_se(resnext({2, 2, 2, 2}, 32, 4))), "timm seresnext26t_32x4d"},
      {"seresnext50_32x4d", timm_se(resnext({3, 4, 6, 3}, 32, 4)), "timm seresnext50_32x4d"},
      {"seresnext101_32x4d", timm_se(resnext({3, 4, 23, 3}, 32, 4)), "timm seresnext101_32x4d"},
      {"seresnext101_32x8d", timm_se(resnext({3, 4, 23, 3}, 32, 8)), "timm seresnext101_32x8d"},
      {"seresnext101_64x4d", timm_se(resnext({3, 4, 23, 3}, 64, 4)), "timm seresnext101_64x4d"},
      {"seresnext101d_32x8d", timm_d(timm_se(resnext({3, 4, 23, 3}, 32, 8))), "timm seresnext101d_32x8d"},
      {"seresnextaa101d_32x8d", timm_aa(timm_d(timm_se(resnext({3, 4, 23, 3}, 32, 8)))), "timm seresnextaa101d_32x8d"},
      {"seresnextaa201d_32x8d", timm_aa(timm_d(timm_se(resnext({3, 24, 36, 4}, 32, 8)), 64)),
       "timm seresnextaa201d_32x8d"},
      {"senet154", timm_se(senet154()), "SENet-154 (timm senet154: the paper's ILSVRC 2017 winner, timm's layout)"},
      // timm's legacy names: the original Caffe SENet weights (sepp.convert's "timm_legacy" layout).
      {"legacy_seresnet18", legacy(resnet("basic", {2, 2, 2, 2})), "timm legacy_seresnet18 (Caffe layout)"},
      {"legacy_seresnet34", legacy(resnet("basic", {3, 4, 6, 3})), "timm legacy_seresnet34 (Caffe layout)"},
      {"legacy_seresnet50", legacy(resnet("bottleneck", {3, 4, 6, 3})), "timm legacy_seresnet50 (Caffe layout)"},
      {"legacy_seresnet101", legacy(resnet("bottleneck", {3, 4, 23, 3})), "timm legacy_seresnet101 (Caffe layout)"},
      {"legacy_seresnet152", legacy(resnet("bottleneck", {3, 8, 36, 3})), "timm legacy_seresnet152 (Caffe layout)"},
      {"legacy_senet154", legacy(senet154()), "timm legacy_senet154 (SENet-154, the original Caffe weights' layout)"},
      {"legacy_seresnext26_32x4d", legacy(resnext({2, 2, 2, 2}, 32, 4)), "timm legacy_seresnext26_32x4d"},
      {"legacy_seresnext50_32x4d", legacy(resnext({3, 4, 6, 3}, 32, 4)), "timm legacy_seresnext50_32x4d"},
      {"legacy_seresnext101_32x4d", legacy(resnext({3, 4, 23, 3}, 32, 4)), "timm legacy_seresnext101_32x4d"},
      // CIFAR-10 (32x32 images): the pre-activation ResNets and their SE twins.
      {"resnet20_cifar", cifar("basic", 3, false), "pre-activation ResNet-20 for CIFAR (He et al. 2016)"},
      {"resnet32_cifar", cifar("basic", 5, false), "pre-activation ResNet-32 for CIFAR"},
      {"resnet56_cifar", cifar("basic", 9, false), "pre-activation ResNet-56 for CIFAR"},
      {"resnet110_cifar", cifar("basic", 18, false),
       "pre-activation ResNet-110 for CIFAR (the paper's 6.37 % baseline)"},
      {"resnet164_cifar", cifar("bottleneck", 18, false),
       "pre-activation ResNet-164 for CIFAR (bottlenecks; the paper's 5.46 % baseline)"},
      {"se_resnet20_cifar", cifar("basic", 3, true), "SE-ResNet-20 for CIFAR (pre-activation, r = 16)"},
      {"se_resnet32_cifar", cifar("basic", 5, true), "SE-ResNet-32 for CIFAR (pre-activation, r = 16)"},
      {"se_resnet56_cifar", cifar("basic", 9, true), "SE-ResNet-56 for CIFAR (pre-activation, r = 16)"},
      {"se_resnet110_cifar", cifar("basic", 18, true), "SE-ResNet-110 for CIFAR (the paper's 5.21 %)"},
      {"se_resnet164_cifar", cifar("bottleneck", 18, true), "SE-ResNet-164 for CIFAR (the paper's 4.39 %)"},
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
