// nn integration of pruning (include/frugal/nn/prune_layers.hpp).
#include "frugal/nn/prune_layers.hpp"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "frugal/core/error.hpp"
#include "frugal/core/io.hpp"
#include "frugal/prune/mask.hpp"
#include "frugal/ref/prune.hpp"

namespace frugal::nn {
namespace {

constexpr const char* kMaskPrefix = "prune.mask.";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shape_string(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < s.rank(); ++i) os << (i ? ", " : "") << s[i];
  os << ")";
  return os.str();
}

// scores = mask ? |w| : -1, so already pruned entries rank below every kept one.
Tensor masked_scores(const Tensor& w, const Tensor& mask) {
  std::vector<double> v = w.to(Device::cpu()).to_vector<double>();
  const std::vector<uint8_t> m = mask.to(Device::cpu()).to_vector<uint8_t>();
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = m[i] ? std::abs(v[i]) : -1.0;
  return Tensor::from_vector<double>(v, w.shape());
}

}  // namespace

// ---- Pruner ------------------------------------------------------------------------------------

Pruner::Pruner(Module& model, std::vector<std::string> names) : model_(&model) {
  std::map<std::string, Parameter*> all;
  std::vector<std::string> order;
  for (auto& np : model.named_parameters()) {
    all[np.name] = np.param;
    order.push_back(np.name);
  }
  if (names.empty()) {
    for (const auto& n : order) {
      if (ends_with(n, "weight") && all[n]->value.rank() >= 2) names.push_back(n);
    }
    FRUGAL_REQUIRE(!names.empty(), "Pruner", "the model has no weight of rank >= 2");
  }
  for (const auto& n : names) {
    auto it = all.find(n);
    FRUGAL_REQUIRE(it != all.end(), "Pruner", "no parameter named '", n, "'");
    const DType dt = it->second->value.dtype();
    FRUGAL_REQUIRE(dt == DType::kF32 || dt == DType::kF64, "Pruner", "parameter '", n, "' is ",
                   dtype_name(dt), "; expected f32 or f64");
    FRUGAL_REQUIRE(params_.count(n) == 0, "Pruner", "parameter '", n, "' listed twice");
    params_[n] = it->second;
    masks_[n] =
        Tensor::full(it->second->value.shape(), 1.0, DType::kU8, it->second->value.device());
    names_.push_back(n);
  }
}

Parameter& Pruner::param(const std::string& name) const {
  auto it = params_.find(name);
  FRUGAL_REQUIRE(it != params_.end(), "Pruner", "parameter '", name, "' is not tracked");
  return *it->second;
}

const Tensor& Pruner::mask(const std::string& name) const {
  param(name);
  return masks_.at(name);
}

void Pruner::set_mask(const std::string& name, const Tensor& mask) {
  Parameter& p = param(name);
  FRUGAL_REQUIRE(mask.dtype() == DType::kU8, "Pruner::set_mask", "mask must be u8, got ",
                 dtype_name(mask.dtype()));
  FRUGAL_REQUIRE(mask.shape() == p.value.shape(), "Pruner::set_mask", "mask shape ",
                 shape_string(mask.shape()), " differs from '", name, "' ",
                 shape_string(p.value.shape()));
  masks_[name] = mask.to(p.value.device()).contiguous();
}

void Pruner::prune_magnitude(double sparsity, PruneScope scope) {
  FRUGAL_REQUIRE(sparsity >= 0.0 && sparsity < 1.0, "Pruner::prune_magnitude", "sparsity ",
                 sparsity, " outside [0, 1)");
  std::vector<Tensor> scores;
  for (const auto& n : names_) scores.push_back(masked_scores(param(n).value, masks_[n]));
  if (scope == PruneScope::kGlobal) {
    std::vector<ConstTensorView> views(scores.begin(), scores.end());
    prune::GlobalMask g = prune::global_unstructured_masks(views, sparsity);
    for (std::size_t i = 0; i < names_.size(); ++i) set_mask(names_[i], g.masks[i]);
  } else {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      set_mask(names_[i], prune::unstructured_mask(scores[i], sparsity));
    }
  }
  apply_masks();
}

