// SVD and QR through cuSOLVER (contract in src/lowrank/lowrank_internal.hpp).
//
// A contiguous row-major (m, n) matrix read column-major is its transpose X = A^T (n, m, ld n).
//   SVD, m <= n: X is tall, so cusolverDnXgesvd (which needs rows >= cols) factors X = U_x S V_x^T
//     in place of a copy. Then A = V_x S U_x^T: the column-major V_x^T buffer (m, m) read row-major
//     is U_A, and the column-major U_x buffer (n, k or n) read row-major is V_A^T. No transposes.
//   SVD, m > n: the transposed copy of A is column-major A (m, n, ld m), tall; gesvd gives U and
//     V^T column-major, and one strided copy each turns them row-major.
//   QR: geqrf + orgqr on the column-major copy of A; R is read off its upper triangle by a kernel
//     and Q turned row-major by a strided copy.
// Workspaces come from Tensor::empty on the device (the stream-ordered pool); devInfo is copied
// back after a stream synchronisation and returned (the caller turns it into `converged`).
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

/// Owns a cuSOLVER dense handle and its 64-bit-API params object; destructor never throws.
class CusolverHandle {
 public:
  CusolverHandle() {
    FRUGAL_CUSOLVER_CHECK(cusolverDnCreate(&handle_));
    FRUGAL_CUSOLVER_CHECK(cusolverDnCreateParams(&params_));
  }
  CusolverHandle(const CusolverHandle&) = delete;
  CusolverHandle& operator=(const CusolverHandle&) = delete;
  ~CusolverHandle() {
    if (params_ != nullptr) cusolverDnDestroyParams(params_);  // status ignored: no throw
    if (handle_ != nullptr) cusolverDnDestroy(handle_);
  }
  cusolverDnHandle_t get() const { return handle_; }
  cusolverDnParams_t params() const { return params_; }

 private:
  cusolverDnHandle_t handle_ = nullptr;
  cusolverDnParams_t params_ = nullptr;
};

/// A handle bound to one (device, stream) with the lock that serializes its use.
struct CusolverLease {
  CusolverHandle* h;
  std::unique_lock<std::mutex> lock;
};

/// The cached handle of (device, stream), created on first use; `device` is already current.
CusolverLease cusolver_handle(int device, cudaStream_t stream) {
  static std::mutex mutex;
  // Never destroyed on purpose (see cublas_handle.cuh: the CUDA runtime may be gone at exit).
  static auto* cache =
      new std::map<std::pair<int, cudaStream_t>, std::unique_ptr<CusolverHandle>>();
  std::unique_lock<std::mutex> lock(mutex);
  auto& slot = (*cache)[{device, stream}];
  if (!slot) {
    auto h = std::make_unique<CusolverHandle>();
    FRUGAL_CUSOLVER_CHECK(cusolverDnSetStream(h->get(), stream));
    slot = std::move(h);
  }
  return CusolverLease{slot.get(), std::move(lock)};
}

cudaDataType_t cuda_type(DType t) { return t == DType::kF64 ? CUDA_R_64F : CUDA_R_32F; }

/// A contiguous device tensor of `nbytes` bytes (at least one) on `dev`.
Tensor device_bytes(size_t nbytes, Device dev, const ExecContext& ctx) {
  return Tensor::empty({static_cast<int64_t>(std::max<size_t>(nbytes, 1))}, DType::kU8, dev, ctx);
}

/// Waits for the stream and returns the devInfo value.
int64_t read_info(const Tensor& info, const ExecContext& ctx) {
  int host = 0;
  FRUGAL_CUDA_CHECK(
      cudaMemcpyAsync(&host, info.data_ptr(), sizeof(int), cudaMemcpyDeviceToHost, stream_of(ctx)));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_of(ctx)));
  return host;
}

/// Column-major (rows, cols, ld) buffer copied row-major into `dst` (rows, cols, contiguous).
void col_major_to_row_major(const void* src, int64_t rows, int64_t cols, int64_t ld, TensorView dst,
                            const ExecContext& ctx) {
  const ConstTensorView s(src, Shape{rows, cols}, Strides{1, ld}, dst.dtype, dst.device);
  cu::copy(s, dst, ctx);
}

