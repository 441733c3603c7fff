// Vector quantization: the k-means driver (seeding and the Lloyd loop on the host, the passes
// over the points on their device), scalar codebooks, NF4 and product quantization.
#include "frugal/quant/vector.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "cu_ops.hpp"
#include "frugal/core/packed.hpp"
#include "frugal/core/philox.hpp"
#include "quant/vector_internal.hpp"

namespace frugal::quant {
namespace {

constexpr int64_t kMaxPoints = int64_t{1}
                               << 23;  // n * 2^40 < 2^63: fixed-point sums never overflow
constexpr int kFixedBits = 40;

Tensor copy_of(ConstTensorView v, const ExecContext& ctx) {
  Tensor t = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  t.copy_from(v, ctx);
  return t;
}

/// Contiguous version of v on its device (a copy unless it already is).
Tensor dense(ConstTensorView v, const ExecContext& ctx) { return copy_of(v, ctx); }

void check_points(const char* op, ConstTensorView p) {
  FRUGAL_REQUIRE(p.rank() == 2, op, "points must be rank 2 (n, d), got rank ", p.rank());
  FRUGAL_REQUIRE(p.dtype == DType::kF32, op, "points dtype ", dtype_name(p.dtype), " is not f32");
  FRUGAL_REQUIRE(p.shape[0] >= 1 && p.shape[1] >= 1, op, "points must be non-empty, got shape ",
                 p.shape);
  FRUGAL_REQUIRE(p.shape[0] <= kMaxPoints, op, "n = ", p.shape[0], " exceeds ", kMaxPoints);
}

struct AssignStep {
  Tensor assign;  // (n) i32 on the points' device
  std::vector<int32_t> host_assign;
  std::vector<float> dist;
};

AssignStep assign_step(const Tensor& pts, const Tensor& cent, const ExecContext& ctx) {
  const int64_t n = pts.dim(0);
  AssignStep s;
  s.host_assign.resize(static_cast<size_t>(n));
  s.dist.resize(static_cast<size_t>(n));
  switch (pts.device().kind) {
    case DeviceKind::kCpu:
      cpu::kmeans_assign(pts.cview(), cent.cview(), s.host_assign.data(), s.dist.data(), ctx);
      s.assign = Tensor::from_vector(s.host_assign, {n});
      break;
    case DeviceKind::kCuda: {
      s.assign = Tensor::empty({n}, DType::kI32, pts.device(), ctx);
      Tensor dist = Tensor::empty({n}, DType::kF32, pts.device(), ctx);
      cu::kmeans_assign(pts.cview(), cent.cview(), s.assign.view(), dist.view(), ctx);
      s.host_assign = s.assign.to(Device::cpu(), ctx).to_vector<int32_t>();
      s.dist = dist.to(Device::cpu(), ctx).to_vector<float>();
      break;
    }
  }
  return s;
}

/// New centroids from exact fixed-point sums; an empty cluster keeps its centroid.
void update_step(const Tensor& pts, const AssignStep& a, double scale, std::vector<float>& cent,
                 int64_t k, const ExecContext& ctx) {
  const int64_t d = pts.dim(1);
  std::vector<int64_t> sums(static_cast<size_t>(k * d), 0), counts(static_cast<size_t>(k), 0);
  switch (pts.device().kind) {
    case DeviceKind::kCpu:
      cpu::kmeans_accumulate(pts.cview(), a.host_assign.data(), k, scale, sums.data(),
                             counts.data(), ctx);
      break;
    case DeviceKind::kCuda: {
      Tensor ts = Tensor::zeros({k, d}, DType::kI64, pts.device(), ctx);
      Tensor tc = Tensor::zeros({k}, DType::kI64, pts.device(), ctx);
      cu::kmeans_accumulate(pts.cview(), a.assign.cview(), scale, ts.view(), tc.view(), ctx);
      sums = ts.to(Device::cpu(), ctx).to_vector<int64_t>();
      counts = tc.to(Device::cpu(), ctx).to_vector<int64_t>();
      break;
    }
  }
  for (int64_t c = 0; c < k; ++c) {
    if (counts[c] == 0) continue;
    for (int64_t j = 0; j < d; ++j) {
      cent[c * d + j] = static_cast<float>(static_cast<double>(sums[c * d + j]) /
                                           static_cast<double>(counts[c]) / scale);
    }
  }
}

/// k-means++ seeding on the host copy of the points.
std::vector<float> seed_centroids(const std::vector<float>& x, int64_t n, int64_t d, int64_t k,
                                  uint64_t seed) {
  auto draw = [&](int64_t c) {
    const Uint4 b = philox_block(seed, 0, static_cast<uint64_t>(c));
    return uniform01_f64(lane(b, static_cast<int>(c % 4)));
  };
  std::vector<float> cent(static_cast<size_t>(k * d));
  int64_t first = std::min<int64_t>(n - 1, static_cast<int64_t>(draw(0) * static_cast<double>(n)));
  std::copy_n(x.begin() + first * d, d, cent.begin());
  std::vector<float> dmin(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) dmin[i] = ::frugal::detail::kmeans_dist(&x[i * d], &cent[0], d);
  for (int64_t c = 1; c < k; ++c) {
    double total = 0;
    for (float v : dmin) total += v;
    int64_t pick = c % n;  // every point already a centre (total 0): any choice is as good
    if (total > 0) {
      const double target = draw(c) * total;
      double cum = 0;
      pick = n - 1;
      for (int64_t i = 0; i < n; ++i) {
        cum += dmin[i];
        if (cum > target && dmin[i] > 0) {
          pick = i;
          break;
        }
      }
    }
    std::copy_n(x.begin() + pick * d, d, cent.begin() + c * d);
    for (int64_t i = 0; i < n; ++i) {
      dmin[i] = std::min(dmin[i], ::frugal::detail::kmeans_dist(&x[i * d], &cent[c * d], d));
    }
  }
  return cent;
}

}  // namespace

KMeansResult kmeans(ConstTensorView points, const KMeansOptions& opt, const ExecContext& ctx) {
  const char* op = "kmeans";
  check_points(op, points);
  const int64_t n = points.shape[0], d = points.shape[1], k = opt.k;
  FRUGAL_REQUIRE(k >= 1 && k <= n, op, "k = ", k, " is not in [1, n = ", n, "]");
  FRUGAL_REQUIRE(opt.max_iters >= 1, op, "max_iters = ", opt.max_iters, " must be >= 1");
  const Tensor pts = dense(points, ctx);
  const std::vector<float> host = pts.to(Device::cpu(), ctx).to_vector<float>();
  float amax = 0.f;
  for (float v : host) {
    FRUGAL_REQUIRE(std::isfinite(v), op, "points contain NaN or Inf");
    amax = std::max(amax, std::fabs(v));
  }
  int e = 0;
  if (amax > 0.f) std::frexp(amax, &e);  // 2^e > max|x|
  const double scale = std::ldexp(1.0, kFixedBits - e);

  std::vector<float> cent = seed_centroids(host, n, d, k, opt.seed);
  KMeansResult r;
  std::vector<int32_t> prev;
  AssignStep a;
  for (int it = 0; it < opt.max_iters; ++it) {
    a = assign_step(pts, Tensor::from_vector(cent, {k, d}).to(pts.device(), ctx), ctx);
    double obj = 0;
    for (float v : a.dist) obj += v;
    r.objective.push_back(obj);
    if (!prev.empty() && a.host_assign == prev) {
      r.converged = true;
      break;
    }
    update_step(pts, a, scale, cent, k, ctx);
    prev = a.host_assign;
    if (it + 1 == opt.max_iters) {  // report assignments of the returned centroids
      a = assign_step(pts, Tensor::from_vector(cent, {k, d}).to(pts.device(), ctx), ctx);
      obj = 0;
      for (float v : a.dist) obj += v;
      r.objective.push_back(obj);
      r.converged = a.host_assign == prev;
    }
  }
  r.iterations = static_cast<int>(r.objective.size());
  r.centroids = Tensor::from_vector(cent, {k, d}).to(pts.device(), ctx);
  r.assignments = a.assign;
  return r;
}

Tensor kmeans_assign(ConstTensorView points, ConstTensorView centroids, const ExecContext& ctx) {
  const char* op = "kmeans_assign";
  check_points(op, points);
  FRUGAL_REQUIRE(centroids.rank() == 2 && centroids.dtype == DType::kF32 &&
                     centroids.shape[1] == points.shape[1] && centroids.shape[0] >= 1,
                 op, "centroids must be (k, ", points.shape[1], ") f32 with k >= 1, got ",
                 centroids.shape, " ", dtype_name(centroids.dtype));
  FRUGAL_REQUIRE(centroids.device == points.device, op, "centroids are on another device");
  return assign_step(dense(points, ctx), dense(centroids, ctx), ctx).assign;
}

// ---- scalar codebook ----------------------------------------------------------------------------

namespace {

Tensor pack_codes(const std::vector<uint8_t>& codes, Shape shape, int bits, Device device,
                  const ExecContext& ctx) {
  if (bits > 4) return Tensor::from_vector(codes, shape).to(device, ctx);
  Tensor t = Tensor::empty(shape, DType::kU4);
  pack_u4(codes.data(), static_cast<uint8_t*>(t.data_ptr()), static_cast<int64_t>(codes.size()));
  return t.to(device, ctx);
}

std::vector<uint8_t> unpack_codes(const Tensor& codes, const ExecContext& ctx) {
  const Tensor h = codes.to(Device::cpu(), ctx).contiguous(ctx);
  std::vector<uint8_t> v(static_cast<size_t>(h.numel()));
  if (h.dtype() == DType::kU4) {
    unpack_u4(static_cast<const uint8_t*>(h.data_ptr()), v.data(), h.numel());
  } else {
    std::copy_n(static_cast<const uint8_t*>(h.data_ptr()), h.numel(), v.begin());
  }
  return v;
}

}  // namespace

CodebookTensor codebook_quantize(ConstTensorView x, int bits, const KMeansOptions& opt,
                                 const ExecContext& ctx) {
  const char* op = "codebook_quantize";
  FRUGAL_REQUIRE(bits >= 1 && bits <= 8, op, "bits = ", bits, " is not in [1, 8]");
  FRUGAL_REQUIRE(x.dtype == DType::kF32, op, "x dtype ", dtype_name(x.dtype), " is not f32");
  const int64_t n = x.numel(), k = int64_t{1} << bits;
  FRUGAL_REQUIRE(n >= k, op, "x has ", n, " elements, fewer than the ", k, " codebook entries");
  Tensor flat = dense(x, ctx).reshape({n, 1});
  KMeansOptions o = opt;
  o.k = k;
  const KMeansResult km = kmeans(flat.cview(), o, ctx);
  std::vector<float> book = km.centroids.to(Device::cpu(), ctx).to_vector<float>();
  std::sort(book.begin(), book.end());
  const Tensor tb = Tensor::from_vector(book, {k}).to(x.device, ctx);
  const std::vector<int32_t> a = assign_step(flat, tb.reshape({k, 1}), ctx).host_assign;
  std::vector<uint8_t> codes(a.begin(), a.end());
  return {pack_codes(codes, x.shape, bits, x.device, ctx), tb};
}

Tensor codebook_dequantize(const CodebookTensor& q, const ExecContext& ctx) {
  const char* op = "codebook_dequantize";
  FRUGAL_REQUIRE(q.codes.dtype() == DType::kU4 || q.codes.dtype() == DType::kU8, op, "codes dtype ",
                 dtype_name(q.codes.dtype()), " is not u4 or u8");
  FRUGAL_REQUIRE(q.codebook.rank() == 1 && q.codebook.dtype() == DType::kF32, op,
                 "codebook must be rank 1 f32");
  const std::vector<uint8_t> c = unpack_codes(q.codes, ctx);
  const std::vector<float> book = q.codebook.to(Device::cpu(), ctx).to_vector<float>();
  std::vector<float> out(c.size());
  for (size_t i = 0; i < c.size(); ++i) {
    FRUGAL_REQUIRE(c[i] < book.size(), op, "code ", static_cast<int>(c[i]), " is outside the ",
                   book.size(), "-entry codebook");
    out[i] = book[c[i]];
  }
  return Tensor::from_vector(out, q.codes.shape()).to(q.codes.device(), ctx);
}

// ---- NF4 --------------------------------------------------------------------------------------

Nf4Tensor nf4_quantize(ConstTensorView x, int64_t block, const ExecContext& ctx) {
  const char* op = "nf4_quantize";
  FRUGAL_REQUIRE(x.dtype == DType::kF32, op, "x dtype ", dtype_name(x.dtype), " is not f32");
  FRUGAL_REQUIRE(block >= 1, op, "block = ", block, " must be >= 1");
  const std::vector<float> v = copy_of(x, ctx).to(Device::cpu(), ctx).to_vector<float>();
  const int64_t n = static_cast<int64_t>(v.size()), blocks = (n + block - 1) / block;
  std::vector<float> absmax(static_cast<size_t>(blocks), 0.f);
  std::vector<uint8_t> codes(static_cast<size_t>(n), 7);  // kNF4[7] == 0
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * block, i1 = std::min(n, i0 + block);
    float m = 0.f;
    for (int64_t i = i0; i < i1; ++i) {
      FRUGAL_REQUIRE(std::isfinite(v[i]), op, "x contains NaN or Inf");
      m = std::max(m, std::fabs(v[i]));
    }
    absmax[b] = m;
    if (m == 0.f) continue;
    for (int64_t i = i0; i < i1; ++i) {
      const float t = v[i] / m;
      int best = 0;
      float bd = std::fabs(t - kNF4[0]);
      for (int c = 1; c < 16; ++c) {
        const float dd = std::fabs(t - kNF4[c]);
        if (dd < bd) {
          bd = dd;
          best = c;
        }
      }
      codes[i] = static_cast<uint8_t>(best);
    }
  }
  Nf4Tensor q;
  q.codes = pack_codes(codes, x.shape, 4, x.device, ctx);
  q.absmax = Tensor::from_vector(absmax, {blocks}).to(x.device, ctx);
  q.block = block;
  return q;
}

