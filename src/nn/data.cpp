// Datasets, the DataLoader, the digits / text loaders and synthetic data
// (include/frugal/nn/data.hpp).
#include "frugal/nn/data.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include "frugal/core/philox.hpp"
#include "frugal/core/random.hpp"

namespace frugal::nn {
namespace {

namespace fs = std::filesystem;

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Uniform in [0, k) from a 64-bit engine by rejection (OpenBSD's arc4random_uniform): draws below
/// 2^64 mod k are redrawn, so every residue is equally likely.
uint64_t bounded(std::mt19937_64& rng, uint64_t k) {
  const uint64_t threshold = (0 - k) % k;
  uint64_t x = rng();
  while (x < threshold) x = rng();
  return x % k;
}

/// Shape (lead, rest...).
Shape prepend(int64_t lead, const Shape& rest) {
  Shape s{lead};
  for (int64_t d : rest) s.push_back(d);
  return s;
}

/// Subdirectories of `root` whose names start with `prefix`, sorted by name, newest version last.
std::vector<fs::path> dirs_with_prefix(const fs::path& root, const std::string& prefix) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) == 0 && it->is_directory(ec)) out.push_back(it->path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

[[noreturn]] void io_fail(const char* op, const std::string& path, const std::string& what) {
  detail::fail(ErrorCode::kIoError, op, path, ": ", what);
}

/// The whole (optionally gzip-compressed) file; zlib reads plain files transparently.
std::string read_gzip(const char* op, const std::string& path) {
  if (!is_file(path)) io_fail(op, path, "no such file");
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) io_fail(op, path, "cannot open");
  std::string out;
  std::array<char, 1 << 16> buf;
  for (;;) {
    const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int err = 0;
      const std::string msg = gzerror(f, &err);
      gzclose(f);
      io_fail(op, path, "read error: " + msg);
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  if (gzclose(f) != Z_OK) io_fail(op, path, "corrupt gzip stream");
  return out;
}

}  // namespace

// ---- TensorDataset -----------------------------------------------------------------------------

TensorDataset::TensorDataset(Tensor inputs, Tensor targets)
    : inputs_(std::move(inputs)), targets_(std::move(targets)) {
  FRUGAL_REQUIRE(inputs_.defined() && targets_.defined(), "TensorDataset",
                 "inputs or targets undefined");
  FRUGAL_REQUIRE(inputs_.rank() >= 1 && targets_.rank() >= 1, "TensorDataset", "inputs ",
                 inputs_.shape(), " and targets ", targets_.shape(),
                 " need a leading example axis");
  FRUGAL_REQUIRE(inputs_.dim(0) == targets_.dim(0), "TensorDataset", "inputs have ", inputs_.dim(0),
                 " examples but targets have ", targets_.dim(0));
}

Example TensorDataset::get(int64_t i) const {
  FRUGAL_REQUIRE(i >= 0 && i < size(), "TensorDataset::get", "index ", i, " out of range [0, ",
                 size(), ")");
  auto row = [i](const Tensor& t) {
    Shape rest;
    for (int d = 1; d < t.rank(); ++d) rest.push_back(t.dim(d));
    Tensor r = t.slice(0, i, i + 1);
    return r.is_contiguous() ? r.reshape(rest) : r.contiguous().reshape(rest);
  };
  return {row(inputs_), row(targets_)};
}

// ---- shuffling and splitting -------------------------------------------------------------------

std::vector<int64_t> random_permutation(int64_t n, uint64_t seed) {
  FRUGAL_REQUIRE(n >= 0, "random_permutation", "n ", n, " is negative");
  std::vector<int64_t> p(static_cast<std::size_t>(n));
  std::iota(p.begin(), p.end(), int64_t{0});
  std::mt19937_64 rng(splitmix64(seed));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(bounded(rng, static_cast<uint64_t>(i + 1)));
    std::swap(p[static_cast<std::size_t>(i)], p[static_cast<std::size_t>(j)]);
  }
  return p;
}

