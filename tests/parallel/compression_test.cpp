// Gradient compressors against scalar references on 2 ThreadComm workers: each compressor's
// round trip (what the average over ranks becomes), the error-feedback recursion
// e_t = (g_t + e_{t-1}) - D(C(g_t + e_{t-1})) over several steps, bytes sent, bad input.
#include "frugal/parallel/compression.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "frugal/core/float_types.hpp"
#include "frugal/parallel/thread_comm.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::parallel {
namespace {

constexpr int kRanks = 2;
constexpr int kSteps = 3;
constexpr int64_t kRows = 12, kCols = 10, kBias = 7, kN = kRows * kCols + kBias;

BucketLayout layout() {
  BucketLayout l;
  l.offsets = {0, kRows * kCols};
  l.shapes = {Shape{kRows, kCols}, Shape{kBias}};
  return l;
}

std::vector<float> grad_of(int rank, int step) {
  return testing::random_uniform({kN}, 100 * step + rank + 1).to_vector<float>();
}

// What one rank saw at one step.
struct Seen {
  std::vector<float> error_before, error_after, out;
  int64_t sent = 0;
  std::vector<float> q_before;  // PowerSGD: Q factor of matrix 0 the step started from
};

using Factory = std::function<std::shared_ptr<GradCompressor>()>;

std::vector<std::vector<Seen>> run(const Factory& make) {
  std::vector<std::vector<Seen>> seen(kRanks, std::vector<Seen>(kSteps));
  run_workers(kRanks, [&](Communicator& comm) {
    auto c = make();
    auto* psgd = dynamic_cast<PowerSgdCompressor*>(c.get());
    for (int s = 0; s < kSteps; ++s) {
      Seen& out = seen[comm.rank()][s];
      Tensor e = c->error(0);
      out.error_before = e.defined() ? e.to_vector<float>() : std::vector<float>(kN, 0.f);
      if (psgd && s > 0) out.q_before = psgd->q_factor(0, 0).to_vector<float>();
      Tensor g = Tensor::from_vector(grad_of(comm.rank(), s), {kN});
      auto w = c->start(0, layout(), g.view(), comm);
      w->wait();
      c->finish(0, g.view(), comm);
      out.out = g.to_vector<float>();
      e = c->error(0);
      out.error_after = e.defined() ? e.to_vector<float>() : std::vector<float>();
      out.sent = c->sent_bytes(0);
    }
  });
  return seen;
}

// m = g + e in float, as the compressor adds it.
std::vector<float> m_of(const std::vector<std::vector<Seen>>& seen, int r, int s) {
  auto g = grad_of(r, s);
  for (int64_t i = 0; i < kN; ++i) g[i] += seen[r][s].error_before[i];
  return g;
}

void expect_near_all(const std::vector<float>& got, const std::vector<double>& want, double rtol,
                     double atol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], atol + rtol * std::abs(want[i])) << "element " << i;
}

// Both ranks hold the same averaged gradient (the replicas stay identical).
void expect_ranks_agree(const std::vector<std::vector<Seen>>& seen) {
  for (int s = 0; s < kSteps; ++s) EXPECT_EQ(seen[0][s].out, seen[1][s].out) << "step " << s;
}

template <class T>
void cast_round_trip(DType dtype, double eps) {
  auto seen = run([&] { return std::make_shared<CastCompressor>(dtype); });
  expect_ranks_agree(seen);
  for (int s = 0; s < kSteps; ++s) {
    std::vector<double> avg(kN, 0);
    for (int r = 0; r < kRanks; ++r) {
      auto m = m_of(seen, r, s);
      std::vector<double> resid(kN);
      for (int64_t i = 0; i < kN; ++i) {
        const float d = static_cast<float>(T(m[i]));  // D(C(m)): round to nearest even
        avg[i] += static_cast<double>(d) / kRanks;
        resid[i] = static_cast<double>(m[i]) - d;
      }
      // m - D(C(m)) of two floats within a factor 2 of each other is exact in float (Sterbenz).
      expect_near_all(seen[r][s].error_after, resid, 0, 0);
      EXPECT_EQ(seen[r][s].sent, kN * 2);
    }
    // The sum of the two 16-bit values is rounded to the 16-bit dtype once more.
    expect_near_all(seen[0][s].out, avg, eps, 1e-7);  // atol: f16 subnormals near 0
  }
}

TEST(GradCompression, Fp16RoundTripAndErrorFeedback) { cast_round_trip<Half>(DType::kF16, 1e-3); }
TEST(GradCompression, Bf16RoundTripAndErrorFeedback) {
  cast_round_trip<BFloat16>(DType::kBF16, 8e-3);
}

