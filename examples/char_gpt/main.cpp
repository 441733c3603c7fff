// char_gpt: a small GPT (nn::GPT, the llm.c layout) trained on the characters of a text file
// (default: nn::default_text_corpus_path(), Perl's perldiag.pod or Python's pydoc topics), with
// AdamW, linear warm-up then cosine decay, and gradient clipping at norm 1. The first 90% of the
// text trains, the last 10% validates. Reports the training and validation loss in nats per
// character beside the corpus's unigram entropy (the best loss without context: the model must
// end well below it), the time per 100 steps, samples/s and tokens/s, peak host memory and
// parameter bytes, then samples a short text.
//
// Usage: char_gpt [--text PATH] [--steps N] [--batch B] [--lr LR] [--seed S] [--threads T]
//                 [--layers L] [--embd C] [--heads H] [--block T] [--temperature X]
//                 [--sample-chars N] [--json FILE] [--quiet]
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

#include "../common/cli.hpp"
#include "frugal/nn.hpp"

namespace nn = frugal::nn;

int main(int argc, char** argv) {
  nn::Recipe recipe = nn::char_gpt_recipe();
  int64_t& steps = recipe.train.steps;
  int64_t& batch = recipe.train.batch_size;
  double& lr = recipe.adamw.lr;
  int64_t& warmup = recipe.train.warmup_steps;
  std::string text;
  uint64_t seed = 0;
  int threads = 0;
  const nn::GPTConfig preset = nn::char_gpt_config(1, nn::CharGptSize::kSmall);
  int64_t layers = preset.n_layer, embd = preset.n_embd, heads = preset.n_head;
  int64_t block = preset.block_size;
  double temperature = 0.8;
  int64_t sample_len = 300;
  std::string json;
  bool quiet = false;
  examples::Cli cli("char_gpt", "Trains a small character-level GPT on a text file.");
  cli.option("--text", &text, "text file (empty: the default corpus)")
      .option("--steps", &steps, "optimizer steps")
      .option("--batch", &batch, "sequences per step")
      .option("--lr", &lr, "AdamW peak learning rate")
      .option("--warmup", &warmup, "linear warm-up steps (then cosine to lr / 10)")
      .option("--seed", &seed, "initialisation and batch sampling seed")
      .option("--threads", &threads, "CPU threads, 0 = all cores")
      .option("--layers", &layers, "transformer blocks")
      .option("--embd", &embd, "model width n_embd")
      .option("--heads", &heads, "attention heads (divides --embd)")
      .option("--block", &block, "context length in characters")
      .option("--temperature", &temperature, "sampling temperature (0 = greedy)")
      .option("--sample-chars", &sample_len, "characters to sample at the end")
      .option("--json", &json, "also write the results to this JSON file")
      .flag("--quiet", &quiet, "no progress bar");
  cli.parse(argc, argv);
  cli.require(steps > 0 && batch > 0 && lr > 0 && warmup >= 0 && threads >= 0 && layers > 0 &&
                  embd > 0 && heads > 0 && embd % heads == 0 && block > 1 && sample_len >= 0,
              "bad model or training settings");
  try {
    const std::string path = text.empty() ? nn::default_text_corpus_path() : text;
    const nn::CharCorpus corpus = nn::CharCorpus::from_file(path);
    nn::GPTConfig cfg = nn::char_gpt_config(corpus.vocab_size(), nn::CharGptSize::kSmall, seed);
    cfg.n_layer = layers;
    cfg.n_embd = embd;
    cfg.n_head = heads;
    cfg.block_size = block;
    nn::GPT model(cfg);
    // GPT-2 exempts biases and LayerNorm gains from weight decay (parameter groups); a small
    // uniform decay is enough at this scale.
    nn::AdamW opt(model.named_parameters(), recipe.adamw);
    nn::TrainOptions o = recipe.train;
    o.seed = seed;
    o.num_threads = threads;
    o.progress = !quiet;
    const double entropy = corpus.unigram_entropy();
    std::cout << "char_gpt: " << path << ", " << corpus.text().size() << " characters, vocabulary "
              << corpus.vocab_size() << ", unigram entropy " << entropy << " nats/char\n"
              << "GPT " << cfg.n_layer << " layers, " << cfg.n_head << " heads, n_embd "
              << cfg.n_embd << ", block " << cfg.block_size << ": " << model.num_parameters()
              << " parameters; AdamW lr " << lr << " (warm-up " << warmup << ", cosine), batch "
              << batch << ", " << steps << " steps, clip " << o.clip_grad_norm << ", seed " << seed
              << "\n"
              << std::flush;
    const nn::TrainResult r = nn::train_char_gpt(model, opt, corpus, o);
    std::printf(
        "loss (nats/char) train %.4f  val %.4f  unigram entropy %.4f  (val = %.0f %% of it)\n",
        r.final_train_loss, r.val_loss, entropy, 100 * r.val_loss / entropy);
    std::printf("time per 100 steps %.2f s  (%.1f s total), %.1f samples/s, %.0f tokens/s\n",
                r.seconds_per_100_steps, r.train_seconds, r.samples_per_second,
                r.tokens_per_second);
    std::printf("peak host mem %s   parameters %s\n",
                examples::format_bytes(static_cast<double>(r.peak_host_bytes)).c_str(),
                examples::format_bytes(static_cast<double>(r.parameter_bytes)).c_str());
    std::string sample;
    if (sample_len > 0) {
      const std::string prompt = "The ";
      sample = nn::sample_chars(model, corpus, prompt, sample_len, temperature, seed);
      std::cout << "\nsample (temperature " << temperature << "):\n" << prompt << sample << "\n";
    }
    if (!json.empty()) {
      nn::MetricFields f = {
          {"program", std::string("char_gpt")},
          {"corpus.path", path},
          {"corpus.characters", static_cast<int64_t>(corpus.text().size())},
          {"corpus.vocab_size", corpus.vocab_size()},
          {"corpus.unigram_entropy", entropy},
          {"config.n_layer", cfg.n_layer},
          {"config.n_head", cfg.n_head},
          {"config.n_embd", cfg.n_embd},
          {"config.block_size", cfg.block_size},
          {"config.steps", steps},
          {"config.batch_size", batch},
          {"config.lr", lr},
          {"config.warmup_steps", warmup},
          {"config.seed", static_cast<int64_t>(seed)},
          {"config.threads", static_cast<int64_t>(threads)},
          {"machine.cores", static_cast<int64_t>(std::thread::hardware_concurrency())}};
      for (auto& kv : nn::metric_fields(r, "result.")) f.push_back(kv);
      f.push_back({"sample", sample});
      nn::write_metrics_json(json, f);
      std::cout << "wrote " << json << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "char_gpt: " << e.what() << "\n";
    return 1;
  }
}
