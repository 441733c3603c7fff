#pragma once
/// Gradient compression for data-parallel training: what a bucket sends instead of its f32
/// gradient, and how the average over ranks is rebuilt from what was received.
///
/// A GradCompressor is given to nn::DataParallel (DataParallelOptions::compressor) and replaces
/// the all-reduce of every bucket. It keeps state per bucket (error-feedback residuals, PowerSGD's
/// Q factors), so one compressor serves one DataParallel. Lossy compressors use error feedback
/// (Seide et al. 2014, "1-bit SGD"; Karimireddy et al. 2019, "Error Feedback Fixes SignSGD"):
///   m = g + e;  c = C(m);  e <- m - D(c);  the step uses the average over ranks of D(c)
/// so what compression drops is not lost but sent later. e is the residual of this rank.
///
/// Compressors:
/// - CastCompressor: f16 or bf16 (amp::cast, round to nearest even), all-reduced in that dtype.
/// - Int8Compressor: int8 codes with one scale per bucket and rank (max |m| / 127), all-gathered.
/// - TopKCompressor: the k = ratio * n entries of largest |m| (core topk), values and indices
///   all-gathered, summed per index.
/// - PowerSgdCompressor: rank-r PowerSGD (Vogels et al. 2019, "PowerSGD: Practical Low-Rank
///   Gradient Compression for Distributed Optimization"), per gradient matrix: P = M Q, all-reduce
///   P, orthogonalise P (lowrank::qr), Q = M^T P, all-reduce Q, M ~ P Q^T; Q is reused by the
///   next step (warm start); plain all-reduce for the first `start_step` steps.
///
/// Buckets must be f32 and on the CPU. Every rank must use the same compressor and options.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "frugal/core/tensor.hpp"
#include "frugal/parallel/communicator.hpp"

namespace frugal::parallel {

/// Where the gradients sit in a bucket's flat buffer: element offset and shape of each.
struct BucketLayout {
  std::vector<int64_t> offsets;
  std::vector<Shape> shapes;
};

/// Compresses, communicates and decompresses the flat f32 gradient of each bucket.
class GradCompressor {
 public:
  virtual ~GradCompressor() = default;
  /// Short name: "fp16", "bf16", "int8", "topk0.01", "powersgd4".
  virtual std::string name() const = 0;
  /// Compresses this rank's gradient `grad` (contiguous f32, the bucket `bucket`'s flat buffer;
  /// error feedback added) and starts the communication. `grad` must stay untouched until
  /// finish(). Every rank calls start for the same buckets in the same order.
  virtual std::shared_ptr<Work> start(int64_t bucket, const BucketLayout& layout, TensorView grad,
                                      Communicator& comm) = 0;
  /// After the Work returned by start() completed: writes the average over ranks of the
  /// decompressed gradients into `grad` (may communicate again, as PowerSGD does).
  virtual void finish(int64_t bucket, TensorView grad, Communicator& comm) = 0;
  /// Bytes this rank handed to collectives for `bucket` in its last start/finish (the payload,
  /// not counting what a ring algorithm forwards).
  int64_t sent_bytes(int64_t bucket) const;
  /// The error-feedback residual of `bucket` (f32, the bucket's length): m - D(C(m)) of the last
  /// step; undefined when the compressor is lossless or error feedback is off.
  Tensor error(int64_t bucket) const;
  /// Whether residuals are kept and added back (error feedback).
  bool error_feedback() const { return error_feedback_; }

 protected:
  explicit GradCompressor(bool error_feedback) : error_feedback_(error_feedback) {}
  /// Per-bucket state, grown on demand.
  struct BucketState {
    Tensor error;              // (n) f32 residual
    Tensor payload;            // what is sent (dtype of the wire)
    Tensor gathered;           // what is received (all-gather compressors)
    std::vector<Tensor> p, q;  // PowerSGD factors, one per compressed matrix
    std::vector<int> matrix;   // PowerSGD: index in layout of each compressed matrix
    Tensor rest;               // PowerSGD: uncompressed gradients (vectors), with P
    int64_t sent = 0;
    int64_t n = 0;
    int64_t steps = 0;       // start() calls so far
    bool compressed = true;  // PowerSGD: whether this step's start() compressed
  };
  BucketState& state(int64_t bucket, int64_t n);
  /// m = grad + e into e (error feedback on) and returns m's view; grad itself otherwise.
  TensorView add_error(BucketState& s, TensorView grad);

