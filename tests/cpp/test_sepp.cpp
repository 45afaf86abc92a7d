// C++ tests of libsepp: module shapes, options validation, weights round trip, concurrent inference.

#include <sepp/sepp.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

namespace {

int64_t count_params(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("sepp_cpp_" + std::to_string(::getpid()) + "_" + name)).string();
}

sepp::ResNet small_model() {
  return sepp::ResNet(sepp::ResNetOptions().block("basic").layers({1, 1, 1, 1}).num_classes(7).se(true));
}

}  // namespace

TEST(SEBlock, ShapesAndReducedWidth) {
  sepp::SEBlock se(sepp::SEBlockOptions(256));
  EXPECT_EQ(se->fc1->weight.sizes(), torch::IntArrayRef({16, 256, 1, 1}));
  EXPECT_EQ(se->fc2->weight.sizes(), torch::IntArrayRef({256, 16, 1, 1}));
  auto x = torch::randn({2, 256, 5, 7});
  EXPECT_EQ(se->forward(x).sizes(), x.sizes());
  EXPECT_EQ(se->gate(x).sizes(), torch::IntArrayRef({2, 256, 1, 1}));
  EXPECT_EQ(sepp::SEBlockOptions(64).reduced_channels(), 4);                // the paper's C / r
  EXPECT_EQ(sepp::SEBlockOptions(64).rd_divisor(8).reduced_channels(), 8);  // timm's rounding
  EXPECT_EQ(sepp::SEBlockOptions(64).rd_channels(5).reduced_channels(), 5);
}

TEST(SEBlock, GateBoundsTheScale) {
  sepp::SEBlock se(sepp::SEBlockOptions(32).reduction(4));
  auto s = se->gate(torch::randn({3, 32, 4, 4}));
  EXPECT_TRUE((s > 0).all().item<bool>());
  EXPECT_TRUE((s < 1).all().item<bool>());
}

TEST(Options, InvalidValuesThrowValueErrors) {
  EXPECT_THROW(sepp::SEBlock(sepp::SEBlockOptions(64).reduction(0)), c10::ValueError);
  EXPECT_THROW(sepp::SEBlock(sepp::SEBlockOptions(64).reduction(65)), c10::ValueError);
  EXPECT_THROW(sepp::SEBlock(sepp::SEBlockOptions(64).squeeze("mean")), c10::ValueError);
  EXPECT_THROW(sepp::SEBlock(sepp::SEBlockOptions(64).gate("relu")), c10::ValueError);
  EXPECT_THROW(sepp::ResNet(sepp::ResNetOptions().se(true).se_strategy("after")), c10::ValueError);
  EXPECT_THROW(sepp::ResNet(sepp::ResNetOptions().layers({1, 1, 1})), c10::ValueError);
  EXPECT_THROW(sepp::create_model("se_resnet51"), c10::ValueError);
  try {
    sepp::SEBlock(sepp::SEBlockOptions(64).squeeze("mean"));
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("got 'mean'"), std::string::npos);
  }
}

TEST(Model, ShapesAndParameterCounts) {
  EXPECT_EQ(count_params(*sepp::se_resnet50()), 28088024);
  EXPECT_EQ(count_params(*sepp::resnet50()), 25557032);
  auto m = sepp::resnet18();
  m->eval();
  torch::NoGradGuard ng;
  EXPECT_EQ(m->forward(torch::randn({2, 3, 64, 64})).sizes(), torch::IntArrayRef({2, 1000}));
  auto stages = m->forward_stages(torch::randn({1, 3, 64, 64}));
  ASSERT_EQ(stages.size(), 4u);
  EXPECT_EQ(stages[3].sizes(), torch::IntArrayRef({1, 512, 2, 2}));
  m->reset_classifier(3);
  EXPECT_EQ(m->forward(torch::randn({1, 3, 64, 64})).sizes(), torch::IntArrayRef({1, 3}));
}

TEST(Model, BadInputThrows) {
  auto m = small_model();
  EXPECT_THROW(m->forward(torch::randn({3, 32, 32})), c10::ValueError);
  EXPECT_THROW(m->forward(torch::randn({1, 4, 32, 32})), c10::ValueError);
  EXPECT_THROW(m->forward(torch::ones({1, 3, 32, 32}, torch::kLong)), c10::TypeError);
}

TEST(Weights, RoundTripGivesIdenticalOutputs) {
  auto a = small_model();
  {
    torch::NoGradGuard ng;
    for (auto& p : a->parameters()) p.normal_(0, 0.1);
  }
  a->eval();
  const auto path = temp_path("round_trip.safetensors");
  sepp::save_weights(a, path);  // the holder, as torch::save takes it
  auto b = small_model();
  b->eval();
  sepp::load_weights(b, path);
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
  std::remove(path.c_str());
}

