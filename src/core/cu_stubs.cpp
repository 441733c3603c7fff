// Built only without CUDA: every frugal::cu entry point throws NotCompiled, so a missing backend is
// a clear error, never a link failure or a silent CPU fallback. Generated from cu_ops.def.
#include "cu_ops.hpp"

#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace frugal::cu {
#define FRUGAL_CU_OP(ret, name, params)                                                    \
  ret name params {                                                                        \
    ::frugal::detail::fail(ErrorCode::kNotCompiled, "cu::" #name,                          \
                           "frugal was built without CUDA (FRUGAL_WITH_CUDA=OFF or no nvcc)"); \
  }
#include "cu_ops.def"
#undef FRUGAL_CU_OP

}  // namespace frugal::cu
