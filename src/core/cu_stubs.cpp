// Stubs generated from cu_ops.def: every frugal::cu entry point that this build lacks throws
// NotCompiled, so a missing backend is a clear error, never a link failure or a silent CPU fallback.
// Built with FRUGAL_STUB_ALL (no CUDA: every op) or FRUGAL_STUB_CUDNN / FRUGAL_STUB_NCCL (a CUDA
// build without cuDNN or NCCL: only their ops); see CMakeLists.txt.
#include "cu_ops.hpp"

#pragma GCC diagnostic ignored "-Wunused-parameter"

#define FRUGAL_STUB(ret, name, params, what)                                   \
  ret name params {                                                            \
    ::frugal::detail::fail(ErrorCode::kNotCompiled, "cu::" #name,              \
                           "frugal was built without " what);                  \
  }
#define FRUGAL_SKIP(ret, name, params)

namespace frugal::cu {

#if defined(FRUGAL_STUB_ALL)
#define FRUGAL_CU_OP(ret, name, params) \
  FRUGAL_STUB(ret, name, params, "CUDA (FRUGAL_WITH_CUDA=OFF or no nvcc)")
#define FRUGAL_CU_CUDNN_OP(ret, name, params) FRUGAL_CU_OP(ret, name, params)
#define FRUGAL_CU_NCCL_OP(ret, name, params) FRUGAL_CU_OP(ret, name, params)
#include "cu_ops.def"
#undef FRUGAL_CU_OP
#undef FRUGAL_CU_CUDNN_OP
#undef FRUGAL_CU_NCCL_OP
#endif

#if defined(FRUGAL_STUB_CUDNN)
#define FRUGAL_CU_OP(ret, name, params) FRUGAL_SKIP(ret, name, params)
#define FRUGAL_CU_CUDNN_OP(ret, name, params) FRUGAL_STUB(ret, name, params, "cuDNN")
#define FRUGAL_CU_NCCL_OP(ret, name, params) FRUGAL_SKIP(ret, name, params)
#include "cu_ops.def"
#undef FRUGAL_CU_OP
#undef FRUGAL_CU_CUDNN_OP
#undef FRUGAL_CU_NCCL_OP
#endif

#if defined(FRUGAL_STUB_NCCL)
#define FRUGAL_CU_OP(ret, name, params) FRUGAL_SKIP(ret, name, params)
#define FRUGAL_CU_CUDNN_OP(ret, name, params) FRUGAL_SKIP(ret, name, params)
#define FRUGAL_CU_NCCL_OP(ret, name, params) FRUGAL_STUB(ret, name, params, "NCCL")
#include "cu_ops.def"
#undef FRUGAL_CU_OP
#undef FRUGAL_CU_CUDNN_OP
#undef FRUGAL_CU_NCCL_OP
#endif

}  // namespace frugal::cu
