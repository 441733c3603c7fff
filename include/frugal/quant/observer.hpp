#pragma once
/// Calibration observers: they see batches of a tensor (activations or weights, on the CPU or on a
/// CUDA device) and produce the quantization parameters of a QuantSpec.
///
///   MinMaxObserver               running min / max (torch MinMaxObserver)
///   MovingAverageMinMaxObserver  min/max <- min/max + c (batch - min/max), c = 0.01 (torch)
///   PerChannelMinMaxObserver     min / max per index along one axis
///   PercentileObserver           the p-th percentile of |x| (p = 99.99 ...), from the histogram
///   MseObserver                  clipping c = r * max|x|, r in {1/100, ..., 1}, minimising the
///                                L2 dequantization error of the spec's quantizer over the
///                                histogram
///   EntropyObserver              KL-divergence threshold search over the 2048-bin |x| histogram
///                                (TensorRT / ModelOpt `_compute_amax_entropy`)
///
/// State lives on the host and is small (scalars, a {C} vector, or a 4096-bin histogram); the
/// passes over the data (min / max, histogram) run on the data's device. `merge` folds another
/// observer's state into this one so that merge(observe(a), observe(b)) == observe(a ∪ b) for the
/// min-max, per-channel and histogram observers (the moving average merges by averaging, see
/// there). `all_reduce` exposes the state as host tensors to a communicator's all-reduce, so
/// data-parallel ranks calibrate on their shards and agree on one result.
///
/// Histogram (Percentile, Mse, Entropy): 2048 bins of |x| on [0, R], each kept separately for
/// x >= 0 and x < 0 (4096 counters, i64), where R = 2^e is the smallest power of two > max|x|
/// seen so far. When a batch exceeds R, R doubles as often as needed and bins merge pairwise, which
/// is exact; so histograms of different batches or ranks combine exactly (the coarser range wins),
/// and a bin index is floor(|x| * 2048 / R), an exact product, identical on CPU and CUDA. The cost
/// of exactness: between 1024 and 2048 bins cover [0, max|x|] (TensorRT sizes its 2048 bins to the
/// first batch's max and grows with new bins of the same width, which does not merge across ranks).
///
/// NaN / Inf: observe() throws InvalidArgument "[observe] ... NaN or Inf" and leaves the state as
/// it was. Accepted data: f32, f64, f16, bf16 (converted to f32), any shape and strides.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "frugal/core/tensor.hpp"
#include "frugal/quant/qparams.hpp"

namespace frugal::quant {

/// How the ranks' copies of one state tensor combine in an all-reduce.
enum class StateReduce : uint8_t { kSum, kMin, kMax };

/// An all-reduce over host tensors: replaces `state` in place by the reduction over all ranks.
/// Every rank calls it with tensors of the same shapes and dtypes in the same order.
using StateAllReduce = std::function<void(TensorView state, StateReduce op)>;

/// A range per tensor (shape {}) or per channel (shape {C}), f32, that compute_qparams maps onto
/// the codes of a spec.
struct Range {
  Tensor min;
  Tensor max;
};

/// Base of the observer family.
class Observer {
 public:
  virtual ~Observer() = default;

  /// Folds one batch into the state.
  virtual void observe(ConstTensorView batch, const ExecContext& ctx = {}) = 0;
  /// The clipping range for `spec` (the search observers choose it for spec's bits and sign).
  /// Throws InvalidArgument before any batch was observed or when spec's granularity does not
  /// match the observer (per-tensor observers: kPerTensor; per-channel: kPerChannel, same axis).
  virtual Range range(const QuantSpec& spec) const = 0;
  /// compute_qparams(range(spec), spec).
  QParams qparams(const QuantSpec& spec) const;
  /// Folds `other`'s state into this one. Throws InvalidArgument when `other` is another kind
  /// (or, per channel, has another axis or channel count).
  virtual void merge(const Observer& other) = 0;
  /// Synchronises the state across data-parallel ranks through `reduce` (see StateAllReduce);
  /// afterwards every rank holds the merge of all ranks' states.
  virtual void all_reduce(const StateAllReduce& reduce) = 0;
  /// Forgets everything observed.
  virtual void reset() = 0;
  /// True once a batch with at least one element was observed.
  virtual bool has_data() const = 0;
};

/// Running min / max of everything observed (per tensor).
class MinMaxObserver : public Observer {
 public:
  void observe(ConstTensorView batch, const ExecContext& ctx = {}) override;
  Range range(const QuantSpec& spec) const override;
  void merge(const Observer& other) override;
  void all_reduce(const StateAllReduce& reduce) override;
  void reset() override;
  bool has_data() const override { return has_data_; }
  float min() const { return min_; }  ///< running minimum
  float max() const { return max_; }  ///< running maximum

 private:
  float min_ = 0.f, max_ = 0.f;
  bool has_data_ = false;
};

/// torch.ao MovingAverageMinMaxObserver: the first batch sets min / max, each later batch moves
/// them by min += c (batch_min - min), max += c (batch_max - max) in double. merge / all_reduce
/// average the observers that have data (the data-parallel convention: each rank's running range
/// estimates the same quantity), so merge is not observe(a ∪ b) here.
class MovingAverageMinMaxObserver : public Observer {
 public:
  /// `averaging_constant` in (0, 1].
  explicit MovingAverageMinMaxObserver(double averaging_constant = 0.01);
  void observe(ConstTensorView batch, const ExecContext& ctx = {}) override;
  Range range(const QuantSpec& spec) const override;
  void merge(const Observer& other) override;
  void all_reduce(const StateAllReduce& reduce) override;
  void reset() override;
  bool has_data() const override { return has_data_; }
  double min() const { return min_; }
  double max() const { return max_; }