TEST(Weights, BadFileThrowsAndLeavesTheModelUnchanged) {
  const auto path = temp_path("bad.safetensors");
  {
    std::ofstream f(path, std::ios::binary);
    f << "\x05\x00";
  }
  auto m = small_model();
  const auto before = m->stem_conv().weight.clone();
  try {
    sepp::load_weights(*m, path);
    FAIL() << "expected c10::ValueError";
  } catch (const c10::ValueError& e) {
    const std::string what = e.what_without_backtrace();
    EXPECT_NE(what.find(path), std::string::npos);
    EXPECT_NE(what.find("truncated file"), std::string::npos);
  }
  EXPECT_TRUE(torch::equal(before, m->stem_conv().weight));
  auto other = sepp::resnet18();
  sepp::save_weights(*other, path);
  EXPECT_THROW(sepp::load_weights(*m, path), c10::ValueError);  // another model's names and shapes
  EXPECT_TRUE(torch::equal(before, m->stem_conv().weight));
  std::remove(path.c_str());
}

TEST(Concurrency, EightThreadsForwardOneEvalModelIdentically) {
  auto m = sepp::se_resnet18();
  m->eval();
  auto x = torch::randn({2, 3, 64, 64});
  torch::Tensor expected;
  {
    torch::NoGradGuard ng;
    expected = m->forward(x);
  }
  std::vector<torch::Tensor> out(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      torch::NoGradGuard ng;
      for (int k = 0; k < 3; ++k) out[i] = m->forward(x);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& o : out) EXPECT_TRUE(torch::equal(o, expected));
}

TEST(Clone, IsDeepAndEqual) {
  auto m = small_model();
  m->eval();
  auto c = std::dynamic_pointer_cast<sepp::ResNetImpl>(m->clone());
  ASSERT_TRUE(c);
  torch::NoGradGuard ng;
  auto x = torch::randn({1, 3, 32, 32});
  EXPECT_TRUE(torch::equal(m->forward(x), c->forward(x)));
  c->stem_conv().weight.add_(1.0);
  EXPECT_FALSE(torch::equal(m->stem_conv().weight, c->stem_conv().weight));
}

TEST(OptimizeForInference, MatchesEagerAndChecksInput) {
  torch::manual_seed(0);
  auto m = sepp::se_resnet50();
  {
    torch::NoGradGuard ng;
    for (auto& b : m->named_buffers())
      if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
    for (auto& p : m->named_parameters())
      if (p.value().dim() == 1) p.value().uniform_(0.5, 1.0);  // BN scales and all biases: no zero branch
  }
  m->eval();
  const auto o = sepp::optimize_for_inference(m, sepp::InferenceOptions().input_size({1, 3, 96, 96}));
  for (int64_t batch : {1, 2}) {
    const auto x = torch::randn({batch, 3, 96, 96});
    torch::NoGradGuard ng;
    const auto want = m->forward(x);
    const auto got = o.forward(x);
    EXPECT_LT(((got - want).abs().max() / want.abs().max()).item<double>(), 1e-4) << "batch " << batch;
  }
  EXPECT_EQ(o.dtype(), torch::kFloat);
  EXPECT_EQ(o.num_features(), 2048);
  EXPECT_THROW(o.forward(torch::randn({1, 4, 96, 96})), c10::ValueError);
  EXPECT_THROW(o.forward(torch::randn({1, 3, 96, 96}, torch::kDouble)), c10::TypeError);
  EXPECT_THROW(sepp::optimize_for_inference(m, sepp::InferenceOptions().dtype(torch::kHalf)), c10::TypeError);
}

TEST(OptimizeForInference, PooledActivationsAreReusedAndOutliveTheModel) {
  torch::manual_seed(0);
  sepp::ResNet m(sepp::ResNetOptions().block("basic").layers({1, 1, 1, 1}).num_classes(1000).se(true));
  m->eval();
  torch::NoGradGuard ng;
  // 1000 logits x 80 images: an output large enough (312 KiB) to come from the activation pool.
  const auto x = torch::randn({80, 3, 32, 32});
  const auto want = m->forward(x);
  torch::Tensor first, again;
  {
    const auto o = sepp::optimize_for_inference(m, sepp::InferenceOptions().input_size({80, 3, 32, 32}));
    first = o.forward(x);
    const auto held = o.activation_bytes();
    EXPECT_GT(held, 0);
    again = o.forward(x);
    EXPECT_EQ(o.activation_bytes(), held + static_cast<int64_t>(first.nbytes()));  // `first` is still in use
  }
  // The model and its pool are gone; the outputs still hold their memory.
  EXPECT_TRUE(torch::equal(first, again));
  EXPECT_LT(((first - want).abs().max() / want.abs().max()).item<double>(), 1e-4);
}