void Pruner::prune_nm(int n, int m) {
  for (const auto& name : names_) {
    const Tensor& w = param(name).value;
    Tensor s = masked_scores(w, masks_[name]).reshape(Shape{w.dim(0), w.numel() / w.dim(0)});
    set_mask(name, prune::nm_mask(s, n, m).reshape(w.shape()));
  }
  apply_masks();
}

void Pruner::mask_grads(const ExecContext& ctx) {
  for (const auto& n : names_) {
    Parameter& p = param(n);
    if (p.grad.defined()) prune::apply_mask(p.grad, masks_[n], ctx);
  }
}

void Pruner::apply_masks(const ExecContext& ctx) {
  for (const auto& n : names_) prune::apply_mask(param(n).value, masks_[n], ctx);
}

double Pruner::sparsity() const {
  int64_t zeros = 0, total = 0;
  for (const auto& n : names_) {
    const Tensor& m = masks_.at(n);
    zeros += std::llround(prune::mask_sparsity(m) * static_cast<double>(m.numel()));
    total += m.numel();
  }
  return static_cast<double>(zeros) / static_cast<double>(total);
}

std::map<std::string, Tensor> Pruner::state() const {
  std::map<std::string, Tensor> out;
  for (const auto& n : names_) out[kMaskPrefix + n] = masks_.at(n).to(Device::cpu());
  return out;
}

void Pruner::check_state(const std::map<std::string, Tensor>& state) const {
  for (const auto& n : names_) {
    auto it = state.find(kMaskPrefix + n);
    FRUGAL_REQUIRE(it != state.end(), "Pruner::load_state", "no mask for '", n, "'");
    FRUGAL_REQUIRE(it->second.dtype() == DType::kU8 && it->second.shape() == param(n).value.shape(),
                   "Pruner::load_state", "mask of '", n, "' has the wrong dtype or shape");
  }
}

void Pruner::load_state(const std::map<std::string, Tensor>& state) {
  check_state(state);  // everything is validated before anything is assigned
  for (const auto& n : names_) set_mask(n, state.at(kMaskPrefix + n));
}

void Pruner::save(const std::string& path) const { save_safetensors(path, state()); }

void Pruner::load(const std::string& path) { load_state(load_safetensors(path).tensors); }

// ---- schedules
// -----------------------------------------------------------------------------------

PruneSchedule PruneSchedule::one_shot(double sparsity, int64_t at) {
  FRUGAL_REQUIRE(sparsity >= 0.0 && sparsity < 1.0, "PruneSchedule", "sparsity ", sparsity,
                 " outside [0, 1)");
  PruneSchedule s;
  s.kind = Kind::kOneShot;
  s.final_sparsity = sparsity;
  s.begin_step = at;
  return s;
}

PruneSchedule PruneSchedule::iterative(double rate, int64_t rounds, int64_t steps_per_round,
                                       int64_t begin) {
  FRUGAL_REQUIRE(rate > 0.0 && rate < 1.0, "PruneSchedule", "rate ", rate, " outside (0, 1)");
  FRUGAL_REQUIRE(rounds >= 1 && steps_per_round >= 1, "PruneSchedule",
                 "rounds and steps_per_round must be >= 1");
  PruneSchedule s;
  s.kind = Kind::kIterative;
  s.rate = rate;
  s.num_prunes = rounds;
  s.frequency = steps_per_round;
  s.begin_step = begin;
  s.final_sparsity = 1.0 - std::pow(1.0 - rate, static_cast<double>(rounds));
  return s;
}

PruneSchedule PruneSchedule::gradual(double s_i, double s_f, int64_t t0, int64_t n, int64_t dt) {
  FRUGAL_REQUIRE(s_i >= 0.0 && s_i < 1.0 && s_f >= 0.0 && s_f < 1.0, "PruneSchedule", "sparsities ",
                 s_i, ", ", s_f, " outside [0, 1)");
  FRUGAL_REQUIRE(n >= 1 && dt >= 1 && t0 >= 0, "PruneSchedule", "need n >= 1, dt >= 1, t0 >= 0");
  PruneSchedule s;
  s.kind = Kind::kGradual;
  s.initial_sparsity = s_i;
  s.final_sparsity = s_f;
  s.begin_step = t0;
  s.num_prunes = n;
  s.frequency = dt;
  return s;
}

