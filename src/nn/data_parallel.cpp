// nn::DataParallel: rank-0 broadcast, gradient buckets in reverse registration order, bucket
// all-reduce started from the grad-ready hook, unpack before the optimizer step.
#include "frugal/nn/data_parallel.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "frugal/nn/zero.hpp"

namespace frugal::nn {

namespace {
constexpr const char* kOp = "DataParallel";
}

DataParallel::DataParallel(Module& model, parallel::Communicator& comm,
                           const DataParallelOptions& options)
    : model_(model), comm_(comm), options_(options) {
  FRUGAL_REQUIRE(options.bucket_bytes > 0, kOp, "bucket_bytes must be > 0, got ",
                 options.bucket_bytes);
  FRUGAL_REQUIRE(options.staleness >= 0, kOp, "staleness must be >= 0, got ", options.staleness);
  FRUGAL_REQUIRE(!(options.compressor && options.staleness > 0), kOp,
                 "a compressor cannot be combined with staleness ", options.staleness);
  FRUGAL_REQUIRE(!options.compressor || options.average, kOp,
                 "a compressor averages: average must be true");
  auto named = model_.named_parameters();
  std::vector<Parameter*> params;
  for (auto& np : named) {
    if (!np.param->trainable) continue;
    const Tensor& v = np.param->value;
    FRUGAL_REQUIRE(v.defined() && np.param->grad.defined(), kOp, "parameter ", np.name,
                   " has no value or gradient");
    FRUGAL_REQUIRE(parallel::comm_supports(v.dtype()) && is_float(v.dtype()), kOp, "parameter ",
                   np.name, " has dtype ", dtype_name(v.dtype()), " (f32, f64, f16, bf16)");
    FRUGAL_REQUIRE(v.device() == comm.device(), kOp, "parameter ", np.name, " is on ",
                   v.device().str(), " but the communicator uses ", comm.device().str());
    FRUGAL_REQUIRE(np.param->grad.is_contiguous(), kOp, "gradient of ", np.name,
                   " must be contiguous");
    FRUGAL_REQUIRE(!options.compressor || (v.dtype() == DType::kF32 && v.device().is_cpu()), kOp,
                   "compressor ", options.compressor->name(), " needs f32 CPU parameters; ",
                   np.name, " is ", dtype_name(v.dtype()), " on ", v.device().str());
    params.push_back(np.param);
  }
  // Reverse registration order: backward reports the last layer's gradients first.
  std::reverse(params.begin(), params.end());
  for (Parameter* p : params) {
    const int64_t nbytes = p->grad.nbytes();
    const bool fits = !buckets_.empty() && buckets_.back().flat.dtype() == p->grad.dtype() &&
                      buckets_.back().flat.device() == p->grad.device() &&
                      buckets_.back().flat.nbytes() + nbytes <= options.bucket_bytes;
    if (!fits) {
      buckets_.emplace_back();
      buckets_.back().flat = Tensor::empty({0}, p->grad.dtype(), p->grad.device());
    }
    Bucket& b = buckets_.back();
    const int64_t off = b.flat.numel();
    where_[p] = {buckets_.size() - 1, b.params.size()};
    b.params.push_back(p);
    b.offsets.push_back(off);
    b.layout.offsets.push_back(off);
    b.layout.shapes.push_back(p->grad.shape());
    b.flat = Tensor::empty({off + p->grad.numel()}, p->grad.dtype(), p->grad.device());
  }
  packed_.resize(buckets_.size());
  for (size_t i = 0; i < buckets_.size(); ++i) {
    buckets_[i].pending = static_cast<int64_t>(buckets_[i].params.size());
    packed_[i].assign(buckets_[i].params.size(), false);
    stats_.bytes_per_step += buckets_[i].flat.nbytes();
  }
  stats_.buckets = static_cast<int64_t>(buckets_.size());

  broadcast_parameters(0);
  if (options_.overlap) {
    // On every module of the tree: a container (Sequential, a GPT block) reports a child's
    // gradients when the child's backward is done, so the hooks of inner modules report
    // layers inside a block as soon as they are final (a parameter reported again by an outer
    // module is ignored).
    std::vector<Module*> stack{&model_};
    while (!stack.empty()) {
      Module* m = stack.back();
      stack.pop_back();
      m->set_grad_ready_hook([this](const std::string&, Parameter& p) { on_grad_ready(p); });
      hooked_.push_back(m);
      for (auto& [name, child] : m->children())
        if (child) stack.push_back(child.get());
    }
  }
}

DataParallel::~DataParallel() {
  for (Module* m : hooked_) m->set_grad_ready_hook(nullptr);
  // Buckets in flight reference our buffers: let them finish (destructors never throw).
  auto drain = [](const std::shared_ptr<parallel::Work>& w) {
    if (!w) return;
    try {
      w->wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[DataParallel] pending all-reduce failed at destruction: %s\n",
                   e.what());
    }
  };
  for (auto& b : buckets_) {
    drain(b.work);
    for (auto& f : b.queue) drain(f.work);
  }
}

