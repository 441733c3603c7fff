// The parallel rows of the training table: the baselines' recipes trained data-parallel by 2
// workers (ThreadComm threads by default; under `mpirun -np K` the same binary uses MpiComm
// through Communicator::from_environment()), the global batch split across the workers. Variants:
// synchronous DP, bounded staleness, local SGD, gradient compressors, ZeRO-1.
#include "frugal/parallel.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "frugal/nn.hpp"
#include "rows.hpp"

namespace cost_report {
namespace {

namespace nn = frugal::nn;
namespace par = frugal::parallel;

/// One data-parallel recipe change.
struct Variant {
  std::string name;          // variant column
  std::string compressor;    // parallel::make_compressor name ("none")
  int staleness = 0;         // DataParallelOptions::staleness
  int64_t local_period = 0;  // > 0: local SGD averaging every H steps instead of DP
  bool zero = false;         // ZeRO-1 optimizer instead of DataParallel
  std::string what;          // description suffix
};

constexpr int kThreadWorkers = 2;

/// Runs fn on every rank: this process's MPI ranks under mpirun, else 2 workers on threads.
/// Returns the backend name and the world size.
std::pair<std::string, int> on_workers(const std::function<void(par::Communicator&)>& fn) {
  auto world = par::Communicator::from_environment();
  if (world->size() > 1) {
    fn(*world);
    return {world->backend(), world->size()};
  }
  par::run_workers(kThreadWorkers, fn);
  return {"thread", kThreadWorkers};
}

/// Threads of each worker's ops: the report's count shared out among the workers of this machine
/// (the thread workers of this process, or the MPI processes on this node).
int worker_threads(const Env& env, const par::Communicator& comm) {
  int sharing = comm.backend() == "thread" ? comm.size() : 1;
  if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"); local && sharing == 1)
    sharing = std::max(1, std::atoi(local));
  const int all =
      env.opt.threads > 0 ? env.opt.threads : static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, all / sharing);
}

/// The communication of one worker, wired into the training loop's hooks.
struct Sync {
  std::unique_ptr<nn::DataParallel> dp;
  std::unique_ptr<nn::LocalSGD> local;
};

std::unique_ptr<nn::Optimizer> make_optimizer(nn::Module& model, par::Communicator& comm,
                                              const Variant& v, const nn::AdamWOptions& adamw) {
  if (v.zero)
    return std::make_unique<nn::ZeroOptimizer>(
        model, comm, [&](const auto& shard) { return std::make_unique<nn::AdamW>(shard, adamw); });
  return std::make_unique<nn::AdamW>(model.named_parameters(), adamw);
}

// Wires the variant's synchronisation into `o.hooks`; returns what keeps it alive.
std::shared_ptr<Sync> wire(nn::Module& model, par::Communicator& comm, const Variant& v,
                           nn::TrainOptions& o) {
  auto s = std::make_shared<Sync>();
  if (v.zero) return s;  // the optimizer communicates
  if (v.local_period > 0) {
    s->local = std::make_unique<nn::LocalSGD>(model, comm, nn::LocalSgdOptions{v.local_period});
    nn::LocalSGD* l = s->local.get();
    o.hooks.after_step = [l](int64_t) { l->after_step(); };
    return s;
  }
  nn::DataParallelOptions d;
  d.compressor = par::make_compressor(v.compressor);
  d.staleness = v.staleness;
  s->dp = std::make_unique<nn::DataParallel>(model, comm, d);
  nn::DataParallel* dp = s->dp.get();
  o.hooks.before_step = [dp](int64_t) { return dp->finish_gradient_sync(); };
  return s;
}

// Bytes one rank hands to collectives per step, averaged over the run.
double bytes_per_step(const Sync& s, const Variant& v, int64_t param_bytes) {
  if (v.zero) return static_cast<double>(param_bytes);  // reduce-scatter in + all-gather out
  if (s.local) return static_cast<double>(s.local->bytes_per_average()) / v.local_period;
  return static_cast<double>(s.dp->stats().sent_bytes_per_step);
}

void add_parallel_fields(Record& rec, nn::TrainResult r, double bytes, int workers,
                         int64_t state_bytes) {
  // Rank 0 saw 1/K of the samples: the run's throughput is K times its own.
  r.samples *= workers;
  r.samples_per_second *= workers;
  r.tokens_per_second *= workers;
  add_training_cost(rec, r);
  rec.add("bytes_per_step_kib", "sent/step", "KiB", bytes / 1024, 1)
      .add_json("bytes_per_step", "B", bytes)
      .add_json("workers", "", workers)
      .add_json("skipped_steps", "", static_cast<double>(r.skipped_steps));
  if (state_bytes > 0)
    rec.add("optim_state_kib", "optim state/rank", "KiB", static_cast<double>(state_bytes) / 1024,
            1);
}

std::string describe(const Variant& v, const std::string& backend, int workers) {
  return std::to_string(workers) + " workers (" + backend + "), global batch split; " + v.what;
}

Row digits_row(bool cnn, const Variant& v) {
  const std::string workload = cnn ? "cnn_digits" : "mlp_digits";
  return {"training", workload, [=](const Env& env) {
            const nn::Recipe recipe = cnn ? nn::cnn_digits_recipe() : nn::mlp_digits_recipe();
            nn::TrainTestData data = digits_split();
            if (cnn) {
              data.train.inputs = data.train.inputs.reshape({-1, 1, 8, 8});
              data.test.inputs = data.test.inputs.reshape({-1, 1, 8, 8});
            }
            std::mutex mu;
            nn::TrainResult result;
            double bytes = 0;
            int64_t state = 0;
            auto [backend, workers] = on_workers([&](par::Communicator& comm) {
              const int k = comm.size();
              std::shared_ptr<nn::Module> model;
              if (cnn) {
                nn::DigitsCnnConfig cfg;
                cfg.seed = env.opt.seed;
                model = nn::make_digits_cnn(cfg);
              } else {
                model = nn::make_mlp({64, 256, 128, 10}, env.opt.seed);
              }
              auto opt = make_optimizer(*model, comm, v, recipe.adamw);
              nn::TrainOptions o = row_options(recipe.train, env, workload + " " + v.name);
              o.epochs = cnn ? env.opt.cnn_epochs : env.opt.mlp_epochs;
              o.batch_size = std::max<int64_t>(1, o.batch_size / k);
              o.num_threads = worker_threads(env, comm);
              o.progress = o.progress && comm.rank() == 0;
              auto sync = wire(*model, comm, v, o);
              const nn::TrainResult r = nn::train_classifier(
                  *model, *opt, nn::shard_rows(data.train, comm.rank(), k), data.test, o);
              // Threads: rank 0 reports. Processes (MPI): each reports its own (equal) replica.
              if (comm.rank() == 0 || comm.backend() != "thread") {
                std::lock_guard lock(mu);
                result = r;
                bytes = bytes_per_step(*sync, v, r.parameter_bytes);
                if (auto* z = dynamic_cast<nn::ZeroOptimizer*>(opt.get()))
                  state = z->state_bytes();
                else {
                  for (auto& [n, t] : opt->state().tensors) state += t.nbytes();
                }
              }
            });
            Record rec{"training", workload, v.name, describe(v, backend, workers), {}};
            rec.add("test_accuracy", "test acc", "%", 100 * result.test_accuracy, 2)
                .add_json("train_accuracy", "%", 100 * result.train_accuracy)
                .add_json("epochs", "", static_cast<double>(result.epochs));
            add_parallel_fields(rec, result, bytes, workers, state);
            return rec;
          }};
}

Row gpt_row(const Variant& v) {
  return {"training", "char_gpt", [=](const Env& env) {
            const auto corpus =
                std::make_shared<const nn::CharCorpus>(nn::CharCorpus::from_file(env.opt.text));
            const nn::Recipe recipe = nn::char_gpt_recipe();
            std::mutex mu;
            nn::TrainResult result;
            double bytes = 0;
            auto [backend, workers] = on_workers([&](par::Communicator& comm) {
              const int k = comm.size();
              const nn::GPTConfig cfg =
                  nn::char_gpt_config(corpus->vocab_size(), nn::CharGptSize::kSmall, env.opt.seed);
              nn::GPT model(cfg);
              nn::AdamW opt(model.named_parameters(), recipe.adamw);
              nn::TrainOptions o = row_options(recipe.train, env, "char_gpt " + v.name);
              o.steps = env.opt.gpt_steps;
              o.warmup_steps = std::min(o.warmup_steps, o.steps / 10);
              o.batch_size = std::max<int64_t>(1, o.batch_size / k);
              o.seed = env.opt.seed + 1000003ull * comm.rank();  // each rank its own windows
              o.num_threads = worker_threads(env, comm);
              o.progress = o.progress && comm.rank() == 0;
              auto sync = wire(model, comm, v, o);
              const nn::TrainResult r = nn::train_char_gpt(model, opt, *corpus, o);
              // Threads: rank 0 reports. Processes (MPI): each reports its own (equal) replica.
              if (comm.rank() == 0 || comm.backend() != "thread") {
                std::lock_guard lock(mu);
                result = r;
                bytes = bytes_per_step(*sync, v, r.parameter_bytes);
              }
            });
            Record rec{"training", "char_gpt", v.name, describe(v, backend, workers), {}};
            rec.add("val_loss", "val loss", "nats/char", result.val_loss, 3)
                .add_json("train_loss", "nats/char", result.final_train_loss)
                .add_json("tokens_per_sec", "tokens/s", result.tokens_per_second * workers);
            add_parallel_fields(rec, result, bytes, workers, 0);
            return rec;
          }};
}

}  // namespace

