#pragma once
/// Data for training: datasets, a batching loader with deterministic shuffling and data-parallel
/// sharding, the small real data sets found on a Debian machine (sklearn's digits, an English
/// text for character models), and synthetic generators for benchmarks.
///
/// Randomness here is reproducible across machines and standard libraries: shuffles are
/// Fisher-Yates driven by std::mt19937_64 (whose output the C++ standard fixes) with bounded
/// integers drawn by rejection (not std::uniform_int_distribution, whose algorithm varies by
/// library); sampled windows and synthetic data use Philox4x32-10 (frugal/core/philox.hpp).
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal::nn {

/// One example: an input tensor and its target (for a class label, a rank-0 i64 tensor).
struct Example {
  Tensor input;
  Tensor target;
};

/// A random-access collection of examples. Every example has the same input shape and dtype and
/// the same target shape and dtype (the loader stacks them).
class Dataset {
 public:
  virtual ~Dataset() = default;
  /// Number of examples.
  virtual int64_t size() const = 0;
  /// Example `i` (0 <= i < size()).
  virtual Example get(int64_t i) const = 0;
};

/// Examples as rows of two tensors: inputs (N, ...) and targets (N, ...); example i is
/// (inputs[i], targets[i]), views sharing their storage.
class TensorDataset : public Dataset {
 public:
  /// Throws InvalidArgument ("[TensorDataset] ...") when a tensor is undefined or rank 0 or the
  /// leading extents differ.
  TensorDataset(Tensor inputs, Tensor targets);
  int64_t size() const override { return inputs_.dim(0); }
  Example get(int64_t i) const override;
  const Tensor& inputs() const { return inputs_; }
  const Tensor& targets() const { return targets_; }

 private:
  Tensor inputs_;
  Tensor targets_;
};

/// Options of a DataLoader.
struct DataLoaderOptions {
  int64_t batch_size = 1;  ///< examples per batch, > 0
  bool shuffle = false;    ///< permute the examples each epoch (by seed and epoch)
  bool drop_last = false;  ///< drop this rank's last batch when it is smaller than batch_size
  uint64_t seed = 0;       ///< shuffle seed
  int rank = 0;            ///< this process's rank in data-parallel training, 0 <= rank < world
  int world_size = 1;      ///< number of data-parallel ranks, > 0
};

/// A batch: the inputs stacked as (B, ...), the targets as (B, ...), and the dataset indices of
/// its examples. Tensors are contiguous, on the dataset's device.
struct Batch {
  Tensor input;
  Tensor target;
  std::vector<int64_t> indices;
};

/// Splits a dataset into batches, the way torch's DataLoader with a DistributedSampler does:
/// - the epoch's order is 0..N-1, or with shuffle a permutation determined by (seed, epoch) only;
/// - the order is padded by repeating its beginning up to a multiple of world_size, and rank r
///   takes positions r, r + world_size, ... so every rank gets ceil(N / world_size) examples;
/// - those are cut into batches of batch_size (the last one smaller unless drop_last).
/// Use set_epoch(e) before each epoch to reshuffle. Iterate with `for (const Batch& b : loader)`
/// or batch(i). The dataset must outlive nothing: the loader shares ownership of it.
class DataLoader {
 public:
  /// Throws InvalidArgument ("[DataLoader] ...") for a null or empty dataset, batch_size <= 0,
  /// world_size <= 0 or rank outside [0, world_size).
  DataLoader(std::shared_ptr<const Dataset> dataset, const DataLoaderOptions& options);

  /// Selects the epoch whose order the loader yields (default 0).
  void set_epoch(int64_t epoch);
  int64_t epoch() const { return epoch_; }
  /// Examples this rank sees per epoch (ceil(N / world_size)).
  int64_t num_samples() const;
  /// Batches per epoch on this rank.
  int64_t num_batches() const;
  /// This rank's dataset indices for the current epoch, in order.
  const std::vector<int64_t>& indices() const { return order_; }
  /// Batch `i` (0 <= i < num_batches()) of the current epoch.
  Batch batch(int64_t i) const;
  const DataLoaderOptions& options() const { return options_; }

  /// Input iterator over the batches of the current epoch.
  class Iterator {
   public:
    Iterator(const DataLoader* loader, int64_t i) : loader_(loader), i_(i) {}
    Batch operator*() const { return loader_->batch(i_); }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator!=(const Iterator& o) const { return i_ != o.i_; }
    bool operator==(const Iterator& o) const { return i_ == o.i_; }

   private:
    const DataLoader* loader_;
    int64_t i_;
  };
  Iterator begin() const { return {this, 0}; }
  Iterator end() const { return {this, num_batches()}; }

 private:
  void build_order();

  std::shared_ptr<const Dataset> dataset_;
  DataLoaderOptions options_;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;
};

/// A permutation of 0..n-1 determined by `seed` only: Fisher-Yates with std::mt19937_64 seeded
/// by splitmix64(seed) and rejection-sampled bounded integers (the same on every platform).
std::vector<int64_t> random_permutation(int64_t n, uint64_t seed);

/// Indices of a train / test split.
struct Split {
  std::vector<int64_t> train;
  std::vector<int64_t> test;
};

/// Splits 0..n-1 at random (random_permutation(n, seed)): the test part has
/// ceil(test_fraction * n) indices (as sklearn's train_test_split), the rest is train; each part
/// is in permutation order. Throws InvalidArgument ("[train_test_split] ...") unless n > 0 and
/// 0 < test_fraction < 1 and both parts are non-empty.
Split train_test_split(int64_t n, double test_fraction, uint64_t seed);

/// Rows `indices` of x (along axis 0) as a new contiguous tensor on x's device.
/// Throws InvalidArgument ("[take_rows] ...") for rank 0 or an index out of range.
Tensor take_rows(const Tensor& x, std::span<const int64_t> indices, const ExecContext& ctx = {});

/// Inputs and class labels.
struct LabeledData {
  Tensor inputs;  ///< (N, features), f32
  Tensor labels;  ///< (N), i64
};

/// Where sklearn's digits.csv.gz is: the first existing file among
/// {/usr/lib/python3, /usr/lib/python3.*, /usr/local/lib/python3.*}/{dist,site}-packages/
/// sklearn/datasets/data/digits.csv.gz (any Python version). Empty when none exists.
std::string find_digits_csv();

/// The UCI optical-digits test set as shipped by scikit-learn (load_digits): 1797 images of 8x8
/// pixels with values 0..16 and their digit 0..9. Reads the gzip CSV at `path` (empty: found by
/// find_digits_csv(); Debian package python3-sklearn installs it). Returns inputs (1797, 64) f32
/// scaled by 1/16 into [0, 1] and labels (1797) i64. Throws IoError ("[load_digits] <path> ...")
/// when the file is missing, unreadable or not 65 integer columns per row with pixels in 0..16
/// and labels in 0..9.
LabeledData load_digits(const std::string& path = "");

/// The default English text for character models: the first existing file among
/// /usr/share/perl/5.* /pod/perldiag.pod (Perl's diagnostics, ~300 KB of plain English; package
/// perl-modules-5.xx, a dependency of build-essential) and /usr/lib/python3.* /pydoc_data/
/// topics.py (Python's language reference, ~750 KB; package libpython3.xx-stdlib, a dependency of
/// python3). Empty when none exists.
std::string default_text_corpus_path();

/// Shannon entropy of the byte distribution of `text`, in nats per character (0 for empty text):
/// the loss a model that ignores context reaches at best.
double unigram_entropy(std::string_view text);

/// Which part of a corpus to sample from.
enum class CorpusSplit { kTrain, kVal };

/// Token windows for next-character prediction: input (B, T) and target (B, T), i64, with
/// target[b][t] = the character after input[b][t].
struct TokenBatch {
  Tensor input;
  Tensor target;
};

/// A character-level corpus: the vocabulary is the sorted distinct bytes of the text, tokens are
/// their indices. The first (1 - val_fraction) of the text is the training part, the rest the
/// validation part (nanoGPT's split).
class CharCorpus {
 public:
  /// Reads `path` (empty: default_text_corpus_path()). Throws IoError ("[CharCorpus] <path> ...")
  /// when the file is missing or unreadable, InvalidArgument when the text is too short to give
  /// both parts at least 2 characters or val_fraction is outside (0, 1).
  static CharCorpus from_file(const std::string& path = "", double val_fraction = 0.1);
  /// Same from text in memory.
  static CharCorpus from_string(std::string text, double val_fraction = 0.1);

  /// Number of distinct characters.
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }
  /// The vocabulary: sorted distinct bytes.
  const std::vector<uint8_t>& vocabulary() const { return vocab_; }
  /// Token ids of `text`; InvalidArgument ("[CharCorpus::encode] ...") for a byte outside the
  /// vocabulary.
  std::vector<int64_t> encode(std::string_view text) const;
  /// Text of token ids; InvalidArgument ("[CharCorpus::decode] ...") for an id out of range.
  std::string decode(std::span<const int64_t> tokens) const;
  /// The whole text.
  const std::string& text() const { return text_; }
  /// Tokens of the training / validation part, (n) i64 on the CPU.
  const Tensor& tokens(CorpusSplit split) const {
    return split == CorpusSplit::kTrain ? train_ : val_;
  }
  /// unigram_entropy(text()).
  double unigram_entropy() const;

  /// `batch` windows of `length` tokens from `split` at random starts, determined by
  /// (seed, draw) only: window b starts at the Philox draw with key `seed` and counter
  /// (b, draw), reduced modulo (part length - length). Pass the step as `draw` for a fresh batch
  /// every step. Throws InvalidArgument ("[CharCorpus::sample] ...") unless batch > 0 and
  /// 0 < length < part length.
  TokenBatch sample(CorpusSplit split, int64_t batch, int64_t length, uint64_t seed,
                    uint64_t draw) const;

 private:
  CharCorpus() = default;
  std::string text_;
  std::vector<uint8_t> vocab_;
  int16_t index_[256] = {};  // byte -> token id, -1 when absent
  Tensor train_;
  Tensor val_;
};

/// Synthetic classification data (sklearn's make_blobs): class c has a centre drawn uniformly in
/// [-center_box, center_box]^features, and example i has label i % classes and input
/// centre[label] + N(0, 1) per feature. Draws come from Philox with key `seed`.
/// Returns inputs (n, features) f32 and labels (n) i64. Throws InvalidArgument
/// ("[make_classification] ...") unless n, features, classes > 0 and center_box > 0.
LabeledData make_classification(int64_t n, int64_t features, int64_t classes, uint64_t seed,
                                double center_box = 3.0);

/// Tokens uniform in [0, vocab) of `shape`, i64 on the CPU, from Philox with key `seed`: element i
/// (row-major) is the 64-bit word of lanes (2 (i % 2), 2 (i % 2) + 1) of block i / 2, modulo vocab.
/// Throws InvalidArgument ("[random_tokens] ...") unless vocab > 0.
Tensor random_tokens(Shape shape, int64_t vocab, uint64_t seed);

}  // namespace frugal::nn