std::optional<double> PruneSchedule::target_at(int64_t t) const {
  switch (kind) {
    case Kind::kOneShot:
      if (t == begin_step) return final_sparsity;
      return std::nullopt;
    case Kind::kIterative: {
      if (t < begin_step || (t - begin_step) % frequency != 0) return std::nullopt;
      const int64_t r = (t - begin_step) / frequency + 1;
      if (r > num_prunes) return std::nullopt;
      return 1.0 - std::pow(1.0 - rate, static_cast<double>(r));
    }
    case Kind::kGradual: {
      if (t < begin_step || (t - begin_step) % frequency != 0) return std::nullopt;
      if ((t - begin_step) / frequency > num_prunes) return std::nullopt;
      return sparsity_at(t);
    }
  }
  return std::nullopt;
}

double PruneSchedule::sparsity_at(int64_t t) const {
  switch (kind) {
    case Kind::kOneShot:
      return t >= begin_step ? final_sparsity : 0.0;
    case Kind::kIterative: {
      if (t < begin_step) return 0.0;
      const int64_t r = std::min<int64_t>((t - begin_step) / frequency + 1, num_prunes);
      return 1.0 - std::pow(1.0 - rate, static_cast<double>(r));
    }
    case Kind::kGradual: {
      if (t < begin_step) return initial_sparsity;
      // The sparsity of the last event at or before t.
      const int64_t e = std::min<int64_t>((t - begin_step) / frequency, num_prunes);
      const double f = 1.0 - static_cast<double>(e) / static_cast<double>(num_prunes);
      return final_sparsity + (initial_sparsity - final_sparsity) * f * f * f;
    }
  }
  return 0.0;
}

// ---- PruneFinetune ------------------------------------------------------------------------------

PruneFinetune::PruneFinetune(Module& model, Optimizer& optim, Pruner& pruner,
                             PruneSchedule schedule, PruneScope scope, int64_t rewind_step,
                             bool rewind_after_prune)
    : model_(&model),
      optim_(&optim),
      pruner_(&pruner),
      schedule_(schedule),
      scope_(scope),
      rewind_step_(rewind_step),
      rewind_after_prune_(rewind_after_prune) {
  FRUGAL_REQUIRE(!rewind_after_prune || rewind_step >= 0, "PruneFinetune",
                 "rewind_after_prune needs rewind_step >= 0");
  if (rewind_step_ == 0) take_snapshot({});
}

void PruneFinetune::take_snapshot(const ExecContext& ctx) {
  snapshot_.clear();
  for (auto& np : model_->named_parameters()) snapshot_[np.name] = np.param->value.clone(ctx);
}

bool PruneFinetune::step(const ExecContext& ctx) {
  pruner_->mask_grads(ctx);
  optim_->step(ctx);
  return after_update(ctx);
}

StepHooks PruneFinetune::hooks(const ExecContext& ctx) {
  StepHooks h;
  h.before_step = [this, ctx](int64_t) {
    pruner_->mask_grads(ctx);
    return true;
  };
  h.after_step = [this, ctx](int64_t) { after_update(ctx); };
  return h;
}

bool PruneFinetune::after_update(const ExecContext& ctx) {
  ++t_;
  if (rewind_step_ > 0 && t_ == rewind_step_) take_snapshot(ctx);
  bool pruned = false;
  if (auto target = schedule_.target_at(t_)) {
    pruner_->prune_magnitude(*target, scope_);
    pruned = true;
    if (rewind_after_prune_ && has_snapshot()) rewind(ctx);
  }
  pruner_->apply_masks(ctx);
  return pruned;
}

void PruneFinetune::rewind(const ExecContext& ctx) {
  FRUGAL_REQUIRE(has_snapshot(), "PruneFinetune::rewind", "no snapshot yet (rewind_step ",
                 rewind_step_, ", step ", t_, ")");
  for (auto& np : model_->named_parameters()) {
    auto it = snapshot_.find(np.name);
    if (it != snapshot_.end()) np.param->value.copy_from(it->second, ctx);
  }
  pruner_->apply_masks(ctx);
}

// ---- structured pruning
// ----------------------------------------------------------------------------

