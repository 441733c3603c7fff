// nn::LocalSGD: periodic model averaging (one all-reduce of all parameters every H steps).
#include "frugal/nn/local_sgd.hpp"

namespace frugal::nn {

namespace {
constexpr const char* kOp = "LocalSGD";
}

LocalSGD::LocalSGD(Module& model, parallel::Communicator& comm, const LocalSgdOptions& options)
    : model_(model), comm_(comm), options_(options) {
  FRUGAL_REQUIRE(options.period >= 1, kOp, "period must be >= 1, got ", options.period);
  int64_t n = 0;
  DType dtype = DType::kF32;
  bool first = true;
  for (Tensor* t : tensors()) {
    FRUGAL_REQUIRE(t->is_contiguous() && t->device() == comm.device(), kOp,
                   "parameters and buffers must be contiguous on ", comm.device().str());
    FRUGAL_REQUIRE(first || t->dtype() == dtype, kOp, "mixed dtypes ", dtype_name(dtype), " and ",
                   dtype_name(t->dtype()), " (one dtype: f32 or f64)");
    dtype = t->dtype();
    first = false;
    n += t->numel();
  }
  FRUGAL_REQUIRE(dtype == DType::kF32 || dtype == DType::kF64, kOp, "dtype ", dtype_name(dtype),
                 " (f32 or f64)");
  flat_ = Tensor::empty({n}, dtype, comm.device());
  for (Tensor* t : tensors()) comm_.broadcast(t->view(), 0);
}

std::vector<Tensor*> LocalSGD::tensors() {
  std::vector<Tensor*> out;
  for (auto& np : model_.named_parameters()) out.push_back(&np.param->value);
  if (options_.average_buffers) {
    for (auto& nb : model_.named_buffers()) {
      Tensor* t = nb.tensor;
      if (t->defined() && t->numel() > 0 && is_float(t->dtype())) out.push_back(t);
    }
  }
  return out;
}

void LocalSGD::average() {
  const ExecContext& ctx = model_.context();
  int64_t off = 0;
  auto all = tensors();
  for (Tensor* t : all) {
    const int64_t n = t->numel();
    flat_.slice(0, off, off + n).copy_from(t->reshape({n}).cview(), ctx);
    off += n;
  }
  comm_.allreduce(flat_.view(), parallel::ReduceOp::kAvg);
  off = 0;
  for (Tensor* t : all) {
    const int64_t n = t->numel();
    t->reshape({n}).copy_from(flat_.slice(0, off, off + n).cview(), ctx);
    off += n;
  }
  ++averages_;
}

bool LocalSGD::after_step() {
  ++steps_;
  if (steps_ % options_.period != 0) return false;
  average();
  return true;
}

}  // namespace frugal::nn
