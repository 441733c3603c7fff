// safetensors reading and writing: round trips, byte-exact agreement with the reference
// implementation's published test vector, every validation rule, and the atomic write.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "frugal/core.hpp"
#include "support/check.hpp"

namespace frugal {
namespace {

using frugal::testing::expect_error;

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using namespace std::string_literals;

/// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            ("frugal_io_test_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  /// Names of the entries in the directory.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename());
    return out;
  }

 private:
  fs::path path_;
};

Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void append_le(Bytes& out, uint64_t v, int nbytes) {
  for (int i = 0; i < nbytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

/// A safetensors image written by hand: 8-byte little-endian length, header text, data.
Bytes image(const std::string& header, const Bytes& data = {}) {
  Bytes out;
  append_le(out, header.size(), 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

/// The raw bytes of a contiguous host tensor.
Bytes tensor_bytes(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  return Bytes(p, p + c.nbytes());
}

/// A tensor of `dtype` and `shape` whose bytes follow a fixed pattern (0/1 for bool).
Tensor patterned(DType dtype, Shape shape, uint8_t seed) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = static_cast<uint8_t*>(t.data_ptr());
  for (int64_t i = 0; i < t.nbytes(); ++i) {
    const auto v = static_cast<uint8_t>(seed + 37 * i + (i >> 3));
    p[i] = dtype == DType::kBool ? (v & 1) : v;
  }
  return t;
}

/// Expects parse_safetensors(bytes) to throw IoError "[parse_safetensors] ...<part>...".
void expect_rejected(const Bytes& bytes, const std::string& part) {
  expect_error([&] { parse_safetensors(bytes); }, ErrorCode::kIoError, "parse_safetensors", part);
}

std::string f32_entry(const std::string& name, const std::string& shape, int b, int e) {
  return "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(b) + "," + std::to_string(e) + "]}";
}

// ---- round trips --------------------------------------------------------------------------

TEST(Safetensors, RoundTripsEveryDTypeAndShape) {
  const std::vector<Shape> shapes = {{}, {0}, {5}, {2, 3}, {2, 0, 3}, {1, 2, 1, 3}};
  std::map<std::string, Tensor> tensors;
  uint8_t seed = 1;
  for (const DTypeTraits& tr : kDTypeTraits) {
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      tensors[std::string(tr.name) + "_" + std::to_string(k)] =
          patterned(tr.dtype, shapes[k], seed++);
    }
  }
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  save_safetensors(path, tensors, {{"format", "pt"}});
  const SafetensorsFile from_disk = load_safetensors(path);
  const SafetensorsFile from_memory =
      parse_safetensors(serialize_safetensors(tensors, {{"format", "pt"}}));
  EXPECT_EQ(read_bytes(path), serialize_safetensors(tensors, {{"format", "pt"}}));
  for (const SafetensorsFile* f : {&from_disk, &from_memory}) {
    ASSERT_EQ(f->tensors.size(), tensors.size());
    EXPECT_EQ(f->metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
    for (const auto& [name, t] : tensors) {
      SCOPED_TRACE(name);
      const Tensor& got = f->tensors.at(name);
      EXPECT_EQ(got.dtype(), t.dtype());
      EXPECT_EQ(got.shape(), t.shape());
      EXPECT_TRUE(got.device().is_cpu());
      EXPECT_TRUE(got.is_contiguous());
      EXPECT_EQ(tensor_bytes(got), tensor_bytes(t));
    }
  }
}

TEST(Safetensors, MetadataRoundTripsIncludingUnicodeAndEmpty) {
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"note", "h\xC3\xA9llo \xE2\x9C\x93 \"quoted\"\n"}, {"empty", ""}};
  const std::map<std::string, Tensor> tensors = {{"w", Tensor::full({2}, 1.5)}};
  const SafetensorsFile f = parse_safetensors(serialize_safetensors(tensors, meta));
  EXPECT_EQ(f.metadata, meta);
  // No metadata: no __metadata__ key at all, as the reference writes it.
  const Bytes plain = serialize_safetensors(tensors);
  EXPECT_EQ(std::string(plain.begin(), plain.end()).find("__metadata__"), std::string::npos);
  EXPECT_TRUE(parse_safetensors(plain).metadata.empty());
}

