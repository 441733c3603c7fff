// Datasets and the DataLoader (ordering, shuffling, DistributedSampler sharding), the digits and
// text loaders (against the published digits counts and closed-form entropies), synthetic data,
// and bad input.
#include "frugal/nn/data.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "support/check.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::expect_error;

namespace fs = std::filesystem;

/// Inputs (n, 2) with row i = (i, -i) and targets (n) = i, so a batch shows which rows it holds.
std::shared_ptr<TensorDataset> counting_dataset(int64_t n) {
  std::vector<float> x;
  std::vector<int64_t> y;
  for (int64_t i = 0; i < n; ++i) {
    x.push_back(static_cast<float>(i));
    x.push_back(static_cast<float>(-i));
    y.push_back(i);
  }
  return std::make_shared<TensorDataset>(Tensor::from_vector(x, {n, 2}),
                                         Tensor::from_vector(y, {n}));
}

/// torch.utils.data.DistributedSampler.__iter__ (drop_last = False) written from its source,
/// given the epoch's full order.
std::vector<int64_t> distributed_sampler(std::vector<int64_t> order, int rank, int world) {
  const auto n = static_cast<int64_t>(order.size());
  const int64_t num_samples = (n + world - 1) / world;
  const int64_t total = num_samples * world;
  const int64_t pad = total - n;
  if (pad <= n) {
    order.insert(order.end(), order.begin(), order.begin() + pad);
  } else {
    std::vector<int64_t> rep;
    const int64_t times = (pad + n - 1) / n;
    for (int64_t k = 0; k < times; ++k) rep.insert(rep.end(), order.begin(), order.begin() + n);
    order.insert(order.end(), rep.begin(), rep.begin() + pad);
  }
  std::vector<int64_t> out;
  for (int64_t i = rank; i < total; i += world) out.push_back(order[static_cast<std::size_t>(i)]);
  return out;
}

TEST(TensorDataset, ExamplesAreRows) {
  auto ds = counting_dataset(5);
  EXPECT_EQ(ds->size(), 5);
  Example e = ds->get(3);
  EXPECT_EQ(e.input.shape(), (Shape{2}));
  EXPECT_EQ(e.input.to_vector<float>(), (std::vector<float>{3, -3}));
  EXPECT_EQ(e.target.rank(), 0);
  EXPECT_EQ(e.target.to_vector<int64_t>(), (std::vector<int64_t>{3}));
}

TEST(DataLoader, SequentialBatchesAndDropLast) {
  auto ds = counting_dataset(10);
  DataLoader dl(ds, {.batch_size = 4});
  EXPECT_EQ(dl.num_batches(), 3);
  std::vector<int64_t> seen;
  std::vector<int64_t> sizes;
  for (const Batch& b : dl) {
    sizes.push_back(b.input.dim(0));
    EXPECT_EQ(b.input.dim(1), 2);
    const auto x = b.input.to_vector<float>();
    const auto y = b.target.to_vector<int64_t>();
    for (std::size_t j = 0; j < y.size(); ++j) {
      EXPECT_EQ(x[2 * j], static_cast<float>(y[j]));  // input and target stay paired
      EXPECT_EQ(b.indices[j], y[j]);
      seen.push_back(y[j]);
    }
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 2}));
  std::vector<int64_t> all(10);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(seen, all);

  DataLoader dd(ds, {.batch_size = 4, .drop_last = true});
  EXPECT_EQ(dd.num_batches(), 2);
  int count = 0;
  for (const Batch& b : dd) {
    EXPECT_EQ(b.target.dim(0), 4);
    ++count;
  }
  EXPECT_EQ(count, 2);
}

