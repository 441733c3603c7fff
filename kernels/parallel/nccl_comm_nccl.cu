// NCCL entry points of parallel::NcclComm (declared in src/cu_ops.def).
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

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

}  // namespace

void nccl_unique_id(void* id_out) {
  ncclUniqueId id;
  FRUGAL_NCCL_CHECK(ncclGetUniqueId(&id));
  std::memcpy(id_out, &id, sizeof(id));
}

void* nccl_comm_init(const void* id, int nranks, int rank, int device) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId uid;
  std::memcpy(&uid, id, sizeof(uid));
  ncclComm_t comm = nullptr;
  FRUGAL_NCCL_CHECK(ncclCommInitRank(&comm, nranks, uid, rank));
  return comm;
}

void nccl_comm_destroy(void* comm, bool abort) {
  if (!comm) return;
  auto c = static_cast<ncclComm_t>(comm);
  if (abort) ncclCommAbort(c);
  else ncclCommDestroy(c);
}

void nccl_enqueue(void* comm, int kind, const void* send, void* recv, int64_t count, DType dtype,
                  int op, int peer, void* stream) {
  auto c = static_cast<ncclComm_t>(comm);
  auto s = static_cast<cudaStream_t>(stream);
  const auto t = nccl_type(dtype);
  const auto n = static_cast<size_t>(count);
  switch (kind) {
    case 0: FRUGAL_NCCL_CHECK(ncclAllReduce(send, recv, n, t, nccl_op(op), c, s)); break;
    case 1: FRUGAL_NCCL_CHECK(ncclReduceScatter(send, recv, n, t, nccl_op(op), c, s)); break;
    case 2: FRUGAL_NCCL_CHECK(ncclAllGather(send, recv, n, t, c, s)); break;
    case 3: FRUGAL_NCCL_CHECK(ncclBroadcast(send, recv, n, t, peer, c, s)); break;
    case 4: FRUGAL_NCCL_CHECK(ncclSend(send, n, t, peer, c, s)); break;
    case 5: FRUGAL_NCCL_CHECK(ncclRecv(recv, n, t, peer, c, s)); break;
    default: ::frugal::detail::fail(ErrorCode::kInvalidArgument, "NcclComm", "unknown op ", kind);
  }
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