TEST(Safetensors, NoTensorsIsAValidFile) {
  const Bytes b = serialize_safetensors({});
  // "{}" padded with spaces to 8 bytes.
  EXPECT_EQ(b, image("{}      "));
  EXPECT_TRUE(parse_safetensors(b).tensors.empty());
}

TEST(Safetensors, NonContiguousAndOffsetTensorsAreSavedInRowMajorOrder) {
  std::vector<float> v(12);
  for (int i = 0; i < 12; ++i) v[i] = static_cast<float>(i);
  const Tensor a = Tensor::from_vector(v, {3, 4});
  std::map<std::string, Tensor> tensors = {
      {"t", a.t()}, {"cols", a.slice(1, 1, 3)}, {"rows", a.slice(0, 1, 3)}};
  const SafetensorsFile f = parse_safetensors(serialize_safetensors(tensors));
  // Row-major reads of [[0 1 2 3] [4 5 6 7] [8 9 10 11]] transposed and sliced, written by hand.
  EXPECT_EQ(f.tensors.at("t").shape(), (Shape{4, 3}));
  EXPECT_EQ(f.tensors.at("t").to_vector<float>(),
            (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_EQ(f.tensors.at("cols").to_vector<float>(), (std::vector<float>{1, 2, 5, 6, 9, 10}));
  EXPECT_EQ(f.tensors.at("rows").to_vector<float>(),
            (std::vector<float>{4, 5, 6, 7, 8, 9, 10, 11}));
}

TEST(Safetensors, ReadOnlyTensorsCanBeSaved) {
  Tensor t = Tensor::full({3}, 2.0);
  t.set_read_only(true);
  const SafetensorsFile f = parse_safetensors(serialize_safetensors({{"t", t}}));
  EXPECT_EQ(f.tensors.at("t").to_vector<float>(), (std::vector<float>{2, 2, 2}));
  EXPECT_FALSE(f.tensors.at("t").read_only());
}

// ---- compatibility with the reference format --------------------------------------------

// The published test vector of huggingface/safetensors (safetensors/src/tensor.rs,
// test_serialization): "attn.0", F32, shape [1, 2, 3], values 0..5.
const Bytes kReferenceImage = {
    64,  0,   0,   0,   0,   0,  0,  0,  123, 34, 97,  116, 116, 110, 46,  48,  34,  58,  123, 34,
    100, 116, 121, 112, 101, 34, 58, 34, 70,  51, 50,  34,  44,  34,  115, 104, 97,  112, 101, 34,
    58,  91,  49,  44,  50,  44, 51, 93, 44,  34, 100, 97,  116, 97,  95,  111, 102, 102, 115, 101,
    116, 115, 34,  58,  91,  48, 44, 50, 52,  93, 125, 125, 0,   0,   0,   0,   0,   0,   128, 63,
    0,   0,   0,   64,  0,   0,  64, 64, 0,   0,  128, 64,  0,   0,   160, 64};

TEST(Safetensors, MatchesTheReferenceTestVectorByteForByte) {
  const Tensor t = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {1, 2, 3});
  EXPECT_EQ(serialize_safetensors({{"attn.0", t}}), kReferenceImage);
  const SafetensorsFile f = parse_safetensors(kReferenceImage);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors.at("attn.0").shape(), (Shape{1, 2, 3}));
  EXPECT_EQ(f.tensors.at("attn.0").to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
}

TEST(Safetensors, ParsesAHandWrittenFile) {
  // Key order, whitespace and padding as another writer might produce them.
  const std::string header =
      "{ \"b\": {\"shape\": [1], \"dtype\": \"I64\", \"data_offsets\": [8, 16]},\n"
      "  \"__metadata__\": {\"format\": \"pt\"},\n"
      "  \"a\": {\"data_offsets\": [0, 8], \"dtype\": \"F32\", \"shape\": [2]},\n"
      "  \"e\": {\"dtype\": \"BF16\", \"shape\": [0, 4], \"data_offsets\": [16, 16]},\n"
      "  \"h\": {\"dtype\": \"F16\", \"shape\": [], \"data_offsets\": [16, 18]} }   ";
  // 1.5f = 0x3FC00000, -2.0f = 0xC0000000, int64 -7, f16 1.0 = 0x3C00, all little-endian.
  const Bytes data = {0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x00, 0xC0, 0xF9,
                      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x3C};
  const SafetensorsFile f = parse_safetensors(image(header, data));
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(f.tensors.size(), 4u);
  EXPECT_EQ(f.tensors.at("a").to_vector<float>(), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f.tensors.at("b").dtype(), DType::kI64);
  EXPECT_EQ(f.tensors.at("b").to_vector<int64_t>(), (std::vector<int64_t>{-7}));
  EXPECT_EQ(f.tensors.at("e").dtype(), DType::kBF16);
  EXPECT_EQ(f.tensors.at("e").shape(), (Shape{0, 4}));
  EXPECT_EQ(f.tensors.at("h").rank(), 0);
  EXPECT_EQ(f.tensors.at("h").to_vector<float>(), (std::vector<float>{1.0f}));
}

TEST(Safetensors, SaveWritesTheExpectedHeaderAndLayout) {
  const std::map<std::string, Tensor> tensors = {
      {"b", Tensor::from_vector(std::vector<float>{1.0f, -2.0f}, {2})},
      {"a", Tensor::from_vector(std::vector<uint8_t>{7, 8, 9}, {3})},
      {"c", Tensor::from_vector(std::vector<int64_t>{-1}, {1})},
      {"d", Tensor::from_vector(std::vector<float>{0.5f}, {})}};
  TempDir dir;
  const std::string path = dir.file("layout.safetensors");
  save_safetensors(path, tensors, {{"k", "v"}});
  const Bytes b = read_bytes(path);
  // Widest dtype first (I64, then F32 by name, then U8), metadata first, no spaces.
  std::string expected =
      "{\"__metadata__\":{\"k\":\"v\"},"
      "\"c\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
      "\"d\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[16,20]},"
      "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[20,23]}}";
  expected.append((8 - expected.size() % 8) % 8, ' ');
  const Bytes data = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,  // -1
                      0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0,  // 1.0f, -2.0f
                      0x00, 0x00, 0x00, 0x3F,                          // 0.5f
                      7,    8,    9};
  EXPECT_EQ(b, image(expected, data));
  EXPECT_EQ((8 + expected.size()) % 8, 0u);
}