TEST(DataLoader, ShuffleIsAPermutationFixedBySeedAndEpoch) {
  auto ds = counting_dataset(50);
  DataLoaderOptions o{.batch_size = 8, .shuffle = true, .seed = 42};
  DataLoader a(ds, o), b(ds, o);
  EXPECT_EQ(a.indices(), b.indices());
  std::vector<int64_t> sorted = a.indices();
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> all(50);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(sorted, all);
  EXPECT_NE(a.indices(), all);
  const std::vector<int64_t> epoch0 = a.indices();
  a.set_epoch(1);
  EXPECT_NE(a.indices(), epoch0);
  a.set_epoch(0);
  EXPECT_EQ(a.indices(), epoch0);
  o.seed = 43;
  EXPECT_NE(DataLoader(ds, o).indices(), epoch0);
  // Batch contents follow indices().
  Batch b1 = a.batch(1);
  EXPECT_EQ(b1.target.to_vector<int64_t>(),
            std::vector<int64_t>(epoch0.begin() + 8, epoch0.begin() + 16));
}

TEST(DataLoader, ShardsLikeDistributedSampler) {
  for (int64_t n : {10, 11, 12, 2}) {
    for (int world : {1, 3, 4}) {
      auto ds = counting_dataset(n);
      for (bool shuffle : {false, true}) {
        // The epoch's full order, from a single-rank loader with the same seed.
        DataLoader whole(ds, {.batch_size = 1, .shuffle = shuffle, .seed = 7});
        whole.set_epoch(2);
        std::multiset<int64_t> union_of_ranks;
        for (int r = 0; r < world; ++r) {
          DataLoader dl(
              ds, {.batch_size = 3, .shuffle = shuffle, .seed = 7, .rank = r, .world_size = world});
          dl.set_epoch(2);
          EXPECT_EQ(dl.num_samples(), (n + world - 1) / world);
          EXPECT_EQ(dl.indices(), distributed_sampler(whole.indices(), r, world))
              << "n " << n << " world " << world << " rank " << r;
          union_of_ranks.insert(dl.indices().begin(), dl.indices().end());
        }
        for (int64_t i = 0; i < n; ++i) EXPECT_GE(union_of_ranks.count(i), 1u);
      }
    }
  }
}

/// A dataset that computes its examples: input (2, 3) filled with i, target (1) = i * 10.
class ComputedDataset : public Dataset {
 public:
  int64_t size() const override { return 7; }
  Example get(int64_t i) const override {
    return {Tensor::full({2, 3}, static_cast<double>(i), DType::kF64),
            Tensor::full({1}, static_cast<double>(i * 10), DType::kI64)};
  }
};

TEST(DataLoader, StacksAnyDataset) {
  DataLoader dl(std::make_shared<ComputedDataset>(), {.batch_size = 3, .shuffle = true, .seed = 1});
  int64_t total = 0;
  for (const Batch& b : dl) {
    EXPECT_EQ(b.input.dtype(), DType::kF64);
    EXPECT_EQ(b.input.dim(1), 2);
    EXPECT_EQ(b.input.dim(2), 3);
    const auto x = b.input.to_vector<double>();
    const auto y = b.target.to_vector<int64_t>();
    for (std::size_t j = 0; j < b.indices.size(); ++j) {
      EXPECT_EQ(x[6 * j + 5], static_cast<double>(b.indices[j]));
      EXPECT_EQ(y[j], b.indices[j] * 10);
    }
    total += b.input.dim(0);
  }
  EXPECT_EQ(total, 7);
}

TEST(RandomPermutation, AllOrdersEquallyLikely) {
  // 6000 seeds over the 6 permutations of 3: each count is Binomial(6000, 1/6), sd ~ 29, so
  // [850, 1150] is more than 5 sd from the mean.
  std::map<std::vector<int64_t>, int> counts;
  for (uint64_t s = 0; s < 6000; ++s) ++counts[random_permutation(3, s)];
  EXPECT_EQ(counts.size(), 6u);
  for (const auto& [perm, c] : counts) {
    EXPECT_GT(c, 850);
    EXPECT_LT(c, 1150);
  }
  EXPECT_TRUE(random_permutation(0, 1).empty());
}