Split train_test_split(int64_t n, double test_fraction, uint64_t seed) {
  const char* op = "train_test_split";
  FRUGAL_REQUIRE(n > 0, op, "n ", n, " must be > 0");
  FRUGAL_REQUIRE(test_fraction > 0 && test_fraction < 1, op, "test_fraction ", test_fraction,
                 " is outside (0, 1)");
  const auto n_test = static_cast<int64_t>(std::ceil(test_fraction * static_cast<double>(n)));
  FRUGAL_REQUIRE(n_test < n, op, "test_fraction ", test_fraction, " of ", n,
                 " examples leaves no training example");
  std::vector<int64_t> p = random_permutation(n, seed);
  Split s;
  s.test.assign(p.begin(), p.begin() + n_test);
  s.train.assign(p.begin() + n_test, p.end());
  return s;
}

Tensor take_rows(const Tensor& x, std::span<const int64_t> indices, const ExecContext& ctx) {
  FRUGAL_REQUIRE(x.defined() && x.rank() >= 1, "take_rows", "needs a tensor of rank >= 1");
  const int64_t n = x.dim(0);
  for (int64_t i : indices) {
    FRUGAL_REQUIRE(i >= 0 && i < n, "take_rows", "index ", i, " out of range [0, ", n, ")");
  }
  Shape rest;
  for (int d = 1; d < x.rank(); ++d) rest.push_back(x.dim(d));
  const auto k = static_cast<int64_t>(indices.size());
  Tensor out = Tensor::empty(prepend(k, rest), x.dtype(), x.device(), ctx);
  if (out.numel() == 0) return out;
  if (x.device().is_cpu() && x.is_contiguous() && !is_packed(x.dtype())) {
    const int64_t row_bytes = dtype_nbytes(x.dtype(), rest.numel());
    const auto* src = static_cast<const uint8_t*>(x.data_ptr());
    auto* dst = static_cast<uint8_t*>(out.data_ptr());
    for (int64_t j = 0; j < k; ++j) {
      std::memcpy(dst + j * row_bytes, src + indices[static_cast<std::size_t>(j)] * row_bytes,
                  static_cast<std::size_t>(row_bytes));
    }
    return out;
  }
  for (int64_t j = 0; j < k; ++j) {
    const int64_t i = indices[static_cast<std::size_t>(j)];
    out.slice(0, j, j + 1).copy_from(x.slice(0, i, i + 1), ctx);
  }
  return out;
}

// ---- DataLoader --------------------------------------------------------------------------------

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, const DataLoaderOptions& options)
    : dataset_(std::move(dataset)), options_(options) {
  const char* op = "DataLoader";
  FRUGAL_REQUIRE(dataset_ != nullptr, op, "null dataset");
  FRUGAL_REQUIRE(dataset_->size() > 0, op, "empty dataset");
  FRUGAL_REQUIRE(options.batch_size > 0, op, "batch_size ", options.batch_size, " must be > 0");
  FRUGAL_REQUIRE(options.world_size > 0, op, "world_size ", options.world_size, " must be > 0");
  FRUGAL_REQUIRE(options.rank >= 0 && options.rank < options.world_size, op, "rank ", options.rank,
                 " is outside [0, world_size = ", options.world_size, ")");
  build_order();
}

void DataLoader::set_epoch(int64_t epoch) {
  FRUGAL_REQUIRE(epoch >= 0, "DataLoader::set_epoch", "epoch ", epoch, " is negative");
  epoch_ = epoch;
  build_order();
}

int64_t DataLoader::num_samples() const {
  const int64_t w = options_.world_size;
  return (dataset_->size() + w - 1) / w;
}

int64_t DataLoader::num_batches() const {
  const int64_t s = num_samples();
  const int64_t b = options_.batch_size;
  return options_.drop_last ? s / b : (s + b - 1) / b;
}

void DataLoader::build_order() {
  const int64_t n = dataset_->size();
  std::vector<int64_t> all;
  if (options_.shuffle) {
    // DistributedSampler seeds its generator with seed + epoch.
    all = random_permutation(n, options_.seed + static_cast<uint64_t>(epoch_));
  } else {
    all.resize(static_cast<std::size_t>(n));
    std::iota(all.begin(), all.end(), int64_t{0});
  }
  const int64_t w = options_.world_size;
  const int64_t total = num_samples() * w;
  for (int64_t i = n; i < total; ++i) all.push_back(all[static_cast<std::size_t>(i % n)]);
  order_.clear();
  for (int64_t i = options_.rank; i < total; i += w) {
    order_.push_back(all[static_cast<std::size_t>(i)]);
  }
}

