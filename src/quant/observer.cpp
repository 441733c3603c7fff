// Calibration observers: validation, device dispatch of the data passes, and the host-side state
// and threshold searches (see include/frugal/quant/observer.hpp).
#include "frugal/quant/observer.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <typeinfo>
#include <vector>

#include "cu_ops.hpp"
#include "quant/observer_internal.hpp"

namespace frugal::quant {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int kBinsLog2 = 11;  // HistogramObserver::kBins = 2^11
static_assert(HistogramObserver::kBins == 1 << kBinsLog2);

/// A contiguous f32 copy of x on its device, or x itself when it already is one.
struct F32Batch {
  Tensor holder;
  ConstTensorView view;
};

F32Batch f32_batch(ConstTensorView x, const char* op, const ExecContext& ctx) {
  FRUGAL_REQUIRE(x.dtype == DType::kF32 || x.dtype == DType::kF64 || x.dtype == DType::kF16 ||
                     x.dtype == DType::kBF16,
                 op, "batch dtype ", dtype_name(x.dtype), " is not f32, f64, f16 or bf16");
  if (x.dtype == DType::kF32 && x.is_contiguous()) return {Tensor(), x};
  Tensor t = Tensor::empty(x.shape, DType::kF32, x.device, ctx);
  t.copy_from(x, ctx);
  F32Batch b{t, ConstTensorView()};
  b.view = b.holder.cview();
  return b;
}

::frugal::detail::MinMaxStats minmax_of(ConstTensorView x, const ExecContext& ctx) {
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      return cpu::observer_minmax(x, ctx);
    case DeviceKind::kCuda: {
      Tensor out = Tensor::empty({3}, DType::kF64, x.device, ctx);
      cu::observer_minmax(x, out.view(), ctx);
      const std::vector<double> v = out.to(Device::cpu(), ctx).to_vector<double>();
      return {static_cast<float>(v[0]), static_cast<float>(v[1]), static_cast<int64_t>(v[2])};
    }
  }
  ::frugal::detail::fail(ErrorCode::kUnsupported, "observe", "unknown device");
}

void require_finite(int64_t nonfinite, const char* op) {
  FRUGAL_REQUIRE(nonfinite == 0, op, "batch contains ", nonfinite,
                 " NaN or Inf elements; the state is unchanged");
}

Tensor scalar(float v) { return Tensor::full({}, v, DType::kF32); }

void require_per_tensor(const QuantSpec& spec, const char* op) {
  FRUGAL_REQUIRE(spec.granularity == Granularity::kPerTensor, op,
                 "this observer gives per-tensor ranges; the spec asks for another granularity");
}

template <class T>
const T& same_kind(const Observer& self, const Observer& other, const char* op) {
  const T* o = dynamic_cast<const T*>(&other);
  FRUGAL_REQUIRE(o != nullptr && typeid(self) == typeid(other), op,
                 "cannot merge observers of different kinds");
  return *o;
}

// Packs host scalars into a tensor, all-reduces it, and returns the values.
template <class T>
std::vector<T> reduce_values(const StateAllReduce& reduce, std::vector<T> values, StateReduce op) {
  Tensor t = Tensor::from_vector(values, {static_cast<int64_t>(values.size())});
  reduce(t.view(), op);
  return t.to_vector<T>();
}

}  // namespace

QParams Observer::qparams(const QuantSpec& spec) const {
  const Range r = range(spec);
  return compute_qparams(r.min.cview(), r.max.cview(), spec);
}

// ---- MinMaxObserver ----------------------------------------------------------------------------

void MinMaxObserver::observe(ConstTensorView batch, const ExecContext& ctx) {
  const F32Batch b = f32_batch(batch, "observe", ctx);
  if (b.view.numel() == 0) return;
  const ::frugal::detail::MinMaxStats s = minmax_of(b.view, ctx);
  require_finite(s.nonfinite, "observe");
  min_ = has_data_ ? std::min(min_, s.min) : s.min;
  max_ = has_data_ ? std::max(max_, s.max) : s.max;
  has_data_ = true;
}