std::vector<int64_t> structured_keep(const Tensor& scores, double fraction) {
  const char* op = "structured_keep";
  FRUGAL_REQUIRE(scores.defined() && scores.rank() == 1 && scores.numel() > 0, op,
                 "scores must be a non-empty 1-D tensor");
  FRUGAL_REQUIRE(fraction >= 0.0 && fraction < 1.0, op, "fraction ", fraction, " outside [0, 1)");
  const std::vector<double> s = scores.to(Device::cpu()).to_vector<double>();
  for (double v : s) FRUGAL_REQUIRE(!std::isnan(v), op, "NaN score");
  const int64_t rows = static_cast<int64_t>(s.size());
  const int64_t k = prune::pruned_count(fraction, rows);
  FRUGAL_REQUIRE(k < rows, op, "pruning ", k, " of ", rows, " rows would remove every one");
  const std::vector<uint8_t> keep = ref::prune_mask_sorted(s, k);  // rows are few: a sort is fine
  std::vector<int64_t> out;
  for (int64_t i = 0; i < rows; ++i) {
    if (keep[i]) out.push_back(i);
  }
  return out;
}

namespace {

std::vector<int64_t> all_of(int64_t n) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

// Copies t[rows][cols][inner...] selected along dims 0 and 1 (t viewed as (d0, d1, rest)).
Tensor gather2(const Tensor& t, const std::vector<int64_t>& rows,
               const std::vector<int64_t>& cols) {
  Tensor h = t.to(Device::cpu()).contiguous().to(DType::kF64);
  const int64_t d0 = t.dim(0), d1 = t.rank() > 1 ? t.dim(1) : 1;
  const int64_t rest = t.numel() / (d0 * d1);
  const double* src = h.data<double>();
  std::vector<double> out;
  out.reserve(rows.size() * cols.size() * rest);
  for (int64_t r : rows) {
    for (int64_t c : cols) {
      const double* p = src + (r * d1 + c) * rest;
      out.insert(out.end(), p, p + rest);
    }
  }
  Shape sh = t.shape();
  sh[0] = static_cast<int64_t>(rows.size());
  if (t.rank() > 1) sh[1] = static_cast<int64_t>(cols.size());
  return Tensor::from_vector<double>(out, sh).to(t.dtype());
}

void check_indices(const char* op, const std::vector<int64_t>& idx, int64_t n, const char* what) {
  FRUGAL_REQUIRE(!idx.empty(), op, "no ", what, " kept");
  for (std::size_t i = 0; i < idx.size(); ++i) {
    FRUGAL_REQUIRE(idx[i] >= 0 && idx[i] < n && (i == 0 || idx[i] > idx[i - 1]), op, what,
                   " indices must be increasing and in [0, ", n, ")");
  }
}

}  // namespace

std::shared_ptr<Linear> slice_linear(Linear& l, const std::vector<int64_t>& keep_out_in,
                                     const std::vector<int64_t>& keep_in_in) {
  const char* op = "slice_linear";
  const auto keep_out = keep_out_in.empty() ? all_of(l.out_features()) : keep_out_in;
  const auto keep_in = keep_in_in.empty() ? all_of(l.in_features()) : keep_in_in;
  check_indices(op, keep_out, l.out_features(), "output");
  check_indices(op, keep_in, l.in_features(), "input");
  const Tensor& w = l.weight().value;
  auto out = std::make_shared<Linear>(static_cast<int64_t>(keep_in.size()),
                                      static_cast<int64_t>(keep_out.size()), l.bias() != nullptr, 0,
                                      w.dtype());
  out->weight().value.copy_from(gather2(w, keep_out, keep_in));
  if (l.bias() != nullptr) out->bias()->value.copy_from(gather2(l.bias()->value, keep_out, {0}));
  out->set_context(l.context());
  out->train(l.is_training());
  out->to(w.device());
  return out;
}