TEST(TrainTestSplit, SizesDisjointAndDeterministic) {
  Split s = train_test_split(1797, 0.2, 0);
  EXPECT_EQ(s.test.size(), 360u);  // ceil(0.2 * 1797) as sklearn
  EXPECT_EQ(s.train.size(), 1437u);
  std::set<int64_t> all(s.train.begin(), s.train.end());
  all.insert(s.test.begin(), s.test.end());
  EXPECT_EQ(all.size(), 1797u);
  Split t = train_test_split(1797, 0.2, 0);
  EXPECT_EQ(s.test, t.test);
  EXPECT_NE(train_test_split(1797, 0.2, 1).test, s.test);

  Tensor x = Tensor::from_vector(std::vector<int32_t>{0, 1, 10, 11, 20, 21}, {3, 2});
  const std::vector<int64_t> idx{2, 0, 2};
  EXPECT_EQ(take_rows(x, idx).to_vector<int32_t>(), (std::vector<int32_t>{20, 21, 0, 1, 20, 21}));
  // A strided source takes the generic path.
  EXPECT_EQ(take_rows(x.t(), std::vector<int64_t>{1}).to_vector<int32_t>(),
            (std::vector<int32_t>{1, 11, 21}));
}

// ---- digits
// --------------------------------------------------------------------------------------

TEST(LoadDigits, MatchesSklearnsPublishedData) {
  if (find_digits_csv().empty()) GTEST_SKIP() << "python3-sklearn is not installed";
  LabeledData d = load_digits();
  ASSERT_EQ(d.inputs.shape(), (Shape{1797, 64}));
  ASSERT_EQ(d.labels.shape(), (Shape{1797}));
  EXPECT_EQ(d.inputs.dtype(), DType::kF32);
  EXPECT_EQ(d.labels.dtype(), DType::kI64);
  // np.bincount(load_digits().target).
  std::vector<int64_t> counts(10, 0);
  for (int64_t y : d.labels.to_vector<int64_t>()) ++counts[static_cast<std::size_t>(y)];
  EXPECT_EQ(counts, (std::vector<int64_t>{178, 182, 177, 183, 181, 182, 181, 179, 174, 180}));
  // load_digits().images[0][0] = [0, 0, 5, 13, 9, 1, 0, 0], target[0] = 0.
  const auto x = d.inputs.to_vector<float>();
  const std::vector<float> row0(x.begin(), x.begin() + 8);
  EXPECT_EQ(row0, (std::vector<float>{0, 0, 5.f / 16, 13.f / 16, 9.f / 16, 1.f / 16, 0, 0}));
  EXPECT_EQ(d.labels.to_vector<int64_t>()[0], 0);
  for (float v : x) {
    ASSERT_GE(v, 0.f);
    ASSERT_LE(v, 1.f);
  }
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() /
        ("frugal_data_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write_gz(const std::string& name, const std::string& content) {
    const std::string p = (dir_ / name).string();
    gzFile f = gzopen(p.c_str(), "wb");
    gzwrite(f, content.data(), static_cast<unsigned>(content.size()));
    gzclose(f);
    return p;
  }
  std::string write_plain(const std::string& name, const std::string& content) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  fs::path dir_;
};

std::string digits_row(int label, int fill = 3) {
  std::string s;
  for (int i = 0; i < 64; ++i) s += std::to_string(fill) + ",";
  return s + std::to_string(label) + "\n";
}

using LoadDigitsFile = TempDir;

TEST_F(LoadDigitsFile, ReadsGzipAndPlainCsv) {
  const std::string content = digits_row(7) + digits_row(2, 16);
  for (const std::string& p : {write_gz("d.csv.gz", content), write_plain("d.csv", content)}) {
    LabeledData d = load_digits(p);
    EXPECT_EQ(d.inputs.shape(), (Shape{2, 64}));
    EXPECT_EQ(d.labels.to_vector<int64_t>(), (std::vector<int64_t>{7, 2}));
    EXPECT_EQ(d.inputs.to_vector<float>()[0], 3.f / 16);
    EXPECT_EQ(d.inputs.to_vector<float>()[64], 1.f);
  }
}