// ---- packed i4/u4 ---------------------------------------------------------------------------

TEST(Safetensors, PackedTensorsAreStoredAsU8WithAMetadataRecord) {
  Tensor q = Tensor::empty({3}, DType::kI4);
  static_cast<uint8_t*>(q.data_ptr())[0] = pack_i4(-8, 7);
  static_cast<uint8_t*>(q.data_ptr())[1] = pack_i4(-1, 0);
  const Bytes b = serialize_safetensors({{"q", q}}, {{"k", "v"}});
  std::string expected =
      "{\"__metadata__\":{\"frugal.packed.q\":\"i4:3\",\"k\":\"v\"},"
      "\"q\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
  expected.append((8 - expected.size() % 8) % 8, ' ');
  EXPECT_EQ(b, image(expected, {0x78, 0x0F}));
  const SafetensorsFile f = parse_safetensors(b);
  // The record is consumed: metadata is what the caller saved.
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"k", "v"}}));
  EXPECT_EQ(f.tensors.at("q").dtype(), DType::kI4);
  EXPECT_EQ(f.tensors.at("q").shape(), (Shape{3}));
  EXPECT_EQ(tensor_bytes(f.tensors.at("q")), (Bytes{0x78, 0x0F}));
}

TEST(Safetensors, ReservedMetadataPrefixIsRejectedOnSave) {
  expect_error(
      [] {
        serialize_safetensors({}, {{"frugal.packed.x", "i4:2"}});
      },
      ErrorCode::kInvalidArgument, "serialize_safetensors");
}

