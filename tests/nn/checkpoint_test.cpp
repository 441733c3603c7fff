// Checkpoints: resuming from a checkpoint continues training bit for bit on the CPU (2N steps ==
// N steps, save, load into a fresh model and optimizer, N steps), the file layout, and that every
// failed load leaves the model and optimizer untouched.
#include "frugal/nn/checkpoint.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "frugal/core/io.hpp"
#include "frugal/nn/activation.hpp"
#include "frugal/nn/data.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/loss.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/schedule.hpp"
#include "support/check.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::expect_error;

namespace fs = std::filesystem;

/// Identity layer with a buffer counting forward calls (like BatchNorm's num_batches_tracked).
class Counter : public Module {
 public:
  Counter() : calls_(register_buffer("calls", Tensor::zeros({1}, DType::kI64))) {}
  Tensor forward(const Tensor& x) override {
    calls_.fill(static_cast<double>(calls_.to_vector<int64_t>()[0] + 1));
    return x;
  }
  Tensor backward(const Tensor& g) override { return g; }
  std::string type_name() const override { return "Counter"; }

 private:
  Tensor& calls_;
};

std::shared_ptr<Sequential> make_model(uint64_t seed, int64_t hidden = 16) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Linear>(6, hidden, true, seed));
  m->add(std::make_shared<Counter>());
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(hidden, 3, true, seed + 1));
  return m;
}

/// The training run: AdamW with a cosine schedule, clipping, and a shuffled loader whose epoch
/// and batch follow from the step alone (so a resumed run sees the same batches).
struct TrainRun {
  std::shared_ptr<Sequential> model;
  std::unique_ptr<AdamW> opt;
  std::shared_ptr<TensorDataset> data;
  std::unique_ptr<DataLoader> loader;
  CosineWithWarmup schedule{1e-2, 3, 40, 1e-3};
  int64_t step = 0;

  explicit TrainRun(uint64_t init_seed) {
    model = make_model(init_seed);
    opt = std::make_unique<AdamW>(model->named_parameters(), AdamWOptions{.lr = 1e-2});
    LabeledData d = make_classification(40, 6, 3, 5);
    data = std::make_shared<TensorDataset>(d.inputs, d.labels);
    loader = std::make_unique<DataLoader>(
        data, DataLoaderOptions{.batch_size = 8, .shuffle = true, .seed = 99});
  }

  void train(int64_t steps) {
    SoftmaxCrossEntropy loss;
    for (int64_t k = 0; k < steps; ++k, ++step) {
      const int64_t nb = loader->num_batches();
      if (loader->epoch() != step / nb) loader->set_epoch(step / nb);
      Batch b = loader->batch(step % nb);
      opt->zero_grad();
      loss.forward(model->forward(b.input), b.target);
      model->backward(loss.backward());
      clip_grad_norm(model->named_parameters(), 1.0);
      opt->set_lr(schedule.lr_at(step));
      opt->step();
    }
  }

  std::vector<std::vector<float>> values() {
    std::vector<std::vector<float>> out;
    for (Parameter* p : model->parameters()) out.push_back(p->value.to_vector<float>());
    for (const NamedBuffer& b : model->named_buffers()) {
      std::vector<float> v;
      for (int64_t x : b.tensor->to_vector<int64_t>()) v.push_back(static_cast<float>(x));
      out.push_back(v);
    }
    return out;
  }
};

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("frugal_ckpt_test_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(Checkpoint, ResumeIsBitForBit) {
  constexpr int64_t kN = 7;  // crosses an epoch boundary (5 batches per epoch)
  TrainRun straight(1);
  straight.train(2 * kN);

  TrainRun first(1);
  first.train(kN);
  TrainState st{.step = first.step,
                .epoch = first.loader->epoch(),
                .seed = 123,
                .rng_offset = (uint64_t{1} << 60) + 5,
                .extra = {{"note", "half way"}}};
  save_checkpoint(path("ck.safetensors"), *first.model, first.opt.get(), st);

  TrainRun resumed(777);  // different initial weights: everything must come from the file
  TrainState got = load_checkpoint(path("ck.safetensors"), *resumed.model, resumed.opt.get());
  EXPECT_EQ(got.step, kN);
  EXPECT_EQ(got.epoch, st.epoch);
  EXPECT_EQ(got.seed, 123u);
  EXPECT_EQ(got.rng_offset, (uint64_t{1} << 60) + 5);
  EXPECT_EQ(got.extra, st.extra);
  EXPECT_EQ(resumed.opt->step_count(), kN);
  EXPECT_EQ(resumed.opt->lr(), first.opt->lr());
  resumed.step = got.step;
  resumed.train(kN);

  const auto a = straight.values();
  const auto b = resumed.values();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "tensor " << i;
  EXPECT_EQ(a.back(), (std::vector<float>{2 * kN}));  // the buffer counted every forward
}