  bool error_feedback_;
  std::vector<BucketState> buckets_;
};

/// f16 or bf16 compression: the bucket is rounded (nearest even) and all-reduced (average) in
/// the 16-bit dtype; error feedback keeps the rounding error. 2x fewer bytes.
class CastCompressor : public GradCompressor {
 public:
  /// `dtype` kF16 or kBF16.
  explicit CastCompressor(DType dtype, bool error_feedback = true);
  std::string name() const override;
  std::shared_ptr<Work> start(int64_t bucket, const BucketLayout& layout, TensorView grad,
                              Communicator& comm) override;
  void finish(int64_t bucket, TensorView grad, Communicator& comm) override;

 private:
  DType dtype_;
};

/// int8 compression with one scale per bucket and rank: q = round(m / s) in [-127, 127],
/// s = max |m| / 127 (1 when m is zero); codes and scale all-gathered, the average rebuilt as
/// sum over ranks of s_r q_r / size. About 4x fewer bytes.
class Int8Compressor : public GradCompressor {
 public:
  explicit Int8Compressor(bool error_feedback = true);
  std::string name() const override { return "int8"; }
  std::shared_ptr<Work> start(int64_t bucket, const BucketLayout& layout, TensorView grad,
                              Communicator& comm) override;
  void finish(int64_t bucket, TensorView grad, Communicator& comm) override;
};

/// Top-k sparsification: the k = max(1, ceil(ratio * n)) entries of largest magnitude (ties: lower
/// index) with their indices are all-gathered; the average is the sum over ranks per index
/// divided by size. Sends 8k bytes instead of 4n.
class TopKCompressor : public GradCompressor {
 public:
  /// `ratio` in (0, 1].
  explicit TopKCompressor(double ratio, bool error_feedback = true);
  std::string name() const override;
  std::shared_ptr<Work> start(int64_t bucket, const BucketLayout& layout, TensorView grad,
                              Communicator& comm) override;
  void finish(int64_t bucket, TensorView grad, Communicator& comm) override;

 private:
  double ratio_;
};

/// Options of PowerSgdCompressor (torch's PowerSGDState names in brackets).
struct PowerSgdOptions {
  int64_t rank = 4;        ///< r [matrix_approximation_rank], >= 1
  int64_t start_step = 0;  ///< plain all-reduce for this many steps first [start_powerSGD_iter]
  bool warm_start = true;  ///< reuse Q of the previous step (else a fresh random Q each step)
  bool error_feedback = true;
  uint64_t seed = 0;  ///< of the initial Q (the same on every rank)
};

/// PowerSGD: each gradient with at least 2 dimensions, seen as a matrix M (shape[0], rest), for
/// which r (rows + cols) < rows cols, is sent as P (rows, r) and Q (cols, r), r = min(rank, rows,
/// cols); the other gradients (biases) are all-reduced as they are, together with P.
class PowerSgdCompressor : public GradCompressor {
 public:
  explicit PowerSgdCompressor(const PowerSgdOptions& options = {});
  std::string name() const override;
  std::shared_ptr<Work> start(int64_t bucket, const BucketLayout& layout, TensorView grad,
                              Communicator& comm) override;
  void finish(int64_t bucket, TensorView grad, Communicator& comm) override;
  const PowerSgdOptions& options() const { return options_; }
  /// The Q factor (cols, r) the next step of `bucket` starts from for its `j`-th compressed
  /// matrix (warm start); undefined before the bucket's first step.
  Tensor q_factor(int64_t bucket, int64_t j) const;

 private:
  PowerSgdOptions options_;
  std::vector<BucketLayout> layouts_;
};

/// A compressor by name: "none" (nullptr), "fp16", "bf16", "int8", "topk<ratio>" ("topk0.01"),
/// "powersgd<rank>" ("powersgd4"). Throws InvalidArgument "[make_compressor] ..." otherwise.
std::shared_ptr<GradCompressor> make_compressor(const std::string& name,
                                                bool error_feedback = true);

}  // namespace frugal::parallel
