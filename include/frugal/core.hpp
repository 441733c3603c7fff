#pragma once
/// The core module: dtypes, devices, tensors and views, memory, execution context, errors.
#include "frugal/core/build_config.hpp"
#include "frugal/core/device.hpp"
#include "frugal/core/dtype.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/float_types.hpp"
#include "frugal/core/memory.hpp"
#include "frugal/core/packed.hpp"
#include "frugal/core/shape.hpp"
#include "frugal/core/tensor.hpp"