/// r (k, n) row-major = upper trapezoid of the column-major (m, n, ld m) geqrf output.
template <class T>
__global__ void extract_r_kernel(const T* __restrict__ qr, int64_t m, int64_t k, int64_t n,
                                 T* __restrict__ r) {
  const int64_t total = k * n;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = idx / n;
    const int64_t j = idx % n;
    r[idx] = j >= i ? qr[i + j * m] : T(0);
  }
}

template <class T>
int orgqr_buffer(cusolverDnHandle_t h, int m, int n, int k, T* a, int lda, const T* tau) {
  int lwork = 0;
  if constexpr (std::is_same_v<T, double>) {
    FRUGAL_CUSOLVER_CHECK(cusolverDnDorgqr_bufferSize(h, m, n, k, a, lda, tau, &lwork));
  } else {
    FRUGAL_CUSOLVER_CHECK(cusolverDnSorgqr_bufferSize(h, m, n, k, a, lda, tau, &lwork));
  }
  return lwork;
}

template <class T>
void orgqr(cusolverDnHandle_t h, int m, int n, int k, T* a, int lda, const T* tau, T* work,
           int lwork, int* info) {
  if constexpr (std::is_same_v<T, double>) {
    FRUGAL_CUSOLVER_CHECK(cusolverDnDorgqr(h, m, n, k, a, lda, tau, work, lwork, info));
  } else {
    FRUGAL_CUSOLVER_CHECK(cusolverDnSorgqr(h, m, n, k, a, lda, tau, work, lwork, info));
  }
}

template <class T>
int64_t qr_typed(ConstTensorView a, TensorView q, TensorView r, const ExecContext& ctx) {
  const int64_t m = a.shape[0];
  const int64_t n = a.shape[1];
  const int64_t k = std::min(m, n);
  const Device dev = a.device;
  cudaStream_t stream = stream_of(ctx);
  // Column-major A (m, n, ld m): the row-major transpose of a, i.e. a read with strides (1, n).
  Tensor work = Tensor::empty({n, m}, a.dtype, dev, ctx);
  cu::copy(ConstTensorView(a.data, Shape{n, m}, Strides{1, n}, a.dtype, dev), work.view(), ctx);
  Tensor tau = Tensor::empty({k}, a.dtype, dev, ctx);
  Tensor info = Tensor::zeros({1}, DType::kI32, dev, ctx);
  const cudaDataType_t t = cuda_type(a.dtype);
  {
    CusolverLease h = cusolver_handle(dev.index, stream);
    size_t dev_bytes = 0, host_bytes = 0;
    FRUGAL_CUSOLVER_CHECK(cusolverDnXgeqrf_bufferSize(h.h->get(), h.h->params(), m, n, t,
                                                      work.data_ptr(), m, t, tau.data_ptr(), t,
                                                      &dev_bytes, &host_bytes));
    Tensor dws = device_bytes(dev_bytes, dev, ctx);
    std::vector<char> hws(std::max<size_t>(host_bytes, 1));
    FRUGAL_CUSOLVER_CHECK(cusolverDnXgeqrf(h.h->get(), h.h->params(), m, n, t, work.data_ptr(), m,
                                           t, tau.data_ptr(), t, dws.data_ptr(), dev_bytes,
                                           hws.data(), host_bytes, info.data<int32_t>()));
    const auto ls = grid_stride_launch(k * n);
    extract_r_kernel<T>
        <<<ls.blocks, ls.threads, 0, stream>>>(work.data<T>(), m, k, n, r.data_as<T>());
    FRUGAL_CUDA_CHECK_LAUNCH();
    const int lwork =
        orgqr_buffer<T>(h.h->get(), static_cast<int>(m), static_cast<int>(k), static_cast<int>(k),
                        work.data<T>(), static_cast<int>(m), tau.data<T>());
    Tensor ows = Tensor::empty({static_cast<int64_t>(std::max(lwork, 1))}, a.dtype, dev, ctx);
    orgqr<T>(h.h->get(), static_cast<int>(m), static_cast<int>(k), static_cast<int>(k),
             work.data<T>(), static_cast<int>(m), tau.data<T>(), ows.data<T>(), lwork,
             info.data<int32_t>());
    // Workspaces are released (stream-ordered) before the lease's lock.
  }
  col_major_to_row_major(work.data_ptr(), m, k, m, q, ctx);
  return read_info(info, ctx);
}

