#pragma once
/// Mixed precision: fused casts with scaling and amax, dynamic loss scaling, autocast policy.
#include "frugal/amp/cast.hpp"
#include "frugal/amp/loss_scaler.hpp"
#include "frugal/amp/policy.hpp"