TEST_F(LoadDigitsFile, RejectsMissingAndCorruptFiles) {
  const std::string missing = (dir_ / "nope.csv.gz").string();
  expect_error([&] { load_digits(missing); }, ErrorCode::kIoError, "load_digits", missing);
  std::string short_row = "1,2,3\n";
  const std::string a = write_gz("short.csv.gz", digits_row(1) + short_row);
  expect_error([&] { load_digits(a); }, ErrorCode::kIoError, "load_digits", "line 2");
  const std::string b = write_gz("text.csv.gz", digits_row(1) + "x," + digits_row(1));
  expect_error([&] { load_digits(b); }, ErrorCode::kIoError, "load_digits", "not an integer");
  const std::string c = write_gz("range.csv.gz", digits_row(1, 17));
  expect_error([&] { load_digits(c); }, ErrorCode::kIoError, "load_digits", "out of range");
  const std::string d = write_gz("label.csv.gz", digits_row(10));
  expect_error([&] { load_digits(d); }, ErrorCode::kIoError, "load_digits", "out of range");
  const std::string e = write_gz("empty.csv.gz", "");
  expect_error([&] { load_digits(e); }, ErrorCode::kIoError, "load_digits", "no rows");
  const std::string f = write_gz("long.csv.gz", "0," + digits_row(1));
  expect_error([&] { load_digits(f); }, ErrorCode::kIoError, "load_digits");
  // A gzip stream cut in half.
  std::string whole;
  for (int i = 0; i < 200; ++i) whole += digits_row(i % 10, i % 17);
  const std::string g = write_gz("cut.csv.gz", whole);
  fs::resize_file(g, fs::file_size(g) / 2);
  expect_error([&] { load_digits(g); }, ErrorCode::kIoError, "load_digits", g);
}

// ---- text
// ----------------------------------------------------------------------------------------

TEST(UnigramEntropy, ClosedForms) {
  EXPECT_EQ(unigram_entropy(""), 0.0);
  EXPECT_EQ(unigram_entropy("aaaa"), 0.0);
  EXPECT_NEAR(unigram_entropy("abab"), std::log(2.0), 1e-15);
  EXPECT_NEAR(unigram_entropy("abcdabcd"), std::log(4.0), 1e-15);
  // p = (1/2, 1/4, 1/4): H = 1.5 ln 2.
  EXPECT_NEAR(unigram_entropy("aabc"), 1.5 * std::log(2.0), 1e-15);
}

TEST(CharCorpus, VocabularyEncodingAndSplit) {
  CharCorpus c = CharCorpus::from_string("hello world, hello frugal", 0.2);
  // Sorted distinct bytes: ' ' ',' 'a' 'd' 'e' 'f' 'g' 'h' 'l' 'o' 'r' 'u' 'w'.
  EXPECT_EQ(c.vocab_size(), 13);
  EXPECT_EQ(c.vocabulary().front(), ' ');
  EXPECT_EQ(c.vocabulary().back(), 'w');
  const std::vector<int64_t> ids = c.encode("hello");
  EXPECT_EQ(ids, (std::vector<int64_t>{7, 4, 8, 8, 9}));
  EXPECT_EQ(c.decode(ids), "hello");
  // 25 characters: int(25 * 0.8) = 20 train, 5 val.
  EXPECT_EQ(c.tokens(CorpusSplit::kTrain).numel(), 20);
  EXPECT_EQ(c.tokens(CorpusSplit::kVal).numel(), 5);
  EXPECT_EQ(c.decode(c.tokens(CorpusSplit::kVal).to_vector<int64_t>()), "rugal");
  expect_error([&] { c.encode("hellz"); }, ErrorCode::kInvalidArgument, "CharCorpus::encode");
  expect_error([&] { c.decode(std::vector<int64_t>{13}); }, ErrorCode::kInvalidArgument,
               "CharCorpus::decode");
}