TEST(Safetensors, MalformedPackedRecordsAreRejected) {
  const std::string u8 = "\"q\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}";
  auto with = [&](const std::string& record) {
    return image("{\"__metadata__\":{\"frugal.packed.q\":\"" + record + "\"}," + u8 + "}", {1, 2});
  };
  EXPECT_EQ(parse_safetensors(with("u4:2,2")).tensors.at("q").shape(), (Shape{2, 2}));
  EXPECT_EQ(parse_safetensors(with("u4:4")).tensors.at("q").dtype(), DType::kU4);
  expect_rejected(with("i4:5"), "does not hold packed");  // 5 nibbles need 3 bytes
  expect_rejected(with("i8:4"), "is not a packed record");
  expect_rejected(with("i4"), "is not a packed record");
  expect_rejected(with("i4:2,"), "is not a packed record");
  expect_rejected(with("i4:-4"), "is not a packed record");
  expect_rejected(with("i4:99999999999999999999"), "is not a packed record");
  expect_rejected(with("i4:1,1,1,1,1,1,1,1,4"), "is not a packed record");
  expect_rejected(with("i4:3000000000,3000000000"), "does not hold packed");
  expect_rejected(image("{\"__metadata__\":{\"frugal.packed.z\":\"i4:4\"}," + u8 + "}", {1, 2}),
                  "names no tensor");
}

// ---- rejections -----------------------------------------------------------------------------

TEST(Safetensors, RejectsTruncatedPrefixAndBadHeaderSize) {
  expect_rejected({}, "shorter than the 8-byte");
  expect_rejected({1, 0, 0}, "shorter than the 8-byte");
  Bytes huge;
  append_le(huge, 100'000'001, 8);
  expect_rejected(huge, "exceeds the limit");
  Bytes past = image("{}");
  past[0] = 3;  // claims 3 header bytes, 2 present
  expect_rejected(past, "runs past the end");
  Bytes max;
  append_le(max, ~uint64_t{0}, 8);
  expect_rejected(max, "exceeds the limit");
}

TEST(Safetensors, RejectsMalformedJson) {
  expect_rejected(image(""), "not well-formed JSON");
  expect_rejected(image("{"), "not well-formed JSON");
  expect_rejected(image("{\"a\":1,}"), "not well-formed JSON");
  expect_rejected(image("{} x"), "not well-formed JSON");
  expect_rejected(image("{}\0\0"s), "not well-formed JSON");       // padding must be spaces
  expect_rejected(image("{\"\xFF\":1}"), "not well-formed JSON");  // not UTF-8
  expect_rejected(image("[]"), "not a JSON object");
  expect_rejected(image("\"text\""), "not a JSON object");
}

TEST(Safetensors, RejectsBadEntries) {
  auto one = [](const std::string& entry, Bytes data = {}) {
    return image("{\"w\":" + entry + "}", data);
  };
  const Bytes four(4, 0);
  expect_rejected(one("[1]"), "entry is not an object");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[1]}", four), "needs the keys");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":0}", four),
                  "keys other than");
  expect_rejected(one("{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}", four),
                  "dtype is not a string");
  expect_rejected(one("{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}", four),
                  "unknown dtype \"F31\"");
  expect_rejected(one("{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}", four),
                  "unknown dtype");
  expect_rejected(one("{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4]}", four),
                  "unknown dtype");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}", four),
                  "shape is not an array");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}", four),
                  "non-negative integer");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}", four),
                  "non-negative integer");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}", four),
                  "non-negative integer");
  expect_rejected(
      one("{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}", four),
      "more than 8");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}", four),
                  "not a pair of integers");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"a\":0}}", four),
                  "not a pair of integers");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}", four),
                  "non-negative integers");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}", four),
                  "ends before it begins");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}", four),
                  "run past the 4-byte data buffer");
  expect_rejected(one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}", four),
                  "hold 4 bytes, but shape (2) of F32 needs 8");
  expect_rejected(one("{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[0,4]}", {0, 1, 2, 0}),
                  "BOOL element 2 is 2");
}

