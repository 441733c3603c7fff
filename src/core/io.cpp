// safetensors reading and writing. The format and the rules enforced here are in docs/io.md; they
// follow the reference implementation (huggingface/safetensors, safetensors/src/tensor.rs).
#include "frugal/core/io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <utility>

namespace frugal {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian; frugal's I/O assumes a little-endian host");

constexpr std::string_view kMetadataKey = "__metadata__";
constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

// ---- shared helpers -----------------------------------------------------------------------------

/// The dtype whose safetensors string is `s`, if any.
std::optional<DType> dtype_from_safetensors(std::string_view s) {
  for (const DTypeTraits& t : kDTypeTraits) {
    if (!t.safetensors.empty() && t.safetensors == s) return t.dtype;
  }
  return std::nullopt;
}

/// Bytes per element of a non-packed dtype.
uint64_t element_bytes(DType t) { return static_cast<uint64_t>(dtype_bits(t) / 8); }

/// Number of elements of `shape`, or nullopt when the product of its non-zero extents does not
/// fit in int64. Requiring this even for empty shapes keeps every stride of the tensor finite.
std::optional<uint64_t> checked_numel(const Shape& shape) {
  uint64_t product = 1;
  bool empty = false;
  for (int64_t d : shape) {
    if (d == 0) {
      empty = true;
      continue;
    }
    uint64_t next = 0;
    if (__builtin_mul_overflow(product, static_cast<uint64_t>(d), &next) || next > kInt64Max) {
      return std::nullopt;
    }
    product = next;
  }
  return empty ? 0 : product;
}

/// "i4:2,3" for an i4 tensor of shape (2, 3): the metadata value recording a packed tensor.
std::string packed_record(DType dtype, const Shape& shape) {
  std::string s(dtype_name(dtype));
  s += ':';
  for (int i = 0; i < shape.rank(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(shape[i]);
  }
  return s;
}

/// Parses a packed record ("i4:2,3", "u4:" for a scalar); nullopt when malformed.
std::optional<std::pair<DType, Shape>> parse_packed_record(std::string_view s) {
  const std::size_t colon = s.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::string_view type = s.substr(0, colon);
  DType dtype;
  if (type == dtype_name(DType::kI4)) {
    dtype = DType::kI4;
  } else if (type == dtype_name(DType::kU4)) {
    dtype = DType::kU4;
  } else {
    return std::nullopt;
  }
  std::string_view rest = s.substr(colon + 1);
  Shape shape;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    const std::string_view digits = rest.substr(0, comma);
    // At most 18 digits, so the value fits in int64 without an overflow check.
    if (digits.empty() || digits.size() > 18 || shape.rank() >= kMaxRank) return std::nullopt;
    int64_t v = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + (c - '0');
    }
    shape.push_back(v);
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
    if (rest.empty()) return std::nullopt;  // trailing comma
  }
  if (!checked_numel(shape)) return std::nullopt;
  return std::pair{dtype, shape};
}

// ---- reading ------------------------------------------------------------------------------------

/// Random access to the bytes of an in-memory image.
class SpanSource {
 public:
  explicit SpanSource(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  uint64_t size() const { return bytes_.size(); }
  void read(uint64_t offset, void* dst, uint64_t n) const {
    if (n > 0) std::memcpy(dst, bytes_.data() + offset, n);
  }

 private:
  std::span<const uint8_t> bytes_;
};

/// Random access to the bytes of an open file, through pread (no mapping, so a file truncated
/// under us is an error, not a SIGBUS).
class FileSource {
 public:
  FileSource(int fd, uint64_t size, const std::string& path) : fd_(fd), size_(size), path_(path) {}
  uint64_t size() const { return size_; }
  void read(uint64_t offset, void* dst, uint64_t n) const {
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
      const std::size_t chunk = static_cast<std::size_t>(std::min<uint64_t>(n, 1u << 30));
      const ssize_t got = ::pread(fd_, out, chunk, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        detail::fail(ErrorCode::kIoError, "load_safetensors", "reading '", path_,
                     "' failed: ", std::strerror(errno));
      }
      if (got == 0) {
        detail::fail(ErrorCode::kIoError, "load_safetensors", "'", path_,
                     "' became shorter while it was read");
      }
      out += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<uint64_t>(got);
    }
  }

 private:
  int fd_;
  uint64_t size_;
  const std::string& path_;
};

