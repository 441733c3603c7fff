// NCCL entry points of parallel::NcclComm (declared in src/cu_ops.def).
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "common/check.cuh"
#include "common/check_nccl.cuh"
#include "cu_ops.hpp"
#include "frugal/parallel/communicator.hpp"

namespace frugal::cu {
namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kF32: return ncclFloat32;
    case DType::kF64: return ncclFloat64;
    case DType::kF16: return ncclFloat16;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32: return ncclInt32;
    case DType::kI64: return ncclInt64;
    default: break;
  }
  ::frugal::detail::fail(ErrorCode::kUnsupported, "NcclComm", "dtype ", dtype_name(t));
}

ncclRedOp_t nccl_op(int op) {
  switch (static_cast<parallel::ReduceOp>(op)) {
    case parallel::ReduceOp::kSum: return ncclSum;
    case parallel::ReduceOp::kAvg: return ncclAvg;
    case parallel::ReduceOp::kMax: return ncclMax;
    case parallel::ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

using Clock = std::chrono::steady_clock;

// A nonblocking communicator (ncclConfig_t::blocking = 0) may answer ncclInProgress to any call;
// the next NCCL call on it must wait until ncclCommGetAsyncError reports something else. Returns
// that state (ncclSuccess or an error), or ncclInProgress when `timeout_ms` passed first.
ncclResult_t wait_not_in_progress(ncclComm_t c, ncclResult_t first, int64_t timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  ncclResult_t st = first;
  for (uint32_t i = 0; st == ncclInProgress; ++i) {
    if (Clock::now() > deadline) return ncclInProgress;
    if (i > 100) std::this_thread::sleep_for(std::chrono::microseconds(100));
    const ncclResult_t q = ncclCommGetAsyncError(c, &st);
    if (q != ncclSuccess) return q;
  }
  return st;
}

}  // namespace

void nccl_unique_id(void* id_out) {
  ncclUniqueId id;
  FRUGAL_NCCL_CHECK(ncclGetUniqueId(&id));
  std::memcpy(id_out, &id, sizeof(id));
}

void* nccl_comm_init(const void* id, int nranks, int rank, int device, int64_t timeout_ms,
                     const char* op) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId uid;
  std::memcpy(&uid, id, sizeof(uid));
  // Nonblocking init: ncclCommInitRank would block forever when a peer never joins; this one
  // returns at once (ncclInProgress) and is polled until the deadline, then aborted.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const ncclResult_t started = ncclCommInitRankConfig(&comm, nranks, uid, rank, &config);
  if (started != ncclSuccess && started != ncclInProgress) {
    if (comm) ncclCommAbort(comm);
    FRUGAL_NCCL_CHECK(started);
  }
  const ncclResult_t st = wait_not_in_progress(comm, started, timeout_ms);
  if (st == ncclInProgress) {
    ncclCommAbort(comm);
    ::frugal::detail::fail(ErrorCode::kTimeout, op, "timed out after ", timeout_ms,
                           " ms in ncclCommInitRankConfig (rank ", rank, " of ", nranks,
                           "): a peer did not join; the communicator was aborted");
  }
  if (st != ncclSuccess) {
    ncclCommAbort(comm);
    FRUGAL_NCCL_CHECK(st);
  }
  return comm;
}

void nccl_comm_destroy(void* comm, bool abort, int64_t timeout_ms) {
  if (!comm) return;
  auto c = static_cast<ncclComm_t>(comm);
  if (abort) {
    ncclCommAbort(c);
    return;
  }
  // Nonblocking communicator: finalize (flushes pending work, may answer ncclInProgress), wait
  // for it bounded by the timeout, then free; a finalize that does not finish is aborted.
  const ncclResult_t st = wait_not_in_progress(c, ncclCommFinalize(c), timeout_ms);
  if (st != ncclSuccess) {
    ncclCommAbort(c);
    FRUGAL_NCCL_CHECK(st);
    return;
  }
  FRUGAL_NCCL_CHECK(ncclCommDestroy(c));
}

void nccl_enqueue(void* comm, int kind, const void* send, void* recv, int64_t count, DType dtype,
                  int op, int peer, void* stream, int64_t timeout_ms) {
  auto c = static_cast<ncclComm_t>(comm);
  auto s = static_cast<cudaStream_t>(stream);
  const auto t = nccl_type(dtype);
  const auto n = static_cast<size_t>(count);
  ncclResult_t st = ncclSuccess;
  switch (kind) {
    case 0: st = ncclAllReduce(send, recv, n, t, nccl_op(op), c, s); break;
    case 1: st = ncclReduceScatter(send, recv, n, t, nccl_op(op), c, s); break;
    case 2: st = ncclAllGather(send, recv, n, t, c, s); break;
    case 3: st = ncclBroadcast(send, recv, n, t, peer, c, s); break;
    case 4: st = ncclSend(send, n, t, peer, c, s); break;
    case 5: st = ncclRecv(recv, n, t, peer, c, s); break;
    default: ::frugal::detail::fail(ErrorCode::kInvalidArgument, "NcclComm", "unknown op ", kind);
  }
  // A nonblocking communicator may still be enqueueing (ncclInProgress): the call is accepted
  // once the state leaves ncclInProgress; the completion itself is the Work's event.
  st = wait_not_in_progress(c, st, timeout_ms);
  if (st == ncclInProgress)
    ::frugal::detail::fail(ErrorCode::kTimeout, "NcclComm", "timed out after ", timeout_ms,
                           " ms enqueueing an NCCL operation");
  FRUGAL_NCCL_CHECK(st);
}

void* nccl_record(void* stream) {
  cudaEvent_t e = nullptr;
  FRUGAL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  FRUGAL_CUDA_CHECK(cudaEventRecord(e, static_cast<cudaStream_t>(stream)));
  return e;
}

int nccl_query(void* comm, void* event) {
  ncclResult_t async_err = ncclSuccess;
  FRUGAL_NCCL_CHECK(ncclCommGetAsyncError(static_cast<ncclComm_t>(comm), &async_err));
  if (async_err == ncclInProgress) return 0;  // nonblocking communicator still busy: pending
  FRUGAL_NCCL_CHECK(async_err);
  const cudaError_t st = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (st == cudaSuccess) return 1;
  if (st == cudaErrorNotReady) return 0;
  FRUGAL_CUDA_CHECK(st);
  return 0;
}

void nccl_event_destroy(void* event) {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

}  // namespace frugal::cu