TEST(Observe, AMarkedChildIsHandedToTheObserverInTimmsOrderAndItsOutputIsUsed) {
  torch::manual_seed(0);
  auto m = small_model();
  m->eval();
  torch::NoGradGuard ng;
  for (auto& p : m->named_parameters())
    if (p.value().dim() == 1) p.value().uniform_(0.5, 1.0);  // BN scales (zero-initialised last ones too)
  const auto x = torch::randn({2, 3, 32, 32});
  const auto plain = m->forward(x);

  auto& block = *m->layer2->ptr<sepp::BasicBlockImpl>(0);
  std::vector<std::string> seen;
  std::map<const torch::nn::Module*, std::string> names;
  for (const auto& item : m->named_modules("", /*include_self=*/false)) names[item.value().get()] = item.key();
  sepp::set_observer([&](const torch::nn::Module& mod, const torch::Tensor& in, sepp::Continuation compute) {
    seen.push_back(names.at(&mod));
    return compute(in);
  });
  const std::vector<const torch::nn::Module*> marked = {
      block.se->fc1.get(), block.conv1.get(), block.se.get(), block.downsample.get(), block.act2.get()};
  for (const auto* mod : marked) sepp::observe(*mod, true);
  EXPECT_TRUE(sepp::is_observed(*block.conv1));
  // Observed, the SE block runs unfused; the answer is the same up to rounding.
  EXPECT_TRUE(torch::allclose(m->forward(x), plain, 1e-5, 1e-6));
  // timm's order: the branch, its SE block (and inside it fc1), the shortcut, the ReLU after the sum.
  const std::vector<std::string> expected = {
      "layer2.0.conv1", "layer2.0.se", "layer2.0.se.fc1", "layer2.0.downsample", "layer2.0.act2"};
  EXPECT_EQ(seen, expected);

  // The observer's output is what the caller continues with.
  sepp::set_observer([&](const torch::nn::Module& mod, const torch::Tensor& in, sepp::Continuation compute) {
    auto out = compute(in);
    return &mod == block.se.get() ? torch::zeros_like(out) : out;
  });
  EXPECT_FALSE(torch::allclose(m->forward(x), plain, 1e-3, 1e-3));

  for (const auto* mod : marked) sepp::observe(*mod, false);
  sepp::set_observer({});
  EXPECT_FALSE(sepp::observing());
  EXPECT_TRUE(torch::equal(m->forward(x), plain));  // unmarked: the fused forward again
}

// The self-check mechanism, on the CPU kernels (CUDA's are checked by default, but there is no GPU in CI) with a fault
// injected into se_scale's check: the operator must answer through ATen, and the record must say why.
TEST(KernelChecks, AKernelThatFailsItsCheckIsReplacedByAten) {
  sepp::ops::configure_kernel_checks_for_testing(true, "se_scale");
  const auto x = torch::randn({2, 13, 5, 3}).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto s = torch::rand({2, 13}), idn = torch::randn({2, 13, 5, 3});
  const auto y = sepp::ops::se_scale(x, s, idn, true);
  const auto want =
      torch::relu(x.to(torch::kDouble) * s.to(torch::kDouble).view({2, 13, 1, 1}) + idn.to(torch::kDouble));
  EXPECT_TRUE(torch::allclose(y.to(torch::kDouble), want, 1e-6, 1e-6));
  EXPECT_TRUE(y.is_contiguous(torch::MemoryFormat::ChannelsLast));
  const auto z = sepp::ops::se_squeeze(x);
  EXPECT_TRUE(torch::allclose(z.to(torch::kDouble), x.to(torch::kDouble).mean({2, 3}), 1e-6, 1e-7));
  const auto checks = sepp::ops::kernel_checks();
  ASSERT_EQ(checks.size(), 2u);
  EXPECT_EQ(checks[0].op, "se_scale");
  EXPECT_EQ(checks[0].state, "failed");
  EXPECT_NE(checks[0].error.find("max error"), std::string::npos) << checks[0].error;
  EXPECT_EQ(checks[1].op, "se_squeeze");
  EXPECT_EQ(checks[1].state, "ok");
  sepp::ops::configure_kernel_checks_for_testing(false, "");
  EXPECT_TRUE(sepp::ops::kernel_checks().empty());
}