TEST(CharCorpus, SampledWindowsAreShiftedSubstrings) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "the quick brown fox jumps over the lazy dog ";
  CharCorpus c = CharCorpus::from_string(text);
  const std::string train = c.decode(c.tokens(CorpusSplit::kTrain).to_vector<int64_t>());
  TokenBatch b = c.sample(CorpusSplit::kTrain, 4, 16, 9, 0);
  ASSERT_EQ(b.input.shape(), (Shape{4, 16}));
  ASSERT_EQ(b.target.shape(), (Shape{4, 16}));
  const auto in = b.input.to_vector<int64_t>();
  const auto tg = b.target.to_vector<int64_t>();
  for (int r = 0; r < 4; ++r) {
    const std::vector<int64_t> ri(in.begin() + r * 16, in.begin() + (r + 1) * 16);
    const std::vector<int64_t> rt(tg.begin() + r * 16, tg.begin() + (r + 1) * 16);
    const std::string si = c.decode(ri), st = c.decode(rt);
    EXPECT_EQ(si.substr(1), st.substr(0, 15));
    const std::size_t pos = train.find(si + st.back());
    EXPECT_NE(pos, std::string::npos);
  }
  // Same (seed, draw) same batch; another draw another batch.
  EXPECT_EQ(c.sample(CorpusSplit::kTrain, 4, 16, 9, 0).input.to_vector<int64_t>(), in);
  EXPECT_NE(c.sample(CorpusSplit::kTrain, 4, 16, 9, 1).input.to_vector<int64_t>(), in);
  expect_error([&] { c.sample(CorpusSplit::kVal, 1, c.tokens(CorpusSplit::kVal).numel(), 0, 0); },
               ErrorCode::kInvalidArgument, "CharCorpus::sample");
  expect_error([&] { c.sample(CorpusSplit::kTrain, 0, 4, 0, 0); }, ErrorCode::kInvalidArgument,
               "CharCorpus::sample");
}

TEST(CharCorpus, DefaultTextIsLargeEnglish) {
  const std::string path = default_text_corpus_path();
  if (path.empty()) GTEST_SKIP() << "no default text (perl-modules or python3 stdlib)";
  CharCorpus c = CharCorpus::from_file();
  EXPECT_GT(c.text().size(), 200000u) << path;
  EXPECT_GT(c.vocab_size(), 60);
  EXPECT_LT(c.vocab_size(), 128);
  // English prose has a unigram entropy near 4.1 bits = 2.9 nats; markup raises it a little.
  EXPECT_GT(c.unigram_entropy(), 2.5);
  EXPECT_LT(c.unigram_entropy(), 4.0);
}

using CharCorpusFile = TempDir;

TEST_F(CharCorpusFile, ReadsFilesAndRejectsBadOnes) {
  const std::string p = write_plain("t.txt", "abcabcabcabcabc");
  CharCorpus c = CharCorpus::from_file(p);
  EXPECT_EQ(c.text(), "abcabcabcabcabc");
  EXPECT_NEAR(c.unigram_entropy(), std::log(3.0), 1e-15);
  const std::string missing = (dir_ / "missing.txt").string();
  expect_error([&] { CharCorpus::from_file(missing); }, ErrorCode::kIoError, "CharCorpus", missing);
  const std::string tiny = write_plain("tiny.txt", "ab");
  expect_error([&] { CharCorpus::from_file(tiny); }, ErrorCode::kInvalidArgument, "CharCorpus");
  expect_error([&] { CharCorpus::from_string("abcdefgh", 0.0); }, ErrorCode::kInvalidArgument,
               "CharCorpus");
}

// ---- synthetic
// -----------------------------------------------------------------------------------

