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
// Training runs first (so its peak-memory figures do not include the 256 MB of weights), then
// storage; the tables print in section order. Progress goes to stderr, tables to stdout.
//
// Usage: cost_report [--sections training,storage] [--json FILE] [--seed S] [--threads T]
//                    [--mlp-epochs E] [--cnn-epochs E] [--gpt-steps N] [--text PATH]
//                    [--params N] [--runs R] [--link-gbps G] [--quiet]
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "frugal/core.hpp"
#include "frugal/nn.hpp"
#include "report.hpp"

namespace {

using cost_report::Record;
using cost_report::RunInfo;
using cost_report::Section;
namespace nn = frugal::nn;
using frugal::DType;
using frugal::ExecContext;
using frugal::Tensor;

constexpr int64_t kGroup = 32;       // int4 scale group
constexpr float kInitStd = 0.02f;    // the weights' standard deviation
constexpr int64_t kChunk = 1 << 16;  // elements per parallel task in the helpers below

/// Progress goes to stderr (the table and JSON stay clean): a new line, then its continuations.
void progress(const std::string& msg) { std::cerr << "[cost_report] " << msg << std::flush; }
void progress_more(const std::string& msg) { std::cerr << msg << std::flush; }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Runs body(begin, end) over [0, n) in chunks of `grain`, inside ctx's arena.
template <class Body>
void parallel_chunks(const ExecContext& ctx, int64_t n, int64_t grain, Body body) {
  ctx.run([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, n, grain),
        [&](const tbb::blocked_range<int64_t>& r) { body(r.begin(), r.end()); },
        tbb::simple_partitioner());
  });
}

/// max |x| of a contiguous f32 buffer.
float amax(const float* x, int64_t n, const ExecContext& ctx) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<float> partial(static_cast<std::size_t>(chunks), 0.f);
  parallel_chunks(ctx, chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      float m = 0.f;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i)
        m = std::max(m, std::fabs(x[i]));
      partial[static_cast<std::size_t>(c)] = m;
    }
  });
  float m = 0.f;
  for (float p : partial) m = std::max(m, p);
  return m;
}

/// y[i] = x[i] * s.
void scale(const float* x, float* y, int64_t n, float s, const ExecContext& ctx) {
  parallel_chunks(ctx, n, kChunk, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = x[i] * s;
  });
}

// ---- storage formats ---------------------------------------------------------------------

/// One storage format: encode f32 weights into buffers it owns (allocated once, reused by every
/// run so only the first run pays page faults) and decode them back into an f32 tensor.
class Codec {
 public:
  virtual ~Codec() = default;
  virtual void encode(const Tensor& w, const ExecContext& ctx) = 0;
  virtual void decode(Tensor& out, const ExecContext& ctx) = 0;
  /// Bytes stored: the encoded elements plus any scales.
  virtual int64_t stored_bytes() const = 0;
};

/// A plain dtype conversion (Tensor::copy_from, the path of Tensor::to(dtype)); f32 is a copy.
class CastCodec : public Codec {
 public:
  CastCodec(DType t, int64_t n) : q_(Tensor::empty({n}, t)) {}
  void encode(const Tensor& w, const ExecContext& ctx) override { q_.copy_from(w, ctx); }
  void decode(Tensor& out, const ExecContext& ctx) override { out.copy_from(q_, ctx); }
  int64_t stored_bytes() const override { return q_.nbytes(); }

 private:
  Tensor q_;
};

/// f8_e4m3 with one f32 scale per tensor: q = e4m3(w / s), s = amax / 448 (448 = largest E4M3).
class Fp8PerTensorCodec : public Codec {
 public:
  explicit Fp8PerTensorCodec(int64_t n)
      : q_(Tensor::empty({n}, DType::kF8E4M3)), tmp_(Tensor::empty({n}, DType::kF32)) {}
  void encode(const Tensor& w, const ExecContext& ctx) override {
    const int64_t n = w.numel();
    const float m = amax(w.data<float>(), n, ctx);
    scale_ = m > 0.f ? m / frugal::kMaxE4M3 : 1.f;
    scale(w.data<float>(), tmp_.data<float>(), n, 1.f / scale_, ctx);
    q_.copy_from(tmp_, ctx);
  }
  void decode(Tensor& out, const ExecContext& ctx) override {
    out.copy_from(q_, ctx);
    scale(out.data<float>(), out.data<float>(), out.numel(), scale_, ctx);
  }
  int64_t stored_bytes() const override { return q_.nbytes() + int64_t{sizeof(float)}; }