/// One validated header entry.
struct Entry {
  std::string name;
  DType dtype;  // the dtype of the loaded tensor (i4/u4 after a packed record is applied)
  Shape shape;
  uint64_t begin;  // byte offsets relative to the start of the data buffer
  uint64_t end;
};

/// Parses the header text, rejecting malformed JSON and duplicate keys at any depth (nlohmann
/// keeps the last of duplicate keys silently). Returns a discarded value on failure.
Json parse_header_json(std::string_view text, bool& duplicate_key) {
  duplicate_key = false;
  // nlohmann's lexer takes a NUL byte as the end of input; in JSON a raw NUL is never valid.
  if (text.find('\0') != std::string_view::npos) return Json(Json::value_t::discarded);
  std::vector<std::set<std::string>> keys;  // one set per open object
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& value) {
    switch (event) {
      case Json::parse_event_t::object_start:
        keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys.empty() && value.is_string() &&
            !keys.back().insert(value.get_ref<const std::string&>()).second) {
          duplicate_key = true;
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/false);
  } catch (const Json::exception&) {
    return Json(Json::value_t::discarded);
  }
}

/// Validates a `[begin, end]` pair or a shape element: a non-negative JSON integer <= int64 max.
bool as_index(const Json& j, uint64_t& out) {
  if (!j.is_number_unsigned()) return false;
  out = j.get<uint64_t>();
  return out <= kInt64Max;
}

/// Throws IoError "[op] <where><parts>".
template <class... Args>
[[noreturn]] void reject(const char* op, const std::string& where, Args&&... parts) {
  detail::fail(ErrorCode::kIoError, op, where, std::forward<Args>(parts)...);
}

/// The validated content of a header.
struct Layout {
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
};