std::shared_ptr<Conv2d> slice_conv2d(Conv2d& c, const std::vector<int64_t>& keep_out_in,
                                     const std::vector<int64_t>& keep_in_in) {
  const char* op = "slice_conv2d";
  FRUGAL_REQUIRE(c.params().groups == 1, op, "only groups = 1 convolutions can be sliced, got ",
                 c.params().groups);
  const auto keep_out = keep_out_in.empty() ? all_of(c.out_channels()) : keep_out_in;
  const auto keep_in = keep_in_in.empty() ? all_of(c.in_channels()) : keep_in_in;
  check_indices(op, keep_out, c.out_channels(), "output");
  check_indices(op, keep_in, c.in_channels(), "input");
  const Tensor& w = c.weight().value;
  Conv2dOptions opt;
  opt.stride = c.params().stride;
  opt.padding = c.params().padding;
  opt.dilation = c.params().dilation;
  opt.groups = 1;
  opt.bias = c.bias() != nullptr;
  auto out = std::make_shared<Conv2d>(static_cast<int64_t>(keep_in.size()),
                                      static_cast<int64_t>(keep_out.size()), c.kernel_size(), opt,
                                      0, w.dtype());
  out->weight().value.copy_from(gather2(w, keep_out, keep_in));
  if (c.bias() != nullptr) out->bias()->value.copy_from(gather2(c.bias()->value, keep_out, {0}));
  out->train(c.is_training());
  out->to(w.device());
  return out;
}

std::shared_ptr<BatchNorm2d> slice_batch_norm(BatchNorm2d& bn, const std::vector<int64_t>& keep) {
  check_indices("slice_batch_norm", keep, bn.num_features(), "channel");
  const DType dt = bn.running_mean().dtype();
  auto out = std::make_shared<BatchNorm2d>(static_cast<int64_t>(keep.size()), bn.eps(),
                                           bn.momentum(), bn.weight() != nullptr, dt);
  if (bn.weight() != nullptr) {
    out->weight()->value.copy_from(gather2(bn.weight()->value, keep, {0}));
    out->bias()->value.copy_from(gather2(bn.bias()->value, keep, {0}));
  }
  out->running_mean().copy_from(gather2(bn.running_mean(), keep, {0}));
  out->running_var().copy_from(gather2(bn.running_var(), keep, {0}));
  out->train(bn.is_training());
  out->to(bn.running_mean().device());
  return out;
}

StructuredPruneResult prune_structured(Sequential& model, std::size_t index, double fraction,
                                       prune::Norm norm, const Tensor& scores_in) {
  const char* op = "prune_structured";
  FRUGAL_REQUIRE(index < model.size(), op, "layer ", index, " of a ", model.size(),
                 "-layer Sequential");
  std::vector<std::shared_ptr<Module>> layers;
  for (const auto& [name, child] : model.children()) layers.push_back(child);
  Module* first = layers[index].get();
  auto* lin = dynamic_cast<Linear*>(first);
  auto* conv = dynamic_cast<Conv2d*>(first);
  FRUGAL_REQUIRE(lin != nullptr || conv != nullptr, op, "layer ", index, " is ", first->type_name(),
                 "; expected Linear or Conv2d");
  const Tensor& w = lin ? lin->weight().value : conv->weight().value;
  Tensor scores = scores_in.defined() ? scores_in : prune::row_norm_scores(w, norm);
  FRUGAL_REQUIRE(scores.rank() == 1 && scores.dim(0) == w.dim(0), op, "scores must have ", w.dim(0),
                 " entries");
  std::vector<int64_t> keep;
  try {
    keep = structured_keep(scores, fraction);
  } catch (const Error& e) {
    detail::fail(e.code(), op,
                 std::string(e.what()).substr(std::string("[structured_keep] ").size()));
  }
  const int64_t channels = w.dim(0);
  layers[index] = lin ? std::static_pointer_cast<Module>(slice_linear(*lin, keep, {}))
                      : std::static_pointer_cast<Module>(slice_conv2d(*conv, keep, {}));
  int64_t block = 1;  // input columns per removed channel in the consumer (H*W after Flatten)
  bool flattened = false;
  std::size_t j = index + 1;
  for (; j < layers.size(); ++j) {
    Module* m = layers[j].get();
    if (auto* bn = dynamic_cast<BatchNorm2d*>(m)) {
      FRUGAL_REQUIRE(!flattened && bn->num_features() == channels, op, "BatchNorm2d at layer ", j,
                     " does not match ", channels, " channels");
      layers[j] = slice_batch_norm(*bn, keep);
      continue;
    }
    if (auto* nl = dynamic_cast<Linear*>(m)) {
      if (conv != nullptr) {
        FRUGAL_REQUIRE(flattened && nl->in_features() % channels == 0, op, "Linear at layer ", j,
                       " cannot consume the ", channels, " filters of layer ", index);
        block = nl->in_features() / channels;
      }
      FRUGAL_REQUIRE(nl->in_features() == channels * block, op, "Linear at layer ", j, " has ",
                     nl->in_features(), " inputs, expected ", channels * block);
      std::vector<int64_t> cols;
      for (int64_t c : keep) {
        for (int64_t b = 0; b < block; ++b) cols.push_back(c * block + b);
      }
      layers[j] = slice_linear(*nl, {}, cols);
      break;
    }
    if (auto* nc = dynamic_cast<Conv2d*>(m)) {
      FRUGAL_REQUIRE(conv != nullptr && !flattened && nc->in_channels() == channels, op,
                     "Conv2d at layer ", j, " does not consume layer ", index);
      layers[j] = slice_conv2d(*nc, {}, keep);
      break;
    }
    if (m->type_name() == "Flatten") {
      flattened = true;
      continue;
    }
    FRUGAL_REQUIRE(m->named_parameters().empty(), op, "layer ", j, " (", m->type_name(),
                   ") has parameters and is not supported between pruned layers");
  }
  FRUGAL_REQUIRE(j < layers.size(), op, "no Linear or Conv2d after layer ", index,
                 " consumes its outputs");
  auto out = std::make_shared<Sequential>(layers);
  out->train(model.is_training());
  return {out, keep};
}