 private:
  Tensor q_, tmp_;
  float scale_ = 1.f;
};

/// Packed int4 with one f32 absmax scale per group of 32: s = amax / 7, q = round(x / s)
/// saturated to [-8, 7] by the f32 -> i4 conversion, two per byte.
class Int4GroupCodec : public Codec {
 public:
  explicit Int4GroupCodec(int64_t n)
      : q_(Tensor::empty({n}, DType::kI4)),
        tmp_(Tensor::empty({n}, DType::kF32)),
        scales_(Tensor::empty({(n + kGroup - 1) / kGroup}, DType::kF32)) {}
  void encode(const Tensor& w, const ExecContext& ctx) override {
    const int64_t n = w.numel(), groups = scales_.numel();
    const float* x = w.data<float>();
    float* y = tmp_.data<float>();
    float* s = scales_.data<float>();
    parallel_chunks(ctx, groups, kChunk / kGroup, [&](int64_t gb, int64_t ge) {
      for (int64_t g = gb; g < ge; ++g) {
        const int64_t b = g * kGroup, e = std::min(n, b + kGroup);
        float m = 0.f;
        for (int64_t i = b; i < e; ++i) m = std::max(m, std::fabs(x[i]));
        const float sg = m > 0.f ? m / 7.f : 1.f;
        s[g] = sg;
        for (int64_t i = b; i < e; ++i) y[i] = x[i] / sg;
      }
    });
    q_.copy_from(tmp_, ctx);
  }
  void decode(Tensor& out, const ExecContext& ctx) override {
    out.copy_from(q_, ctx);
    const int64_t n = out.numel();
    float* y = out.data<float>();
    const float* s = scales_.data<float>();
    parallel_chunks(ctx, scales_.numel(), kChunk / kGroup, [&](int64_t gb, int64_t ge) {
      for (int64_t g = gb; g < ge; ++g) {
        for (int64_t i = g * kGroup; i < std::min(n, (g + 1) * kGroup); ++i) y[i] *= s[g];
      }
    });
  }
  int64_t stored_bytes() const override { return q_.nbytes() + scales_.nbytes(); }

 private:
  Tensor q_, tmp_, scales_;
};

struct Format {
  std::string name;
  std::string description;
  std::function<std::unique_ptr<Codec>(int64_t n)> make;
};

// ---- options -------------------------------------------------------------------------------

struct Options {
  bool training = true;
  bool storage = true;
  std::string json;
  uint64_t seed = 0;
  int threads = 0;
  bool quiet = false;
  // training
  int64_t mlp_epochs = nn::mlp_digits_recipe().train.epochs;
  int64_t cnn_epochs = nn::cnn_digits_recipe().train.epochs;
  int64_t gpt_steps = 400;  // the example runs 1500; a few hundred keep `make demo` short
  std::string text;
  // storage
  int64_t params = int64_t{64} << 20;
  int runs = 3;
  double link_gbps = 25;
};

// ---- rows ----------------------------------------------------------------------------------

/// What every row gets: the options, the context, and (storage rows) the weights.
struct Env {
  const Options& opt;
  ExecContext ctx;
  const Tensor* weights = nullptr;
};

/// A row of the report: its section, a name, and a measurement that produces one Record.
struct Row {
  std::string section;
  std::string name;
  std::function<Record(const Env&)> run;
};

struct ErrorStats {
  double max_abs = 0, rel_rms = 0;
};