 private:
  double c_;
  double min_ = 0, max_ = 0;
  bool has_data_ = false;
};

/// Running min / max per index along `axis` (negative counts from the end). Every batch must
/// have the same extent C along the axis (the first batch fixes it).
class PerChannelMinMaxObserver : public Observer {
 public:
  explicit PerChannelMinMaxObserver(int axis = 0);
  void observe(ConstTensorView batch, const ExecContext& ctx = {}) override;
  Range range(const QuantSpec& spec) const override;
  void merge(const Observer& other) override;
  void all_reduce(const StateAllReduce& reduce) override;
  void reset() override;
  bool has_data() const override { return !min_.empty(); }
  int axis() const { return axis_; }
  const std::vector<float>& min() const { return min_; }  ///< {C}
  const std::vector<float>& max() const { return max_; }  ///< {C}

 private:
  int axis_;
  std::vector<float> min_, max_;
};

/// The |x| histogram shared by the percentile, MSE and entropy observers (see the file comment),
/// with the running min / max of x.
class HistogramObserver : public Observer {
 public:
  static constexpr int kBins = 2048;  ///< bins of |x| on [0, R], per sign

  void observe(ConstTensorView batch, const ExecContext& ctx = {}) override;
  void merge(const Observer& other) override;
  void all_reduce(const StateAllReduce& reduce) override;
  void reset() override;
  bool has_data() const override { return count_ > 0; }

  /// R = 2^range_exp: the histogram covers |x| in [0, R].
  int range_exp() const { return exp_; }
  /// Counts of |x| per bin (kBins), both signs together: bin j holds |x| in [j, j + 1) * R / kBins.
  std::vector<int64_t> abs_histogram() const;
  /// Counts for x >= 0 (first kBins, by |x| bin) and x < 0 (next kBins, by |x| bin).
  const std::vector<int64_t>& signed_histogram() const { return hist_; }
  int64_t count() const { return count_; }
  float min() const { return min_; }
  float max() const { return max_; }
  /// The threshold a in [0, R] this observer chooses for `spec`; range() clips [min, max] to
  /// [-a, a].
  virtual double threshold(const QuantSpec& spec) const = 0;
  Range range(const QuantSpec& spec) const override;

 protected:
  /// Rebins to R = 2^e (e >= exp_).
  void widen_to(int e);
  void check_same_kind(const Observer& other, const char* op) const;

  std::vector<int64_t> hist_ = std::vector<int64_t>(2 * kBins, 0);
  int exp_ = kMinExp;
  int64_t count_ = 0;
  float min_ = 0.f, max_ = 0.f;
  static constexpr int kMinExp = -100;  ///< |x| below 2^-100 / 2048 share bin 0
};

/// The p-th percentile of |x| (p in (0, 100], e.g. 99.99), interpolated linearly inside the bin
/// where the cumulative count reaches p/100 of the total: exact to one bin width (R / 2048).
class PercentileObserver : public HistogramObserver {
 public:
  explicit PercentileObserver(double percentile = 99.99);
  double threshold(const QuantSpec& spec) const override;
  double percentile() const { return p_; }

 private:
  double p_;
};

/// Grid search over clipping thresholds c = max|x| * i / candidates, i = 1..candidates, for the
/// one minimising sum_bins count * (v - Q_c(v))^2 over the bin centers v (with their signs), where
/// Q_c is the quantizer of `spec` with the parameters compute_qparams gives for the range
/// [max(min, -c), min(max, c)]: the same quantizer that qparams() then returns. Ties go to the
/// larger c. Per tensor.
class MseObserver : public HistogramObserver {
 public:
  explicit MseObserver(int candidates = 100);
  double threshold(const QuantSpec& spec) const override;
  /// The histogram's L2 error of the quantizer with clipping `c` (see the class comment).
  double error(const QuantSpec& spec, double c) const;

 private:
  int candidates_;
};

/// TensorRT's entropy calibration (pytorch-quantization `calib/histogram.py`
/// `_compute_amax_entropy`, identical in NVIDIA ModelOpt): for every candidate i of bins, from 128
/// to the bin count, the reference P is the first i bins of the |x| histogram with the outliers
/// (bins >= i) added to bin i - 1; Q merges those i bins into 2^(bits-1) levels (2^bits for an
/// unsigned spec) and spreads each level's count uniformly over its non-empty bins; the threshold
/// is the edge i * R / 2048 of the candidate with the smallest KL(P || Q) (the last on ties). As
/// there, the count of bin 0 is replaced by that of bin 1 (zeros, e.g. after ReLU, would dominate).
class EntropyObserver : public HistogramObserver {
 public:
  /// `start_bin`: the first candidate (128 as TensorRT).
  explicit EntropyObserver(int start_bin = 128);
  double threshold(const QuantSpec& spec) const override;

 private:
  int start_bin_;
};

}  // namespace frugal::quant