int64_t svd_any(ConstTensorView a, bool full, bool vectors, TensorView u, TensorView s,
                TensorView vt, const ExecContext& ctx) {
  const int64_t m = a.shape[0];
  const int64_t n = a.shape[1];
  const Device dev = a.device;
  cudaStream_t stream = stream_of(ctx);
  const cudaDataType_t t = cuda_type(a.dtype);
  const bool wide = m <= n;
  // gesvd overwrites its input: work on a copy. Wide: X = A^T column-major (n, m) is a's buffer
  // as is. Tall: column-major A (m, n) is the row-major transpose of a.
  Tensor work = Tensor::empty({wide ? m : n, wide ? n : m}, a.dtype, dev, ctx);
  if (wide) {
    cu::copy(a, work.view(), ctx);
  } else {
    cu::copy(ConstTensorView(a.data, Shape{n, m}, Strides{1, n}, a.dtype, dev), work.view(), ctx);
  }
  const int64_t rows = wide ? n : m;  // of the column-major matrix cuSOLVER sees (rows >= cols)
  const int64_t cols = wide ? m : n;
  const signed char job_u = vectors ? (full ? 'A' : 'S') : 'N';
  const signed char job_vt = vectors ? 'A' : 'N';  // V^T of the (rows x cols) matrix is cols x cols
  Tensor info = Tensor::zeros({1}, DType::kI32, dev, ctx);
  // Outputs of gesvd: U (rows, rows or cols, ld rows) and V^T (cols, cols, ld cols), column-major.
  void* u_buf = nullptr;
  void* vt_buf = nullptr;
  Tensor u_tmp, vt_tmp;
  if (vectors) {
    if (wide) {
      u_buf = vt.data;  // U_x read row-major is V_A^T
      vt_buf = u.data;  // V_x^T read row-major is U_A
    } else {
      u_tmp = Tensor::empty({full ? rows : cols, rows}, a.dtype, dev, ctx);
      vt_tmp = Tensor::empty({cols, cols}, a.dtype, dev, ctx);
      u_buf = u_tmp.data_ptr();
      vt_buf = vt_tmp.data_ptr();
    }
  }
  const int64_t ldu = rows;
  const int64_t ldvt = cols;
  {
    CusolverLease h = cusolver_handle(dev.index, stream);
    size_t dev_bytes = 0, host_bytes = 0;
    FRUGAL_CUSOLVER_CHECK(cusolverDnXgesvd_bufferSize(
        h.h->get(), h.h->params(), job_u, job_vt, rows, cols, t, work.data_ptr(), rows, t, s.data,
        t, u_buf, ldu, t, vt_buf, ldvt, t, &dev_bytes, &host_bytes));
    Tensor dws = device_bytes(dev_bytes, dev, ctx);
    std::vector<char> hws(std::max<size_t>(host_bytes, 1));
    FRUGAL_CUSOLVER_CHECK(cusolverDnXgesvd(h.h->get(), h.h->params(), job_u, job_vt, rows, cols, t,
                                           work.data_ptr(), rows, t, s.data, t, u_buf, ldu, t,
                                           vt_buf, ldvt, t, dws.data_ptr(), dev_bytes, hws.data(),
                                           host_bytes, info.data<int32_t>()));
  }
  if (vectors && !wide) {
    col_major_to_row_major(u_tmp.data_ptr(), m, u.shape[1], m, u, ctx);
    col_major_to_row_major(vt_tmp.data_ptr(), n, n, n, vt, ctx);
  }
  return read_info(info, ctx);
}

}  // namespace

int64_t lowrank_svd(ConstTensorView a, bool full, bool vectors, TensorView u, TensorView s,
                    TensorView vt, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(a.device.index));
  return svd_any(a, full, vectors, u, s, vt, ctx);
}

int64_t lowrank_qr(ConstTensorView a, TensorView q, TensorView r, const ExecContext& ctx) {
  for (int64_t v : {a.shape[0], a.shape[1]}) {
    if (v > INT_MAX) {
      ::frugal::detail::fail(ErrorCode::kUnsupported, "qr", "extent ", v,
                             " exceeds cuSOLVER orgqr's 32-bit limit");
    }
  }
  FRUGAL_CUDA_CHECK(cudaSetDevice(a.device.index));
  if (a.dtype == DType::kF64) return qr_typed<double>(a, q, r, ctx);
  return qr_typed<float>(a, q, r, ctx);
}

}  // namespace frugal::cu