Batch DataLoader::batch(int64_t i) const {
  FRUGAL_REQUIRE(i >= 0 && i < num_batches(), "DataLoader::batch", "batch ", i,
                 " out of range [0, ", num_batches(), ")");
  const int64_t lo = i * options_.batch_size;
  const int64_t hi = std::min<int64_t>(lo + options_.batch_size, num_samples());
  Batch b;
  b.indices.assign(order_.begin() + lo, order_.begin() + hi);
  if (const auto* td = dynamic_cast<const TensorDataset*>(dataset_.get())) {
    b.input = take_rows(td->inputs(), b.indices);
    b.target = take_rows(td->targets(), b.indices);
    return b;
  }
  const auto count = static_cast<int64_t>(b.indices.size());
  for (int64_t j = 0; j < count; ++j) {
    const int64_t idx = b.indices[static_cast<std::size_t>(j)];
    Example e = dataset_->get(idx);
    if (j == 0) {
      b.input = Tensor::empty(prepend(count, e.input.shape()), e.input.dtype(), e.input.device());
      b.target =
          Tensor::empty(prepend(count, e.target.shape()), e.target.dtype(), e.target.device());
    }
    auto put = [&](Tensor& out, const Tensor& v, const char* what) {
      Shape want;
      for (int d = 1; d < out.rank(); ++d) want.push_back(out.dim(d));
      FRUGAL_REQUIRE(v.shape() == want && v.dtype() == out.dtype(), "DataLoader", "example ", idx,
                     " has ", what, " shape ", v.shape(), " dtype ", dtype_name(v.dtype()),
                     " but the batch's first example has shape ", want, " dtype ",
                     dtype_name(out.dtype()));
      out.slice(0, j, j + 1).reshape(want).copy_from(v);
    };
    put(b.input, e.input, "input");
    put(b.target, e.target, "target");
  }
  return b;
}

// ---- digits ------------------------------------------------------------------------------------

std::string find_digits_csv() {
  const fs::path rel = "sklearn/datasets/data/digits.csv.gz";
  std::vector<fs::path> cands = {fs::path("/usr/lib/python3/dist-packages") / rel};
  for (const char* root : {"/usr/lib", "/usr/local/lib"}) {
    for (const fs::path& d : dirs_with_prefix(root, "python3")) {
      cands.push_back(d / "dist-packages" / rel);
      cands.push_back(d / "site-packages" / rel);
    }
  }
  for (const fs::path& c : cands) {
    if (is_file(c)) return c.string();
  }
  return "";
}

LabeledData load_digits(const std::string& path_in) {
  const char* op = "load_digits";
  std::string path = path_in.empty() ? find_digits_csv() : path_in;
  if (path.empty()) {
    detail::fail(ErrorCode::kIoError, op,
                 "sklearn/datasets/data/digits.csv.gz not found under /usr/lib/python3*/ or "
                 "/usr/local/lib/python3*/ {dist,site}-packages (install python3-sklearn or pass "
                 "a path)");
  }
  const std::string text = read_gzip(op, path);
  constexpr int kCols = 65;
  std::vector<float> pixels;
  std::vector<int64_t> labels;
  std::size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    int col = 0;
    std::size_t p = 0;
    while (true) {
      std::size_t comma = line.find(',', p);
      std::string field(
          line.substr(p, comma == std::string_view::npos ? std::string_view::npos : comma - p));
      char* end = nullptr;
      const double v = std::strtod(field.c_str(), &end);
      if (field.empty() || end != field.c_str() + field.size() || v != std::floor(v)) {
        io_fail(op, path,
                detail::concat("line ", line_no, " field ", col + 1, " '", field,
                               "' is not an integer"));
      }
      if (col >= kCols) {
        io_fail(op, path, detail::concat("line ", line_no, " has more than ", kCols, " fields"));
      }
      const bool is_label = col == kCols - 1;
      if (is_label ? (v < 0 || v > 9) : (v < 0 || v > 16)) {
        io_fail(op, path,
                detail::concat("line ", line_no, " field ", col + 1, " value ", v,
                               " out of range (pixels 0..16, labels 0..9)"));
      }
      if (is_label) {
        labels.push_back(static_cast<int64_t>(v));
      } else {
        pixels.push_back(static_cast<float>(v / 16.0));
      }
      ++col;
      if (comma == std::string_view::npos) break;
      p = comma + 1;
    }
    if (col != kCols) {
      io_fail(op, path,
              detail::concat("line ", line_no, " has ", col, " fields; expected ", kCols));
    }
  }
  if (labels.empty()) io_fail(op, path, "no rows");
  const auto n = static_cast<int64_t>(labels.size());
  return {Tensor::from_vector(pixels, Shape{n, kCols - 1}), Tensor::from_vector(labels, Shape{n})};
}