/// Validates the header `text` against a data buffer of `buffer_size` bytes.
Layout validate_header(const std::string& text, uint64_t buffer_size, const char* op,
                       const std::string& where) {
  bool duplicate_key = false;
  const Json header = parse_header_json(text, duplicate_key);
  if (header.is_discarded()) reject(op, where, "the header is not well-formed JSON");
  if (duplicate_key) reject(op, where, "the header has a duplicate key");
  if (!header.is_object()) reject(op, where, "the header is not a JSON object");

  Layout out;
  std::vector<Entry>& entries = out.entries;
  entries.reserve(header.size());
  for (const auto& [name, info] : header.items()) {
    if (name == kMetadataKey) {
      if (!info.is_object()) reject(op, where, "__metadata__ is not an object");
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string()) {
          reject(op, where, "__metadata__ value of '", key, "' is not a string");
        }
        out.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    if (!info.is_object()) reject(op, where, "tensor '", name, "': entry is not an object");
    const auto dtype_it = info.find("dtype");
    const auto shape_it = info.find("shape");
    const auto offsets_it = info.find("data_offsets");
    if (dtype_it == info.end() || shape_it == info.end() || offsets_it == info.end()) {
      reject(op, where, "tensor '", name, "': entry needs the keys dtype, shape and data_offsets");
    }
    if (info.size() != 3) {
      reject(op, where, "tensor '", name,
             "': entry has keys other than dtype, shape and data_offsets");
    }

    if (!dtype_it->is_string()) reject(op, where, "tensor '", name, "': dtype is not a string");
    const auto dtype = dtype_from_safetensors(dtype_it->get_ref<const std::string&>());
    if (!dtype) {
      reject(op, where, "tensor '", name, "': unknown dtype \"",
             dtype_it->get_ref<const std::string&>(), "\"");
    }

    if (!shape_it->is_array()) reject(op, where, "tensor '", name, "': shape is not an array");
    if (shape_it->size() > static_cast<std::size_t>(kMaxRank)) {
      reject(op, where, "tensor '", name, "': shape has ", shape_it->size(),
             " dimensions, more than ", kMaxRank);
    }
    Shape shape;
    for (const Json& d : *shape_it) {
      uint64_t v = 0;
      if (!as_index(d, v)) {
        reject(op, where, "tensor '", name,
               "': shape holds something other than a non-negative integer");
      }
      shape.push_back(static_cast<int64_t>(v));
    }
    const auto numel = checked_numel(shape);
    uint64_t nbytes = 0;
    if (!numel || __builtin_mul_overflow(*numel, element_bytes(*dtype), &nbytes)) {
      reject(op, where, "tensor '", name, "': shape ", shape, " has too many elements");
    }

    if (!offsets_it->is_array() || offsets_it->size() != 2) {
      reject(op, where, "tensor '", name, "': data_offsets is not a pair of integers");
    }
    uint64_t begin = 0;
    uint64_t end = 0;
    if (!as_index((*offsets_it)[0], begin) || !as_index((*offsets_it)[1], end)) {
      reject(op, where, "tensor '", name, "': data_offsets is not a pair of non-negative integers");
    }
    if (begin > end) {
      reject(op, where, "tensor '", name, "': data_offsets [", begin, ", ", end,
             "] ends before it begins");
    }
    if (end > buffer_size) {
      reject(op, where, "tensor '", name, "': data_offsets [", begin, ", ", end, "] run past the ",
             buffer_size, "-byte data buffer");
    }
    if (end - begin != nbytes) {
      reject(op, where, "tensor '", name, "': data_offsets [", begin, ", ", end, "] hold ",
             end - begin, " bytes, but shape ", shape, " of ", traits(*dtype).safetensors,
             " needs ", nbytes);
    }
    entries.push_back(Entry{name, *dtype, shape, begin, end});
  }

  // The tensors must tile the buffer exactly: no overlap, no hole, nothing left over.
  std::vector<const Entry*> by_offset;
  by_offset.reserve(entries.size());
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  uint64_t covered = 0;
  for (const Entry* e : by_offset) {
    if (e->begin < covered) {
      reject(op, where, "tensor '", e->name, "' at [", e->begin, ", ", e->end,
             ") overlaps the tensor before it");
    }
    if (e->begin > covered) {
      reject(op, where, "bytes [", covered, ", ", e->begin,
             ") of the data buffer belong to no tensor");
    }
    covered = e->end;
  }
  if (covered != buffer_size) {
    reject(op, where, "bytes [", covered, ", ", buffer_size,
           ") of the data buffer belong to no tensor");
  }

  // Packed i4/u4 tensors are stored as 1-D U8 bytes plus a metadata record (docs/io.md).
  for (auto it = out.metadata.begin(); it != out.metadata.end();) {
    if (!it->first.starts_with(kSafetensorsPackedPrefix)) {
      ++it;
      continue;
    }
    const std::string name = it->first.substr(kSafetensorsPackedPrefix.size());
    const auto record = parse_packed_record(it->second);
    if (!record) {
      reject(op, where, "metadata '", it->first, "' is not a packed record like \"i4:2,3\"");
    }
    auto e = std::find_if(entries.begin(), entries.end(),
                          [&](const Entry& x) { return x.name == name; });
    if (e == entries.end()) reject(op, where, "metadata '", it->first, "' names no tensor");
    // Two elements per byte; written so that no product can overflow.
    const int64_t numel = record->second.numel();
    const int64_t packed_bytes = numel / 2 + numel % 2;
    if (e->dtype != DType::kU8 || e->shape.rank() != 1 || e->shape[0] != packed_bytes) {
      reject(op, where, "tensor '", name, "' (", traits(e->dtype).safetensors, " ", e->shape,
             ") does not hold packed ", it->second);
    }
    e->dtype = record->first;
    e->shape = record->second;
    it = out.metadata.erase(it);
  }
  return out;
}

