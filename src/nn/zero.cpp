// nn::ZeroOptimizer: ZeRO stage 1 (reduce-scatter gradients, shard update, all-gather params).
#include "frugal/nn/zero.hpp"

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

}  // namespace frugal::nn
