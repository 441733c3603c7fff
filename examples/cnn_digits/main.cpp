// cnn_digits: a small convolutional network on scikit-learn's 8x8 digits seen as 1x8x8 images
// (1797 images; 80% train, 20% test by a fixed split): Conv2d(1, 16, 3, pad 1) - BatchNorm2d -
// ReLU - Conv2d(16, 32, 3, pad 1) - BatchNorm2d - ReLU - MaxPool2d(2) - Flatten -
// Linear(512, 10) (nn::make_digits_cnn), trained with AdamW and a cosine learning-rate schedule.
// Prints the test accuracy, time per epoch, samples/s, peak host memory and parameter bytes; --json
// FILE writes them (atomically).
//
// Usage: cnn_digits [--epochs E] [--seed S] [--threads T] [--batch B] [--lr LR] [--json FILE]
//                   [--quiet]
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

#include "../common/cli.hpp"
#include "frugal/nn.hpp"

namespace nn = frugal::nn;

int main(int argc, char** argv) {
  nn::Recipe recipe = nn::cnn_digits_recipe();
  int64_t& epochs = recipe.train.epochs;
  int64_t& batch = recipe.train.batch_size;
  double& lr = recipe.adamw.lr;
  double& weight_decay = recipe.adamw.weight_decay;
  uint64_t seed = 0;
  uint64_t split_seed = 0;
  int threads = 0;
  std::string json;
  bool quiet = false;
  examples::Cli cli("cnn_digits", "Trains a small CNN on the 8x8 digits as 1x8x8 images.");
  cli.option("--epochs", &epochs, "passes over the training set")
      .option("--seed", &seed, "initialisation and shuffling seed")
      .option("--split-seed", &split_seed, "seed of the train/test split")
      .option("--threads", &threads, "CPU threads, 0 = all cores")
      .option("--batch", &batch, "batch size")
      .option("--lr", &lr, "AdamW peak learning rate (cosine to 0)")
      .option("--weight-decay", &weight_decay, "AdamW decoupled weight decay")
      .option("--json", &json, "also write the results to this JSON file")
      .flag("--quiet", &quiet, "no progress bar");
  cli.parse(argc, argv);
  cli.require(epochs > 0 && batch > 0 && threads >= 0 && lr > 0 && weight_decay >= 0,
              "--epochs, --batch and --lr must be > 0, --threads and --weight-decay >= 0");
  try {
    nn::TrainTestData data = nn::split_data(nn::load_digits(), 0.2, split_seed);
    // (N, 64) rows of pixels -> (N, 1, 8, 8) images (row-major: the same memory).
    data.train.inputs = data.train.inputs.reshape({-1, 1, 8, 8});
    data.test.inputs = data.test.inputs.reshape({-1, 1, 8, 8});
    nn::DigitsCnnConfig cfg;
    cfg.seed = seed;
    auto model = nn::make_digits_cnn(cfg);
    nn::AdamW opt(model->named_parameters(), recipe.adamw);
    nn::TrainOptions o = recipe.train;
    o.seed = seed;
    o.num_threads = threads;
    o.progress = !quiet;
    std::cout << "cnn_digits: CNN conv16-bn-relu-conv32-bn-relu-maxpool-linear, "
              << model->num_parameters() << " parameters; " << data.train.labels.numel()
              << " train / " << data.test.labels.numel() << " test images; AdamW lr " << lr
              << " cosine, batch " << batch << ", " << epochs << " epochs, seed " << seed << "\n"
              << std::flush;
    const nn::TrainResult r = nn::train_classifier(*model, opt, data.train, data.test, o);
    std::printf("test accuracy   %.2f %%  (train %.2f %%, final train loss %.4f)\n",
                100 * r.test_accuracy, 100 * r.train_accuracy, r.final_train_loss);
    std::printf("time per epoch  %.1f ms  (%.2f s total), %.0f samples/s\n",
                1e3 * r.seconds_per_epoch, r.train_seconds, r.samples_per_second);
    std::printf("peak host mem   %s   parameters %s\n",
                examples::format_bytes(static_cast<double>(r.peak_host_bytes)).c_str(),
                examples::format_bytes(static_cast<double>(r.parameter_bytes)).c_str());
    if (!json.empty()) {
      nn::MetricFields f = {
          {"program", std::string("cnn_digits")},
          {"model", std::string("Conv2d(1,16,3,p1)-BN-ReLU-Conv2d(16,32,3,p1)-BN-ReLU-MaxPool2d(2)-"
                                "Flatten-Linear(512,10)")},
          {"config.epochs", epochs},
          {"config.batch_size", batch},
          {"config.lr", lr},
          {"config.weight_decay", weight_decay},
          {"config.optimizer", std::string("AdamW, cosine")},
          {"config.seed", static_cast<int64_t>(seed)},
          {"config.split_seed", static_cast<int64_t>(split_seed)},
          {"config.threads", static_cast<int64_t>(threads)},
          {"machine.cores", static_cast<int64_t>(std::thread::hardware_concurrency())}};
      for (auto& kv : nn::metric_fields(r, "result.")) f.push_back(kv);
      nn::write_metrics_json(json, f);
      std::cout << "wrote " << json << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "cnn_digits: " << e.what() << "\n";
    return 1;
  }
}