void DataParallel::broadcast_parameters(int root) {
  for (auto& np : model_.named_parameters()) {
    Tensor& v = np.param->value;
    FRUGAL_REQUIRE(v.is_contiguous(), kOp, "parameter ", np.name, " must be contiguous");
    comm_.broadcast(v.view(), root);
  }
  for (auto& nb : model_.named_buffers()) {
    Tensor& t = *nb.tensor;
    if (!t.defined() || t.numel() == 0 || !parallel::comm_supports(t.dtype())) continue;
    FRUGAL_REQUIRE(t.is_contiguous(), kOp, "buffer ", nb.name, " must be contiguous");
    comm_.broadcast(t.view(), root);
  }
}

void DataParallel::pack(Bucket& b, size_t i) {
  Parameter* p = b.params[i];
  const int64_t n = p->grad.numel();
  b.flat.slice(0, b.offsets[i], b.offsets[i] + n)
      .copy_from(p->grad.reshape({n}).cview(), model_.context());
}

void DataParallel::launch(size_t bi) {
  Bucket& b = buckets_[bi];
  if (options_.compressor) {
    b.work = options_.compressor->start(static_cast<int64_t>(bi), b.layout, b.flat.view(), comm_);
    return;
  }
  b.work = comm_.allreduce_async(
      b.flat.view(), options_.average ? parallel::ReduceOp::kAvg : parallel::ReduceOp::kSum);
  if (options_.staleness > 0) {
    // The step's buffer travels with its operation; the next step packs into a fresh one.
    b.queue.push_back({b.flat, std::move(b.work)});
    b.work = nullptr;
    if (!b.spare.empty()) {
      b.flat = std::move(b.spare.back());
      b.spare.pop_back();
    } else {
      b.flat = Tensor::empty(b.flat.shape(), b.flat.dtype(), b.flat.device());
    }
  }
}

void DataParallel::unpack(Bucket& b, const Tensor& flat) {
  for (size_t i = 0; i < b.params.size(); ++i) {
    Parameter* p = b.params[i];
    const int64_t n = p->grad.numel();
    p->grad.reshape({n}).copy_from(flat.slice(0, b.offsets[i], b.offsets[i] + n).cview(),
                                   model_.context());
  }
}

void DataParallel::on_grad_ready(Parameter& p) {
  if (!sync_enabled_) return;
  auto it = where_.find(&p);
  if (it == where_.end()) return;  // frozen, or not ours
  auto [bi, i] = it->second;
  Bucket& b = buckets_[bi];
  if (packed_[bi][i] || b.pending == 0) return;  // reported twice in one step: finish handles it
  pack(b, i);
  packed_[bi][i] = true;
  if (--b.pending == 0) {
    launch(bi);
    ++hook_launches_;
  }
}

