// The weights-as-stored table: one set of f32 weights encoded in each storage format (size,
// encode and decode rates, round-trip error, link time).
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "frugal/core.hpp"
#include "rows.hpp"

namespace cost_report {
namespace {

using frugal::DType;
using frugal::ExecContext;
using frugal::Tensor;

constexpr int64_t kGroup = 32;       // int4 scale group
constexpr int64_t kChunk = 1 << 16;  // elements per parallel task in the helpers below

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

}  // namespace

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

}  // namespace cost_report