TEST(MakeClassification, BlobsAroundTheirCentres) {
  const int64_t n = 3000, f = 4, k = 3;
  LabeledData d = make_classification(n, f, k, 11, 5.0);
  ASSERT_EQ(d.inputs.shape(), (Shape{n, f}));
  ASSERT_EQ(d.labels.shape(), (Shape{n}));
  const auto x = d.inputs.to_vector<float>();
  const auto y = d.labels.to_vector<int64_t>();
  std::vector<double> mean(static_cast<std::size_t>(k * f), 0.0);
  std::vector<double> var(static_cast<std::size_t>(k * f), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(y[static_cast<std::size_t>(i)], i % k);
    for (int64_t j = 0; j < f; ++j) mean[static_cast<std::size_t>((i % k) * f + j)] += x[i * f + j];
  }
  for (double& m : mean) m /= static_cast<double>(n / k);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < f; ++j) {
      const double dlt = x[i * f + j] - mean[static_cast<std::size_t>((i % k) * f + j)];
      var[static_cast<std::size_t>((i % k) * f + j)] += dlt * dlt;
    }
  }
  for (std::size_t j = 0; j < mean.size(); ++j) {
    EXPECT_LE(std::fabs(mean[j]), 5.0 + 0.2);  // centre in the box; sample mean sd 1/sqrt(1000)
    // Unit variance: the sample variance of 1000 normals has sd sqrt(2/999) ~ 0.045.
    EXPECT_NEAR(var[j] / static_cast<double>(n / k - 1), 1.0, 0.25);
  }
  EXPECT_EQ(make_classification(n, f, k, 11, 5.0).inputs.to_vector<float>(), x);
  EXPECT_NE(make_classification(n, f, k, 12, 5.0).inputs.to_vector<float>(), x);
  expect_error([] { make_classification(0, 2, 2, 0); }, ErrorCode::kInvalidArgument,
               "make_classification");
  expect_error([] { make_classification(4, 2, 2, 0, -1.0); }, ErrorCode::kInvalidArgument,
               "make_classification");
}

TEST(RandomTokens, UniformInRange) {
  Tensor t = random_tokens({100, 60}, 6, 3);
  EXPECT_EQ(t.dtype(), DType::kI64);
  std::vector<int> counts(6, 0);
  for (int64_t v : t.to_vector<int64_t>()) {
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 6);
    ++counts[static_cast<std::size_t>(v)];
  }
  // 6000 draws: each count ~ Binomial(6000, 1/6), sd ~ 29; 6 sd bounds.
  for (int c : counts) EXPECT_NEAR(c, 1000, 175);
  EXPECT_EQ(random_tokens({100, 60}, 6, 3).to_vector<int64_t>(), t.to_vector<int64_t>());
  expect_error([] { random_tokens({2}, 0, 0); }, ErrorCode::kInvalidArgument, "random_tokens");
}

// ---- bad input
// -----------------------------------------------------------------------------------

TEST(DataLoader, RejectsBadOptions) {
  auto ds = counting_dataset(4);
  const ErrorCode inv = ErrorCode::kInvalidArgument;
  expect_error([&] { DataLoader(ds, {.batch_size = 0}); }, inv, "DataLoader");
  expect_error([&] { DataLoader(ds, {.batch_size = -2}); }, inv, "DataLoader");
  expect_error([&] { DataLoader(ds, {.rank = 2, .world_size = 2}); }, inv, "DataLoader");
  expect_error([&] { DataLoader(ds, {.rank = -1, .world_size = 2}); }, inv, "DataLoader");
  expect_error([&] { DataLoader(ds, {.world_size = 0}); }, inv, "DataLoader");
  expect_error([&] { DataLoader(nullptr, {}); }, inv, "DataLoader");
  DataLoader dl(ds, {.batch_size = 3});
  expect_error([&] { dl.batch(2); }, inv, "DataLoader::batch");
  expect_error([&] { dl.set_epoch(-1); }, inv, "DataLoader::set_epoch");
  expect_error(
      [] {
        TensorDataset(Tensor::zeros({3, 2}), Tensor::zeros({4}));
      },
      inv, "TensorDataset");
  expect_error([] { TensorDataset(Tensor::zeros({}), Tensor::zeros({})); }, inv, "TensorDataset");
  expect_error([] { train_test_split(10, 0.0, 0); }, inv, "train_test_split");
  expect_error([] { train_test_split(10, 1.0, 0); }, inv, "train_test_split");
  expect_error([] { train_test_split(0, 0.5, 0); }, inv, "train_test_split");
  expect_error([] { take_rows(Tensor::zeros({3}), std::vector<int64_t>{3}); }, inv, "take_rows");
}

}  // namespace
}  // namespace frugal::nn