bool DataParallel::finish_gradient_sync() {
  if (!sync_enabled_) return true;
  const auto t0 = std::chrono::steady_clock::now();
  stats_.launched_in_backward = hook_launches_;
  hook_launches_ = 0;
  for (const Bucket& b : buckets_)
    if (b.work && b.work->is_completed()) stats_.hidden_bytes += b.flat.nbytes();
  // Buckets the hook did not complete start now, in bucket order (the same on every rank).
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    if (b.pending == 0) continue;  // launched from the hook
    for (size_t i = 0; i < b.params.size(); ++i)
      if (!packed_[bi][i]) pack(b, i);
    launch(bi);
  }
  bool ready = true;
  int64_t sent = 0;
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    b.pending = static_cast<int64_t>(b.params.size());
    std::fill(packed_[bi].begin(), packed_[bi].end(), false);
    if (options_.staleness > 0) {
      sent += b.flat.nbytes();
      if (static_cast<int>(b.queue.size()) <= options_.staleness) {
        ready = false;  // no step old enough yet
        continue;
      }
      InFlight oldest = std::move(b.queue.front());
      b.queue.erase(b.queue.begin());
      oldest.work->wait();
      unpack(b, oldest.flat);
      b.spare.push_back(std::move(oldest.flat));
      continue;
    }
    auto work = std::move(b.work);
    b.work = nullptr;
    work->wait();
    if (options_.compressor) {
      options_.compressor->finish(static_cast<int64_t>(bi), b.flat.view(), comm_);
      sent += options_.compressor->sent_bytes(static_cast<int64_t>(bi));
    } else {
      sent += b.flat.nbytes();
    }
    unpack(b, b.flat);
  }
  stats_.sent_bytes_per_step = sent;
  ++stats_.steps;
  stats_.sync_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (options_.debug_check) check_parameters_in_sync();
  return ready;
}

namespace {
// Two order-dependent sums in double: a replica that differs in any element almost surely
// differs in one of them; equal replicas give bit-identical sums (same order on every rank).
void check_in_sync(Module& model, parallel::Communicator& comm, int64_t step) {
  double s1 = 0, s2 = 0;
  int64_t k = 0;
  for (auto& np : model.named_parameters()) {
    auto v = np.param->value.to_vector<double>();
    for (double x : v) {
      s1 += x;
      s2 += x * static_cast<double>((k++ % 1021) + 1);
    }
  }
  Tensor hi = Tensor::from_vector(std::vector<double>{s1, s2}, {2}).to(comm.device());
  Tensor lo = hi.clone();
  comm.allreduce(hi.view(), parallel::ReduceOp::kMax);
  comm.allreduce(lo.view(), parallel::ReduceOp::kMin);
  auto h = hi.to_vector<double>(), l = lo.to_vector<double>();
  if (h != l)
    detail::fail(ErrorCode::kCommError, kOp, "parameters differ across ranks (checksums ", l[0],
                 " .. ", h[0], ", ", l[1], " .. ", h[1], ") on rank ", comm.rank(), " after step ",
                 step);
}
}  // namespace

void DataParallel::check_parameters_in_sync() { check_in_sync(model_, comm_, stats_.steps); }

LabeledData shard_rows(const LabeledData& data, int rank, int world_size) {
  FRUGAL_REQUIRE(world_size > 0 && rank >= 0 && rank < world_size, "shard_rows", "rank ", rank,
                 " outside [0, ", world_size, ")");
  const int64_t n = data.inputs.dim(0);
  std::vector<int64_t> rows;
  for (int64_t i = rank; i < n; i += world_size) rows.push_back(i);
  auto take = [&](const Tensor& t) {
    Shape shape = t.shape();
    shape[0] = static_cast<int64_t>(rows.size());
    Tensor out = Tensor::empty(shape, t.dtype(), t.device());
    for (size_t j = 0; j < rows.size(); ++j)
      out.slice(0, static_cast<int64_t>(j), static_cast<int64_t>(j) + 1)
          .copy_from(t.slice(0, rows[j], rows[j] + 1).cview());
    return out;
  };
  return {take(data.inputs), take(data.labels)};
}

void save_parallel_checkpoint(const std::string& path, parallel::Communicator& comm, Module& model,
                              const Optimizer* optim, const TrainState& state) {
  if (const auto* zero = dynamic_cast<const ZeroOptimizer*>(optim)) {
    // ZeRO-1: each rank holds only its shard of the optimizer state and writes it to its own
    // file, before rank 0 writes the main checkpoint (which records the step the shards must
    // match on resume).
    save_zero_shard(path, *zero);
    comm.barrier();
  }
  if (comm.rank() == 0) save_checkpoint(path, model, optim, state);
  comm.barrier();
}

TrainState load_parallel_checkpoint(const std::string& path, parallel::Communicator& comm,
                                    Module& model, Optimizer* optim) {
  TrainState st = load_checkpoint(path, model, optim);
  if (auto* zero = dynamic_cast<ZeroOptimizer*>(optim)) load_zero_shard(path, *zero);
  check_in_sync(model, comm, st.step);
  return st;
}

}  // namespace frugal::nn
