// cost_report: the real cost of storing and moving one set of weights in each storage format.
//
// The weights (default 64M f32 parameters = 256 MB) are drawn from Philox normal(0, 0.02), a
// typical initialisation. Each format row measures, on this machine:
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
// Usage: cost_report [--params N] [--json FILE] [--seed S] [--threads T] [--runs R]
//                    [--link-gbps G]
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
#include "report.hpp"

namespace {

using cost_report::Record;
using cost_report::RunInfo;
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

// ---- rows ----------------------------------------------------------------------------------

/// What every row gets: the weights and the run's settings.
struct Inputs {
  const Tensor& weights;
  ExecContext ctx;
  RunInfo info;
};

/// A row of the report: a name and a measurement that produces one Record. Storage formats are
/// rows today; training runs (time per step, peak memory, loss) become rows the same way.
struct Row {
  std::string name;
  std::function<Record(const Inputs&)> run;
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

/// "25" or "12.5": the link bandwidth as the unit label shows it.
std::string gbps_label(double g) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", g);
  return buf;
}

Row storage_row(Format f) {
  return {f.name, [f](const Inputs& in) {
            const Tensor& w = in.weights;
            const int64_t n = w.numel();
            const double f32_bytes = static_cast<double>(w.nbytes());
            std::unique_ptr<Codec> codec = f.make(n);
            Tensor back = Tensor::empty({n}, DType::kF32);
            double enc = INFINITY, dec = INFINITY;
            progress_more(f.name + ": encode x" + std::to_string(in.info.runs));
            for (int r = 0; r < in.info.runs; ++r) {
              const auto t0 = std::chrono::steady_clock::now();
              codec->encode(w, in.ctx);
              enc = std::min(enc, seconds_since(t0));
              progress_more(".");
            }
            progress_more(" decode x" + std::to_string(in.info.runs));
            for (int r = 0; r < in.info.runs; ++r) {
              const auto t0 = std::chrono::steady_clock::now();
              codec->decode(back, in.ctx);
              dec = std::min(dec, seconds_since(t0));
              progress_more(".");
            }
            progress_more(" error\n");
            const ErrorStats err = round_trip_error(w, back, in.ctx);
            const double stored = static_cast<double>(codec->stored_bytes());
            const double moved = f32_bytes + stored;  // bytes read + written by one conversion
            Record rec{f.name, f.description, {}};
            rec.add("bytes", "size", "MiB", stored / double(1 << 20), 1)
                .add("compression", "ratio", "x f32", f32_bytes / stored, 2)
                .add("encode_ms", "encode", "ms", enc * 1e3, 1)
                .add("encode_gbps", "encode", "GB/s", moved / enc / 1e9, 2)
                .add("decode_ms", "decode", "ms", dec * 1e3, 1)
                .add("decode_gbps", "decode", "GB/s", moved / dec / 1e9, 2)
                .add("max_abs_error", "max abs err", "", err.max_abs, 2, true)
                .add("rel_rms_error", "rel RMS err", "", err.rel_rms, 2, true)
                .add("link_ms", "link time", "ms @" + gbps_label(in.info.link_gbps) + "GB/s",
                     stored / (in.info.link_gbps * 1e9) * 1e3, 1);
            // The raw byte count, exact, for the JSON.
            rec.fields.push_back({"stored_bytes", "bytes", "B", stored, 0, false, false});
            return rec;
          }};
}

std::vector<Row> make_rows() {
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

// ---- command line --------------------------------------------------------------------------

struct Options {
  int64_t params = int64_t{64} << 20;
  std::string json;
  uint64_t seed = 0;
  int threads = 0;
  int runs = 3;
  double link_gbps = 25;
};

[[noreturn]] void usage(int code) {
  (code == 0 ? std::cout : std::cerr)
      << "usage: cost_report [--params N] [--json FILE] [--seed S] [--threads T] [--runs R]\n"
         "                   [--link-gbps G]\n"
         "  --params N     number of f32 parameters (default 67108864 = 256 MB)\n"
         "  --json FILE    also write the results as JSON (atomically)\n"
         "  --seed S       Philox seed of the weights (default 0)\n"
         "  --threads T    CPU threads (default 0 = all cores)\n"
         "  --runs R       timing runs per conversion, the best is reported (default 3)\n"
         "  --link-gbps G  link bandwidth for the 'link time' column (default 25)\n";
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") usage(0);
    if (i + 1 >= argc) {
      std::cerr << "cost_report: " << a << " needs a value (or is unknown)\n";
      usage(2);
    }
    const std::string v = argv[++i];
    try {
      std::size_t used = 0;
      if (a == "--params") {
        o.params = std::stoll(v, &used);
      } else if (a == "--json") {
        o.json = v;
        used = v.size();
      } else if (a == "--seed") {
        o.seed = std::stoull(v, &used);
      } else if (a == "--threads") {
        o.threads = std::stoi(v, &used);
      } else if (a == "--runs") {
        o.runs = std::stoi(v, &used);
      } else if (a == "--link-gbps") {
        o.link_gbps = std::stod(v, &used);
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
  if (o.params <= 0 || o.runs <= 0 || o.threads < 0 || !(o.link_gbps > 0)) {
    std::cerr << "cost_report: --params and --runs must be > 0, --threads >= 0, --link-gbps > 0\n";
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

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  try {
    RunInfo info;
    info.params = opt.params;
    info.cores = static_cast<int>(std::thread::hardware_concurrency());
    info.threads = opt.threads;
    info.cpu_model = cpu_model();
    info.seed = opt.seed;
    info.link_gbps = opt.link_gbps;
    info.runs = opt.runs;
    info.weights = "Philox4x32-10 normal(0, 0.02), seed " + std::to_string(opt.seed) + ", f32";
    info.notes = {"size includes scales; ratio = f32 bytes / size",
                  "encode = f32 -> format, decode = format -> f32: best of " +
                      std::to_string(opt.runs) + " runs; GB/s = (f32 bytes + size) / time",
                  "errors of the round trip f32 -> format -> f32, in double: max |w - w'|, "
                  "RMS(w - w') / RMS(w)",
                  "link time = size / link bandwidth"};

    ExecContext ctx;
    ctx.num_threads = opt.threads;
    ctx.seed = opt.seed;
    progress("drawing " + std::to_string(opt.params) + " weights (" + info.weights + ")...");
    const auto t0 = std::chrono::steady_clock::now();
    const Tensor weights =
        frugal::rand_normal({opt.params}, DType::kF32, frugal::Device::cpu(), ctx, 0.f, kInitStd);
    progress_more(" " + std::to_string(static_cast<int>(seconds_since(t0) * 1e3)) + " ms\n");

    const Inputs in{weights, ctx, info};
    std::vector<Record> records;
    const std::vector<Row> rows = make_rows();
    for (std::size_t i = 0; i < rows.size(); ++i) {
      progress("(" + std::to_string(i + 1) + "/" + std::to_string(rows.size()) + ") ");
      records.push_back(rows[i].run(in));
    }
    std::cerr << std::endl;
    cost_report::print_table(info, records);
    if (!opt.json.empty()) {
      cost_report::write_json(opt.json, info, records);
      progress("wrote " + opt.json + "\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "cost_report: " << e.what() << "\n";
    return 1;
  }
}
