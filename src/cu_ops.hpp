#pragma once
// Declarations of every frugal::cu entry point, generated from cu_ops.def. Internal header.
#include <cstdint>

#include "frugal/core/tensor.hpp"

namespace frugal::cu {
#define FRUGAL_CU_OP(ret, name, params) ret name params;
#include "cu_ops.def"
#undef FRUGAL_CU_OP
}  // namespace frugal::cu