TEST_F(Checkpoint, FileLayout) {
  auto m = make_model(3);
  SGD opt(m->named_parameters(), {.lr = 0.1, .momentum = 0.9});
  TrainState st;
  st.step = 4;
  save_checkpoint(path("c.safetensors"), *m, &opt, st);
  SafetensorsFile f = load_safetensors(path("c.safetensors"));
  EXPECT_EQ(f.tensors.count("model.0.weight"), 1u);
  EXPECT_EQ(f.tensors.count("model.3.bias"), 1u);
  EXPECT_EQ(f.tensors.count("model.1.calls"), 1u);
  EXPECT_EQ(f.tensors.count("optim.0.weight.momentum_buffer"), 1u);
  EXPECT_EQ(f.metadata.at("optim.type"), "SGD");
  EXPECT_EQ(f.metadata.at("optim.lr"), "0.10000000000000001");
  EXPECT_EQ(f.metadata.at("train.step"), "4");
  EXPECT_EQ(f.metadata.at("frugal.checkpoint"), "1");
  // Model only.
  save_checkpoint(path("m.safetensors"), *m, nullptr, {});
  EXPECT_EQ(load_safetensors(path("m.safetensors")).metadata.count("optim.type"), 0u);
  auto m2 = make_model(8);
  load_checkpoint(path("m.safetensors"), *m2, nullptr);
  EXPECT_EQ(m2->parameters()[0]->value.to_vector<float>(),
            m->parameters()[0]->value.to_vector<float>());
}

TEST_F(Checkpoint, FailedLoadsChangeNothing) {
  auto src = make_model(1);
  AdamW src_opt(src->named_parameters(), {});
  for (Parameter* p : src->parameters()) p->grad.fill(0.5);
  src_opt.step();
  TrainState st;
  st.step = 1;
  save_checkpoint(path("ok.safetensors"), *src, &src_opt, st);

  auto target = make_model(2);
  AdamW opt(target->named_parameters(), {});
  const auto before = [&] {
    std::vector<std::vector<float>> v;
    for (Parameter* p : target->parameters()) v.push_back(p->value.to_vector<float>());
    for (auto& [k, t] : opt.state().tensors) v.push_back(t.to_vector<float>());
    return v;
  };
  const auto original = before();

  const std::string missing = path("missing.safetensors");
  expect_error([&] { load_checkpoint(missing, *target, &opt); }, ErrorCode::kIoError,
               "load_checkpoint", missing);

  const std::string garbage = path("garbage.safetensors");
  std::ofstream(garbage, std::ios::binary) << "this is not a safetensors file at all";
  expect_error([&] { load_checkpoint(garbage, *target, &opt); }, ErrorCode::kIoError,
               "load_checkpoint", garbage);

  // Wrong optimizer type: the model is not touched either.
  SGD sgd(target->named_parameters(), {.lr = 0.1});
  expect_error([&] { load_checkpoint(path("ok.safetensors"), *target, &sgd); },
               ErrorCode::kInvalidArgument, "load_checkpoint", "AdamW");

  // A model whose hidden width differs.
  auto wide = make_model(1, 17);
  save_checkpoint(path("wide.safetensors"), *wide, nullptr, {});
  expect_error([&] { load_checkpoint(path("wide.safetensors"), *target, nullptr); },
               ErrorCode::kInvalidArgument, "load_checkpoint", "shape");

  // A model with an extra layer: unexpected tensors.
  auto bigger = make_model(1);
  bigger->add(std::make_shared<Linear>(3, 3));
  save_checkpoint(path("bigger.safetensors"), *bigger, nullptr, {});
  expect_error([&] { load_checkpoint(path("bigger.safetensors"), *target, nullptr); },
               ErrorCode::kInvalidArgument, "load_checkpoint", "model.4.");

  // No optimizer state in the file but an optimizer given.
  save_checkpoint(path("noopt.safetensors"), *src, nullptr, {});
  expect_error([&] { load_checkpoint(path("noopt.safetensors"), *target, &opt); },
               ErrorCode::kInvalidArgument, "load_checkpoint", "no optimizer state");

  // A corrupt optimizer slot (wrong shape) after valid model tensors.
  SafetensorsFile f = load_safetensors(path("ok.safetensors"));
  f.tensors["optim.0.weight.exp_avg"] = Tensor::zeros({2, 2});
  save_safetensors(path("badslot.safetensors"), f);
  expect_error([&] { load_checkpoint(path("badslot.safetensors"), *target, &opt); },
               ErrorCode::kInvalidArgument, "load_checkpoint", "exp_avg");
  // A bad metadata value.
  f = load_safetensors(path("ok.safetensors"));
  f.metadata["train.step"] = "seven";
  save_safetensors(path("badmeta.safetensors"), f);
  expect_error([&] { load_checkpoint(path("badmeta.safetensors"), *target, &opt); },
               ErrorCode::kIoError, "load_checkpoint", "train.step");

  EXPECT_EQ(before(), original);
  EXPECT_EQ(opt.step_count(), 0);
  // And the good file still loads.
  load_checkpoint(path("ok.safetensors"), *target, &opt);
  EXPECT_EQ(opt.step_count(), 1);
  EXPECT_EQ(target->parameters()[0]->value.to_vector<float>(),
            src->parameters()[0]->value.to_vector<float>());
}

}  // namespace
}  // namespace frugal::nn