/// max |a - b| and RMS(a - b) / RMS(a), in double, summed in a fixed order (thread-independent).
ErrorStats round_trip_error(const Tensor& a, const Tensor& b, const ExecContext& ctx) {
  const int64_t n = a.numel(), chunks = (n + kChunk - 1) / kChunk;
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  struct Partial {
    double max_abs = 0, err2 = 0, ref2 = 0;
  };
  std::vector<Partial> part(static_cast<std::size_t>(chunks));
  parallel_chunks(ctx, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      Partial p;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
        const double d = static_cast<double>(x[i]) - static_cast<double>(y[i]);
        p.max_abs = std::max(p.max_abs, std::fabs(d));
        p.err2 += d * d;
        p.ref2 += static_cast<double>(x[i]) * static_cast<double>(x[i]);
      }
      part[static_cast<std::size_t>(c)] = p;
    }
  });
  Partial t;
  for (const Partial& p : part) {
    t.max_abs = std::max(t.max_abs, p.max_abs);
    t.err2 += p.err2;
    t.ref2 += p.ref2;
  }
  return {t.max_abs, t.ref2 > 0 ? std::sqrt(t.err2 / t.ref2) : 0.0};
}

/// "25" or "12.5": a number as the unit labels show it.
std::string short_number(double g) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", g);
  return buf;
}

Row storage_row(Format f) {
  return {"storage", f.name, [f](const Env& env) {
            const Tensor& w = *env.weights;
            const int runs = env.opt.runs;
            const int64_t n = w.numel();
            const double f32_bytes = static_cast<double>(w.nbytes());
            std::unique_ptr<Codec> codec = f.make(n);
            Tensor back = Tensor::empty({n}, DType::kF32);
            double enc = INFINITY, dec = INFINITY;
            progress_more(f.name + ": encode x" + std::to_string(runs));
            for (int r = 0; r < runs; ++r) {
              const auto t0 = std::chrono::steady_clock::now();
              codec->encode(w, env.ctx);
              enc = std::min(enc, seconds_since(t0));
              progress_more(".");
            }
            progress_more(" decode x" + std::to_string(runs));
            for (int r = 0; r < runs; ++r) {
              const auto t0 = std::chrono::steady_clock::now();
              codec->decode(back, env.ctx);
              dec = std::min(dec, seconds_since(t0));
              progress_more(".");
            }
            progress_more(" error\n");
            const ErrorStats err = round_trip_error(w, back, env.ctx);
            const double stored = static_cast<double>(codec->stored_bytes());
            const double moved = f32_bytes + stored;  // bytes read + written by one conversion
            const double gbps = env.opt.link_gbps;
            Record rec{"storage", f.name, "", f.description, {}};
            rec.add("bytes", "size", "MiB", stored / double(1 << 20), 1)
                .add("compression", "ratio", "x f32", f32_bytes / stored, 2)
                .add("encode_ms", "encode", "ms", enc * 1e3, 1)
                .add("encode_gbps", "encode", "GB/s", moved / enc / 1e9, 2)
                .add("decode_ms", "decode", "ms", dec * 1e3, 1)
                .add("decode_gbps", "decode", "GB/s", moved / dec / 1e9, 2)
                .add("max_abs_error", "max abs err", "", err.max_abs, 2, true)
                .add("rel_rms_error", "rel RMS err", "", err.rel_rms, 2, true)
                .add("link_ms", "link time", "ms @" + short_number(gbps) + "GB/s",
                     stored / (gbps * 1e9) * 1e3, 1)
                .add_json("stored_bytes", "B", stored);  // exact, for the JSON
            return rec;
          }};
}

std::vector<Row> storage_rows() {
  auto cast = [](DType t) {
    return [t](int64_t n) -> std::unique_ptr<Codec> { return std::make_unique<CastCodec>(t, n); };
  };
  std::vector<Row> rows;
  rows.push_back(storage_row(
      {"f32", "baseline, 4 bytes per parameter (encode/decode = copy)", cast(DType::kF32)}));
  rows.push_back(storage_row({"bf16", "bfloat16, round to nearest even", cast(DType::kBF16)}));
  rows.push_back(storage_row({"f16", "IEEE half, round to nearest even", cast(DType::kF16)}));
  rows.push_back(storage_row({"f8_e4m3", "OCP FP8 E4M3, one f32 scale per tensor (amax / 448)",
                              [](int64_t n) -> std::unique_ptr<Codec> {
                                return std::make_unique<Fp8PerTensorCodec>(n);
                              }}));
  rows.push_back(storage_row(
      {"int4_g32", "packed int4, symmetric absmax scale (f32) per group of 32, s = amax / 7",
       [](int64_t n) -> std::unique_ptr<Codec> { return std::make_unique<Int4GroupCodec>(n); }}));
  return rows;
}

