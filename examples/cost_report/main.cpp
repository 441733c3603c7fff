// cost_report: the main job. What training and storing a model really cost on this machine, as
// baselines that the optimized variants (mixed precision, quantization, pruning, distillation,
// low rank) are later measured against, row for row. Two sections:
//
// "training baselines (fp32)": the models of examples/ trained with their recipes
// (frugal/nn/models.hpp) by the same library loops the examples call (frugal/nn/train.hpp):
//   mlp_digits   MLP 64-256-128-10 on scikit-learn's 8x8 digits (80/20 split): test accuracy;
//   cnn_digits   the small CNN on the digits as 1x8x8 images: test accuracy;
//   char_gpt     a small GPT on the characters of an English text for a fixed number of steps:
//                validation loss (nats/char) beside the text's unigram entropy;
// each with time per epoch and per 100 steps, samples/s, peak host memory and parameter bytes.
// Rows are workloads; the "variant" column says which version of the training ran (fp32 now).
//
// "weights as stored": the cost of storing and moving one set of weights (default 64M f32
// parameters = 256 MB, Philox normal(0, 0.02), a typical initialisation) in each format:
//   size       bytes stored, scales included, and the compression ratio against f32;
//   encode     f32 -> format time (best of --runs) and its rate (f32 bytes + format bytes) / time;
//   decode     format -> f32 time and rate, likewise;
//   error      round trip f32 -> format -> f32: max |w - w'| and RMS(w - w') / RMS(w), in double;
//   link       time to move the stored bytes over a --link-gbps link (default 25 GB/s).
// Formats: f32 (a copy, the baseline), bf16, f16 (round to nearest even), f8_e4m3 with one f32
// scale per tensor (amax / 448, the FP8 training recipe of Micikevicius et al. 2022), and int4
// with one f32 absmax scale per group of 32 (q = round(x / s), s = amax / 7, saturated to
// [-8, 7], packed two per byte through DType::kI4).
//
// Optimized variants (--techniques, default all) add rows to the training table beside their
// baseline: each technique's rows live in its own file (rows.hpp lists them).
//
// Training runs first (so its peak-memory figures do not include the 256 MB of weights), then
// storage; the tables print in section order. Progress goes to stderr, tables to stdout.
//
// Usage: cost_report [--sections training,storage] [--techniques LIST] [--seeds K]
//                    [--json FILE] [--seed S] [--threads T]
//                    [--mlp-epochs E] [--cnn-epochs E] [--gpt-steps N] [--text PATH]
//                    [--params N] [--runs R] [--link-gbps G] [--quiet]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "frugal/core.hpp"
#include "frugal/nn.hpp"
#include "report.hpp"
#include "rows.hpp"

namespace cost_report {

std::vector<Technique> techniques() {
  return {
      {"amp", "mixed precision: bf16 autocast, fp16 with dynamic loss scaling", amp_rows},
      {"parallel", "data parallel: 2 workers, gradient compression, staleness, local SGD, ZeRO-1",
       parallel_rows},
      {"quant", "quantization: post-training (PTQ) and quantization-aware training (QAT)",
       quant_rows},
      {"prune", "pruning: structured neurons and gradual unstructured, with fine-tuning",
       prune_rows},
      {"lowrank", "low rank: factorized layers, then fine-tuning", lowrank_rows},
      {"distill", "knowledge distillation: small students with and without a teacher",
       distill_rows}};
}

}  // namespace cost_report