std::vector<Row> parallel_rows() {
  const Variant sync{"dp2", "none", 0,
                     0,     false,  "synchronous DP, buckets overlapped with backward"};
  const std::vector<Variant> mlp = {
      sync,
      {"dp2_stale1", "none", 1, 0, false, "bounded staleness 1 (gradients applied 1 step late)"},
      {"dp2_local8", "none", 0, 8, false, "local SGD, replicas averaged every 8 steps"},
      {"dp2_fp16", "fp16", 0, 0, false, "fp16 gradients, error feedback"},
      {"dp2_int8", "int8", 0, 0, false, "int8 gradients (per-bucket scale), error feedback"},
      {"dp2_topk1%", "topk0.01", 0, 0, false, "top-1% gradients, error feedback"},
      {"dp2_powersgd4", "powersgd4", 0, 0, false, "PowerSGD rank 4, error feedback"},
      {"dp2_zero1", "none", 0, 0, true, "ZeRO-1: AdamW state sharded across ranks"},
  };
  std::vector<Row> rows;
  for (const Variant& v : mlp) rows.push_back(digits_row(false, v));
  for (const Variant& v : {sync, mlp[2], mlp[6]}) rows.push_back(digits_row(true, v));
  rows.push_back(gpt_row(sync));
  rows.push_back(gpt_row(mlp[6]));
  return rows;
}

}  // namespace cost_report
