#pragma once

#include <sepp/export.h>
#include <sepp/resnet.h>

#include <string>
#include <vector>

namespace sepp {

/// The options of a named model ("se_resnet50", ...); throws c10::ValueError listing the known names.
SEPP_API ResNetOptions model_config(const std::string& name);
/// One line on a named model (what it is, where its layout comes from).
SEPP_API std::string model_description(const std::string& name);
/// The names model_config knows, in a stable order.
SEPP_API std::vector<std::string> model_names();
/// A freshly initialised model of that name.
SEPP_API ResNet create_model(const std::string& name);

// One-liners over the table in factories.cpp.
inline ResNet resnet18() {
  return create_model("resnet18");
}
inline ResNet resnet34() {
  return create_model("resnet34");
}
inline ResNet resnet50() {
  return create_model("resnet50");
}
inline ResNet resnet101() {
  return create_model("resnet101");
}
inline ResNet resnet152() {
  return create_model("resnet152");
}
inline ResNet se_resnet18() {
  return create_model("se_resnet18");
}
inline ResNet se_resnet34() {
  return create_model("se_resnet34");
}
inline ResNet se_resnet50() {
  return create_model("se_resnet50");
}
inline ResNet se_resnet101() {
  return create_model("se_resnet101");
}
inline ResNet se_resnet152() {
  return create_model("se_resnet152");
}
inline ResNet se_resnext50_32x4d() {
  return create_model("se_resnext50_32x4d");
}
inline ResNet se_resnext101_32x4d() {
  return create_model("se_resnext101_32x4d");
}

}  // namespace sepp
