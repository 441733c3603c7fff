// nn::ZeroOptimizer: ZeRO stage 1 (reduce-scatter gradients, shard update, all-gather params).
#include "frugal/nn/zero.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string_view>
#include <vector>

#include "frugal/core/io.hpp"

namespace frugal::nn {

namespace {
constexpr const char* kOp = "ZeroOptimizer";
}

ZeroOptimizer::ZeroOptimizer(Module& model, parallel::Communicator& comm, const Factory& make_inner)
    : Optimizer(model.named_parameters(), 0.0, {}, kOp), comm_(comm) {
  FRUGAL_REQUIRE(!params_.empty(), kOp, "the model has no trainable parameters");
  const DType dtype = params_[0].param->value.dtype();
  for (const auto& np : params_) {
    const Tensor& v = np.param->value;
    FRUGAL_REQUIRE(v.dtype() == dtype, kOp, "parameter ", np.name, " has dtype ",
                   dtype_name(v.dtype()), " but ", params_[0].name, " has ", dtype_name(dtype));
    FRUGAL_REQUIRE(v.is_contiguous() && np.param->grad.is_contiguous(), kOp, "parameter ", np.name,
                   " must be contiguous");
    FRUGAL_REQUIRE(v.device() == comm.device(), kOp, "parameter ", np.name, " is on ",
                   v.device().str(), " but the communicator uses ", comm.device().str());
    numel_ += v.numel();
  }
  for (const auto& np : model.named_parameters()) comm_.broadcast(np.param->value.view(), 0);
  const int k = comm.size();
  const int64_t shard = (numel_ + k - 1) / k;
  flat_ = Tensor::zeros({shard * k}, dtype, comm.device());
  // This rank's shard of the parameters.
  int64_t off = 0;
  for (const auto& np : params_) {
    const int64_t n = np.param->value.numel();
    flat_.slice(0, off, off + n).copy_from(np.param->value.reshape({n}).cview());
    off += n;
  }
  shard_.value =
      flat_.slice(0, comm.rank() * shard, (comm.rank() + 1) * shard).contiguous().clone();
  shard_.grad = Tensor::zeros({shard}, dtype, comm.device());
  inner_ = make_inner({NamedParameter{"shard", &shard_}});
  FRUGAL_REQUIRE(inner_ != nullptr, kOp, "the factory returned no optimizer");
  lr_ = inner_->lr();
}

void ZeroOptimizer::step(const ExecContext& ctx) {
  int64_t off = 0;
  for (const auto& np : params_) {
    const int64_t n = np.param->grad.numel();
    flat_.slice(0, off, off + n).copy_from(np.param->grad.reshape({n}).cview(), ctx);
    off += n;
  }
  // The padding [numel_, K * shard) stays zero: gradients there are 0, so are the updates of
  // elementwise optimizers with zero-initialised parameters (weight decay of 0 is 0).
  comm_.reduce_scatter(flat_.cview(), shard_.grad.view(), parallel::ReduceOp::kAvg);
  inner_->set_lr(lr_);
  inner_->step(ctx);
  comm_.allgather(shard_.value.cview(), flat_.view());
  off = 0;
  for (const auto& np : params_) {
    const int64_t n = np.param->value.numel();
    np.param->value.reshape({n}).copy_from(flat_.slice(0, off, off + n).cview(), ctx);
    off += n;
  }
  ++step_;
}

void ZeroOptimizer::load_shard_state(const OptimizerState& s, const ExecContext& ctx) {
  inner_->load_state(s, ctx);
  // The parameters were replaced (load_checkpoint): take this rank's shard of them again, as
  // the constructor does, so the next inner step updates the loaded values.
  int64_t off = 0;
  for (const auto& np : params_) {
    const int64_t n = np.param->value.numel();
    flat_.slice(0, off, off + n).copy_from(np.param->value.reshape({n}).cview(), ctx);
    off += n;
  }
  const int64_t shard = shard_elements();
  shard_.value.copy_from(flat_.slice(0, comm_.rank() * shard, (comm_.rank() + 1) * shard).cview(),
                         ctx);
}

std::string ZeroOptimizer::type_name() const { return "ZeRO1<" + inner_->type_name() + ">"; }

int64_t ZeroOptimizer::state_bytes() const {
  int64_t b = 0;
  for (const auto& [name, t] : inner_->state().tensors) b += t.nbytes();
  return b;
}

int64_t ZeroOptimizer::unsharded_state_bytes() const {
  return shard_elements() == 0 ? 0 : state_bytes() / shard_elements() * numel_;
}

std::map<std::string, double> ZeroOptimizer::hyperparameters() const {
  auto s = inner_->state().scalars;
  s.erase("lr");
  s.erase("step");
  return s;
}

std::string zero_shard_path(const std::string& path, int rank, int world_size) {
  return path + ".zero-" + std::to_string(rank) + "-of-" + std::to_string(world_size);
}

namespace {

std::string exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);  // round-trips a double exactly
  return buf;
}

