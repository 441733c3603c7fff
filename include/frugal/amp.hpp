#pragma once
/// Mixed precision: fused casts with scaling and amax, dynamic loss scaling, autocast policy.
#include "frugal/amp/cast.hpp"
#include "frugal/amp/loss_scaler.hpp"
#include "frugal/amp/policy.hpp"
#include "frugal/amp/gemm.hpp"
#include "frugal/amp/autocast.hpp"
#include "frugal/amp/fp8.hpp"
#include "frugal/amp/mixed_precision.hpp"
