// Checkpoints in one safetensors file (include/frugal/nn/checkpoint.hpp).
#include "frugal/nn/checkpoint.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <utility>
#include <vector>

#include "frugal/core/io.hpp"

namespace frugal::nn {
namespace {

constexpr const char* kVersionKey = "frugal.checkpoint";
constexpr const char* kVersion = "1";
const std::string kModel = "model.";
const std::string kOptim = "optim.";
const std::string kExtra = "train.extra.";

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

template <class... Args>
[[noreturn]] void bad_file(const std::string& path, Args&&... what) {
  detail::fail(ErrorCode::kIoError, "load_checkpoint", path, ": ", std::forward<Args>(what)...);
}

const std::string& meta(const SafetensorsFile& f, const std::string& key, const std::string& path) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end()) bad_file(path, "metadata has no '", key, "'");
  return it->second;
}

template <class T>
T parse_integer(const std::string& s, const std::string& key, const std::string& path) {
  errno = 0;
  char* end = nullptr;
  T v;
  if constexpr (std::is_signed_v<T>) {
    v = static_cast<T>(std::strtoll(s.c_str(), &end, 10));
  } else {
    if (!s.empty() && s[0] == '-') bad_file(path, "metadata '", key, "' is negative");
    v = static_cast<T>(std::strtoull(s.c_str(), &end, 10));
  }
  if (s.empty() || errno != 0 || end != s.c_str() + s.size()) {
    bad_file(path, "metadata '", key, "' = '", s, "' is not an integer");
  }
  return v;
}

double parse_double(const std::string& s, const std::string& key, const std::string& path) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) {
    bad_file(path, "metadata '", key, "' = '", s, "' is not a number");
  }
  return v;
}

/// The model's parameters and buffers by name (the tensors to save or fill).
std::vector<std::pair<std::string, Tensor*>> model_tensors(Module& model, const char* op) {
  std::vector<std::pair<std::string, Tensor*>> out;
  std::set<std::string> names;
  for (const NamedParameter& np : model.named_parameters()) {
    FRUGAL_REQUIRE(names.insert(np.name).second, op, "duplicate parameter name '", np.name, "'");
    out.emplace_back(np.name, &np.param->value);
  }
  for (const NamedBuffer& nb : model.named_buffers()) {
    FRUGAL_REQUIRE(names.insert(nb.name).second, op, "buffer '", nb.name,
                   "' has the name of another parameter or buffer");
    out.emplace_back(nb.name, nb.tensor);
  }
  return out;
}

}  // namespace

void save_checkpoint(const std::string& path, Module& model, const Optimizer* optim,
                     const TrainState& state) {
  const char* op = "save_checkpoint";
  std::map<std::string, Tensor> tensors;
  for (auto& [name, t] : model_tensors(model, op)) tensors[kModel + name] = *t;
  std::map<std::string, std::string> md;
  md[kVersionKey] = kVersion;
  md["train.step"] = std::to_string(state.step);
  md["train.epoch"] = std::to_string(state.epoch);
  md["train.seed"] = std::to_string(state.seed);
  md["train.rng_offset"] = std::to_string(state.rng_offset);
  for (const auto& [k, v] : state.extra) {
    FRUGAL_REQUIRE(!k.empty(), op, "TrainState::extra has an empty key");
    md[kExtra + k] = v;
  }
  if (optim != nullptr) {
    const OptimizerState s = optim->state();
    for (const auto& [name, t] : s.tensors) tensors[kOptim + name] = t;
    md["optim.type"] = optim->type_name();
    for (const auto& [name, v] : s.scalars) md[kOptim + name] = format_double(v);
  }
  save_safetensors(path, tensors, md);
}

TrainState load_checkpoint(const std::string& path, Module& model, Optimizer* optim,
                           const ExecContext& ctx) {
  const char* op = "load_checkpoint";
  SafetensorsFile f;
  try {
    f = load_safetensors(path);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kIoError) throw;
    detail::fail(ErrorCode::kIoError, op, path, ": ", e.what());
  }
  if (meta(f, kVersionKey, path) != kVersion) {
    bad_file(path, "unsupported checkpoint version '", f.metadata[kVersionKey], "'");
  }
  TrainState st;
  st.step = parse_integer<int64_t>(meta(f, "train.step", path), "train.step", path);
  st.epoch = parse_integer<int64_t>(meta(f, "train.epoch", path), "train.epoch", path);
  st.seed = parse_integer<uint64_t>(meta(f, "train.seed", path), "train.seed", path);
  st.rng_offset =
      parse_integer<uint64_t>(meta(f, "train.rng_offset", path), "train.rng_offset", path);
  for (const auto& [k, v] : f.metadata) {
    if (starts_with(k, kExtra)) st.extra[k.substr(kExtra.size())] = v;
  }

  // Model: exactly the model's names, shapes and dtypes.
  std::vector<std::pair<Tensor*, const Tensor*>> assign;
  std::set<std::string> expected;
  for (auto& [name, t] : model_tensors(model, op)) {
    const std::string key = kModel + name;
    expected.insert(key);
    auto it = f.tensors.find(key);
    FRUGAL_REQUIRE(it != f.tensors.end(), op, path, " has no tensor '", key, "'");
    FRUGAL_REQUIRE(it->second.shape() == t->shape(), op, "'", key, "' has shape ",
                   it->second.shape(), " in ", path, " but ", t->shape(), " in the model");
    FRUGAL_REQUIRE(it->second.dtype() == t->dtype(), op, "'", key, "' has dtype ",
                   dtype_name(it->second.dtype()), " in ", path, " but ", dtype_name(t->dtype()),
                   " in the model");
    assign.emplace_back(t, &it->second);
  }
  for (const auto& [key, t] : f.tensors) {
    if (starts_with(key, kModel)) {
      FRUGAL_REQUIRE(expected.count(key) == 1, op, path, " has tensor '", key,
                     "' that the model does not have");
    }
  }

  // Optimizer: its type, slots and scalars (validated by the optimizer itself).
  OptimizerState os;
  if (optim != nullptr) {
    auto type_it = f.metadata.find("optim.type");
    FRUGAL_REQUIRE(type_it != f.metadata.end(), op, path, " holds no optimizer state");
    FRUGAL_REQUIRE(type_it->second == optim->type_name(), op, path, " holds ", type_it->second,
                   " state but the optimizer is ", optim->type_name());
    for (const auto& [key, t] : f.tensors) {
      if (starts_with(key, kOptim)) os.tensors[key.substr(kOptim.size())] = t;
    }
    for (const auto& [key, v] : f.metadata) {
      if (starts_with(key, kOptim) && key != "optim.type") {
        os.scalars[key.substr(kOptim.size())] = parse_double(v, key, path);
      }
    }
    try {
      optim->check_state(os);
    } catch (const Error& e) {
      throw Error(e.code(), detail::concat("[", op, "] ", path, ": ", e.what()));
    }
  }

  // Everything is valid: assign.
  for (auto& [dst, src] : assign) dst->copy_from(*src, ctx);
  if (optim != nullptr) optim->load_state(os, ctx);
  return st;
}

}  // namespace frugal::nn