Range MinMaxObserver::range(const QuantSpec& spec) const {
  FRUGAL_REQUIRE(has_data_, "qparams", "the observer has seen no data");
  require_per_tensor(spec, "qparams");
  return {scalar(min_), scalar(max_)};
}

void MinMaxObserver::merge(const Observer& other) {
  const auto& o = same_kind<MinMaxObserver>(*this, other, "merge");
  if (!o.has_data_) return;
  min_ = has_data_ ? std::min(min_, o.min_) : o.min_;
  max_ = has_data_ ? std::max(max_, o.max_) : o.max_;
  has_data_ = true;
}

void MinMaxObserver::all_reduce(const StateAllReduce& reduce) {
  // A rank without data contributes (+inf, -inf), the identities of min and max.
  const auto lo = reduce_values<float>(reduce, {has_data_ ? min_ : kInf}, StateReduce::kMin);
  const auto hi = reduce_values<float>(reduce, {has_data_ ? max_ : -kInf}, StateReduce::kMax);
  has_data_ = lo[0] <= hi[0];
  if (has_data_) {
    min_ = lo[0];
    max_ = hi[0];
  }
}

void MinMaxObserver::reset() {
  min_ = max_ = 0.f;
  has_data_ = false;
}

// ---- MovingAverageMinMaxObserver
// -----------------------------------------------------------------

MovingAverageMinMaxObserver::MovingAverageMinMaxObserver(double averaging_constant)
    : c_(averaging_constant) {
  FRUGAL_REQUIRE(averaging_constant > 0.0 && averaging_constant <= 1.0,
                 "MovingAverageMinMaxObserver", "averaging constant ", averaging_constant,
                 " is not in (0, 1]");
}

void MovingAverageMinMaxObserver::observe(ConstTensorView batch, const ExecContext& ctx) {
  const F32Batch b = f32_batch(batch, "observe", ctx);
  if (b.view.numel() == 0) return;
  const ::frugal::detail::MinMaxStats s = minmax_of(b.view, ctx);
  require_finite(s.nonfinite, "observe");
  if (!has_data_) {
    min_ = s.min;
    max_ = s.max;
    has_data_ = true;
    return;
  }
  min_ = min_ + c_ * (static_cast<double>(s.min) - min_);
  max_ = max_ + c_ * (static_cast<double>(s.max) - max_);
}

Range MovingAverageMinMaxObserver::range(const QuantSpec& spec) const {
  FRUGAL_REQUIRE(has_data_, "qparams", "the observer has seen no data");
  require_per_tensor(spec, "qparams");
  return {scalar(static_cast<float>(min_)), scalar(static_cast<float>(max_))};
}

void MovingAverageMinMaxObserver::merge(const Observer& other) {
  const auto& o = same_kind<MovingAverageMinMaxObserver>(*this, other, "merge");
  if (!o.has_data_) return;
  if (!has_data_) {
    min_ = o.min_;
    max_ = o.max_;
    has_data_ = true;
    return;
  }
  min_ = 0.5 * (min_ + o.min_);
  max_ = 0.5 * (max_ + o.max_);
}

void MovingAverageMinMaxObserver::all_reduce(const StateAllReduce& reduce) {
  const double w = has_data_ ? 1.0 : 0.0;
  const auto s = reduce_values<double>(reduce, {w * min_, w * max_, w}, StateReduce::kSum);
  if (s[2] > 0) {
    min_ = s[0] / s[2];
    max_ = s[1] / s[2];
    has_data_ = true;
  }
}

void MovingAverageMinMaxObserver::reset() {
  min_ = max_ = 0;
  has_data_ = false;
}

// ---- PerChannelMinMaxObserver
// --------------------------------------------------------------------

