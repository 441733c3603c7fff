#pragma once
/// Zero-copy exchange of tensors with other frameworks (PyTorch, CuPy, JAX, ...) through DLPack
/// (https://dmlc.github.io/dlpack/latest/), ABI version 0.6. This header does not need dlpack.h;
/// callers that build a DLManagedTensor themselves include <dlpack/dlpack.h>.
#include "frugal/core/tensor.hpp"

struct DLManagedTensor;

namespace frugal {

/// Wraps the memory of `t` without copying: shape, element strides (NULL strides mean row-major)
/// and data + byte_offset become a Tensor on the CPU (kDLCPU, kDLCUDAHost) or on CUDA (kDLCUDA).
/// The Tensor takes ownership of `t`: t->deleter(t) runs exactly once, when the last Tensor
/// sharing the storage is gone. On error nothing is taken and the caller still owns `t`.
/// DLPack 0.6 cannot say that memory is read-only, so the caller does: with `read_only` the
/// Tensor refuses mutable access (Tensor::read_only()).
/// Accepted dtypes (lanes 1): float 16/32/64, bfloat 16, int 8/32/64, uint 8, bool 8 (code 6, as
/// DLPack 0.8 defines it). Throws InvalidArgument ("[from_dlpack] ...") for a null tensor, another
/// dtype, ndim > 8, a negative extent or stride, a null shape or data pointer, or another device;
/// NotCompiled for a CUDA tensor in a build without CUDA.
Tensor from_dlpack(DLManagedTensor* t, bool read_only = false);

/// Exports `t` without copying. The returned DLManagedTensor keeps `t`'s storage alive until its
/// deleter is called (by the consumer, exactly once). Strides are always filled in.
/// A read-only tensor is refused (InvalidArgument) unless `allow_read_only`, since DLPack 0.6
/// cannot carry the flag and the consumer could write through the pointer.
/// Throws Unsupported for packed i4/u4 and for fp8 (DLPack 0.6 has no code for them),
/// InvalidArgument ("[to_dlpack] ...") for an undefined tensor.
DLManagedTensor* to_dlpack(const Tensor& t, bool allow_read_only = false);

}  // namespace frugal