Tensor nf4_dequantize(const Nf4Tensor& q, const ExecContext& ctx) {
  const char* op = "nf4_dequantize";
  FRUGAL_REQUIRE(q.codes.dtype() == DType::kU4, op, "codes dtype ", dtype_name(q.codes.dtype()),
                 " is not u4");
  FRUGAL_REQUIRE(q.block >= 1 && q.absmax.numel() == (q.codes.numel() + q.block - 1) / q.block, op,
                 "absmax has ", q.absmax.numel(), " entries for ", q.codes.numel(),
                 " codes in blocks of ", q.block);
  const std::vector<uint8_t> c = unpack_codes(q.codes, ctx);
  const std::vector<float> am = q.absmax.to(Device::cpu(), ctx).to_vector<float>();
  std::vector<float> out(c.size());
  for (size_t i = 0; i < c.size(); ++i) out[i] = kNF4[c[i]] * am[i / q.block];
  return Tensor::from_vector(out, q.codes.shape()).to(q.codes.device(), ctx);
}

// ---- product quantization ---------------------------------------------------------------------

ProductQuantizer pq_train(ConstTensorView x, int64_t m, int64_t k, const KMeansOptions& opt,
                          const ExecContext& ctx) {
  const char* op = "pq_train";
  check_points(op, x);
  const int64_t n = x.shape[0], d = x.shape[1];
  FRUGAL_REQUIRE(m >= 1 && d % m == 0, op, "m = ", m, " does not divide d = ", d);
  FRUGAL_REQUIRE(k >= 1 && k <= 256 && k <= n, op, "k = ", k, " is not in [1, min(256, n = ", n,
                 ")]");
  const Tensor xs = dense(x, ctx);
  const int64_t ds = d / m;
  std::vector<float> books;
  books.reserve(static_cast<size_t>(m * k * ds));
  for (int64_t j = 0; j < m; ++j) {
    const Tensor sub = xs.slice(1, j * ds, (j + 1) * ds).contiguous(ctx);
    KMeansOptions o = opt;
    o.k = k;
    o.seed = opt.seed + static_cast<uint64_t>(j);
    const std::vector<float> c =
        kmeans(sub.cview(), o, ctx).centroids.to(Device::cpu(), ctx).to_vector<float>();
    books.insert(books.end(), c.begin(), c.end());
  }
  ProductQuantizer pq;
  pq.codebooks = Tensor::from_vector(books, {m, k, ds}).to(x.device, ctx);
  pq.m = m;
  pq.k = k;
  pq.dim = d;
  return pq;
}