PerChannelMinMaxObserver::PerChannelMinMaxObserver(int axis) : axis_(axis) {}

void PerChannelMinMaxObserver::observe(ConstTensorView batch, const ExecContext& ctx) {
  const int rank = batch.rank();
  FRUGAL_REQUIRE(rank >= 1, "observe", "per-channel observer needs rank >= 1, got rank 0");
  FRUGAL_REQUIRE(axis_ >= -rank && axis_ < rank, "observe", "axis ", axis_,
                 " is out of range for rank ", rank);
  const int ax = axis_ < 0 ? axis_ + rank : axis_;
  const int64_t len = batch.shape[ax];
  FRUGAL_REQUIRE(min_.empty() || static_cast<int64_t>(min_.size()) == len, "observe", "axis ",
                 axis_, " has length ", len, ", earlier batches had ", min_.size());
  const F32Batch b = f32_batch(batch, "observe", ctx);
  if (b.view.numel() == 0) return;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < ax; ++i) outer *= batch.shape[i];
  for (int i = ax + 1; i < rank; ++i) inner *= batch.shape[i];
  std::vector<float> lo(static_cast<size_t>(len)), hi(static_cast<size_t>(len));
  int64_t bad = 0;
  switch (b.view.device.kind) {
    case DeviceKind::kCpu:
      bad = cpu::observer_minmax_axis(b.view, outer, len, inner, lo.data(), hi.data(), ctx);
      break;
    case DeviceKind::kCuda: {
      Tensor out = Tensor::empty({2 * len + 1}, DType::kF64, b.view.device, ctx);
      cu::observer_minmax_axis(b.view, outer, len, inner, out.view(), ctx);
      const std::vector<double> v = out.to(Device::cpu(), ctx).to_vector<double>();
      for (int64_t c = 0; c < len; ++c) {
        lo[c] = static_cast<float>(v[c]);
        hi[c] = static_cast<float>(v[len + c]);
      }
      bad = static_cast<int64_t>(v[2 * len]);
      break;
    }
  }
  require_finite(bad, "observe");
  if (min_.empty()) {
    min_ = std::move(lo);
    max_ = std::move(hi);
    return;
  }
  for (int64_t c = 0; c < len; ++c) {
    min_[c] = std::min(min_[c], lo[c]);
    max_[c] = std::max(max_[c], hi[c]);
  }
}

Range PerChannelMinMaxObserver::range(const QuantSpec& spec) const {
  FRUGAL_REQUIRE(!min_.empty(), "qparams", "the observer has seen no data");
  FRUGAL_REQUIRE(spec.granularity == Granularity::kPerChannel && spec.axis == axis_, "qparams",
                 "this observer gives per-channel ranges along axis ", axis_,
                 "; the spec asks for another granularity or axis ", spec.axis);
  const int64_t c = static_cast<int64_t>(min_.size());
  return {Tensor::from_vector(min_, {c}), Tensor::from_vector(max_, {c})};
}

void PerChannelMinMaxObserver::merge(const Observer& other) {
  const auto& o = same_kind<PerChannelMinMaxObserver>(*this, other, "merge");
  FRUGAL_REQUIRE(o.axis_ == axis_, "merge", "axes differ: ", axis_, " vs ", o.axis_);
  if (o.min_.empty()) return;
  if (min_.empty()) {
    min_ = o.min_;
    max_ = o.max_;
    return;
  }
  FRUGAL_REQUIRE(o.min_.size() == min_.size(), "merge", "channel counts differ: ", min_.size(),
                 " vs ", o.min_.size());
  for (size_t c = 0; c < min_.size(); ++c) {
    min_[c] = std::min(min_[c], o.min_[c]);
    max_[c] = std::max(max_[c], o.max_[c]);
  }
}