TEST(Safetensors, RejectsOverflowingShapes) {
  // 2^32 * 2^32 elements overflow int64; so does 2^62 F32 elements' byte count.
  expect_rejected(image("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
                        "\"data_offsets\":[0,0]}}"),
                  "too many elements");
  expect_rejected(image("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                        "\"data_offsets\":[0,0]}}"),
                  "too many elements");
  // An empty shape with huge extents is still rejected: its strides would overflow.
  expect_rejected(image("{\"w\":{\"dtype\":\"U8\",\"shape\":[0,4294967296,4294967296],"
                        "\"data_offsets\":[0,0]}}"),
                  "too many elements");
  // Beyond uint64 the number parses as a float: not an integer.
  expect_rejected(image("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],"
                        "\"data_offsets\":[0,99999999999999999999]}}"),
                  "non-negative integers");
  expect_rejected(image("{\"w\":{\"dtype\":\"U8\",\"shape\":[9223372036854775808],"
                        "\"data_offsets\":[0,0]}}"),
                  "non-negative integer");
}

TEST(Safetensors, RejectsOverlapsHolesAndTrailingBytes) {
  const Bytes eight(8, 0);
  expect_rejected(
      image("{" + f32_entry("a", "[2]", 0, 8) + "," + f32_entry("b", "[1]", 4, 8) + "}", eight),
      "overlaps");
  expect_rejected(
      image("{" + f32_entry("a", "[1]", 0, 4) + "," + f32_entry("b", "[1]", 0, 4) + "}", eight),
      "overlaps");
  // An empty tensor inside another one overlaps it too.
  expect_rejected(
      image("{" + f32_entry("a", "[2]", 0, 8) + "," + f32_entry("e", "[0]", 4, 4) + "}", eight),
      "overlaps");
  expect_rejected(image("{" + f32_entry("a", "[1]", 4, 8) + "}", eight), "bytes [0, 4)");
  expect_rejected(
      image("{" + f32_entry("a", "[1]", 0, 4) + "," + f32_entry("b", "[0]", 8, 8) + "}", eight),
      "bytes [4, 8)");
  expect_rejected(image("{" + f32_entry("a", "[1]", 0, 4) + "}", eight), "bytes [4, 8)");
  expect_rejected(image("{}", {1}), "bytes [0, 1)");
  // Empty tensors at the boundaries are fine.
  const SafetensorsFile ok = parse_safetensors(image("{" + f32_entry("e0", "[0]", 0, 0) + "," +
                                                         f32_entry("a", "[2]", 0, 8) + "," +
                                                         f32_entry("e8", "[3,0]", 8, 8) + "}",
                                                     eight));
  EXPECT_EQ(ok.tensors.size(), 3u);
}

TEST(Safetensors, RejectsBadMetadataAndDuplicateKeys) {
  expect_rejected(image("{\"__metadata__\":[]}"), "__metadata__ is not an object");
  expect_rejected(image("{\"__metadata__\":null}"), "__metadata__ is not an object");
  expect_rejected(image("{\"__metadata__\":{\"k\":1}}"), "value of 'k' is not a string");
  expect_rejected(image("{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}"), "is not a string");
  expect_rejected(image("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}"), "duplicate key");
  const Bytes four(4, 0);
  expect_rejected(
      image("{" + f32_entry("a", "[1]", 0, 4) + "," + f32_entry("a", "[1]", 0, 4) + "}", four),
      "duplicate key");
  expect_rejected(image("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],"
                        "\"data_offsets\":[0,4]}}",
                        four),
                  "duplicate key");
  expect_rejected(image("{\"__metadata__\":{},\"__metadata__\":{}}"), "duplicate key");
}