namespace {

using namespace cost_report;
namespace nn = frugal::nn;
using frugal::DType;
using frugal::ExecContext;
using frugal::Tensor;

constexpr float kInitStd = 0.02f;  // the weights' standard deviation

/// Splits "a,b,c" into its parts ("" gives none).
std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::size_t b = 0;
  while (b <= v.size() && !v.empty()) {
    const std::size_t e = std::min(v.find(',', b), v.size());
    out.push_back(v.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

// ---- command line --------------------------------------------------------------------------

[[noreturn]] void usage(int code) {
  (code == 0 ? std::cout : std::cerr)
      << "usage: cost_report [options]\n"
         "  --sections S    comma-separated: training, storage (default both)\n"
         "  --techniques T  comma-separated optimized variants of the training rows: amp,\n"
         "                  parallel, quant, prune, lowrank, distill, or none (default all)\n"
         "  --seeds K       rows that average over seeds use seeds S..S+K-1 (default 3)\n"
         "  --json FILE     also write the results as JSON (atomically)\n"
         "  --seed S        seed of the weights, initialisations and shuffling (default 0)\n"
         "  --threads T     CPU threads (default 0 = all cores)\n"
         "  --quiet         no progress bars\n"
         "training:\n"
         "  --mlp-epochs E  epochs of the MLP (default 40)\n"
         "  --cnn-epochs E  epochs of the CNN (default 15)\n"
         "  --gpt-steps N   steps of the GPT (default 400)\n"
         "  --text PATH     text of the GPT (default: the default corpus)\n"
         "storage:\n"
         "  --params N      number of f32 parameters (default 67108864 = 256 MB)\n"
         "  --runs R        timing runs per conversion, the best is reported (default 3)\n"
         "  --link-gbps G   link bandwidth for the 'link time' column (default 25)\n";
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") usage(0);
    if (a == "--quiet") {
      o.quiet = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::cerr << "cost_report: " << a << " needs a value (or is unknown)\n";
      usage(2);
    }
    const std::string v = argv[++i];
    try {
      std::size_t used = v.size();
      if (a == "--params") {
        o.params = std::stoll(v, &used);
      } else if (a == "--json") {
        o.json = v;
      } else if (a == "--text") {
        o.text = v;
      } else if (a == "--sections") {
        o.training = o.storage = false;
        for (const std::string& s : split_list(v)) {
          if (s == "training") {
            o.training = true;
          } else if (s == "storage") {
            o.storage = true;
          } else {
            throw std::invalid_argument(s);
          }
        }
      } else if (a == "--techniques") {
        o.techniques.clear();
        for (const std::string& s : split_list(v)) {
          if (s == "none") continue;
          const auto all = techniques();
          if (std::none_of(all.begin(), all.end(), [&](const Technique& t) { return t.name == s; }))
            throw std::invalid_argument(s);
          o.techniques.push_back(s);
        }
      } else if (a == "--seeds") {
        o.seeds = std::stoi(v, &used);
      } else if (a == "--seed") {
        if (!v.empty() && v[0] == '-') throw std::invalid_argument(v);
        o.seed = std::stoull(v, &used);
      } else if (a == "--threads") {
        o.threads = std::stoi(v, &used);
      } else if (a == "--runs") {
        o.runs = std::stoi(v, &used);
      } else if (a == "--link-gbps") {
        o.link_gbps = std::stod(v, &used);
      } else if (a == "--mlp-epochs") {
        o.mlp_epochs = std::stoll(v, &used);
      } else if (a == "--cnn-epochs") {
        o.cnn_epochs = std::stoll(v, &used);
      } else if (a == "--gpt-steps") {
        o.gpt_steps = std::stoll(v, &used);
      } else {
        std::cerr << "cost_report: unknown option " << a << "\n";
        usage(2);
      }
      if (used != v.size()) throw std::invalid_argument(v);
    } catch (const std::exception&) {
      std::cerr << "cost_report: bad value '" << v << "' for " << a << "\n";
      usage(2);
    }
  }
  if (o.params <= 0 || o.runs <= 0 || o.seeds <= 0 || o.threads < 0 || !(o.link_gbps > 0) || o.mlp_epochs <= 0 ||
      o.cnn_epochs <= 0 || o.gpt_steps <= 0) {
    std::cerr << "cost_report: --params, --runs, --seeds, --mlp-epochs, --cnn-epochs and --gpt-steps must "
                 "be > 0, --threads >= 0, --link-gbps > 0\n";
    usage(2);
  }
  return o;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      return line.substr(line.find_first_not_of(' ', line.find(':') + 1));
    }
  }
  return "unknown cpu";
}