int64_t meta_integer(const SafetensorsFile& f, const std::string& key, const std::string& file) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end())
    detail::fail(ErrorCode::kIoError, "load_zero_shard", file, " has no metadata '", key, "'");
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0' || errno != 0)
    detail::fail(ErrorCode::kIoError, "load_zero_shard", file, " metadata '", key, "' = '",
                 it->second, "' is not an integer");
  return v;
}

}  // namespace

void save_zero_shard(const std::string& path, const ZeroOptimizer& opt) {
  const int rank = opt.rank(), k = opt.world_size();
  const std::string file = zero_shard_path(path, rank, k);
  const OptimizerState st = opt.shard_state();
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, t] : st.tensors) tensors["optim." + name] = t;
  std::map<std::string, std::string> meta{{"zero.rank", std::to_string(rank)},
                                          {"zero.world_size", std::to_string(k)},
                                          {"zero.elements", std::to_string(opt.total_elements())},
                                          {"zero.step", std::to_string(opt.step_count())},
                                          {"optim.type", opt.inner().type_name()}};
  for (const auto& [name, v] : st.scalars) meta["optim." + name] = exact(v);
  const std::vector<uint8_t> bytes = serialize_safetensors(tensors, meta);
  write_file_atomic(file,
                    std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                    "save_zero_shard");
}

namespace {

// One shard file, read and checked against `opt` (rank `r` of `k`, the model's size, the step
// and the inner optimizer's type); its state with the "optim." prefixes dropped.
OptimizerState read_shard(const std::string& file, int r, int k, const ZeroOptimizer& opt) {
  constexpr const char* op = "load_zero_shard";
  SafetensorsFile f;
  try {
    f = load_safetensors(file);
  } catch (const Error& e) {
    detail::fail(ErrorCode::kIoError, op, file, ": ", e.what());
  }
  FRUGAL_REQUIRE(
      meta_integer(f, "zero.rank", file) == r && meta_integer(f, "zero.world_size", file) == k, op,
      file, " was written by another rank or world size");
  const int64_t elements = meta_integer(f, "zero.elements", file);
  FRUGAL_REQUIRE(elements == opt.total_elements(), op, file, " shards a model of ", elements,
                 " elements but this model has ", opt.total_elements());
  const int64_t step = meta_integer(f, "zero.step", file);
  FRUGAL_REQUIRE(step == opt.step_count(), op, file, " was saved at step ", step,
                 " but the checkpoint is at step ", opt.step_count(),
                 " (the shards and the checkpoint come from different saves)");
  auto type = f.metadata.find("optim.type");
  FRUGAL_REQUIRE(type != f.metadata.end() && type->second == opt.inner().type_name(), op, file,
                 " holds the state of another optimizer than ", opt.inner().type_name());
  OptimizerState st;
  for (auto& [name, t] : f.tensors) {
    FRUGAL_REQUIRE(name.rfind("optim.", 0) == 0, op, file, " has an unexpected tensor '", name,
                   "'");
    st.tensors[name.substr(6)] = t;
  }
  for (const auto& [key, v] : f.metadata) {
    if (key.rfind("optim.", 0) != 0 || key == "optim.type") continue;
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0')
      detail::fail(ErrorCode::kIoError, op, file, " metadata '", key, "' = '", v,
                   "' is not a number");
    st.scalars[key.substr(6)] = d;
  }
  return st;
}

// The world sizes K of the shard sets "<path>.zero-0-of-<K>" next to `path`, ascending.
std::vector<int> saved_world_sizes(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const std::string prefix = p.filename().string() + ".zero-0-of-";
  std::vector<int> sizes;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string tail = name.substr(prefix.size());
    char* end = nullptr;
    const long v = std::strtol(tail.c_str(), &end, 10);
    if (!tail.empty() && *end == '\0' && v > 0 && v <= (1 << 20)) {
      sizes.push_back(static_cast<int>(v));
    }
  }
  std::sort(sizes.begin(), sizes.end());
  return sizes;
}