// ---- SparseLinear -------------------------------------------------------------------------------

SparseLinear::SparseLinear(Linear& dense, const Tensor& mask) {
  w_ = prune::to_csr(dense.weight().value, mask.defined() ? mask.cview() : ConstTensorView{});
  if (dense.bias() != nullptr) bias_ = dense.bias()->value.clone();
  train(false);
}

namespace {

// The transpose of a contiguous rank-2 tensor. On the host: 32 x 32 blocks (reads and writes
// both touch whole cache lines), oneTBB over block rows; the generic strided copy is several
// times slower for the (batch, features) shapes of inference. Elsewhere: t().contiguous().
Tensor transpose2d(const Tensor& a, const ExecContext& ctx) {
  if (a.device().kind != DeviceKind::kCpu ||
      (a.dtype() != DType::kF32 && a.dtype() != DType::kF64)) {
    return a.t().contiguous(ctx);
  }
  const int64_t R = a.dim(0), C = a.dim(1);
  Tensor out = Tensor::empty(Shape{C, R}, a.dtype());
  constexpr int64_t kB = 32;
  auto run = [&]<class T>() {
    const T* src = a.data<T>();
    T* dst = out.data<T>();
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, (R + kB - 1) / kB, 1), [&](auto rg) {
        for (int64_t bi = rg.begin(); bi < rg.end(); ++bi) {
          const int64_t r0 = bi * kB, r1 = std::min(R, r0 + kB);
          for (int64_t c0 = 0; c0 < C; c0 += kB) {
            const int64_t c1 = std::min(C, c0 + kB);
            for (int64_t c = c0; c < c1; ++c) {
              for (int64_t r = r0; r < r1; ++r) dst[c * R + r] = src[r * C + c];
            }
          }
        }
      });
    });
  };
  if (a.dtype() == DType::kF32) {
    run.operator()<float>();
  } else {
    run.operator()<double>();
  }
  return out;
}

}  // namespace

Tensor SparseLinear::forward(const Tensor& input) {
  const char* op = "SparseLinear";
  FRUGAL_REQUIRE(input.rank() >= 1 && input.dim(-1) == w_.cols, op, "input last dim ",
                 input.rank() ? input.dim(-1) : 0, " != in_features ", w_.cols);
  const int64_t rows = input.numel() / w_.cols;
  Tensor x2 = input.contiguous(ctx_).reshape(Shape{rows, w_.cols});
  Tensor xt = transpose2d(x2, ctx_);      // (in, N)
  Tensor yt = prune::spmm(w_, xt, ctx_);  // (out, N)
  Tensor y = transpose2d(yt, ctx_);       // (N, out)
  if (bias_.defined()) linear_add_bias(y, bias_, ctx_);
  Shape out_shape = input.shape();
  out_shape[out_shape.rank() - 1] = w_.rows;
  return y.reshape(out_shape);
}