// ---- training rows ---------------------------------------------------------------------------

/// The measurements every training row shares (time, throughput, memory, size).
void add_training_cost(Record& rec, const nn::TrainResult& r) {
  if (r.epochs > 0) rec.add("sec_per_epoch", "time/epoch", "s", r.seconds_per_epoch, 3);
  rec.add("sec_per_100_steps", "time/100 steps", "s", r.seconds_per_100_steps, 2)
      .add("samples_per_sec", "throughput", "samples/s", r.samples_per_second, 0)
      .add("peak_host_mib", "peak host", "MiB", static_cast<double>(r.peak_host_bytes) / (1 << 20),
           2)
      .add("param_kib", "params", "KiB", static_cast<double>(r.parameter_bytes) / 1024, 1)
      .add_json("peak_host_bytes", "B", static_cast<double>(r.peak_host_bytes))
      .add_json("parameter_bytes", "B", static_cast<double>(r.parameter_bytes))
      .add_json("num_parameters", "", static_cast<double>(r.num_parameters))
      .add_json("steps", "", static_cast<double>(r.steps))
      .add_json("samples", "", static_cast<double>(r.samples))
      .add_json("train_seconds", "s", r.train_seconds);
}

/// Train options of a row: the recipe's, with the report's seed, threads and progress.
nn::TrainOptions row_options(nn::TrainOptions o, const Env& env, const std::string& label) {
  o.seed = env.opt.seed;
  o.num_threads = env.opt.threads;
  o.progress = !env.opt.quiet;
  o.label = "[cost_report] " + label;
  return o;
}

/// The digits as a fixed 80/20 split (split seed 0, as the examples).
nn::TrainTestData digits_split() { return nn::split_data(nn::load_digits(), 0.2, 0); }

Row mlp_row() {
  return {"training", "mlp_digits", [](const Env& env) {
            const nn::Recipe recipe = nn::mlp_digits_recipe();
            const nn::TrainTestData data = digits_split();
            auto model = nn::make_mlp({64, 256, 128, 10}, env.opt.seed);
            nn::AdamW opt(model->named_parameters(), recipe.adamw);
            nn::TrainOptions o = row_options(recipe.train, env, "mlp_digits");
            o.epochs = env.opt.mlp_epochs;
            const nn::TrainResult r = nn::train_classifier(*model, opt, data.train, data.test, o);
            Record rec{"training",
                       "mlp_digits",
                       "fp32",
                       "MLP 64-256-128-10 (ReLU) on digits, AdamW lr " +
                           short_number(recipe.adamw.lr) + " cosine, batch " +
                           std::to_string(o.batch_size) + ", " + std::to_string(o.epochs) +
                           " epochs",
                       {}};
            rec.add("test_accuracy", "test acc", "%", 100 * r.test_accuracy, 2)
                .add_json("train_accuracy", "%", 100 * r.train_accuracy)
                .add_json("epochs", "", static_cast<double>(r.epochs));
            add_training_cost(rec, r);
            return rec;
          }};
}

Row cnn_row() {
  return {"training", "cnn_digits", [](const Env& env) {
            const nn::Recipe recipe = nn::cnn_digits_recipe();
            nn::TrainTestData data = digits_split();
            data.train.inputs = data.train.inputs.reshape({-1, 1, 8, 8});
            data.test.inputs = data.test.inputs.reshape({-1, 1, 8, 8});
            nn::DigitsCnnConfig cfg;
            cfg.seed = env.opt.seed;
            auto model = nn::make_digits_cnn(cfg);
            nn::AdamW opt(model->named_parameters(), recipe.adamw);
            nn::TrainOptions o = row_options(recipe.train, env, "cnn_digits");
            o.epochs = env.opt.cnn_epochs;
            const nn::TrainResult r = nn::train_classifier(*model, opt, data.train, data.test, o);
            Record rec{"training",
                       "cnn_digits",
                       "fp32",
                       "Conv(16)-BN-ReLU-Conv(32)-BN-ReLU-MaxPool-Linear on 1x8x8 digits, AdamW "
                       "lr " +
                           short_number(recipe.adamw.lr) + " cosine, batch " +
                           std::to_string(o.batch_size) + ", " + std::to_string(o.epochs) +
                           " epochs",
                       {}};
            rec.add("test_accuracy", "test acc", "%", 100 * r.test_accuracy, 2)
                .add_json("train_accuracy", "%", 100 * r.train_accuracy)
                .add_json("epochs", "", static_cast<double>(r.epochs));
            add_training_cost(rec, r);
            return rec;
          }};
}