// This rank's shard of a state saved by `k_old` ranks: the slots' elements
// [rank S, (rank + 1) S) of the unsharded vector (S = ceil(n / K), zeros past n) gathered from
// the old shards that overlap it (old rank r held [r S_old, (r + 1) S_old)); the scalars, which
// every old shard holds, must agree.
OptimizerState reshard(const std::string& path, int k_old, const ZeroOptimizer& opt,
                       const ExecContext& ctx) {
  constexpr const char* op = "load_zero_shard";
  const int64_t n = opt.total_elements();
  const int64_t s_old = (n + k_old - 1) / k_old, s_new = opt.shard_elements();
  const int64_t lo = opt.rank() * s_new, hi = std::min(n, lo + s_new);
  // The old shards overlapping [lo, hi) (every one when the range is empty: this rank holds
  // padding only, and still needs the scalars), all checked to exist before any is read.
  struct OldShard {
    int rank;
    int64_t lo, hi;  // its range [lo, hi) of the unsharded vector
    std::string file;
  };
  std::vector<OldShard> needed;
  for (int r = 0; r < k_old; ++r) {
    const int64_t olo = r * s_old, ohi = std::min(n, olo + s_old);
    if (lo < hi && (ohi <= lo || olo >= hi)) continue;
    needed.push_back({r, olo, ohi, zero_shard_path(path, r, k_old)});
    if (!std::filesystem::exists(needed.back().file))
      detail::fail(ErrorCode::kIoError, op, needed.back().file,
                   " does not exist (the shard set of ", k_old, " ranks is incomplete)");
  }
  OptimizerState out;
  bool first = true;
  for (const auto& [r, olo, ohi, file] : needed) {
    const OptimizerState st = read_shard(file, r, k_old, opt);
    if (first) {
      out.scalars = st.scalars;
      for (const auto& [name, t] : st.tensors) {
        FRUGAL_REQUIRE(t.rank() == 1 && t.numel() == s_old, op, file, " slot '", name,
                       "' has shape ", t.shape(), "; expected (", s_old, ")");
        out.tensors[name] = Tensor::zeros({s_new}, t.dtype());
      }
      first = false;
    }
    FRUGAL_REQUIRE(st.scalars == out.scalars && st.tensors.size() == out.tensors.size(), op, file,
                   " holds other scalars or slots than ", needed.front().file);
    for (const auto& [name, t] : st.tensors) {
      auto it = out.tensors.find(name);
      FRUGAL_REQUIRE(it != out.tensors.end() && t.rank() == 1 && t.numel() == s_old &&
                         t.dtype() == it->second.dtype(),
                     op, file, " slot '", name, "' does not match the other shards");
      const int64_t a = std::max(lo, olo), b = std::min(hi, ohi);
      if (a < b) {
        it->second.slice(0, a - lo, b - lo).copy_from(t.slice(0, a - olo, b - olo).cview(), ctx);
      }
    }
  }
  return out;
}

}  // namespace

void load_zero_shard(const std::string& path, ZeroOptimizer& opt, const ExecContext& ctx) {
  constexpr const char* op = "load_zero_shard";
  const int rank = opt.rank(), k = opt.world_size();
  const std::string file = zero_shard_path(path, rank, k);
  if (std::filesystem::exists(file)) {
    opt.load_shard_state(read_shard(file, rank, k, opt), ctx);
    return;
  }
  // No shards for this world size: reshard the one saved set (DeepSpeed's universal checkpoint).
  const std::vector<int> sizes = saved_world_sizes(path);
  if (sizes.empty())
    detail::fail(ErrorCode::kIoError, op, file, " does not exist and no other shard set of ", path,
                 " does either");
  if (sizes.size() > 1) {
    std::string list;
    for (int s : sizes) list += (list.empty() ? "" : ", ") + std::to_string(s);
    detail::fail(ErrorCode::kIoError, op, file, " does not exist and shard sets of ", list,
                 " ranks do: which one belongs to this checkpoint is ambiguous");
  }
  opt.load_shard_state(reshard(path, sizes[0], opt, ctx), ctx);
}

}  // namespace frugal::nn