// ---- text --------------------------------------------------------------------------------------

std::string default_text_corpus_path() {
  std::vector<fs::path> cands;
  auto perl = dirs_with_prefix("/usr/share/perl", "5.");
  for (auto it = perl.rbegin(); it != perl.rend(); ++it) {
    cands.push_back(*it / "pod" / "perldiag.pod");
  }
  auto py = dirs_with_prefix("/usr/lib", "python3.");
  for (auto it = py.rbegin(); it != py.rend(); ++it) {
    cands.push_back(*it / "pydoc_data" / "topics.py");
  }
  for (const fs::path& c : cands) {
    if (is_file(c)) return c.string();
  }
  return "";
}

double unigram_entropy(std::string_view text) {
  if (text.empty()) return 0.0;
  std::array<int64_t, 256> counts{};
  for (char c : text) ++counts[static_cast<uint8_t>(c)];
  const auto n = static_cast<double>(text.size());
  double h = 0;
  for (int64_t c : counts) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / n;
    h -= p * std::log(p);
  }
  return h;
}

CharCorpus CharCorpus::from_file(const std::string& path_in, double val_fraction) {
  const char* op = "CharCorpus";
  const std::string path = path_in.empty() ? default_text_corpus_path() : path_in;
  if (path.empty()) {
    detail::fail(ErrorCode::kIoError, op,
                 "no default text found (/usr/share/perl/5.*/pod/perldiag.pod, "
                 "/usr/lib/python3.*/pydoc_data/topics.py); pass a path");
  }
  if (!is_file(path)) io_fail(op, path, "no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) io_fail(op, path, "cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) io_fail(op, path, "read error");
  return from_string(ss.str(), val_fraction);
}

CharCorpus CharCorpus::from_string(std::string text, double val_fraction) {
  const char* op = "CharCorpus";
  FRUGAL_REQUIRE(val_fraction > 0 && val_fraction < 1, op, "val_fraction ", val_fraction,
                 " is outside (0, 1)");
  const auto n = static_cast<int64_t>(text.size());
  const auto n_train = static_cast<int64_t>(static_cast<double>(n) * (1.0 - val_fraction));
  FRUGAL_REQUIRE(n_train >= 2 && n - n_train >= 2, op, "text of ", n,
                 " characters is too short for a split with val_fraction ", val_fraction);
  CharCorpus c;
  c.text_ = std::move(text);
  std::array<bool, 256> present{};
  for (char ch : c.text_) present[static_cast<uint8_t>(ch)] = true;
  std::fill(std::begin(c.index_), std::end(c.index_), int16_t{-1});
  for (int b = 0; b < 256; ++b) {
    if (present[static_cast<std::size_t>(b)]) {
      c.index_[b] = static_cast<int16_t>(c.vocab_.size());
      c.vocab_.push_back(static_cast<uint8_t>(b));
    }
  }
  std::vector<int64_t> ids = c.encode(c.text_);
  c.train_ = Tensor::from_vector(std::span<const int64_t>(ids.data(), n_train), Shape{n_train});
  c.val_ = Tensor::from_vector(std::span<const int64_t>(ids.data() + n_train, n - n_train),
                               Shape{n - n_train});
  return c;
}

std::vector<int64_t> CharCorpus::encode(std::string_view text) const {
  std::vector<int64_t> out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const int16_t id = index_[static_cast<uint8_t>(text[i])];
    FRUGAL_REQUIRE(id >= 0, "CharCorpus::encode", "byte ", int(static_cast<uint8_t>(text[i])),
                   " at position ", i, " is not in the vocabulary");
    out.push_back(id);
  }
  return out;
}

std::string CharCorpus::decode(std::span<const int64_t> tokens) const {
  std::string out;
  out.reserve(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    FRUGAL_REQUIRE(tokens[i] >= 0 && tokens[i] < vocab_size(), "CharCorpus::decode", "token ",
                   tokens[i], " at position ", i, " is outside [0, ", vocab_size(), ")");
    out.push_back(static_cast<char>(vocab_[static_cast<std::size_t>(tokens[i])]));
  }
  return out;
}