void PerChannelMinMaxObserver::all_reduce(const StateAllReduce& reduce) {
  // First agree on the channel count (ranks without data know none), then reduce min and max.
  const auto c =
      reduce_values<int64_t>(reduce, {static_cast<int64_t>(min_.size())}, StateReduce::kMax)[0];
  FRUGAL_REQUIRE(min_.empty() || static_cast<int64_t>(min_.size()) == c, "all_reduce",
                 "ranks observed different channel counts (", min_.size(), " here, ", c,
                 " elsewhere)");
  if (c == 0) return;
  std::vector<float> lo = min_.empty() ? std::vector<float>(c, kInf) : min_;
  std::vector<float> hi = max_.empty() ? std::vector<float>(c, -kInf) : max_;
  min_ = reduce_values<float>(reduce, std::move(lo), StateReduce::kMin);
  max_ = reduce_values<float>(reduce, std::move(hi), StateReduce::kMax);
}

void PerChannelMinMaxObserver::reset() {
  min_.clear();
  max_.clear();
}

// ---- HistogramObserver
// ---------------------------------------------------------------------------

void HistogramObserver::observe(ConstTensorView batch, const ExecContext& ctx) {
  const F32Batch b = f32_batch(batch, "observe", ctx);
  if (b.view.numel() == 0) return;
  const ::frugal::detail::MinMaxStats s = minmax_of(b.view, ctx);
  require_finite(s.nonfinite, "observe");
  const float amax = std::max(std::fabs(s.min), std::fabs(s.max));
  // Smallest e with 2^e > amax (frexp: amax = m 2^k, m in [0.5, 1)). Strictly greater, so no
  // element lands on the clamped top edge and widening (j >> shift) is exact for every element.
  int k = kMinExp;
  if (amax > 0.f) std::frexp(amax, &k);
  widen_to(std::max(k, exp_));
  const float inv_width = std::ldexp(1.0f, kBinsLog2 - exp_);
  switch (b.view.device.kind) {
    case DeviceKind::kCpu:
      cpu::observer_histogram(b.view, inv_width, kBins, hist_.data(), ctx);
      break;
    case DeviceKind::kCuda: {
      Tensor h = Tensor::zeros({2 * kBins}, DType::kI64, b.view.device, ctx);
      cu::observer_histogram(b.view, inv_width, kBins, h.view(), ctx);
      const std::vector<int64_t> v = h.to(Device::cpu(), ctx).to_vector<int64_t>();
      for (int i = 0; i < 2 * kBins; ++i) hist_[i] += v[i];
      break;
    }
  }
  min_ = count_ > 0 ? std::min(min_, s.min) : s.min;
  max_ = count_ > 0 ? std::max(max_, s.max) : s.max;
  count_ += b.view.numel();
}

void HistogramObserver::widen_to(int e) {
  if (e <= exp_) return;
  const int shift = e - exp_;
  std::vector<int64_t> h(2 * kBins, 0);
  for (int s = 0; s < 2; ++s) {
    for (int j = 0; j < kBins; ++j) {
      const int to = shift >= 31 ? 0 : (j >> shift);
      h[s * kBins + to] += hist_[s * kBins + j];
    }
  }
  hist_ = std::move(h);
  exp_ = e;
}

std::vector<int64_t> HistogramObserver::abs_histogram() const {
  std::vector<int64_t> h(kBins);
  for (int j = 0; j < kBins; ++j) h[j] = hist_[j] + hist_[kBins + j];
  return h;
}

void HistogramObserver::check_same_kind(const Observer& other, const char* op) const {
  FRUGAL_REQUIRE(typeid(*this) == typeid(other), op, "cannot merge observers of different kinds");
}