Tensor pq_encode(const ProductQuantizer& pq, ConstTensorView x, const ExecContext& ctx) {
  const char* op = "pq_encode";
  check_points(op, x);
  FRUGAL_REQUIRE(x.shape[1] == pq.dim, op, "x has d = ", x.shape[1], ", the quantizer ", pq.dim);
  FRUGAL_REQUIRE(x.device == pq.codebooks.device(), op,
                 "x and the codebooks are on different devices");
  const int64_t n = x.shape[0], ds = pq.dim / pq.m;
  const Tensor xs = dense(x, ctx);
  std::vector<uint8_t> codes(static_cast<size_t>(n * pq.m));
  for (int64_t j = 0; j < pq.m; ++j) {
    const Tensor sub = xs.slice(1, j * ds, (j + 1) * ds).contiguous(ctx);
    const Tensor book = pq.codebooks.slice(0, j, j + 1).reshape({pq.k, ds});
    const std::vector<int32_t> a = assign_step(sub, book.contiguous(ctx), ctx).host_assign;
    for (int64_t i = 0; i < n; ++i) codes[i * pq.m + j] = static_cast<uint8_t>(a[i]);
  }
  return Tensor::from_vector(codes, {n, pq.m}).to(x.device, ctx);
}

Tensor pq_decode(const ProductQuantizer& pq, ConstTensorView codes, const ExecContext& ctx) {
  const char* op = "pq_decode";
  FRUGAL_REQUIRE(codes.rank() == 2 && codes.dtype == DType::kU8 && codes.shape[1] == pq.m, op,
                 "codes must be (n, ", pq.m, ") u8, got ", codes.shape, " ",
                 dtype_name(codes.dtype));
  const std::vector<uint8_t> c = copy_of(codes, ctx).to(Device::cpu(), ctx).to_vector<uint8_t>();
  const std::vector<float> books = pq.codebooks.to(Device::cpu(), ctx).to_vector<float>();
  const int64_t n = codes.shape[0], ds = pq.dim / pq.m;
  std::vector<float> out(static_cast<size_t>(n * pq.dim));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < pq.m; ++j) {
      const int64_t code = c[i * pq.m + j];
      FRUGAL_REQUIRE(code < pq.k, op, "code ", code, " is outside the ", pq.k, "-entry codebook");
      std::copy_n(books.begin() + (j * pq.k + code) * ds, ds, out.begin() + i * pq.dim + j * ds);
    }
  }
  return Tensor::from_vector(out, {n, pq.dim}).to(codes.device, ctx);
}

}  // namespace frugal::quant