double CharCorpus::unigram_entropy() const { return nn::unigram_entropy(text_); }

TokenBatch CharCorpus::sample(CorpusSplit split, int64_t batch, int64_t length, uint64_t seed,
                              uint64_t draw) const {
  const char* op = "CharCorpus::sample";
  const Tensor& part = tokens(split);
  const int64_t n = part.numel();
  FRUGAL_REQUIRE(batch > 0, op, "batch ", batch, " must be > 0");
  FRUGAL_REQUIRE(length > 0 && length < n, op, "length ", length, " is outside (0, ", n,
                 ") for this part");
  const int64_t* tok = part.data<int64_t>();
  const auto starts = static_cast<uint64_t>(n - length);
  std::vector<int64_t> in(static_cast<std::size_t>(batch * length));
  std::vector<int64_t> tg(in.size());
  for (int64_t b = 0; b < batch; ++b) {
    const auto ub = static_cast<uint64_t>(b);
    const Uint4 ctr{static_cast<uint32_t>(ub), static_cast<uint32_t>(ub >> 32),
                    static_cast<uint32_t>(draw), static_cast<uint32_t>(draw >> 32)};
    const Uint4 r = Philox4x32::generate(ctr, seed);
    // Modulo of a 64-bit draw: the bias is below starts / 2^64, far under any measurable effect.
    const uint64_t bits = (static_cast<uint64_t>(r.y) << 32) | r.x;
    const auto s = static_cast<int64_t>(bits % starts);
    for (int64_t t = 0; t < length; ++t) {
      in[static_cast<std::size_t>(b * length + t)] = tok[s + t];
      tg[static_cast<std::size_t>(b * length + t)] = tok[s + t + 1];
    }
  }
  return {Tensor::from_vector(in, Shape{batch, length}),
          Tensor::from_vector(tg, Shape{batch, length})};
}

// ---- synthetic ---------------------------------------------------------------------------------

LabeledData make_classification(int64_t n, int64_t features, int64_t classes, uint64_t seed,
                                double center_box) {
  const char* op = "make_classification";
  FRUGAL_REQUIRE(n > 0 && features > 0 && classes > 0, op, "n ", n, ", features ", features,
                 " and classes ", classes, " must be > 0");
  FRUGAL_REQUIRE(std::isfinite(center_box) && center_box > 0, op, "center_box ", center_box,
                 " must be finite and > 0");
  ExecContext ctx;
  ctx.seed = seed;
  const auto box = static_cast<float>(center_box);
  Tensor centres =
      rand_uniform(Shape{classes, features}, DType::kF32, Device::cpu(), ctx, -box, box);
  ctx.offset = philox_counters(classes * features);
  Tensor x = rand_normal(Shape{n, features}, DType::kF32, Device::cpu(), ctx);
  std::vector<int64_t> labels(static_cast<std::size_t>(n));
  const float* c = centres.data<float>();
  float* px = x.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = i % classes;
    labels[static_cast<std::size_t>(i)] = y;
    for (int64_t f = 0; f < features; ++f) px[i * features + f] += c[y * features + f];
  }
  return {x, Tensor::from_vector(labels, Shape{n})};
}

Tensor random_tokens(Shape shape, int64_t vocab, uint64_t seed) {
  FRUGAL_REQUIRE(vocab > 0, "random_tokens", "vocab ", vocab, " must be > 0");
  const int64_t n = shape.numel();
  std::vector<int64_t> v(static_cast<std::size_t>(n));
  const auto k = static_cast<uint64_t>(vocab);
  for (int64_t i = 0; i < n; ++i) {
    // Element i takes the 64 bits of lanes (2 (i % 2), 2 (i % 2) + 1) of Philox block i / 2.
    const Uint4 b = Philox4x32::generate(philox_counter(static_cast<uint64_t>(i / 2), 0), seed);
    const int lo = 2 * static_cast<int>(i % 2);
    const uint64_t bits = (static_cast<uint64_t>(lane(b, lo + 1)) << 32) | lane(b, lo);
    v[static_cast<std::size_t>(i)] = static_cast<int64_t>(bits % k);
  }
  return Tensor::from_vector(v, shape);
}

}  // namespace frugal::nn