Row gpt_row() {
  return {"training", "char_gpt", [](const Env& env) {
            // Loaded here, not before the other rows, so their peak memory does not include it.
            const auto corpus =
                std::make_shared<const nn::CharCorpus>(nn::CharCorpus::from_file(env.opt.text));
            const nn::Recipe recipe = nn::char_gpt_recipe();
            const nn::GPTConfig cfg =
                nn::char_gpt_config(corpus->vocab_size(), nn::CharGptSize::kSmall, env.opt.seed);
            nn::GPT model(cfg);
            nn::AdamW opt(model.named_parameters(), recipe.adamw);
            nn::TrainOptions o = row_options(recipe.train, env, "char_gpt");
            o.steps = env.opt.gpt_steps;
            o.warmup_steps = std::min(o.warmup_steps, o.steps / 10);
            const nn::TrainResult r = nn::train_char_gpt(model, opt, *corpus, o);
            Record rec{
                "training",
                "char_gpt",
                "fp32",
                "GPT " + std::to_string(cfg.n_layer) + " layers x " + std::to_string(cfg.n_head) +
                    " heads, n_embd " + std::to_string(cfg.n_embd) + ", block " +
                    std::to_string(cfg.block_size) + ", AdamW lr " + short_number(recipe.adamw.lr) +
                    " warm-up+cosine, clip " + short_number(o.clip_grad_norm) + ", batch " +
                    std::to_string(o.batch_size) + ", " + std::to_string(o.steps) +
                    " steps; text of " + std::to_string(corpus->text().size()) +
                    " characters, vocabulary " + std::to_string(corpus->vocab_size()),
                {}};
            rec.add("val_loss", "val loss", "nats/char", r.val_loss, 3)
                .add("unigram_entropy", "unigram H", "nats/char", corpus->unigram_entropy(), 3)
                .add_json("train_loss", "nats/char", r.final_train_loss)
                .add_json("tokens_per_sec", "tokens/s", r.tokens_per_second);
            add_training_cost(rec, r);
            return rec;
          }};
}

// ---- command line --------------------------------------------------------------------------

[[noreturn]] void usage(int code) {
  (code == 0 ? std::cout : std::cerr)
      << "usage: cost_report [options]\n"
         "  --sections S    comma-separated: training, storage (default both)\n"
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
        std::size_t b = 0;
        while (b <= v.size()) {
          const std::size_t e = std::min(v.find(',', b), v.size());
          const std::string s = v.substr(b, e - b);
          if (s == "training") {
            o.training = true;
          } else if (s == "storage") {
            o.storage = true;
          } else {
            throw std::invalid_argument(s);
          }
          b = e + 1;
        }
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
  if (o.params <= 0 || o.runs <= 0 || o.threads < 0 || !(o.link_gbps > 0) || o.mlp_epochs <= 0 ||
      o.cnn_epochs <= 0 || o.gpt_steps <= 0) {
    std::cerr << "cost_report: --params, --runs, --mlp-epochs, --cnn-epochs and --gpt-steps must "
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
  training.title = "training baselines (fp32)";
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
  return {training, storage};
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
      const std::vector<Row> rows = {mlp_row(), cnn_row(), gpt_row()};
      for (std::size_t i = 0; i < rows.size(); ++i) {
        progress("training (" + std::to_string(i + 1) + "/" + std::to_string(rows.size()) + ") " +
                 rows[i].name + "\n");
        records.push_back(rows[i].run(env));
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
