#pragma once
// cuBLASLt handle and RAII descriptors shared by the cuBLASLt GEMMs (kernels/amp/gemm.cu,
// kernels/quant/qgemm.cu).
#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <mutex>

#include "common/check.cuh"

namespace frugal::cu {

/// One cublasLtHandle_t per device, created on first use and kept for the process (see
/// cublas_handle.cuh for why handles are not destroyed at exit). The caller has set `device`
/// current. cuBLASLt handles carry no stream, so one handle serves every stream.
inline cublasLtHandle_t cublaslt_handle(int device) {
  static std::mutex mutex;
  static auto* handles = new std::map<int, cublasLtHandle_t>();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = handles->find(device);
  if (it != handles->end()) return it->second;
  cublasLtHandle_t h = nullptr;
  FRUGAL_CUBLAS_CHECK(cublasLtCreate(&h));
  handles->emplace(device, h);
  return h;
}

/// Owns a cublasLtMatmulDesc_t with the given compute / scale types and operand transposes; the
/// destructor never throws.
class LtMatmulDesc {
 public:
  LtMatmulDesc(cublasComputeType_t compute, cudaDataType_t scale, cublasOperation_t trans_a,
               cublasOperation_t trans_b) {
    FRUGAL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_, compute, scale));
    FRUGAL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                       sizeof(trans_a)));
    FRUGAL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                       sizeof(trans_b)));
  }
  LtMatmulDesc(const LtMatmulDesc&) = delete;
  LtMatmulDesc& operator=(const LtMatmulDesc&) = delete;
  ~LtMatmulDesc() {
    if (desc_ != nullptr) cublasLtMatmulDescDestroy(desc_);  // status ignored: never throws
  }
  cublasLtMatmulDesc_t get() const { return desc_; }

 private:
  cublasLtMatmulDesc_t desc_ = nullptr;
};

/// Owns a column-major cublasLtMatrixLayout_t (rows x cols, leading dimension ld, in elements);
/// the destructor never throws.
class LtLayout {
 public:
  LtLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
    FRUGAL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_, type, rows, cols, ld));
  }
  LtLayout(const LtLayout&) = delete;
  LtLayout& operator=(const LtLayout&) = delete;
  ~LtLayout() {
    if (layout_ != nullptr) cublasLtMatrixLayoutDestroy(layout_);  // status ignored: never throws
  }
  /// Makes the layout a strided batch of count matrices, stride elements apart.
  void set_batch(int32_t count, int64_t stride) {
    FRUGAL_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        layout_, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    FRUGAL_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        layout_, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  cublasLtMatrixLayout_t get() const { return layout_; }

 private:
  cublasLtMatrixLayout_t layout_ = nullptr;
};

}  // namespace frugal::cu