// ---- files and atomic writes ----------------------------------------------------------------

TEST(Safetensors, LoadReportsMissingShortAndDirectoryPaths) {
  TempDir dir;
  const std::string missing = dir.file("missing.safetensors");
  expect_error([&] { load_safetensors(missing); }, ErrorCode::kIoError, "load_safetensors",
               missing);
  const std::string short_file = dir.file("short.safetensors");
  write_bytes(short_file, {1, 2, 3});
  expect_error([&] { load_safetensors(short_file); }, ErrorCode::kIoError, "load_safetensors",
               "shorter than the 8-byte");
  const std::string bad = dir.file("bad.safetensors");
  write_bytes(bad, image("{" + f32_entry("a", "[1]", 0, 4) + "}", {0, 0}));
  // The message names the file right after the op, then the reason.
  expect_error([&] { load_safetensors(bad); }, ErrorCode::kIoError, "load_safetensors",
               "[load_safetensors] '" + bad);
  expect_error([&] { load_safetensors(bad); }, ErrorCode::kIoError, "load_safetensors", "run past");
  fs::create_directory(dir.file("sub"));
  expect_error([&] { load_safetensors(dir.file("sub")); }, ErrorCode::kIoError, "load_safetensors",
               "not a file");
}

TEST(Safetensors, FailedSavesLeaveTheOldFileIntact) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const std::map<std::string, Tensor> old_tensors = {{"w", Tensor::full({4}, 3.0)}};
  save_safetensors(path, old_tensors);
  const Bytes old_bytes = read_bytes(path);

  // Bad arguments are refused before the file system is touched.
  expect_error(
      [&] {
        save_safetensors(path, {{"__metadata__", Tensor::full({1}, 1.0)}});
      },
      ErrorCode::kInvalidArgument, "save_safetensors", "__metadata__");
  expect_error(
      [&] {
        save_safetensors(path, {{"w", Tensor()}});
      },
      ErrorCode::kInvalidArgument, "save_safetensors", "undefined");
  expect_error(
      [&] {
        save_safetensors(path, {{"bad\xFF", Tensor::full({1}, 1.0)}});
      },
      ErrorCode::kInvalidArgument, "save_safetensors", "UTF-8");
  EXPECT_EQ(read_bytes(path), old_bytes);

  // A directory that does not exist.
  const std::string nowhere = dir.file("no/such/dir/model.safetensors");
  expect_error([&] { save_safetensors(nowhere, old_tensors); }, ErrorCode::kIoError,
               "save_safetensors", nowhere);

  // A write that fails half way: the file size limit stops it after 4 KiB (EFBIG).
  const Tensor big = Tensor::full({1 << 16}, 1.0);
  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  struct rlimit small = saved;
  small.rlim_cur = 4096;
  auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  expect_error(
      [&] {
        save_safetensors(path, {{"w", big}});
      },
      ErrorCode::kIoError, "save_safetensors", path);
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(read_bytes(path), old_bytes);
  // No temporary file is left behind.
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(load_safetensors(path).tensors.at("w").to_vector<float>(),
            (std::vector<float>{3, 3, 3, 3}));
}

TEST(Safetensors, OverwriteReplacesTheFileAndKeepsItsMode) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  save_safetensors(path, {{"w", Tensor::full({2}, 1.0)}});
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  SafetensorsFile f;
  f.tensors["v"] = Tensor::full({3}, 2.0, DType::kF64);
  f.metadata["k"] = "v";
  save_safetensors(path, f);
  const SafetensorsFile back = load_safetensors(path);
  EXPECT_EQ(back.tensors.count("w"), 0u);
  EXPECT_EQ(back.tensors.at("v").to_vector<double>(), (std::vector<double>{2, 2, 2}));
  EXPECT_EQ(back.metadata, f.metadata);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"m.safetensors"});
}

}  // namespace
}  // namespace frugal