Tensor SparseLinear::backward(const Tensor&) {
  detail::fail(ErrorCode::kUnsupported, "SparseLinear",
               "inference only: backward is not implemented");
}

// ---- checkpoints with masks ---------------------------------------------------------------------

void save_pruned_checkpoint(const std::string& path, Module& model, const Optimizer* optim,
                            const TrainState& state, const Pruner& pruner) {
  save_checkpoint(path, model, optim, state);
  // Re-written with the masks added (atomically again): the checkpoint's own format is kept
  // byte for byte in its tensors and metadata.
  SafetensorsFile f = load_safetensors(path);
  for (auto& [name, t] : pruner.state()) f.tensors[name] = t;
  save_safetensors(path, f);
}

TrainState load_pruned_checkpoint(const std::string& path, Module& model, Optimizer* optim,
                                  Pruner& pruner, const ExecContext& ctx) {
  SafetensorsFile f;
  try {
    f = load_safetensors(path);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kIoError) throw;
    detail::fail(ErrorCode::kIoError, "load_checkpoint", path, ": ", e.what());
  }
  pruner.check_state(f.tensors);                             // masks first: nothing assigned yet
  TrainState st = load_checkpoint(path, model, optim, ctx);  // validates, then assigns
  pruner.load_state(f.tensors);
  pruner.apply_masks(ctx);
  return st;
}

// ---- report -------------------------------------------------------------------------------------

PruneReport prune_report(Module& model) {
  PruneReport r;
  for (auto& np : model.named_parameters()) {
    const Tensor& w = np.param->value;
    if (w.rank() < 2) continue;
    LayerPruneStats s;
    s.name = np.name;
    s.shape = shape_string(w.shape());
    s.params = w.numel();
    for (double v : w.to(Device::cpu()).to_vector<double>()) s.nonzero += v != 0.0;
    s.sparsity = 1.0 - static_cast<double>(s.nonzero) / static_cast<double>(s.params);
    const int64_t esize = dtype_nbytes(w.dtype(), 1);
    s.dense_bytes = s.params * esize;
    s.csr_bytes = s.nonzero * (esize + 4) + (w.dim(0) + 1) * 4;
    s.dense_flops = 2 * s.params;
    s.sparse_flops = 2 * s.nonzero;
    r.params += s.params;
    r.nonzero += s.nonzero;
    r.dense_bytes += s.dense_bytes;
    r.csr_bytes += s.csr_bytes;
    r.dense_flops += s.dense_flops;
    r.sparse_flops += s.sparse_flops;
    r.layers.push_back(s);
  }
  return r;
}

std::string PruneReport::to_string() const {
  std::ostringstream os;
  os << std::left << std::setw(28) << "layer" << std::setw(18) << "shape" << std::right
     << std::setw(10) << "params" << std::setw(10) << "nonzero" << std::setw(9) << "sparsity"
     << std::setw(12) << "dense B" << std::setw(12) << "csr B"
     << "\n";
  auto line = [&](const std::string& n, const std::string& sh, int64_t p, int64_t nz, int64_t db,
                  int64_t cb) {
    os << std::left << std::setw(28) << n << std::setw(18) << sh << std::right << std::setw(10) << p
       << std::setw(10) << nz << std::setw(9) << std::fixed << std::setprecision(3)
       << (p ? 1.0 - static_cast<double>(nz) / static_cast<double>(p) : 0.0) << std::setw(12) << db
       << std::setw(12) << cb << "\n";
  };
  for (const auto& l : layers)
    line(l.name, l.shape, l.params, l.nonzero, l.dense_bytes, l.csr_bytes);
  line("total", "", params, nonzero, dense_bytes, csr_bytes);
  os << "FLOPs per output position: dense " << dense_flops << ", sparse " << sparse_flops << "\n";
  return os.str();
}

}  // namespace frugal::nn