TEST(GradCompression, Int8RoundTripAndErrorFeedback) {
  auto seen = run([] { return std::make_shared<Int8Compressor>(); });
  expect_ranks_agree(seen);
  for (int s = 0; s < kSteps; ++s) {
    std::vector<double> avg(kN, 0);
    for (int r = 0; r < kRanks; ++r) {
      auto m = m_of(seen, r, s);
      double amax = 0;
      for (float v : m) amax = std::max(amax, std::abs(static_cast<double>(v)));
      const double scale = amax / 127;
      std::vector<double> resid(kN);
      for (int64_t i = 0; i < kN; ++i) {
        const double q = std::clamp(std::nearbyint(m[i] / scale), -127.0, 127.0);
        avg[i] += q * scale / kRanks;
        resid[i] = m[i] - q * scale;
        // The residual of a round to nearest is at most half a step.
        ASSERT_LE(std::abs(resid[i]), scale / 2 * (1 + 1e-6));
      }
      // The scale is rounded to float and m - q s is computed in float: a few ulps of amax.
      expect_near_all(seen[r][s].error_after, resid, 0, 4e-7 * amax);
      EXPECT_EQ(seen[r][s].sent, 4 * (1 + (kN + 3) / 4));
    }
    expect_near_all(seen[0][s].out, avg, 1e-6, 1e-7);  // float sums of 2 terms vs double
  }
}

TEST(GradCompression, TopKRoundTripAndErrorFeedback) {
  const double ratio = 0.1;
  const int64_t k = static_cast<int64_t>(std::ceil(ratio * kN));
  auto seen = run([&] { return std::make_shared<TopKCompressor>(ratio); });
  expect_ranks_agree(seen);
  for (int s = 0; s < kSteps; ++s) {
    std::vector<double> avg(kN, 0);
    for (int r = 0; r < kRanks; ++r) {
      auto m = m_of(seen, r, s);
      std::vector<int64_t> idx(kN);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(),
                       [&](int64_t a, int64_t b) { return std::abs(m[a]) > std::abs(m[b]); });
      std::vector<double> resid(m.begin(), m.end());
      for (int64_t j = 0; j < k; ++j) {
        avg[idx[j]] += static_cast<double>(m[idx[j]]) / kRanks;
        resid[idx[j]] = 0;
      }
      expect_near_all(seen[r][s].error_after, resid, 0, 0);  // selection only: exact
      EXPECT_EQ(seen[r][s].sent, 8 * k);
    }
    expect_near_all(seen[0][s].out, avg, 1e-7, 0);  // one float add and a halving
  }
}

// Orthogonal projector onto the column space of P (rows, r), by modified Gram-Schmidt in double:
// independent of the sign and basis a Householder QR picks.
std::vector<double> projector(const std::vector<double>& p, int64_t rows, int64_t r) {
  std::vector<double> q = p;  // columns j: q[i * r + j]
  for (int64_t j = 0; j < r; ++j) {
    for (int64_t l = 0; l < j; ++l) {
      double d = 0;
      for (int64_t i = 0; i < rows; ++i) d += q[i * r + l] * q[i * r + j];
      for (int64_t i = 0; i < rows; ++i) q[i * r + j] -= d * q[i * r + l];
    }
    double nrm = 0;
    for (int64_t i = 0; i < rows; ++i) nrm += q[i * r + j] * q[i * r + j];
    nrm = std::sqrt(nrm);
    for (int64_t i = 0; i < rows; ++i) q[i * r + j] /= nrm;
  }
  std::vector<double> proj(rows * rows, 0);
  for (int64_t a = 0; a < rows; ++a)
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t j = 0; j < r; ++j) proj[a * rows + b] += q[a * r + j] * q[b * r + j];
  return proj;
}