void HistogramObserver::merge(const Observer& other) {
  check_same_kind(other, "merge");
  const auto& o = static_cast<const HistogramObserver&>(other);
  if (o.count_ == 0) return;
  std::vector<int64_t> theirs = o.hist_;
  const int e = std::max(exp_, o.exp_);
  widen_to(e);
  const int shift = e - o.exp_;
  for (int s = 0; s < 2; ++s) {
    for (int j = 0; j < kBins; ++j) {
      hist_[s * kBins + (shift >= 31 ? 0 : (j >> shift))] += theirs[s * kBins + j];
    }
  }
  min_ = count_ > 0 ? std::min(min_, o.min_) : o.min_;
  max_ = count_ > 0 ? std::max(max_, o.max_) : o.max_;
  count_ += o.count_;
}

void HistogramObserver::all_reduce(const StateAllReduce& reduce) {
  // Phase 1: the common range (the largest R); phase 2: counts, min and max on that range.
  const int e = static_cast<int>(
      reduce_values<int64_t>(reduce, {static_cast<int64_t>(exp_)}, StateReduce::kMax)[0]);
  widen_to(e);
  hist_ = reduce_values<int64_t>(reduce, hist_, StateReduce::kSum);
  count_ = reduce_values<int64_t>(reduce, {count_}, StateReduce::kSum)[0];
  const bool mine = has_data();
  min_ = reduce_values<float>(reduce, {mine ? min_ : kInf}, StateReduce::kMin)[0];
  max_ = reduce_values<float>(reduce, {mine ? max_ : -kInf}, StateReduce::kMax)[0];
}

void HistogramObserver::reset() {
  std::fill(hist_.begin(), hist_.end(), 0);
  exp_ = kMinExp;
  count_ = 0;
  min_ = max_ = 0.f;
}

Range HistogramObserver::range(const QuantSpec& spec) const {
  FRUGAL_REQUIRE(count_ > 0, "qparams", "the observer has seen no data");
  require_per_tensor(spec, "qparams");
  const auto a = static_cast<float>(threshold(spec));
  return {scalar(std::max(min_, -a)), scalar(std::min(max_, a))};
}

// ---- PercentileObserver
// ----------------------------------------------------------------------------

PercentileObserver::PercentileObserver(double percentile) : p_(percentile) {
  FRUGAL_REQUIRE(percentile > 0.0 && percentile <= 100.0, "PercentileObserver", "percentile ",
                 percentile, " is not in (0, 100]");
}

double PercentileObserver::threshold(const QuantSpec&) const {
  FRUGAL_REQUIRE(count_ > 0, "qparams", "the observer has seen no data");
  const std::vector<int64_t> h = abs_histogram();
  const double width = std::ldexp(1.0, exp_) / kBins;
  const double target = p_ / 100.0 * static_cast<double>(count_);
  double cum = 0;
  for (int j = 0; j < kBins; ++j) {
    const double next = cum + static_cast<double>(h[j]);
    if (h[j] > 0 && next >= target) {
      const double frac = std::clamp((target - cum) / static_cast<double>(h[j]), 0.0, 1.0);
      return std::min((j + frac) * width, static_cast<double>(std::max(-min_, max_)));
    }
    cum = next;
  }
  return std::max(-min_, max_);
}

// ---- MseObserver
// -------------------------------------------------------------------------------------

MseObserver::MseObserver(int candidates) : candidates_(candidates) {
  FRUGAL_REQUIRE(candidates >= 1, "MseObserver", "candidates ", candidates, " must be >= 1");
}

double MseObserver::error(const QuantSpec& spec, double c) const {
  const float cf = static_cast<float>(c);
  const QParams p = compute_qparams(scalar(std::max(min_, -cf)).cview(),
                                    scalar(std::min(max_, cf)).cview(), spec);
  const double s = p.scale.to_vector<double>()[0];
  const double z = p.zero_point.to_vector<double>()[0];
  const double qmin = static_cast<double>(spec.qmin()), qmax = static_cast<double>(spec.qmax());
  const double width = std::ldexp(1.0, exp_) / kBins;
  double err = 0;
  for (int sign = 0; sign < 2; ++sign) {
    for (int j = 0; j < kBins; ++j) {
      const int64_t n = hist_[sign * kBins + j];
      if (n == 0) continue;
      const double v = (sign == 0 ? 1.0 : -1.0) * (j + 0.5) * width;
      const double q = std::clamp(std::nearbyint(v / s) + z, qmin, qmax);
      const double d = v - (q - z) * s;
      err += static_cast<double>(n) * d * d;
    }
  }
  return err;
}