/// Validates the whole image and decodes it. `op` and `where` name the entry point and the file.
template <class Source>
SafetensorsFile decode(const Source& src, const char* op, const std::string& where) {
  const uint64_t file_size = src.size();
  if (file_size < 8) {
    reject(op, where, "the input is ", file_size, " bytes, shorter than the 8-byte header size");
  }
  uint8_t prefix[8];
  src.read(0, prefix, 8);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | prefix[i];
  if (header_size > kSafetensorsMaxHeaderBytes) {
    reject(op, where, "header size ", header_size, " exceeds the limit of ",
           kSafetensorsMaxHeaderBytes, " bytes");
  }
  if (header_size > file_size - 8) {
    reject(op, where, "header size ", header_size, " runs past the end of the ", file_size,
           "-byte input");
  }
  const uint64_t buffer_size = file_size - 8 - header_size;
  const uint64_t buffer_start = 8 + header_size;

  std::string text(static_cast<std::size_t>(header_size), '\0');
  src.read(8, text.data(), header_size);
  Layout layout = validate_header(text, buffer_size, op, where);
  SafetensorsFile out;
  out.metadata = std::move(layout.metadata);
  for (const Entry& e : layout.entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    const uint64_t n = e.end - e.begin;
    if (n > 0) src.read(buffer_start + e.begin, t.data_ptr(), n);
    if (e.dtype == DType::kBool) {
      // Any byte but 0 or 1 is not a C++ bool; reading it would be undefined behaviour.
      const auto* b = static_cast<const uint8_t*>(std::as_const(t).data_ptr());
      for (uint64_t i = 0; i < n; ++i) {
        if (b[i] > 1) {
          reject(op, where, "tensor '", e.name, "': BOOL element ", i, " is ", int{b[i]},
                 ", not 0 or 1");
        }
      }
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

// ---- writing ------------------------------------------------------------------------------------

/// Position of a dtype in the reference implementation's `Dtype` enum (safetensors/src/tensor.rs:
/// BOOL, U8, I8, F8_E5M2, F8_E4M3, F16, BF16, I32, F32, F64, I64, with the types frugal lacks left
/// out). The writer sorts by it, descending, as the reference does.
int reference_rank(DType t) {
  switch (t) {
    case DType::kBool:
      return 0;
    case DType::kU8:
      return 1;
    case DType::kI8:
      return 2;
    case DType::kF8E5M2:
      return 3;
    case DType::kF8E4M3:
      return 4;
    case DType::kF16:
      return 5;
    case DType::kBF16:
      return 6;
    case DType::kI32:
      return 7;
    case DType::kF32:
      return 8;
    case DType::kF64:
      return 9;
    case DType::kI64:
      return 10;
    case DType::kI4:
    case DType::kU4:
      break;  // stored as U8
  }
  return 1;
}

/// A tensor as it is laid out in the file.
struct Planned {
  const std::string* name;
  const Tensor* tensor;
  DType file_dtype;
  Shape file_shape;
  uint64_t begin;
  uint64_t end;
};

/// The header text (padded) and the layout of every tensor.
struct Plan {
  std::string header;
  std::vector<Planned> tensors;
};

Plan plan_file(const char* op, const std::map<std::string, Tensor>& tensors,
               const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> meta = metadata;
  for (const auto& [key, value] : metadata) {
    FRUGAL_REQUIRE(!key.starts_with(kSafetensorsPackedPrefix), op, "metadata key '", key,
                   "' uses the reserved prefix '", kSafetensorsPackedPrefix, "'");
  }
  Plan plan;
  for (const auto& [name, t] : tensors) {
    FRUGAL_REQUIRE(name != kMetadataKey, op, "a tensor may not be named '", kMetadataKey, "'");
    FRUGAL_REQUIRE(t.defined(), op, "tensor '", name, "' is undefined");
    Planned p{&name, &t, t.dtype(), t.shape(), 0, 0};
    if (is_packed(t.dtype())) {
      p.file_dtype = DType::kU8;
      p.file_shape = Shape{t.nbytes()};
      meta[std::string(kSafetensorsPackedPrefix) + name] = packed_record(t.dtype(), t.shape());
    }
    plan.tensors.push_back(p);
  }
  // The reference's order: by dtype, widest first, then by name. Every offset is then a multiple
  // of the element size, and the same tensors give the same bytes as the reference writer.
  std::sort(plan.tensors.begin(), plan.tensors.end(), [](const Planned& a, const Planned& b) {
    const int ra = reference_rank(a.file_dtype);
    const int rb = reference_rank(b.file_dtype);
    return ra != rb ? ra > rb : *a.name < *b.name;
  });

  OrderedJson header = OrderedJson::object();
  if (!meta.empty()) {
    OrderedJson m = OrderedJson::object();
    for (const auto& [key, value] : meta) m[key] = value;
    header[std::string(kMetadataKey)] = std::move(m);
  }
  uint64_t offset = 0;
  for (Planned& p : plan.tensors) {
    p.begin = offset;
    p.end = offset + static_cast<uint64_t>(dtype_nbytes(p.file_dtype, p.file_shape.numel()));
    offset = p.end;
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = std::string(traits(p.file_dtype).safetensors);
    entry["shape"] = std::vector<int64_t>(p.file_shape.begin(), p.file_shape.end());
    entry["data_offsets"] = {p.begin, p.end};
    header[*p.name] = std::move(entry);
  }
  try {
    plan.header = header.dump();
  } catch (const OrderedJson::exception& e) {
    // type_error 316: a name or metadata string is not valid UTF-8.
    detail::fail(ErrorCode::kInvalidArgument, op, "names and metadata must be UTF-8: ", e.what());
  }
  // Pad with spaces so the data buffer starts 8-byte aligned, as the reference does.
  plan.header.append((8 - plan.header.size() % 8) % 8, ' ');
  return plan;
}

/// Emits the file image through `sink(const void*, size_t)`, one tensor at a time.
template <class Sink>
void emit(const Plan& plan, Sink&& sink) {
  uint8_t prefix[8];
  uint64_t n = plan.header.size();
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<uint8_t>(n >> (8 * i));
  sink(prefix, 8);
  sink(plan.header.data(), plan.header.size());
  for (const Planned& p : plan.tensors) {
    if (p.end == p.begin) continue;
    // Host, contiguous copy only when needed.
    const Tensor host = p.tensor->to(Device::cpu()).contiguous();
    sink(host.data_ptr(), static_cast<std::size_t>(p.end - p.begin));
  }
}

/// A temporary file beside the target, removed unless committed.
class TempFile {
 public:
  TempFile(const std::string& target, const char* op) : target_(target), op_(op) {
    std::string tmpl = target + ".tmp.XXXXXX";
    fd_ = ::mkstemp(tmpl.data());
    if (fd_ < 0) {
      detail::fail(ErrorCode::kIoError, op_, "cannot create a temporary file for '", target,
                   "': ", std::strerror(errno));
    }
    path_ = std::move(tmpl);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }

  void write(const void* data, std::size_t n) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t put = ::write(fd_, p, std::min<std::size_t>(n, std::size_t{1} << 30));
      if (put < 0 && errno == EINTR) continue;
      if (put < 0) fail("writing");
      p += put;
      n -= static_cast<std::size_t>(put);
    }
  }

  /// Makes the bytes durable and moves them over the target.
  void commit() {
    // mkstemp creates 0600; give the file the target's mode, or rw-r--r-- for a new file.
    struct stat st {};
    const mode_t mode = ::stat(target_.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0644;
    if (::fchmod(fd_, mode) != 0) fail("setting the mode of");
    if (::fsync(fd_) != 0) fail("flushing");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("closing");
    if (::rename(path_.c_str(), target_.c_str()) != 0) fail("renaming the temporary file over");
    committed_ = true;
    // The rename is durable once the directory is.
    std::filesystem::path dir = std::filesystem::path(target_).parent_path();
    if (dir.empty()) dir = ".";
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) fail("opening the directory of");
    const int rc = ::fsync(dfd);
    const int err = errno;
    ::close(dfd);
    if (rc != 0) {
      errno = err;
      fail("flushing the directory of");
    }
  }

 private:
  [[noreturn]] void fail(const char* what) {
    detail::fail(ErrorCode::kIoError, op_, what, " '", target_, "' failed: ", std::strerror(errno));
  }

  std::string target_;
  const char* op_;
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

std::vector<uint8_t> serialize_safetensors(const std::map<std::string, Tensor>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  const Plan plan = plan_file("serialize_safetensors", tensors, metadata);
  std::vector<uint8_t> out;
  out.reserve(8 + plan.header.size() + (plan.tensors.empty() ? 0 : plan.tensors.back().end));
  emit(plan, [&](const void* data, std::size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    out.insert(out.end(), p, p + n);
  });
  return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  FRUGAL_REQUIRE(!path.empty(), "save_safetensors", "empty path");
  // Every argument is checked before the file system is touched.
  const Plan plan = plan_file("save_safetensors", tensors, metadata);
  TempFile tmp(path, "save_safetensors");
  emit(plan, [&](const void* data, std::size_t n) { tmp.write(data, n); });
  tmp.commit();
}

void write_file_atomic(const std::string& path, std::string_view bytes, const char* op) {
  FRUGAL_REQUIRE(!path.empty(), op, "empty path");
  TempFile tmp(path, op);
  tmp.write(bytes.data(), bytes.size());
  tmp.commit();
}

void save_safetensors(const std::string& path, const SafetensorsFile& file) {
  save_safetensors(path, file.tensors, file.metadata);
}

SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes) {
  return decode(SpanSource(bytes), "parse_safetensors", "");
}

SafetensorsFile load_safetensors(const std::string& path) {
  const char* op = "load_safetensors";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    detail::fail(ErrorCode::kIoError, op, "cannot open '", path, "': ", std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    detail::fail(ErrorCode::kIoError, op, "cannot stat '", path, "': ", std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) detail::fail(ErrorCode::kIoError, op, "'", path, "' is not a file");
  return decode(FileSource(fd, static_cast<uint64_t>(st.st_size), path), op, "'" + path + "': ");
}

}  // namespace frugal
