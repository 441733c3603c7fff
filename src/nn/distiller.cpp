// Knowledge-distillation training: FeatureAdapter, TeacherCache and Distiller
// (include/frugal/nn/distiller.hpp).
#include "frugal/nn/distiller.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "frugal/amp/policy.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/io.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/core/philox.hpp"
#include "frugal/distill/feature.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/linear.hpp"

namespace frugal::nn {
namespace {

std::string shard_path(const std::string& dir, int64_t shard) {
  return (std::filesystem::path(dir) / ("teacher_" + std::to_string(shard) + ".safetensors"))
      .string();
}

int64_t meta_int(const SafetensorsFile& f, const std::string& key, const std::string& path) {
  const auto it = f.metadata.find(key);
  if (it == f.metadata.end()) {
    ::frugal::detail::fail(ErrorCode::kIoError, "TeacherCache::open", path,
                           " has no metadata key '", key, "'");
  }
  return std::stoll(it->second);
}

void check_precision(DType precision, const char* op) {
  FRUGAL_REQUIRE(precision == DType::kF32 || precision == DType::kBF16 || precision == DType::kF16,
                 op, "teacher precision must be f32, bf16 or f16, got ", dtype_name(precision));
}

/// The options a Distiller and the loop wrappers share.
void check_kd_options(const DistillerOptions& options, const char* op) {
  FRUGAL_REQUIRE(std::isfinite(options.temperature) && options.temperature > 0.0, op,
                 "temperature must be finite and > 0, got ", options.temperature);
  FRUGAL_REQUIRE(options.alpha >= 0.0 && options.alpha <= 1.0, op, "alpha must be in [0, 1], got ",
                 options.alpha);
  check_precision(options.teacher_precision, op);
}

/// Starts the autocast guard of a low-precision teacher in `guard` (none for f32). The guard is
/// neither copyable nor movable (the thread's current policy points into it).
void enter_teacher_autocast(std::optional<amp::AmpContext>& guard, DType precision) {
  if (precision != DType::kF32) guard.emplace(amp::default_policy(precision));
}

/// Logits (N, ..., C) as rows (N ..., C) for the losses.
Tensor as_rows(const Tensor& logits) {
  return logits.rank() == 2 ? logits : logits.reshape({-1, logits.dim(logits.rank() - 1)});
}

}  // namespace

Tensor teacher_forward(Module& teacher, const Tensor& input, DType precision,
                       const ExecContext& ctx) {
  check_precision(precision, "teacher_forward");
  const bool was_training = teacher.is_training();
  teacher.eval();
  Tensor logits;
  {
    std::optional<amp::AmpContext> guard;
    enter_teacher_autocast(guard, precision);
    logits = teacher.forward(input.to(teacher.device(), ctx));
  }
  teacher.train(was_training);
  return logits;
}

// ---- FeatureAdapter ------------------------------------------------------------------------

FeatureAdapter::FeatureAdapter(std::shared_ptr<Module> body) : body_(std::move(body)) {
  register_module("body", body_);
}

std::shared_ptr<FeatureAdapter> FeatureAdapter::linear(int64_t in_features, int64_t out_features,
                                                       uint64_t seed, DType dtype) {
  return std::shared_ptr<FeatureAdapter>(
      new FeatureAdapter(std::make_shared<Linear>(in_features, out_features, true, seed, dtype)));
}

std::shared_ptr<FeatureAdapter> FeatureAdapter::conv1x1(int64_t in_channels, int64_t out_channels,
                                                        uint64_t seed, DType dtype) {
  return std::shared_ptr<FeatureAdapter>(new FeatureAdapter(
      std::make_shared<Conv2d>(in_channels, out_channels, Size2{1}, Conv2dOptions{}, seed, dtype)));
}

// ---- TeacherCache --------------------------------------------------------------------------

TeacherCache TeacherCache::build(Module& teacher, const Dataset& data, const std::string& dir,
                                 const TeacherCacheOptions& options, const ExecContext& ctx) {
  const char* op = "TeacherCache::build";
  FRUGAL_REQUIRE(options.top_k >= 0, op, "top_k must be >= 0, got ", options.top_k);
  FRUGAL_REQUIRE(options.shard_size > 0 && options.batch_size > 0, op,
                 "shard_size and batch_size must be > 0, got ", options.shard_size, " and ",
                 options.batch_size);
  FRUGAL_REQUIRE(data.size() > 0, op, "the dataset is empty");
  check_precision(options.teacher_precision, op);
  const bool uniform = options.top_k > 0 && options.tail == distill::TopKTail::kUniform;
  FRUGAL_REQUIRE(!uniform || (std::isfinite(options.temperature) && options.temperature > 0.0), op,
                 "a uniform-tail cache needs the temperature of its lse (finite, > 0), got ",
                 options.temperature);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    ::frugal::detail::fail(ErrorCode::kIoError, op, "cannot create ", dir, ": ", ec.message());
  const bool was_training = teacher.is_training();
  teacher.eval();
  const Device device = teacher.device();
  const int64_t n = data.size();
  int64_t classes = 0;
  for (int64_t first = 0, shard = 0; first < n; first += options.shard_size, ++shard) {
    const int64_t count = std::min(options.shard_size, n - first);
    std::vector<Tensor> values, indices, lses;
    for (int64_t lo = first; lo < first + count; lo += options.batch_size) {
      const int64_t hi = std::min(lo + options.batch_size, first + count);
      // Inputs stacked like DataLoader does, in index order.
      Tensor input;
      {
        const Example e0 = data.get(lo);
        Shape s;
        s.push_back(hi - lo);
        for (int d = 0; d < e0.input.rank(); ++d) s.push_back(e0.input.dim(d));
        input = Tensor::empty(s, e0.input.dtype());
        for (int64_t i = lo; i < hi; ++i) {
          input.slice(0, i - lo, i - lo + 1).reshape(e0.input.shape()).copy_from(data.get(i).input);
        }
      }
      const Tensor logits =
          teacher_forward(teacher, input.to(device, ctx), options.teacher_precision, ctx)
              .to(DType::kF32, ctx);
      FRUGAL_REQUIRE(logits.rank() == 2 && logits.dim(0) == hi - lo, op,
                     "the teacher must return logits (N, C), got shape ", logits.shape());
      classes = logits.dim(1);
      FRUGAL_REQUIRE(options.top_k <= classes, op, "top_k ", options.top_k, " exceeds the ",
                     classes, " classes");
      if (options.top_k > 0) {
        const distill::TopKLogits tk =
            uniform ? distill::topk_teacher(logits, options.top_k, options.temperature, ctx)
                    : distill::topk_teacher(logits, options.top_k, ctx);
        values.push_back(tk.values.to(Device::cpu(), ctx));
        indices.push_back(tk.indices.to(Device::cpu(), ctx));
        if (uniform) lses.push_back(tk.lse.reshape({-1, 1}).to(Device::cpu(), ctx));
      } else {
        values.push_back(logits.to(Device::cpu(), ctx));
      }
    }
    auto concat = [&](const std::vector<Tensor>& parts) {
      int64_t rows = 0;
      for (const Tensor& p : parts) rows += p.dim(0);
      Tensor out = Tensor::empty({rows, parts[0].dim(1)}, parts[0].dtype());
      int64_t at = 0;
      for (const Tensor& p : parts) {
        out.slice(0, at, at + p.dim(0)).copy_from(p);
        at += p.dim(0);
      }
      return out;
    };
    std::map<std::string, Tensor> tensors{{"values", concat(values)}};
    if (options.top_k > 0) tensors.emplace("indices", concat(indices));
    if (uniform) tensors.emplace("lse", concat(lses).reshape({-1}));
    char temp[32];
    std::snprintf(temp, sizeof temp, "%.17g", uniform ? options.temperature : 0.0);
    save_safetensors(shard_path(dir, shard), tensors,
                     {{"tail", uniform ? "uniform" : "renormalize"},
                      {"lse_temperature", temp},
                      {"first", std::to_string(first)},
                      {"count", std::to_string(count)},
                      {"total", std::to_string(n)},
                      {"classes", std::to_string(classes)},
                      {"top_k", std::to_string(options.top_k)},
                      {"shard_size", std::to_string(options.shard_size)}});
  }
  teacher.train(was_training);
  return open(dir);
}

TeacherCache TeacherCache::open(const std::string& dir) {
  const char* op = "TeacherCache::open";
  const std::string first_path = shard_path(dir, 0);
  if (!std::filesystem::exists(first_path)) {
    ::frugal::detail::fail(ErrorCode::kIoError, op, "no teacher cache in ", dir, " (missing ",
                           first_path, ")");
  }
  TeacherCache c;
  std::vector<SafetensorsFile> shards;
  shards.push_back(load_safetensors(first_path));
  c.size_ = meta_int(shards[0], "total", first_path);
  c.classes_ = meta_int(shards[0], "classes", first_path);
  c.top_k_ = meta_int(shards[0], "top_k", first_path);
  const int64_t shard_size = meta_int(shards[0], "shard_size", first_path);
  {
    // Caches written before the uniform tail existed have no "tail": renormalised.
    const auto it = shards[0].metadata.find("tail");
    const bool uniform = it != shards[0].metadata.end() && it->second == "uniform";
    if (uniform) {
      const auto t = shards[0].metadata.find("lse_temperature");
      // Missing or not a number (strtod stops early) reads as 0: refused below.
      if (t != shards[0].metadata.end() && !t->second.empty()) {
        char* end = nullptr;
        const double v = std::strtod(t->second.c_str(), &end);
        c.temperature_ = *end == '\0' ? v : 0.0;
      }
      if (!(c.temperature_ > 0.0) || c.top_k_ <= 0) {
        ::frugal::detail::fail(ErrorCode::kIoError, op, first_path,
                               ": a uniform-tail cache needs top_k > 0 and lse_temperature > 0");
      }
      c.tail_ = distill::TopKTail::kUniform;
    }
  }
  const int64_t num_shards = (c.size_ + shard_size - 1) / shard_size;
  for (int64_t s = 1; s < num_shards; ++s) shards.push_back(load_safetensors(shard_path(dir, s)));
  const int64_t width = c.top_k_ > 0 ? c.top_k_ : c.classes_;
  c.values_ = Tensor::empty({c.size_, width}, DType::kF32);
  if (c.top_k_ > 0) c.indices_ = Tensor::empty({c.size_, width}, DType::kI64);
  const bool uniform = c.tail_ == distill::TopKTail::kUniform;
  if (uniform) c.lse_ = Tensor::empty({c.size_}, DType::kF32);
  for (int64_t s = 0; s < num_shards; ++s) {
    const std::string path = shard_path(dir, s);
    const SafetensorsFile& f = shards[static_cast<std::size_t>(s)];
    const int64_t first = meta_int(f, "first", path), count = meta_int(f, "count", path);
    auto get = [&](const char* name, DType dt, Shape shape) {
      const auto it = f.tensors.find(name);
      if (it == f.tensors.end() || it->second.dtype() != dt || !(it->second.shape() == shape) ||
          first != s * shard_size) {
        ::frugal::detail::fail(ErrorCode::kIoError, op, path, ": tensor '", name,
                               "' missing or not ", shape, " ", dtype_name(dt));
      }
      return it->second;
    };
    c.values_.slice(0, first, first + count).copy_from(get("values", DType::kF32, {count, width}));
    if (c.top_k_ > 0) {
      c.indices_.slice(0, first, first + count)
          .copy_from(get("indices", DType::kI64, {count, width}));
    }
    if (uniform) c.lse_.slice(0, first, first + count).copy_from(get("lse", DType::kF32, {count}));
  }
  return c;
}

Tensor TeacherCache::logits(std::span<const int64_t> indices, Device device,
                            const ExecContext& ctx) const {
  FRUGAL_REQUIRE(top_k_ == 0, "TeacherCache::logits", "this cache holds top-", top_k_,
                 " logits; use topk()");
  return take_rows(values_, indices, ctx).to(device, ctx);
}

distill::TopKLogits TeacherCache::topk(std::span<const int64_t> indices, Device device,
                                       const ExecContext& ctx) const {
  FRUGAL_REQUIRE(top_k_ > 0, "TeacherCache::topk", "this cache holds dense logits; use logits()");
  distill::TopKLogits r;
  r.values = take_rows(values_, indices, ctx).to(device, ctx);
  r.indices = take_rows(indices_, indices, ctx).to(device, ctx);
  if (tail_ == distill::TopKTail::kUniform) {
    r.tail = tail_;
    r.lse = take_rows(lse_.reshape({-1, 1}), indices, ctx).reshape({-1}).to(device, ctx);
    r.lse_temperature = temperature_;
  }
  return r;
}

// ---- Distiller -----------------------------------------------------------------------------

Distiller::Distiller(std::shared_ptr<Module> student, std::shared_ptr<Module> teacher,
                     Optimizer& optimizer, const DistillerOptions& options)
    : student_(std::move(student)),
      teacher_(std::move(teacher)),
      optimizer_(optimizer),
      options_(options) {
  const char* op = "Distiller";
  FRUGAL_REQUIRE(student_ != nullptr, op, "the student is null");
  check_kd_options(options, op);
  const bool hint = options.hint_student_layer >= 0 || options.hint_teacher_layer >= 0;
  if (hint) {
    auto* s = dynamic_cast<Sequential*>(student_.get());
    auto* t = dynamic_cast<Sequential*>(teacher_.get());
    FRUGAL_REQUIRE(s != nullptr && t != nullptr, op,
                   "a feature hint needs a Sequential student and teacher");
    FRUGAL_REQUIRE(options.hint_student_layer >= 0 &&
                       static_cast<std::size_t>(options.hint_student_layer) < s->size() &&
                       options.hint_teacher_layer >= 0 &&
                       static_cast<std::size_t>(options.hint_teacher_layer) < t->size(),
                   op, "hint layers (", options.hint_student_layer, ", ",
                   options.hint_teacher_layer, ") out of range for models of ", s->size(), " and ",
                   t->size(), " layers");
    FRUGAL_REQUIRE(options.hint_weight >= 0.0, op, "hint_weight must be >= 0, got ",
                   options.hint_weight);
  }
}

DistillStepResult Distiller::step(const Batch& batch) {
  const char* op = "Distiller::step";
  const bool hint = options_.hint_student_layer >= 0;
  FRUGAL_REQUIRE(teacher_ != nullptr || (cache_ != nullptr && !hint), op,
                 "no teacher and no cache (a hint always needs the teacher)");
  const Device device = student_->device();
  const Tensor input = batch.input.to(device, ctx_);
  const Tensor labels = batch.target.to(device, ctx_);
  DistillStepResult res;

  // 1. Teacher: cached logits, or a forward pass in eval mode (with the hint layer's output).
  Tensor teacher_logits, teacher_hint;
  distill::TopKLogits teacher_topk;
  if (cache_ != nullptr && !hint) {
    if (cache_->top_k() > 0) {
      FRUGAL_REQUIRE(cache_->tail() != distill::TopKTail::kUniform ||
                         cache_->temperature() == options_.temperature,
                     op, "the teacher cache holds log-sum-exps at T = ", cache_->temperature(),
                     " (uniform tail) but the Distiller runs at T = ", options_.temperature);
      teacher_topk = cache_->topk(batch.indices, device, ctx_);
    } else {
      teacher_logits = cache_->logits(batch.indices, device, ctx_);
    }
  } else {
    if (hint) {
      const bool was_training = teacher_->is_training();
      teacher_->eval();
      {
        std::optional<amp::AmpContext> guard;
        enter_teacher_autocast(guard, options_.teacher_precision);
        auto& t = static_cast<Sequential&>(*teacher_);
        Tensor x = input.to(teacher_->device(), ctx_);
        for (std::size_t i = 0; i < t.size(); ++i) {
          x = t[i].forward(x);
          if (static_cast<int>(i) == options_.hint_teacher_layer) teacher_hint = x.to(device, ctx_);
        }
        teacher_logits = x.to(device, ctx_);
      }
      teacher_->train(was_training);
    } else {
      teacher_logits =
          teacher_forward(*teacher_, input, options_.teacher_precision, ctx_).to(device, ctx_);
    }
  }

  // 2. Student forward.
  optimizer_.zero_grad(ctx_);
  if (options_.adapter) options_.adapter->zero_grad(ctx_);
  Tensor student_logits, student_hint;
  if (hint) {
    auto& s = static_cast<Sequential&>(*student_);
    Tensor x = input;
    for (std::size_t i = 0; i < s.size(); ++i) {
      x = s[i].forward(x);
      if (static_cast<int>(i) == options_.hint_student_layer) student_hint = x;
    }
    student_logits = x;
  } else {
    student_logits = student_->forward(input);
  }
  if (teacher_logits.defined() && teacher_logits.dtype() != student_logits.dtype()) {
    teacher_logits = teacher_logits.to(student_logits.dtype(), ctx_);
  }
  if (teacher_topk.values.defined() && teacher_topk.values.dtype() != student_logits.dtype()) {
    teacher_topk.values = teacher_topk.values.to(student_logits.dtype(), ctx_);
    if (teacher_topk.lse.defined())
      teacher_topk.lse = teacher_topk.lse.to(student_logits.dtype(), ctx_);
  }

  // 3. Losses, over rows (N ..., C) for sequence models.
  const Tensor label_rows = student_logits.rank() == 2 ? labels : labels.reshape({-1});
  distill::KdResult kd =
      teacher_topk.values.defined()
          ? distill::kd_loss_topk(as_rows(student_logits), teacher_topk, label_rows,
                                  options_.temperature, options_.alpha, ctx_)
          : distill::kd_loss(as_rows(student_logits), as_rows(teacher_logits), label_rows,
                             options_.temperature, options_.alpha, ctx_);
  if (student_logits.rank() != 2) kd.grad_student = kd.grad_student.reshape(student_logits.shape());
  res.kd = kd.kd;
  res.ce = kd.ce;
  res.loss = kd.loss;
  Tensor hint_grad;
  if (hint) {
    const Tensor adapted =
        options_.adapter ? options_.adapter->forward(student_hint) : student_hint;
    const distill::LossResult h =
        distill::feature_mse(adapted, teacher_hint.to(adapted.dtype(), ctx_), ctx_);
    res.hint = h.loss;
    res.loss += options_.hint_weight * h.loss;
    Tensor g = scale(h.grad_student, options_.hint_weight, ctx_);
    hint_grad = options_.adapter ? options_.adapter->backward(g) : g;
  }

  // 4. Student backward (the hint gradient joins at its layer) and the update.
  if (hint) {
    auto& s = static_cast<Sequential&>(*student_);
    Tensor g = kd.grad_student;
    for (int i = static_cast<int>(s.size()) - 1; i >= 0; --i) {
      if (i == options_.hint_student_layer) g = add(g, hint_grad, ctx_);
      g = s[static_cast<std::size_t>(i)].backward(g);
    }
  } else {
    student_->backward(kd.grad_student);
  }
  optimizer_.step(ctx_);
  return res;
}

// ---- TeacherEnsemble and RandomShift ------------------------------------------------------

TeacherEnsemble::TeacherEnsemble(std::vector<std::shared_ptr<Module>> members)
    : members_(std::move(members)) {
  FRUGAL_REQUIRE(!members_.empty(), "TeacherEnsemble", "needs at least one member");
  for (std::size_t i = 0; i < members_.size(); ++i) {
    FRUGAL_REQUIRE(members_[i] != nullptr, "TeacherEnsemble", "member ", i, " is null");
    register_module(std::to_string(i), members_[i]);
  }
}

Tensor TeacherEnsemble::forward(const Tensor& input) {
  Tensor sum = members_[0]->forward(input);
  for (std::size_t i = 1; i < members_.size(); ++i) {
    const Tensor y = members_[i]->forward(input);
    FRUGAL_REQUIRE(
        y.shape() == sum.shape() && y.dtype() == sum.dtype() && y.device() == sum.device(),
        "TeacherEnsemble", "member ", i, " returned ", dtype_name(y.dtype()), " ", y.shape(),
        " on ", y.device().str(), " but member 0 returned ", dtype_name(sum.dtype()), " ",
        sum.shape(), " on ", sum.device().str());
    sum = add(sum, y, ctx_);
  }
  return members_.size() == 1 ? sum : scale(sum, 1.0 / static_cast<double>(members_.size()), ctx_);
}

Tensor TeacherEnsemble::backward(const Tensor&) {
  ::frugal::detail::fail(ErrorCode::kUnsupported, "TeacherEnsemble",
                         "backward: an ensemble is a teacher only");
}

namespace {

/// out (N, ..., H, W) = x moved by shifts[2 j], shifts[2 j + 1] (rows, columns) per example j,
/// zero fill; sign -1 applies the opposite shifts (the adjoint). Host, contiguous f32 / f64.
Tensor shift_images(const Tensor& x, const std::vector<int32_t>& shifts, int sign) {
  const Device device = x.device();
  Tensor h = x.to(Device::cpu()).contiguous();
  Tensor out = Tensor::zeros(h.shape(), h.dtype());
  const int64_t n = h.dim(0), hh = h.dim(h.rank() - 2), ww = h.dim(h.rank() - 1);
  const int64_t planes = n == 0 ? 0 : h.numel() / (n * hh * ww);
  auto run = [&]<class T>() {
    const T* src = h.data<T>();
    T* dst = out.data<T>();
    for (int64_t j = 0; j < n; ++j) {
      const int64_t dy = sign * shifts[static_cast<std::size_t>(2 * j)];
      const int64_t dx = sign * shifts[static_cast<std::size_t>(2 * j + 1)];
      for (int64_t p = 0; p < planes; ++p) {
        const int64_t base = (j * planes + p) * hh * ww;
        for (int64_t y = std::max<int64_t>(0, dy); y < std::min(hh, hh + dy); ++y) {
          for (int64_t xx = std::max<int64_t>(0, dx); xx < std::min(ww, ww + dx); ++xx) {
            dst[base + y * ww + xx] = src[base + (y - dy) * ww + (xx - dx)];
          }
        }
      }
    }
  };
  if (h.dtype() == DType::kF64) {
    run.template operator()<double>();
  } else {
    run.template operator()<float>();
  }
  return device == Device::cpu() ? out : out.to(device);
}

}  // namespace

RandomShift::RandomShift(std::shared_ptr<Module> inner, int64_t max_shift, uint64_t seed)
    : inner_(std::move(inner)), max_shift_(max_shift), seed_(seed) {
  FRUGAL_REQUIRE(inner_ != nullptr, "RandomShift", "the model is null");
  FRUGAL_REQUIRE(max_shift_ >= 0, "RandomShift", "max_shift must be >= 0, got ", max_shift_);
  register_module("inner", inner_);
}

Tensor RandomShift::forward(const Tensor& input) {
  if (!is_training() || max_shift_ == 0) return inner_->forward(input);
  FRUGAL_REQUIRE(input.rank() >= 3, "RandomShift", "input must be (N, ..., H, W), got shape ",
                 input.shape());
  FRUGAL_REQUIRE(input.dtype() == DType::kF32 || input.dtype() == DType::kF64, "RandomShift",
                 "input has dtype ", dtype_name(input.dtype()), "; expected f32 or f64");
  const int64_t n = input.dim(0);
  const auto span = static_cast<uint32_t>(2 * max_shift_ + 1);
  const Uint2 key = Philox4x32::key_of(seed_);
  last_shifts_.assign(static_cast<std::size_t>(2 * n), 0);
  for (int64_t j = 0; j < n; ++j, ++drawn_) {
    const Uint4 r = Philox4x32::generate(philox_counter(drawn_, 0), key);
    last_shifts_[static_cast<std::size_t>(2 * j)] =
        static_cast<int32_t>(r.x % span) - static_cast<int32_t>(max_shift_);
    last_shifts_[static_cast<std::size_t>(2 * j + 1)] =
        static_cast<int32_t>(r.y % span) - static_cast<int32_t>(max_shift_);
  }
  return inner_->forward(shift_images(input, last_shifts_, 1));
}

Tensor RandomShift::backward(const Tensor& grad_output) {
  const Tensor g = inner_->backward(grad_output);
  if (!is_training() || max_shift_ == 0 || !g.defined() || g.rank() < 3) return g;
  return shift_images(g, last_shifts_, -1);
}

// ---- Distillation inside the training loops ------------------------------------------------

namespace detail {

LoopDistillation::LoopDistillation(std::shared_ptr<Module> teacher, const DistillerOptions& options,
                                   std::function<float()> loss_scale, const char* op)
    : teacher_(std::move(teacher)), options_(options), loss_scale_(std::move(loss_scale)), op_(op) {
  FRUGAL_REQUIRE(teacher_ != nullptr, op, "the teacher is null");
  check_kd_options(options, op);
}

void LoopDistillation::run_teacher(const Tensor& input, Device device, DType dtype) {
  Tensor t = teacher_forward(*teacher_, input, options_.teacher_precision).to(device);
  teacher_logits_ = t.dtype() == dtype ? t : t.to(dtype);
}

Tensor LoopDistillation::run_teacher_hint(const Tensor& input, Device device, DType dtype) {
  auto& t = static_cast<Sequential&>(*teacher_);
  const bool was_training = t.is_training();
  t.eval();
  Tensor hint, x = input.to(t.device());
  {
    std::optional<amp::AmpContext> guard;
    enter_teacher_autocast(guard, options_.teacher_precision);
    for (std::size_t i = 0; i < t.size(); ++i) {
      x = t[i].forward(x);
      if (static_cast<int>(i) == options_.hint_teacher_layer) hint = x;
    }
  }
  t.train(was_training);
  x = x.to(device);
  teacher_logits_ = x.dtype() == dtype ? x : x.to(dtype);
  hint = hint.to(device);
  return hint.dtype() == dtype ? hint : hint.to(dtype);
}

double LoopDistillation::loss_scale() const {
  return loss_scale_ ? static_cast<double>(loss_scale_()) : 1.0;
}

Tensor LoopDistillation::blend(const Tensor& student_logits, const Tensor& grad_ce) {
  FRUGAL_REQUIRE(teacher_logits_.defined() && student_logits.defined(), op_,
                 "backward without a training forward before it");
  FRUGAL_REQUIRE(grad_ce.shape() == student_logits.shape(), op_, "gradient of shape ",
                 grad_ce.shape(), " for logits of shape ", student_logits.shape());
  FRUGAL_REQUIRE(teacher_logits_.shape() == student_logits.shape(), op_, "teacher logits of shape ",
                 teacher_logits_.shape(), " for student logits of shape ", student_logits.shape());
  const distill::KdResult kd =
      distill::kd_loss(as_rows(student_logits), as_rows(teacher_logits_), options_.temperature);
  teacher_logits_ = Tensor();
  last_kd_ = kd.kd;
  const double s = loss_scale();
  const double a = options_.alpha;
  // alpha = 0 passes the loop's gradient through unchanged (bit for bit).
  if (a == 0.0) return grad_ce;
  Tensor g = scale(kd.grad_student, a * s).reshape(student_logits.shape());
  return a == 1.0 ? g : add(g, scale(grad_ce, 1.0 - a));
}

}  // namespace detail

DistilledStudent::DistilledStudent(std::shared_ptr<Module> student, std::shared_ptr<Module> teacher,
                                   const DistillerOptions& options,
                                   std::function<float()> loss_scale)
    : student_(std::move(student)),
      kd_(std::move(teacher), options, std::move(loss_scale), "DistilledStudent") {
  const char* op = "DistilledStudent";
  FRUGAL_REQUIRE(student_ != nullptr, op, "the student is null");
  register_module("student", student_);
  const DistillerOptions& o = kd_.options();
  if (o.hint_student_layer >= 0 || o.hint_teacher_layer >= 0) {
    auto* s = dynamic_cast<Sequential*>(student_.get());
    auto* t = dynamic_cast<Sequential*>(&kd_.teacher());
    FRUGAL_REQUIRE(s != nullptr && t != nullptr, op,
                   "a feature hint needs a Sequential student and teacher");
    FRUGAL_REQUIRE(
        o.hint_student_layer >= 0 && static_cast<std::size_t>(o.hint_student_layer) < s->size() &&
            o.hint_teacher_layer >= 0 && static_cast<std::size_t>(o.hint_teacher_layer) < t->size(),
        op, "hint layers (", o.hint_student_layer, ", ", o.hint_teacher_layer,
        ") out of range for models of ", s->size(), " and ", t->size(), " layers");
    FRUGAL_REQUIRE(o.hint_weight >= 0.0, op, "hint_weight must be >= 0, got ", o.hint_weight);
    seq_student_ = s;
    if (o.adapter) register_module("adapter", o.adapter);
  }
}

Tensor DistilledStudent::forward(const Tensor& input) {
  if (!is_training()) return student_->forward(input);
  Tensor logits;
  if (seq_student_ != nullptr) {
    Tensor x = input;
    for (std::size_t i = 0; i < seq_student_->size(); ++i) {
      x = (*seq_student_)[i].forward(x);
      if (static_cast<int>(i) == kd_.options().hint_student_layer) student_hint_ = x;
    }
    logits = x;
    teacher_hint_ = kd_.run_teacher_hint(input, logits.device(), logits.dtype());
  } else {
    logits = student_->forward(input);
    kd_.run_teacher(input, logits.device(), logits.dtype());
  }
  student_logits_ = logits;
  return logits;
}

Tensor DistilledStudent::backward(const Tensor& grad_output) {
  Tensor g = kd_.blend(student_logits_, grad_output);
  student_logits_ = Tensor();
  if (seq_student_ == nullptr) return student_->backward(g);
  // The hint: weight * MSE(adapter(student hint), teacher hint), its gradient (times the loop's
  // loss scale) joining the student's backward at the hint layer.
  const DistillerOptions& o = kd_.options();
  const Tensor adapted = o.adapter ? o.adapter->forward(student_hint_) : student_hint_;
  const distill::LossResult h = distill::feature_mse(adapted, teacher_hint_);
  last_hint_ = h.loss;
  Tensor hg = scale(h.grad_student, o.hint_weight * kd_.loss_scale());
  if (o.adapter) hg = o.adapter->backward(hg);
  student_hint_ = teacher_hint_ = Tensor();
  for (int i = static_cast<int>(seq_student_->size()) - 1; i >= 0; --i) {
    if (i == o.hint_student_layer) g = add(g, hg);
    g = (*seq_student_)[static_cast<std::size_t>(i)].backward(g);
  }
  return g;
}

DistilledGpt::DistilledGpt(const GPTConfig& student_config, std::shared_ptr<Module> teacher,
                           const DistillerOptions& options, std::function<float()> loss_scale)
    : GPT(student_config), kd_(std::move(teacher), options, std::move(loss_scale), "DistilledGpt") {
  FRUGAL_REQUIRE(options.hint_student_layer < 0 && options.hint_teacher_layer < 0, "DistilledGpt",
                 "feature hints need Sequential models (DistilledStudent or Distiller::step)");
}

Tensor DistilledGpt::forward(const Tensor& tokens) {
  if (!is_training()) return GPT::forward(tokens);
  Tensor logits = GPT::forward(tokens);
  kd_.run_teacher(tokens, logits.device(), logits.dtype());
  student_logits_ = logits;
  return logits;
}

Tensor DistilledGpt::backward(const Tensor& grad_logits) {
  Tensor g = kd_.blend(student_logits_, grad_logits);
  student_logits_ = Tensor();
  return GPT::backward(g);
}

}  // namespace frugal::nn