double MseObserver::threshold(const QuantSpec& spec) const {
  FRUGAL_REQUIRE(count_ > 0, "qparams", "the observer has seen no data");
  const double amax = std::max(-static_cast<double>(min_), static_cast<double>(max_));
  if (amax == 0) return 0;
  double best_c = amax, best = std::numeric_limits<double>::infinity();
  for (int i = candidates_; i >= 1; --i) {  // from the top, so ties keep the larger c
    const double c = amax * i / candidates_;
    const double e = error(spec, c);
    if (e < best) {
      best = e;
      best_c = c;
    }
  }
  return best_c;
}

// ---- EntropyObserver
// ---------------------------------------------------------------------------------

EntropyObserver::EntropyObserver(int start_bin) : start_bin_(start_bin) {
  FRUGAL_REQUIRE(start_bin >= 1 && start_bin <= kBins, "EntropyObserver", "start bin ", start_bin,
                 " is not in [1, ", kBins, "]");
}

double EntropyObserver::threshold(const QuantSpec& spec) const {
  FRUGAL_REQUIRE(count_ > 0, "qparams", "the observer has seen no data");
  const std::vector<int64_t> h64 = abs_histogram();
  std::vector<double> bins(h64.begin(), h64.end());
  bins[0] = bins[1];  // as TensorRT: a spike of zeros would dominate the divergence
  const int nq = 1 << (spec.bits - 1 + (spec.is_signed ? 0 : 1));
  const int n = kBins;
  // suffix[i] = sum of bins[i:], the outliers of candidate i.
  std::vector<double> suffix(n + 1, 0.0);
  for (int j = n - 1; j >= 0; --j) suffix[j] = suffix[j + 1] + bins[j];
  std::vector<double> qsum(nq), qnz(nq);
  double best = std::numeric_limits<double>::infinity();
  int best_i = n;
  for (int i = std::min(start_bin_, n); i <= n; ++i) {
    // Q: level q = floor(j nq / i) (np.digitize over linspace(0, i, nq + 1)); each level's count
    // spread uniformly over its non-empty bins.
    std::fill(qsum.begin(), qsum.end(), 0.0);
    std::fill(qnz.begin(), qnz.end(), 0.0);
    for (int j = 0; j < i; ++j) {
      if (bins[j] == 0) continue;
      const int q = static_cast<int>(static_cast<int64_t>(j) * nq / i);
      qsum[q] += bins[j];
      qnz[q] += 1;
    }
    const double p_total = suffix[0];              // P: bins[:i], outliers in bin i - 1
    const double q_total = suffix[0] - suffix[i];  // Q: sums to the in-range counts
    if (q_total == 0) continue;
    double kl = 0;
    for (int j = 0; j < i; ++j) {
      double p = bins[j];
      if (j == i - 1) p += suffix[i];
      if (p == 0) continue;
      p /= p_total;
      double q = 0;
      if (bins[j] != 0) {
        const int lvl = static_cast<int>(static_cast<int64_t>(j) * nq / i);
        q = qsum[lvl] / qnz[lvl] / q_total;
      }
      if (q == 0) {
        kl = std::numeric_limits<double>::infinity();
        break;
      }
      kl += p * std::log(p / q);
    }
    if (kl <= best) {  // the last minimum, as TensorRT
      best = kl;
      best_i = i;
    }
  }
  return std::ldexp(static_cast<double>(best_i), exp_) / kBins;
}

}  // namespace frugal::quant