TEST(GradCompression, PowerSgdRoundTripAndErrorFeedback) {
  const int64_t rank = 2;
  PowerSgdOptions o;
  o.rank = rank;
  auto seen = run([&] { return std::make_shared<PowerSgdCompressor>(o); });
  expect_ranks_agree(seen);
  // Reference of steps >= 1, from the Q factor the step started with (warm start):
  //   P = avg_r M_r Q;  M^ = Proj(P) avg_r M_r  (= P^ Q'^T with P^ = orth(P), Q' = avg M_r^T P^);
  //   e_r = M_r - M^ on the matrix, 0 on the bias (sent exactly), which is averaged.
  for (int s = 1; s < kSteps; ++s) {
    const auto& q = seen[0][s].q_before;  // (kCols, rank), the same on both ranks
    ASSERT_EQ(q, seen[1][s].q_before);
    std::vector<double> p(kRows * rank, 0), mavg(kRows * kCols, 0);
    std::vector<std::vector<float>> m(kRanks);
    for (int r = 0; r < kRanks; ++r) {
      m[r] = m_of(seen, r, s);
      for (int64_t i = 0; i < kRows; ++i)
        for (int64_t j = 0; j < rank; ++j)
          for (int64_t c = 0; c < kCols; ++c)
            p[i * rank + j] += static_cast<double>(m[r][i * kCols + c]) * q[c * rank + j] / kRanks;
      for (int64_t i = 0; i < kRows * kCols; ++i) mavg[i] += static_cast<double>(m[r][i]) / kRanks;
    }
    auto proj = projector(p, kRows, rank);
    std::vector<double> want(kN, 0);
    for (int64_t a = 0; a < kRows; ++a)
      for (int64_t c = 0; c < kCols; ++c)
        for (int64_t b = 0; b < kRows; ++b)
          want[a * kCols + c] += proj[a * kRows + b] * mavg[b * kCols + c];
    for (int64_t i = kRows * kCols; i < kN; ++i)
      want[i] = (static_cast<double>(m[0][i]) + m[1][i]) / kRanks;
    // f32 products of length 10-12, a QR and an f32 average against double: 1e-5 absolute on
    // values of order 1.
    expect_near_all(seen[0][s].out, want, 0, 1e-5);
    for (int r = 0; r < kRanks; ++r) {
      std::vector<double> resid(kN, 0);
      for (int64_t i = 0; i < kRows * kCols; ++i) resid[i] = m[r][i] - want[i];
      expect_near_all(seen[r][s].error_after, resid, 0, 1e-5);  // as above
      // P (12 x 2) + the bias (7) in the first all-reduce, Q (10 x 2) in the second.
      EXPECT_EQ(seen[r][s].sent, 4 * (kRows * rank + kBias + kCols * rank));
    }
  }
}

TEST(GradCompression, PowerSgdStartsAfterNStepsWithPlainAverage) {
  PowerSgdOptions o;
  o.rank = 1;
  o.start_step = 2;
  auto seen = run([&] { return std::make_shared<PowerSgdCompressor>(o); });
  for (int s = 0; s < 2; ++s) {
    std::vector<double> avg(kN);
    for (int64_t i = 0; i < kN; ++i)
      avg[i] = (static_cast<double>(grad_of(0, s)[i]) + grad_of(1, s)[i]) / 2;
    expect_near_all(seen[0][s].out, avg, 1e-7, 0);  // the f32 average of two values
    EXPECT_EQ(seen[0][s].sent, kN * 4);
    EXPECT_TRUE(seen[0][s].error_after.empty());  // no residual before compression starts
  }
  EXPECT_EQ(seen[0][2].sent, 4 * (kRows + kBias + kCols));
}

TEST(GradCompression, PowerSgdRank4SendsTenTimesFewerBytesOnLargeMatrices) {
  // One 256 x 256 matrix: 4 (256 + 256) floats instead of 65536.
  run_workers(1, [&](Communicator& comm) {
    PowerSgdCompressor c({.rank = 4});
    BucketLayout l{{0}, {Shape{256, 256}}};
    Tensor g = testing::random_uniform({256 * 256}, 3);
    c.start(0, l, g.view(), comm)->wait();
    c.finish(0, g.view(), comm);
    EXPECT_EQ(c.sent_bytes(0), 4 * 4 * 512);
    EXPECT_GE(g.nbytes() / c.sent_bytes(0), 10);
  });
}

TEST(GradCompression, WithoutErrorFeedbackNoResidualIsKept) {
  auto seen = run([] { return std::make_shared<Int8Compressor>(false); });
  for (int s = 0; s < kSteps; ++s) EXPECT_TRUE(seen[0][s].error_after.empty());
}

TEST(GradCompression, BadInput) {
  using testing::expect_error;
  expect_error([] { make_compressor("zip"); }, ErrorCode::kInvalidArgument, "make_compressor");
  expect_error([] { make_compressor("topkx"); }, ErrorCode::kInvalidArgument, "make_compressor");
  expect_error([] { TopKCompressor(0.0); }, ErrorCode::kInvalidArgument, "TopKCompressor");
  expect_error([] { CastCompressor(DType::kF32); }, ErrorCode::kInvalidArgument, "CastCompressor");
  expect_error([] { PowerSgdCompressor({.rank = 0}); }, ErrorCode::kInvalidArgument,
               "PowerSgdCompressor");
  EXPECT_EQ(make_compressor("none"), nullptr);
  EXPECT_EQ(make_compressor("powersgd4")->name(), "powersgd4");
  EXPECT_EQ(make_compressor("topk0.01")->name(), "topk0.01");
  run_workers(1, [&](Communicator& comm) {
    Int8Compressor c;
    Tensor g = Tensor::zeros({4}, DType::kF64);
    expect_error([&] { c.start(0, {}, g.view(), comm); }, ErrorCode::kInvalidArgument,
                 "Int8Compressor");
  });
}

}  // namespace
}  // namespace frugal::parallel