/// The two sections, with what their rows share and their legends.
std::vector<Section> make_sections(const Options& opt) {
  Section training;
  training.key = "training";
  training.title = "training baselines (fp32); the techniques' tables follow";
  training.name_header = "workload";
  training.has_variants = true;
  training.column_order = {"test_accuracy", "val_loss", "unigram_entropy"};
  training.header = {
      "digits: scikit-learn 8x8 digits, 1797 images, 80/20 train/test split (seed 0)"};
  training.header.push_back(
      "text: " + (opt.text.empty() ? nn::default_text_corpus_path() : opt.text) +
      " (first 90% trains, last 10% validates)");
  training.notes = {
      "test acc: on the held-out 20% of the digits; val loss: cross-entropy on the validation "
      "text, nats per character",
      "unigram H: entropy of the text's character distribution, the best loss without context",
      "time excludes evaluation; throughput = training examples (GPT: sequences of 64 "
      "characters) per second",
      "peak host: high-water mark of frugal host allocations while training (parameters, "
      "gradients, AdamW state, data, activations)",
      "params: bytes of the f32 parameters"};

  Section storage;
  storage.key = "storage";
  storage.title = "weights as stored";
  storage.name_header = "format";
  const double mib = static_cast<double>(opt.params) * 4 / double(1 << 20);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.1f", mib);
  storage.header = {std::to_string(opt.params) + " parameters (" + buf +
                    " MiB as f32), Philox4x32-10 normal(0, 0.02), seed " +
                    std::to_string(opt.seed) + "; best of " + std::to_string(opt.runs) +
                    " runs; link " + short_number(opt.link_gbps) + " GB/s"};
  storage.notes = {"size includes scales; ratio = f32 bytes / size",
                   "encode = f32 -> format, decode = format -> f32: best of " +
                       std::to_string(opt.runs) + " runs; GB/s = (f32 bytes + size) / time",
                   "errors of the round trip f32 -> format -> f32, in double: max |w - w'|, "
                   "RMS(w - w') / RMS(w)",
                   "link time = size / link bandwidth"};
  std::vector<Section> sections = {training};
  for (const Technique& t : techniques()) {
    Section s;
    s.key = t.name;
    s.title = t.title;
    s.name_header = "workload";
    s.has_variants = true;
    s.column_order = {"test_accuracy", "val_loss"};
    s.notes = {"each row's baseline is the fp32 row of the same workload in the first table; "
               "time, throughput, peak host and params as there"};
    sections.push_back(std::move(s));
  }
  sections.push_back(storage);
  return sections;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  try {
    const auto start = std::chrono::steady_clock::now();
    RunInfo info;
    info.cores = static_cast<int>(std::thread::hardware_concurrency());
    info.threads = opt.threads;
    info.cpu_model = cpu_model();
    info.seed = opt.seed;

    Env env{opt, ExecContext{}, nullptr};
    env.ctx.num_threads = opt.threads;
    env.ctx.seed = opt.seed;
    std::vector<Record> records;

    if (opt.training) {
      std::vector<Row> rows = baseline_rows();
      std::vector<std::string> table(rows.size(), "training");  // the section of each row
      for (const Technique& t : techniques()) {
        if (std::find(opt.techniques.begin(), opt.techniques.end(), t.name) ==
            opt.techniques.end())
          continue;
        for (Row& r : t.rows()) {
          rows.push_back(std::move(r));
          table.push_back(t.name);
        }
      }
      for (std::size_t i = 0; i < rows.size(); ++i) {
        progress("training (" + std::to_string(i + 1) + "/" + std::to_string(rows.size()) + ") " +
                 rows[i].name + (table[i] == "training" ? "" : " [" + table[i] + "]") + "\n");
        Record rec = rows[i].run(env);
        rec.section = table[i];
        records.push_back(std::move(rec));
      }
    }
    if (opt.storage) {
      const std::string how = "Philox4x32-10 normal(0, 0.02), seed " + std::to_string(opt.seed);
      progress("drawing " + std::to_string(opt.params) + " weights (" + how + ")...");
      const auto t0 = std::chrono::steady_clock::now();
      const Tensor weights = frugal::rand_normal({opt.params}, DType::kF32, frugal::Device::cpu(),
                                                 env.ctx, 0.f, kInitStd);
      progress_more(" " + std::to_string(static_cast<int>(seconds_since(t0) * 1e3)) + " ms\n");
      env.weights = &weights;
      const std::vector<Row> rows = storage_rows();
      for (std::size_t i = 0; i < rows.size(); ++i) {
        progress("storage (" + std::to_string(i + 1) + "/" + std::to_string(rows.size()) + ") ");
        records.push_back(rows[i].run(env));
      }
    }
    std::cerr << std::endl;
    info.total_seconds = seconds_since(start);
    const std::vector<Section> sections = make_sections(opt);
    cost_report::print_tables(info, sections, records);
    if (!opt.json.empty()) {
      cost_report::write_json(opt.json, info, sections, records);
      progress("wrote " + opt.json + "\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "cost_report: " << e.what() << "\n";
    return 1;
  }
}
