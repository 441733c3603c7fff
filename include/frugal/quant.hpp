#pragma once
/// The quantization module: linear and logarithmic quantization, formats, QAT gradients,
/// calibration observers, vector quantization and quantized GEMM.
#include "frugal/quant/fake_quant.hpp"
#include "frugal/quant/format.hpp"
#include "frugal/quant/log_quant.hpp"
#include "frugal/quant/qparams.hpp"
#include "frugal/quant/quantize.hpp"
// Calibration observers, vector quantization and quantized GEMM (issue 6, part 2).
#include "frugal/quant/observer.hpp"
#include "frugal/quant/qgemm.hpp"
#include "frugal/quant/vector.hpp"
