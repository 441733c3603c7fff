// nn::DataParallel: rank-0 broadcast, gradient buckets in reverse registration order, bucket
// all-reduce started from the grad-ready hook, unpack before the optimizer step.
#include "frugal/nn/data_parallel.hpp"

#include <algorithm>
#include <cstdio>

namespace frugal::nn {

namespace {
constexpr const char* kOp = "DataParallel";
}

DataParallel::DataParallel(Module& model, parallel::Communicator& comm,
                           const DataParallelOptions& options)
    : model_(model), comm_(comm), options_(options) {
  FRUGAL_REQUIRE(options.bucket_bytes > 0, kOp, "bucket_bytes must be > 0, got ",
                 options.bucket_bytes);
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
    model_.set_grad_ready_hook([this](const std::string&, Parameter& p) { on_grad_ready(p); });
  }
}

DataParallel::~DataParallel() {
  model_.set_grad_ready_hook(nullptr);
  // Buckets in flight reference our buffers: let them finish (destructors never throw).
  for (auto& b : buckets_) {
    if (!b.work) continue;
    try {
      b.work->wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[DataParallel] pending all-reduce failed at destruction: %s\n",
                   e.what());
    }
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
  b.flat.slice(0, b.offsets[i], b.offsets[i] + n).copy_from(p->grad.reshape({n}).cview(),
                                                            model_.context());
}

void DataParallel::launch(Bucket& b) {
  b.work = comm_.allreduce_async(b.flat.view(), options_.average ? parallel::ReduceOp::kAvg
                                                                  : parallel::ReduceOp::kSum);
}

void DataParallel::on_grad_ready(Parameter& p) {
  if (!sync_enabled_) return;
  auto it = where_.find(&p);
  if (it == where_.end()) return;  // frozen, or not ours
  auto [bi, i] = it->second;
  Bucket& b = buckets_[bi];
  if (packed_[bi][i] || b.work) return;  // reported twice in one step: finish handles it
  pack(b, i);
  packed_[bi][i] = true;
  if (--b.pending == 0) {
    launch(b);
    ++hook_launches_;
  }
}

void DataParallel::finish_gradient_sync() {
  if (!sync_enabled_) return;
  stats_.launched_in_backward = hook_launches_;
  hook_launches_ = 0;
  // Buckets the hook did not complete start now, in bucket order (the same on every rank).
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    if (b.work) continue;
    for (size_t i = 0; i < b.params.size(); ++i)
      if (!packed_[bi][i]) pack(b, i);
    launch(b);
  }
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    auto work = std::move(b.work);
    b.work = nullptr;
    b.pending = static_cast<int64_t>(b.params.size());
    std::fill(packed_[bi].begin(), packed_[bi].end(), false);
    work->wait();
    for (size_t i = 0; i < b.params.size(); ++i) {
      Parameter* p = b.params[i];
      const int64_t n = p->grad.numel();
      p->grad.reshape({n}).copy_from(b.flat.slice(0, b.offsets[i], b.offsets[i] + n).cview(),
                                     model_.context());
    }
  }
  ++stats_.steps;
  if (options_.debug_check) check_parameters_in_sync();
}

void DataParallel::check_parameters_in_sync() {
  // Two order-dependent sums in double: a replica that differs in any element almost surely
  // differs in one of them; equal replicas give bit-identical sums (same order on every rank).
  double s1 = 0, s2 = 0;
  int64_t k = 0;
  for (auto& np : model_.named_parameters()) {
    auto v = np.param->value.to_vector<double>();
    for (double x : v) {
      s1 += x;
      s2 += x * static_cast<double>((k++ % 1021) + 1);
    }
  }
  Tensor hi = Tensor::from_vector(std::vector<double>{s1, s2}, {2}).to(comm_.device());
  Tensor lo = hi.clone();
  comm_.allreduce(hi.view(), parallel::ReduceOp::kMax);
  comm_.allreduce(lo.view(), parallel::ReduceOp::kMin);
  auto h = hi.to_vector<double>(), l = lo.to_vector<double>();
  if (h != l)
    detail::fail(ErrorCode::kCommError, kOp, "parameters differ across ranks (checksums ",
                 l[0], " .. ", h[0], ", ", l[1], " .. ", h[1], ") on rank ", comm_.rank(),
                 " after step ", stats_.steps);
}

}  // namespace frugal::nn
